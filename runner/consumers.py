"""The run page's websocket: current state on connect, then coalesced updates."""

import json

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from .models import Run
from .stats import run_state


class RunConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.run = await self._get_run(user, self.scope["url_route"]["kwargs"]["code"])
        if self.run is None:
            await self.close(code=4404)
            return
        self.group = self.run.group_name
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self._send_state(await database_sync_to_async(run_state)(self.run))

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        # The only message a page sends is a request for the current state.
        try:
            message = json.loads(text_data or "")
        except ValueError:
            await self.send(json.dumps({"type": "error", "error": "messages must be JSON"}))
            return
        if isinstance(message, dict) and message.get("type") == "state":
            await self.run_refresh()
        else:
            await self.send(
                json.dumps({"type": "error", "error": 'unknown message; send {"type": "state"}'})
            )

    async def run_refresh(self):
        await self.run.arefresh_from_db()
        await self._send_state(await database_sync_to_async(run_state)(self.run))

    async def run_progress(self, event):
        await self._send_state(event["state"])

    async def _send_state(self, state):
        await self.send(json.dumps({"type": "state", "state": state}))

    @database_sync_to_async
    def _get_run(self, user, code):
        return Run.objects.filter(code=code, owner=user).first()

"""The run page's websocket: current state on connect, then coalesced updates.

Drivers announce the whole state a few times a second each; a page gets at most
one message every `MIN_INTERVAL` seconds, always the latest state (a burst of
announcements becomes one message, and the last one is never lost).

Only members of the run's workspace may watch it. Each socket also listens on its
user's group (`user_group`): when someone's access changes (removed from a workspace),
`access_changed(user_id)` makes their sockets check again and close (4403) at once.
"""

import asyncio
import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from runner.models import Run

from .progress import LIVE_FIELDS
from .stats import run_state

log = logging.getLogger("runner.events")

MIN_INTERVAL = 0.25


class RunConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self._latest = None
        self._flusher = None
        self._last_sent = 0.0
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.run = await self._get_run(user, self.scope["url_route"]["kwargs"]["code"])
        if self.run is None:
            await self.close(code=4404)
            return
        self.group = self.run.group_name
        self.user_group = user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self.accept()
        await self._send_state(await database_sync_to_async(run_state)(self.run))

    async def disconnect(self, code):
        if self._flusher is not None:
            self._flusher.cancel()
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.channel_layer.group_discard(self.user_group, self.channel_name)

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
        await self.run.arefresh_from_db(fields=LIVE_FIELDS)
        self._latest = None  # fresher than anything waiting
        await self._send_state(await database_sync_to_async(run_state)(self.run))

    async def run_progress(self, event):
        self._latest = event["state"]
        if self._flusher is not None:
            return  # a send is already scheduled; it will carry this state
        if self._last_sent + MIN_INTERVAL <= asyncio.get_running_loop().time():
            await self._flush()
        else:
            self._flusher = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self):
        loop = asyncio.get_running_loop()
        try:
            while self._latest is not None:
                wait = self._last_sent + MIN_INTERVAL - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._flush()
        finally:
            self._flusher = None

    async def _flush(self):
        state, self._latest = self._latest, None
        if state is not None:
            await self._send_state(state)

    async def _send_state(self, state):
        self._last_sent = asyncio.get_running_loop().time()
        await self.send(json.dumps({"type": "state", "state": state}))

    async def access_changed(self, event):
        allowed = await self._get_run(self.scope["user"], self.run.code)
        if allowed is None:
            await self.close(code=4403)

    @database_sync_to_async
    def _get_run(self, user, code):
        return Run.objects.filter(code=code, workspace__members__user=user).first()


def user_group(user_id):
    return f"user.{user_id}"


def access_changed(user_id):
    """Tell the user's open sockets that their access changed (they check and may close)."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(user_group(user_id), {"type": "access.changed"})
    except Exception:  # Redis away: their sockets check again when they reconnect
        log.warning("could not tell user %s's open pages that their access changed", user_id)

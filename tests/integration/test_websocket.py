"""The run page's websocket: refuses strangers, sends the state, then live updates.

In-process through the whole ASGI application (session cookie, origin check) with
the Redis channel layer, and once through a real daphne server.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import aiohttp
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from runner import engine
from runner.models import Run
from runner.spec import library

from ..conftest import ROOT, free_port, worker_env
from .helpers import provider_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


def cookie_for(user):
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def communicator(run, cookie=None):
    from config.asgi import application

    headers = [ORIGIN]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, f"/ws/runs/{run.code}/", headers=headers)


def make_run(owner, fake, topics=3, latency=0.0):
    fake.configure(latency=latency)
    provider = provider_for(owner, fake, concurrency=4)
    return engine.launch_run(
        owner,
        library.get("qa-from-topics").spec,
        [{"topic": f"Topic {i}"} for i in range(topics)],
        providers={"*": provider.pk},
    )


@pytest.mark.asyncio
async def test_anonymous_and_other_users_are_refused(owner, other_user, redis_client, fake_llm):
    run = await sync_to_async(make_run)(owner, fake_llm)
    comm = communicator(run)
    connected, code = await comm.connect()
    assert not connected and code == 4401
    comm = communicator(run, await sync_to_async(cookie_for)(other_user))
    connected, code = await comm.connect()
    assert not connected and code == 4404


@pytest.mark.asyncio
async def test_owner_gets_state_then_live_progress(owner, redis_client, worker, fake_llm):
    run = await sync_to_async(make_run)(owner, fake_llm, topics=4, latency=0.1)
    comm = communicator(run, await sync_to_async(cookie_for)(owner))
    connected, _ = await comm.connect()
    assert connected
    first = await comm.receive_json_from(timeout=5)
    assert first["type"] == "state" and first["state"]["run"] == str(run.code)
    assert [s["name"] for s in first["state"]["steps"]] == ["subtopics", "question", "answer"]
    seen, started = [], time.monotonic()
    while time.monotonic() - started < 60:
        msg = await comm.receive_json_from(timeout=10)
        seen.append(msg["state"])
        if msg["state"]["status"] == "completed":
            break
    assert seen[-1]["status"] == "completed"
    done = [sum(s["counts"]["done"] for s in st["steps"]) for st in seen]
    assert done == sorted(done) and done[-1] == 4 + 20 + 20
    assert len({d for d in done}) >= 3, (
        "progress should arrive while the run moves, not only at the end"
    )
    # coalesced: far fewer messages than the 44 tasks finished
    assert len(seen) < 44
    assert seen[-1]["records"] == 20
    # a bad message gets an error, not a crash; asking for the state works
    await comm.send_to(text_data="not json")
    assert (await comm.receive_json_from())["type"] == "error"
    await comm.send_json_to({"type": "state"})
    assert (await comm.receive_json_from())["state"]["status"] == "completed"
    await comm.disconnect()


@pytest.fixture
def daphne_server(redis_client):
    port = free_port()
    env = worker_env()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "config.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 20
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("daphne did not start: " + proc.stderr.read().decode()[-2000:])
    yield port
    os.killpg(proc.pid, 15)
    proc.wait(10)


def test_real_daphne_serves_the_websocket(owner, other_user, worker, fake_llm, daphne_server):
    run = make_run(owner, fake_llm, topics=2)
    owner_cookie, other_cookie = cookie_for(owner), cookie_for(other_user)

    async def talk(cookie):
        headers = {"Origin": f"http://127.0.0.1:{daphne_server}"}
        if cookie:
            headers["Cookie"] = cookie
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(
                    f"http://127.0.0.1:{daphne_server}/ws/runs/{run.code}/", headers=headers
                ) as ws:
                    states = []
                    while True:
                        msg = await asyncio.wait_for(ws.receive(), 30)
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            return states, ws.close_code
                        states.append(json.loads(msg.data)["state"])
                        if states[-1]["status"] == "completed":
                            return states, None
            except aiohttp.WSServerHandshakeError as exc:
                return [], exc.status

    states, _ = asyncio.run(talk(owner_cookie))
    assert states and states[-1]["status"] == "completed"
    assert states[-1]["records"] == 10
    states, code = asyncio.run(talk(other_cookie))
    assert states == [] and code in (403, 4404)
    states, code = asyncio.run(talk(None))
    assert states == [] and code in (403, 4401)
    assert Run.objects.get(pk=run.pk).status == "completed"


@pytest.mark.asyncio
async def test_removing_a_member_closes_their_open_run_page_at_once(
    owner, other_user, redis_client, fake_llm
):
    from runner.models import Member

    run = await sync_to_async(make_run)(owner, fake_llm)
    member = await sync_to_async(Member.objects.create)(
        workspace_id=run.workspace_id, user=other_user, role="reviewer"
    )
    comm = communicator(run, await sync_to_async(cookie_for)(other_user))
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from(timeout=5))["type"] == "state"

    admin = Client()
    await sync_to_async(admin.force_login)(owner)
    response = await sync_to_async(admin.post)(f"/people/{member.pk}/remove/")
    assert response.status_code == 302
    while True:  # state messages may still arrive before the close
        output = await comm.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            break
    assert output["code"] == 4403

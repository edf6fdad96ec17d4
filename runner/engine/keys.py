"""Names of everything the engine keeps in Redis, under one prefix per deployment.

Several deployments may share one Redis (and `make run` reuses a Redis already on
its port). Every key, and the Celery queues (`config/celery.py`), starts with
`prefix()`: `RUNNER_KEY_PREFIX` when set, else one made from this database's
`Deployment` code, so a recreated database starts with an empty cache and fresh
limits. Runs and providers are named by their UUID codes, never by integer ids.
"""

import hashlib
import logging
import threading

from django.conf import settings

log = logging.getLogger("runner.engine")

_lock = threading.Lock()
_prefix = None


def prefix():
    """`pd:<12 hex>:`, the same in every process that opens this database."""
    global _prefix
    if _prefix is None:
        with _lock:
            if _prefix is None:
                _prefix = _make_prefix()
    return _prefix


def _make_prefix():
    chosen = settings.RUNNER_KEY_PREFIX
    if chosen:
        return chosen if chosen.endswith(":") else chosen + ":"
    from runner.models import Deployment

    try:
        code = Deployment.current().code.hex
    except Exception:  # not migrated yet: name it by where the database lives
        db = settings.DATABASES["default"]
        where = f"{db.get('ENGINE')}|{db.get('HOST', '')}|{db.get('PORT', '')}|{db.get('NAME')}"
        code = hashlib.sha256(where.encode()).hexdigest()
        log.warning("no deployment row in the database yet: Redis keys named after its location")
    return f"pd:{code[:12]}:"


def reset():
    """Forget the prefix (tests that switch databases)."""
    global _prefix
    _prefix = None


def key(*parts):
    return prefix() + ":".join(str(p) for p in parts)


def retrying(run_code):
    return key("retrying", _hex(run_code))


def held(run_code):
    """Tasks of a run each driver holds for a slot, by step (`Driver._publish_waiting`)."""
    return key("held", _hex(run_code))


def crew(run_code):
    """What each driver of a run (in any worker) will claim next (`limits.crew`)."""
    return key("crew", _hex(run_code))


def announced(run_code):
    """Set for a moment by the worker that announces a run's progress (`events.progress`)."""
    return key("announced", _hex(run_code))


def call(run_code, digest):
    return key("call", _hex(run_code), digest)


def dedup(run_code, step):
    """The duplicate index of one step of a run: exact hashes, signatures, LSH bands."""
    base = key("dedup", _hex(run_code), step)
    return [f"{base}:x", f"{base}:s", f"{base}:b"]


def trial(trial_id):
    return key("trial", trial_id)


def hosts_channel():
    """The pub/sub channel on which a launch wakes every worker's host (`ports.wake_hosts`)."""
    return key("hosts")


def alive_prefix():
    return key("alive", "")


def slots(pool):
    return key("slots", pool)


def rate(rate_key):
    return key("rate", rate_key)


def _hex(code):
    return getattr(code, "hex", code)

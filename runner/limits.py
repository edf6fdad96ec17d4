"""Concurrency shared by every worker, kept in Redis.

Each provider key has a pool of `limit` slots. A driver asks for up to the number
it wants and gets what is free; it holds them while it runs and gives them back
when it stops. A driver that dies stops refreshing its heartbeat key, and its
slots are taken back by the next driver that asks.
"""

import redis
from django.conf import settings

_ACQUIRE = """
-- KEYS[1] pool hash (holder -> slots); ARGV: holder, want, limit, alive-prefix
local holders = redis.call('HGETALL', KEYS[1])
local used = 0
for i = 1, #holders, 2 do
  local h = holders[i]
  if h ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. h) == 0 then
    redis.call('HDEL', KEYS[1], h)
  else
    if h ~= ARGV[1] then used = used + tonumber(holders[i + 1]) end
  end
end
local mine = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local free = tonumber(ARGV[3]) - used
local want = tonumber(ARGV[2])
local grant = math.max(math.min(want, free), 0)
if grant > mine then
  redis.call('HSET', KEYS[1], ARGV[1], grant)
  return grant
end
return mine
"""

ALIVE_PREFIX = "pd:alive:"

_client = None
_acquire_script = None


def client():
    global _client, _acquire_script
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10)
        _acquire_script = _client.register_script(_ACQUIRE)
    return _client


def heartbeat(holder):
    client().set(ALIVE_PREFIX + holder, "1", ex=settings.RUNNER_HEARTBEAT_TTL)


def is_alive(holder):
    return bool(client().exists(ALIVE_PREFIX + holder))


def acquire(pool, holder, want, limit):
    """Grow this holder's share of the pool towards `want`; return its share now."""
    client()
    heartbeat(holder)
    return int(_acquire_script(keys=[f"pd:slots:{pool}"], args=[holder, want, limit, ALIVE_PREFIX]))


def release(pool, holder):
    client().hdel(f"pd:slots:{pool}", holder)


def forget(holder):
    client().delete(ALIVE_PREFIX + holder)

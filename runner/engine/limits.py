"""Limits shared by every worker and run, kept in Redis: concurrency and rates.

Concurrency: each provider key has a pool of `limit` slots, split max-min fairly
among the drivers using it now (every run, every worker process): each says how
many it could use and gets its share, growing as others give slots back and
shrinking when a newcomer arrives. A driver that dies stops refreshing its
heartbeat key, and its slots are taken back by the next driver that asks.

Rates: requests and tokens per minute per key are token buckets in one Redis
hash. Drivers never ask per call: a few times a second each driver asks for what
its waiting calls need (`rate_grant`), in one round trip, and hands the grant to
its calls through a local `RateGate`; what the bucket holds is shared fairly among
the drivers asking. The bucket holds at most a fraction of a second's worth
(`RUNNER_RATE_BURST_SECONDS`), so no window sees a burst.

On 429s that are a good share of the last second's calls (an isolated 429 is noise)
the rate is halved (at most once a second) and grows back by a fixed share of the
limit per second (AIMD), and a Retry-After stops grants to every driver until it has
passed and counts as sustained. A key with no limits set is not gated at all; but
once it answers 429 its rate is learnt (half of what it was taking) and gated the
same way, until it has gone `RUNNER_RATE_FORGET_SECONDS` at full speed without one.
"""

import asyncio
import collections
import math

import redis
from django.conf import settings

from . import keys

_ACQUIRE = """
-- Max-min fair shares of a pool's slots among the drivers using it now.
-- KEYS[1] held (holder -> slots held), KEYS[2] wants (holder -> slots wanted).
-- ARGV: holder, want, limit, alive-prefix, slots this holder has in use now.
local me, want, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local in_use = tonumber(ARGV[5])
redis.call('HSET', KEYS[2], me, want)
local wants = redis.call('HGETALL', KEYS[2])
local list = {}
local others_held = 0
for i = 1, #wants, 2 do
  local h = wants[i]
  if h ~= me and redis.call('EXISTS', ARGV[4] .. h) == 0 then
    redis.call('HDEL', KEYS[2], h)
    redis.call('HDEL', KEYS[1], h)
  else
    table.insert(list, {h, tonumber(wants[i + 1])})
    if h ~= me then others_held = others_held + tonumber(redis.call('HGET', KEYS[1], h) or '0') end
  end
end
table.sort(list, function(a, b) return a[2] < b[2] end)
local left, share = limit, 0
for i, item in ipairs(list) do
  local fair = math.floor(left / (#list - i + 1))
  local give = math.min(item[2], fair)
  if item[1] == me then share = give end
  left = left - give
end
-- what is left after every share (rounding) goes to whoever asks first
share = share + math.max(0, math.min(want - share, left))
local grant = math.max(0, math.min(share, limit - others_held))
local mine = tonumber(redis.call('HGET', KEYS[1], me) or '0')
redis.call('HSET', KEYS[1], me, math.max(grant, math.min(in_use, mine)))
redis.call('EXPIRE', KEYS[1], 3600)
redis.call('EXPIRE', KEYS[2], 3600)
return grant
"""

_RATE = """
-- KEYS[1] rate hash, KEYS[2] who is asking (holder -> "requests,tokens,time").
-- ARGV: rpm, tpm (0: none), want requests, want tokens, 429s seen, longest
-- Retry-After seen, calls started, burst seconds, recovery per second, forget
-- seconds, lowest factor, holder ('' for none).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', KEYS[1], 'r', 't', 'ts', 'f', 'cut', 'until', 'lr', 'n', 'w0', 'seen', 'e')
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local want_r, want_t = tonumber(ARGV[3]), tonumber(ARGV[4])
local n429, retry_after, started = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local burst, recover, forget, minf = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local ts = tonumber(h[3]) or now
local f = tonumber(h[4]) or 1
local cut = tonumber(h[5]) or 0
local untl = tonumber(h[6]) or 0
local lr = tonumber(h[7]) or 0
local n = (tonumber(h[8]) or 0) + started
local w0 = tonumber(h[9]) or now
local seen = tonumber(h[10]) or 0
local e = (tonumber(h[11]) or 0) + n429
local dt = math.max(0, now - ts)
if now - w0 >= 1 then
  seen = 0.5 * seen + 0.5 * n / (now - w0)
  n = 0
  e = n429
  w0 = now
end
-- An isolated 429 is noise: only an explicit Retry-After, or 429s that are a good share
-- of the calls of the last second, mean the key is over its limit.
local calls = math.max(n, seen * math.max(now - w0, 0.25), 1)
local sustained = retry_after > 0 or (e >= 3 and e >= 0.25 * calls)
if n429 > 0 and sustained then
  if retry_after > 0 then untl = math.max(untl, now + retry_after) end
  if now - cut >= 1 then
    if rpm == 0 and tpm == 0 and lr == 0 then
      lr = math.max(seen, n / math.max(now - w0, 1), 1 / 60)
      f = 1
    end
    f = math.max(minf, f / 2)
    cut = now
  end
elseif f < 1 then
  f = math.min(1, f + recover * dt)
end
if lr > 0 and f >= 1 and now - cut > forget then lr = 0 end
local rrate = 0
if rpm > 0 then rrate = rpm / 60 * f elseif lr > 0 then rrate = lr * f end
local trate = 0
if tpm > 0 then trate = tpm / 60 * f end
local cap_r = math.max(1, rrate * burst)
local cap_t = trate * burst
local r = tonumber(h[1]) or cap_r
local tk = tonumber(h[2]) or cap_t
r = math.min(cap_r, r + rrate * dt)
tk = math.min(cap_t, tk + trate * dt)
-- Shares: what the bucket holds now is split among the drivers asking now (max-min
-- fair on what each is waiting for), so a small run is never starved by a big one.
local me = ARGV[12]
local others_r, others_t = {}, {}
if me ~= '' then
  if want_r > 0 or want_t > 0 then
    redis.call('HSET', KEYS[2], me, want_r .. ',' .. want_t .. ',' .. now)
  else
    redis.call('HDEL', KEYS[2], me)
  end
  local askers = redis.call('HGETALL', KEYS[2])
  for i = 1, #askers, 2 do
    if askers[i] ~= me then
      local wr, wt, at = string.match(askers[i + 1], '([^,]+),([^,]+),([^,]+)')
      if now - tonumber(at) > 1 then
        redis.call('HDEL', KEYS[2], askers[i])
      else
        table.insert(others_r, tonumber(wr))
        table.insert(others_t, tonumber(wt))
      end
    end
  end
  redis.call('EXPIRE', KEYS[2], 60)
end
local function fair(avail, mine, others)
  local list = {}
  for _, w in ipairs(others) do if w > 0 then table.insert(list, w) end end
  table.sort(list)
  local left, n = avail, #list + 1
  for _, w in ipairs(list) do
    local level = left / n
    if mine <= level then return mine end
    if w >= level then return level end
    left = left - w
    n = n - 1
  end
  return math.min(mine, left)
end
local gr, gt = 0, 0
if now >= untl then
  if rrate > 0 and want_r > 0 then
    gr = math.max(0, fair(r, want_r, others_r))
    r = r - gr
  end
  if trate > 0 and want_t > 0 then
    gt = math.max(0, fair(tk, want_t, others_t))
    tk = tk - gt
  end
end
redis.call('HSET', KEYS[1], 'r', r, 't', tk, 'ts', now, 'f', f, 'cut', cut, 'until', untl,
  'lr', lr, 'n', n, 'w0', w0, 'seen', seen, 'e', e)
redis.call('EXPIRE', KEYS[1], 3600)
return {tostring(gr), tostring(gt), tostring(rrate), tostring(trate), tostring(math.max(0, untl - now)), tostring(f)}
"""

# A run's drivers (in every worker): each says how many of its slots have no task held for
# them (what it will claim next) and hears the others' sum, so none holds tasks ahead that
# the others are about to need (`Driver.room`). Entries not renewed for ARGV[3] seconds
# are dropped.
_CREW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ',' .. now)
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
local others = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] then
    local need, at = string.match(all[i + 1], '([^,]+),([^,]+)')
    if now - tonumber(at) > ttl then
      redis.call('HDEL', KEYS[1], all[i])
    else
      others = others + tonumber(need)
    end
  end
end
return others
"""

_client = None
_acquire_script = None
_rate_script = None
_crew_script = None


def client():
    global _client, _acquire_script, _rate_script, _crew_script
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10)
        _acquire_script = _client.register_script(_ACQUIRE)
        _rate_script = _client.register_script(_RATE)
        _crew_script = _client.register_script(_CREW)
    return _client


def heartbeat(holder):
    client().set(keys.alive_prefix() + holder, "1", ex=settings.RUNNER_HEARTBEAT_TTL)


def is_alive(holder):
    return bool(client().exists(keys.alive_prefix() + holder))


def acquire(pool, holder, want, limit, in_use=0):
    """This holder's fair share of the pool now, given that it wants `want` slots.

    The pool's `limit` is split max-min fairly among the live holders by what each
    wants; a share above what is free now grows as others give slots back (each asks
    a few times a second), and a holder over its share is told the smaller number
    and gives back as its calls finish (`in_use`: its slots busy now)."""
    client()
    heartbeat(holder)
    return int(
        _acquire_script(
            keys=[keys.slots(pool), keys.key("wants", pool)],
            args=[holder, want, limit, keys.alive_prefix(), in_use],
        )
    )


def release(pool, holder):
    pipe = client().pipeline(transaction=False)
    pipe.hdel(keys.slots(pool), holder)
    pipe.hdel(keys.key("wants", pool), holder)
    pipe.execute()


def crew(run_code, holder, need, ttl=2.0):
    """Say that driver `holder` of the run has `need` slots with no task held for them;
    returns the sum of what the run's other drivers (in any worker) last said."""
    client()
    return int(_crew_script(keys=[keys.crew(run_code)], args=[holder, need, ttl]))


def leave_crew(run_code, holder):
    client().hdel(keys.crew(run_code), holder)


def water_fill(total, demands):
    """Max-min fair split of `total` among `demands` (name -> wanted): nobody gets more
    than it wants, the rest share what is left equally."""
    shares = {}
    left = total
    ordered = sorted(demands.items(), key=lambda kv: kv[1])
    for i, (name, want) in enumerate(ordered):
        give = min(want, left // (len(ordered) - i))
        shares[name] = give
        left -= give
    for name, want in ordered:  # the remainder of the divisions, to whoever can use it
        extra = min(left, want - shares[name])
        shares[name] += extra
        left -= extra
    return shares


def forget(holder):
    client().delete(keys.alive_prefix() + holder)


# -- rates --------------------------------------------------------------------------------


class RateGrant(collections.namedtuple("RateGrant", "requests tokens rps tps wait factor")):
    """What one ask got: requests and tokens to spend, the current rates (0: none), the
    seconds every caller must still wait after a Retry-After, and the backoff factor."""


def rate_grant(
    key,
    *,
    rpm,
    tpm,
    want_requests=0,
    want_tokens=0,
    n429=0,
    retry_after=0.0,
    started=0,
    holder="",
):
    """Ask the shared bucket of `key` for requests and tokens; report 429s and calls started.

    One round trip; call it a few times a second per driver, never per call. What the
    bucket holds is shared fairly among the `holder`s asking now; a grant may be a
    fraction of a request (the driver's gate adds grants up)."""
    client()
    reply = _rate_script(
        keys=[keys.rate(key), keys.key("rate-askers", key)],
        args=[
            int(rpm or 0),
            int(tpm or 0),
            math.ceil(want_requests),
            math.ceil(want_tokens),
            int(n429),
            float(retry_after or 0),
            int(started),
            settings.RUNNER_RATE_BURST_SECONDS,
            settings.RUNNER_RATE_RECOVERY,
            settings.RUNNER_RATE_FORGET_SECONDS,
            settings.RUNNER_RATE_MIN_FACTOR,
            holder,
        ],
    )
    gr, gt, rps, tps, wait, factor = (float(x) for x in reply)
    return RateGrant(gr, gt, rps, tps, wait, factor)


class RateWaitTimeout(Exception):
    """A call waited longer than allowed for a rate permit (the caller fails it for good)."""


class _Waiter:
    __slots__ = ("future", "tokens")

    def __init__(self, future, tokens):
        self.future = future
        self.tokens = tokens


class RateGate:
    """One driver's share of a key's rate, spent by its calls on the asyncio loop.

    Calls `await gate.acquire(tokens)` before each attempt; while the key is not
    limited that returns at once. The driver thread reads `need()` and feeds
    grants in with `grant()` (through `loop.call_soon_threadsafe`). Token use is
    estimated up front and corrected with `settle()` once the reply says."""

    def __init__(self, rpm=None, tpm=None):
        self.rpm, self.tpm = rpm or 0, tpm or 0
        self.limit_requests = bool(rpm)
        self.limit_tokens = bool(tpm)
        self.requests = 0.0
        self.tokens = 0.0
        self.waiters = collections.deque()
        self.need_requests = 0
        self.need_tokens = 0.0
        # reported to Redis with the next ask, then reset
        self.started = 0
        self.n429 = 0
        self.retry_after = 0.0
        self.last_error = ""

    @property
    def limited(self):
        return self.limit_requests or self.limit_tokens

    def need(self):
        """(requests, tokens) the waiting calls need beyond what is held."""
        tokens = self.need_tokens - self.tokens if self.limit_tokens else 0.0
        return max(0.0, self.need_requests - self.requests), max(0.0, tokens)

    def _take(self, tokens):
        if self.limit_requests and self.requests < 1:
            return False
        if self.limit_tokens and self.tokens < tokens - 1e-6:
            return False
        if self.limit_requests:
            self.requests -= 1
        if self.limit_tokens:
            self.tokens -= tokens
        return True

    async def acquire(self, tokens, timeout):
        self.started += 1
        if not self.limited or (not self.waiters and self._take(tokens)):
            return
        waiter = _Waiter(asyncio.get_running_loop().create_future(), tokens)
        self.waiters.append(waiter)
        self.need_requests += 1
        self.need_tokens += tokens
        try:
            async with asyncio.timeout(timeout):
                await waiter.future
        except TimeoutError:
            raise RateWaitTimeout(
                f"gave up after {timeout:g}s waiting under the provider's rate limit"
                + (f" (last error: {self.last_error})" if self.last_error else "")
            ) from None
        finally:
            if not waiter.future.done() or waiter.future.cancelled():
                self._forget(waiter)

    def _forget(self, waiter):
        try:
            self.waiters.remove(waiter)
        except ValueError:
            return
        self.need_requests -= 1
        self.need_tokens -= waiter.tokens

    def grant(self, requests, tokens, rps, tps):
        """Add a grant from Redis (and learn whether the key is limited now)."""
        self.limit_requests = rps > 0
        self.limit_tokens = tps > 0
        if self.limit_requests:
            self.requests += requests
        else:
            self.requests = 0.0
        if self.limit_tokens:
            self.tokens += tokens
        else:
            self.tokens = 0.0
        self._wake()

    def _wake(self):
        while self.waiters:
            head = self.waiters[0]
            if head.future.done():
                self.waiters.popleft()
                self.need_requests -= 1
                self.need_tokens -= head.tokens
                continue
            if self.limited and not self._take(head.tokens):
                return
            self.waiters.popleft()
            self.need_requests -= 1
            self.need_tokens -= head.tokens
            head.future.set_result(None)

    def settle(self, estimated, actual):
        """Correct the token balance once a reply says what a call really used."""
        if self.limit_tokens:
            self.tokens += estimated - actual

    def saw(self, status, retry_after):
        if status == 429:
            self.n429 += 1
            if retry_after:
                self.retry_after = max(self.retry_after, float(retry_after))

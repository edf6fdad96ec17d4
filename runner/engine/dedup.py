"""Screening a step's results before the next step pays for them: filters, then duplicates.

`screen(run, step_index, step, children)` splits the children a step's results make
into those that go on and those set aside (`Aside`: filtered, duplicate, near
duplicate, with the reason and, for a duplicate, the key of the item it repeats).
The writer saves what is set aside as marked records, so nothing is lost.

Duplicates are decided in Redis, shared by every driver of the run on every worker,
as each chunk of results arrives (no barrier). One Lua script (`_SEEN`) takes a
chunk's items in order and, for each, atomically:

1. looks its exact hash (normalised text) up: a hit is an exact duplicate;
2. else looks each of its LSH bands up, and compares the signatures of the items
   found there: estimated Jaccard similarity >= threshold is a near duplicate;
3. else indexes it (hash, signature, bands): it is the original of what follows.

The index of a run's step lives under `keys.dedup(run, step)` for `TTL` seconds after
its last use. `bench/dedup.py` measures it against datasketch's `MinHashLSH` with Redis
storage (which cannot decide a query and an insert atomically across workers).
When Redis does not answer, results go on unscreened for duplicates (logged): a
duplicate then costs its calls, but nothing is lost or held up.
"""

import logging
from dataclasses import dataclass

import redis

from runner.spec import quality

from . import keys, limits

log = logging.getLogger("runner.engine")

TTL = 7 * 24 * 3600
FILTERED, DUPLICATE, NEAR_DUPLICATE = "filtered", "duplicate", "near_duplicate"

_SEEN = """
local thr = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local nb = tonumber(ARGV[3])
local near = ARGV[4] == '1'
local out = {}
local i = 5
while i <= #ARGV do
  local id, exact, sig = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local first = redis.call('HGET', KEYS[1], exact)
  if first == id then  -- this very item again (its task was saved twice)
    out[#out + 1] = 'new'
    out[#out + 1] = ''
  elseif first then
    out[#out + 1] = 'exact'
    out[#out + 1] = first
  else
    local found = false
    if near then
      local tried = {}
      for b = 1, nb do
        local c = redis.call('HGET', KEYS[3], b .. ':' .. ARGV[i + 2 + b])
        if c and not tried[c] then
          tried[c] = true
          local other = redis.call('HGET', KEYS[2], c)
          if other then
            local n = string.len(sig) / 4
            local same = 0
            for p = 1, n * 4, 4 do
              if string.sub(sig, p, p + 3) == string.sub(other, p, p + 3) then same = same + 1 end
            end
            if same / n >= thr then found = c; break end
          end
        end
      end
    end
    if found then
      out[#out + 1] = 'near'
      out[#out + 1] = found
    else
      redis.call('HSET', KEYS[1], exact, id)
      if near then
        redis.call('HSET', KEYS[2], id, sig)
        for b = 1, nb do redis.call('HSETNX', KEYS[3], b .. ':' .. ARGV[i + 2 + b], id) end
      end
      out[#out + 1] = 'new'
      out[#out + 1] = ''
    end
  end
  i = i + 3 + nb
end
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ttl) end
return out
"""

_script = None


@dataclass
class Aside:
    child: object  # callbacks.Child
    flag: str
    reason: str
    duplicate_of: str = ""


def _seen(index_keys, threshold, near, items):
    """[(verdict, first key)] for items [(key, exact hash, signature, bands)], in order."""
    global _script
    client = limits.client()
    if _script is None:
        _script = client.register_script(_SEEN)
    args = [threshold, TTL, quality.BANDS, "1" if near else "0"]
    for key, exact, sig, bands in items:
        args += [key, exact, sig, *bands]
    flat = _script(keys=index_keys, args=args, client=client)
    return [(flat[n].decode(), flat[n + 1].decode()) for n in range(0, len(flat), 2)]


def screen(run, step_index, step, children):
    """(children that go on, [Aside]) for the children of one step's results."""
    if not step.keep and step.dedup is None:
        return children, []
    kept, aside = [], []
    for c in children:
        reason = quality.first_failed(step.keep, c.context)
        if reason:
            aside.append(Aside(c, FILTERED, f"Filtered out: {reason}."))
        else:
            kept.append(c)
    d = step.dedup
    if d is None or not kept:
        return kept, aside
    values = [c.context.get(d.field) for c in kept]
    sigs = quality.signatures(values) if d.near else [b""] * len(kept)
    items = [
        (c.key, quality.exact_hash(v), sig, quality.bands(sig) if d.near else [""] * quality.BANDS)
        for c, v, sig in zip(kept, values, sigs, strict=True)
    ]
    try:
        verdicts = _seen(keys.dedup(run.code, step_index), d.threshold, d.near, items)
    except redis.RedisError as exc:
        log.warning("run %s: duplicates not checked, Redis did not answer: %s", run.pk, exc)
        return kept, aside
    going = []
    for c, (seen, first) in zip(kept, verdicts, strict=True):
        if seen == "new":
            going.append(c)
        elif seen == "exact":
            aside.append(
                Aside(c, DUPLICATE, f"Duplicate: its {d.field} repeats an earlier one.", first)
            )
        else:
            aside.append(
                Aside(
                    c,
                    NEAR_DUPLICATE,
                    f"Near duplicate: its {d.field} is at least {d.threshold:.0%} like an "
                    "earlier one.",
                    first,
                )
            )
    return going, aside

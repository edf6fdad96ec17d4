"""What dropping duplicates costs per 100,000 records: our index against datasketch's.

Starts a Redis server on 127.0.0.1 and feeds 100,000 generated questions (with known
exact duplicates, spelled with other case and spaces, and near duplicates, one word
added) through:

- **ours** (`runner.engine.dedup`): MinHash signatures, then one Lua script per chunk
  of 200 results (a driver's claim batch) that decides and indexes atomically;
- **datasketch** `MinHashLSH` with its Redis storage: a query, then an insert when
  nothing was found (two steps, so two workers could both keep the same item), on
  a part of the records, scaled to 100,000 (it is much slower).

Prints seconds per 100,000 records, records per second, what each found, and the
Redis memory the index holds. Exits 1 when ours misses its target.

    .venv/bin/python -m bench.dedup                 # 100,000 records
    .venv/bin/python -m bench.dedup --records 20000 --datasketch 2000
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import free_port, wait_port  # noqa: E402
from scripts.services import find_redis_server  # noqa: E402

CHUNK = 200  # results a driver screens at once (RUNNER_CLAIM_BATCH)
PER = 100_000
# Targets on this 2-core machine (seconds per 100,000 records, all of it: signatures,
# Redis and the decisions).
TARGET_SECONDS = 60
TARGET_RECALL = 0.97
EXACT_SHARE, NEAR_SHARE = 0.10, 0.05


def questions(n, seed=7):
    """n questions, about EXACT_SHARE exact repeats and NEAR_SHARE near repeats of earlier
    ones; (texts, exact count, near count) as made."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    out, exact, near = [], 0, 0
    for _ in range(n):
        roll = rng.random()
        if out and roll < EXACT_SHARE:
            base = rng.choice(out)
            out.append("  " + base.upper() + " ")
            exact += 1
        elif out and roll < EXACT_SHARE + NEAR_SHARE:
            base = rng.choice(out).split()
            if len(base) >= 14:
                out.append(" ".join(base + [rng.choice(vocab)]))
                near += 1
                continue
            out.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(8, 16))))
        else:
            out.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(8, 16))) + "?")
    return out, exact, near


def used_memory(r):
    return int(r.info("memory")["used_memory"])


def ours(texts, threshold):
    from runner.engine import dedup, keys, limits
    from runner.spec import quality

    r = limits.client()
    index = keys.key("bench", "ours")
    names = [f"{index}:x", f"{index}:s", f"{index}:b"]
    r.delete(*names)
    before = used_memory(r)
    found = {"exact": 0, "near": 0}
    started = time.perf_counter()
    sig_time = 0.0
    for at in range(0, len(texts), CHUNK):
        part = texts[at : at + CHUNK]
        t = time.perf_counter()
        sigs = quality.signatures(part)
        sig_time += time.perf_counter() - t
        items = [
            (f"r{at + i}", quality.exact_hash(v), s, quality.bands(s))
            for i, (v, s) in enumerate(zip(part, sigs, strict=True))
        ]
        for seen, _ in dedup._seen(names, threshold, True, items):
            if seen != "new":
                found[seen] += 1
    wall = time.perf_counter() - started
    memory = used_memory(r) - before
    r.delete(*names)
    return wall, sig_time, found, memory


def datasketch_lsh(texts, threshold, redis_port):
    from datasketch import MinHash, MinHashLSH

    from runner.spec import quality

    storage = {
        "type": "redis",
        "basename": b"bench-datasketch",
        "redis": {"host": "127.0.0.1", "port": redis_port},
    }
    lsh = MinHashLSH(threshold=threshold, num_perm=quality.NUM_PERM, storage_config=storage)
    import redis

    r = redis.Redis(port=redis_port)
    before = used_memory(r)
    found = {"exact": 0, "near": 0}
    started = time.perf_counter()
    for i, text in enumerate(texts):
        m = MinHash(num_perm=quality.NUM_PERM, seed=quality.SEED)
        m.update_batch(list(quality.shingles(text)))
        if lsh.query(m):
            found["near"] += 1  # datasketch does not tell exact from near
        else:
            lsh.insert(f"r{i}", m)
    wall = time.perf_counter() - started
    return wall, found, used_memory(r) - before


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=PER)
    ap.add_argument("--datasketch", type=int, default=5000, help="records for datasketch")
    ap.add_argument("--threshold", type=float, default=0.85)
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="bench-dedup-")
    port = free_port()
    redis_proc = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port)
        os.environ.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            RUNNER_KEY_PREFIX="bench-dedup:",
            SECRET_KEY="bench-secret-key-not-for-production-use-0123456789",
            DATABASE_URL=f"sqlite:///{tmp}/unused.sqlite3",
        )
        import django

        django.setup()
        texts, exact, near = questions(args.records)
        wall, sig_time, found, memory = ours(texts, args.threshold)
        scale = PER / len(texts)
        print(
            f"dedup, ours: {len(texts):,} records in {wall:.1f} s "
            f"({wall * scale:.1f} s per 100,000; {len(texts) / wall:,.0f} records/s; "
            f"signatures {sig_time / wall:.0%} of it); found {found['exact']:,} exact "
            f"(made {exact:,}) and {found['near']:,} near (made about {near:,}); "
            f"index {memory / len(texts) * PER / 2**20:.0f} MiB per 100,000 in Redis"
        )
        part = texts[: args.datasketch]
        d_wall, d_found, d_memory = datasketch_lsh(part, args.threshold, port)
        d_scale = PER / len(part)
        print(
            f"dedup, datasketch MinHashLSH (Redis storage): {len(part):,} records in "
            f"{d_wall:.1f} s ({d_wall * d_scale:.0f} s per 100,000, scaled; "
            f"{len(part) / d_wall:,.0f} records/s); found {d_found['near']:,} "
            f"duplicates of either kind; {d_memory / len(part) * PER / 2**20:.0f} MiB "
            f"per 100,000 in Redis; query and insert are two steps, not atomic"
        )
        seconds = wall * scale
        # A repeat of a repeat may be found as near rather than exact: count both.
        recall = (found["exact"] + found["near"]) / max(1, exact + near)
        missed = seconds > TARGET_SECONDS or recall < TARGET_RECALL
        print(
            f"dedup target: at most {TARGET_SECONDS} s per 100,000 records and at least "
            f"{TARGET_RECALL:.0%} of the repeats made found (found {recall:.1%}): "
            f"{'MISSED' if missed else 'met'}"
        )
        return 1 if missed else 0
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())

"""The scale scenario: one run of about a million calls through the whole stack.

The same stack as `bench.run` (a Redis server, the fake OpenAI-compatible provider in
its own process, one Celery worker started as `make run` starts it, a fresh SQLite
database): `qa-from-topics` on 90,910 topics (90,910 subtopic lists -> 454,550
questions -> 454,550 answers = 1,000,010 calls) at 0 ms and concurrency 200. While it
goes, the worker's memory is sampled; at the end the run page and the runs list are
rendered (a logged-in request through Django's test client, the page's own queries and
template) and the database's size is read. Exits 1 when a target is missed.

    .venv/bin/python -m bench.scale                  # the million calls (15-25 minutes)
    .venv/bin/python -m bench.scale --topics 9091    # a tenth of it
"""

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import Stack, cpu_seconds, report_misses, tree_rss  # noqa: E402

CALLS_PER_TOPIC = 11  # 1 subtopic list, 5 questions, 5 answers


def database_bytes(stack):
    """The SQLite database on disk, its write-ahead log included."""
    path = stack.tmp / "bench.sqlite3"
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def render_seconds(client, url, tries=3):
    """The best of a few renders of a page (the first one warms the template cache)."""
    best = None
    for _ in range(tries):
        t0 = time.perf_counter()
        resp = client.get(url, HTTP_HOST="127.0.0.1")
        spent = time.perf_counter() - t0
        if resp.status_code != 200:
            raise RuntimeError(f"{url} answered {resp.status_code}")
        best = spent if best is None else min(best, spent)
    return best


def run(stack, topics, concurrency):
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from runner import engine
    from runner.models import Provider, Record, Task
    from runner.spec import library

    user = get_user_model().objects.create_user("bench", password="bench-password-0")
    provider = Provider.objects.create(
        owner=user,
        name="fake",
        base_url=f"http://127.0.0.1:{stack.fake_port}/v1",
        default_model="fake",
        concurrency=concurrency,
    )
    spec = library.get("qa-from-topics").spec
    inputs = [{"topic": f"Scale topic {i}"} for i in range(topics)]
    samples = []  # (seconds since launch, finished tasks, worker RSS in bytes)
    done = threading.Event()
    t0 = time.perf_counter()

    def sample():
        while not done.is_set():
            samples.append((time.perf_counter() - t0, tree_rss(stack.worker.pid)))
            done.wait(1.0)

    cpu0 = cpu_seconds([stack.worker])
    threading.Thread(target=sample, daemon=True).start()
    run = engine.launch_run(
        user, spec, inputs, providers={"*": provider.pk}, concurrency=concurrency
    )
    launched = time.perf_counter() - t0
    print(f"  launched {topics:,} topics in {launched:.1f}s", flush=True)
    last_print = 0.0
    while True:
        run.refresh_from_db()
        if not run.is_active:
            break
        now = time.perf_counter() - t0
        if now - last_print >= 60:
            last_print = now
            made = Task.objects.filter(run=run, status="done").count()
            rss = samples[-1][1] / 1e6 if samples else 0
            print(f"  +{now:.0f}s: {made:,} calls done, worker {rss:.0f} MB", flush=True)
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    done.set()
    cpu = cpu_seconds([stack.worker]) - cpu0
    calls = Task.objects.filter(run=run, status="done").count()
    failed = Task.objects.filter(run=run, status="failed").count()
    tasks = Task.objects.filter(run=run).count()
    records = Record.objects.filter(run=run).count()
    size = database_bytes(stack)

    client = Client()
    client.force_login(user)
    page = render_seconds(client, reverse("designer:run-detail", args=[run.code]))
    listing = render_seconds(client, reverse("designer:run-list"))

    rss = [r for _, r in samples]
    tenth = max(1, len(rss) // 10)
    return {
        "topics": topics,
        "calls": calls,
        "failed": failed,
        "tasks": tasks,
        "records": records,
        "status": run.status,
        "wall": wall,
        "calls_per_s": calls / wall,
        "worker_cpu_ms": cpu / max(calls, 1) * 1000,
        "peak_mb": max(rss) / 1e6,
        "first_tenth_mb": max(rss[:tenth]) / 1e6,
        "last_tenth_mb": max(rss[-tenth:]) / 1e6,
        "db_mb": size / 1e6,
        "db_mb_per_million": size / 1e6 / tasks * 1e6 if tasks else 0,
        "run_page_s": page,
        "runs_list_s": listing,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--topics", type=int, default=90_910)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--max-memory-mb", type=float, default=300)
    parser.add_argument("--max-page-seconds", type=float, default=1.0)
    parser.add_argument("--keep", metavar="DIR", help="keep the database in DIR (a new folder)")
    args = parser.parse_args(argv)
    if args.keep:
        Path(args.keep).mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        stack = Stack(args.keep or tmp, args.latency)
        try:
            stack.start()
            r = run(stack, args.topics, args.concurrency)
        finally:
            stack.stop()
    print(
        f"scale: {r['topics']:,} topics, {r['calls']:,} calls ({r['failed']} failed), "
        f"{r['records']:,} records, run {r['status']}, wall {r['wall']:.0f}s, "
        f"{r['calls_per_s']:.0f} calls/s, worker CPU {r['worker_cpu_ms']:.2f} ms a call",
        flush=True,
    )
    print(
        f"  worker memory: peak {r['peak_mb']:.0f} MB (first tenth of the run "
        f"{r['first_tenth_mb']:.0f} MB, last tenth {r['last_tenth_mb']:.0f} MB)",
        flush=True,
    )
    print(
        f"  database: {r['db_mb']:.0f} MB for {r['tasks']:,} tasks and {r['records']:,} records "
        f"({r['db_mb_per_million']:.0f} MB per million tasks)",
        flush=True,
    )
    print(
        f"  at the end: run page {r['run_page_s']:.2f}s, runs list {r['runs_list_s']:.2f}s",
        flush=True,
    )
    misses = []
    if r["status"] != "completed" or r["failed"]:
        misses.append(f"run ended {r['status']} with {r['failed']} failed tasks")
    if r["peak_mb"] > args.max_memory_mb:
        misses.append(f"worker peak {r['peak_mb']:.0f} MB is above {args.max_memory_mb:.0f} MB")
    for name, key in (("run page", "run_page_s"), ("runs list", "runs_list_s")):
        if r[key] > args.max_page_seconds:
            misses.append(f"the {name} took {r[key]:.2f}s (target {args.max_page_seconds}s)")
    return report_misses(misses)


if __name__ == "__main__":
    sys.exit(main())

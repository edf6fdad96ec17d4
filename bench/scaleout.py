"""Scale-out: one run of 1,100 calls at 500 ms, each worker capped at 50 calls in flight,
driven by 1, 2 and 4 Celery workers, each worker in its own network namespace.

Redis, the fake provider and the database (a private PostgreSQL when Debian's is
installed, else SQLite) stay on the host; each worker runs in
a namespace `pdbenchN` of its own and reaches them through a veth pair (10.231.N.1 on
the host side, 10.231.N.2 inside) to a test address of the host's own (10.231.0.1 on
its loopback); nothing leaves the machine. Needs root (`ip netns`). Prints the wall
time and the speed-up over one worker; exits 1 when 4 workers are not at least
`--min-speedup` (3.5) times as fast as one. After each run, as many bare HTTP clients
(`bench.bare_client`, no engine) make the same number of calls from the same namespaces:
their speed-up is what this machine allows, the fake provider and the clients sharing
its two cores. `BENCH_VERBOSE=1` also prints when the calls went out, worker by worker,
and the CPU every process used during the run.

    .venv/bin/python -m bench.scaleout
    .venv/bin/python -m bench.scaleout --workers 1 2 --topics 50
    .venv/bin/python -m bench.scaleout --steps 1 --topics 1100   (1,100 calls, no chain)
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run as bench_run  # noqa: E402
from scripts.services import worker_command  # noqa: E402

HOST_ADDR = "10.231.0.1"  # the host's test address, reached from every namespace


def sh(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Namespaces:
    """`n` network namespaces, each joined to the host by a veth pair."""

    def __init__(self, n):
        self.n = n
        self.names = [f"pdbench{i}" for i in range(1, n + 1)]

    def __enter__(self):
        self.close()  # what an interrupted earlier run left
        sh("ip", "addr", "add", f"{HOST_ADDR}/32", "dev", "lo")
        for i, ns in enumerate(self.names, 1):
            host_if, ns_if = f"pdbh{i}", f"pdbn{i}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            sh("ip", "link", "set", ns_if, "netns", ns)
            sh("ip", "addr", "add", f"10.231.{i}.1/30", "dev", host_if)
            sh("ip", "link", "set", host_if, "up")
            inside = ["ip", "netns", "exec", ns]
            sh(*inside, "ip", "addr", "add", f"10.231.{i}.2/30", "dev", ns_if)
            sh(*inside, "ip", "link", "set", ns_if, "up")
            sh(*inside, "ip", "link", "set", "lo", "up")
            sh(*inside, "ip", "route", "add", "default", "via", f"10.231.{i}.1")
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for i in range(1, 9):
            subprocess.run(["ip", "netns", "del", f"pdbench{i}"], stderr=subprocess.DEVNULL)
            subprocess.run(["ip", "link", "del", f"pdbh{i}"], stderr=subprocess.DEVNULL)
        subprocess.run(
            ["ip", "addr", "del", f"{HOST_ADDR}/32", "dev", "lo"], stderr=subprocess.DEVNULL
        )


class Stack(bench_run.Stack):
    """bench.run's services on the host's test address, with a private PostgreSQL (or
    SQLite), and workers started in the namespaces."""

    def __init__(self, tmp, latency, database):
        database_url = None
        if database == "postgres":
            from tests import pg

            url = pg.start(listen=f"127.0.0.1,{HOST_ADDR}", trust=["10.231.0.0/16"])
            import psycopg

            with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
                conn.execute("CREATE DATABASE pipeline")
            database_url = url.replace("127.0.0.1", HOST_ADDR)
        super().__init__(tmp, latency, host=HOST_ADDR, database_url=database_url)

    def workers(self, namespaces, inflight):
        started = []
        for ns in namespaces:
            log_path = self.tmp / f"{ns}.log"
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns]
                + worker_command(ns, "--without-gossip", "--without-mingle", "--without-heartbeat"),
                cwd=ROOT,
                env={**self.env, "RUNNER_MAX_INFLIGHT": str(inflight)},
                stdout=open(log_path, "wb"),
                stderr=subprocess.STDOUT,
            )
            started.append((proc, log_path))
        deadline = time.time() + 60
        for proc, log_path in started:
            while "ready." not in log_path.read_text(errors="replace"):
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("a worker did not start:\n" + log_path.read_text()[-2000:])
                time.sleep(0.1)
        procs = [p for p, _ in started]
        self.wait_listening(procs)
        return procs


def idle_again(stack, timeout=10.0):
    """Wait until the drivers of the runs so far have stopped (each leaves its run's crew
    in Redis as it stops), so the next run starts on idle workers."""
    from runner.engine import keys, limits
    from runner.models import Run

    crews = [keys.crew(code) for code in Run.objects.values_list("code", flat=True)]
    deadline = time.monotonic() + timeout
    while limits.client().exists(*crews) and time.monotonic() < deadline:
        time.sleep(0.02)


def bare_clients(stack, namespaces, calls, inflight):
    """The same calls made by bare HTTP clients (`bench.bare_client`), one in each of the
    namespaces, all starting at one moment: the wall time this machine allows."""
    start = time.time() + 3.0  # after their start-up and the opening of their connections
    url = f"http://{HOST_ADDR}:{stack.fake_port}/v1"
    shares = [
        calls // len(namespaces) + (i < calls % len(namespaces)) for i in range(len(namespaces))
    ]
    procs = [
        subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-m",
                "bench.bare_client",
                "--url",
                url,
                "--calls",
                str(share),
                "--inflight",
                str(inflight),
                "--start",
                f"{start:.3f}",
            ],
            cwd=ROOT,
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for ns, share in zip(namespaces, shares, strict=True)
    ]
    walls = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        if proc.returncode:
            raise RuntimeError("a bare client failed:\n" + err[-2000:])
        walls.append(float(out.split()[-1]))
    return max(walls)


def _cpu_by_process():
    """pid -> (name, CPU seconds so far) of every process on the machine."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[stat] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def _cpu_spent(before, after):
    """CPU seconds spent between two `_cpu_by_process` readings, by process name."""
    spent = {}
    for key, (name, cpu) in after.items():
        spent[name] = spent.get(name, 0.0) + cpu - before.get(key, (name, 0.0))[1]
    return spent


def one_run(stack, topics, label, steps=3):
    from django.contrib.auth import get_user_model

    from runner import engine
    from runner.models import Provider, Run, Task
    from runner.spec import PipelineSpec, library

    user, _ = get_user_model().objects.get_or_create(username="bench")
    provider, _ = Provider.objects.get_or_create(
        owner=user,
        name="fake",
        defaults={
            "base_url": f"http://{HOST_ADDR}:{stack.fake_port}/v1",
            "default_model": "fake",
            "concurrency": 1000,  # the workers' caps bind, not the provider's
        },
    )
    inputs = [{"topic": f"Scale-out topic {i} {label}"} for i in range(topics)]
    spec = library.get("qa-from-topics").spec.model_dump()
    spec = PipelineSpec.model_validate({**spec, "steps": spec["steps"][:steps]})
    cpu_before = _cpu_by_process() if os.getenv("BENCH_VERBOSE") else None
    t0 = time.perf_counter()
    run = engine.launch_run(user, spec, inputs, providers={"*": provider.pk})
    while True:
        run.refresh_from_db()
        if not run.is_active:
            break
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    if cpu_before is not None:
        spent = _cpu_spent(cpu_before, _cpu_by_process())
        top = sorted(spent.items(), key=lambda kv: -kv[1])[:6]
        print(
            f"    CPU during the run ({os.cpu_count()} cores x {wall:.2f}s = "
            f"{os.cpu_count() * wall:.2f} CPU-s): "
            + ", ".join(f"{name} {cpu:.2f}" for name, cpu in top if cpu >= 0.01),
            flush=True,
        )
    done = Task.objects.filter(run=run, status="done").count()
    drivers = {
        c.split(":")[0] for c in Task.objects.filter(run=run).values_list("claim", flat=True) if c
    }
    if os.getenv("BENCH_VERBOSE"):  # calls finished per second, per driver
        per = {}
        for claim, finished in Task.objects.filter(run=run).values_list("claim", "finished"):
            sec = int((finished - run.created).total_seconds() * 4)  # quarter seconds
            per.setdefault(claim.split(":")[0], {}).setdefault(sec, 0)
            per[claim.split(":")[0]][sec] += 1
        for d, secs in per.items():
            print("   ", d, [secs.get(i, 0) for i in range(max(secs) + 1)], flush=True)
        sends = {}  # per driver: when its calls went out, as "+seconds:calls" every 0.02 s
        for claim, f, ms in Task.objects.filter(run=run).values_list(
            "claim", "finished", "latency_ms"
        ):
            b = round(((f - run.created).total_seconds() - ms / 1000) / 0.02) * 0.02
            sends.setdefault(claim.split(":")[0], {}).setdefault(b, 0)
            sends[claim.split(":")[0]][b] += 1
        for d, at in sends.items():
            print(
                "    sent by",
                d,
                " ".join(f"+{b:.2f}:{n}" for b, n in sorted(at.items())),
                flush=True,
            )
        # calls in flight every 0.1 s (a call's start: its end less its latency), and how
        # long tasks waited between being written and their call going out
        spans = [
            ((f - run.created).total_seconds() - ms / 1000, (f - run.created).total_seconds(),
             (c - run.created).total_seconds())
            for f, ms, c in Task.objects.filter(run=run).values_list("finished", "latency_ms", "created")
        ]  # fmt: skip
        by_step = {}
        for st, f, ms in Task.objects.filter(run=run).values_list("step", "finished", "latency_ms"):
            b = (f - run.created).total_seconds()
            by_step.setdefault(st, []).append((b - ms / 1000, b))
        for st, v in sorted(by_step.items()):
            a = sorted(x for x, _ in v)
            print(
                f"    step {st}: {len(v)} calls, sent +{a[0]:.2f}s .. +{a[-1]:.2f}s "
                f"(90% by +{a[len(a) * 9 // 10]:.2f}s), last back +{max(y for _, y in v):.2f}s",
                flush=True,
            )
        last = Task.objects.filter(run=run).order_by("-finished")[:12]
        for t in last:
            rel = lambda d: (d - run.created).total_seconds() if d else float("nan")  # noqa: E731
            p = t.parent
            print(
                f"    late: step {t.step} driver {t.claim.split(':')[0]} written +{rel(t.created):.2f}"
                f" sent +{rel(t.finished) - t.latency_ms / 1000:.2f} back +{rel(t.finished):.2f};"
                f" parent back +{rel(p.finished) if p else float('nan'):.2f} by {p.claim.split(':')[0] if p else '-'}",
                flush=True,
            )
        end = max(b for _, b, _ in spans)
        bins = [sum(1 for a, b, _ in spans if a <= t / 20 < b) for t in range(int(end * 20) + 1)]
        print("    in flight every 0.05 s:", bins, flush=True)
        print(
            f"    last call back +{end:.2f}s, run ended +{(run.finished - run.created).total_seconds():.2f}s",
            flush=True,
        )
        waits = sorted(a - c for a, _, c in spans)
        print(
            f"    first call +{min(a for a, _, _ in spans):.3f}s; wait from written to sent: "
            f"median {waits[len(waits) // 2]:.3f}s, 90% {waits[len(waits) * 9 // 10]:.3f}s",
            flush=True,
        )
    return {"wall": wall, "calls": done, "ok": run.status == Run.COMPLETED, "drivers": drivers}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--topics", type=int, default=100)  # 100 + 500 + 500 = 1,100 calls
    parser.add_argument(
        "--steps",
        type=int,
        choices=[1, 2, 3],
        default=3,
        help="the first N steps of qa-from-topics (1 with --topics 1100: the same 1,100 "
        "calls with no chain from step to step)",
    )
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--inflight", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--min-speedup", type=float, default=3.5)
    parser.add_argument(
        "--database",
        choices=["postgres", "sqlite"],
        default="postgres" if glob.glob("/usr/lib/postgresql/*/bin/initdb") else "sqlite",
        help="PostgreSQL (a private server; the default when Debian's is installed) or SQLite",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.scaleout needs root (ip netns): skipped", flush=True)
        return 0
    results = {}
    with Namespaces(max(args.workers)) as nss, tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        stack = Stack(tmp, args.latency, args.database)
        try:
            stack.start_services()
            for n in args.workers:
                procs = stack.workers(nss.names[:n], args.inflight)
                try:
                    # Every worker has driven a run once, with as many calls in flight as
                    # it may have (its connections to the provider open, as the bare
                    # clients' are): 10 topics a worker make 50 subtopic calls each.
                    one_run(stack, max(1, args.inflight // 5) * n, f"warm-up {n}")
                    idle_again(stack)
                    cpu0 = bench_run.cpu_seconds(procs)
                    r = one_run(stack, args.topics, f"{n} workers", args.steps)
                    r["cpu"] = bench_run.cpu_seconds(procs) - cpu0
                finally:
                    for p in procs:
                        p.terminate()
                    for p in procs:
                        p.wait(30)
                r["bare"] = bare_clients(stack, nss.names[:n], r["calls"], args.inflight)
                results[n] = r
                first = results[args.workers[0]]
                speedup = first["wall"] / r["wall"]
                print(
                    f"scale-out: {n} worker(s) x {args.inflight} in flight, {r['calls']} calls "
                    f"at {args.latency * 1000:.0f} ms: wall {r['wall']:.2f}s, "
                    f"{r['calls'] / r['wall']:.0f} calls/s, speed-up {speedup:.2f}x "
                    f"on {args.database} "
                    f"({len(r['drivers'])} drivers took part; the workers used "
                    f"{r['cpu']:.1f} CPU-s, {r['cpu'] / r['calls'] * 1000:.1f} ms a call)",
                    flush=True,
                )
                print(
                    f"  the machine's bound: {n} bare HTTP client(s) making the same calls, "
                    f"no engine: {r['bare']:.2f}s, speed-up {first['bare'] / r['bare']:.2f}x "
                    f"(the engine's wall is {r['wall'] / r['bare']:.2f}x theirs)",
                    flush=True,
                )
        finally:
            stack.stop()
    misses = [f"{n}: the run ended badly" for n, r in results.items() if not r["ok"]]
    top = max(args.workers)
    if top >= 4 and 1 in results:
        speedup = results[1]["wall"] / results[top]["wall"]
        if speedup < args.min_speedup:
            misses.append(f"speed-up {speedup:.2f}x at {top} workers is below {args.min_speedup}x")
    return bench_run.report_misses(misses)


if __name__ == "__main__":
    sys.exit(main())

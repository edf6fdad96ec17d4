"""A bare HTTP client: `--calls` chat completions, `--inflight` at a time, against a fake
provider, with no engine, database or Redis; prints how long after `--start` (a Unix
time shared by every process) its last call came back.

`bench.scaleout` runs one in each worker's network namespace, as many as it runs
workers, to measure what this machine allows: the fake provider and the clients share
its cores, and 200 replies coming back at once take longer than 50 do. The speed-up of
these clients is the bound of the engine's.

    .venv/bin/python -m bench.bare_client --url http://127.0.0.1:PORT/v1 --calls 275
"""

import argparse
import asyncio
import sys
import time

import aiohttp

PROMPT = (
    "Write 5 subtopics of 'Scale-out topic 7' as a JSON list of strings, each a few words long."
)


async def drive(url, calls, inflight, start):
    body = {"model": "fake", "messages": [{"role": "user", "content": PROMPT}]}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one():
            async with session.post(f"{url}/chat/completions", json=body) as resp:
                resp.raise_for_status()
                await resp.json()

        # Its connections open first, as a worker that has driven a run has them.
        await asyncio.gather(*[one() for _ in range(inflight)])
        start = start or time.time()
        await asyncio.sleep(max(0.0, start - time.time()))
        slots = asyncio.Semaphore(inflight)

        async def slot():
            async with slots:
                await one()

        await asyncio.gather(*[slot() for _ in range(calls)])
        return time.time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--inflight", type=int, default=50)
    parser.add_argument(
        "--start",
        type=float,
        default=0.0,
        help="Unix time (default: once its connections are open)",
    )
    args = parser.parse_args(argv)
    wall = asyncio.run(drive(args.url, args.calls, args.inflight, args.start))
    print(f"{wall:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ack latency of `/mailcheck HOST` under 50 concurrent signed slash commands.

The real Bolt app behind the real aiohttp HTTP-mode server (signature check
included) runs in its own process, as in production; the fake Slack Web API
and the client run in this one. The engine takes 0.1 s per step, so acks race
real background work (chat.postMessage, paced chat.update). Latency is
measured by the client: request sent -> HTTP response (the ack).

    python -m bench.slack_ack [--rounds 10] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bot.store import SQLiteStore
from tests.slack.conftest import ScriptedEngine, sign, slash_body, start_served
from tests.slack.fake_slack import FakeSlack


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


async def one(session: aiohttp.ClientSession, url: str, body: str) -> float:
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
    start = time.perf_counter()
    async with session.post(url + "/slack/events", data=body, headers=headers) as resp:
        await resp.read()
        assert resp.status == 200, resp.status
    return time.perf_counter() - start


async def serve_child(fake_url: str) -> None:
    """The bot process: serve until stdin closes; print the port, then the checks run."""
    fake = FakeSlack()
    fake.url = fake_url
    with tempfile.TemporaryDirectory(prefix="mailcheck-bench-") as tmp:
        served = await start_served(fake, ScriptedEngine(delay=0.1), interval=1.0,
                                    store=SQLiteStore(Path(tmp) / "mc.db"))
        print(served.url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await served.settle()
        print(len(served.engine.calls), flush=True)
        served.stop.set()
        await served.task


async def bench(rounds: int, concurrency: int) -> dict:
    fake = await FakeSlack().start()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.slack_ack", "--serve", fake.url,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    url = (await child.stdout.readline()).decode().strip()
    samples: list[float] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await one(session, url, slash_body("help", fake.response_url()))  # warm up
            for r in range(rounds):
                bodies = [slash_body("mx1" if i % 2 else "mx2", fake.response_url(),
                                     channel=f"C{r:02d}{i:03d}") for i in range(concurrency)]
                samples += await asyncio.gather(*(one(session, url, b) for b in bodies))
    finally:
        child.stdin.close()
        checks = int((await child.stdout.readline()).decode().strip() or 0)
        await child.wait()
        await fake.stop()
    return {"n": len(samples), "p50_ms": percentile(samples, 50) * 1000,
            "p99_ms": percentile(samples, 99) * 1000, "max_ms": max(samples) * 1000,
            "mean_ms": statistics.fmean(samples) * 1000, "checks_run": checks,
            "messages_posted": len(fake.of("chat.postMessage", ok=True))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--serve", metavar="FAKE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_child(args.serve))
        return
    result = asyncio.run(bench(args.rounds, args.concurrency))
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{args.rounds} rounds x {args.concurrency} concurrent signed slash commands")
    for key, value in result.items():
        print(f"{key:>16}: {value:.1f}" if isinstance(value, float) else f"{key:>16}: {value}")


if __name__ == "__main__":
    main()

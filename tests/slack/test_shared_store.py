"""Two apps (as two replicas) on one store, SQLite file or PostgreSQL: a delivery seen by one
is not handled again by the other, and a running check blocks a second one on the other.
(The same with two real `serve` processes and a lab host: tests/lab/test_replicas.py.)"""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.store import PostgresStore, SQLiteStore
from tests.slack.conftest import ScriptedEngine, post_signed, slash_body, start_served


@pytest.fixture(params=["sqlite", "postgresql"])
def two_stores(request, tmp_path):
    if request.param == "sqlite":
        return [SQLiteStore(tmp_path / "shared.db") for _ in range(2)]
    url = request.getfixturevalue("pg_url")
    return [PostgresStore(url) for _ in range(2)]


async def test_a_retry_on_the_other_replica_is_dropped_and_a_running_check_is_shared(
        fake, two_stores):
    gate = asyncio.Event()
    engines = [ScriptedEngine(gate=gate), ScriptedEngine(gate=gate)]
    a, b = [await start_served(fake, e, store=s) for e, s in zip(engines, two_stores, strict=True)]
    try:
        body = slash_body("mx1", fake.response_url(), trigger="77.77.same")
        first = await post_signed(a.url, body)
        retry = await post_signed(b.url, body, headers={"X-Slack-Retry-Num": "1"})
        other = await post_signed(b.url, slash_body("mx1", fake.response_url(), user="U0B"))
        elsewhere = await post_signed(b.url, slash_body("mx1", fake.response_url(), channel="C0X"))
        assert "Checking" in json.loads(first[1])["text"] and retry[1] == ""
        assert "still running in this channel" in json.loads(other[1])["text"]
        assert "Checking" in json.loads(elsewhere[1])["text"]  # another channel: its own check
        gate.set()
        await a.settle()
        await b.settle()
        assert engines[0].calls == [("mx1", None)] and engines[1].calls == [("mx1", None)]
        again = await post_signed(b.url, slash_body("mx1", fake.response_url(), user="U0B"))
        assert "Checking" in json.loads(again[1])["text"]  # the first ended: free again
        await b.settle()
    finally:
        for s in (a, b):
            s.stop.set()
            await s.task
        for store in two_stores:
            await store.close()

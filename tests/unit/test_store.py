"""The Store on both backends, one suite: SQLite (a file) and PostgreSQL (a real server,
tests/pglab.py). Plans, changes, audit and locks survive a restart (same database, new
object); claims, locks, delivery keys and running checks have exactly one winner."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from bot.store import AuditEntry, ChangeRecord, PlanRecord, PostgresStore, SQLiteStore
from tests.unit.fixtures_fixes import fix, inventory


@pytest.fixture(params=["sqlite", "postgresql"])
async def open_db(request, tmp_path):
    """`open_db()` -> a new Store object on this test's database (call again: "a restart",
    or another process); closed at the end."""
    opened = []
    if request.param == "sqlite":
        def make():
            return SQLiteStore(tmp_path / "mc.db")
    else:
        url = request.getfixturevalue("pg_url")

        def make():
            return PostgresStore(url)

    def open_one():
        opened.append(make())
        return opened[-1]

    yield open_one
    for store in opened:
        await store.close()


def plan(pid: str = "p1", ttl: float = 60) -> PlanRecord:
    now = time.time()
    return PlanRecord(id=pid, host=inventory().get("mx1"), fix=fix(), digest="d" * 64,
                      requested_by="UREQ", channel="C1", created_at=now, expires_at=now + ttl)


async def test_everything_survives_a_restart(open_db):
    s1 = open_db()
    await s1.add_plan(plan())
    await s1.add_audit(AuditEntry(event="check", actor="U1", host="mx1", result="broken"))
    await s1.add_change(ChangeRecord(id="c1", plan_id="p1", host=inventory().get("mx1"), fix=fix(),
                                     applied_by="U2", applied_at=time.time(), backup_dir="/b",
                                     restore_lines=[{"argv": ["iptables-restore"], "stdin": "/b/r"}]))
    assert await s1.acquire_lock("mx1", "U2 (fix a)", ttl=60) is None
    await s1.close()
    s2 = open_db()  # "the bot restarted"
    p = await s2.get_plan("p1")
    assert p is not None and p.state == "pending" and p.fix == fix() and p.channel == "C1"
    c = await s2.get_change("c1")
    assert c.restore_lines[0]["stdin"] == "/b/r" and c.state == "applied"
    [entry] = await s2.audit(host="mx1")
    assert (entry.event, entry.actor, entry.result) == ("check", "U1", "broken")
    held = await s2.acquire_lock("mx1", "U3", ttl=60)
    assert held is not None and held.holder == "U2 (fix a)"


def test_a_change_stored_before_the_rename_still_loads():
    """Rows written when the field was called restore_steps (transport.Step, now ScriptLine)."""
    new = ChangeRecord(id="c1", plan_id="p1", host=inventory().get("mx1"), fix=fix(),
                       applied_by="U2", applied_at=1.0, backup_dir="/b",
                       restore_lines=[{"argv": ["iptables-restore"], "stdin": "/b/r"}])
    old = new.model_dump_json().replace('"restore_lines"', '"restore_steps"')
    assert ChangeRecord.model_validate_json(old) == new


async def test_claim_is_once_only_and_respects_expiry(open_db):
    s = open_db()
    await s.add_plan(plan("live"))
    await s.add_plan(plan("old", ttl=-1))
    assert await s.claim_plan("live", "U1", time.time())
    assert not await s.claim_plan("live", "U2", time.time())
    assert (await s.get_plan("live")).claimed_by == "U1"
    assert not await s.claim_plan("old", "U1", time.time())
    await s.unclaim_plan("live")
    assert await s.claim_plan("live", "U2", time.time())


async def test_claim_from_two_store_objects_on_one_database_is_exclusive(open_db):
    """Two bot processes sharing the database: 50 concurrent claims, one winner."""
    a, b = open_db(), open_db()
    await a.add_plan(plan("p"))
    wins = await asyncio.gather(*[(a if i % 2 else b).claim_plan("p", f"U{i}", time.time())
                                  for i in range(50)])
    assert sum(wins) == 1


async def test_lock_expires_and_is_released_by_its_holder_only(open_db):
    s = open_db()
    assert await s.acquire_lock("mx1", "A", ttl=0.2) is None
    assert (await s.acquire_lock("mx1", "B", ttl=10)).holder == "A"
    await s.release_lock("mx1", "B")  # not B's lock: nothing happens
    assert (await s.acquire_lock("mx1", "B", ttl=10)).holder == "A"
    await asyncio.sleep(0.25)
    assert await s.acquire_lock("mx1", "B", ttl=10) is None  # A crashed: its lock lapsed
    await s.release_lock("mx1", "B")
    assert await s.acquire_lock("mx1", "C", ttl=10) is None


async def test_mark_change_once(open_db):
    s = open_db()
    await s.add_change(ChangeRecord(id="c", plan_id="p", host=inventory().get("mx1"), fix=fix(),
                                    applied_by="U", applied_at=0, backup_dir="/b"))
    results = await asyncio.gather(*[s.mark_change("c", "rolled_back", f"U{i}") for i in range(10)])
    assert sum(results) == 1
    assert (await s.get_change("c")).state == "rolled_back"


async def test_reports_are_kept_per_host_and_listed_for_details_and_the_home_tab(open_db):
    from bot.models import Report
    from bot.store import REPORTS_PER_HOST, ReportRecord

    s1 = open_db()
    for i in range(REPORTS_PER_HOST + 3):
        await s1.add_report(ReportRecord(id=f"r{i}", report=Report(host="mx1", address="a"),
                                         requested_by="U1", channel="C1", ts=f"{i}.0", at=1000.0 + i))
    await s1.add_report(ReportRecord(id="x", report=Report(host="mx2", address="b"), at=5.0))
    s2 = open_db()  # "the bot restarted"
    assert (await s2.get_report("r52")).ts == "52.0"
    assert await s2.get_report("r0") is None  # the oldest beyond the newest 50 are gone
    assert [(r.host, r.id) for r in await s2.latest_reports()] == [("mx1", "r52"), ("mx2", "x")]
    await s2.add_plan(plan("p_live"))
    await s2.add_plan(plan("p_old", ttl=-1))
    await s2.add_plan(plan("p_taken"))
    await s2.claim_plan("p_taken", "U2", time.time())
    assert [p.id for p in await s2.pending_plans(time.time())] == ["p_live"]
    for cid in ("c1", "c2"):
        await s2.add_change(ChangeRecord(id=cid, plan_id="p", host=inventory().get("mx1"), fix=fix(),
                                         applied_by="U2", applied_at=time.time(), backup_dir="/b"))
    await s2.mark_change("c1", "rolled_back", "U3")
    changes = await s2.recent_changes()
    assert [(c.id, c.state, c.rolled_back_by) for c in changes] == [
        ("c2", "applied", None), ("c1", "rolled_back", "U3")]


def change(cid: str, plan_id: str = "p", state: str = "applied") -> ChangeRecord:
    return ChangeRecord(id=cid, plan_id=plan_id, host=inventory().get("mx1"), fix=fix(),
                        applied_by="U2", applied_at=time.time(), backup_dir="/b", state=state)


async def test_started_rows_claimed_plans_and_requesters_for_reconcile(open_db):
    """What reconcile and four eyes read: plans by state, a plan's changes, who requested."""
    s = open_db()
    for pid, who in (("p1", "slack:U1"), ("p2", "slack:U2"), ("p3", "cli:root")):
        await s.add_plan(plan(pid).model_copy(update={"requested_by": who}))
    await s.claim_plan("p2", "slack:U9", time.time())
    assert [p.id for p in await s.plans_in_state("claimed")] == ["p2"]
    assert await s.requesters("d" * 64) == {"slack:U1", "slack:U2", "cli:root"}
    assert await s.requesters("e" * 64) == set()
    await s.add_change(change("c1", "p2", "started"))
    await s.add_change(change("c2", "p1"))
    await s.update_change((await s.get_change("c1")).model_copy(update={
        "state": "restored_by_host", "ruleset_after": "after"}))
    [c] = await s.changes_of_plan("p2")
    assert (c.id, c.state, c.ruleset_after) == ("c1", "restored_by_host", "after")
    assert await s.mark_change("c1", "rolled_back", "U3") is False  # only applied ones


async def test_lock_take_over_has_one_winner_and_get_lock_ignores_expired(open_db):
    a, b = open_db(), open_db()
    assert await a.acquire_lock("mx1", "dead pid 1", ttl=600) is None
    assert (await b.get_lock("mx1")).holder == "dead pid 1"
    wins = await asyncio.gather(*[(a if i % 2 else b).take_over_lock(
        "mx1", "dead pid 1", f"reconciler {i}", 60) for i in range(20)])
    assert sum(wins) == 1
    winner = f"reconciler {wins.index(True)}"
    assert (await a.get_lock("mx1")).holder == winner
    assert not await a.take_over_lock("mx1", "dead pid 1", "late", 60)
    await b.release_lock("mx1", winner)
    assert await a.get_lock("mx1") is None
    assert await a.acquire_lock("mx2", "short", ttl=0.05) is None
    await asyncio.sleep(0.1)
    assert await a.get_lock("mx2") is None  # expired: nobody holds it


async def test_concurrent_locks_of_one_host_have_one_holder(open_db):
    a, b = open_db(), open_db()
    held = await asyncio.gather(*[(a if i % 2 else b).acquire_lock("mx1", f"H{i}", ttl=60)
                                  for i in range(30)])
    assert sum(h is None for h in held) == 1
    winner = f"H{held.index(None)}"
    assert {h.holder for h in held if h is not None} == {winner}


async def test_a_delivery_is_first_once_across_processes_until_its_ttl(open_db):
    a, b = open_db(), open_db()
    firsts = await asyncio.gather(*[(a if i % 2 else b).first_delivery("cmd:T1", ttl=60)
                                    for i in range(30)])
    assert sum(firsts) == 1
    assert await a.first_delivery("cmd:T2", ttl=60)
    assert await b.first_delivery("act:x", ttl=0.05)
    await asyncio.sleep(0.1)
    assert await a.first_delivery("act:x", ttl=0.05)  # remembered for its ttl only


async def test_running_checks_one_per_key_across_processes(open_db):
    a, b = open_db(), open_db()
    got = await asyncio.gather(*[(a if i % 2 else b).start_running("C1 mx1", f"U{i}", f"h{i}", 60)
                                 for i in range(20)])
    assert sum(g is None for g in got) == 1
    first = got.index(None)
    assert set(got) - {None} == {f"U{first}"}  # the others are told who started it
    await b.end_running("C1 mx1", "h-other")  # not its holder: stays
    assert await a.start_running("C1 mx1", "U9", "h9", 60) == f"U{first}"
    await b.end_running("C1 mx1", f"h{first}")
    assert await a.start_running("C1 mx1", "U9", "h9", 0.05) is None
    await asyncio.sleep(0.1)
    assert await b.start_running("C1 mx1", "U8", "h8", 60) is None  # h9's entry expired


async def test_migrations_are_recorded_and_run_once(open_db):
    s = open_db()
    await s.ping()
    again = open_db()
    await again.ping()
    rows = await again._all("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == [1, 2]


def test_a_sqlite_file_from_before_versions_is_adopted(tmp_path):
    import sqlite3

    from bot.store.schema import migrations

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the schema as main created it, with a plan in it
        for statement in migrations("sqlite")[0][1]:
            conn.execute(statement)
        conn.execute("INSERT INTO plans (id, state, expires_at, body) VALUES (?,?,?,?)",
                     ("p_old", "pending", time.time() + 60, plan("p_old").model_dump_json()))
    s = SQLiteStore(db)
    assert asyncio.run(s.get_plan("p_old")).id == "p_old"
    assert asyncio.run(s.first_delivery("k", 60))


async def test_an_unreachable_postgresql_is_a_clear_error_without_its_password():
    from bot.errors import ConfigError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = PostgresStore(f"postgresql://mc:s3cret@127.0.0.1:{port}/mailcheck")
    with pytest.raises(ConfigError, match=f"mc:\\*\\*\\*@127.0.0.1:{port}/mailcheck cannot be "
                       "reached") as e:
        await store.ping()
    assert "s3cret" not in str(e.value)
    await store.close()


async def test_a_working_holder_keeps_its_lock_and_a_dead_ones_lapses(open_db, monkeypatch):
    """bot/fixes/storelock: renewed every LOCK_TTL/4 while the fix runs; a holder that stops
    renewing (killed) loses it within LOCK_TTL, so another replica may reconcile."""
    from bot.fixes import storelock

    monkeypatch.setattr(storelock, "LOCK_TTL", 0.4)
    a, b = open_db(), open_db()
    assert await storelock.take(a, "mx1", "worker", wait=0) is None
    async with storelock.kept(a, "mx1", "worker"):
        await asyncio.sleep(1.2)  # three lifetimes of the lock
        assert (await b.get_lock("mx1")).holder == "worker"
        assert await storelock.take(b, "mx1", "other", wait=0.2) == "worker"
    assert await b.get_lock("mx1") is None  # released at the end
    assert await storelock.take(a, "mx2", "killed", wait=0) is None  # and never renewed
    await asyncio.sleep(0.5)
    assert await b.get_lock("mx2") is None
    assert await storelock.take(b, "mx2", "next", wait=0) is None

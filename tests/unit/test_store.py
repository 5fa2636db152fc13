"""SQLiteStore: plans, changes, audit and locks survive a restart (same file, new object)."""

from __future__ import annotations

import asyncio
import time

from bot.store import AuditEntry, ChangeRecord, PlanRecord, SQLiteStore
from tests.unit.fixtures_fixes import fix, inventory


def plan(pid: str = "p1", ttl: float = 60) -> PlanRecord:
    now = time.time()
    return PlanRecord(id=pid, host=inventory().get("mx1"), fix=fix(), digest="d" * 64,
                      requested_by="UREQ", channel="C1", created_at=now, expires_at=now + ttl)


async def test_everything_survives_a_restart(tmp_path):
    db = tmp_path / "mc.db"
    s1 = SQLiteStore(db)
    await s1.add_plan(plan())
    await s1.add_audit(AuditEntry(event="check", actor="U1", host="mx1", result="broken"))
    await s1.add_change(ChangeRecord(id="c1", plan_id="p1", host=inventory().get("mx1"), fix=fix(),
                                     applied_by="U2", applied_at=time.time(), backup_dir="/b",
                                     restore_lines=[{"argv": ["iptables-restore"], "stdin": "/b/r"}]))
    assert await s1.acquire_lock("mx1", "U2 (fix a)", ttl=60) is None
    del s1
    s2 = SQLiteStore(db)  # "the bot restarted"
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


async def test_claim_is_once_only_and_respects_expiry(tmp_path):
    s = SQLiteStore(tmp_path / "mc.db")
    await s.add_plan(plan("live"))
    await s.add_plan(plan("old", ttl=-1))
    assert await s.claim_plan("live", "U1", time.time())
    assert not await s.claim_plan("live", "U2", time.time())
    assert (await s.get_plan("live")).claimed_by == "U1"
    assert not await s.claim_plan("old", "U1", time.time())
    await s.unclaim_plan("live")
    assert await s.claim_plan("live", "U2", time.time())


async def test_claim_from_two_store_objects_on_one_file_is_exclusive(tmp_path):
    """Two bot processes sharing the file: 50 claims in threads, one winner."""
    a, b = SQLiteStore(tmp_path / "mc.db"), SQLiteStore(tmp_path / "mc.db")
    await a.add_plan(plan("p"))
    wins = await asyncio.gather(*[(a if i % 2 else b).claim_plan("p", f"U{i}", time.time())
                                  for i in range(50)])
    assert sum(wins) == 1


async def test_lock_expires_and_is_released_by_its_holder_only(tmp_path):
    s = SQLiteStore(tmp_path / "mc.db")
    assert await s.acquire_lock("mx1", "A", ttl=0.2) is None
    assert (await s.acquire_lock("mx1", "B", ttl=10)).holder == "A"
    await s.release_lock("mx1", "B")  # not B's lock: nothing happens
    assert (await s.acquire_lock("mx1", "B", ttl=10)).holder == "A"
    await asyncio.sleep(0.25)
    assert await s.acquire_lock("mx1", "B", ttl=10) is None  # A crashed: its lock lapsed
    await s.release_lock("mx1", "B")
    assert await s.acquire_lock("mx1", "C", ttl=10) is None


async def test_mark_change_once(tmp_path):
    s = SQLiteStore(tmp_path / "mc.db")
    await s.add_change(ChangeRecord(id="c", plan_id="p", host=inventory().get("mx1"), fix=fix(),
                                    applied_by="U", applied_at=0, backup_dir="/b"))
    results = await asyncio.gather(*[s.mark_change("c", "rolled_back", f"U{i}") for i in range(10)])
    assert sum(results) == 1
    assert (await s.get_change("c")).state == "rolled_back"


async def test_reports_are_kept_per_host_and_listed_for_details_and_the_home_tab(tmp_path):
    from bot.models import Report
    from bot.store import REPORTS_PER_HOST, ReportRecord

    db = tmp_path / "mc.db"
    s1 = SQLiteStore(db)
    for i in range(REPORTS_PER_HOST + 3):
        await s1.add_report(ReportRecord(id=f"r{i}", report=Report(host="mx1", address="a"),
                                         requested_by="U1", channel="C1", ts=f"{i}.0", at=1000.0 + i))
    await s1.add_report(ReportRecord(id="x", report=Report(host="mx2", address="b"), at=5.0))
    s2 = SQLiteStore(db)  # "the bot restarted"
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

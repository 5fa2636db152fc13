"""Concurrency: one plan applied once under 50 simultaneous approvals; one change per host.

The fake host journals every command with real monotonic times, so the
exclusion is proved from what ran when, not from call counts of a mock.
"""

from __future__ import annotations

import asyncio

from bot.fixes import FixService
from bot.models import Actor, Fix, Precondition
from bot.store import SQLiteStore
from tests.unit.fakehost import FakeHost
from tests.unit.fixtures_fixes import IPTABLES_GUARDED, inventory, report, settings


def marked_fix(marker: str) -> Fix:
    return Fix(id=f"fw-{marker}", kind="firewall", backend="iptables", summary=marker,
               commands=[["iptables", "-A", "INPUT", "-m", "comment", "--comment", marker,
                          "-j", "ACCEPT"], ["iptables", "-L", marker]],
               persist=[["save-rules", marker]],
               preconditions=[Precondition(argv=["cat", f"/state/{marker}"], description=marker)],
               backup=IPTABLES_GUARDED)


def services(tmp_path, host: FakeHost, n: int = 2, **kw) -> list[FixService]:
    """n FixServices on one SQLite file: n bot processes sharing the store."""
    s = settings(tmp_path, **kw)
    return [FixService(settings=s, inventory=inventory(), store=SQLiteStore(s.db_path),
                       connect=host.connect) for _ in range(n)]


async def test_fifty_simultaneous_approvals_apply_exactly_once(tmp_path):
    host = FakeHost(delay=0.01)
    svcs = services(tmp_path, host, n=5)
    plan_id = (await svcs[0].register(report("mx1", marked_fix("once")), Actor("slack", "UREQ")))["fw-once"]
    approvers = [Actor("slack", "UHOST"), Actor("slack", "UGROUP")]
    outs = await asyncio.gather(*[
        svcs[i % 5].apply(plan_id, approvers[i % 2]) for i in range(50)])
    statuses = [o.status for o in outs]
    assert statuses.count("applied") == 1, statuses
    assert statuses.count("duplicate") == 49
    assert len(host.ran("--comment")) == 1 and len(host.ran("save-rules")) == 1
    audit = await svcs[1].audit("mx1", limit=200)
    assert [e.event for e in audit].count("apply") == 1
    assert [e.event for e in audit].count("duplicate") == 49


def _intervals(host: FakeHost, owners: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Plan -> (first start, last end) over every connection that worked for it."""
    by_conn: dict[int, str] = {}
    for _s, _e, conn, argv in host.journal:
        for needle, plan in owners.items():
            if any(needle in a for a in argv):
                assert by_conn.setdefault(conn, plan) == plan
    spans: dict[str, tuple[float, float]] = {}
    for start, end, conn, _argv in host.journal:
        plan = by_conn[conn]  # every command belongs to exactly one plan's connections
        lo, hi = spans.get(plan, (start, end))
        spans[plan] = (min(lo, start), max(hi, end))
    return spans


async def test_two_plans_on_one_host_never_overlap(tmp_path):
    host = FakeHost(delay=0.02)
    a, b = services(tmp_path, host)
    pa = (await a.register(report("mx1", marked_fix("alpha")), Actor("slack", "UREQ")))["fw-alpha"]
    pb = (await b.register(report("mx1", marked_fix("beta")), Actor("slack", "UREQ")))["fw-beta"]
    oa, ob = await asyncio.gather(a.apply(pa, Actor("slack", "UHOST")), b.apply(pb, Actor("slack", "UGROUP")))
    assert (oa.status, ob.status) == ("applied", "applied"), (oa.message, ob.message)
    spans = _intervals(host, {"alpha": "A", "beta": "B", oa.change_id: "A", ob.change_id: "B"})
    (s1, e1), (s2, e2) = sorted(spans.values())
    assert e1 <= s2, f"changes overlapped: {spans}"
    assert e1 - s1 > 0.2 and e2 - s2 > 0.2  # each really took time (a dozen commands)


async def test_other_hosts_are_not_serialised(tmp_path):
    host = FakeHost(delay=0.02)
    a, b = services(tmp_path, host)
    pa = (await a.register(report("mx1", marked_fix("one")), Actor("slack", "UREQ")))["fw-one"]
    pb = (await b.register(report("mx2", marked_fix("two")), Actor("slack", "UREQ")))["fw-two"]
    oa, ob = await asyncio.gather(a.apply(pa, Actor("slack", "UHOST")), b.apply(pb, Actor("slack", "UEU")))
    spans = _intervals(host, {"one": "A", "two": "B", oa.change_id: "A", ob.change_id: "B"})
    (s1, e1), (s2, e2) = sorted(spans.values())
    assert s2 < e1  # ran side by side


async def test_busy_host_refuses_with_the_holders_name_and_keeps_the_plan(tmp_path):
    host = FakeHost(delay=0.05)
    a, b = services(tmp_path, host, lock_wait=0.0)
    pa = (await a.register(report("mx1", marked_fix("first")), Actor("slack", "UREQ")))["fw-first"]
    pb = (await b.register(report("mx1", marked_fix("second")), Actor("slack", "UREQ")))["fw-second"]
    first = asyncio.create_task(a.apply(pa, Actor("slack", "UHOST")))
    for _ in range(400):  # until the first change has started on the host
        if host.journal:
            break
        await asyncio.sleep(0.005)
    busy = await b.apply(pb, Actor("slack", "UGROUP"))
    assert busy.status == "busy" and "UHOST (fix fw-first" in busy.message
    assert (await first).status == "applied"
    assert (await b.plan(pb)).state == "pending"
    assert (await b.apply(pb, Actor("slack", "UGROUP"))).status == "applied"

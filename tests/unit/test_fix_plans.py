"""Plans through FixService on a fake host: expiry, once-only, hash binding, refusals audited."""

from __future__ import annotations

import time

import pytest

from bot.fixes import FixService
from bot.fixes.plans import plan_digest
from bot.models import Actor
from bot.store import SQLiteStore
from tests.unit.fakehost import FakeHost
from tests.unit.fixtures_fixes import RULES, fix, inventory, report, settings

NO_SYSTEMD = ("test", "-d", "/run/systemd/system")  # like the lab hosts: systemd is not PID 1


@pytest.fixture
def host() -> FakeHost:
    return FakeHost(answers={("iptables-save",): (0, RULES), NO_SYSTEMD: (1, "")})


def service(tmp_path, host: FakeHost, **kw) -> FixService:
    s = settings(tmp_path, **kw)
    return FixService(settings=s, inventory=inventory(), store=SQLiteStore(s.db_path),
                      connect=host.connect)


async def test_plan_ids_are_opaque_and_apply_happens_once(tmp_path, host):
    svc = service(tmp_path, host)
    ids = await svc.register(report("mx1"), requested_by=Actor("slack", "UREQ"), channel="C1")
    plan_id = ids["fw-a"]
    assert plan_id.startswith("p_") and len(plan_id) > 20 and "iptables" not in plan_id
    first = await svc.apply(plan_id, Actor("slack", "UHOST"))
    assert first.status == "applied", first.message
    assert first.change_id and first.commands == fix().shell_commands
    again = await svc.apply(plan_id, Actor("slack", "UHOST"))  # Slack retried the delivery
    assert again.status == "duplicate" and "UHOST" in again.message
    assert len(host.ran("--comment")) == 1
    events = [e.event for e in await svc.audit("mx1")]
    assert events.count("apply") == 1 and "duplicate" in events and "approval" in events


async def test_expired_plan_is_refused_with_a_recheck(tmp_path, host):
    svc = service(tmp_path, host, plan_ttl=0)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    out = await svc.apply(plan_id, Actor("slack", "UHOST"))
    assert out.status == "expired" and out.offer_recheck and "expired" in out.message
    assert host.journal == []


async def test_a_changed_plan_voids_the_approval(tmp_path, host):
    svc = service(tmp_path, host)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    plan = await svc.plan(plan_id)
    assert plan.digest == plan_digest(plan.host, plan.fix)
    # someone edits the stored plan's commands behind the button's back
    evil = plan.fix.model_copy(update={"commands": [["iptables", "-F"]]})
    import sqlite3
    with sqlite3.connect(svc.settings.db_path) as db:
        db.execute("UPDATE plans SET body = ? WHERE id = ?",
                   (plan.model_copy(update={"fix": evil}).model_dump_json(), plan_id))
    out = await svc.apply(plan_id, Actor("slack", "UHOST"))
    assert out.status == "void" and out.offer_recheck
    assert host.journal == []


async def test_a_presented_digest_must_match(tmp_path, host):
    svc = service(tmp_path, host)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    out = await svc.apply(plan_id, Actor("slack", "UHOST"), digest="0" * 64)
    assert out.status == "void"
    good = (await svc.plan(plan_id)).digest
    assert (await svc.apply(plan_id, Actor("slack", "UHOST"), digest=good)).status == "applied"


def test_digest_covers_host_commands_and_evidence():
    inv = inventory()
    base = plan_digest(inv.get("mx1"), fix())
    assert plan_digest(inv.get("mx2"), fix()) != base
    assert plan_digest(inv.get("mx1"), fix(pre_out=RULES + "# x\n-A INPUT -j ACCEPT\n")) != base
    f = fix()
    assert plan_digest(inv.get("mx1"), f.model_copy(update={"persist": []})) != base
    assert plan_digest(inv.get("mx1"), f.model_copy(update={"findings": ["x"]})) != base
    assert plan_digest(inv.get("mx1"), fix()) == base


async def test_non_approver_refused_and_recorded_plan_stays_pending(tmp_path, host):
    svc = service(tmp_path, host, four_eyes=True)
    plan_id = (await svc.register(report(), Actor("slack", "UHOST")))["fw-a"]
    out = await svc.apply(plan_id, Actor("slack", "UINTRUDER"))
    assert out.status == "refused" and "may not approve" in out.message and "UHOST" in out.approvers.users
    assert (await svc.apply(plan_id, Actor("slack", "UHOST"))).status == "refused"  # four eyes
    assert (await svc.plan(plan_id)).state == "pending"
    refusals = [e for e in await svc.audit("mx1") if e.event == "refusal"]
    assert {e.actor for e in refusals} == {"UINTRUDER", "UHOST"}
    assert "UHOST" in next(e for e in refusals if e.actor == "UINTRUDER").detail["approvers"]
    assert (await svc.apply(plan_id, Actor("slack", "UGROUP"))).status == "applied"


async def test_precondition_changed_is_refused_before_any_change(tmp_path, host):
    svc = service(tmp_path, host)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    host.answers[("iptables-save",)] = (0, RULES.replace("25", "26"))
    out = await svc.apply(plan_id, Actor("slack", "UHOST"))
    assert out.status == "precondition_changed" and out.offer_recheck
    assert "INPUT rules" in out.message
    assert [j[3] for j in host.journal if ".lock" not in " ".join(j[3])] == [("iptables-save",)]
    assert (await svc.plan(plan_id)).state == "refused"


async def test_read_only_refuses_with_a_clear_message(tmp_path, host):
    svc = service(tmp_path, host, read_only=True)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    out = await svc.apply(plan_id, Actor("slack", "UHOST"))
    assert out.status == "refused" and "read-only" in out.message and host.journal == []


async def test_break_glass_is_announced_and_audited(tmp_path, host):
    svc = service(tmp_path, host, break_glass=True)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    out = await svc.apply(plan_id, Actor("slack", "UX"), break_glass_reason="mail down, approvers unreachable")
    assert out.status == "applied" and out.break_glass
    assert out.break_glass_reason == "mail down, approvers unreachable"  # the renderer announces it
    [bg] = [e for e in await svc.audit("mx1") if e.event == "break_glass"]
    assert bg.actor == "UX" and bg.detail["reason"] == "mail down, approvers unreachable"


async def test_failed_command_restores_the_backup(tmp_path, host):
    svc = service(tmp_path, host)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    host.fail.add(tuple(fix().commands[0]))
    out = await svc.apply(plan_id, Actor("slack", "UHOST"))
    assert out.status == "failed" and "restored" in out.message
    restore = [j for j in host.journal if "iptables-restore" in " ".join(j[3])
               and j[3][0] == "sh"]
    assert restore and restore[-1][0] > host.ran("--comment")[0][0]
    assert not host.ran("netfilter-persistent")  # never persisted


async def test_the_dead_man_is_disarmed_over_a_fresh_connection(tmp_path, host):
    svc = service(tmp_path, host)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    assert (await svc.apply(plan_id, Actor("slack", "UHOST"))).status == "applied"
    [arm] = [j for j in host.journal if j[3][:2] == ("setsid", "-f")]
    [cmd] = host.ran("--comment")
    [disarm] = [j for j in host.journal if j[3][0] == "mv"]
    [persist] = host.ran("netfilter-persistent")
    assert arm[1] <= cmd[0] and cmd[1] <= disarm[0] and disarm[1] <= persist[0]
    assert disarm[2] != cmd[2]  # another connection than the one that changed the rules
    assert "sleep 10" in arm[3][4] and "iptables-restore" in arm[3][4]


async def test_where_systemd_runs_the_guard_is_a_systemd_run_timer(tmp_path, host):
    del host.answers[NO_SYSTEMD]  # /run/systemd/system exists, systemd-run --version works
    svc = service(tmp_path, host)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    out = await svc.apply(plan_id, Actor("slack", "UHOST"))
    assert out.status == "applied", out.message
    [arm] = [j[3] for j in host.journal if j[3][:2] == ("systemd-run", "--quiet")]
    assert arm[:6] == ("systemd-run", "--quiet", "--collect", f"--unit=mailcheck-guard-{out.change_id}",
                       "--on-active=10", "--timer-property=AccuracySec=1s")
    assert arm[-3:-1] == ("/bin/sh", "-c") and "sleep" not in arm[-1]
    assert "iptables-restore" in arm[-1] and "deadman.armed.restored" in arm[-1]
    assert not [j for j in host.journal if j[3][0] == "setsid"]


async def test_rollback_runs_stored_restore_once(tmp_path, host):
    svc = service(tmp_path, host)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    out = await svc.apply(plan_id, Actor("slack", "UHOST"))
    assert (await svc.rollback(out.change_id, Actor("slack", "UINTRUDER"))).status == "refused"
    rb = await svc.rollback(out.change_id, Actor("slack", "UHOST"))
    assert rb.status == "rolled_back" and rb.exact is True
    assert (await svc.rollback(out.change_id, Actor("slack", "UHOST"))).status == "duplicate"
    assert (await svc.rollback("c_nope", Actor("slack", "UHOST"))).status == "unknown_change"


async def test_verifier_not_achieved_offers_rollback(tmp_path, host):
    from bot.models import Actor, PortStatus

    async def still_filtered(h, f):
        return [PortStatus(port=25, direction="inbound", outside="filtered")]

    s = settings(tmp_path)
    svc = FixService(settings=s, inventory=inventory(), store=SQLiteStore(s.db_path),
                     connect=host.connect, verifier=still_filtered)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    out = await svc.apply(plan_id, Actor("slack", "UHOST"))
    assert out.status == "not_achieved" and out.offer_rollback and out.change_id
    assert "inbound ipv4 25: filtered" in out.message
    assert out.before.ports[0].outside == "filtered"


def test_expiry_default_is_fifteen_minutes(tmp_path):
    assert settings(tmp_path).plan_ttl == 900
    assert time.time()  # keep import used


async def test_unreachable_host_changes_nothing_and_the_plan_can_be_retried(tmp_path, host):
    svc = service(tmp_path, host)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    host.unreachable = True
    out = await svc.apply(plan_id, Actor("slack", "UHOST"))
    assert out.status == "failed" and "nothing was applied" in out.message
    assert (await svc.plan(plan_id)).state == "pending"
    host.unreachable = False
    assert (await svc.apply(plan_id, Actor("slack", "UHOST"))).status == "applied"


async def test_approvers_and_address_come_from_todays_inventory(tmp_path, host):
    svc = service(tmp_path, host)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    # UHOST loses the approver role after the check: the plan's copy of the host does not count
    svc.inventory.hosts["mx1"] = svc.inventory.hosts["mx1"].model_copy(update={"approvers": []})
    assert (await svc.apply(plan_id, Actor("slack", "UHOST"))).status == "refused"
    svc.inventory.hosts["mx1"] = svc.inventory.hosts["mx1"].model_copy(update={"address": "198.18.9.9"})
    assert (await svc.apply(plan_id, Actor("slack", "UGROUP"))).status == "void"
    del svc.inventory.hosts["mx1"]
    out = await svc.apply(plan_id, Actor("slack", "UGROUP"))
    assert out.status == "void" and "no longer in the inventory" in out.message
    assert host.journal == []


async def test_rollback_refuses_to_clobber_later_changes_unless_forced(tmp_path, host):
    svc = service(tmp_path, host)
    out = await svc.apply((await svc.register(report(), Actor("slack", "UREQ")))["fw-a"], Actor("slack", "UHOST"))
    host.answers[("iptables-save",)] = (0, RULES + "-A INPUT -p tcp --dport 8080 -j ACCEPT\n")
    rb = await svc.rollback(out.change_id, Actor("slack", "UHOST"))
    assert rb.status == "drift" and "--force" in rb.message
    assert not [j for j in host.journal if "iptables-restore <" in " ".join(j[3]) and j[3][0] == "sh"]
    assert (await svc.rollback(out.change_id, Actor("slack", "UHOST"), force=True)).status == "rolled_back"


async def test_four_eyes_refuses_an_approver_who_pressed_recheck_on_the_same_plan(tmp_path, host):
    svc = service(tmp_path, host, four_eyes=True)
    first = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    again = (await svc.register(report(), Actor("slack", "UHOST")))["fw-a"]  # UHOST: Re-check
    out = await svc.apply(first, Actor("slack", "UHOST"))
    assert out.status == "refused" and "four eyes" in out.message
    assert (await svc.apply(again, Actor("slack", "UHOST"))).status == "refused"
    assert (await svc.apply(first, Actor("slack", "UGROUP"))).status == "applied"


async def test_rollback_authorises_against_todays_inventory(tmp_path, host):
    svc = service(tmp_path, host)
    out = await svc.apply((await svc.register(report(), Actor("slack", "UREQ")))["fw-a"],
                          Actor("slack", "UHOST"))
    svc.inventory.hosts["mx1"] = svc.inventory.hosts["mx1"].model_copy(update={"approvers": []})
    rb = await svc.rollback(out.change_id, Actor("slack", "UHOST"))  # no longer an approver
    assert rb.status == "refused" and "may not approve" in rb.message
    assert "UHOST" not in rb.approvers.users and "UGROUP" in rb.approvers.users  # today's
    del svc.inventory.hosts["mx1"]
    rb = await svc.rollback(out.change_id, Actor("slack", "UGROUP"))
    assert rb.status == "refused" and "no longer in the inventory" in rb.message
    refusals = [e for e in await svc.audit("mx1") if e.event == "refusal"]
    assert len(refusals) == 2


async def test_a_failing_group_lookup_is_refused_and_audited(tmp_path, host):
    async def rate_limited(_group: str) -> list[str]:
        raise RuntimeError("ratelimited")

    s = settings(tmp_path)
    svc = FixService(settings=s, inventory=inventory(), store=SQLiteStore(s.db_path),
                     connect=host.connect, group_members=rate_limited)
    plan_id = (await svc.register(report(), Actor("slack", "UREQ")))["fw-a"]
    out = await svc.apply(plan_id, Actor("slack", "UOPS"))
    assert out.status == "refused" and "could not read the members" in out.message
    [refusal] = [e for e in await svc.audit("mx1") if e.event == "refusal"]
    assert refusal.detail["code"] == "group_lookup_failed" and host.journal == []

"""The apply path under faults, on a fake host that journals what ran (the lab shows the same on
real hosts: tests/lab/test_fix_faults.py). Nothing may be claimed that did not happen."""

from __future__ import annotations

import pytest

from bot.fixes import FixService
from bot.models import Actor, BackupSpec
from bot.store import SQLiteStore
from tests.unit.fakehost import FakeHost
from tests.unit.fixtures_fixes import RULES, fix, inventory, report, settings


@pytest.fixture
def host() -> FakeHost:
    return FakeHost(answers={("iptables-save",): (0, RULES)})


def service(tmp_path, host: FakeHost, **kw) -> FixService:
    s = settings(tmp_path, **kw)
    return FixService(settings=s, inventory=inventory(), store=SQLiteStore(s.db_path),
                      connect=host.connect)


async def apply(svc: FixService, f) -> object:
    plan_id = (await svc.register(report("mx1", f), Actor("slack", "UREQ")))[f.id]
    return await svc.apply(plan_id, Actor("slack", "UHOST"))


async def test_a_firewall_fix_without_a_declared_backup_is_refused(tmp_path, host):
    undeclared = fix().model_copy(update={"backup": None})
    out = await apply(service(tmp_path, host), undeclared)
    assert out.status == "failed" and "does not declare its backup" in out.message
    assert not host.ran("--comment")  # its command never ran


async def test_a_ruleset_backup_that_would_not_load_refuses_without_an_undo(tmp_path, host):
    host.fail_if = ["--test"]  # iptables-restore --test rejects the saved file
    out = await apply(service(tmp_path, host), fix())
    assert out.status == "failed" and "would not load" in out.message, out.message
    assert not host.ran("--comment") and not host.ran("deadman")  # no change, no guard armed


async def test_with_a_declared_undo_the_undo_guards_instead(tmp_path, host):
    host.fail_if = ["--test"]
    undo = [["iptables", "-I", "INPUT", "1", "-m", "comment", "--comment", "undo-a", "-j", "DROP"]]
    f = fix().model_copy(update={"backup": BackupSpec(rulesets=["iptables"], undo=undo, guard=True)})
    out = await apply(service(tmp_path, host), f)
    assert out.status == "applied", out.message
    [job] = [j for j in host.journal if "deadman.armed" in " ".join(j[3]) and j[3][0] != "touch"
             and "undo-a" in " ".join(j[3])]
    assert "iptables-restore" not in " ".join(job[3])  # the guard runs the undo, not the snapshot

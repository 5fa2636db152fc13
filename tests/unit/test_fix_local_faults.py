"""The apply path's failure paths on real files with a real sh (LocalTransport): the guard's
markers are real renames, the backup a real copy. Nothing may be claimed that did not happen."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.fixes import FixService
from bot.models import Actor, BackupSpec, Fix
from bot.store import SQLiteStore
from bot.transport import LocalTransport
from tests.unit.fixtures_fixes import inventory, report, settings


def local(_host) -> LocalTransport:
    return LocalTransport("mx1")


def config_fix(path, *, fail: bool = True) -> Fix:
    change = ["sh", "-c", 'echo changed >"$0"', str(path)]
    return Fix(id="cf", kind="config", summary="edit a file", commands=[change, ["false"]] if fail
               else [change], backup=BackupSpec(paths=[str(path)], guard=True))


def service(tmp_path) -> FixService:
    s = settings(tmp_path, lockout_deadline=10, command_timeout=2.0)
    return FixService(settings=s, inventory=inventory(), store=SQLiteStore(s.db_path),
                      connect=local)


async def test_stopped_after_its_own_restore_reconcile_does_not_say_applied(tmp_path):
    """A command failed, mailcheck restored the backup and disarmed the guard, then stopped
    (SIGTERM past the drain time lands in the lock release; or SIGKILL) before recording it.
    The host shows the original file: reconcile must not call the change confirmed and in effect."""
    target = tmp_path / "app.conf"
    target.write_text("original\n")
    f = config_fix(target)
    svc = service(tmp_path)

    async def cancelled(*_a) -> None:
        raise asyncio.CancelledError

    svc.applier._release = cancelled  # the drain's cancel lands after the restore and disarm
    plan_id = (await svc.register(report("mx1", f), Actor("slack", "UREQ")))[f.id]
    with pytest.raises(asyncio.CancelledError):
        await svc.apply(plan_id, Actor("slack", "UHOST"))
    assert target.read_text() == "original\n"  # restored for real
    assert (await svc.plan(plan_id)).state == "claimed"

    [found] = await service(tmp_path).reconcile(now=time.time() + 60)
    assert found.status == "failed", found.message
    assert "in effect" not in found.message and "restored the backup itself" in found.message
    [change] = await svc.store.changes_of_plan(plan_id)
    assert change.state == "restored"
    assert (await svc.plan(plan_id)).state == "failed"


@pytest.mark.parametrize("present,ok", [("deadman.armed", True), ("", True),
                                        ("deadman.armed.fired", False)])
def test_the_quiet_disarm_says_whether_a_guard_can_still_fire(tmp_path, present, ok):
    import subprocess

    from bot.fixes import guard
    from bot.fixes.backup import Backup
    bp = Backup(directory=str(tmp_path), take=[], restore=[], guard=True)
    if present:
        (tmp_path / present).touch()
    cmd = guard.quiet_disarm_command(bp)
    assert (subprocess.run(cmd.argv, timeout=10).returncode == 0) is ok
    assert not (tmp_path / "deadman.armed").exists()
    assert (tmp_path / "deadman.armed.cancelled").exists() is (present == "deadman.armed")

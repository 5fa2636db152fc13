"""The dead-man guard where systemd runs the host (issue 10, item 5), on a real systemd.

A SystemdHost (tests/systemdlab.py): Debian 12's systemd as PID 1 with logind's
KillUserProcesses=yes, mailcheck logged in as the non-root user `mc` with sudo. A mailcheck
process applies a guarded iptables fix (it removes the port-25 DROP rule, then sleeps) and
is killed with SIGKILL mid-apply, so its SSH session ends and nobody confirms.

- systemd-run: the guard is a transient systemd timer, outside the session; logind kills
  the session's processes (the fix's sleep is gone before its time), the timer fires at
  the deadline, the host restores its backup (deadman.armed.restored) and the rules are
  byte-identical to before.
- the setsid fallback on the same host (systemd-run taken away): the guard job dies with
  the session, exactly the defect the issue describes; nothing fires, the change stays.
  The restarted mailcheck (reconcile, same database) reads the still-armed guard, restores
  over SSH itself, and says the guard had not fired.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.fixes import FixService
from bot.store import SQLiteStore
from bot.transport import SSHTransport
from config.inventory import Host, Inventory
from config.settings import Settings
from tests.lab.test_fix_faults import until
from tests.systemdlab import DROP_25, PORT, SLEEP, USER, SystemdHost

pytestmark = pytest.mark.lab
ROOT = Path(__file__).parents[2]
GUARD_DIR = "/var/backups/mailcheck/*"


class DyingMailcheck:
    """`python -m tests.systemdlab`: a mailcheck process applying the slow fix."""

    def __init__(self, tmp_path: Path, lh, sd: SystemdHost, client_key: Path) -> None:
        self.db = tmp_path / "mc.db"
        args = {"ip": lh.ip, "key": str(client_key), "known_hosts": str(sd.known_hosts),
                "db": str(self.db)}
        self.out = tmp_path / "mailcheck.out"
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.systemdlab", json.dumps(args)],
                                         cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    @property
    def deadline(self) -> int:
        words = self.out.read_text().split()
        return int(words[words.index("deadline") + 1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


async def kill_mid_apply(lh, sd: SystemdHost, tmp_path: Path, client_key: Path):
    """Start the apply, kill mailcheck during the fix's sleep; returns (mailcheck, seconds the
    sleep had left when logind ended the session)."""
    mc = DyingMailcheck(tmp_path, lh, sd, client_key)
    try:
        await until(lambda: sd.running("sleep", str(SLEEP)) or mc.proc.poll() is not None, 90,
                    "the fix's sleep")
        assert mc.proc.poll() is None, mc.out.read_text()[-3000:] + "\n" + sd.diagnostics()[-6000:]
        seen = time.monotonic()
        assert sd.exists(f"{GUARD_DIR}/deadman.armed") and "--dport 25" not in lh.rules()
        sessions = sd.exec("loginctl", "list-sessions", "--no-legend").stdout
        assert USER in sessions, sessions  # a logind session, as a real login has
        return mc, seen  # the caller looks at the guard, then kills mailcheck
    except BaseException:
        mc.kill()
        raise


async def session_killed(sd: SystemdHost, mc: DyingMailcheck, seen: float) -> None:
    """SIGKILL mailcheck; logind (KillUserProcesses=yes) ends the session and kills what ran in
    it: the fix's sleep is gone long before its own end."""
    mc.kill()
    await until(lambda: not sd.running("sleep", str(SLEEP)), SLEEP, "the session's processes killed")
    assert time.monotonic() - seen < SLEEP - 2, "the sleep ended by itself, not by logind"
    await until(lambda: USER not in sd.exec("loginctl", "list-sessions", "--no-legend").stdout,
                30, "the session gone")


def host_of(lh, sd: SystemdHost, client_key: Path) -> Host:
    return Host(name="mx-systemd", address=lh.ip, port=PORT, user=USER, sudo=True,
                identity_file=client_key, known_hosts=sd.known_hosts, approvers=["UOPS"])


async def test_where_systemd_runs_the_guard_is_a_timer_that_outlives_the_session(lab, tmp_path, client_key):
    lh = lab()
    sd = SystemdHost(lh, client_key).start()
    lh.sh("iptables", "-A", "INPUT", *DROP_25)
    before = lh.rules()
    mc, seen = await kill_mid_apply(lh, sd, tmp_path, client_key)
    timers = sd.exec("systemctl", "list-timers", "--all", "--no-legend", "mailcheck-guard-*").stdout
    assert "mailcheck-guard-" in timers, timers  # the guard is a transient systemd timer
    assert not sd.running("sleep", str(mc.deadline))  # not a setsid job sleeping in the session
    await session_killed(sd, mc, seen)
    await until(lambda: sd.exists(f"{GUARD_DIR}/deadman.armed.restored"), mc.deadline + 60,
                "the guard's restore at its deadline")
    assert not sd.exists(f"{GUARD_DIR}/deadman.armed.restore-failed")
    assert lh.rules() == before  # byte-identical: the DROP rule is back
    journal = sd.exec("journalctl", "--no-pager", "-o", "cat", "-u", "mailcheck-guard-*").stdout
    assert "mailcheck lock-out guard" in journal, journal[-2000:]  # systemd ran it


async def test_the_setsid_fallback_dies_with_the_session_and_the_restart_says_so(lab, tmp_path, client_key):
    lh = lab()
    sd = SystemdHost(lh, client_key).start()
    sd.exec("mv", "/usr/bin/systemd-run", "/usr/bin/systemd-run.off")  # the fallback's case
    lh.sh("iptables", "-A", "INPUT", *DROP_25)
    before = lh.rules()
    mc, seen = await kill_mid_apply(lh, sd, tmp_path, client_key)
    assert sd.running("sleep", str(mc.deadline))  # the setsid job, waiting in the session
    assert "mailcheck-guard-" not in sd.exec("systemctl", "list-timers", "--all", "--no-legend").stdout
    await session_killed(sd, mc, seen)
    assert not sd.running("sleep", str(mc.deadline))  # the guard died with the session
    await asyncio.sleep(mc.deadline + 5)  # past its deadline: nothing fires
    assert sd.exists(f"{GUARD_DIR}/deadman.armed") and not sd.exists(f"{GUARD_DIR}/deadman.armed.*")
    assert "--dport 25" not in lh.rules()  # the change is still there

    # the restarted mailcheck finds the plan claimed, reads the armed guard, restores itself
    settings = Settings(_env_file=None, db_path=mc.db, backup_dir="/var/backups/mailcheck",
                        connect_timeout=3.0, command_timeout=5.0, lockout_deadline=15)
    host = host_of(lh, sd, client_key)
    svc = FixService(settings=settings, inventory=Inventory.model_validate(
        {"hosts": {host.name: host.model_dump()}}), store=SQLiteStore(mc.db),
        connect=lambda h: SSHTransport(h, settings))
    [found] = await svc.reconcile()
    assert found.status == "failed", (found.status, found.message)
    assert "the guard had not fired, so mailcheck restored now" in found.message, found.message
    assert "the backup was restored and the rulesets equal those before" in found.message
    assert lh.rules() == before
    [change] = await svc.store.changes_of_plan(found.plan_id)
    assert change.state == "restored"
    assert [e.result for e in await svc.audit(host.name) if e.event == "reconcile"] == ["connection_lost"]

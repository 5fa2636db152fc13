"""The apply path under faults, on a fake host that journals what ran (the lab shows the same on
real hosts: tests/lab/test_fix_faults.py). Nothing may be claimed that did not happen."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from bot.fixes import FixService
from bot.models import Actor, BackupSpec, Fix
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


# --- restore first, check, disarm only after a restore that succeeded -------------------------

def journal_words(host: FakeHost) -> list[str]:
    return [" ".join(j[3]) for j in host.journal]


def index_of(words: list[str], needle: str, start: int = 0) -> int:
    return next(i for i, w in enumerate(words) if i >= start and needle in w)


def is_restore(argv: tuple[str, ...]) -> bool:
    """mailcheck's own restore script (not the guard job, not a test-load)."""
    return argv[:2] == ("sh", "-c") and argv[2].startswith("rc=0\n") and "iptables-restore <" in argv[2]


async def test_a_failed_command_restores_first_and_disarms_after(tmp_path, host):
    host.fail.add(tuple(fix().commands[0]))
    svc = service(tmp_path, host)
    out = await apply(svc, fix())
    assert out.status == "failed" and "the backup was restored" in out.message, out.message
    words = journal_words(host)
    restore = next(i for i, j in enumerate(host.journal) if is_restore(j[3]))
    disarm = index_of(words, "deadman.armed.undone")  # not .cancelled: nothing was confirmed
    assert index_of(words, "--comment a") < restore < disarm  # restore, then disarm
    [change] = await svc.store.changes_of_plan(out.plan_id)
    assert change.state == "restored" and out.announce_in_channel


async def test_a_restore_that_fails_is_not_restored_named_audited_and_the_guard_stays(tmp_path, host):
    host.fail.add(tuple(fix().commands[0]))
    host.fail_when = is_restore  # the saved file is corrupt by now
    svc = service(tmp_path, host)
    out = await apply(svc, fix())
    assert out.status == "not_restored" and "NOT restored" in out.message, out.message
    assert "restored" not in out.message.replace("NOT restored", "").replace("not restored", "")
    assert out.left and out.announce_in_channel
    assert not [w for w in journal_words(host)
                if "deadman.armed.cancelled" in w or "deadman.armed.undone" in w]  # still armed
    [change] = await svc.store.changes_of_plan(out.plan_id)
    assert change.state == "not_restored"
    [entry] = [e for e in await svc.audit("mx1") if e.event == "apply"]
    assert entry.result == "not_restored" and "NOT restored" in entry.detail["message"]
    assert (await svc.plan(out.plan_id)).state == "failed"


async def test_a_fix_without_undo_that_fails_says_not_restored(tmp_path, host):
    restart = fix().model_copy(update={"kind": "service", "backup": None, "rollback": [],
                                       "preconditions": [], "id": "svc"})
    host.fail.add(tuple(restart.commands[0]))
    out = await apply(service(tmp_path, host), restart)
    assert out.status == "not_restored" and "no undo" in out.message, out.message


async def test_the_started_row_is_written_before_the_first_fix_command(tmp_path, host):
    svc = service(tmp_path, host)
    seen: list[str] = []

    def look(argv):
        if any("--comment" in a for a in argv):
            import sqlite3
            rows = sqlite3.connect(svc.settings.db_path).execute("SELECT state FROM changes").fetchall()
            seen.extend(r[0] for r in rows)

    host.on_run = look
    out = await apply(svc, fix())
    assert seen == ["started"] and out.status == "applied"
    [change] = await svc.store.changes_of_plan(out.plan_id)
    assert change.state == "applied" and change.ruleset_before == RULES
    assert [e.event for e in await svc.audit("mx1")][-3:] == ["started", "approval", "plan"]


# --- the connection is cut: report exactly what the host's guard left --------------------------

class Clock:
    """A fake sleep: returns at once, and brings the host back (as the guard's restore would)."""

    def __init__(self, host: FakeHost) -> None:
        self.host, self.slept = host, []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.host.unreachable = False


@pytest.mark.parametrize("marker,status", [("armed.restored", "restored_by_host"),
                                           ("armed.restore-failed", "not_restored"),
                                           ("armed.cancelled", "not_restored")])
async def test_after_a_cut_the_applier_reports_the_marker_it_finds(tmp_path, host, marker, status):
    host.cut_at = "--comment"  # the connection drops during the fix's command
    host.answers_if = {"tail -n 20": (0, f"armed.fired\n{marker}\n--\nrestore log\n")}
    svc = service(tmp_path, host)
    clock = Clock(host)
    svc.applier.sleep = clock
    out = await apply(svc, fix())
    assert out.status == status, out.message
    assert clock.slept and clock.slept[0] > svc.settings.lockout_deadline - 1  # waited the deadline
    if status == "restored_by_host":
        assert "the host restored the backup" in out.message
    else:
        assert "NOT restored" in out.message
    assert not host.ran("netfilter-persistent")  # never persisted
    [change] = await svc.store.changes_of_plan(out.plan_id)
    assert change.state == status


async def test_a_host_still_unreachable_after_the_deadline_is_unreachable(tmp_path, host):
    host.cut_at = "--comment"
    svc = service(tmp_path, host)

    async def still_down(_seconds: float) -> None:
        return None

    svc.applier.sleep = still_down
    out = await apply(svc, fix())
    assert out.status == "unreachable" and "unknown" in out.message, out.message
    assert out.announce_in_channel


# --- the lock on the host and the guard's deadline ------------------------------------------

async def test_another_mailcheck_holding_the_host_lock_is_named(tmp_path, host):
    host.answers_if = {".lock": (3, "mailcheck pid 4242 on ops2 (database /srv/other.db): UX\n")}
    svc = service(tmp_path, host, lock_wait=0.0)
    out = await apply(svc, fix())
    assert out.status == "busy" and "mailcheck pid 4242 on ops2" in out.message, out.message
    assert "/srv/other.db" in out.message and not host.ran("--comment")
    assert (await svc.plan(out.plan_id)).state == "pending"  # may be retried


async def test_the_guard_never_fires_before_the_commands_may_have_finished(tmp_path, host):
    host.answers[("test", "-d", "/run/systemd/system")] = (1, "")
    svc = service(tmp_path, host, lockout_deadline=13, command_timeout=5.0, connect_timeout=3.0)
    assert svc.applier.deadline(fix()) == 13  # one command: 5 + 2 (timeout -k) + 3 + 2 < 13
    f = fix().model_copy(update={"commands": fix().commands * 3})
    out = await apply(svc, f)
    assert out.status == "applied", out.message
    [arm] = [j[3] for j in host.journal if j[3][:2] == ("setsid", "-f")]
    budget = 3 * (5 + 2) + 3 + 2  # three commands, a confirming connection, the margin
    assert f"sleep {budget + 1}\n" in arm[-1] and svc.applier.deadline(f) == budget + 1


def test_settings_refuse_a_deadline_one_command_could_outlast():
    from pydantic import ValidationError

    from config.settings import Settings
    with pytest.raises(ValidationError, match="must be above one fix command's budget"):
        Settings(_env_file=None, lockout_deadline=30, command_timeout=20, connect_timeout=10)
    for bad in ({"max_channels": 0}, {"connect_timeout": 0}, {"backup_dir": "backups"},
                {"plan_ttl": -5}, {"lock_wait": -1}):
        with pytest.raises(ValidationError):
            Settings(_env_file=None, **bad)


# --- shutdown: applies are shielded and drained; a restart reconciles what was cut off ----------

async def started_then(host: FakeHost, svc: FixService, f) -> tuple[asyncio.Task, str]:
    """Start an apply and return once its fix command is running on the host."""
    running = asyncio.Event()
    host.on_run = lambda argv: running.set() if any("--comment" in a for a in argv) else None
    plan_id = (await svc.register(report("mx1", f), Actor("slack", "UREQ")))[f.id]
    task = asyncio.create_task(svc.apply(plan_id, Actor("slack", "UHOST")))
    await asyncio.wait_for(running.wait(), 5)
    return task, plan_id


async def test_cancelling_the_caller_does_not_cancel_the_apply_and_drain_waits(tmp_path):
    host = FakeHost(delay=0.05, answers={("iptables-save",): (0, RULES)})
    svc = service(tmp_path, host)
    task, plan_id = await started_then(host, svc, fix())
    task.cancel()  # e.g. the Slack task on SIGTERM
    assert await svc.drain(10) == 0  # nothing had to be cancelled
    assert (await svc.plan(plan_id)).state == "applied"
    [change] = await svc.store.changes_of_plan(plan_id)
    assert change.state == "applied" and host.ran("netfilter-persistent")


async def test_drain_past_its_time_leaves_a_started_change_that_reconcile_settles(tmp_path):
    host = FakeHost(delay=0.3, answers={("iptables-save",): (0, RULES)})
    svc = service(tmp_path, host)
    task, plan_id = await started_then(host, svc, fix())
    assert await svc.drain(0) == 1  # cancelled mid-apply
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await svc.plan(plan_id)).state == "claimed"
    [change] = await svc.store.changes_of_plan(plan_id)
    assert change.state == "started"
    assert [e.result for e in await svc.audit("mx1") if e.event == "apply"] == ["interrupted"]

    host.delay, host.on_run = 0.0, None
    host.answers_if = {"tail -n 20": (0, "armed.fired\narmed.restored\n--\nrestored\n")}
    restarted = service(tmp_path, host)  # the next start, same database
    [found] = await restarted.reconcile(now=time.time() + 60)
    assert found.status == "restored_by_host" and found.channel == "" and found.change_id == change.id
    assert "the host restored the backup" in found.message
    assert (await restarted.plan(plan_id)).state == "failed"
    [change] = await restarted.store.changes_of_plan(plan_id)
    assert change.state == "restored_by_host"
    [entry] = [e for e in await restarted.audit("mx1") if e.event == "reconcile"]
    assert entry.result == "restored_by_host"
    assert await restarted.reconcile(now=time.time() + 60) == []  # once


async def test_reconcile_leaves_a_live_apply_alone_and_settles_one_that_never_started(tmp_path, host):
    svc = service(tmp_path, host)
    ids = await svc.register(report("mx1", fix("a")), Actor("slack", "UREQ"), channel="C1")
    ids |= await svc.register(report("mx2", fix("b")), Actor("slack", "UREQ"), channel="C1")
    for plan_id in ids.values():
        assert await svc.store.claim_plan(plan_id, "UHOST", time.time())
    live = f"UHOST (fix fw-a, plan {ids['fw-a']}) [mailcheck pid {os.getppid()} on {socket.gethostname()}]"
    assert await svc.store.acquire_lock("mx1", live, ttl=600) is None
    [found] = await svc.reconcile(now=time.time() + 60)
    assert found.plan_id == ids["fw-b"] and found.status == "failed" and found.channel == "C1"
    assert "nothing was changed" in found.message
    assert (await svc.plan(ids["fw-a"])).state == "claimed"  # its process is alive
    assert (await svc.plan(ids["fw-b"])).state == "failed" and host.journal == []


# --- smaller items: a restart only while still down; package installs get time and no prompts ---

def inp_for(systemd: bool):
    from tests.unit.checkdata import facts, make_input
    return make_input(host_facts=facts(systemd=systemd))


async def test_a_restart_runs_only_while_the_service_is_still_down(tmp_path, host):
    from bot.checks.services import restart_fix
    restart: Fix = restart_fix("exim4", inp_for(True))
    [pre] = restart.preconditions
    assert pre.argv == ["systemctl", "is-active", "--quiet", "exim4.service"] and pre.expect_failure
    host.answers[tuple(pre.argv)] = (0, "")  # someone started it meanwhile
    out = await apply(service(tmp_path, host), restart)
    assert out.status == "precondition_changed" and "still down" in out.message
    started = [j for j in host.journal if j[3] == ("systemctl", "restart", "exim4")]
    assert not started
    host.answers[tuple(pre.argv)] = (3, "")  # inactive
    (tmp_path / "b").mkdir()
    out = await apply(service(tmp_path / "b", host), restart)
    started = [j for j in host.journal if j[3] == ("systemctl", "restart", "exim4")]
    assert out.status == "applied" and len(started) == 1, out.message


async def test_a_package_install_gets_its_own_budget_and_no_prompts(tmp_path, host):
    from bot.checks.tools import INSTALL_TIMEOUT, install_fix
    f = install_fix("debian", "debian", ["dig", "whois"])
    out = await apply(service(tmp_path, host), f)
    assert out.status == "applied", out.message
    runs = [c for c in host.seen if c.argv[0] == "apt-get"]
    assert [c.argv[:2] for c in runs] == [("apt-get", "update"), ("apt-get", "install")]
    assert all(c.timeout == INSTALL_TIMEOUT and ("DEBIAN_FRONTEND", "noninteractive") in c.env
               for c in runs)
    assert install_fix("rhel", "rocky", ["dig"]).env == {}


# --- a configuration fix that stops before its restart -------------------------------------------

RESTART = ["systemctl", "restart", "exim4"]


def exim_fix() -> Fix:
    """As bot.checks.mta_fixes builds exim-listen-all on a systemd host."""
    conf = "/etc/exim4/update-exim4.conf.conf"
    return Fix(id="exim-listen-all", kind="config", backend="exim", summary="listen on every address",
               commands=[["sed", "-i", "-e", "s/^dc_local_interfaces=.*/dc_local_interfaces=''/", conf],
                         ["update-exim4.conf"], ["exim4", "-bV"], RESTART],
               expected_allow=[("inbound", "ipv4", 25)],
               backup=BackupSpec(paths=[conf, "/var/lib/exim4/config.autogenerated"], reload=[RESTART]))


def restore_scripts(host: FakeHost) -> list[str]:
    return [j[3][2] for j in host.journal if j[3][:2] == ("sh", "-c") and j[3][2].startswith("rc=0\n")]


async def test_a_config_test_failing_before_the_restart_puts_the_files_back_without_a_restart(tmp_path):
    """update-exim4.conf fails on the administrator's broken template: the running exim never read
    the change. Restarting it on the restored files would stop it for good under systemd (exim4's
    unit is Debian's init script run as stop, then start; the start fails on the same template)."""
    host = FakeHost(fail={("update-exim4.conf",)})
    out = await apply(service(tmp_path, host), exim_fix())
    assert out.status == "failed" and "the backup was restored" in out.message, out.message
    assert "the daemon was not restarted" in out.message, out.message
    [script] = restore_scripts(host)
    assert "update-exim4.conf.conf" in script and "config.autogenerated" in script  # the files go back
    assert not host.ran("restart")  # neither the fix's restart nor the restore's


async def test_a_failing_restart_is_restored_with_a_restart(tmp_path):
    host = FakeHost(fail={tuple(RESTART)})
    out = await apply(service(tmp_path, host), exim_fix())
    [script] = restore_scripts(host)
    assert "systemctl restart exim4" in script, script  # the daemon was stopped: start it on the old files
    assert "the daemon was not restarted" not in out.message


async def test_a_cut_right_after_arming_still_disarms_the_guard(tmp_path, host):
    """The connection drops after `touch deadman.armed` ran on the host but before its answer:
    a live guard is on the host. It must be disarmed (or said to be left), or it restores this
    old backup later, over whatever the next change did."""
    host.cut_at = "touch"
    fresh = host.connect

    def reconnect(h):
        host.unreachable = False  # the fresh connection gets through
        return fresh(h)

    host.connect = reconnect
    svc = service(tmp_path, host)
    out = await apply(svc, fix())
    assert out.status == "failed" and "nothing was applied" in out.message, out.message
    words = journal_words(host)
    armed = index_of(words, "touch")
    assert [w for w in words[armed + 1:] if ".cancelled" in w and "deadman.armed" in w], words
    assert "will restore" not in out.message  # it was disarmed
    assert not host.ran("--comment")


# --- a rollback whose connection drops: recorded, and never said to be done when unknown --------

@pytest.mark.parametrize("cut,status,said", [
    ("netfilter-persistent", "rolled_back", "persisting failed"),  # after the restore succeeded
    ("iptables-restore <", "failed", "unknown"),  # during the restore itself
])
async def test_a_rollback_cut_midway_is_audited_and_says_what_is_known(tmp_path, host, cut,
                                                                       status, said):
    svc = service(tmp_path, host)
    out = await apply(svc, fix())
    assert out.status == "applied", out.message
    host.cut_at = cut
    rb = await svc.rollback(out.change_id, Actor("slack", "UHOST"))
    assert rb.status == status and said in rb.message, (rb.status, rb.message)
    [entry] = [e for e in await svc.audit("mx1") if e.event == "rollback"]
    assert entry.result == status
    change = await svc.store.get_change(out.change_id)
    assert change.state == ("rolled_back" if status == "rolled_back" else "applied")


async def test_a_confirm_whose_answer_is_lost_is_found_confirmed_and_persisted(tmp_path, host):
    """The disarm (`mv armed armed.cancelled`) ran on the host, then the connection dropped before
    its answer: the guard can no longer fire and the change stands. Not 'NOT restored'."""
    host.cut_at = "deadman.armed.cancelled"
    host.answers_if = {"tail -n 20": (0, "armed.cancelled\n--\n")}
    svc = service(tmp_path, host)
    svc.applier.sleep = Clock(host)
    out = await apply(svc, fix())
    assert out.status == "applied", out.message
    assert host.ran("netfilter-persistent")
    [change] = await svc.store.changes_of_plan(out.plan_id)
    assert change.state == "applied"


async def test_a_rollback_whose_persist_fails_says_the_saved_rules_may_bring_the_fix_back(tmp_path, host):
    """The restore succeeded but writing the restored rules for boot failed (a full disk, a
    table gone since the fix): the saved file still holds the fix, so 'restored' alone is false."""
    svc = service(tmp_path, host)
    out = await apply(svc, fix())
    assert out.status == "applied", out.message
    host.fail_if = ["netfilter-persistent"]
    rb = await svc.rollback(out.change_id, Actor("slack", "UHOST"))
    assert host.ran("netfilter-persistent")
    assert rb.status == "rolled_back" and "persisting failed" in rb.message, rb.message

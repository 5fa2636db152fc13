"""Issue 10 on real hosts, faults caused for real: nothing is claimed that did not happen.

- the SSH connection is cut in the middle of an apply: (a) the host drops every established
  SSH packet, so mailcheck cannot reach it again and the host's guard restores by itself;
  (b) the session's sshd is killed, and mailcheck restores over a fresh connection. Either
  way the report says exactly which, and the rules are byte-identical to before;
- a restore that fails (the backup corrupted after it was taken) is NOT restored: said,
  posted in the channel (fake Slack Web API, real Bolt app), audited, and the host's guard
  leaves deadman.armed.restore-failed, never .restored;
- a host with iptables-nft xt rules (fail2ban's ipset match, a `recent` match) and a native
  nft table: the whole-ruleset backup would not load (`nft -c -f` says so), the planned fix
  saves and test-loads only its table, and that backup guards: a change that cuts SSH is
  undone by the host, and the xt rules come through untouched;
- two mailcheck processes with different databases on one host: the second is refused,
  naming the first.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.engine import Engine
from bot.fixes import FixService
from bot.fixes.verify import engine_verifier
from bot.models import Actor, BackupSpec, Fix, Report
from bot.render import report as render
from bot.slack.app import bot_of, build_app
from bot.slack.server import run_app
from bot.store import SQLiteStore
from bot.transport import SSHTransport
from config.inventory import Host, Inventory
from config.settings import Settings
from tests.lab.test_fix_apply import IPT, NFT_SETUP, RULE_CASE1, case1, mail_services, ssh_ok
from tests.slack.conftest import action_payload, buttons, form_payload, make_settings, post_signed
from tests.slack.fake_slack import FakeSlack

pytestmark = pytest.mark.lab
ROOT = Path(__file__).parents[2]


def fix_service(tmp_path: Path, lh, db: str = "mc.db", **kw) -> tuple[FixService, Host]:
    opts = dict(db_path=tmp_path / db, backup_dir=lh.workdir / "backups", connect_timeout=2.0,
                command_timeout=5.0, lockout_deadline=12, lock_wait=1.0)
    settings = Settings(_env_file=None, **{**opts, **kw})
    host = Host(name=lh.ns, address=lh.ip, identity_file=lh.client_key,
                known_hosts=lh.known_hosts, approvers=["UOPS"])
    inventory = Inventory.model_validate({"hosts": {host.name: host.model_dump()}})
    return FixService(settings=settings, inventory=inventory, store=SQLiteStore(settings.db_path),
                      connect=lambda h: SSHTransport(h, settings)), host


async def register(svc: FixService, host: Host, fix: Fix, channel: str = "CLAB") -> str:
    report = Report(host=host.name, address=host.address, fixes=[fix])
    return (await svc.register(report, Actor("slack", "UREQ"), channel))[fix.id]


async def until(predicate, within: float = 30.0, what: str = "") -> None:
    """Poll `predicate` every 20 ms until it holds (TimeoutError naming `what` after `within` s)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {within:.0f}s: {what}")
        await asyncio.sleep(0.02)


def running(lh, *argv: str) -> bool:
    """A process with exactly this command line runs in the host."""
    want = "\0".join(argv) + "\0"
    for pid in lh.pids():
        try:
            if Path(f"/proc/{pid}/cmdline").read_text() == want:
                return True
        except OSError:
            continue
    return False


def slow_fix(*middle: list[str]) -> Fix:
    """Opens the mail ports (case 1), then runs `middle` (e.g. a sleep while the test cuts SSH)."""
    return Fix(id="slow", kind="firewall", backend="iptables", backup=IPT, summary="open, slowly",
               commands=[["iptables", "-D", "INPUT", *RULE_CASE1], *middle],
               persist=[["iptables-save", "-f", "/etc/iptables/rules.v4"]])


# --- the SSH connection cut in the middle of an apply -------------------------------------

async def test_established_ssh_dropped_mid_apply_the_host_restores_itself(lab, tmp_path):
    lh = lab()
    mail_services(lh)
    case1(lh)
    before, before6 = lh.rules(), lh.rules("ip6tables-save")
    svc, host = fix_service(tmp_path, lh)
    task = asyncio.create_task(svc.apply(await register(svc, host, slow_fix(["sleep", "3"])),
                                         Actor("slack", "UOPS")))
    await until(lambda: running(lh, "sleep", "3"), what="the fix's sleep")
    # the cut: every established SSH packet to the host is dropped, the live session and any
    # new one (its handshake never completes); the guard's restore removes this rule too
    lh.sh("iptables", "-I", "INPUT", "1", "-p", "tcp", "--dport", "22", "-m", "conntrack",
          "--ctstate", "ESTABLISHED", "-j", "DROP")
    out = await asyncio.wait_for(task, 120)
    assert out.status == "restored_by_host", (out.status, out.message)
    assert "the host restored the backup (deadman.armed.restored)" in out.message
    assert "equal those before" in out.message
    assert lh.rules() == before and lh.rules("ip6tables-save") == before6  # byte-identical
    assert await ssh_ok(host, svc.settings) and lh.probe(25) == "filtered"
    [bdir] = [d for d in Path(svc.settings.backup_dir).iterdir() if d.name != ".lock"]
    assert (bdir / "deadman.armed.restored").exists() and not (bdir / "deadman.armed.restore-failed").exists()
    assert not (lh.etc / "iptables" / "rules.v4").exists()  # never persisted
    [change] = await svc.store.changes_of_plan(out.plan_id)
    assert change.state == "restored_by_host"
    [entry] = [e for e in await svc.audit(host.name) if e.event == "apply"]
    assert entry.result == "restored_by_host" and out.announce_in_channel


async def test_the_sessions_sshd_killed_mid_apply_mailcheck_restores_and_says_so(lab, tmp_path):
    lh = lab()
    mail_services(lh)
    case1(lh)
    before = lh.rules()
    svc, host = fix_service(tmp_path, lh)
    task = asyncio.create_task(svc.apply(await register(svc, host, slow_fix(["sleep", "3"])),
                                         Actor("slack", "UOPS")))
    await until(lambda: running(lh, "sleep", "3"), what="the fix's sleep")
    sessions = lh.sshd_sessions()
    assert sessions
    for pid in sessions:
        os.kill(pid, signal.SIGKILL)
    out = await asyncio.wait_for(task, 120)
    assert out.status == "failed", (out.status, out.message)
    assert "the SSH connection was lost while applying" in out.message
    assert "over a fresh connection the backup was restored and the rulesets equal those before" \
        in out.message
    assert lh.rules() == before and lh.probe(25) == "filtered"
    [bdir] = [d for d in Path(svc.settings.backup_dir).iterdir() if d.name != ".lock"]
    assert (bdir / "deadman.armed.undone").exists()  # disarmed after the restore
    assert not (bdir / "deadman.armed.fired").exists()
    [change] = await svc.store.changes_of_plan(out.plan_id)
    assert change.state == "restored"


# --- a restore that fails -------------------------------------------------------------------

async def test_a_restore_that_fails_is_not_restored_posted_and_audited(lab, tmp_path, client_key):
    lh = lab()
    mail_services(lh)
    case1(lh)
    before = lh.rules()
    backups = lh.workdir / "backups"
    corrupt = ["sh", "-c", 'for f in "$1"/*/rules.iptables; do echo "*filter garbage" >"$f"; done',
               "sh", str(backups)]
    bad = slow_fix(corrupt, ["iptables", "-D", "INPUT", "-s", "192.0.2.77", "-j", "DROP"])  # fails
    inventory = Inventory.model_validate({"hosts": {"mx-lab": {
        "address": lh.ip, "identity_file": str(client_key), "known_hosts": str(lh.known_hosts),
        "approvers": ["U0BOB"]}}})
    fake = await FakeSlack().start()
    settings = make_settings(fake).model_copy(update={
        "db_path": tmp_path / "mc.db", "backup_dir": backups, "connect_timeout": 2.0,
        "command_timeout": 3.0, "lockout_deadline": 10})
    svc = FixService(settings=settings, inventory=inventory, store=SQLiteStore(settings.db_path),
                     connect=lambda h: SSHTransport(h, settings))
    report = Report(host="mx-lab", address=lh.ip, fixes=[bad])
    plan_ids = await svc.register(report, Actor("slack", "U0ALICE"), "C0MAIL")
    ts = "1700000000.000100"
    blocks = render.report_blocks(report, plan_ids)
    fake.messages[("C0MAIL", ts)] = {"channel": "C0MAIL", "text": "report", "blocks": blocks}
    [button] = [b for b in buttons(blocks) if b.get("value") == plan_ids["slow"]]
    app = build_app(settings, inventory, Engine(settings, inventory), svc, store=svc.store)
    stop, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_app(app, settings, stop, on_ready=ready.set_result))
    try:
        url = f"http://127.0.0.1:{await ready}"
        click = action_payload(button["action_id"], plan_ids["slow"], fake.response_url(),
                               user="U0BOB", message_ts=ts)
        click["message"]["blocks"] = blocks
        assert (await post_signed(url, form_payload(click)))[0] == 200
        await bot_of(app).tasks.join()
    finally:
        stop.set()
        await task
        await fake.stop()
    [posted] = [c.args for c in fake.of("chat.postMessage", ok=True)]  # in the channel
    assert posted["channel"] == "C0MAIL" and "*not_restored*" in posted["text"], posted
    assert "NOT restored" in posted["text"] and "-A INPUT -p tcp -m multiport" in posted["text"]
    assert "was restored" not in posted["text"] and "restored the backup" not in posted["text"]
    assert lh.rules() != before  # indeed not restored: the DROP rule is still gone
    [entry] = [e for e in await svc.audit("mx-lab") if e.event == "apply"]
    assert entry.result == "not_restored" and "-A INPUT" in entry.detail["left_on_host"]
    [change] = await svc.store.changes_of_plan(plan_ids["slow"])
    assert change.state == "not_restored"
    # the guard was left armed; at its deadline it tries too, fails, and says so
    [bdir] = [d for d in backups.iterdir() if d.name != ".lock"]
    await until(lambda: (bdir / "deadman.armed.restore-failed").exists(), 60, "the guard's marker")
    assert not (bdir / "deadman.armed.restored").exists()
    assert "restore FAILED" in (bdir / "deadman.log").read_text()


# --- xt rules next to a native nft table ------------------------------------------------------



def xt_and_nft(lh) -> None:
    """fail2ban's way (an ipset match) and a `recent` match in iptables-nft, and a native
    nft table that drops the mail ports by policy."""
    lh.sh("ipset", "create", "f2b-sshd", "hash:ip")
    lh.sh("ipset", "add", "f2b-sshd", "192.0.2.66")
    lh.sh("iptables", "-A", "INPUT", "-p", "tcp", "-m", "multiport", "--dports", "22", "-m", "set",
          "--match-set", "f2b-sshd", "src", "-j", "REJECT", "--reject-with", "icmp-port-unreachable")
    lh.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "2626", "-m", "recent", "--name", "knock",
          "--rcheck", "--seconds", "60", "-m", "comment", "--comment", "port knock", "-j", "DROP")
    conf = lh.workdir / "mailfw.nft"
    conf.write_text(NFT_SETUP)
    lh.sh("nft", "-f", str(conf))


async def test_xt_rules_and_a_native_table_the_fix_is_guarded_by_a_backup_that_loads(lab, tmp_path):
    lh = lab()
    mail_services(lh)
    xt_and_nft(lh)
    whole = lh.workdir / "whole.nft"
    whole.write_text("flush ruleset\n" + lh.sh("nft", "list", "ruleset").stdout)
    refused = lh.sh("nft", "-c", "-f", str(whole), check=False)
    assert refused.returncode != 0 and "xt" in refused.stderr  # the old backup would not load
    ipt_before, nft_before = lh.rules(), lh.sh("nft", "list", "table", "inet", "mailfw").stdout
    assert lh.probe(25) == "filtered"

    svc, host = fix_service(tmp_path, lh, command_timeout=5.0, lockout_deadline=15)
    engine = Engine(svc.settings, svc.inventory)
    svc.verifier = engine_verifier(engine)
    report = await engine.check(host)
    fixes = [f for f in report.fixes if f.backend == "nft"]
    assert len(fixes) == 1, [(s.name, s.status, s.summary, s.error) for s in report.steps]
    [fix] = fixes
    assert fix.backup.nft_tables == ["inet mailfw"] and fix.backup.guard and fix.backup.undo
    out = await svc.apply(await register(svc, host, fix), Actor("slack", "UOPS"))
    assert out.status == "applied" and out.verify.achieved, (out.message, out.log)
    tested = [e for e in out.log if e.command.startswith("sh -c") and "nft -c -f" in e.command]
    assert tested and tested[0].exit_status == 0  # the table's backup loads
    assert lh.probe(25) == "open" and lh.rules() == ipt_before  # xt rules untouched
    rb = await svc.rollback(out.change_id, Actor("slack", "UOPS"))
    assert rb.status == "rolled_back" and rb.exact, rb.message
    assert lh.sh("nft", "list", "table", "inet", "mailfw").stdout == nft_before
    assert lh.rules() == ipt_before and lh.probe(25) == "filtered"

    # and that backup guards: a change to the table that cuts SSH is undone by the host
    cut = Fix(id="nft-cut", kind="firewall", backend="nft", summary="cuts SSH",
              backup=BackupSpec(nft_tables=["inet mailfw"], guard=True),
              commands=[["nft", "insert", "rule", "inet", "mailfw", "input", "tcp", "dport", "22",
                         "drop"]])
    out = await svc.apply(await register(svc, host, cut), Actor("slack", "UOPS"))
    assert out.status == "restored_by_host", (out.status, out.message)
    assert lh.sh("nft", "list", "table", "inet", "mailfw").stdout == nft_before
    assert lh.rules() == ipt_before and await ssh_ok(host, svc.settings)
    assert "f2b-sshd" in lh.rules() and "port knock" in lh.rules()


# --- two mailcheck processes, two databases, one host --------------------------------------------

async def test_a_second_mailcheck_with_another_database_is_refused_naming_the_first(lab, tmp_path):
    lh = lab()
    mail_services(lh)
    lh.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "25", "-j", "DROP")
    first, host = fix_service(tmp_path, lh, db="first.db", command_timeout=15.0, lockout_deadline=40)
    slow = Fix(id="first", kind="firewall", backend="iptables", backup=IPT, summary="first, slowly",
               commands=[["sleep", "12"]])
    task = asyncio.create_task(first.apply(await register(first, host, slow), Actor("slack", "UOPS")))
    lock = Path(first.settings.backup_dir) / ".lock"
    await until(lock.exists, what="the first mailcheck's lock on the host")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MAILCHECK_") or k == "MAILCHECK_RESOLVERS"}
    env.update(MAILCHECK_DB_PATH=str(tmp_path / "second.db"), MAILCHECK_PROBE_TIMEOUT="1.5",
               MAILCHECK_CONNECT_TIMEOUT="3", MAILCHECK_BACKUP_DIR=str(first.settings.backup_dir),
               MAILCHECK_LOCK_WAIT="1")
    second = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot.cli", "fix", f"root@{lh.ip}", "--all", "--yes",
                         "-i", str(lh.client_key), "--known-hosts", str(lh.known_hosts)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert second.returncode == 1, second.stdout + second.stderr
    assert ": busy: another mailcheck is changing" in second.stdout, second.stdout
    assert f"mailcheck pid {os.getpid()}" in second.stdout and "first.db" in second.stdout
    assert lh.probe(25) == "filtered"  # the second changed nothing
    assert (await task).status == "applied"
    assert not lock.exists()  # released
    refusals = [e for e in await SQLiteStore(tmp_path / "second.db").audit() if e.event == "refusal"]
    assert refusals and "first.db" in refusals[0].output

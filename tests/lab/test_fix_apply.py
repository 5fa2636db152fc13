"""Fixes applied through FixService (the path the Slack button and `mailcheck fix` use)
on real lab hosts: real SSH, real iptables / ufw, the kernel as the judge.

The Fix objects are built by hand for the guide's situations (the planner is
tested in test_firewall_fix.py); the verifier is built on real probes from
outside (labhost.probe) and real connections out (labhost.connect_out).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from bot.errors import TransportError
from bot.firewall.parse.iptables import normalize_iptables_save
from bot.fixes import FixService
from bot.fixes.apply import fingerprint
from bot.fixes.backup import normalize_ruleset
from bot.models import Actor, BackupSpec, Command, Fix, PortStatus, Precondition, Report
from bot.store import SQLiteStore
from bot.transport import SSHTransport
from config.inventory import Host, Inventory
from config.settings import Settings

pytestmark = pytest.mark.lab

MAIL_IN = (25, 465, 587, 143, 993)
MAIL_OUT = (25, 465, 587)
IPT = BackupSpec(rulesets=["iptables"], guard=True)  # what the iptables planner declares
RULE_CASE1 = ["-p", "tcp", "-m", "multiport", "--dports", "25,143,993,587,465", "-j", "DROP"]


# --- wiring: one FixService on one lab host ---------------------------------------------

def host_of(lh) -> Host:
    return Host(name=lh.ns, address=lh.ip, identity_file=lh.client_key,
                known_hosts=lh.known_hosts, approvers=["UOPS"])


def probe_verifier(lh):
    """Real probes: from outside for inbound, from inside to the outside for outbound."""

    async def verify(host: Host, fix: Fix) -> list[PortStatus]:
        out = []
        for direction, family, port in fix.expected_allow:
            fn = lh.probe if direction == "inbound" else lh.connect_out
            seen = await asyncio.to_thread(fn, port, family == "ipv6")
            out.append(PortStatus(port=port, direction=direction, family=family,
                                  outside=seen if seen in ("open", "refused", "filtered") else "error"))
        return out

    return verify


def service(tmp_path: Path, lh, **kw) -> tuple[FixService, Host]:
    opts = dict(db_path=tmp_path / "mc.db", backup_dir=lh.workdir / "backups",
                connect_timeout=2.0, command_timeout=10.0, lockout_deadline=20)
    settings = Settings(_env_file=None, **{**opts, **kw})
    host = host_of(lh)
    svc = FixService(settings=settings, inventory=Inventory.model_validate({"hosts": {host.name: host.model_dump()}}),
                     store=SQLiteStore(settings.db_path),
                     connect=lambda h: SSHTransport(h, settings), verifier=probe_verifier(lh))
    return svc, host


async def register(svc: FixService, host: Host, fix: Fix) -> str:
    report = Report(host=host.name, address=host.address, fixes=[fix])
    return (await svc.register(report, requested_by=Actor("slack", "UREQ"), channel="CLAB"))[fix.id]


def table_precondition(lh, save: str = "iptables-save") -> Precondition:
    text = lh.sh(save, "-t", "filter").stdout
    return Precondition(argv=[save, "-t", "filter"], normalize="iptables-save",
                        expect_sha256=fingerprint(text, "iptables-save"),
                        description=f"{save} -t filter is as it was when planned")


def rules(lh) -> list[str]:
    return normalize_iptables_save(lh.iptables_save()).splitlines()


def diff(before: list[str], after: list[str]) -> tuple[Counter, Counter]:
    return Counter(before) - Counter(after), Counter(after) - Counter(before)


async def ssh_ok(host: Host, settings: Settings) -> bool:
    t = SSHTransport(host, settings)
    try:
        return (await t.run([Command(("true",))]))[0].ok
    except TransportError:
        return False
    finally:
        await t.close()


def mail_services(lh) -> None:
    lh.start_exim("public")
    lh.start_dovecot(tls=True)


# --- the guide, case 1: policy ACCEPT with DROP rules ---------------------------------------

def case1(lh) -> None:
    lh.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP")
    lh.sh("iptables", "-A", "INPUT", *RULE_CASE1)
    lh.sh("iptables", "-A", "INPUT", "-s", "203.0.113.0/24", "-j", "DROP")
    lh.sh("iptables", "-A", "OUTPUT", "-p", "tcp", "-m", "multiport", "--dports",
          "25,143,993,587,465", "-j", "DROP")


def case1_fix(lh) -> Fix:
    out_rule = ["-p", "tcp", "-m", "multiport", "--dports", "25,143,993,587,465", "-j", "DROP"]
    return Fix(
        id="iptables-case1", kind="firewall", backend="iptables", backup=IPT,
        summary="delete the rules that drop the mail ports (INPUT and OUTPUT)",
        commands=[["iptables", "-D", "INPUT", *RULE_CASE1], ["iptables", "-D", "OUTPUT", *out_rule]],
        persist=[["iptables-save", "-f", "/etc/iptables/rules.v4"]],
        preconditions=[
            Precondition(argv=["iptables", "-C", "INPUT", *RULE_CASE1],
                         description="the INPUT rule to delete is still there"),
            table_precondition(lh),
        ],
        expected_allow=[("inbound", "ipv4", p) for p in MAIL_IN]
        + [("outbound", "ipv4", p) for p in MAIL_OUT],
    )


async def test_case1_apply_opens_ports_keeps_ssh_and_other_rules_then_rolls_back(lab, tmp_path):
    lh = lab()
    mail_services(lh)
    case1(lh)
    before = rules(lh)
    assert {lh.probe(p) for p in MAIL_IN} == {"filtered"}
    svc, host = service(tmp_path, lh)
    plan_id = await register(svc, host, case1_fix(lh))

    with lh.outside_listener(MAIL_OUT):
        out = await svc.apply(plan_id, Actor("slack", "UOPS"))
        assert out.status == "applied", (out.message, out.log)
        assert out.verify.achieved and not out.verify.missing
        assert {lh.probe(p) for p in MAIL_IN} == {"open"}  # the kernel agrees
        assert {lh.connect_out(p) for p in MAIL_OUT} == {"open"}
    assert lh.probe(22) == "open" and await ssh_ok(host, svc.settings)
    gone, new = diff(before, rules(lh))
    assert set(gone) == {f"-A INPUT {' '.join(RULE_CASE1)}",
                         "-A OUTPUT -p tcp -m multiport --dports 25,143,993,587,465 -j DROP"}
    assert not new  # nothing else touched: the 2222 and 203.0.113.0/24 drops are still there
    saved = (lh.etc / "iptables" / "rules.v4").read_text()
    assert normalize_iptables_save(saved).splitlines() == rules(lh)  # persisted
    backup = Path(svc.settings.backup_dir)
    [bdir] = list(backup.iterdir())
    assert (bdir / "rules.iptables").exists() and (bdir / "deadman.armed.cancelled").exists()
    assert out.before.ruleset and out.after.ruleset and out.before.ports == []

    rb = await svc.rollback(out.change_id, Actor("slack", "UOPS"))
    assert rb.status == "rolled_back" and rb.exact, rb.message
    assert rules(lh) == before  # exactly the previous ruleset
    assert normalize_iptables_save((lh.etc / "iptables" / "rules.v4").read_text()).splitlines() \
        == before  # and the saved rules follow
    assert {lh.probe(p) for p in MAIL_IN} == {"filtered"}
    events = [e.event for e in await svc.audit(host.name)]
    assert events[:5] == ["rollback", "verify", "apply", "started", "approval"] and "plan" in events


# --- the guide, case 2: policy DROP, only SSH allowed -------------------------------------------

def case2(lh) -> None:
    lh.sh("iptables", "-P", "INPUT", "DROP")
    lh.sh("iptables", "-A", "INPUT", "-m", "state", "--state", "RELATED,ESTABLISHED", "-j", "ACCEPT")
    lh.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
    lh.sh("iptables", "-A", "INPUT", "-p", "icmp", "-j", "ACCEPT")
    lh.sh("iptables", "-P", "OUTPUT", "DROP")
    lh.sh("iptables", "-A", "OUTPUT", "-m", "state", "--state", "RELATED,ESTABLISHED", "-j", "ACCEPT")


async def test_case2_policy_drop_insert_accept(lab, tmp_path):
    lh = lab()
    mail_services(lh)
    case2(lh)
    before = rules(lh)
    with lh.outside_listener(MAIL_OUT):
        assert lh.connect_out(25) == "filtered"
    assert lh.probe(25) == "filtered"
    acc_in = ["-p", "tcp", "-m", "multiport", "--dports", "25,465,587,143,993", "-j", "ACCEPT"]
    acc_out = ["-p", "tcp", "-m", "multiport", "--dports", "25,465,587", "-j", "ACCEPT"]
    fix = Fix(id="iptables-case2", kind="firewall", backend="iptables", backup=IPT,
              summary="accept the mail ports before the DROP policy",
              commands=[["iptables", "-I", "INPUT", "3", *acc_in],
                        ["iptables", "-I", "OUTPUT", "2", *acc_out]],
              persist=[["iptables-save", "-f", "/etc/iptables/rules.v4"]],
              preconditions=[table_precondition(lh)],
              expected_allow=[("inbound", "ipv4", p) for p in MAIL_IN]
              + [("outbound", "ipv4", p) for p in MAIL_OUT])
    svc, host = service(tmp_path, lh)
    plan_id = await register(svc, host, fix)
    with lh.outside_listener(MAIL_OUT):
        out = await svc.apply(plan_id, Actor("slack", "UOPS"))
        assert out.status == "applied" and out.verify.achieved, (out.message, out.log)
        assert {lh.connect_out(p) for p in MAIL_OUT} == {"open"}
    assert {lh.probe(p) for p in MAIL_IN} == {"open"}
    assert lh.probe(22) == "open" and await ssh_ok(host, svc.settings)
    after = rules(lh)
    gone, new = diff(before, after)
    assert not gone and set(new) == {f"-A INPUT {' '.join(acc_in)}", f"-A OUTPUT {' '.join(acc_out)}"}
    assert after.index(f"-A INPUT {' '.join(acc_in)}") == after.index(
        "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT") + 1  # inserted at position 3
    lh.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "8443", "-j", "ACCEPT")  # by hand
    meddled = rules(lh)
    rb = await svc.rollback(out.change_id, Actor("slack", "UOPS"))
    assert rb.status == "drift" and rules(lh) == meddled  # later changes are not clobbered
    rb = await svc.rollback(out.change_id, Actor("slack", "UOPS"), force=True)
    assert rb.status == "rolled_back" and rules(lh) == before
    assert lh.probe(25) == "filtered" and lh.probe(22) == "open"


# --- ufw: deny incoming, only 22 allowed --------------------------------------------------

async def test_ufw_allow_then_exact_rollback_of_rules_and_files(lab, tmp_path):
    lh = lab()
    mail_services(lh)
    lh.sh("sh", "-c", "ufw --force enable; ufw default deny incoming; ufw allow 22/tcp")
    before, before6 = rules(lh), lh.iptables_save(six=True)
    status_before = lh.sh("ufw", "status", "verbose").stdout
    user_rules = (lh.etc / "ufw" / "user.rules").read_text()
    assert lh.probe(25) == "filtered"
    fix = Fix(id="ufw-mail", kind="firewall", backend="ufw",
              backup=BackupSpec(rulesets=["iptables", "ip6tables"], paths=["/etc/ufw", "/etc/default/ufw"],
                                guard=True), summary="ufw allow the mail ports",
              commands=[["ufw", "allow", f"{p}/tcp"] for p in MAIL_IN],
              preconditions=[Precondition(argv=["ufw", "status", "verbose"], normalize="raw",
                                          expect_sha256=fingerprint(status_before),
                                          description="ufw status is as it was")],
              expected_allow=[("inbound", "ipv4", p) for p in MAIL_IN])
    svc, host = service(tmp_path, lh)
    out = await svc.apply(await register(svc, host, fix), Actor("slack", "UOPS"))
    assert out.status == "applied" and out.verify.achieved, (out.message, out.log)
    assert {lh.probe(p) for p in MAIL_IN} == {"open"} and lh.probe(22) == "open"
    assert all(f"{p}/tcp" in lh.sh("ufw", "status").stdout for p in MAIL_IN)
    gone, new = diff(before, rules(lh))
    assert not gone and all("ufw-user-input" in line for line in new) and len(new) == 5

    rb = await svc.rollback(out.change_id, Actor("slack", "UOPS"))
    assert rb.status == "rolled_back" and rb.exact, rb.message
    assert rules(lh) == before
    assert normalize_iptables_save(lh.iptables_save(six=True)) == normalize_iptables_save(before6)
    assert lh.sh("ufw", "status", "verbose").stdout == status_before
    assert (lh.etc / "ufw" / "user.rules").read_text() == user_rules
    assert lh.probe(25) == "filtered" and lh.probe(22) == "open"


# --- refusals and the lock-out guard -------------------------------------------------------

async def test_precondition_changed_between_plan_and_approval_is_refused(lab, tmp_path):
    lh = lab()
    mail_services(lh)
    case1(lh)
    svc, host = service(tmp_path, lh)
    plan_id = await register(svc, host, case1_fix(lh))
    lh.sh("iptables", "-I", "INPUT", "1", "-p", "tcp", "--dport", "8080", "-j", "ACCEPT")
    meddled = rules(lh)
    out = await svc.apply(plan_id, Actor("slack", "UOPS"))
    assert out.status == "precondition_changed" and out.offer_recheck, out.message
    assert "filter is as it was" in out.message
    assert rules(lh) == meddled and lh.probe(25) == "filtered"
    assert list(Path(svc.settings.backup_dir).iterdir()) == []  # refused before even the backup,
    # and the lock on the host (backup_dir/.lock) was released
    assert (await svc.apply(plan_id, Actor("slack", "UOPS"))).status == "duplicate"  # the plan is spent: re-check


@pytest.mark.parametrize("cut", ["new", "all"])
async def test_a_fix_that_cuts_ssh_is_rolled_back_by_the_host(lab, tmp_path, cut):
    """`new`: new SSH connections dropped; `all`: the live session is cut too."""
    lh = lab()
    mail_services(lh)
    case1(lh)
    before = rules(lh)
    state = ["-m", "conntrack", "--ctstate", "NEW"] if cut == "new" else []
    bad = Fix(id="cuts-ssh", kind="firewall", backend="iptables", backup=IPT, summary="a bad plan",
              commands=[["iptables", "-D", "INPUT", *RULE_CASE1],
                        ["iptables", "-I", "INPUT", "1", "-p", "tcp", "--dport", "22", *state,
                         "-j", "DROP"]],
              persist=[["iptables-save", "-f", "/etc/iptables/rules.v4"]],
              preconditions=[table_precondition(lh)],
              expected_allow=[("inbound", "ipv4", 25)])
    svc, host = service(tmp_path, lh, lockout_deadline=14, command_timeout=2.0)
    out = await svc.apply(await register(svc, host, bad), Actor("slack", "UOPS"))
    assert out.status == "restored_by_host", (out.status, out.message, out.log)
    assert rules(lh) == before  # the host put the old rules back by itself
    assert lh.probe(22) == "open" and await ssh_ok(host, svc.settings)
    assert not (lh.etc / "iptables" / "rules.v4").exists()  # the bad rules were never saved
    [bdir] = list(Path(svc.settings.backup_dir).iterdir())
    assert (bdir / "deadman.armed.fired").exists() and (bdir / "deadman.armed.restored").exists()
    assert not (bdir / "deadman.armed.restore-failed").exists()
    assert "restored" in (bdir / "deadman.log").read_text()
    assert "the host restored the backup" in out.message and "equal those before" in out.message
    [apply] = [e for e in await svc.audit(host.name) if e.event == "apply"]
    assert apply.result == "restored_by_host"


# --- verification by the real check engine (outside probe included) -----------------------

async def test_engine_verifies_and_a_fix_without_effect_offers_rollback(lab, tmp_path):
    from bot.engine import Engine
    from bot.fixes.verify import engine_verifier

    lh = lab()
    mail_services(lh)
    case1(lh)
    before = rules(lh)
    svc, host = service(tmp_path, lh)
    svc.verifier = engine_verifier(Engine(svc.settings, svc.inventory))
    useless = Fix(id="useless", kind="firewall", backend="iptables", backup=IPT, summary="deletes the wrong rule",
                  commands=[["iptables", "-D", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP"]],
                  preconditions=[table_precondition(lh)],
                  expected_allow=[("inbound", "ipv4", 25)])
    out = await svc.apply(await register(svc, host, useless), Actor("slack", "UOPS"))
    assert out.status == "not_achieved" and out.offer_rollback, out.message
    assert "inbound ipv4 25: filtered" in out.message
    rb = await svc.rollback(out.change_id, Actor("slack", "UOPS"))
    assert rb.exact and rules(lh) == before

    good = case1_fix(lh)
    good.expected_allow = [("inbound", "ipv4", p) for p in MAIL_IN]  # the engine probes inbound
    out = await svc.apply(await register(svc, host, good), Actor("slack", "UOPS"))
    assert out.status == "applied" and out.verify.achieved, (out.message, out.verify)
    after = {(p.direction, p.family, p.port): p for p in out.after.ports}
    assert all(after[("inbound", "ipv4", p)].outside == "open" for p in MAIL_IN)


# --- native nftables ----------------------------------------------------------------------

NFT_SETUP = """table inet mailfw {
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iif lo accept
    meta l4proto ipv6-icmp accept
    tcp dport 22 accept
    tcp dport 8080 counter accept comment "unrelated"
  }
}
"""


async def test_nft_insert_then_exact_restore(lab, tmp_path):
    lh = lab()
    mail_services(lh)
    conf = lh.workdir / "mailfw.nft"
    conf.write_text(NFT_SETUP)
    lh.sh("nft", "-f", str(conf))
    nft_before = lh.sh("nft", "list", "ruleset").stdout
    assert lh.probe(25) == "filtered"
    fix = Fix(id="nft-mail", kind="firewall", backend="nft",
              backup=BackupSpec(rulesets=["nft"], guard=True), summary="nft: accept the mail ports",
              commands=[["nft", "insert", "rule", "inet", "mailfw", "input", "tcp", "dport",
                         "{ 25, 465, 587, 143, 993 }", "accept"]],
              preconditions=[Precondition(argv=["nft", "list", "table", "inet", "mailfw"],
                                          normalize="nft", description="table inet mailfw as planned",
                                          expect_sha256=fingerprint(lh.sh(
                                              "nft", "list", "table", "inet", "mailfw").stdout, "nft"))],
              expected_allow=[("inbound", "ipv4", p) for p in MAIL_IN]
              + [("inbound", "ipv6", p) for p in MAIL_IN])
    svc, host = service(tmp_path, lh)
    out = await svc.apply(await register(svc, host, fix), Actor("slack", "UOPS"))
    assert out.status == "applied" and out.verify.achieved, (out.message, out.log)
    assert lh.probe(22) == "open" and await ssh_ok(host, svc.settings)
    rb = await svc.rollback(out.change_id, Actor("slack", "UOPS"))
    assert rb.status == "rolled_back" and rb.exact, rb.message
    assert normalize_ruleset(lh.sh("nft", "list", "ruleset").stdout) == normalize_ruleset(nft_before)
    assert lh.probe(25) == "filtered" and lh.probe(25, six=True) == "filtered"

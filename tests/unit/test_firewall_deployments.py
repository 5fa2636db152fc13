"""Issue 11 on captured lab output: published container ports, CSF and fail2ban, through analyze().

The captured output is the real thing (tests/data/firewall/: real dockerd, podman/netavark,
Docker 28 and netavark layouts; real CSF v15.03's csf -v and csf.conf; real fail2ban 1.0.2);
the lab tests (tests/lab/test_deployments_lab.py) apply the fixes on live hosts.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from bot.firewall.api import AnalysisContext, analyze
from bot.firewall.parse import parse_all
from bot.firewall.parse.csf import CSF_CONF_PATH, CsfStatus, parse_options
from bot.firewall.parse.iptables import parse_save
from bot.firewall.plan.csf import CsfChange, apply_change
from bot.models import INBOUND_PORTS, OUTBOUND_PORTS, PortKey
from tests.firewall_corpus import load_captured, load_cases

CASES = {c.name: c for c in load_cases() if c.expected_file.exists()}
CSF_DATA = Path(__file__).parent.parent / "data" / "csf"
MAIL = (25, 465, 587, 143, 993)


def analyzed(name: str):
    case = CASES[name]
    a = case.expected()["addresses"]
    context = AnalysisContext(INBOUND_PORTS, OUTBOUND_PORTS, a["prober"], a["prober6"], a["host"], a["host6"],
                              inbound_iface="eth0", families=("ipv4", "ipv6"), host_addrs=(a["host"], a["host6"]))
    return analyze(load_captured(case.captured_dir), context=context)


def codes(analysis) -> list[str]:
    return [f.code for f in analysis.findings]


# --- published ports: the forward path -------------------------------------------------------

CONTAINER = sorted(n for n, c in CASES.items() if c.container)


@pytest.mark.parametrize("name", CONTAINER)
def test_no_fix_touches_input_or_the_dnat_for_a_published_port(name):
    analysis = analyzed(name)
    published = {k for k, v in analysis.decisions.items() if v.forwarded}
    assert published, "the case publishes ports"
    for fix in analysis.fixes:
        assert not any("nat" in argv[:4] or "-t nat" in " ".join(argv) for argv in fix.commands), fix.commands
        if published & set(fix.expected_allow):
            assert not any(w in ("INPUT", "input") for argv in fix.commands for w in argv), fix.commands


def test_docker_user_drop_is_named_and_deleted_and_not_persisted_with_dockers_rules():
    analysis = analyzed("docker_user_drop_25")
    v = analysis.decisions[PortKey("inbound", "ipv4", 25)]
    assert v.verdict == "block" and v.forwarded and v.dnat_to.endswith(":25")
    assert v.blocked_by == ("iptables -t filter chain DOCKER-USER rule 1: "
                            "-A DOCKER-USER -i eth0 -p tcp -m tcp --dport 25 -j DROP")
    [fix] = analysis.fixes
    assert fix.commands == [["iptables", "-t", "filter", "-D", "DOCKER-USER", "-i", "eth0", "-p", "tcp", "-m", "tcp",
                             "--dport", "25", "-j", "DROP"]]
    assert fix.rollback == [["iptables", "-t", "filter", "-I", "DOCKER-USER", "1", "-i", "eth0", "-p", "tcp", "-m",
                             "tcp", "--dport", "25", "-j", "DROP"]]
    assert fix.persist == [] and fix.expected_allow == [PortKey("inbound", "ipv4", 25)]
    blocked = next(f for f in analysis.findings if f.code == "firewall.inbound_blocked")
    assert "DNAT to" in blocked.evidence and "FORWARD decides" in blocked.evidence and fix.id in blocked.fixes


def test_a_conntrack_drop_gets_an_original_port_accept_before_it():
    analysis = analyzed("docker_user_ctorigdstport_drop_587")
    [fix] = analysis.fixes
    assert fix.commands == [["iptables", "-t", "filter", "-I", "DOCKER-USER", "1", "-p", "tcp", "-m", "conntrack",
                             "--ctstatus", "DNAT", "--ctorigdstport", "587", "--ctdir", "ORIGINAL", "-m", "comment",
                             "--comment", "mailcheck", "-j", "ACCEPT"]]
    assert fix.expected_allow == [PortKey("inbound", "ipv4", 587)]


def test_docker_nftables_backend_the_users_forward_chain_is_edited_never_dockers_table():
    analysis = analyzed("docker28_nftables_user_forward_drop_25")
    assert analysis.backend == "nftables"
    [fix] = analysis.fixes
    assert fix.commands[0][:8] == ["nft", "insert", "rule", "inet", "user-filter", "forward", "position", "2"]
    assert fix.commands[0][8:17] == ["meta", "l4proto", "tcp", "ct", "status", "dnat", "ct", "original", "proto-dst"]
    assert "docker-bridges" not in " ".join(fix.persist[0]) and "user-filter" in " ".join(fix.persist[0])


@pytest.mark.parametrize("name", ["docker_guide_case1_input_drop", "docker_ufw_deny_published"])
def test_input_rules_that_do_not_apply_to_a_published_port_are_reported(name):
    analysis = analyzed(name)
    bypassed = [f for f in analysis.findings if f.code == "firewall.input_bypassed"]
    assert bypassed and all("does not apply" in f.summary for f in bypassed)
    for fix in analysis.fixes:  # the INPUT fix opens the ports that are not published, only
        assert not {k for k in fix.expected_allow if analysis.decisions[k].forwarded}


# --- CSF ---------------------------------------------------------------------------------------

def test_csf_fix_edits_csf_conf_and_restarts_csf_never_a_raw_rule():
    analysis = analyzed("csf_tcp_in_no_mail")
    assert analysis.backend == "csf"
    [fix] = analysis.fixes
    assert fix.backend == "csf" and [a[0] for a in fix.commands] == ["sed", "sed", "csf"]
    assert fix.commands[-1] == ["csf", "-r"]
    # the rollback and the guard: csf.conf put back from the backup, then csf -r
    assert fix.backup.paths == [CSF_CONF_PATH] and fix.backup.reload == [["csf", "-r"]] and fix.backup.guard
    assert fix.backup.rulesets == [] and fix.backup.compare == ["iptables", "ip6tables"]
    assert sorted(fix.expected_allow) == sorted([PortKey("inbound", "ipv4", p) for p in MAIL]
                                                + [PortKey("outbound", "ipv4", 465)])
    conf = (CASES["csf_tcp_in_no_mail"].captured_dir / "cat_etc_csf_csf.conf.txt").read_text()
    assert fix.preconditions[0].expect_sha256 == hashlib.sha256(conf.encode()).hexdigest()
    blocked = next(f for f in analysis.findings if f.code == "firewall.inbound_blocked")
    assert 'CSF: not in TCP_IN (TCP_IN = "20,21,22,53,80,110,443"' in blocked.summary
    assert {"firewall.manager", "firewall.ipv6_unfiltered"} <= set(codes(analysis))
    manager = next(f for f in analysis.findings if f.code == "firewall.manager")
    assert manager.severity == "warning" and "TESTING mode" in manager.summary  # cron's csf -f every 5 minutes


def test_csf_with_ipv6_edits_tcp6_in_and_says_nothing_of_unfiltered_ipv6():
    analysis = analyzed("csf_ipv6_tcp6_in_no_mail")
    [fix] = analysis.fixes
    edited = [a[4].split("(")[1].split("[")[0] for a in fix.commands if a[0] == "sed"]
    assert edited == ["TCP_IN", "TCP6_IN", "TCP_OUT", "TCP6_OUT"]
    assert "firewall.ipv6_unfiltered" not in codes(analysis)


def test_csf_deny_of_the_prober_is_a_ban_reported_not_undone():
    analysis = analyzed("csf_deny_prober")
    banned = next(f for f in analysis.findings if f.code == "firewall.prober_banned")
    assert "CSF denies the address in DENYIN" in banned.summary and not banned.fixes
    [fix] = analysis.fixes  # outbound 465, TCP_OUT (to any mail server, not to the prober)
    assert fix.expected_allow == [PortKey("outbound", "ipv4", 465)]


def test_csf_model_change_is_what_csf_writes():
    """TCP_IN plus the mail ports, on the rules CSF wrote without them, gives the accepts CSF wrote
    with them (the generic csf.conf's TCP_IN has them: tests/data/csf/default_testing)."""
    rs = parse_save((CSF_DATA / "tcp_in_no_mail" / "rules.v4").read_text())
    apply_change(rs, CsfChange("TCP_IN", MAIL, ""))
    want = parse_save((CSF_DATA / "default_testing" / "rules.v4").read_text())

    def accepts(ruleset):
        return {r.text.split(" ", 2)[2] for r in ruleset.table("ip", "filter").chains["INPUT"].rules
                if r.verdict.kind == "accept" and any(f"--dport {p} " in r.text for p in MAIL)}

    assert accepts(rs) == accepts(want) and len(accepts(rs)) == len(MAIL)


@pytest.mark.skipif(shutil.which("sed") is None, reason="needs sed")
def test_csf_edit_on_the_real_csf_conf(tmp_path):
    conf = tmp_path / "csf.conf"
    original = (CSF_DATA / "csf.conf").read_bytes()
    conf.write_bytes(original.replace(b'TCP_IN = "20,21,22,25,53,853,80,110,143,443,465,587,993,995"',
                                      b'TCP_IN = "20,21,22"').replace(b'TCP_OUT = "', b'TCP_OUT = "'))
    before = conf.read_bytes()
    for change in (CsfChange("TCP_IN", (25, 587), ""), CsfChange("TCP6_OUT", (465,), "")):
        argv = [str(conf) if a == CSF_CONF_PATH else a for a in change.sed()]
        subprocess.run(argv, check=True)
    after = conf.read_bytes().decode()
    assert 'TCP_IN = "20,21,22,25,587"' in after and 'TCP6_OUT = "20,21,22,25,53,853,80,110,113,443,587,993,995,465"' in after
    changed = [(a, b) for a, b in zip(before.decode().splitlines(), after.splitlines(), strict=True) if a != b]
    assert len(changed) == 2  # nothing else moved
    empty = tmp_path / "empty.conf"
    empty.write_text('TCP_IN = ""\n')
    subprocess.run([str(empty) if a == CSF_CONF_PATH else a for a in CsfChange("TCP_IN", (25,), "").sed()], check=True)
    assert empty.read_text() == 'TCP_IN = "25"\n'


@pytest.mark.skipif(shutil.which("sed") is None, reason="needs sed")
def test_csf_edit_of_a_list_with_a_trailing_comma(tmp_path):
    """CSF ignores a trailing comma (Perl's split) and so does status.ports(): the planned
    edit must change the file, not match nothing before `csf -r`."""
    conf = tmp_path / "csf.conf"
    conf.write_text('TCP_IN = "20,21,22,"\nTCP6_IN = ","\n')
    for change in (CsfChange("TCP_IN", (25,), ""), CsfChange("TCP6_IN", (25,), "")):
        subprocess.run([str(conf) if a == CSF_CONF_PATH else a for a in change.sed()], check=True)
    assert conf.read_text() == 'TCP_IN = "20,21,22,25"\nTCP6_IN = "25"\n'
    assert CsfStatus(version="csf: v15", conf="", options=parse_options(conf.read_text())).ports("TCP_IN") \
        == {20, 21, 22, 25}


# --- fail2ban ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, address", [("f2b_real_iptables_multiport_prober_banned", "prober"),
                                           ("f2b_real_nftables_multiport_prober_banned", "prober"),
                                           ("f2b_real_nftables_multiport_prober6_banned", "prober6")])
def test_fail2ban_ban_is_lifted_by_fail2ban(name, address):
    analysis = analyzed(name)
    addr = CASES[name].expected()["addresses"][address]
    [fix] = analysis.fixes
    assert fix.backend == "fail2ban" and fix.commands == [["fail2ban-client", "set", "exim", "unbanip", addr]]
    assert not fix.backup.saves_anything and not fix.backup.guard  # the rollback is banip
    assert fix.rollback == [["fail2ban-client", "set", "exim", "banip", addr]]
    banned = next(f for f in analysis.findings if f.code == "firewall.prober_banned")
    assert f"fail2ban: jail exim bans {addr} (bantime 1h" in banned.summary and banned.fixes == [fix.id]
    assert analysis.backend != "fail2ban"  # it manages bans, not the firewall


def test_fail2ban_banning_others_plans_nothing():
    analysis = analyzed("f2b_real_iptables_multiport_other_banned")
    assert not analysis.fixes and all(v.verdict == "allow" for v in analysis.decisions.values())


def test_managers_inactive_without_their_output():
    results = load_captured(CASES["csf_tcp_in_no_mail"].captured_dir)
    results = {k: v for k, v in results.items() if k[0] != "csf"}  # no csf on the host
    case = CASES["csf_tcp_in_no_mail"]
    a = case.expected()["addresses"]
    context = AnalysisContext(INBOUND_PORTS, OUTBOUND_PORTS, a["prober"], None, a["host"], None, "eth0")
    analysis = analyze(results, context=context)
    assert analysis.backend == "iptables" and {f.backend for f in analysis.fixes} == {"iptables"}
    assert parse_all(results).tables


# --- firewalld (as before; now it names the zone) -------------------------------------------------

def test_firewalld_names_the_zone_and_its_services():
    analysis = analyzed("nft-firewalld-smtp-only")
    blocked = next(f for f in analysis.findings if f.code == "firewall.inbound_blocked")
    assert "(firewalld: not in zone public (target default; services: dhcpv6-client imap smtp ssh; ports: none))" \
        in blocked.summary
    [fix] = analysis.fixes
    assert fix.backend == "firewalld"

"""Fix plans for iptables and ufw on every corpus case (captured output from the lab).

tests/lab/test_firewall_fix.py applies the same plans in real hosts.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from bot.firewall.parse.iptables import normalize_iptables_save, parse_save
from bot.firewall.plan import iptables as planner
from tests.firewall_corpus import endpoints, load_captured, load_cases, plan_fixes, split_key

CASES = [c for c in load_cases() if c.expected_file.exists() and c.backend in ("iptables", "ufw")]
BY_NAME = {c.name: c for c in CASES}


def plan_of(name):
    case = BY_NAME[name]
    results = load_captured(case.captured_dir)
    return results, plan_fixes(results, case.expected()["addresses"])[1]


def _label(k):
    return f"{k[0]} {k[2]}"


def _table_section(text: str, table: str) -> str:
    m = re.search(rf"^\*{table}\n.*?^COMMIT$", text, re.S | re.M)
    return normalize_iptables_save(m.group(0)) if m else ""


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_blocked_port_is_planned_or_explained(case):
    results, plan = plan_of(case.name)
    planned = {tuple(k) for f in plan.fixes for k in f.expected_allow}
    blocked = [split_key(k) for k, v in case.expected()["kernel"].items() if v == "block" and not k.endswith("/22")]
    for k in blocked:
        if case.may_be_unknown(f"{k[0]}/{k[1]}/{k[2]}"):
            continue  # the model says unknown there: nothing is planned on a guess
        family_label = f"{k[2]}/{'IPv6' if k[1] == 'ipv6' else 'IPv4'}"
        explained = any(family_label in n or _label(k) in n or case.model_gap for n in plan.notes)
        assert k in planned or explained or case.model_gap, f"{k} neither planned nor explained: {plan.notes}"
    assert planned <= set(blocked), "a fix claims to open a port that was not blocked"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fixes_are_complete_and_preconditions_match_the_captured_tables(case):
    results, plan = plan_of(case.name)
    for fix in plan.fixes:
        assert fix.commands and fix.rollback and fix.preconditions and fix.expected_allow
        for pre in fix.preconditions:
            if pre.normalize == "iptables-save":
                save = results[(pre.argv[0], "-c")].stdout
                digest = hashlib.sha256(_table_section(save, pre.argv[2]).encode()).hexdigest()
                assert pre.expect_sha256 == digest, f"{pre.argv}: the model's table is not the captured one"
            elif pre.argv[:2] == ["ufw", "status"]:
                raw = results[("ufw", "status", "verbose")].stdout
                assert pre.expect_sha256 == hashlib.sha256(raw.encode()).hexdigest()
        if fix.backend != "ufw":
            assert len(fix.rollback) == len(fix.commands) + len(fix.persist)


def test_guide_case_1_deletes_by_full_specification():
    _, plan = plan_of("guide_policy_accept_multiport_drop")
    (fix,) = plan.fixes
    spec = ["-p", "tcp", "-m", "multiport", "--dports", "25,143,993,587,465", "-j", "DROP"]
    assert fix.commands == [["iptables", "-t", "filter", "-D", "INPUT", *spec], ["iptables", "-t", "filter", "-D", "OUTPUT", *spec]]
    assert fix.rollback[:2] == [["iptables", "-t", "filter", "-I", "OUTPUT", "1", *spec], ["iptables", "-t", "filter", "-I", "INPUT", "2", *spec]]
    assert ["iptables", "-t", "filter", "-C", "INPUT", *spec] in [p.argv for p in fix.preconditions]
    assert fix.persist == [["iptables-save", "-f", "/etc/iptables/rules.v4"]]
    assert len(fix.expected_allow) == 8


def test_guide_case_2_accepts_where_the_policy_takes_effect():
    _, plan = plan_of("guide_policy_drop_ssh_only")
    (fix,) = plan.fixes
    assert [c[3:5] for c in fix.commands] == [["-A", "INPUT"], ["-A", "OUTPUT"]]
    assert "25,143,465,587,993" in fix.commands[0] and "25,465,587" in fix.commands[1]


@pytest.mark.parametrize("name", ["rhel_reject_all", "rhel_reject_all_accept_appended"])
def test_reject_all_gets_an_insert_before_it_not_an_append(name):
    _, plan = plan_of(name)
    assert plan.fixes[0].commands[0][3:6] == ["-I", "INPUT", "5"]


def test_goto_inserts_before_the_rule_that_left_the_base_chain():
    _, plan = plan_of("user_chain_goto")
    (fix,) = plan.fixes
    assert len(fix.commands) == 1 and fix.commands[0][3:6] == ["-I", "INPUT", "3"]


def test_rules_for_other_ports_are_never_deleted():
    _, plan = plan_of("negated_dport")  # `! --dport 22 ... -j DROP` covers every other port
    assert plan.fixes[0].commands[0][3:6] == ["-I", "INPUT", "1"]
    rs = parse_save("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -m multiport --dports 22,25 -j DROP\nCOMMIT\n")
    ends = endpoints(BY_NAME["negated_dport"].expected()["addresses"])
    fix = planner.plan_iptables(rs, [("inbound", "ipv4", 25)], ends).fixes[0]
    assert fix.commands == [["iptables", "-t", "filter", "-I", "INPUT", "1", "-p", "tcp", "-m", "tcp", "--dport", "25",
                             "-m", "comment", "--comment", "mailcheck", "-j", "ACCEPT"]]


@pytest.mark.parametrize("name", ["f2b_prober_banned", "f2b_ipv6_prober_banned", "f2b_dovecot_bans_prober_tcp_reset"])
def test_bans_are_reported_not_undone(name):
    _, plan = plan_of(name)
    assert not plan.fixes and any("source addresses" in n for n in plan.notes)


def test_replies_blocked_get_an_established_accept_for_mail_ports_only():
    _, plan = plan_of("reply_blocked_inbound_no_established")
    cmd = plan.fixes[0].commands[0]
    assert cmd[3:5] == ["-A", "INPUT"] and "--sports" in cmd and "ESTABLISHED" in cmd and "25,465,587" in cmd


def test_legacy_tables_are_edited_with_the_legacy_tool_and_not_persisted():
    _, plan = plan_of("legacy_drop")
    assert {f.commands[0][0] for f in plan.fixes} == {"iptables-legacy", "ip6tables-legacy"}
    assert all(not f.persist for f in plan.fixes) and any("not persisted" in n for n in plan.notes)


def test_rhel_persists_to_sysconfig():
    case = BY_NAME["rhel_reject_all"]
    rs, _ = plan_fixes(load_captured(case.captured_dir), case.expected()["addresses"])
    keys = [("inbound", "ipv4", 25)]
    fix = planner.plan_iptables(rs, keys, endpoints(case.expected()["addresses"]), distro_family="rhel").fixes[0]
    assert fix.persist == [["iptables-save", "-f", "/etc/sysconfig/iptables"]]
    assert fix.rollback[-1] == fix.persist[0]


def test_ufw_deny_first_is_updated_in_place_and_bans_kept():
    _, plan = plan_of("ufw_deny_before_allow")
    (fix,) = plan.fixes
    assert fix.backend == "ufw" and fix.commands == [["ufw", "allow", "25/tcp"]] and fix.rollback == [["ufw", "deny", "25/tcp"]]
    assert sorted(fix.expected_allow) == [("inbound", "ipv4", 25), ("inbound", "ipv6", 25)]
    assert any("993" in n and "source address" in n for n in plan.notes)


def test_ufw_default_deny_and_deny_out():
    _, plan = plan_of("ufw_deny_incoming_ssh_only")
    assert [c for f in plan.fixes for c in f.commands] == [["ufw", "allow", f"{p}/tcp"] for p in (25, 143, 465, 587, 993)]
    assert plan.fixes[0].rollback[0] == ["ufw", "delete", "allow", "993/tcp"]
    _, out = plan_of("ufw_deny_out_25")
    assert out.fixes[0].commands == [["ufw", "allow", "out", "25/tcp"]] and out.fixes[0].rollback == [["ufw", "deny", "out", "25/tcp"]]


def test_a_plan_that_would_block_ssh_is_refused(monkeypatch):
    case = BY_NAME["guide_policy_drop_ssh_only"]
    rs, _ = plan_fixes(load_captured(case.captured_dir), case.expected()["addresses"])
    real = planner.apply_change

    def sabotage(ruleset, change):
        real(ruleset, change)
        real(ruleset, planner.IptablesChange("ip", "filter", "iptables-nft", "INPUT", "insert", 1,
                                     ["-p", "tcp", "-m", "tcp", "--dport", "22", "-j", "DROP"], "x"))

    monkeypatch.setattr(planner, "apply_change", sabotage)
    plan = planner.plan_iptables(rs, [("inbound", "ipv4", 25)], endpoints(case.expected()["addresses"]))
    assert not plan.fixes and any("stop allowing inbound 22" in n for n in plan.notes)


def test_persist_without_save_file_option_is_a_fixed_shell_line():
    case = BY_NAME["rhel_reject_all"]
    rs, _ = plan_fixes(load_captured(case.captured_dir), case.expected()["addresses"])
    fix = planner.plan_iptables(rs, [("inbound", "ipv4", 25)], endpoints(case.expected()["addresses"]),
                                distro_family="rhel", save_file_option=False).fixes[0]
    assert fix.persist == [["sh", "-c", "iptables-save > /etc/sysconfig/iptables"]]

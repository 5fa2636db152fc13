"""nft and firewalld fix plans on the lab-recorded corpus (captured JSON + the same ruleset's
`nft -a list ruleset`, tests/data/nft/listings/) and on real firewalld 1.3 output (tests/data/firewalld/).
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest

from bot.firewall.analysis import Endpoints, port_verdict
from bot.firewall.parse.firewalld import (
    FirewalldStatus,
    parse_active_zones,
    parse_firewalld,
    parse_list_all,
    parse_state,
    zone_command,
)
from bot.firewall.parse.nft import chain_listing, normalize_nft, parse_nft_json
from bot.firewall.plan.firewalld import plan_firewalld
from bot.firewall.plan.nft import NftChange, apply_change, plan_nft
from tests.firewall_corpus import endpoints, load_captured, load_cases, mail_keys, parse_results

DATA = Path(__file__).parent.parent / "data"
LISTINGS = DATA / "nft" / "listings"
FWD = DATA / "firewalld"
CASES = [c for c in load_cases() if (LISTINGS / f"{c.name}.txt").exists()]


def case_plan(case):
    ruleset = parse_results(load_captured(case.captured_dir))
    ends = endpoints(case.expected()["addresses"])
    listing = (LISTINGS / f"{case.name}.txt").read_text()
    return ruleset, ends, listing, plan_nft(ruleset, mail_keys(), ends, listing=listing)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan_opens_what_it_says_and_keeps_ssh(case):
    ruleset, ends, listing, plan = case_plan(case)
    kernel = case.expected()["kernel"]
    blocked = {k for k in mail_keys() if kernel[f"{k[0]}/{k[1]}/{k[2]}"] == "block"}
    assert len(plan.fixes) == 1, plan.notes
    fix = plan.fixes[0]
    assert set(fix.expected_allow) <= blocked
    work = copy.deepcopy(ruleset)
    for argv in fix.commands:
        apply_change(work, _change_from(argv))
    for family in ends:
        ssh = ("inbound", family, 22)
        assert port_verdict(work, ssh, ends[family]).verdict == port_verdict(ruleset, ssh, ends[family]).verdict
    for key in fix.expected_allow:
        assert port_verdict(work, key, ends[key[1]]).verdict == "allow"
    for argv in fix.commands:
        assert argv[:3] in (["nft", "insert", "rule"], ["nft", "add", "rule"]) and argv[-2] == "comment"
    for pre in fix.preconditions:
        text = chain_listing(listing, *pre.argv[4:])
        assert pre.expect_sha256 == hashlib.sha256(normalize_nft(text).encode()).hexdigest()


def _change_from(argv: list[str]) -> NftChange:
    family, table, chain = argv[3:6]
    before = int(argv[7]) if argv[6] == "position" else None
    rest = argv[8:] if before is not None else argv[6:]
    ports = tuple(int(p) for p in rest[2].strip("{} ").split(", "))
    return NftChange(family, table, chain, before, ports, rest[1] == "sport", "")


def test_inserts_before_the_drop_by_handle():
    case = next(c for c in CASES if c.name == "nft-debian-default-mail-drop")
    _, _, _, plan = case_plan(case)
    fix = plan.fixes[0]
    assert fix.commands == [["nft", "insert", "rule", "inet", "filter", "input", "position", "5", "tcp", "dport",
                             "{ 25, 465, 587 }", "accept", "comment", '"mailcheck-014ea5e36f"']]
    assert fix.rollback[0][:2] == ["sh", "-c"] and "mailcheck-014ea5e36f" in fix.rollback[0][2]
    assert "nft delete rule inet filter input handle" in fix.rollback[0][2]
    assert ("inbound", "ipv6", 25) in fix.expected_allow  # an inet table: both families
    assert fix.persist and "nft -c -f" in fix.persist[0][2]


def test_every_blocking_base_chain_and_goto():
    case = next(c for c in CASES if c.name == "nft-user-chains-jump-goto-return")
    _, _, _, plan = case_plan(case)
    cmds = [" ".join(c) for c in plan.fixes[0].commands]
    # 587 returns to input and meets the policy: add at the end; 993 came by goto: insert before it
    assert cmds[0].startswith("nft add rule inet filter input tcp dport 587 accept")
    assert cmds[1].startswith("nft insert rule inet filter input position 10 tcp dport 993 accept")


def test_iptables_blocks_are_left_to_the_iptables_plan():
    case = next(c for c in CASES if c.name == "nft-plus-iptables-nft")
    _, _, _, plan = case_plan(case)
    assert any("587" in n and "iptables" in n for n in plan.notes)
    assert plan.fixes[0].expected_allow == [("inbound", "ipv4", 993), ("inbound", "ipv6", 993)]


def test_no_listing_no_plan():
    case = CASES[0]
    ruleset = parse_results(load_captured(case.captured_dir))
    plan = plan_nft(ruleset, mail_keys(), endpoints(case.expected()["addresses"]), listing=None)
    assert not plan.fixes and plan.notes


def test_source_specific_drop_is_not_planned():
    doc = ('{"nftables": [{"table": {"family": "inet", "name": "f", "handle": 1}}, {"chain": {"family": "inet", '
           '"table": "f", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": '
           '"accept"}}, {"rule": {"family": "inet", "table": "f", "chain": "in", "handle": 2, "expr": [{"match": '
           '{"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "198.18.0.1"}}, '
           '{"drop": null}]}}]}')
    listing = "table inet f {\n\tchain in { # handle 1\n\t\ttype filter hook input priority filter; policy accept;\n" \
              "\t\tip saddr 198.18.0.1 drop # handle 2\n\t}\n}\n"
    ends = {"ipv4": Endpoints("198.18.0.2", "198.18.0.1", "eth0", frozenset({"198.18.0.2"}))}
    plan = plan_nft(parse_nft_json(doc), [("inbound", "ipv4", 25)], ends, listing=listing)
    assert not plan.fixes and "source addresses" in plan.notes[0]


# --- firewalld -----------------------------------------------------------------------------

def fwd_status() -> FirewalldStatus:
    return parse_firewalld(((FWD / "state.txt").read_text(), 0), (FWD / "default-zone.txt").read_text(),
                           (FWD / "active-zones.txt").read_text(), (FWD / "list-all-zones.txt").read_text())


def test_firewalld_parsers_on_real_output():
    st = fwd_status()
    assert st.running and st.default_zone == "public" and not st.problems
    public = st.zones["public"]
    assert public.active and public.default and public.interfaces == ("eth0",)
    assert public.services == ("dhcpv6-client", "smtp", "ssh")
    assert public.ports == ((2525, 2525, "tcp"), (4000, 4010, "tcp"))
    assert len(public.rich_rules) == 2 and public.allows_port(25) and public.allows_port(4005)
    assert not public.allows_port(587)
    assert st.zones["trusted"].target == "ACCEPT" and st.zones["trusted"].sources == ("10.9.0.0/16",)
    assert st.zone_for("eth0", "10.9.3.4").name == "trusted" and st.zone_for("eth0", "192.0.2.1").name == "public"
    assert len(st.zones) > 5  # every zone from --list-all-zones
    single = parse_list_all((FWD / "list-all-public.txt").read_text())["public"]
    assert single.raw == (FWD / "list-all-public.txt").read_text()


@pytest.mark.parametrize("out, rc, want", [("running\n", 0, True), ("not running\n", 252, False), ("", 127, None),
                                           ("garbage", 0, None)])
def test_firewalld_state(out, rc, want):
    assert parse_state(out, rc) is want


def test_firewalld_not_running_has_no_zones():
    st = parse_firewalld(("not running\n", 252), "", "", (FWD / "list-all-zones.txt").read_text())
    assert st.running is False and not st.zones
    assert parse_active_zones("public\n  interfaces: eth0 eth1\n") == {"public": {"interfaces": ("eth0", "eth1"),
                                                                                  "sources": ()}}
    with pytest.raises(ValueError):
        zone_command("pub lic; rm")


def test_firewalld_plan_adds_services_and_leaves_the_ban():
    ruleset = parse_nft_json((FWD / "nft.json").read_text())
    local = frozenset({"198.18.0.2", "2001:2::2"})
    keys = [("inbound", "ipv4", p) for p in (25, 465, 587, 143, 993)]
    banned = {"ipv4": Endpoints("198.18.0.2", "198.51.100.7", "eth0", local)}
    plan = plan_firewalld(ruleset, fwd_status(), keys, banned)
    fix = plan.fixes[0]
    assert ["firewall-cmd", "--zone=public", "--add-service=smtp-submission"] in fix.commands
    assert ["firewall-cmd", "--permanent", "--zone=public", "--add-service=imaps"] in fix.persist
    assert ["firewall-cmd", "--permanent", "--zone=public", "--remove-service=imaps"] in fix.rollback
    assert not any("--reload" in c for c in fix.commands + fix.persist)
    assert sorted(fix.expected_allow) == [("inbound", "ipv4", p) for p in (143, 465, 587, 993)]
    assert any("rich rule" in n for n in plan.notes)  # 25 is rejected for the banned source only
    expected = hashlib.sha256((FWD / "list-all-public.txt").read_text().encode()).hexdigest()
    assert fix.preconditions[0].expect_sha256 == expected


def test_policy_fix_warns_when_the_ports_are_allow_listed():
    case = next(c for c in CASES if c.name == "nft-interval-set-allowed-sources")
    _, _, _, plan = case_plan(case)
    assert "WARNING" in plan.fixes[0].summary and "opens them to every source" in plan.fixes[0].summary


def test_status_from_results():
    from bot.firewall.parse.firewalld import firewalld_commands, status_from_results
    from bot.models import Command, CommandResult

    files = ["state.txt", "default-zone.txt", "active-zones.txt", "list-all-zones.txt"]
    results = {argv: CommandResult(Command(argv), 0, (FWD / f).read_text(), "")
               for argv, f in zip(firewalld_commands(), files, strict=True)}
    assert status_from_results(results).zone_for("eth0").name == "public"
    missing = {firewalld_commands()[0]: CommandResult(Command(firewalld_commands()[0]), 127, "", "")}
    assert status_from_results(missing).running is None
    assert status_from_results({}).running is None


def test_a_rollback_keeps_the_admins_file_in_the_mailcheck_copy(tmp_path, monkeypatch):
    """rollback.py runs the persist again after restoring the tables (so the boot file follows the
    restored rules). That second run must not overwrite <file>.mailcheck-<digest>, the only copy of
    the admin's own file, with the fixed one. The persist's own sh text runs here on a file in
    tmp_path; `nft` is a stub printing which state the tables are in (the file moves are tested,
    not nft: tests/lab/test_nft_fix.py runs the real one)."""
    import os
    import subprocess

    import bot.firewall.plan.nft as nft_plan

    conf = tmp_path / "nftables.conf"
    monkeypatch.setattr(nft_plan, "PERSIST_FILES", {"debian": str(conf)})
    case = next(c for c in CASES if c.name == "nft-debian-default-mail-drop")
    [persist] = case_plan(case)[3].fixes[0].persist
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "nft").write_text('#!/bin/sh\n[ "$1" = list ] && echo "table $3 $4 { # $TABLES }"\nexit 0\n')
    (stub / "nft").chmod(0o755)
    conf.write_text("#!/usr/sbin/nft -f\n# the admin's own file\n")

    def persist_when(tables: str) -> None:
        env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "TABLES": tables}
        subprocess.run(persist, env=env, check=True, timeout=10)

    persist_when("fixed")  # the apply
    [copy_] = tmp_path.glob("nftables.conf.mailcheck-*")
    assert "admin's own file" in copy_.read_text() and "fixed" in conf.read_text()
    persist_when("restored")  # the rollback, after the tables were restored
    assert "restored" in conf.read_text()
    assert "admin's own file" in copy_.read_text(), copy_.read_text()

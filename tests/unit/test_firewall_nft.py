"""nft JSON parser on real `nft -j list ruleset` output (nftables 1.0.6, captured in a lab namespace).

tests/data/nft/*.json and *.txt are the JSON and the `nft -a list ruleset` listing of
the same ruleset: rich (most expressions), misc (flags, sets with timeouts, concat, marks),
firewalld-default (what firewalld 1.3 on Debian 12 loads, started in a namespace).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.firewall.evaluate import evaluate
from bot.firewall.model import Packet, Unknown
from bot.firewall.parse.nft import normalize_nft, parse_nft, parse_nft_json, priority, xt_tables
from bot.firewall.parse.nft_text import render_rule, rule_lines

DATA = Path(__file__).parent.parent / "data" / "nft"
HOST, PEER, HOST6, PEER6 = "198.18.0.2", "198.18.0.1", "2001:2::2", "2001:2::1"


def load(name: str, listing: bool = True):
    text = (DATA / f"{name}.json").read_text()
    return parse_nft(text, listing=(DATA / f"{name}.txt").read_text() if listing else None)


def inbound(port: int, six: bool = False, saddr: str | None = None, iif: str = "eth0", state: str = "new"):
    return Packet("inbound", "ipv6" if six else "ipv4", port, saddr or (PEER6 if six else PEER),
                  HOST6 if six else HOST, iif=iif, ctstate=state, local_addrs=frozenset({HOST, HOST6}))


def rule(rs, family, table, chain, handle):
    return [r for r in rs.table(family, table).chains[chain].rules if r.handle == handle]


def test_tables_chains_priorities():
    rs = load("rich").ruleset
    assert [t.label for t in rs.tables] == ["nft inet filter", "nft ip raw", "nft ip6 t6"]
    t6 = rs.table("ip6", "t6")
    assert {c.name: c.priority for c in t6.chains.values()} == {"in": -10, "m": -145, "s": 50, "n": -100}
    assert t6.chains["n"].type == "nat"
    inp = rs.table("inet", "filter").chains["input"]
    assert (inp.hook, inp.policy, inp.priority) == ("input", "drop", 0)
    assert rs.table("inet", "filter").chains["sub"].hook is None


@pytest.mark.parametrize("value, want", [(0, 0), ("filter", 0), ("filter - 10", -10), ("mangle + 5", -145),
                                         ("raw", -300), ("security", 50), ("dstnat", -100), ("-5", -5),
                                         ("bogus", None), (None, None), (True, None)])
def test_priority_names(value, want):
    assert priority(value) == want


def test_rule_text_from_listing_and_rebuilt():
    rs = load("rich").ruleset
    r = rule(rs, "inet", "filter", "input", 15)[0]
    assert r.text == "tcp dport @blocked counter packets 0 bytes 0 drop"
    rebuilt = load("rich", listing=False).ruleset
    assert rule(rebuilt, "inet", "filter", "input", 15)[0].text == "tcp dport @blocked counter drop"
    assert rule(rebuilt, "inet", "filter", "input", 14)[0].text == "ip saddr @allowsrc tcp dport { 143, 993 } accept"


def test_positions_count_rules_not_map_elements():
    rs = load("rich").ruleset
    chain = rs.table("inet", "filter").chains["input"]
    vmap = rule(rs, "inet", "filter", "input", 10)
    assert len(vmap) == 2 and {r.position for r in vmap} == {2}
    assert rule(rs, "inet", "filter", "input", 11)[0].position == 3
    assert chain.rules[-1].position == 36


@pytest.mark.parametrize("handle, port, six, saddr, want", [
    (15, 25, False, None, True),  # named set {25, 465}
    (15, 587, False, None, False),
    (14, 143, False, "198.18.0.9", True),  # interval set with a prefix
    (14, 143, False, "10.0.0.5", True),  # ... and a range
    (14, 143, False, "10.0.0.10", False),
    (14, 143, True, None, False),  # ip saddr in an inet table: never an IPv6 packet
    (17, 1500, False, None, True),  # range
    (18, 587, True, None, True),  # ip6 prefix
    (18, 587, False, None, False),
    (19, 25, False, "10.0.0.3", True),  # address range
    (44, 25, False, None, False),  # icmp type: never a TCP packet
    (46, 53, False, None, False),  # udp dport
    (48, 41, False, "1.2.3.4", False),  # != { set }
    (48, 41, False, "9.9.9.9", True),
    (48, 41, True, None, False),  # ip saddr != ...: still needs IPv4
    (28, 33, False, None, True),  # fib daddr type local
    (27, 32, True, None, False),  # meta nfproto ipv4
    (29, 25, False, None, None),  # meta mark
    (30, 25, False, None, None),  # limit
    (32, 25, False, None, None),  # dynamic set update
    (41, 25, False, None, None),  # socket
    (43, 25, False, None, None),  # quota
])
def test_matches(handle, port, six, saddr, want):
    rs = load("rich").ruleset
    assert rule(rs, "inet", "filter", "input", handle)[0].test(inbound(port, six, saddr)) is want


def test_interfaces_and_ct_state():
    rs = load("rich").ruleset
    wild = rule(rs, "inet", "filter", "input", 12)[0]
    assert wild.test(inbound(22, iif="eth0")) is True
    assert wild.test(inbound(22, iif="wg0")) is False
    est = rule(rs, "inet", "filter", "input", 8)[0]
    assert est.test(inbound(25, state="established")) is True
    assert est.test(inbound(25)) is False
    vmap = rule(rs, "inet", "filter", "input", 10)
    assert [(r.verdict.kind, r.test(inbound(25, state="invalid"))) for r in vmap] == [("drop", True), ("accept", False)]


def test_verdicts():
    rs = load("rich").ruleset
    assert rule(rs, "inet", "filter", "input", 33)[0].verdict.kind == "jump"
    assert rule(rs, "inet", "filter", "input", 34)[0].verdict.chain == "sub"
    assert rule(rs, "inet", "filter", "input", 17)[0].verdict.kind == "reject"
    named_map = rule(rs, "inet", "filter", "input", 24)
    assert [(r.verdict.kind, r.test(inbound(25))) for r in named_map] == [("drop", True), ("accept", False)]
    # notrack at input priority 0 comes after conntrack: the kernel ignores it
    assert rule(rs, "inet", "filter", "input", 40)[0].verdict.set_ctstate is None
    assert rule(rs, "ip", "raw", "pre", 2)[0].verdict.set_ctstate == "untracked"
    redirect = rule(rs, "ip6", "t6", "n", 6)[0].verdict  # `redirect to :2525`: to this host, port 2525
    assert (redirect.kind, redirect.to_addr, redirect.to_port) == ("dnat", None, 2525)


def test_misc_expressions():
    rs = load("misc").ruleset
    flags = rule(rs, "inet", "t", "c", 4)[0]
    assert flags.test(inbound(25)) is False  # a SYN passes `tcp flags != syn / fin,syn,rst,ack`
    assert rule(rs, "inet", "t", "c", 7)[0].test(inbound(1023)) is True  # tcp dport < 1024
    assert rule(rs, "inet", "t", "c", 7)[0].test(inbound(1024)) is False
    assert rule(rs, "inet", "t", "c", 9)[0].test(inbound(25, saddr="1.2.3.4")) is True  # set elem w/ timeout
    assert rule(rs, "inet", "t", "c", 11)[0].test(inbound(25, six=True)) is True  # ip6 nexthdr tcp
    assert rule(rs, "inet", "t", "c", 12)[0].test(inbound(25)) is False  # meta protocol ip6
    assert any(isinstance(m, Unknown) for m in rule(rs, "inet", "t", "c", 14)[0].matches)  # concat
    assert rule(rs, "inet", "t", "c", 15)[0].verdict.kind == "continue"  # ct mark set


def test_evaluate_rich_ruleset():
    rs = load("rich").ruleset
    assert evaluate(rs, inbound(25)).verdict == "block"  # named set drop
    assert evaluate(rs, inbound(22)).verdict == "allow"
    d = evaluate(rs, inbound(25, six=True))
    assert d.verdict == "unknown" and "redirect" in d.reasons[0]  # nat prerouting redirects 25
    assert "answered by whatever listens on 2525" in d.reasons[0]  # to another port of this host
    assert evaluate(rs, inbound(587, six=True)).verdict == "allow"  # ip6 saddr 2001:2::/48 587 accept
    assert "nft inet filter/input#14" in evaluate(rs, inbound(587)).path  # the named verdict map (handle 24)


def test_firewalld_default_ruleset():
    rs = load("firewalld-default").ruleset
    assert evaluate(rs, inbound(22)).verdict == "allow"
    d = evaluate(rs, inbound(25))
    assert d.verdict == "block" and d.reject
    assert d.blocked_by == ("nft inet firewalld chain filter_IN_public handle 72: "
                            "reject with icmpx admin-prohibited")
    # IPv6 reverse-path filter (fib saddr . mark . iif oif missing drop): not modelled, so unknown
    assert evaluate(rs, inbound(25, six=True)).verdict == "unknown"


def test_skip_tables_and_xt():
    doc = {"nftables": [
        {"table": {"family": "ip", "name": "filter", "handle": 1}},
        {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 1, "type": "filter",
                   "hook": "input", "prio": 0, "policy": "drop"}},
        {"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 2,
                  "expr": [{"xt": {"type": "match", "name": "conntrack"}}, {"accept": None}]}},
        {"table": {"family": "inet", "name": "mine", "handle": 2}},
    ]}
    text = json.dumps(doc)
    assert xt_tables(text) == {("ip", "filter")}
    p = parse_nft(text, skip_tables=frozenset({("ip", "filter")}))
    assert [t.label for t in p.ruleset.tables] == ["nft inet mine"]
    assert p.notes and "iptables-nft" in p.notes[0]
    unskipped = parse_nft_json(text)
    r = unskipped.table("ip", "filter").chains["INPUT"].rules[0]
    assert isinstance(r.matches[0], Unknown)


@pytest.mark.parametrize("text", ["", "{", "[]", '{"nftables": 3}', '{"nftables": [1, {"a": 1}]}', "null"])
def test_malformed_json_is_a_problem_not_a_crash(text):
    assert parse_nft_json(text).problems


def test_netdev_table_with_rules_is_a_problem():
    doc = {"nftables": [
        {"table": {"family": "netdev", "name": "edge", "handle": 1}},
        {"chain": {"family": "netdev", "table": "edge", "name": "in", "handle": 1, "type": "filter",
                   "hook": "ingress", "dev": "eth0", "prio": 0, "policy": "accept"}},
        {"rule": {"family": "netdev", "table": "edge", "chain": "in", "handle": 2, "expr": [{"drop": None}]}},
    ]}
    assert parse_nft_json(json.dumps(doc)).problems


def test_rule_lines_and_normalize():
    lines = rule_lines((DATA / "rich.txt").read_text())
    assert lines[("ip6", "t6", "in", 5)] == "tcp dport 25 drop"
    text = "table inet t { # handle 1\n\tchain c { # handle 1\n\t\ttcp dport 25 counter packets 12 bytes 720 drop # handle 4\n\t}\n\n}\n"
    assert normalize_nft(text) == normalize_nft(text.replace("12 bytes 720", "0 bytes 0"))
    assert "\n\n" not in normalize_nft(text)


def test_render_rule_odd_input():
    assert render_rule(None) == "null"
    assert render_rule([{"weird": [1, 2]}, 3]).startswith("weird")


def test_synproxy_and_queue_are_not_understood_verdicts():
    from bot.firewall.parse.nft_expr import verdict_of

    assert verdict_of({"synproxy": {"mss": 1460}}).kind == "unknown"
    assert verdict_of({"queue": {"num": 1}}).kind == "unknown"
    assert verdict_of({"counter": None}) is None

"""Exact peer addresses, no sample (issue 15 item 4), on captured lab output.

Each case's captured output is the real thing (tests/data/firewall/*/captured, with the
kernel's verdicts for the prober in expected.json). For every port the analysis says which
source (inbound) or destination (outbound) ranges get another verdict than addresses in
general, and the rule that decides it; `test_every_claim_holds_for_addresses_in_it` checks
those claims address by address against the evaluator itself.
"""

from __future__ import annotations

import ipaddress
import random

import pytest

from bot.firewall import analysis as fw_analysis
from bot.firewall.analysis import connection_verdict, ends_for, findings_for, packets, port_verdict
from bot.firewall.api import AnalysisContext, analyze
from bot.firewall.model import Addr, Chain, Routes, Rule, Ruleset, Table, Verdict
from bot.firewall.parse.iptables import parse_save
from bot.firewall.peers import networks, regions
from bot.models import INBOUND_PORTS, OUTBOUND_PORTS, AddressException, PortKey
from tests.firewall_corpus import (
    all_keys,
    endpoints,
    load_captured,
    load_cases,
    parse_results,
    split_key,
)

CASES = {c.name: c for c in load_cases() if c.expected_file.exists()}


def verdicts(name: str) -> tuple[dict[PortKey, object], dict]:
    """Per key, the analysis' PortVerdict: inbound from the prober, outbound to every destination."""
    case = CASES[name]
    results, a = load_captured(case.captured_dir), case.expected()["addresses"]
    ruleset, ends = parse_results(results), endpoints(a, results)
    out = {}
    for k in all_keys():
        key = PortKey(*split_key(k))
        out[key] = port_verdict(ruleset, key, ends_for(key, ends[key.family]))
    return out, a


def analyzed(name: str, *more_addrs: str):
    case = CASES[name]
    a = case.expected()["addresses"]
    context = AnalysisContext(INBOUND_PORTS, OUTBOUND_PORTS, a["prober"], a["prober6"], a["host"], a["host6"],
                              inbound_iface="eth0", families=("ipv4", "ipv6"),
                              host_addrs=(a["host"], a["host6"], *more_addrs))
    return analyze(load_captured(case.captured_dir), context=context)


def shape(pv) -> list[tuple]:
    return [(e.networks, e.firewall) for e in pv.peers.exceptions]


def test_deny_list_is_an_exception_not_a_block():
    """Real CSF's deny of one address (csf -d): every other source and destination is allowed.
    The kernel's recorded verdicts are for the denied address (the prober) itself: block both ways."""
    vs, a = verdicts("csf_deny_prober")
    prober = f"{a['prober']}/32"
    for port in (25, 587, 143, 993):
        pv = vs[PortKey("inbound", "ipv4", port)]
        assert pv.verdict == "block" and pv.peers.general == "allow"  # the prober is denied, others not
        assert shape(pv) == [((prober,), "block")]
        assert "-A DENYIN -s 198.18.3.1/32 ! -i lo -j DROP" in pv.peers.exceptions[0].rule
    for port in (25, 587):  # in CSF's TCP_OUT: allowed, except to the denied address
        pv = vs[PortKey("outbound", "ipv4", port)]
        assert pv.verdict == "allow" and shape(pv) == [((prober,), "block")]
        assert "LOGDROPOUT" in pv.peers.exceptions[0].rule
    assert vs[PortKey("outbound", "ipv4", 465)].verdict == "block"  # not in TCP_OUT: blocked for all
    assert vs[PortKey("outbound", "ipv4", 465)].peers.exceptions == ()
    found = findings_for(list(vs.values()), {"ipv4": a["prober"]})
    blocked = [f.ports for f in found if f.code == "firewall.outbound_blocked"]
    assert blocked == [[PortKey("outbound", "ipv4", 465)]]
    summaries = [f.summary for f in found if f.code == "firewall.address_exceptions"]
    assert any(s.startswith(f"Outbound 25/IPv4, 587/IPv4: blocked to {prober} (") for s in summaries)
    assert not any("other internet sources" in f.summary for f in found)


def test_bans_of_other_addresses_are_listed_with_their_rules():
    vs, a = verdicts("f2b_other_addresses_banned")
    for port in (25, 465, 587):
        pv = vs[PortKey("inbound", "ipv4", port)]
        assert (pv.verdict, pv.peers.general) == ("allow", "allow")
        assert shape(pv) == [(("192.0.2.7/32",), "block")]
        assert pv.peers.exceptions[0].rule.endswith("-A f2b-exim -s 192.0.2.7/32 -j REJECT --reject-with "
                                                    "icmp-port-unreachable")
    pv = vs[PortKey("inbound", "ipv4", 993)]
    assert shape(pv) == [(("198.51.100.0/24",), "block"), (("203.0.113.9/32",), "block")]
    found = findings_for(list(vs.values()), {"ipv4": a["prober"]})
    assert {f.code for f in found} == {"firewall.address_exceptions"}  # nothing blocked, no warning
    assert any(f.summary.startswith("Inbound 143/IPv4, 993/IPv4: blocked for 203.0.113.9/32 (iptables -t filter "
                                    "chain f2b-dovecot rule 1: -A f2b-dovecot -s 203.0.113.9/32 -j DROP)")
               for f in found)


def test_negation():
    """`! -s 10.0.0.0/8 --dport 465 -j DROP`: blocked in general, allowed for 10.0.0.0/8 (by the
    policy); `! -s PROBER/32 --dport 993 -j DROP`: open to the prober only (a source-specific finding)."""
    vs, a = verdicts("source_negated")
    pv = vs[PortKey("inbound", "ipv4", 465)]
    assert (pv.verdict, pv.peers.general, shape(pv)) == ("block", "block", [(("10.0.0.0/8",), "allow")])
    assert pv.peers.exceptions[0].rule == "iptables -t filter: policy ACCEPT of chain INPUT"
    pv = vs[PortKey("inbound", "ipv4", 993)]
    assert (pv.verdict, pv.peers.general, shape(pv)) == ("allow", "block", [((f"{a['prober']}/32",), "allow")])
    found = findings_for(list(vs.values()), {"ipv4": a["prober"]})
    assert [f.summary for f in found if f.code == "firewall.source_specific"] == [
        f"Port 993/IPv4 is open to the prober ({a['prober']}) but blocked for sources in general"]
    assert vs[PortKey("inbound", "ipv6", 465)].peers.exceptions == ()  # the rules are IPv4 only


def test_nft_interval_set():
    """`ip saddr @allowed4 ... accept` with the set's elements as collected (a network and a
    one-address range); IPv6 from @allowed6 only."""
    vs, a = verdicts("nft-interval-set-allowed-sources")
    for port in (25, 465, 587, 143, 993):
        pv = vs[PortKey("inbound", "ipv4", port)]
        assert (pv.verdict, pv.peers.general) == ("allow", "block")
        assert shape(pv) == [(("10.0.0.0/8", f"{a['prober']}/32"), "allow")]
        assert "ip saddr @allowed4" in pv.peers.exceptions[0].rule
        pv6 = vs[PortKey("inbound", "ipv6", port)]
        assert (pv6.verdict, shape(pv6)) == ("block", [(("2001:db8:ffff::/48",), "allow")])


def test_ipset_elements_as_collected():
    """fail2ban's iptables-ipset ban (`-m set --match-set f2b-exim src -j REJECT`), the set's
    elements from `ipset save`: blocked for exactly the prober and 192.0.2.7 (the kernel blocked the
    prober), allowed for every other source."""
    vs, a = verdicts("f2b_ipset_prober_banned")
    for port in (25, 465, 587):
        pv = vs[PortKey("inbound", "ipv4", port)]
        assert (pv.verdict, pv.peers.general) == ("block", "allow")
        assert shape(pv) == [(("192.0.2.7/32", f"{a['prober']}/32"), "block")]
        assert "--match-set f2b-exim src -j REJECT" in pv.peers.exceptions[0].rule
    assert vs[PortKey("inbound", "ipv4", 143)].peers.exceptions == ()


def test_a_set_whose_elements_are_not_known_is_unknown_not_guessed():
    """The same ruleset without `ipset save` (not installed, or it failed): neither the prober's
    verdict nor any other address's is guessed."""
    case = CASES["f2b_ipset_prober_banned"]
    results, a = load_captured(case.captured_dir), case.expected()["addresses"]
    del results[("ipset", "save")]
    ruleset, ends = parse_results(results), endpoints(a, results)
    for port in (25, 465, 587):
        pv = port_verdict(ruleset, PortKey("inbound", "ipv4", port), ends["ipv4"])
        assert (pv.verdict, pv.peers.general) == ("unknown", "unknown")
        assert "--match-set f2b-exim src" in pv.reasons[0]
    assert port_verdict(ruleset, PortKey("inbound", "ipv4", 143), ends["ipv4"]).peers.general == "allow"


def test_ipset_save_parsing():
    from bot.firewall.parse.ipset import parse_save

    sets = parse_save("create bl hash:net family inet6 hashsize 1024 maxelem 65536\n"
                      "add bl 2001:db8::/32 timeout 300\n"
                      "create ports hash:ip,port family inet\nadd ports 192.0.2.1,tcp:25\n"
                      "create nm hash:net family inet\nadd nm 10.0.0.0/8\nadd nm 10.1.0.0/16 nomatch\n"
                      "create bm bitmap:ip range 192.0.2.0-192.0.2.255\nadd bm 192.0.2.4-192.0.2.7\n")
    assert (sets["bl"].family, sets["bl"].networks) == ("ip6", ("2001:db8::/32",))
    assert sets["ports"].networks is None and sets["nm"].networks is None  # not a plain address set
    assert sets["bm"].networks == ("192.0.2.4/30",)


def test_interface_match_by_the_route_of_the_source():
    """`-i eth1 ... ACCEPT` then DROP: the prober (on eth0) is blocked; the sources routed
    through eth1 (198.19.250.0/24, from the captured `ip -4 route`) are allowed."""
    vs, _ = verdicts("iface_lan_only")
    for port in (25, 465, 587, 143, 993):
        pv = vs[PortKey("inbound", "ipv4", port)]
        assert (pv.verdict, pv.peers.general, shape(pv)) == ("block", "block", [(("198.19.250.0/24",), "allow")])
        assert "-A INPUT -i eth1 -p tcp" in pv.peers.exceptions[0].rule
    analysis = analyzed("iface_lan_only", "198.19.250.1")  # the host's own LAN address stays in its range
    assert [e.networks for e in analysis.decisions[PortKey("inbound", "ipv4", 25)].peers.exceptions] == [
        ("198.19.250.0/24",)]


@pytest.mark.parametrize("name", ["csf_deny_prober", "f2b_other_addresses_banned", "source_negated",
                                  "nft-interval-set-allowed-sources", "iface_lan_only", "source_private_only",
                                  "nft-firewalld-rich-rule-ban", "ufw_deny_before_allow"])
def test_every_claim_holds_for_addresses_in_it(name):
    """The claims, address by address: each exception network's first and last address and
    random members get the exception's verdict; random addresses elsewhere the general one."""
    case = CASES[name]
    results, a = load_captured(case.captured_dir), case.expected()["addresses"]
    ruleset, ends = parse_results(results), endpoints(a, results)
    rnd = random.Random(name)
    for k in all_keys():
        key = PortKey(*split_key(k))
        e = ends_for(key, ends[key.family])
        pv = port_verdict(ruleset, key, e)
        claimed = []
        for x in pv.peers.exceptions:
            for n in map(ipaddress.ip_network, x.networks):
                claimed += [(n, str(n[0]), x.firewall), (n, str(n[-1]), x.firewall),
                            (n, str(n[rnd.randrange(n.num_addresses)]), x.firewall)]
        bits = 32 if key.family == "ipv4" else 128
        nets = [n for n, _, _ in claimed]
        for _ in range(20):
            addr = ipaddress.ip_address(rnd.randrange(1 << 24, 0xDF000000) if bits == 32 else
                                        (0x2001 << 112) + rnd.randrange(1 << 112))
            if not addr.is_loopback and not any(addr in n for n in nets):
                claimed.append((None, str(addr), pv.peers.general))
        for _, addr, want in claimed:
            iface = (e.routes.device(addr) if e.routes and e.routes.device(addr) else None) or e.iface
            got = connection_verdict(ruleset, *packets(*key, fw_analysis.replace(e, peer=addr, iface=iface)))[0]
            assert got.verdict == want, (name, k, addr)


def test_a_blocklist_of_thousands_is_two_regions():
    nets = tuple(f"203.0.{i // 256}.{i % 256}/32" for i in range(5000))
    table = Table("ip", "filter", "iptables-nft", {"INPUT": Chain("INPUT", [
        Rule((Addr("saddr", nets),), Verdict("drop"), "-A INPUT -m set --match-set bl src -j DROP", 1)],
        "input", 0, "accept")})
    rs = Ruleset([table])
    assert len(regions(rs, "ipv4", None)) == 2
    assert networks([(int(ipaddress.ip_address("203.0.0.0")), int(ipaddress.ip_address("203.0.19.135")))],
                    "ipv4") == ("203.0.0.0/20", "203.0.16.0/23", "203.0.18.0/24", "203.0.19.0/25",
                                "203.0.19.128/29")


def test_too_many_regions_are_not_listed_and_the_general_verdict_is_still_exact(monkeypatch):
    """Past MAX_REGIONS the exceptions are not listed (None, said in a finding); the general verdict
    stands only when the regions not evaluated cannot outweigh it."""
    rules = [Rule((Addr("saddr", (f"192.0.2.{i}/32",)),), Verdict("drop"), f"-A INPUT -s 192.0.2.{i}/32 -j DROP", i)
             for i in range(1, 40)]
    rs = Ruleset([Table("ip", "filter", "iptables-nft", {"INPUT": Chain("INPUT", rules, "input", 0, "accept")})])
    ends = fw_analysis.Endpoints("198.18.9.2", None, "eth0", frozenset({"198.18.9.2"}), Routes((), False))
    monkeypatch.setattr(fw_analysis, "MAX_REGIONS", 10)
    pv = port_verdict(rs, ("inbound", "ipv4", 25), ends)
    assert pv.verdict == "allow" and pv.peers.exceptions is None and "not listed" in pv.peers.note
    found = findings_for([pv], {})
    assert [f.code for f in found] == ["firewall.address_exceptions"] and "not listed" in found[0].summary
    monkeypatch.setattr(fw_analysis, "MAX_REGIONS", 256)
    pv = port_verdict(rs, ("inbound", "ipv4", 25), ends)
    assert len(pv.peers.exceptions) == 39 and all(e.firewall == "block" for e in pv.peers.exceptions)


def test_the_report_carries_the_exceptions():
    """The firewall step's PortUpdate: firewall_general and except_sources / except_destinations."""
    from bot.checks.firewall import peers as port_fields

    analysis = analyzed("csf_deny_prober")
    key = PortKey("outbound", "ipv4", 25)
    fields = port_fields(key, analysis.decisions[key])
    assert fields["firewall_general"] == "allow"
    assert [(e.networks, e.firewall) for e in fields["except_destinations"]] == [(("198.18.3.1/32",), "block")]
    assert isinstance(fields["except_destinations"][0], AddressException)
    assert not any(k == key for f in analysis.fixes for k in f.expected_allow)  # nothing to fix for 25 out


def test_ranges_the_packets_never_reach_cost_no_walk(monkeypatch):
    """1,000 per-address fail2ban rules on 25 (iptables-multiport style): ports whose packets never
    reach them (143 in, 25 out) are exact with one walk, even when only 5 walks are allowed."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]", ":f2b-exim - [0:0]",
             "-A INPUT -p tcp -m multiport --dports 25,465,587 -j f2b-exim"]
    lines += [f"-A f2b-exim -s 203.0.{i // 256}.{i % 256}/32 -j REJECT" for i in range(1000)]
    rs = parse_save("\n".join([*lines, "-A f2b-exim -j RETURN", "COMMIT", ""]))
    ends = fw_analysis.Endpoints("198.18.9.2", "198.18.9.1", "eth0", frozenset({"198.18.9.2"}), None)
    monkeypatch.setattr(fw_analysis, "MAX_REGIONS", 5)
    walks = []
    real = fw_analysis._evaluated
    monkeypatch.setattr(fw_analysis, "_evaluated", lambda *a: walks.append(1) or real(*a))
    for key in (("inbound", "ipv4", 143), ("outbound", "ipv4", 25)):
        walks.clear()
        pv = port_verdict(rs, key, ends_for(key, ends))
        assert (pv.verdict, pv.peers.general, pv.peers.exceptions, len(walks)) == ("allow", "allow", (), 1)
    pv = port_verdict(rs, ("inbound", "ipv4", 25), ends)  # each ban decides its own address: too many
    assert (pv.verdict, pv.peers.general, pv.peers.exceptions) == ("allow", "allow", None)


def test_the_port_rows_name_the_exceptions():
    from bot.models import PortStatus, Report
    from bot.render.details import ports_table
    from bot.render.terminal import render

    deny = AddressException(networks=("192.0.2.0/24",), firewall="block", rule="-A DENYIN -s 192.0.2.0/24 -j DROP")
    many = AddressException(networks=tuple(f"203.0.113.{i}/32" for i in range(5)), firewall="block", rule="r")
    ports = [PortStatus(port=25, direction="inbound", firewall="allow", firewall_general="allow",
                        except_sources=[deny]),
             PortStatus(port=25, direction="outbound", firewall="allow", firewall_general="allow",
                        except_destinations=[many]),
             PortStatus(port=587, direction="outbound", firewall="allow", firewall_general="allow",
                        except_destinations=None),
             PortStatus(port=465, direction="outbound", firewall="allow", firewall_general="allow",
                        except_destinations=[])]
    report = Report(host="mx", address="198.18.9.2", ports=ports)
    for text in (render(report), ports_table(report)):
        rows = [line for line in text.splitlines() if " 25" in line or "587" in line or "465" in line]
        assert any("(except: block for 192.0.2.0/24)" in r for r in rows)
        assert any("(except: block to 203.0.113.0/32, 203.0.113.1/32 and 3 more)" in r for r in rows)
        assert any("587" in r and "(except: exceptions not listed)" in r for r in rows)
        assert not any("465" in r and "except" in r for r in rows)


DENY_OUT = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT DROP [0:0]
:DENYOUT - [0:0]
-A OUTPUT -o lo -j ACCEPT
-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A OUTPUT -j DENYOUT
-A OUTPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A DENYOUT -d 192.0.2.0/24 -j DROP
{added}COMMIT
"""


def test_a_fix_next_to_a_deny_list_is_verified_by_the_same_exact_answer():
    """OUTPUT policy DROP and a deny list of 192.0.2.0/24 (where the old sample destination fell:
    its fix was re-checked against that sample and reported not_achieved). The fix opens mail out
    for destinations in general, keeps the deny list, and the re-check, on the same exact answer,
    says achieved."""
    from bot.checks.firewall import peers as port_fields
    from bot.firewall.plan.iptables import plan_iptables
    from bot.fixes.verify import compare
    from bot.models import PortStatus

    ends = {"ipv4": fw_analysis.Endpoints("198.18.9.2", "198.18.9.1", "eth0", frozenset({"198.18.9.2"}), None)}
    keys = [PortKey("outbound", "ipv4", p) for p in (25, 465, 587)]

    def ports(ruleset) -> list[PortStatus]:
        out = []
        for k in keys:
            pv = port_verdict(ruleset, k, ends_for(k, ends["ipv4"]))
            out.append(PortStatus(port=k.port, direction=k.direction, family=k.family, firewall=pv.verdict,
                                  **port_fields(k, pv)))
        return out

    before = parse_save(DENY_OUT.format(added=""))
    assert {p.firewall for p in ports(before)} == {"block"}
    (fix,) = plan_iptables(before, keys, ends).fixes
    assert fix.commands[0][:5] == ["iptables", "-t", "filter", "-A", "OUTPUT"]
    after = parse_save(DENY_OUT.format(added=" ".join(fix.commands[0][3:]) + "\n"))  # as iptables-save shows it
    now = ports(after)
    assert compare(fix, now).achieved
    for p in now:
        assert [(e.networks, e.firewall) for e in p.except_destinations] == [(("192.0.2.0/24",), "block")]


def test_a_target_in_a_deny_list_is_not_blocked_outside_the_host():
    """The conclusion's "blocked outside the host" for outbound rests on the firewall's verdict for
    the targets actually tried, exceptions included: a target the host's deny list drops failing is
    the host's own doing."""
    from bot.checks.conclusion import outbound_blocked
    from bot.models import PortStatus
    from bot.outbound import Target

    deny = AddressException(networks=("192.0.2.0/24",), firewall="block", rule="-A DENYOUT -d 192.0.2.0/24 -j DROP")
    p = PortStatus(port=25, direction="outbound", outside="filtered", firewall="allow", firewall_general="allow",
                   except_destinations=[deny])
    assert (p.firewall_for("192.0.2.25"), p.firewall_for("198.51.100.25"), p.firewall_for("2001:db8::25")) == (
        "block", "allow", "allow")
    assert not outbound_blocked(p, (Target("mx.in-the-list.test", 25, ("192.0.2.25",)),))
    assert outbound_blocked(p, (Target("mx.in-the-list.test", 25, ("192.0.2.25",)),
                                Target("mx.elsewhere.test", 25, ("198.51.100.25",))))
    unlisted = p.model_copy(update={"except_destinations": None})
    assert unlisted.firewall_for("198.51.100.25") == "unknown"  # too many ranges to tell: no conclusion
    assert not outbound_blocked(unlisted, (Target("mx.elsewhere.test", 25, ("198.51.100.25",)),))
    legacy = PortStatus(port=25, direction="outbound", outside="filtered", firewall="allow")
    assert outbound_blocked(legacy, (Target("mx.elsewhere.test", 25, ("198.51.100.25",)),))


def test_an_exception_shared_by_ports_never_lends_one_ports_general_verdict_to_another():
    """The same deny rule is an exception on two ports; 25 is allowed in general, 587's general
    verdict is unknown (`-m recent` is not modelled). The finding grouped them by exception
    alone and said "allowed for other addresses" of 587 too."""
    ruleset = parse_save("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                         "-A OUTPUT -d 192.0.2.0/24 -j DROP\n"
                         "-A OUTPUT -p tcp -m tcp --dport 587 -m recent --rcheck --seconds 60 --name x "
                         "--rsource -j DROP\nCOMMIT\n")
    ends = fw_analysis.Endpoints("198.18.0.2", "198.18.0.1", "eth0", frozenset({"198.18.0.2"}))
    keys = [PortKey("outbound", "ipv4", 25), PortKey("outbound", "ipv4", 587)]
    vs = [port_verdict(ruleset, k, ends_for(k, ends)) for k in keys]
    assert [(v.verdict, v.peers.general, shape(v)) for v in vs] == [
        ("allow", "allow", [(("192.0.2.0/24",), "block")]), ("unknown", "unknown", [(("192.0.2.0/24",), "block")])]
    said = {tuple(f.ports): f.summary for f in findings_for(vs, {"ipv4": "198.18.0.1"})
            if f.code == "firewall.address_exceptions"}
    assert said[(keys[0],)].endswith("; allowed for other addresses")
    assert said[(keys[1],)].endswith("; unknown for other addresses")

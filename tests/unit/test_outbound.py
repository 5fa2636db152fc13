"""Outbound for real (issue 15, item 5): the targets setting, what nc said, and step 5.

The nc lines are netcat-openbsd's, captured from a lab host behind a router namespace
(tests/lab/test_outbound_provider.py builds the same): a router's DROP, REJECT
icmp-admin-prohibited and icmp-net-prohibited, the host's own REJECT, no route.
"""

from __future__ import annotations

import pytest

from bot.checks.base import CheckContext
from bot.checks.conclusion import Conclusion
from bot.checks.outbound import Outbound, nc_argv, route_argv, verdict
from bot.models import PortStatus
from bot.outbound import DEFAULT_TARGETS, Target, parse_targets, resolve_targets
from tests.unit.checkdata import base_ports, facts, make_input, result, results
from tests.unit.test_checks import OK

TIMED_OUT = "nc: connect to 198.18.2.1 port 25 (tcp) timed out: Operation now in progress\n"
NO_ROUTE_TO_HOST = "nc: connect to 198.18.2.1 port 465 (tcp) failed: No route to host\n"
NET_UNREACHABLE = "nc: connect to 198.18.2.1 port 587 (tcp) failed: Network is unreachable\n"
REFUSED = "nc: connect to 198.18.2.1 port 2525 (tcp) failed: Connection refused\n"
OPEN = "Connection to 198.18.2.1 587 port [tcp/submission] succeeded!\n"
ROUTE = "198.18.2.1 via 198.18.3.1 dev eth0 src 198.18.3.2 uid 0 \\    cache \n"


def test_targets_setting():
    assert parse_targets("off") is None and parse_targets(" OFF ") is None
    got = parse_targets("mx1.Example.test:25, 198.18.2.1:465 [2001:2::1]:587")
    assert got == (Target("mx1.example.test", 25), Target("198.18.2.1", 465, ("198.18.2.1",)),
                   Target("2001:2::1", 587, ("2001:2::1",)))
    assert got[2].label == "[2001:2::1]:587"
    assert [t.port for t in parse_targets(DEFAULT_TARGETS)] == [25, 25, 465, 587, 587]
    for bad, why in (("", "empty"), ("mx.test", "expected host:port"), ("mx.test:2525", "must be one of"),
                     ("-x:25", "neither an IP address nor a host name"), ("[mx.test]:25", "expected")):
        with pytest.raises(ValueError, match=why):
            parse_targets(bad)


async def test_targets_are_resolved_by_mailcheck_or_say_why_not():
    async def lookup(name):
        if name == "slow.test":
            import asyncio
            await asyncio.sleep(5)
        if name == "gone.test":
            raise OSError(-2, "Name or service not known")
        return {"two.test": ["2001:2::1", "198.18.2.1"]}.get(name, [])

    got = await resolve_targets(parse_targets("two.test:25 gone.test:25 slow.test:465 none.test:587 "
                                              "198.18.2.9:25"), lookup, seconds=0.2)
    assert got[0].addresses == ("2001:2::1", "198.18.2.1") and got[0].address("ipv4") == "198.18.2.1"
    assert got[1].error == "mailcheck's resolver: Name or service not known"
    assert got[2].error == "no answer from mailcheck's resolver within 0.2 s"
    assert got[3].error == "mailcheck's resolver gave no address"
    assert got[4].addresses == ("198.18.2.9",)  # an IP is not looked up


def nc(address, port, stderr, rc=1, route=ROUTE, route_rc=0):
    return [result(nc_argv(address, port), "", rc, stderr), result(route_argv(address), route, route_rc)]


def test_what_nc_said():
    res = results(*nc("198.18.2.1", 25, TIMED_OUT), *nc("198.18.2.1", 465, NO_ROUTE_TO_HOST),
                  *nc("198.18.2.1", 587, NET_UNREACHABLE), *nc("198.18.9.1", 587, NET_UNREACHABLE,
                                                                 route="", route_rc=2),
                  *nc("198.18.2.2", 25, REFUSED), *nc("198.18.2.3", 25, OPEN, 0))
    res[route_argv("198.18.9.1")] = result(route_argv("198.18.9.1"), "", 2,
                                           "RTNETLINK answers: Network is unreachable\n")
    assert verdict(res, "198.18.2.1", 25)[0] == "filtered"
    assert verdict(res, "198.18.2.1", 465)[0] == "rejected"  # an ICMP answer
    assert verdict(res, "198.18.2.1", 587)[0] == "rejected"  # a router's net-prohibited: a route exists
    assert verdict(res, "198.18.9.1", 587) == ("error", NET_UNREACHABLE.strip()
                                               + "; the host has no route to 198.18.9.1")
    assert verdict(res, "198.18.2.2", 25)[0] == "refused"
    assert verdict(res, "198.18.2.3", 25)[0] == "open"
    assert verdict(res, "198.18.2.4", 25)[0] == "missing"


def test_commands_per_target_address_of_the_hosts_families():
    targets = (Target("mx.test", 25, ("198.18.2.1", "2001:2:0:2::1")), Target("gone.test", 25, (), "x"))
    cmds = [c.argv for c in Outbound().commands(CheckContext(facts(), targets))]
    assert cmds == [nc_argv("198.18.2.1", 25), route_argv("198.18.2.1"), nc_argv("2001:2:0:2::1", 25),
                    ("ip", "-o", "-6", "route", "get", "2001:2:0:2::1")]
    v4_only = facts(ip_addr="2: eth0    inet 198.18.2.2/30 scope global eth0\n")
    assert len(Outbound().commands(CheckContext(v4_only, targets))) == 2
    assert Outbound().commands(CheckContext(facts(), None)) == []


def outbound_input(res, targets):
    inp = make_input(res, host_facts=facts(ip_addr="2: eth0    inet 198.18.3.2/30 scope global eth0\n"))
    return type(inp)(**{**inp.__dict__, "outbound": targets})


def test_the_best_answer_per_port_and_a_finding_when_it_is_not_open():
    targets = (Target("a.test", 25, ("198.18.2.1",)), Target("b.test", 25, ("198.18.2.2",)),
               Target("a.test", 465, ("198.18.2.1",)), Target("gone.test", 587, (), "NXDOMAIN"))
    res = results(*nc("198.18.2.1", 25, TIMED_OUT), *nc("198.18.2.2", 25, TIMED_OUT),
                  *nc("198.18.2.1", 465, OPEN, 0))
    out = Outbound().evaluate(outbound_input(res, targets))
    assert out.summary == "25/ipv4: filtered, 465/ipv4: open"
    assert [(f.code, f.severity) for f in out.findings] == [("outbound.unresolved", "warning"),
                                                            ("outbound.filtered", "error")]
    assert out.findings[1].summary == ("Outbound 25/IPv4: connections from the host to a.test (198.18.2.1), "
                                       "b.test (198.18.2.2) time out (filtered: something drops the packets)")
    assert out.ports[("outbound", "ipv4", 25)].detail == "a.test (198.18.2.1): filtered; b.test (198.18.2.2): filtered"
    mixed = results(*nc("198.18.2.1", 25, TIMED_OUT), *nc("198.18.2.2", 25, OPEN, 0))
    assert Outbound().evaluate(outbound_input(mixed, targets[:2])).findings == []  # one connects: not blocked
    assert Outbound().evaluate(outbound_input({}, None)).status == "skipped"
    missing = results(result(nc_argv("198.18.2.1", 25), exit_status=127))
    assert [f.code for f in Outbound().evaluate(outbound_input(missing, targets[:1])).findings] == ["outbound.untested"]


def step5(ports: dict):
    return Conclusion().evaluate(make_input(ports=ports, prior=OK))


def outbound_port(port, outside, firewall, detail="mx.test (198.18.2.1): " + "x"):
    return PortStatus(port=port, direction="outbound", family="ipv4", outside=outside, firewall=firewall,
                      detail=detail)


def test_step5_outbound_filtered_although_the_host_firewall_allows_is_outside_the_host():
    ports = base_ports(("ipv4",))
    ports[("outbound", "ipv4", 25)] = outbound_port(25, "filtered", "allow")
    ports[("outbound", "ipv4", 465)] = outbound_port(465, "rejected", "allow")
    ports[("outbound", "ipv4", 587)] = outbound_port(587, "filtered", "block")  # the host's own
    out = step5(ports)
    [f] = out.findings
    assert (f.code, f.severity) == ("provider.outbound_blocked", "error")
    assert f.summary.startswith("Outbound port(s) 25, 465 (ipv4) are blocked outside the host")
    assert "The provider is not known" in f.summary
    ports[("outbound", "ipv4", 25)] = outbound_port(25, "filtered", "unknown")
    ports[("outbound", "ipv4", 465)] = outbound_port(465, "refused", "allow")
    assert step5(ports).findings == []  # unknown firewall, or a refusal: no claim about the provider
    ports[("outbound", "ipv4", 465)] = outbound_port(465, "filtered", "allow")
    assert [f.severity for f in step5(ports).findings] == ["warning"]  # 465 alone: submission


def test_a_fix_that_opens_the_host_firewall_while_the_provider_still_blocks_is_not_restored():
    """Verification uses the real outbound connection: mail still cannot flow, so the fix is
    not reported as restoring it, and the reason says where the block now is."""
    from bot.fixes.verify import compare
    from bot.models import Fix, PortKey

    fix = Fix(id="f", kind="firewall", summary="open outbound 25", commands=[["true"]],
              expected_allow=[PortKey("outbound", "ipv4", 25)])
    after = [outbound_port(25, "filtered", "allow")]
    result = compare(fix, after)
    assert not result.achieved and result.missing == [
        "outbound ipv4 25: filtered although the host firewall now allows it: blocked outside the host "
        "(see the conclusion)"]
    assert compare(fix, [outbound_port(25, "open", "allow")]).achieved

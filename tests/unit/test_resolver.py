"""The resolver step on captured output (issue 15, item 3).

tests/unit/data/issue15/dig.json: `dig +time=2 +tries=1` from a lab host against a real
unbound (answering, refusing, stopped), an address where nothing listens, and no route
(tests/labresolver.py built them); the lab test proves the same end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

from bot.checks.base import CheckContext
from bot.checks.dig import classify, parse_dig, parse_resolv_conf
from bot.checks.resolver import RESOLV, RESOLVED, UNAME, Resolver, plan
from bot.models import CommandResult, PortStatus
from tests.unit.checkdata import base_ports, make_input, result, results

DIG = json.loads((Path(__file__).parent / "data" / "issue15" / "dig.json").read_text())
PROBER = {"ipv4": "198.18.3.1"}


def dig(name: str, argv: tuple[str, ...] | None = None) -> CommandResult:
    d = DIG[name]
    return result(argv or tuple(d["argv"]), d["stdout"], d["rc"], d["stderr"])


def test_resolv_conf_as_glibc_reads_it():
    conf = parse_resolv_conf("# x\nnameserver 198.18.1.2\nnameserver not-an-ip\nnameserver fe80::1%eth0\n"
                             "domain a.test\nsearch lab.test other.test ; comment\n"
                             "options timeout:3 attempts:4 rotate ndots:2\nnameserver 198.18.1.2\n")
    assert conf.nameservers == ("198.18.1.2", "fe80::1%eth0")
    assert (conf.search, conf.timeout, conf.attempts, conf.rotate) == (("lab.test", "other.test"), 3, 4, True)
    default = parse_resolv_conf("nameserver 10.0.0.1\nnameserver 10.0.0.2\n")
    assert (default.timeout, default.attempts) == (5, 2)
    assert default.wait(1) == 5  # the first silent, the second answers: one timeout per lookup
    assert default.wait(2) == 20  # both silent: 5 s x 2 attempts x 2 servers
    assert parse_resolv_conf("options timeout:0 attempts:99\n").timeout == 1


def test_dig_answers_read():
    got = {name: parse_dig(dig(name)) for name in DIG if name != "resolv_conf"}
    assert {n: (a.outcome, a.rcode) for n, a in got.items()} == {
        "unbound_a_nxdomain": ("answer", "NXDOMAIN"), "unbound_mx": ("answer", "NOERROR"),
        "unbound_ptr": ("answer", "NOERROR"), "unbound_refused": ("refused", "REFUSED"),
        "unbound_silent": ("silent", None), "nothing_listens": ("unreachable", None),
        "no_route": ("unreachable", None)}
    assert got["unbound_mx"].recursion is True and got["unbound_mx"].ms is not None
    assert got["unbound_silent"].text == "no reply within 2 s"
    assert got["nothing_listens"].text.endswith("connection refused")
    assert got["no_route"].text.endswith("failed: network unreachable.")
    assert parse_dig(result(("dig",), exit_status=127)).outcome == "missing"
    assert parse_dig(result(("dig",), timed_out=True, exit_status=124)).outcome == "silent"


def test_classify_a_nameserver():
    ok, slow = parse_dig(dig("unbound_mx")), parse_dig(dig("unbound_silent"))
    refused, nothing = parse_dig(dig("unbound_refused")), parse_dig(dig("nothing_listens"))
    assert classify([ok, ok, ok]) == "answering"
    assert classify([ok, ok, slow]) == "slow"  # the PTR waits: each greeting would too
    assert classify([slow] * 3) == "silent"
    assert classify([refused] * 3) == "refusing"
    assert classify([nothing] * 3) == "unreachable"
    assert classify([parse_dig(result(("dig",), exit_status=127))] * 3) == "untested"


def batch(conf: str, *extra: CommandResult, upstream: str | None = None, uname: str = "mx1.lab.test"):
    items = [result(RESOLV, conf), result(UNAME, uname + "\n"),
             result(RESOLVED, upstream or "", 0 if upstream else 1, "" if upstream else "No such file")]
    return results(*items, *extra)


def answered(res: dict, nameserver: str, outcome: str) -> dict:
    """Each question the plan asks `nameserver` answered as the captured `outcome`."""
    for q in plan(res, PROBER).questions:
        res[q.argv(nameserver)] = dig(outcome, q.argv(nameserver))
    return res


def evaluate(res: dict, ports=None):
    inp = make_input(res, ports=ports if ports is not None else base_ports())
    inp = type(inp)(**{**inp.__dict__, "sources": PROBER})
    return Resolver().evaluate(inp)


def test_questions_come_from_the_hosts_name_and_host_derived_names_are_checked():
    res = batch("nameserver 198.18.1.2\n", uname="mail.example.test")
    p = plan(res, PROBER)
    assert [(q.rdtype, q.name) for q in p.questions] == [
        ("A", "mail.example.test"), ("MX", "example.test"), ("PTR", "198.18.3.1")]
    assert p.questions[2].argv("198.18.1.2") == ("dig", "+time=2", "+tries=1", "@198.18.1.2", "-x", "198.18.3.1")
    cmds = Resolver().commands(CheckContext(sources=PROBER, results=res))
    assert len(cmds) == 3 and all(c.argv[3] == "@198.18.1.2" for c in cmds)
    # a node name that dig would read as an option is never asked
    hostile = plan(batch("nameserver 198.18.1.2\nsearch lab.test\n", uname="-h"), PROBER)
    assert [q.name for q in hostile.questions][:2] == ["localhost.lab.test", "lab.test"]
    assert plan(batch("nameserver 198.18.1.2\n", uname="vm"), {}).questions[0].name == "vm"
    assert len(plan(batch("nameserver 198.18.1.2\n", uname="vm"), {}).questions) == 2  # no prober: no PTR


def test_silent_first_nameserver_delays_every_lookup_while_the_second_answers():
    res = batch("nameserver 198.18.9.9\nnameserver 198.18.1.2\noptions timeout:5\n")
    answered(answered(res, "198.18.9.9", "unbound_silent"), "198.18.1.2", "unbound_mx")
    out = evaluate(res)
    assert out.summary == "198.18.9.9 silent, 198.18.1.2 answering"
    [f] = out.findings
    assert (f.code, f.severity) == ("dns.resolver_silent", "warning")  # lookups still succeed
    assert "It comes before 198.18.1.2, which answers: every lookup first waits 5 s on it" in f.summary
    assert out.status == "warn"


def test_systemd_resolved_upstreams_are_asked_too():
    res = batch("nameserver 127.0.0.53\noptions edns0 trust-ad\n", upstream="nameserver 198.18.1.2\n")
    p = plan(res, PROBER)
    assert p.nameservers == ("127.0.0.53", "198.18.1.2") and p.role("198.18.1.2") == "systemd-resolved upstream"
    answered(answered(res, "127.0.0.53", "unbound_refused"), "198.18.1.2", "unbound_refused")
    codes = [(f.code, f.severity) for f in evaluate(res).findings]
    assert codes == [("dns.resolver_refusing", "error"), ("dns.resolver_refusing", "warning")]


def test_no_nameserver_means_127_0_0_1_and_unreadable_or_untestable_is_said():
    res = batch("search lab.test\n")
    assert plan(res, PROBER).nameservers == ("127.0.0.1",)
    answered(res, "127.0.0.1", "nothing_listens")
    out = evaluate(res)
    assert [f.code for f in out.findings] == ["dns.resolver_none", "dns.resolver_unreachable"]
    assert "outbound mail cannot find MX hosts" in out.findings[1].summary

    unread = results(result(RESOLV, "", 1, "cat: /etc/resolv.conf: Permission denied"))
    out = evaluate(unread)
    assert [f.code for f in out.findings] == ["dns.resolver_unknown"] and "Permission denied" in out.evidence
    missing = batch("nameserver 198.18.1.2\n")
    for q in plan(missing, PROBER).questions:
        missing[q.argv("198.18.1.2")] = result(q.argv("198.18.1.2"), exit_status=127)
    assert [f.summary for f in evaluate(missing).findings] == [
        "The host's resolver could not be tested: dig is not installed on the host (the tools step "
        "proposes it)"]


def slow_port(wait="silence", seconds=10.0) -> dict:
    ports = base_ports(("ipv4",))
    key = ("inbound", "ipv4", 25)
    ports[key] = PortStatus(port=25, direction="inbound", outside="open", greeting_time=seconds,
                            greeting_wait=wait)
    return ports


def test_a_slow_greeting_is_tied_to_the_resolver_or_ruled_out():
    res = answered(batch("nameserver 198.18.1.2\n"), "198.18.1.2", "unbound_silent")
    [_, tied] = evaluate(res, slow_port()).findings
    assert tied.code == "dns.resolver_delays_greeting"
    assert tied.summary.startswith("The slow greeting on 25/IPv4 (10.0 s) is the host's resolver: "
                                   "198.18.1.2 does not answer the reverse lookup of 198.18.3.1")
    fine = answered(batch("nameserver 198.18.1.2\n"), "198.18.1.2", "unbound_ptr")
    [ruled_out] = evaluate(fine, slow_port()).findings
    assert (ruled_out.code, ruled_out.severity) == ("dns.resolver_not_greeting_cause", "info")
    assert "a deliberate delay (a tarpit) is more likely" in ruled_out.summary
    assert evaluate(fine, slow_port("pregreet")).findings == []  # postscreen: not the resolver's


def test_a_resolver_without_recursion_cannot_find_other_domains_mx():
    res = batch("nameserver 198.18.1.2\n")
    for q in plan(res, PROBER).questions:  # the lab's own LabResolver: aa, no ra
        res[q.argv("198.18.1.2")] = result(q.argv("198.18.1.2"), DIG["unbound_mx"]["stdout"].replace(
            "flags: qr aa rd ra;", "flags: qr aa rd;"))
    [f] = evaluate(res).findings
    assert f.code == "dns.resolver_not_recursive" and "cannot look up other domains" in f.summary


def test_a_nameserver_that_fails_at_once_is_not_blamed_for_a_slow_greeting():
    """Nothing listens on the first nameserver (captured: connection refused, at once), the
    second answers the PTR at once: glibc goes on to the second without waiting. The step said
    both "lookups through it fail at once" and "the slow greeting is the host's resolver: it
    answers slowly the reverse lookup"."""
    res = batch("nameserver 198.18.3.2\nnameserver 198.18.1.2\n")
    answered(answered(res, "198.18.3.2", "nothing_listens"), "198.18.1.2", "unbound_ptr")
    [unreachable, ruled_out] = evaluate(res, slow_port()).findings
    assert unreachable.code == "dns.resolver_unreachable"
    assert ruled_out.code == "dns.resolver_not_greeting_cause" and "from 198.18.1.2" in ruled_out.summary
    alone = answered(batch("nameserver 198.18.3.2\n"), "198.18.3.2", "nothing_listens")
    assert [f.code for f in evaluate(alone, slow_port()).findings] == [
        "dns.resolver_unreachable", "dns.resolver_not_greeting_cause"]
    behind = batch("nameserver 198.18.3.2\nnameserver 198.18.1.2\n")  # the one it reaches is silent
    answered(answered(behind, "198.18.3.2", "nothing_listens"), "198.18.1.2", "unbound_silent")
    tied = [f for f in evaluate(behind, slow_port()).findings if f.code == "dns.resolver_delays_greeting"]
    assert len(tied) == 1 and "198.18.1.2 does not answer the reverse lookup" in tied[0].summary

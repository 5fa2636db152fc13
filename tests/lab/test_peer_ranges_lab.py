"""Exact sources and destinations on a real host (issue 15 item 4): a deny list is an exception.

A real lab host (real sshd, exim, iptables) keeps a CSF-style deny list,
`-A DENYIN -s RANGE -j DROP` and `-A DENYOUT -d RANGE -j DROP`, for the issue's
192.0.2.0/24 (where the evaluator's old sample address 192.0.2.10 fell: every mail port was
then reported blocked) and for a lab range. The real engine's report must give no "blocked"
verdict outside the ranges, list each range with its rule as an exception, and the kernel
must agree: a connection from (and to) an address inside the lab range is dropped, one from
(and to) an address outside it gets through. The addresses in and out of the range sit on
the prober's side of the host's link (198.18.N.0/24, this host's own lab range), and the
host routes them back through the link; nothing is ever sent to 192.0.2.0/24.
"""

from __future__ import annotations

import socket
import subprocess

import pytest

from bot.engine import Engine
from bot.models import AddressException
from config.inventory import Inventory
from config.settings import Settings
from tests.lab.test_check_guide import PROBE_TIMEOUT, host_of, run_check
from tests.report_checks import contradictions

pytestmark = pytest.mark.lab
ISSUE_RANGE = "192.0.2.0/24"  # only ever in a rule: no packet goes there
MAIL_IN = (25, 465, 587)  # exim's ports; 143/993 have no daemon here (service findings, same verdicts)


def connect_from(source: str, target: str, port: int, timeout: float = 1.5) -> str:
    """A TCP connect from `source` (an address of the root namespace) to the host."""
    with socket.socket() as s:
        s.settimeout(timeout)
        s.bind((source, 0))
        try:
            s.connect((target, port))
            return "open"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "filtered"


def connect_out(host, target: str, port: int, timeout: float = 1.5) -> str:
    """A TCP connect from inside the host to `target`."""
    code = (f"import socket\ns=socket.socket();s.settimeout({timeout!r})\n"
            f"try:\n s.connect(({target!r},{port}));print('open')\n"
            "except ConnectionRefusedError: print('refused')\n"
            "except (TimeoutError, socket.timeout): print('filtered')\n")
    return host.sh("python3", "-c", code, timeout=timeout + 10).stdout.strip()


@pytest.fixture
def deny_listed(labhost):
    """The host with exim and a deny list of 198.18.N.64/26; addresses .70 (in it) and .200 (not)
    on the root namespace's end of the link, each with listeners on 25 and 587 (outbound checks)."""
    h, n = labhost, labhost.index
    deny, inside, outside = f"198.18.{n}.64/26", f"198.18.{n}.70", f"198.18.{n}.200"
    for addr in (inside, outside):
        subprocess.run(["ip", "addr", "add", f"{addr}/32", "dev", h.veth], check=True, capture_output=True)
    h.sh("ip", "route", "add", f"198.18.{n}.0/24", "via", h.outside_ip, "dev", "eth0")
    h.start_exim("public")
    for argv in (["-N", "DENYIN"], ["-N", "DENYOUT"], ["-A", "INPUT", "-j", "DENYIN"],
                 ["-A", "OUTPUT", "-j", "DENYOUT"], ["-A", "DENYIN", "-s", ISSUE_RANGE, "-j", "DROP"],
                 ["-A", "DENYOUT", "-d", ISSUE_RANGE, "-j", "DROP"], ["-A", "DENYIN", "-s", deny, "-j", "DROP"],
                 ["-A", "DENYOUT", "-d", deny, "-j", "DROP"]):
        h.sh("iptables", *argv)
    listeners = []
    for addr in (inside, outside):
        for port in (25, 587):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            s.listen(8)
            listeners.append(s)
    try:
        yield h, deny, inside, outside
    finally:
        for s in listeners:
            s.close()


async def test_a_deny_list_is_an_exception_not_a_block(deny_listed):
    h, deny, inside, outside = deny_listed
    report = await run_check(h)
    ports = {(p.direction, p.port): p for p in report.ports if p.family == "ipv4"}
    in_rules = {r: f"iptables -t filter chain DENYIN rule {i}: -A DENYIN -s {r} -j DROP"
                for i, r in enumerate((ISSUE_RANGE, deny), 1)}
    out_rules = {r: f"iptables -t filter chain DENYOUT rule {i}: -A DENYOUT -d {r} -j DROP"
                 for i, r in enumerate((ISSUE_RANGE, deny), 1)}
    for port in (25, 465, 587, 143, 993):
        p = ports[("inbound", port)]
        assert (p.firewall, p.firewall_general, p.blocked_by) == ("allow", "allow", None), p
        assert p.except_sources == [AddressException(networks=(r,), firewall="block", rule=rule)
                                    for r, rule in in_rules.items()]
    for port in (25, 465, 587):
        p = ports[("outbound", port)]
        assert (p.firewall, p.firewall_general, p.blocked_by) == ("allow", "allow", None), p
        assert p.except_destinations == [AddressException(networks=(r,), firewall="block", rule=rule)
                                         for r, rule in out_rules.items()]
    assert all(p.firewall != "block" for p in report.ports)
    codes = {f.code for f in report.findings}
    assert not codes & {"firewall.inbound_blocked", "firewall.outbound_blocked", "firewall.prober_banned",
                        "firewall.source_specific"}
    summaries = [f.summary for f in report.findings if f.code == "firewall.address_exceptions"]
    for r in (ISSUE_RANGE, deny):
        assert f"Inbound 25/IPv4, 465/IPv4, 587/IPv4, 143/IPv4, 993/IPv4: blocked for {r} ({in_rules[r]}); " \
               "allowed for other addresses" in summaries
        assert f"Outbound 25/IPv4, 465/IPv4, 587/IPv4: blocked to {r} ({out_rules[r]}); allowed for other " \
               "addresses" in summaries
    assert not any("other internet sources" in f.summary for f in report.findings)
    assert contradictions(report) == []
    # the kernel agrees: from (and to) an address in the range dropped, outside it through
    for port in MAIL_IN:
        assert h.probe(port) == "open"  # the prober (198.18.N.1) itself
        assert connect_from(outside, h.ip, port) == "open"
        assert connect_from(inside, h.ip, port) == "filtered"
    assert connect_out(h, outside, 25) == "open"
    assert connect_out(h, inside, 25) == "filtered"


async def test_outbound_to_a_denied_target_is_the_hosts_block_not_the_providers(deny_listed):
    """The outbound step for real (nc from the host): 25 to the address in the deny range times out,
    587 to the one outside it connects. The host firewall's verdict for the target tried is the
    exception's (block): no "blocked outside the host" for 25."""
    h, deny, inside, outside = deny_listed
    settings = Settings(probe_timeout=PROBE_TIMEOUT, connect_timeout=3, _env_file=None,
                        outbound_targets=f"{inside}:25, {outside}:587")
    report = await Engine(settings, Inventory()).check(host_of(h))
    out = {p.port: p for p in report.ports if p.direction == "outbound" and p.family == "ipv4"}
    assert (out[25].outside, out[25].firewall, out[25].firewall_for(inside)) == ("filtered", "allow", "block")
    assert (out[587].outside, out[587].firewall_for(outside)) == ("open", "allow")
    assert not [f for f in report.findings if f.code == "provider.outbound_blocked"]
    assert any(f.code == "firewall.address_exceptions" and f"blocked to {deny}" in f.summary
               and any(k.port == 25 and k.direction == "outbound" for k in f.ports) for f in report.findings)

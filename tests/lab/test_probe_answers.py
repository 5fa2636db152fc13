"""What came back to the outside probes, on real kernels and a real Exim (issue 15, items 1, 2, 9).

- ICMP rejects from the host's own firewall (iptables RHEL default, nft
  `reject with icmpx admin-prohibited`) and from a router namespace between
  the prober and the host: each classified `rejected`, with type, code and
  sender, and attributed to the host or to the path.
- An unanswered neighbour: our own kernel's ICMP is not a reject by anyone.
- Exim behind a resolver that never answers: the greeting comes ~10 s late,
  reported as slow with its duration, never failed within the budget; the
  budget itself is honoured; filtered ports do not wait for it.
- Exim answering plain SMTP on 465 (Debian's default): named as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest

from bot.engine import Engine
from bot.models import Report
from bot.probes import Prober
from config.inventory import Host, Inventory
from config.settings import Settings

pytestmark = pytest.mark.lab
PROBE_TIMEOUT = 1.5
MAIL = "25,465,587,143,993"
RHEL_V4 = [["-A", "INPUT", "-m", "state", "--state", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
           ["-A", "INPUT", "-p", "icmp", "-j", "ACCEPT"],
           ["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
           ["-A", "INPUT", "-p", "tcp", "-m", "state", "--state", "NEW", "-m", "tcp", "--dport", "22",
            "-j", "ACCEPT"],
           ["-A", "INPUT", "-j", "REJECT", "--reject-with", "icmp-host-prohibited"]]


async def run_check(lab, **settings) -> Report:
    s = Settings(**{"probe_timeout": PROBE_TIMEOUT, "connect_timeout": 3, **settings}, _env_file=None)
    host = Host(name=f"mx{lab.index}", address=lab.ip, identity_file=lab.client_key,
                known_hosts=lab.known_hosts)
    return await Engine(s, Inventory()).check(host)


def port(report: Report, number: int, family: str = "ipv4"):
    return next(p for p in report.ports
                if p.direction == "inbound" and p.family == family and p.port == number)


def icmp(report: Report, number: int, family: str = "ipv4") -> tuple | None:
    p = port(report, number, family)
    return (p.outside, p.icmp.name, p.icmp.type, p.icmp.code, p.icmp.sender, p.icmp.by) if p.icmp else p.outside


def found(report: Report, code: str) -> list[str]:
    return [f.summary for f in report.findings if f.code == code]



async def test_rhel_default_reject_is_the_hosts_firewall(labhost):
    """RHEL/CentOS's default iptables ends in REJECT icmp-host-prohibited (ip6tables: adm-prohibited)."""
    labhost.start_exim("public")
    for rule in RHEL_V4:
        labhost.sh("iptables", *rule)
        labhost.sh("ip6tables", *[("icmp6-adm-prohibited" if a == "icmp-host-prohibited" else
                                   "ipv6-icmp" if a == "icmp" else a) for a in rule])
    report = await run_check(labhost)
    for p in (25, 465, 587, 143, 993):
        assert icmp(report, p) == ("rejected", "host-prohibited", 3, 10, labhost.ip, "host")
        assert icmp(report, p, "ipv6") == ("rejected", "admin-prohibited", 1, 1, labhost.ip6, "host")
        assert port(report, p).firewall == "block"  # the evaluator agrees with the kernel's answer
    assert "port.error" not in {f.code for f in report.findings}  # no "cannot be probed: No route to host"
    summaries = found(report, "port.rejected")
    assert f"Port 25/IPv4 is rejected by the host itself ({labhost.ip}, ICMP host-prohibited): " \
           "its firewall rejects it" in summaries
    assert len(summaries) == 10
    assert not found(report, "provider.port_blocked")
    assert port(report, 25).detail == f"ICMP host-prohibited from {labhost.ip} (host)"


async def test_nft_reject_kinds_are_told_apart(labhost):
    """firewalld-style `reject with icmpx admin-prohibited`, nft's default reject (ICMP
    port-unreachable, which the kernel reports as ECONNREFUSED like a RST) and `reject with
    tcp reset` (a real RST): three different answers, three different readings."""
    labhost.start_exim("public", ports=(25, 465, 587))
    ruleset = ("table inet mc { chain input { type filter hook input priority 0; policy accept;\n"
               "  tcp dport 25 reject with icmpx admin-prohibited\n"
               "  tcp dport 587 reject\n"
               "  tcp dport 465 reject with tcp reset\n}\n}\n")
    path = labhost.workdir / "rules.nft"
    path.write_text(ruleset)
    labhost.sh("nft", "-f", str(path))
    prober = Prober(PROBE_TIMEOUT)
    v4, v6 = await asyncio.gather(prober.probe("ipv4", labhost.ip, (25, 587, 465, 143)),
                                  prober.probe("ipv6", labhost.ip6, (25, 587, 465)))
    got = {(p.family, p.port): (p.state, p.icmp.name if p.icmp else None, p.icmp and p.icmp.sender)
           for p in v4.probes + v6.probes}
    assert got == {
        ("ipv4", 25): ("rejected", "admin-prohibited", labhost.ip),
        ("ipv4", 587): ("rejected", "port-unreachable", labhost.ip),
        ("ipv4", 465): ("refused", None, None),
        ("ipv4", 143): ("refused", None, None),  # nothing listens: the kernel's RST
        ("ipv6", 25): ("rejected", "admin-prohibited", labhost.ip6),
        ("ipv6", 587): ("rejected", "port-unreachable", labhost.ip6),
        ("ipv6", 465): ("refused", None, None)}


async def test_router_on_the_path_rejects_and_the_host_rejects_differently(routed):
    """A router namespace rejects 25 (icmp-net-prohibited / ICMPv6 admin-prohibited) in FORWARD;
    the host itself rejects 587 (icmp-host-prohibited / addr-unreachable). Each is attributed to
    its sender; the path reject is the guide's step 5 (a block outside the host)."""
    router = routed.router
    routed.start_exim("public")
    router.sh("iptables", "-A", "FORWARD", "-p", "tcp", "--dport", "25", "-j", "REJECT",
              "--reject-with", "icmp-net-prohibited")
    router.sh("ip6tables", "-A", "FORWARD", "-p", "tcp", "--dport", "25", "-j", "REJECT",
              "--reject-with", "icmp6-adm-prohibited")
    routed.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "587", "-j", "REJECT",
              "--reject-with", "icmp-host-prohibited")
    routed.sh("ip6tables", "-A", "INPUT", "-p", "tcp", "--dport", "587", "-j", "REJECT",
              "--reject-with", "icmp6-addr-unreachable")
    report = await run_check(routed)
    assert icmp(report, 25) == ("rejected", "net-prohibited", 3, 9, router.ip, "path")
    assert icmp(report, 25, "ipv6") == ("rejected", "admin-prohibited", 1, 1, router.ip6, "path")
    assert icmp(report, 587) == ("rejected", "host-prohibited", 3, 10, routed.ip, "host")
    assert icmp(report, 587, "ipv6") == ("rejected", "addr-unreachable", 1, 3, routed.ip6, "host")
    assert port(report, 465).outside == "open"
    assert (port(report, 25).firewall, port(report, 587).firewall) == ("allow", "block")
    assert f"Port 25/IPv4 is rejected before it reaches the host: {router.ip}, a router on the path " \
           "from here (not the host), answered ICMP net-prohibited" in found(report, "port.rejected")
    blocked = [f for f in report.findings if f.code == "provider.port_blocked"]
    assert [f.summary.split(" (")[0] for f in blocked] == ["The provider's network blocks port(s) 25"] * 2
    assert f"a router on the way, {router.ip} answers ICMP net-prohibited" in blocked[0].summary
    assert f"rejected by {router.ip}, a router on the path, not the host" in blocked[0].evidence
    assert all("587" not in f.summary for f in blocked)  # the host's own reject is not the provider's
    assert report.exit_code == 1


async def test_own_kernels_unreachable_is_not_a_reject(labhost):
    """An address on our link that no one answers ARP for: our own kernel reports host-unreachable.
    That says nothing about the host or the path: `error`, not `rejected`."""
    ghost = f"198.18.{labhost.index}.130"
    from tests.labhost import _run
    _run("ip", "route", "add", f"{ghost}/32", "dev", labhost.veth)
    try:
        report = await Prober(5).probe("ipv4", ghost, (25,))
    finally:
        _run("ip", "route", "del", f"{ghost}/32", "dev", labhost.veth, check=False)
    p = report.probes[0]
    assert (p.state, p.icmp.name, p.icmp.sender) == ("error", "host-unreachable", labhost.outside_ip)
    assert p.error.startswith("this machine's own kernel answered ICMP host-unreachable")


@contextlib.contextmanager
def silent_resolver(lab, options: str = ""):
    """The host's resolv.conf names a lab address where a UDP socket takes queries and never answers
    (in place of the host's LabResolver on the same address)."""
    if lab.dns is not None:
        lab.dns.close()
        lab.dns = None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((lab.outside_ip, 53))
    (lab.etc / "resolv.conf").write_text(f"nameserver {lab.outside_ip}\n{options}")
    try:
        yield
    finally:
        sock.close()


async def test_exim_behind_a_silent_resolver_greets_late_and_is_not_failed(labhost):
    """As in the issue: exim's reverse lookup of each client waits on a dead resolver (glibc's
    default 5 s x 2 attempts), so the greeting comes ~10 s late. Reported as slow, with its
    duration, not failed. 465 speaks plain SMTP (Debian's default): named, with the exim setting.
    143/993 are filtered: they cost one probe timeout, not the greeting's wait."""
    with silent_resolver(labhost):
        labhost.start_exim("public")
        labhost.sh("iptables", "-A", "INPUT", "-p", "tcp", "-m", "multiport", "--dports", "143,993",
                   "-j", "DROP")
        t0 = time.monotonic()
        report = await run_check(labhost)
        took = time.monotonic() - t0
    for n in (25, 587):
        p = port(report, n)
        assert p.outside == "open" and 8 <= p.greeting_time <= 13, (n, p.greeting_time)
        assert "STARTTLS offered" in p.detail
    assert 8 <= port(report, 465).greeting_time <= 13
    assert not found(report, "smtp.bad_greeting") and not found(report, "tls.handshake_failed")
    slow = [f for f in report.findings if f.code == "port.slow_greeting" and "IPv4" in f.summary]
    assert len(slow) == 3 and {f.severity for f in slow} == {"warning"}
    s25 = next(f for f in slow if f.summary.startswith("Port 25/IPv4"))
    assert s25.summary.startswith("Port 25/IPv4: the SMTP greeting took ")
    assert " s: the server sent nothing for " in s25.summary
    assert "reverse DNS" in s25.summary and "220 " in s25.evidence
    plain = found(report, "tls.plaintext")
    assert len(plain) == 2 and plain[0].startswith("Port 465/IPv4 speaks plain SMTP ('220 ")
    assert "RFC 8314" in plain[0] and "tls_on_connect_ports = 465" in plain[0] and "postfix" not in plain[0]
    assert port(report, 143).outside == port(report, 993).outside == "filtered"
    # Bounded by what it rules out, not by this busy machine's SSH time (the IPv6 probes start
    # after the facts round trip): each filtered port (143, 993 IPv4) cost one probe timeout
    # (the ports step's own timing), and the check waited neither two greetings one after the
    # other nor the greeting budget (30 s).
    timed = [ln for ln in next(s for s in report.steps if s.name == "ports").evidence.splitlines()
             if " filtered (" in ln]
    assert len(timed) == 2 and all(float(ln.split(" filtered (")[1].split("s,")[0]) < PROBE_TIMEOUT + 1
                                   for ln in timed), timed
    greetings = [port(report, n).greeting_time for n in (25, 465, 587)]
    assert took < min(2 * min(greetings), 30), (took, greetings)
    probes = {s.name: s.status for s in report.steps}
    assert probes["ports"] == "warn"


async def test_greeting_budget_is_honoured(labhost):
    """A greeting later than MAILCHECK_GREETING_TIMEOUT is a failure, and says the budget."""
    with silent_resolver(labhost, "options timeout:4 attempts:1\n"):
        labhost.start_exim("public", ports=(25,))
        t0 = time.monotonic()
        probe = (await Prober(PROBE_TIMEOUT, greeting_timeout=2).probe("ipv4", labhost.ip, (25,))).probes[0]
        took = time.monotonic() - t0
    assert probe.state == "open"
    assert probe.smtp.error == "no complete greeting within 2s (MAILCHECK_GREETING_TIMEOUT)"
    assert probe.smtp.greeting_time is None
    assert 2 <= took < 3.5

"""Lab traffic stays on this machine (../shared/LAB.md, "Keep every lab packet on this
machine"): a lab host's lookups go to a resolver inside the lab and are answered at
once, and nothing it sends to a non-lab address can be routed off the machine.

The kernel is asked with `ip route get` (no packet is sent): inside the host, a non-lab
address has no route; in the root namespace, a packet from the host's link to it is not
forwarded (IPv4: the route lookup itself refuses; IPv6: forwarding is off).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from pathlib import Path

import dns.reversename
import pytest

from tests.labdns import is_lab_address
from tests.labhost import _run

pytestmark = pytest.mark.lab
DOCUMENTATION = ("203.0.113.53", "2001:db8::53")  # stand-ins for "anywhere else"


def off_lab_destinations() -> list[str]:
    """Where a leak would go: this machine's resolvers and gateways, and anywhere else."""
    found = re.findall(r"^\s*nameserver\s+(\S+)", Path("/etc/resolv.conf").read_text(), re.M)
    for family in ("-4", "-6"):
        found += re.findall(r"\bvia (\S+)", _run("ip", family, "route", "show", "default").stdout)
    found += DOCUMENTATION
    keep = []
    for address in dict.fromkeys(found):
        ip = ipaddress.ip_address(address.split("%")[0])
        if not (is_lab_address(address) or ip.is_loopback or ip.is_link_local):
            keep.append(address)
    return keep


def leaks(host) -> list[str]:
    """How a packet from the host to a non-lab address could leave (empty: it cannot)."""
    problems = []
    forward6 = Path("/proc/sys/net/ipv6/conf/all/forwarding").read_text().strip() != "0"
    for dest in off_lab_destinations():
        six = ":" in dest
        family = "-6" if six else "-4"
        inside = host.sh("ip", family, "route", "get", dest, check=False)
        if inside.returncode == 0:
            problems.append(f"{host.ns} has a route to {dest}: {inside.stdout.strip()}")
        src = host.ip6 if six else host.ip
        fwd = _run("ip", family, "route", "get", dest, "from", src, "iif", host.veth, check=False)
        routed = fwd.returncode == 0 and not fwd.stdout.startswith("local ")
        if routed and (forward6 if six else True):
            problems.append(f"this machine forwards {src} -> {dest} off the lab: {fwd.stdout.strip()}")
    return problems


def test_resolv_conf_names_only_lab_resolvers(lab):
    own, other = lab(), lab(resolver="198.18.250.53", ipv6=False)
    for host, want in ((own, own.outside_ip), (other, "198.18.250.53")):
        seen = host.sh("cat", "/etc/resolv.conf").stdout  # what programs in the host read
        servers = re.findall(r"^nameserver\s+(\S+)", seen, re.M)
        assert servers == [want], seen
    assert own.dns is not None and other.dns is None  # a given resolver: none of ours
    with pytest.raises(ValueError, match="not a lab address"):
        lab(resolver="9.9.9.9")


def test_lookups_in_the_host_reach_the_lab_resolver(labhost):
    name = f"mx{labhost.index}.lab.test"
    assert labhost.sh("getent", "ahostsv4", name).stdout.split()[0] == labhost.ip
    assert labhost.sh("getent", "hosts", labhost.outside_ip).stdout.split()[1] == f"outside.{name}"
    t0 = time.monotonic()
    world = labhost.sh("getent", "hosts", "www.example.com", check=False)
    assert world.returncode == 2 and time.monotonic() - t0 < 2  # refused at once, not sent on
    assert ("www.example.com.", "A") in labhost.dns.queries


def test_exim_reverse_lookup_is_answered_in_the_lab(labhost):
    """Exim looks up every client's name: the lab resolver answers, the greeting is prompt."""
    labhost.start_exim("public", ports=(25,))
    t0 = time.monotonic()
    with socket.create_connection((labhost.ip, 25), timeout=10) as s:
        greeting = s.recv(512)
    # Unanswered, the PTR would hold the greeting for resolv.conf's timeout (5 s by default,
    # twice over): well under that, even on a loaded machine (4.6 s seen at load 25).
    assert greeting.startswith(b"220 ") and time.monotonic() - t0 < 5, greeting
    ptr = dns.reversename.from_address(labhost.outside_ip).to_text()
    assert (ptr, "PTR") in labhost.dns.queries


def test_nothing_a_lab_host_sends_can_leave(labhost):
    assert off_lab_destinations()
    assert leaks(labhost) == []


def test_the_leak_check_sees_each_way_out(labhost):
    """Each barrier alone, broken on purpose (never both at once): the check names it."""
    labhost.sh("ip", "route", "add", "default", "via", labhost.outside_ip)
    try:
        assert any(f"{labhost.ns} has a route to 203.0.113.53" in p for p in leaks(labhost))
    finally:
        labhost.sh("ip", "route", "del", "default")
    knob = Path(f"/proc/sys/net/ipv4/conf/{labhost.veth}/forwarding")
    knob.write_text("1")  # this host's own link only; the machine's ip_forward is untouched
    try:
        assert any(f"forwards {labhost.ip} -> 203.0.113.53" in p for p in leaks(labhost))
    finally:
        knob.write_text("0")
    assert leaks(labhost) == []

"""What a whole report may not say: a finding the outside probes contradict.

A finding that a port cannot be reached from outside (blocked by the firewall, a ban, no
daemon, loopback only, a filtered or refused probe; its ports are the PortKeys it lists, else
the ports its text names) is contradicted when the same report's
outside probe found that port open; so is a port whose firewall verdict is "block" while the
probe got in. `contradictions(report)` lists each, naming the finding; lab tests assert it
is empty for every report they make (issue 11: "No report in these labs contains a finding
that the outside probes contradict").
"""

from __future__ import annotations

import re

from bot.models import INBOUND_PORTS, Finding, Report

CLOSED = {  # findings that say the port is not reachable from outside
    "firewall.inbound_blocked", "firewall.prober_banned", "service.down", "service.not_listening",
    "service.loopback_only", "port.filtered", "port.refused", "port.error", "provider.port_blocked",
}
_LABEL = re.compile(r"\b(\d{1,5})/(IPv4|IPv6)\b")
_NUMBER = re.compile(r"(?<![\d./:])(\d{2,5})(?![\d./:])")


def ports_named(text: str) -> set[tuple[int, str | None]]:
    """(port, family) a finding's text names: '25/IPv4' with its family, a bare mail port number
    ('no SMTP (25, 465, 587)') for either family."""
    labelled = {(int(p), "ipv6" if f == "IPv6" else "ipv4") for p, f in _LABEL.findall(text)}
    if labelled:
        return labelled
    return {(int(p), None) for p in _NUMBER.findall(text) if int(p) in INBOUND_PORTS}


def ports_of(f: Finding) -> set[tuple[int, str | None]]:
    """(port, family) of the inbound ports a finding is about: its `ports` where it lists them,
    else the ports its text names."""
    if f.ports:
        return {(k.port, k.family) for k in f.ports if k.direction == "inbound"}
    return ports_named(f.summary)


def contradictions(report: Report) -> list[str]:
    """Each finding or port verdict the outside probes of the same report contradict."""
    open_ports = {(p.port, p.family) for p in report.ports if p.direction == "inbound" and p.outside == "open"}
    out = []
    for f in report.findings:
        if f.code not in CLOSED:
            continue
        hit = sorted(f"{port}/{fam or 'any'}" for port, fam in ports_of(f)
                     if any(port == o and fam in (None, of) for o, of in open_ports))
        if hit:
            out.append(f"{f.code} ({f.step}): {f.summary!r} — yet the outside probe found {', '.join(hit)} open")
    out += [f"port {p.port}/{p.family}: firewall says block ({p.blocked_by}) — yet the outside probe got in"
            for p in report.ports if p.direction == "inbound" and p.outside == "open" and p.firewall == "block"]
    return out

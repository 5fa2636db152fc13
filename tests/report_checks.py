"""What a whole report may not say: a finding the outside probes contradict.

A finding that a port cannot be reached from outside (blocked by the firewall, a ban, no
daemon, loopback only, a stopped container, a filtered or refused probe) is contradicted when
the same report's outside probe found that port open; so is a port whose firewall verdict is
"block" while the probe got in. A finding that a port is served (by a container, through a nat
rule) is contradicted when the probe was refused while the firewall allows it.
`contradictions(report)` lists each, naming the finding; lab tests assert it is empty for
every report they make (issue 11: "No report in these labs contains a finding that the
outside probes contradict").

The ports a finding speaks of: those it declares (`ports`, inbound) and those its summary
names, in the forms the checks write them ('25/IPv4', '25,587 (IPv4, IPv6)', 'port 25',
'no SMTP (25, 465, 587)'); a port named without a family means either.
"""

from __future__ import annotations

import re

from bot.models import INBOUND_PORTS, Finding, PortStatus, Report

CLOSED = {  # findings that say the port is not reachable from outside
    "firewall.inbound_blocked", "firewall.prober_banned", "service.down", "service.not_listening",
    "service.loopback_only", "service.container_down", "port.filtered", "port.refused", "port.error",
    "provider.port_blocked",
}
SERVED = {"service.container", "service.forwarded"}  # findings that say something serves the port
_LABEL = re.compile(r"\b(\d{1,5})/(IPv4|IPv6)\b")
_LISTED = re.compile(r"\b(\d{2,5}(?:\s*,\s*\d{2,5})*)\s*\((IPv[46](?:,\s*IPv[46])*)\)")
_BARE = re.compile(r"\b[Pp]ort (\d{2,5})\b(?![/\d])|\bno (?:SMTP|IMAP) \(([\d, ]+)\)")


def ports_named(text: str) -> set[tuple[int, str | None]]:
    """(port, family) of the mail ports a finding's text names; family None: either."""
    out: set[tuple[int, str | None]] = {(int(p), f.lower()) for p, f in _LABEL.findall(text)}
    for ports, families in _LISTED.findall(text):
        out |= {(int(p), f.lower()) for p in re.findall(r"\d+", ports) for f in re.findall(r"IPv[46]", families)}
    for one, many in _BARE.findall(text):
        out |= {(int(p), None) for p in re.findall(r"\d+", one or many)}
    return {(p, f) for p, f in out if p in INBOUND_PORTS}


def ports_of(f: Finding) -> set[tuple[int, str | None]]:
    return ports_named(f.summary) | {(k.port, k.family) for k in f.ports if k.direction == "inbound"}


def contradictions(report: Report) -> list[str]:
    """Each finding or port verdict the outside probes of the same report contradict."""
    rows = [p for p in report.ports if p.direction == "inbound"]

    def hits(f: Finding, wrong) -> str:
        return ", ".join(sorted({f"{p.port}/{p.family}" for port, fam in ports_of(f) for p in rows
                                 if p.port == port and fam in (None, p.family) and wrong(p)}))

    out = []
    for f in report.findings:
        if f.code in CLOSED and (hit := hits(f, _open)):
            out.append(f"{f.code} ({f.step}): {f.summary!r} — yet the outside probe found {hit} open")
        if f.code in SERVED and (hit := hits(f, _refused_through)):
            out.append(f"{f.code} ({f.step}): {f.summary!r} — yet the outside probe was refused on {hit}, "
                       "which the firewall lets through")
    out += [f"port {p.port}/{p.family}: firewall says block ({p.blocked_by}) — yet the outside probe got in"
            for p in rows if p.outside == "open" and p.firewall == "block"]
    return out


def _open(p: PortStatus) -> bool:
    return p.outside == "open"


def _refused_through(p: PortStatus) -> bool:
    return p.outside == "refused" and p.firewall == "allow"

"""Findings the outside probes contradict: a lab test asserts there are none, on a whole report.

A finding that says a port is not served (a daemon down, nothing listening, loopback only,
a stopped container, a firewall or provider block, filtered or refused) is contradicted
when the outside probe of that port connected. A finding that says a port is served (by a
container, through a nat rule) is contradicted when the probe was refused while the
firewall allows it. The ports a finding speaks of are read from its summary, in the forms
the checks write them: '25/IPv4', 'port 25', 'port(s) 25, 587 (IPv4, IPv6)', 'no SMTP (25,
465, 587)'.
"""

from __future__ import annotations

import re

from bot.models import Report

NOT_SERVED = ("service.down", "service.not_listening", "service.loopback_only", "service.container_down",
              "firewall.inbound_blocked", "provider.port_blocked", "port.filtered", "port.refused")
SERVED = ("service.container", "service.forwarded")
FAMILIES = {"ipv4": "ipv4", "ipv6": "ipv6"}


def ports_of(summary: str) -> set[tuple[int, str]]:
    """(port, family) pairs a finding's summary names; a port without a family means both."""
    out: set[tuple[int, str]] = set()
    for port, fam in re.findall(r"\b(\d{2,3})/IPv([46])\b", summary):
        out.add((int(port), f"ipv{fam}"))
    for group, fams in re.findall(r"[Pp]ort\(s\) ([\d, ]+?)\s*\(((?:IPv[46]|ipv[46])(?:, (?:IPv[46]|ipv[46]))*)\)",
                                  summary):
        for port in re.findall(r"\d+", group):
            out |= {(int(port), f.lower()) for f in re.findall(r"IPv[46]|ipv[46]", fams)}
    bare = re.findall(r"\b[Pp]ort (\d{2,3})\b(?!/)", summary)
    bare += [p for g in re.findall(r"no (?:SMTP|IMAP) \(([\d, ]+)\)", summary) for p in re.findall(r"\d+", g)]
    for port in bare:
        out |= {(int(port), "ipv4"), (int(port), "ipv6")}
    return out


def contradictions(report: Report) -> list[str]:
    outside = {(p.port, p.family): p for p in report.ports if p.direction == "inbound"}
    problems = []
    for f in report.findings:
        for key in sorted(ports_of(f.summary)):
            p = outside.get(key)
            if p is None or p.outside is None:
                continue
            if f.code in NOT_SERVED and p.outside == "open":
                problems.append(f"{f.code} says {key[0]}/{key[1]} is not served, but outside it is "
                                f"open: {f.summary}")
            if f.code in SERVED and p.outside == "refused" and p.firewall == "allow":
                problems.append(f"{f.code} says {key[0]}/{key[1]} is served, but outside it is "
                                f"refused: {f.summary}")
    return problems

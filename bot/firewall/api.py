"""The firewall package's public surface (see bot/firewall/__init__.py).

PROVISIONAL: the evaluator behind it is being built; until then every
verdict is "unknown". The types and signatures here are the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.models import Command, CommandResult, Direction, Family, Finding, FirewallVerdict, Fix


@dataclass(frozen=True)
class AnalysisContext:
    inbound_ports: tuple[int, ...]
    outbound_ports: tuple[int, ...]
    prober_v4: str | None  # source address the outside probe used (IPv4), if probed
    prober_v6: str | None
    host_v4: str | None  # the host address that was probed
    host_v6: str | None
    inbound_iface: str | None = None  # interface holding host_v4 (e.g. eth0)
    families: tuple[Family, ...] = ("ipv4",)
    distro_family: str = "debian"  # debian | rhel | unknown (where rules persist)


@dataclass(frozen=True)
class PortDecision:
    direction: Direction
    family: Family
    port: int
    verdict: FirewallVerdict
    blocked_by: str | None = None  # the deciding rule or policy as the firewall shows it
    path: tuple[str, ...] = ()  # chains/rules walked, for the evidence


@dataclass
class FirewallAnalysis:
    backend: str  # what is in charge: iptables, nftables, ufw, firewalld, none, unknown
    decisions: dict[tuple[Direction, Family, int], PortDecision] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    evidence: str = ""
    errors: list[str] = field(default_factory=list)


def collect_commands() -> list[Command]:
    lang = (("LANG", "C"),)
    return [
        Command(("iptables", "-V")),
        Command(("iptables-save", "-c")),
        Command(("ip6tables-save", "-c")),
        Command(("cat", "/proc/net/ip_tables_names", "/proc/net/ip6_tables_names")),
        Command(("nft", "-j", "list", "ruleset")),
        Command(("ufw", "status", "verbose"), env=lang),
    ]


def analyze(results: Mapping[tuple[str, ...], CommandResult], *, context: AnalysisContext) -> FirewallAnalysis:
    analysis = FirewallAnalysis(backend="unknown")
    for direction, ports in (("inbound", context.inbound_ports), ("outbound", context.outbound_ports)):
        for family in context.families:
            for port in ports:
                analysis.decisions[(direction, family, port)] = PortDecision(direction, family, port, "unknown")
    return analysis

"""The firewall package's public surface: collect, parse everything, analyze.

`collect_commands()` lists the read-only commands (run in the engine's one
batch); `parse_all(results)` turns their output into one Ruleset (iptables-nft
and legacy tables from iptables-save, native nftables tables from nft's JSON,
never the same table twice); `analyze(results, context=...)` gives per-port
verdicts with the deciding rule, findings and fix plans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.firewall import iptables
from bot.firewall.analysis import Endpoints, PortVerdict, findings_for, port_verdict
from bot.firewall.model import Ruleset
from bot.models import Command, CommandResult, Direction, Family, Finding, FirewallVerdict, Fix

Results = Mapping[tuple[str, ...], CommandResult]

IPT_SAVE = ("iptables-save", "-c")
IP6T_SAVE = ("ip6tables-save", "-c")
# Legacy tables (ip_tables module) apply alongside nft's, and iptables-nft-save never shows
# them. iptables-legacy-save only lists the tables that exist: it creates none.
IPT_LEGACY = ("iptables-legacy-save", "-c")
IP6T_LEGACY = ("ip6tables-legacy-save", "-c")
NFT_JSON = ("nft", "-j", "list", "ruleset")
UFW_STATUS = ("ufw", "status", "verbose")
FIREWALLD_STATE = ("firewall-cmd", "--state")


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
    host_addrs: tuple[str, ...] = ()  # every address of the host (addrtype LOCAL)


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
    ruleset: Ruleset | None = None


def collect_commands() -> list[Command]:
    lang = (("LANG", "C"),)
    return [
        Command(("iptables", "-V")),
        Command(IPT_SAVE),
        Command(IP6T_SAVE),
        Command(IPT_LEGACY),
        Command(IP6T_LEGACY),
        Command(NFT_JSON),
        Command(UFW_STATUS, env=lang),
        Command(FIREWALLD_STATE, env=lang),
    ]


def _ok(results: Results, argv: tuple[str, ...]) -> CommandResult | None:
    r = results.get(argv)
    return r if r is not None and r.ok else None


def parse_all(results: Results) -> Ruleset:
    """Every source into one Ruleset; what could not be read goes to problems."""
    merged = Ruleset()
    for argv, legacy_argv, family in ((IPT_SAVE, IPT_LEGACY, "ip"), (IP6T_SAVE, IP6T_LEGACY, "ip6")):
        r = results.get(argv)
        if r is not None and r.ok:
            source = "iptables-legacy" if "(legacy)" in r.stdout.split("\n", 1)[0] else "iptables-nft"
            _merge(merged, iptables.parse_save(r.stdout, family=family, source=source))
            legacy = results.get(legacy_argv)
            if iptables.mentions_legacy(r.stdout + r.stderr) and source == "iptables-nft":
                if legacy is None or not legacy.ok:
                    merged.problems.append(f"{argv[0]}: legacy tables are present but could not be read")
            if legacy is not None and legacy.ok and source == "iptables-nft":
                _merge(merged, iptables.parse_save(legacy.stdout, family=family, source="iptables-legacy"))
        elif r is not None and not r.missing:
            merged.problems.append(f"{argv[0]} failed (exit {r.exit_status}): {r.stderr.strip()[:200]}")
    _merge_nft(merged, results)
    return merged


def _merge(into: Ruleset, part: Ruleset) -> None:
    into.tables += part.tables
    into.problems += part.problems


def _merge_nft(merged: Ruleset, results: Results) -> None:
    r = results.get(NFT_JSON)
    if r is None or r.missing:
        return
    if not r.ok:
        merged.problems.append(f"nft list ruleset failed (exit {r.exit_status}): {r.stderr.strip()[:200]}")
        return
    try:
        from bot.firewall import nft
    except ImportError:  # TEMPORARY until bot/firewall/nft.py lands
        import json

        try:
            tables = {(i["table"]["family"], i["table"]["name"]) for i in json.loads(r.stdout)["nftables"] if "table" in i}
        except (ValueError, KeyError, TypeError):
            tables = {("?", "?")}
        managed = {(t.family, t.name) for t in merged.tables if t.source == "iptables-nft"}
        if tables - managed:
            merged.problems.append(f"native nftables tables not analysed yet: {sorted(tables - managed)}")
        return
    managed = {(t.family, t.name) for t in merged.tables if t.source == "iptables-nft"}
    _merge(merged, nft.parse_nft_json(r.stdout, skip_tables=frozenset(managed)))


def backend_in_charge(results: Results, ruleset: Ruleset) -> str:
    """firewalld or ufw when active; else which of iptables / nftables holds rules."""
    if (r := _ok(results, FIREWALLD_STATE)) and r.stdout.strip() == "running":
        return "firewalld"
    if (r := _ok(results, UFW_STATUS)) and r.stdout.startswith("Status: active"):
        return "ufw"
    kinds = []
    for t in ruleset.tables:
        busy = any(c.rules or (c.policy == "drop") for c in t.chains.values())
        kind = "nftables" if t.source == "nft" else "iptables"
        if busy and kind not in kinds:
            kinds.append(kind)
    return "+".join(sorted(kinds)) or "none"


def _endpoints(context: AnalysisContext, family: Family) -> Endpoints | None:
    host = context.host_v4 if family == "ipv4" else context.host_v6
    if host is None:
        return None
    prober = context.prober_v4 if family == "ipv4" else context.prober_v6
    from bot.firewall.analysis import GENERIC_PEER

    local = frozenset({host, *context.host_addrs, "127.0.0.1", "::1"})
    return Endpoints(host, prober or GENERIC_PEER[family], context.inbound_iface, local)


def port_verdicts(ruleset: Ruleset, context: AnalysisContext) -> list[PortVerdict]:
    out = []
    for family in context.families:
        ends = _endpoints(context, family)
        if ends is None:
            continue
        for direction, ports in (("inbound", context.inbound_ports), ("outbound", context.outbound_ports)):
            for port in ports:
                if direction == "outbound":
                    from bot.firewall.analysis import GENERIC_PEER

                    ends_out = Endpoints(ends.host, GENERIC_PEER[family], ends.iface, ends.local_addrs)
                    out.append(port_verdict(ruleset, (direction, family, port), ends_out))
                else:
                    out.append(port_verdict(ruleset, (direction, family, port), ends))
    return out


def analyze(results: Results, *, context: AnalysisContext) -> FirewallAnalysis:
    ruleset = parse_all(results)
    analysis = FirewallAnalysis(backend=backend_in_charge(results, ruleset), ruleset=ruleset)
    analysis.errors = list(ruleset.problems)
    verdicts = port_verdicts(ruleset, context)
    for v in verdicts:
        d = v.decision
        analysis.decisions[v.key] = PortDecision(*v.key, d.verdict, d.blocked_by, d.path)
    prober = {"ipv4": context.prober_v4, "ipv6": context.prober_v6}
    analysis.findings = findings_for(verdicts, prober)
    analysis.evidence = _evidence(analysis, results)
    return analysis


def _evidence(analysis: FirewallAnalysis, results: Results) -> str:
    lines = [f"firewall in charge: {analysis.backend}"]
    if analysis.ruleset is not None:
        for t in analysis.ruleset.tables:
            chains = [c for c in t.chains.values() if c.rules or c.policy == "drop"]
            if chains:
                lines.append(f"{t.label}: " + ", ".join(
                    f"{c.name}({len(c.rules)} rules{', policy ' + c.policy.upper() if c.policy else ''})"
                    for c in chains))
    lines += [f"problem: {p}" for p in analysis.errors]
    if (r := _ok(results, UFW_STATUS)) and r.stdout.startswith("Status: active"):
        lines.append(r.stdout.strip())
    return "\n".join(lines)

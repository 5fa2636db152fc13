"""The firewall package's public surface: collect, parse everything, analyze.

`collect_commands()` lists the read-only commands (run in the engine's one
batch); `parse_all(results)` (bot/firewall/parse/) turns their output into one
Ruleset; `analyze(results, context=...)` gives per-port verdicts with the
deciding rule, findings and fix plans.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bot.firewall.analysis import GENERIC_PEER, Endpoints, PortVerdict, findings_for, port_verdict
from bot.firewall.model import Ruleset
from bot.firewall.parse import (
    IPT_VERSION,
    NFT_LISTING,
    RULESET_COMMANDS,
    Results,
    firewalld,
    iptables,
    parse_all,
    ufw,
)
from bot.firewall.plan.base import decided_at
from bot.firewall.plan.firewalld import FirewalldPlanner
from bot.firewall.plan.iptables import IptablesPlanner
from bot.firewall.plan.nft import NftPlanner
from bot.firewall.plan.ufw import UfwPlanner
from bot.models import Command, Family, Finding, Fix, PortKey


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


@dataclass
class FirewallAnalysis:
    backend: str  # what is in charge: iptables, nftables, ufw, firewalld, none, unknown
    decisions: dict[PortKey, PortVerdict] = field(default_factory=dict)  # blocked_by in ufw's words
    findings: list[Finding] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    evidence: str = ""
    errors: list[str] = field(default_factory=list)
    ruleset: Ruleset | None = None


def collect_commands() -> list[Command]:
    lang = (("LANG", "C"),)
    return [Command(a) for a in RULESET_COMMANDS] + [
        Command(a, env=lang) for a in (ufw.UFW_STATUS, *firewalld.firewalld_commands())
    ]


def _ok(results: Results, argv: tuple[str, ...]):
    r = results.get(argv)
    return r if r is not None and r.ok else None


def backend_in_charge(results: Results, ruleset: Ruleset) -> str:
    """firewalld or ufw when active; else which of iptables / nftables holds rules."""
    if firewalld.status_from_results(results).running:
        return "firewalld"
    if (r := _ok(results, ufw.UFW_STATUS)) and r.stdout.startswith("Status: active"):
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
    ufw_status = ufw.status_from_results(results)
    analysis.decisions = {v.key: replace(v, blocked_by=_as_ufw_says(v.blocked_by, ufw_status)) for v in verdicts}
    prober = {"ipv4": context.prober_v4, "ipv6": context.prober_v6}
    analysis.findings = findings_for(verdicts, prober)
    blocked = [v for v in verdicts if v.verdict == "block"]
    if blocked and not ruleset.problems:
        fixes, notes = plan_fixes(results, ruleset, blocked, context)
        analysis.fixes = fixes
        _link(analysis.findings, fixes)
        covered = {tuple(k) for f in fixes for k in f.expected_allow}
        uncovered = [v.key for v in blocked if v.key not in covered]
        # A planner's "that table is another planner's" is not news; the rest is, for what no fix opens.
        notes = [n for n in notes if "(see the " not in n] if uncovered else []
        if notes:
            analysis.findings.append(Finding(
                code="firewall.fix_not_planned", severity="info", step="firewall",
                summary="Some blocks have no automatic fix (see evidence): fix them by hand",
                evidence="\n".join(notes)))
    analysis.evidence = _evidence(analysis, results)
    return analysis


def _as_ufw_says(blocked_by: str | None, ufw_status: ufw.UfwStatus) -> str | None:
    """ufw's own words next to the chain policy it set: 'ufw default deny (incoming)'."""
    if not blocked_by or not ufw_status.active or ": policy " not in blocked_by:
        return blocked_by
    for chain, direction, default in (("INPUT", "incoming", ufw_status.default_incoming),
                                      ("OUTPUT", "outgoing", ufw_status.default_outgoing)):
        if blocked_by.endswith(f"of chain {chain}") and default:
            return f"{blocked_by} (ufw default {default} ({direction}))"
    return blocked_by


def plan_fixes(results: Results, ruleset: Ruleset, blocked: list[PortVerdict], context: AnalysisContext
               ) -> tuple[list[Fix], list[str]]:
    """Every backend's planner on the same model; each plan was checked on a copy of it."""
    ends = {f: e for f in context.families if (e := _endpoints(context, f)) is not None}
    version = _ok(results, IPT_VERSION)
    version_text = version.stdout if version else ""
    ufw_status = ufw.status_from_results(results)
    listing = _ok(results, NFT_LISTING)
    ipt = IptablesPlanner(distro_family=context.distro_family,
                          default_source=iptables.default_source(version_text or "nf_tables"),
                          ufw_active=bool(ufw_status.active),
                          save_file_option=iptables.save_has_file_option(version_text))
    ufw_planner = UfwPlanner(ufw_status)
    fwd = FirewalldPlanner(firewalld.status_from_results(results))
    nft = NftPlanner(listing=listing.stdout if listing else None, distro_family=context.distro_family)
    plans = [
        ipt.plan(ruleset, [v.key for v in blocked if (at := decided_at(v)) and ipt.owns(at)], ends),
        ufw_planner.plan(ruleset, [v.key for v in blocked if (at := decided_at(v)) and ufw_planner.owns(at)], ends),
        nft.plan(ruleset, [v.key for v in blocked if (at := decided_at(v)) and nft.owns(at)], ends),
        fwd.plan(ruleset, [v.key for v in blocked if (at := decided_at(v)) and fwd.owns(at)], ends),
    ]
    return [f for p in plans for f in p.fixes], [n for p in plans for n in p.notes]


def _link(findings: list[Finding], fixes: list[Fix]) -> None:
    """A blocked-port finding lists the fixes that open ports in its direction."""
    for finding in findings:
        if finding.code not in ("firewall.inbound_blocked", "firewall.outbound_blocked"):
            continue
        direction = finding.code.split(".")[1].split("_")[0]
        finding.fixes = [f.id for f in fixes if any(k[0] == direction for k in f.expected_allow)]


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
    if (r := _ok(results, ufw.UFW_STATUS)) and r.stdout.startswith("Status: active"):
        lines.append(r.stdout.strip())
    return "\n".join(lines)

"""The firewall package's public surface: collect, parse everything, analyze.

`collect_commands()` lists the read-only commands (run in the engine's one
batch); `parse_all(results)` (bot/firewall/parse/) turns their output into one
Ruleset; `analyze(results, context=...)` gives a PortVerdict per port (the
evaluator's, bot/firewall/analysis.py), findings, and the fixes of the
planners in the registry (bot/firewall/plan/).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bot.firewall.analysis import (
    AnalysisContext,
    PortVerdict,
    findings_for,
    input_bypassed,
    port_verdicts,
)
from bot.firewall.model import Ruleset
from bot.firewall.parse import RULESET_COMMANDS, Results, ok_output, parse_all, routes, ufw
from bot.firewall.plan import Planner, owner_of, planners_for, reads
from bot.firewall.plan.base import decided_at, labels, place
from bot.models import Command, Finding, Fix, PortKey

__all__ = ["AnalysisContext", "FirewallAnalysis", "PortVerdict", "analyze", "collect_commands", "parse_all"]


@dataclass
class FirewallAnalysis:
    backend: str  # what is in charge: iptables, nftables, ufw, firewalld, none, unknown
    decisions: dict[PortKey, PortVerdict] = field(default_factory=dict)  # blocked_by in ufw's words
    findings: list[Finding] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    evidence: str = ""
    errors: list[str] = field(default_factory=list)
    ruleset: Ruleset | None = None


def collect_commands(results: Results | None = None) -> list[Command]:
    """The ruleset's commands, the routes (where a DNAT sends a packet), then what each
    planner of the registry reads: given `results` (what earlier rounds returned), a
    front-end's follow-up reads only once it shows itself running; None: every command."""
    commands = [Command(a) for a in (*RULESET_COMMANDS, *routes.COMMANDS)]
    return commands + [c for c in reads(results) if c not in commands]


def backend_in_charge(planners: list[Planner], ruleset: Ruleset) -> str:
    """The active front-end (ufw, firewalld); else which of iptables / nftables holds rules."""
    frontends = sorted(p.name for p in planners if p.frontend and p.active and getattr(p, "in_charge", True))
    if frontends:
        return "+".join(frontends)
    kinds = []
    for t in ruleset.tables:
        busy = any(c.rules or (c.policy == "drop") for c in t.chains.values())
        kind = "nftables" if t.source == "nft" else "iptables"
        if busy and kind not in kinds:
            kinds.append(kind)
    return "+".join(sorted(kinds)) or "none"


def analyze(results: Results, *, context: AnalysisContext) -> FirewallAnalysis:
    ruleset = parse_all(results)
    context = replace(context, routes_v4=routes.routes_from(results, "ipv4"),
                      routes_v6=routes.routes_from(results, "ipv6"))
    planners = planners_for(results, context)
    analysis = FirewallAnalysis(backend=backend_in_charge(planners, ruleset), ruleset=ruleset)
    analysis.errors = list(ruleset.problems)
    verdicts = port_verdicts(ruleset, context)
    ufw_status = ufw.status_from_results(results)
    analysis.decisions = {v.key: replace(v, blocked_by=_as_ufw_says(v.blocked_by, ufw_status)) for v in verdicts}
    prober = {"ipv4": context.prober_v4, "ipv6": context.prober_v6}
    analysis.findings = findings_for(verdicts, prober, settings(planners, verdicts, context))
    analysis.findings += input_bypassed(ruleset, verdicts)
    analysis.findings += [f for p in planners if p.active for f in p.findings(ruleset)]
    blocked = [v for v in verdicts if v.verdict == "block"]
    if blocked and not ruleset.problems:
        fixes, notes = plan_fixes(planners, ruleset, blocked, context)
        analysis.fixes = fixes
        _link(analysis.findings, fixes)
        covered = {k for f in fixes for k in f.expected_allow}
        if notes and any(v.key not in covered for v in blocked):  # news only for what no fix opens
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


def plan_fixes(planners: list[Planner], ruleset: Ruleset, blocked: list[PortVerdict], context: AnalysisContext
               ) -> tuple[list[Fix], list[str]]:
    """Each blocked port to the one planner that owns the place deciding it; each plan checked on a copy."""
    ends = context.all_endpoints()
    owned: dict[Planner, list[PortKey]] = {p: [] for p in planners}
    notes = []
    for v in blocked:
        if (at := decided_at(v)) is None:
            notes.append(f"{labels([v.key])}: not planned: no deciding rule")
        elif (owner := owner_of(planners, at)) is not None:
            owned[owner].append(v.key)
        else:
            notes.append(f"{labels([v.key])}: not planned: decided in {place(at)}, "
                         "which no mailcheck fix edits on this host")
    plans = [p.plan(ruleset, keys, ends) for p, keys in owned.items() if keys]
    return [f for p in plans for f in p.fixes], notes + [n for p in plans for n in p.notes]


def settings(planners: list[Planner], verdicts: list[PortVerdict], context: AnalysisContext) -> dict[PortKey, str]:
    """Per blocked port, the setting of the manager that owns the deciding place, in its words."""
    ends = context.all_endpoints()
    out = {}
    for v in verdicts:
        at = decided_at(v) if v.verdict == "block" else None
        owner = owner_of(planners, at) if at is not None else None
        if owner is not None and (text := owner.setting(v, ends[v.key.family])):
            out[v.key] = text
    return out


def _link(findings: list[Finding], fixes: list[Fix]) -> None:
    """A blocked-port (or banned-prober) finding lists the fixes that open one of its ports."""
    for finding in findings:
        if finding.code not in ("firewall.inbound_blocked", "firewall.outbound_blocked", "firewall.prober_banned"):
            continue
        finding.fixes = [f.id for f in fixes if set(f.expected_allow) & set(finding.ports)]


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
    lines += [f"published: {k.direction} {k.label} -> DNAT to {v.dnat_to} ({v.delivered.nat_by}); "
              f"{'forwarded (FORWARD decides)' if v.forwarded else 'delivered to this host'}"
              for k, v in analysis.decisions.items() if v.dnat_to and v.delivered]
    if (text := ok_output(results, ufw.UFW_STATUS)) and text.startswith("Status: active"):
        lines.append(text.strip())
    return "\n".join(lines)

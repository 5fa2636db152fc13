"""Guide step 4: what does the host firewall do to each mail port?

Thin: the evaluator in bot.firewall reads the rules and decides; this step
gives it the context (the probed addresses, the prober's source address, the
host's interfaces) and maps its decisions, findings and fixes into the report.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot import firewall
from bot.checks.base import Check, CheckContext, CheckInput, StepOutcome, status_of
from bot.models import INBOUND_PORTS, OUTBOUND_PORTS, Command, PortKey, PortUpdate


class Firewall(Check):
    """Reads the rules over SSH. Not the probes: the verdict is for the prober's source
    address, which the route gives before the probes end (CheckInput.sources)."""

    name = "firewall"
    ssh = "required"

    def commands(self, ctx: CheckContext) -> list[Command]:
        return firewall.collect_commands(ctx.results)

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        return evaluate(inp)


def context(inp: CheckInput) -> firewall.AnalysisContext:
    v4, v6 = inp.addresses.get("ipv4"), inp.addresses.get("ipv6")
    return firewall.AnalysisContext(
        inbound_ports=INBOUND_PORTS,
        outbound_ports=OUTBOUND_PORTS,
        prober_v4=inp.sources.get("ipv4"),
        prober_v6=inp.sources.get("ipv6"),
        host_v4=v4,
        host_v6=v6,
        inbound_iface=inp.facts.iface_of(v4) or inp.facts.iface_of(v6),
        families=tuple(f for f in ("ipv4", "ipv6") if inp.addresses.get(f)),
        distro_family=inp.facts.distro_family,
        host_addrs=tuple(a.address for a in inp.facts.addresses),
    )


def blocked_summary(decisions: Mapping[PortKey, firewall.PortVerdict]) -> str:
    """'2 rules block mail: inbound 25, 143; outbound 25' (ports of either family; a policy
    counts as a rule), or 'no mail port blocked'."""
    parts = []
    for direction in ("inbound", "outbound"):
        ports = sorted({k.port for k, d in decisions.items()
                        if k.direction == direction and d.verdict == "block"})
        if ports:
            parts.append(f"{direction} {', '.join(map(str, ports))}")
    if not parts:
        return "no mail port blocked"
    n = len({d.blocked_by for d in decisions.values() if d.verdict == "block"})
    return f"{n} rule{'s block' if n != 1 else ' blocks'} mail: {'; '.join(parts)}"


def published(d: firewall.PortVerdict) -> str | None:
    """'198.19.8.2:25 (iptables -t nat chain DOCKER rule 3: ...)' for a port nat PREROUTING translates."""
    if d.dnat_to is None or d.delivered is None:
        return None
    return f"{d.dnat_to} ({d.delivered.nat_by})"


def peers(key: PortKey, d: firewall.PortVerdict) -> dict:
    """firewall_general and except_sources (inbound) / except_destinations (outbound): exact ranges."""
    if d.peers is None:
        return {}
    field = "except_sources" if key.direction == "inbound" else "except_destinations"
    listed = None if d.peers.exceptions is None else list(d.peers.exceptions)
    return {"firewall_general": d.peers.general, field: listed}


def evaluate(inp: CheckInput) -> StepOutcome:
    analysis = firewall.analyze(inp.results, context=context(inp))
    ports = {key: PortUpdate(firewall=d.verdict, blocked_by=d.blocked_by, dnat=published(d), **peers(key, d))
             for key, d in analysis.decisions.items()}
    findings = [f.model_copy(update={"step": f.step or Firewall.name}) for f in analysis.findings]
    summary = f"{analysis.backend}, " + blocked_summary(analysis.decisions)
    status = status_of(findings)
    if not analysis.decisions:
        status, summary = "warn", f"{analysis.backend}, no verdicts ({'; '.join(analysis.errors)[:200]})"
    evidence = analysis.evidence
    return StepOutcome(status, summary, evidence, findings, list(analysis.fixes), ports)

"""Guide step 5: the firewall allows it, a daemon listens, yet outside it is filtered.

Outbound too: the host firewall allows a mail port, yet the host's connections to
every outbound target time out or are rejected on the way (bot/checks/outbound.py):
blocked outside the host, with the provider's documented policy when the provider
step recognised it.

Only on that evidence (per port and family: firewall `allow`, listening
`public`, outside `filtered`), or on a reject sent by a router on the path
rather than by the host (outside `rejected`, icmp.by `path`: the packet
never reached the host), does mailcheck say the provider's network blocks
the port, and what to ask them.
"""

from __future__ import annotations

from bot.checks.base import Check, CheckInput, StepOutcome, status_of
from bot.checks.catalogue import finding
from bot.checks.provider import identify
from bot.checks.providers import Provider, policy_text
from bot.models import Finding, PortStatus
from bot.outbound import Target

ASK = ("Open a ticket with your hosting provider: \"Inbound TCP to {addr} on port(s) {ports} "
       "never reaches my server ({why}). Please remove the block on these ports for my "
       "server.\" If they cannot, the guide's advice is to change provider.")
ASK_OUT = ("Ask your hosting provider: \"Outbound TCP from {addr} to port(s) {ports} of other mail "
           "servers never connects, although my server's firewall allows it. Please remove the "
           "block on outbound port(s) {ports} for my server.\"")
SILENT = ("no SYN arrives; the server's firewall allows it and the mail daemon listens on a "
          "public address")


def provider_blocked(p: PortStatus) -> bool:
    return (p.direction == "inbound" and p.firewall == "allow" and p.listening == "public"
            and p.outside == "filtered") or rejected_on_path(p)


def rejected_on_path(p: PortStatus) -> bool:
    return p.direction == "inbound" and p.outside == "rejected" and p.icmp is not None \
        and p.icmp.by == "path"


def _evidence(p: PortStatus) -> str:
    if rejected_on_path(p):
        return (f"port {p.port}/{p.family}: rejected by {p.icmp.sender}, a router on the path, not "
                f"the host (ICMP {p.icmp.name}); host firewall {p.firewall}, listening {p.listening}")
    return (f"port {p.port}/{p.family}: firewall allow, listening public ({p.process or '?'}), "
            "outside filtered")


def _why(ports: list[PortStatus]) -> str:
    routers = sorted({f"{p.icmp.sender} answers ICMP {p.icmp.name}" for p in ports if rejected_on_path(p)})
    return "; ".join(([SILENT] if any(not rejected_on_path(p) for p in ports) else [])
                     + [f"a router on the way, {r}" for r in routers])


class Conclusion(Check):
    name = "conclusion"
    needs = ("services", "ports", "firewall", "outbound", "provider")
    uses_owner = True  # to name the provider (bot.checks.provider.identify)
    required = ("services", "ports", "firewall")  # outbound may be off, the provider unknown

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        missing = [s for s in self.required if s not in inp.prior or inp.prior[s].status in ("error", "skipped")]
        if missing:
            return StepOutcome("skipped", f"no conclusion: step(s) {', '.join(missing)} did not run")
        provider = identify(inp.results, inp.owner).provider
        inbound = [p for p in inp.ports.values() if provider_blocked(p)]
        outbound = [p for p in inp.ports.values() if outbound_blocked(p, inp.outbound or ())]
        findings = inbound_findings(inp, inbound, provider) + outbound_findings(inp, outbound, provider)
        if not findings:
            return StepOutcome("ok", "no sign of a block outside the host")
        return StepOutcome(status_of(findings),
                           f"blocked outside the host: {len(inbound) + len(outbound)} port(s)",
                           "\n".join(f.evidence for f in findings), findings)


def _by_family(ports: list[PortStatus]):
    for family in ("ipv4", "ipv6"):
        mine = sorted((p for p in ports if p.family == family), key=lambda p: p.port)
        if mine:
            yield family, mine, ", ".join(str(p.port) for p in mine)


def inbound_findings(inp: CheckInput, blocked: list[PortStatus], provider: Provider | None) -> list[Finding]:
    at = f" The host runs at {provider.name}." if provider is not None else ""
    return [finding(
        "provider.port_blocked",
        f"The provider's network blocks port(s) {ports} ({family}) before they reach the host. "
        + ASK.format(addr=inp.addresses.get(family, inp.address), ports=ports, why=_why(mine)) + at,
        evidence="\n".join(_evidence(p) for p in mine), ports=[p.key for p in mine])
        for family, mine, ports in _by_family(blocked)]


def outbound_blocked(p: PortStatus, targets: tuple[Target, ...] = ()) -> bool:
    """The host firewall allows it, yet every target timed out or was rejected on the way. Allows
    it to a target actually tried: a target in a range the firewall denies (a deny list, an
    exception to the port's general verdict) was blocked by the host, not outside it."""
    if p.direction != "outbound" or p.outside not in ("filtered", "rejected"):
        return False
    tried = [a for t in targets if t.port == p.port and (a := t.address(p.family))]
    return any(p.firewall_for(a) == "allow" for a in tried) if tried else p.firewall == "allow"


def outbound_findings(inp: CheckInput, blocked: list[PortStatus], provider: Provider | None) -> list[Finding]:
    out = []
    for family, mine, ports in _by_family(blocked):
        how = "; ".join(f"{p.port}: {p.detail}" for p in mine)
        policy = f" {policy_text(provider)}" if provider is not None else \
            " (The provider is not known: the provider step says why.)"
        out.append(finding(
            "provider.outbound_blocked",
            f"Outbound port(s) {ports} ({family}) are blocked outside the host: its firewall allows "
            f"them, but connections to other mail servers never complete ({how}). "
            + ASK_OUT.format(addr=inp.addresses.get(family, inp.address), ports=ports) + policy,
            evidence="\n".join(f"outbound {p.port}/{family}: host firewall allow, outside {p.outside}: "
                               f"{p.detail}" for p in mine),
            ports=[p.key for p in mine], severity="error" if any(p.port == 25 for p in mine) else "warning"))
    return out

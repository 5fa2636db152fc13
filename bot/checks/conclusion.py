"""Guide step 5: the firewall allows it, a daemon listens, yet outside it is filtered.

Only on that evidence (per port and family: firewall `allow`, listening
`public`, outside `filtered`), or on a reject sent by a router on the path
rather than by the host (outside `rejected`, icmp.by `path`: the packet
never reached the host), does mailcheck say the provider's network blocks
the port, and what to ask them.
"""

from __future__ import annotations

from bot.checks.base import Check, CheckInput, StepOutcome
from bot.checks.catalogue import finding
from bot.models import PortStatus

ASK = ("Open a ticket with your hosting provider: \"Inbound TCP to {addr} on port(s) {ports} "
       "never reaches my server ({why}). Please remove the block on these ports for my "
       "server.\" If they cannot, the guide's advice is to change provider.")
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
    needs = ("services", "ports", "firewall")

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        missing = [s for s in self.needs if s not in inp.prior or inp.prior[s].status in ("error", "skipped")]
        if missing:
            return StepOutcome("skipped", f"no conclusion: step(s) {', '.join(missing)} did not run")
        blocked = [p for p in inp.ports.values() if provider_blocked(p)]
        if not blocked:
            return StepOutcome("ok", "no sign of a block outside the host")
        findings = []
        for family in ("ipv4", "ipv6"):
            mine = sorted((p for p in blocked if p.family == family), key=lambda p: p.port)
            if not mine:
                continue
            ports = ", ".join(str(p.port) for p in mine)
            addr = inp.addresses.get(family, inp.address)
            evidence = "\n".join(_evidence(p) for p in mine)
            findings.append(finding(
                "provider.port_blocked",
                f"The provider's network blocks port(s) {ports} ({family}) before they reach the host. "
                + ASK.format(addr=addr, ports=ports, why=_why(mine)),
                evidence=evidence))
        return StepOutcome("fail", f"blocked outside the host: {len(blocked)} port(s)",
                           "\n".join(f.evidence for f in findings), findings)

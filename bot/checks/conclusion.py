"""Guide step 5: the firewall allows it, a daemon listens, yet outside it is filtered.

Only on that evidence (per port and family: firewall `allow`, listening
`public`, outside `filtered`) does mailcheck say the provider's network
blocks the port, and what to ask them.
"""

from __future__ import annotations

from bot.checks.base import Check, CheckInput, StepOutcome
from bot.checks.catalogue import finding
from bot.models import PortStatus

ASK = ("Open a ticket with your hosting provider: \"Inbound TCP to {addr} on port(s) {ports} "
       "never reaches my server (no SYN arrives; the server's firewall allows it and the mail "
       "daemon listens on a public address). Please remove the block on these ports for my "
       "server.\" If they cannot, the guide's advice is to change provider.")


def provider_blocked(p: PortStatus) -> bool:
    return (p.direction == "inbound" and p.firewall == "allow" and p.listening == "public"
            and p.outside == "filtered")


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
            evidence = "\n".join(f"port {p.port}/{family}: firewall allow, listening public "
                                 f"({p.process or '?'}), outside filtered" for p in mine)
            findings.append(finding(
                "provider.port_blocked",
                f"The provider's network blocks port(s) {ports} ({family}) before they reach the host. "
                + ASK.format(addr=addr, ports=ports),
                evidence=evidence, ports=[p.key for p in mine]))
        return StepOutcome("fail", f"blocked outside the host: {len(blocked)} port(s)",
                           "\n".join(f.evidence for f in findings), findings)

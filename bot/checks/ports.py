"""Guide step 3: can the mail ports be reached from outside?

Turns the outside probes (bot.probes) into each inbound port's `outside`
verdict and findings; reads the SMTP and TLS details too (bot.checks.answers:
who rejected, slow greetings, plain text on 465). Outbound is its own step
(bot/checks/outbound.py).

SSH is optional here: when SSH failed, a filtered port cannot be explained (no
firewall, no listeners), so its failing findings become warnings.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from bot.checks import answers
from bot.checks.base import Check, CheckInput, StepOutcome, status_of
from bot.checks.catalogue import finding
from bot.models import Finding, IcmpAnswer, PortKey, PortStatus, PortUpdate
from bot.probes import PortProbe


class Ports(Check):
    name = "ports"
    ssh = "optional"
    uses_probes = True

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        out = inbound(inp)
        return out if inp.ssh_error is None else unexplained(out)


def unexplained(outcome: StepOutcome) -> StepOutcome:
    """Without SSH a filtered port cannot be explained: report it, but as a warning."""
    findings = [f.model_copy(update={"severity": "warning",
                                     "summary": f.summary + " (cause unknown: SSH failed)"})
                if f.severity in ("error", "critical") else f for f in outcome.findings]
    return dataclasses.replace(outcome, findings=findings,
                               status="warn" if outcome.status == "fail" else outcome.status)


def inbound(inp: CheckInput) -> StepOutcome:
    if inp.probes is None:
        return StepOutcome("skipped", "outside probes were not run")
    now = datetime.now(UTC)
    findings: list[Finding] = []
    ports, lines = {}, []
    host_addresses = [a.address for a in inp.facts.addresses]
    for p in sorted(inp.probes.probes, key=lambda p: (p.family, p.port)):
        answer = answers.attribute(p, host_addresses)
        seen = detail(p, answer)
        slow = answers.slow_greeting(p)
        ports[answers.key(p)] = PortUpdate(
            outside=p.state, detail=seen, icmp=answer, greeting_time=greeting_time(p),
            greeting_wait=slow.kind if slow else None,
            plaintext=p.tls.plaintext if p.tls is not None else None)
        lines.append(f"{p.family} {p.address}:{p.port} {p.state}"
                     f" ({p.elapsed:.2f}s, from {p.source or '?'}){' — ' + seen if seen else ''}")
        findings += port_findings(p, now, answer)
        findings += answer_findings(p, inp.ports.get(answers.key(p)))
    counts = {}
    for p in inp.probes.probes:
        counts[p.state] = counts.get(p.state, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing probed"
    return StepOutcome(status_of(findings), summary, "\n".join(lines), findings, ports=ports)


def answer_findings(p: PortProbe, status: PortStatus | None) -> list[Finding]:
    """A slow greeting, plain text on 465/993 (bot.checks.answers). Later steps read them from
    the port's typed fields (greeting_time, greeting_wait, plaintext)."""
    key = answers.key(p)
    return [f.model_copy(update={"ports": [key]})
            for f in (answers.greeting_finding(p, key.label), answers.plaintext_finding(p, key.label, status))
            if f is not None]


def greeting_time(p: PortProbe) -> float | None:
    t = p.smtp.greeting_time if p.smtp else p.tls.handshake_time if p.tls else None
    return round(t, 3) if t is not None else None


def port_findings(p: PortProbe, now: datetime, answer: IcmpAnswer | None = None) -> list[Finding]:
    key = PortKey("inbound", p.family, p.port)
    label = key.label
    sev = "error" if p.port == 25 else None
    ev = f"TCP connect from {p.source or '?'} to {p.address}:{p.port}: {p.state}"
    if p.state == "filtered":
        found = [finding("port.filtered", f"Port {label} is filtered from outside (no answer)",
                         evidence=f"{ev} ({p.error})", severity=sev)]
    elif p.state == "rejected" and answer is not None:
        found = [answers.reject_finding(p, answer, label)]
    elif p.state == "refused":
        found = [finding("port.refused", f"Port {label} refuses connections from outside",
                         evidence=ev, severity=sev)]
    elif p.state == "error":
        found = [finding("port.error", f"Port {label} cannot be probed: {p.error}", evidence=ev,
                         severity=sev)]
    else:
        found = _smtp_findings(p, label) + _tls_findings(p, label, now)
    return [f.model_copy(update={"ports": [key]}) for f in found]


def _smtp_findings(p: PortProbe, label: str) -> list[Finding]:
    s = p.smtp
    if s is None:
        return []
    if s.error:
        return [finding("smtp.bad_greeting", f"Port {label}: {s.error}",
                        evidence=s.greeting or "(no greeting)")]
    if not s.starttls:
        return [finding("smtp.no_starttls", f"Port {label} does not offer STARTTLS",
                        evidence="\n".join(s.ehlo))]
    return []


def _tls_findings(p: PortProbe, label: str, now: datetime) -> list[Finding]:
    t = p.tls
    if t is None or t.plaintext is not None:  # plain text: answers.plaintext_finding
        return []
    if t.error:
        return [finding("tls.handshake_failed", f"Port {label}: {t.error}", evidence=t.error)]
    out = []
    ev = f"subject {t.subject}; issuer {t.issuer}; names {', '.join(t.names)}; expires {t.not_after}"
    if t.self_signed:
        out.append(finding("tls.self_signed", f"Port {label} presents a self-signed certificate",
                           evidence=ev))
    if t.expired(now):
        out.append(finding("tls.expired", f"Port {label}: the certificate expired on {t.not_after}",
                           evidence=ev))
    return out


def detail(p: PortProbe, answer: IcmpAnswer | None = None) -> str | None:
    if answer is not None:
        return f"ICMP {answer.name} from {answer.sender or '?'} ({answer.by})"
    if p.smtp is not None:
        if p.smtp.error:
            return p.smtp.error
        banner = p.smtp.greeting.split("\n")[-1][4:60]
        return f"{banner}; STARTTLS {'offered' if p.smtp.starttls else 'not offered'}"
    if p.tls is not None:
        if p.tls.error:
            return p.tls.error
        exp = p.tls.not_after.date().isoformat() if p.tls.not_after else "?"
        return (f"{p.tls.version} cert {', '.join(p.tls.names) or p.tls.subject} expires {exp}"
                f"{' (self-signed)' if p.tls.self_signed else ''}")
    return None

"""Guide step 3: can the mail ports be reached from outside?

Turns the outside probes (bot.probes) into each inbound port's `outside`
verdict and findings; reads the SMTP and TLS details too. `read_nc_output`
reads the guide's `nc -vz IP PORT` text (Debian's netcat-openbsd and Rocky's
ncat) into the same verdicts.

SSH is optional here: the optional outbound test (`nc -vz` from the host) runs in the
engine's batch when it connects anyway, and when SSH failed, a filtered port cannot be
explained (no firewall, no listeners), so its failing findings become warnings.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from bot.checks.base import Check, CheckContext, CheckInput, StepOutcome, status_of
from bot.checks.catalogue import finding
from bot.models import OUTBOUND_PORTS, Command, Finding, PortKey, PortUpdate
from bot.probes import PortProbe


class Ports(Check):
    name = "ports"
    ssh = "optional"
    uses_probes = True

    def commands(self, ctx: CheckContext) -> list[Command]:
        return outbound_commands(ctx.outbound_target) if ctx.outbound_target else []

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        out = inbound(inp)
        if inp.outbound_target:
            ports, findings, lines = outbound(inp, inp.outbound_target)
            out.ports.update(ports)
            out.findings += findings
            out.evidence = "\n".join(x for x in (out.evidence, *lines) if x)
            if out.status != "skipped":
                out.status = status_of(out.findings)
        return out if inp.ssh_error is None else unexplained(out)


def unexplained(outcome: StepOutcome) -> StepOutcome:
    """Without SSH a filtered port cannot be explained: report it, but as a warning."""
    findings = [f.model_copy(update={"severity": "warning",
                                     "summary": f.summary + " (cause unknown: SSH failed)"})
                if f.severity in ("error", "critical") else f for f in outcome.findings]
    return dataclasses.replace(outcome, findings=findings,
                               status="warn" if outcome.status == "fail" else outcome.status)


def outbound_commands(target: str) -> list[Command]:
    """The optional outbound test: `nc -vz -w 3 TARGET PORT` on the host, per SMTP port."""
    return [Command(outbound_argv(target, p), timeout=6) for p in OUTBOUND_PORTS]


def outbound_argv(target: str, port: int) -> tuple[str, ...]:
    return ("nc", "-vz", "-w", "3", target, str(port))


def read_nc_output(text: str, exit_status: int | None = None) -> str:
    """open | refused | filtered | error from `nc -vz` output (either netcat)."""
    low = text.lower()
    if "succeeded!" in low or "ncat: connected to" in low or " open" in low.split("\n")[0]:
        return "open"
    if "connection refused" in low:
        return "refused"
    if "timed out" in low or "timeout" in low or "operation now in progress" in low:
        return "filtered"
    if exit_status == 0:
        return "open"
    return "error"


def outbound(inp: CheckInput, target: str) -> tuple[dict, list[Finding], list[str]]:
    family = "ipv6" if ":" in target else "ipv4"
    ports, findings, lines = {}, [], []
    for port in OUTBOUND_PORTS:
        r = inp.results.get(outbound_argv(target, port))
        if r is None or r.missing:
            lines.append(f"outbound {port}: not tested (nc {'missing' if r else 'not run'} on the host)")
            continue
        verdict = "filtered" if r.timed_out else read_nc_output(r.stderr + r.stdout, r.exit_status)
        ports[PortKey("outbound", family, port)] = PortUpdate(outside=verdict)
        lines.append(f"$ nc -vz -w 3 {target} {port}  -> {verdict}: {(r.stderr + r.stdout).strip()[:160]}")
        if verdict != "open":
            key = PortKey("outbound", family, port)
            findings.append(finding(
                "port.outbound_failed", f"Outbound {key.label} from the host to {target}: {verdict}",
                evidence=lines[-1], severity="error" if port == 25 else None, ports=[key]))
    return ports, findings, lines


def inbound(inp: CheckInput) -> StepOutcome:
    if inp.probes is None:
        return StepOutcome("skipped", "outside probes were not run")
    now = datetime.now(UTC)
    findings: list[Finding] = []
    ports, lines = {}, []
    for p in sorted(inp.probes.probes, key=lambda p: (p.family, p.port)):
        ports[PortKey("inbound", p.family, p.port)] = PortUpdate(outside=p.state, detail=detail(p))
        lines.append(f"{p.family} {p.address}:{p.port} {p.state}"
                     f" ({p.elapsed:.2f}s, from {p.source or '?'}){' — ' + detail(p) if detail(p) else ''}")
        findings += port_findings(p, now)
    counts = {}
    for p in inp.probes.probes:
        counts[p.state] = counts.get(p.state, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing probed"
    return StepOutcome(status_of(findings), summary, "\n".join(lines), findings, ports=ports)


def port_findings(p: PortProbe, now: datetime) -> list[Finding]:
    key = PortKey("inbound", p.family, p.port)
    label = key.label
    sev = "error" if p.port == 25 else None
    ev = f"TCP connect from {p.source or '?'} to {p.address}:{p.port}: {p.state}"
    if p.state == "filtered":
        found = [finding("port.filtered", f"Port {label} is filtered from outside (no answer)",
                         evidence=f"{ev} ({p.error})", severity=sev)]
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
    if t is None:
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


def detail(p: PortProbe) -> str | None:
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

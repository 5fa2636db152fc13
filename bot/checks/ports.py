"""Guide step 3: can the mail ports be reached from outside?

Turns the outside probes (bot.probes) into each inbound port's `outside`
verdict and findings; reads the SMTP and TLS details too (bot.checks.answers:
who rejected, slow greetings, plain text on 465). Outbound is its own step
(bot/checks/outbound.py).

465 speaking plain SMTP, answered by an MTA not set to speak TLS on connect there, gets the
MTA's configuration fix (plain_465; bot/checks/mta_fixes.py): the listeners and the MTA's
configuration are read in the same SSH batch.

SSH is optional here: when SSH failed, a filtered port cannot be explained (no
firewall, no listeners), so its failing findings become warnings.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from bot.checks import answers, mta_config, mta_fixes
from bot.checks.base import Check, CheckContext, CheckInput, StepOutcome, status_of
from bot.checks.catalogue import finding
from bot.checks.parse import listener_daemon, parse_ps
from bot.checks.services import PS, SS, listeners
from bot.models import Command, Finding, IcmpAnswer, PortKey, PortStatus, PortUpdate
from bot.probes import PortProbe


class Ports(Check):
    name = "ports"
    ssh = "optional"
    uses_probes = True

    def commands(self, ctx: CheckContext) -> list[Command]:
        # who answers 465 and its configuration: the fix when 465 speaks plain SMTP
        return [Command(SS), Command(PS), *mta_config.commands()]

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        out = plain_465(inp, inbound(inp))
        return out if inp.ssh_error is None else unexplained(out)


def plain_465(inp: CheckInput, out: StepOutcome) -> StepOutcome:
    """465 speaking plain SMTP (tls.plaintext, bot/checks/answers.py), answered by an MTA whose
    configuration does not speak TLS on connect there (exim tls_on_connect_ports, postfix
    smtpd_tls_wrappermode): the finding says which setting, and gets the configuration fix
    (bot/checks/mta_fixes.py)."""
    plain = [f for f in out.findings if f.code == "tls.plaintext" and any(k.port == 465 for k in f.ports)]
    ex = tls_on_connect(inp) if plain else None
    if ex is None:
        return out
    out.findings = [f.model_copy(update={"summary": f"{f.summary}. Here: {ex.why}",
                                         "fixes": [ex.fix.id] if ex.fix else []})
                    if f in plain else f for f in out.findings]
    out.fixes = [*out.fixes, *([ex.fix] if ex.fix else [])]
    return out


def tls_on_connect(inp: CheckInput) -> mta_fixes.Explained | None:
    """Why the MTA on 465 does not speak TLS on connect, with the fix (None: not explained)."""
    found, _ = listeners(inp.results)
    r = inp.results.get(PS)
    args = {p.pid: p.args for p in parse_ps(r.stdout)} if r is not None and r.ok else {}
    daemon = next((d for x in found or [] if x.port == 465 and (d := listener_daemon(x, args))), None)
    cfg = mta_config.read_mta_config(inp.results)
    families = sorted({k[1] for k in inp.ports})  # PortKey: (direction, family, port)
    host = mta_fixes.HostView(inp.facts.distro_family, inp.facts.systemd)
    if daemon == "exim" and cfg.exim and 465 not in cfg.exim.tls_on_connect_ports:
        return mta_fixes.exim_tls_on_connect(cfg.exim, inp.results, families, host)
    if daemon == "postfix" and cfg.postfix and not any(
            s.options.get("smtpd_tls_wrappermode") == "yes" for s in cfg.postfix.inet(465)):
        return mta_fixes.postfix_tls_on_connect(cfg.postfix, inp.results, families)
    return None


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

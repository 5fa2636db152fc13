"""Guide step 3: can the mail ports be reached from outside?

Turns the outside probes (bot.probes) into each inbound port's `outside`
verdict and findings; reads the SMTP and TLS details too. `read_nc_output`
reads the guide's `nc -vz IP PORT` text (Debian's netcat-openbsd and Rocky's
ncat) into the same verdicts.

465 whose TLS handshake failed, answered by an MTA not set to speak TLS on connect there,
gets the MTA's configuration fix (plain_465; bot/checks/mta_fixes.py): the listeners and the
MTA's configuration are read in the same SSH batch.

SSH is optional here: the optional outbound test (`nc -vz` from the host) runs in the
engine's batch when it connects anyway, and when SSH failed, a filtered port cannot be
explained (no firewall, no listeners), so its failing findings become warnings.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from bot.checks import mta_config, mta_fixes
from bot.checks.base import Check, CheckContext, CheckInput, StepOutcome, status_of
from bot.checks.catalogue import finding
from bot.checks.parse import listener_daemon, parse_ps
from bot.checks.services import PS, SS, listeners
from bot.models import OUTBOUND_PORTS, Command, Finding, PortKey, PortUpdate
from bot.probes import PortProbe


class Ports(Check):
    name = "ports"
    ssh = "optional"
    uses_probes = True

    def commands(self, ctx: CheckContext) -> list[Command]:
        # who answers 465 and its configuration: the fix when 465 speaks plain SMTP
        mine = [Command(SS), Command(PS), *mta_config.commands()]
        return mine + (outbound_commands(ctx.outbound_target) if ctx.outbound_target else [])

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        out = postscreen_25(inp, plain_465(inp, inbound(inp)))
        if inp.outbound_target:
            ports, findings, lines = outbound(inp, inp.outbound_target)
            out.ports.update(ports)
            out.findings += findings
            out.evidence = "\n".join(x for x in (out.evidence, *lines) if x)
            if out.status != "skipped":
                out.status = status_of(out.findings)
        return out if inp.ssh_error is None else unexplained(out)


def plain_465(inp: CheckInput, out: StepOutcome) -> StepOutcome:
    """465 whose TLS handshake failed, answered by an MTA whose configuration does not speak TLS
    on connect there (exim tls_on_connect_ports, postfix smtpd_tls_wrappermode): it greets in
    plain SMTP where clients expect TLS (RFC 8314). The finding says which setting, and gets
    the configuration fix (bot/checks/mta_fixes.py)."""
    failed = [f for f in out.findings if f.code == "tls.handshake_failed" and " 465/" in f.summary]
    ex = tls_on_connect(inp) if failed else None
    if ex is None:
        return out
    out.findings = [f.model_copy(update={
        "summary": f"{f.summary}: the server speaks plain SMTP on 465 where clients expect TLS "
                   f"(RFC 8314), because {ex.why}", "fixes": [ex.fix.id] if ex.fix else []})
        if f in failed else f for f in out.findings]
    out.fixes = [*out.fixes, *([ex.fix] if ex.fix else [])]
    return out


def postscreen_25(inp: CheckInput, out: StepOutcome) -> StepOutcome:
    """Port 25 answered by Postfix's postscreen (master.cf) whose greeting did not come within
    the probe's timeout: postscreen sends its final 220 only after postscreen_greet_wait, on
    purpose, to a client it has not seen pass. Said so, as information, not as a failure."""
    cfg = mta_config.read_mta_config(inp.results)
    if not (cfg.postfix and any(s.command == "postscreen" for s in cfg.postfix.inet(25))):
        return out
    wait = cfg.postfix.param("postscreen_greet_wait") or "6s"
    slow = [f for f in out.findings if f.code == "smtp.bad_greeting" and " 25/" in f.summary
            and "TimeoutError" in f.summary]
    out.findings = [f.model_copy(update={
        "severity": "info", "summary": f"{f.summary.split(':')[0]}: the final 220 greeting did not come "
        f"within the probe's timeout: port 25 is answered by Postfix's postscreen (master.cf), which "
        f"sends it only after postscreen_greet_wait ({wait}) to a new client, on purpose; real "
        "mail servers wait for it (RFC 5321 allows 5 minutes)"}) if f in slow else f for f in out.findings]
    out.status = status_of(out.findings) if slow and out.status != "skipped" else out.status
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

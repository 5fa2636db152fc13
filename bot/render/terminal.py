"""Report -> text for a terminal (pure). Progress lines go to stderr via the CLI."""

from __future__ import annotations

from bot.models import Report, StepResult

MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "error": "ERR ", "skipped": "skip"}
VERDICT = {"ok": "mail can flow", "broken": "mail cannot flow", "error": "the check could not run"}


def progress_line(step: StepResult) -> str:
    text = f"[{MARK.get(step.status, step.status)}] {step.name}: {step.summary}"
    return text + (f"\n       {step.error}" if step.error else "")


def render(report: Report) -> str:
    lines = [f"mailcheck {report.host} ({report.address}) — {VERDICT[report.verdict]}"
             f" [{report.duration:.1f}s]", ""]
    lines += [progress_line(s) for s in report.steps]
    lines += ["", _ports(report)]
    if report.findings:
        lines += ["", "Findings:"]
        for f in report.findings:
            lines.append(f"  {f.severity.upper():8} {f.code}: {f.summary}")
            lines += [f"           | {e}" for e in f.evidence.splitlines()[:6]]
            if f.fixes:
                lines.append(f"           fixes: {', '.join(f.fixes)}")
    if report.fixes:
        lines += ["", "Fixes (run only after approval):"]
        for fix in report.fixes:
            lines.append(f"  {fix.id}: {fix.summary}")
            lines += [f"    $ {c}" for c in fix.shell_commands]
            lines.append("    rollback: " + ("; ".join(" ".join(c) for c in fix.rollback) or "none"))
    return "\n".join(lines)


def _ports(report: Report) -> str:
    head = f"  {'port':>5} {'dir':8} {'family':6} {'outside':9} {'listening':9} {'firewall':8} process / blocked by"
    rows = [head]
    for p in report.ports:
        exceptions = p.exceptions_text()
        extra = " ".join(x for x in (p.process, f"-> DNAT {p.dnat.split(' ')[0]}" if p.dnat else None,
                                     f"<- {p.blocked_by}" if p.blocked_by else None,
                                     f"(except: {exceptions})" if exceptions else None) if x)
        rows.append(f"  {p.port:>5} {p.direction:8} {p.family:6} {p.outside or '-':9} "
                    f"{p.listening:9} {p.firewall:8} {extra}")
    return "\n".join(rows)

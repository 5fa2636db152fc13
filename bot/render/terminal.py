"""Report -> text for a terminal (pure).

The CLI prints each step's line once, as it arrives (`progress_line`), then the answer
(`render`): the verdict, the causes with their fixes in the same order as Slack
(bot.diagnosis.answer), then the detail: the symptoms and what causes them, notes, other
fixes, the ports. Colour (ANSI) only when asked (the CLI asks when stdout is a terminal and
NO_COLOR is unset). A host's text is printed as text: its control characters (an escape
sequence in a rule comment, say) are shown as \\xNN, never sent to the terminal.
"""

from __future__ import annotations

import re

from bot.diagnosis import Answer, Item, answer, effect
from bot.models import Finding, Fix, Report, StepResult

MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "error": "ERR ", "skipped": "skip"}
VERDICT = {"ok": "mail can flow", "broken": "mail cannot flow", "error": "the check could not run"}
COLOR = {"ok": "32", "warn": "33", "fail": "31", "error": "31", "skipped": "2",
         "info": "2", "warning": "33", "critical": "1;31", "bold": "1", "dim": "2"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """A host's text, safe to print: control characters as \\xNN (newlines and tabs kept)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class _Paint:
    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, text: str, style: str) -> str:
        code = COLOR.get(style, style)
        return f"\x1b[{code}m{text}\x1b[0m" if self.on and code else text


def progress_line(step: StepResult, color: bool = False) -> str:
    paint = _Paint(color)
    mark = paint(f"[{MARK.get(step.status, step.status)}]", step.status)
    text = f"{mark} {step.name}: {clean(step.summary)}"
    return text + (f"\n       {clean(step.error)}" if step.error else "")


def render(report: Report, color: bool = False, steps: bool = False) -> str:
    """The answer; `steps`: with the step lines first (when they were not printed as they came)."""
    paint = _Paint(color)
    a = answer(report)
    lines = [progress_line(s, color) for s in report.steps] + [""] if steps else []
    n = len(a.causes)
    head = f"{report.host} ({report.address or 'DNS only'}): {VERDICT[report.verdict]}"
    if n:
        head += f" · {n} {'cause' if report.verdict == 'broken' else 'warning'}{'s' if n != 1 else ''}"
    lines.append(paint(clean(head), "fail" if report.verdict != "ok" else "ok") + f"  [{report.duration:.1f}s]")
    numbers = {c.id: i for i, c in enumerate(a.causes, 1)}
    lines += _causes(report, a, numbers, paint)
    lines += _rest(report, a, numbers, paint)
    return "\n".join(lines)


def _causes(report: Report, a: Answer, numbers: dict[str, int], paint: _Paint) -> list[str]:
    lines = []
    for item in a.items:
        lines.append("")
        for cause in item.causes:
            lines += _cause(numbers[cause.id], cause, paint)
        if item.fix is not None:
            lines += _fix(report, item, [numbers[c.id] for c in item.causes], paint)
    errors = [s for s in report.steps if s.status == "error"]
    if errors:
        lines.append("")
        lines += [paint(f"  step {s.name} could not run: ", "error") + clean(s.error or s.summary)
                  for s in errors]
    return lines


def _cause(n: int, f: Finding, paint: _Paint) -> list[str]:
    out = [f"{n:>3}. {paint(f'{f.severity.upper():8}', f.severity)}{paint(clean(f.summary), 'bold')}"]
    where = f.evidence.strip().splitlines()[0] if f.evidence.strip() else ""
    if where and where not in f.summary:
        out.append(f"       {clean(where)}")
    if f.ports and not all(str(k.port) in f.summary for k in f.ports):
        out.append(f"       effect: {effect(f.ports)}")
    out += [f"       + {clean(r)}" for r in f.records]  # zone-file lines to paste
    out += [f"       > {clean(a)}" for a in f.advice.splitlines()]  # who changes it, and how
    return out


def _fix(report: Report, item: Item, numbers: list[int], paint: _Paint) -> list[str]:
    fix = item.fix
    which = ", ".join(map(str, numbers))
    out = [f"     {paint('fix', 'ok')} ({which}): {paint(clean(fix.label or fix.summary), 'bold')}"
           f"   mailcheck fix {report.host} {fix.id}"]
    out += [f"       $ {clean(c)}" for c in fix.shell_commands]
    out.append("       rollback: " + (clean("; ".join(" ".join(c) for c in fix.rollback)) or "none"))
    return out


def _rest(report: Report, a: Answer, numbers: dict[str, int], paint: _Paint) -> list[str]:
    lines: list[str] = []
    if a.symptoms:
        lines += ["", f"Symptoms ({len(a.symptoms)}), explained by the causes above:"]
        for f in a.symptoms:
            by = ", ".join(str(numbers.get(c, c)) for c in f.caused_by)
            lines.append(f"  {paint(f.code, 'dim')} {clean(f.summary)}  <- {by}")
    if a.notes:
        lines += ["", "Notes:"]
        lines += [f"  {paint(f'{f.severity:8}', f.severity)}{f.code}: {clean(f.summary)}" for f in a.notes]
    if a.other_fixes:
        lines += ["", "Other fixes (run only after approval):"]
        for fix in a.other_fixes:
            lines += _other_fix(report, fix, paint)
    if report.ports:  # none for a domain checked alone
        lines += ["", "Ports:", _ports(report)]
    return lines


def _other_fix(report: Report, fix: Fix, paint: _Paint) -> list[str]:
    out = [f"  {paint(clean(fix.label or fix.summary), 'bold')}   mailcheck fix {report.host} {fix.id}"]
    return out + [f"    $ {clean(c)}" for c in fix.shell_commands]


def _ports(report: Report) -> str:
    head = f"  {'port':>5} {'dir':8} {'family':6} {'outside':9} {'listening':9} {'firewall':8} process / blocked by"
    rows = [head]
    for p in report.ports:
        exceptions = p.exceptions_text()
        extra = " ".join(x for x in (p.process, f"-> DNAT {p.dnat.split(' ')[0]}" if p.dnat else None,
                                     f"<- {p.blocked_by}" if p.blocked_by else None,
                                     f"(except: {exceptions})" if exceptions else None) if x)
        rows.append(f"  {p.port:>5} {p.direction:8} {p.family:6} {p.outside or '-':9} "
                    f"{p.listening:9} {p.firewall:8} {clean(extra)}")
    return "\n".join(rows)

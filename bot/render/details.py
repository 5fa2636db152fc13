"""The Details modal (pure): everything the message leaves out, per step.

The causes and what they explain, each step's evidence (code blocks, cut into 3000-character
sections), the port table, the notes and the fixes with their exact commands and rollback.
Everything from the host is escaped (bot.render.mrkdwn).
"""

from __future__ import annotations

from slack_sdk.models.blocks import PlainTextObject
from slack_sdk.models.views import View

from bot.diagnosis import answer
from bot.models import Report
from bot.render.blockkit import (
    MAX_MODAL_BLOCKS,
    MODAL_BUDGET,
    SECTION_TEXT,
    SEVERITY_ICON,
    STATUS_ICON,
    context,
    fit,
    header,
    section,
)
from bot.render.mrkdwn import block, md, trim

DETAILS_CALLBACK = "mailcheck_details_view"
FINDING_EVIDENCE = 700


def ports_table(report: Report) -> str:
    lines = []
    for p in report.ports:
        row = f"{p.port:>4}/tcp {p.direction:<8} {p.family:<4} outside={p.outside or '-':<8} " \
              f"listen={p.listening:<8} firewall={p.firewall}"
        if p.process:
            row += f" ({p.process})"
        if p.dnat:
            row += f"  -> DNAT {p.dnat.split(' ')[0]}"
        if p.blocked_by:
            row += f"  <- {p.blocked_by}"
        if (exceptions := p.exceptions_text()) is not None:
            row += f"  (except: {exceptions})"
        lines.append(row)
    return "\n".join(lines)


def _chunks(text: str, n: int) -> list[str]:
    return [text[i : i + n] for i in range(0, len(text), n)] or [""]


def _findings_blocks(report: Report) -> list[dict]:
    a = answer(report)
    by_id = {f.id: f for f in report.findings}
    blocks = []
    for title, group in (("Causes", a.causes), ("Symptoms", a.symptoms), ("Notes", a.notes)):
        for f in group:
            text = md("{} *{}* · `{}`", SEVERITY_ICON.get(f.severity, ""), trim(f.summary, 1000), f.code)
            if f.caused_by:
                text += md("\n_caused by: {}_", "; ".join(by_id[c].summary[:120] for c in f.caused_by
                                                            if c in by_id))
            if f.evidence:  # the step's evidence below has it all
                text += md("\n") + block(f.evidence, FINDING_EVIDENCE)
            blocks.append(section(text))
        if group:
            blocks.insert(len(blocks) - len(group), context(md("*{}* ({})", title, len(group))))
    return blocks


def details_blocks(report: Report) -> list[dict]:
    blocks = [header(f"{report.host} ({report.address})")]
    blocks += _findings_blocks(report)
    blocks.append(context(md("*Steps*")))
    for step in report.steps:
        text = md("{} *{}* · {} · {}", STATUS_ICON.get(step.status, ""), step.name, step.status,
                  trim(step.summary, 1000))
        if step.error:
            text += md("\n*Error:* {}", trim(step.error, 1500))
        blocks.append(section(text))
        for part in _chunks(step.evidence, SECTION_TEXT - 200) if step.evidence else []:
            blocks.append(section(block(part, SECTION_TEXT)))
    if report.ports:
        blocks.append(section(md("*Ports*\n") + block(ports_table(report), SECTION_TEXT - 20)))
    for fix in report.fixes:
        text = md(":wrench: *{}* · {}\n", fix.label or fix.summary, trim(fix.summary, 600))
        text += block("\n".join(fix.shell_commands), SECTION_TEXT - len(text) - 300)
        if fix.rollback:
            text += md("\nrollback: ") + block("\n".join(" ".join(c) for c in fix.rollback), 280)
        blocks.append(section(text))
    return fit(blocks, MAX_MODAL_BLOCKS, MODAL_BUDGET)


def details_modal(report: Report) -> dict:
    """A modal with the full output (as much as a modal may hold)."""
    return View(type="modal", callback_id=DETAILS_CALLBACK,
                title=PlainTextObject(text=trim(f"Details: {report.host}", 24)),
                close=PlainTextObject(text="Close"), blocks=details_blocks(report)).to_dict()


def expired_modal(message: str) -> dict:
    return View(type="modal", title=PlainTextObject(text="mailcheck"),
                close=PlainTextObject(text="Close"), blocks=[section(message)]).to_dict()

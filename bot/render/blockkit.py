"""Report -> Slack Block Kit (pure: no I/O, no clock, no Slack client).

Every message and modal built here holds Slack's limits, whatever the report
holds: at most 50 blocks in a message (100 in a modal), 3000 characters of
section text, 150 of header, 75 of button label, 2000 of button value, 300 of
confirm text, and a total budget (JSON characters of all blocks) well under
the ~13,000 at which Slack answers `msg_blocks_too_long`. A long report is
trimmed (evidence first, then whole blocks), never rejected.

Buttons carry opaque ids only: a fix's plan id, a details id, the inventory
name for a re-check. Action ids: see ACTION_* below (handlers match them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.checks.registry import STEPS
from bot.models import Fix, Report, StepResult

MAX_BLOCKS = 50
MAX_MODAL_BLOCKS = 100
SECTION_TEXT = 3000
HEADER_TEXT = 150
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
CONFIRM_TEXT = 300
MESSAGE_BUDGET = 10_000  # JSON characters of all blocks; Slack refuses at roughly 13,000
MODAL_BUDGET = 24_000
BUTTON_BUDGET = 5_000  # of MESSAGE_BUDGET, for the Apply buttons and their confirm dialogs
FALLBACK_TEXT = 3000  # the `text` of chat.postMessage (notifications, screen readers)

ACTION_APPLY = "mailcheck_apply"  # + "_<n>"; value: plan id
ACTION_RECHECK = "mailcheck_recheck"  # value: inventory name
ACTION_DETAILS = "mailcheck_details"  # value: details id
ACTION_ROLLBACK = "mailcheck_rollback"  # value: change id

STATUS_ICON = {"ok": ":white_check_mark:", "warn": ":warning:", "fail": ":x:",
               "error": ":boom:", "skipped": ":fast_forward:"}
SEVERITY_ICON = {"info": ":information_source:", "warning": ":warning:", "error": ":x:",
                 "critical": ":rotating_light:"}
EVIDENCE_LIMITS = (1500, 700, 300, 120, 0)
MORE = "…"


# --- text helpers ---------------------------------------------------------------
def trim(text: str, limit: int) -> str:
    """At most `limit` characters; a cut is marked with an ellipsis."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(MORE), 0)] + MORE if limit > 0 else ""


def code(text: str, limit: int) -> str:
    """A code block of at most `limit` characters in all (fences included)."""
    body = text.replace("```", "`\u200b``").rstrip("\n") or "(no output)"
    inner = limit - 8
    if inner <= 0:
        return ""
    if len(body) > inner:
        note = f"\n{MORE} ({len(body) - inner} more characters: Show details)"
        body = body[: max(inner - len(note), 0)] + note
    return f"```\n{body}\n```"


def mrkdwn(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=trim(text, SECTION_TEXT))


def section(text: str) -> dict:
    return SectionBlock(text=mrkdwn(text)).to_dict()


def context(text: str) -> dict:
    return ContextBlock(elements=[mrkdwn(trim(text, SECTION_TEXT))]).to_dict()


def header(text: str) -> dict:
    return HeaderBlock(text=PlainTextObject(text=trim(text, HEADER_TEXT), emoji=True)).to_dict()


def size(blocks: Sequence[dict]) -> int:
    return len(json.dumps(blocks, ensure_ascii=False))


# --- fitting --------------------------------------------------------------------
def fit(blocks: list[dict], max_blocks: int = MAX_BLOCKS, budget: int = MESSAGE_BUDGET) -> list[dict]:
    """Drop blocks from the middle (keeping the header and the final actions)
    until both the block count and the character budget hold."""
    tail = [b for b in blocks[-3:] if b.get("type") == "actions"]
    head, body = blocks[:1], blocks[1 : len(blocks) - len(tail)]
    note_room = 1
    dropped = 0
    while body and (len(head) + len(body) + len(tail) + note_room > max_blocks
                    or size(head + body + tail) + 200 > budget):
        body.pop(len(body) // 2)
        dropped += 1
    if dropped:
        body.append(context(f"{MORE} {dropped} more block(s) left out to fit Slack's limits; "
                            "*Show details* has the rest."))
    return head + body + tail


def _with_budget(build, budget: int, max_blocks: int) -> list[dict]:
    for limit in EVIDENCE_LIMITS:
        blocks = build(limit)
        if size(blocks) <= budget and len(blocks) <= max_blocks:
            return blocks
    return fit(blocks, max_blocks, budget)


# --- the message ----------------------------------------------------------------
def _verdict_header(report: Report, running: bool) -> str:
    if running:
        return f":hourglass_flowing_sand: {report.host}: checking…"
    problems = sum(f.severity in ("error", "critical") for f in report.findings)
    return {
        "ok": f":white_check_mark: {report.host}: mail flow looks fine",
        "broken": f":x: {report.host}: broken ({problems} problem{'s' if problems != 1 else ''})",
        "error": f":boom: {report.host}: the check could not finish",
    }[report.verdict]


def _step_blocks(step: StepResult, evidence_limit: int) -> list[dict]:
    icon = STATUS_ICON.get(step.status, ":grey_question:")
    text = f"{icon} *{step.name}* · {step.status} · {step.summary}"
    if step.error:
        text += f"\n*Error:* {step.error}"
    blocks = [section(trim(text, SECTION_TEXT))]
    if step.evidence and evidence_limit:
        blocks.append(section(code(step.evidence, min(evidence_limit, SECTION_TEXT))))
    return blocks


def _pending_text(name: str, running: str | None) -> str:
    if name == running:
        return f":arrows_counterclockwise: *{name}* · running…"
    return f":white_circle: *{name}* · waiting"


def _findings_blocks(report: Report, evidence_limit: int) -> list[dict]:
    blocks = []
    for f in report.findings:
        text = f"{SEVERITY_ICON.get(f.severity, '')} *{f.summary}*"
        if f.evidence and evidence_limit:
            text += "\n" + code(f.evidence, min(evidence_limit, SECTION_TEXT - len(text) - 1))
        blocks.append(section(trim(text, SECTION_TEXT)))
    return blocks


def _ports_text(report: Report) -> str:
    lines = []
    for p in report.ports:
        row = f"{p.port:>4}/tcp {p.direction:<8} {p.family:<4} outside={p.outside or '-':<8} " \
              f"listen={p.listening:<8} firewall={p.firewall}"
        if p.dnat:
            row += f"  -> DNAT {p.dnat.split(' ')[0]}"
        if p.blocked_by:
            row += f"  <- {p.blocked_by}"
        if (exceptions := p.exceptions_text()) is not None:
            row += f"  (except: {exceptions})"
        lines.append(row)
    return "\n".join(lines)


def confirm_for(fix: Fix, host: str) -> ConfirmObject:
    """The confirm dialog: the exact commands, as many as fit in 300 characters."""
    intro = f"On {host}, run exactly:\n"
    cmds = fix.shell_commands
    text = intro
    for i, cmd in enumerate(cmds):
        rest = len(cmds) - i - 1
        tail = f"\n{MORE} and {rest} more (listed in the message)" if rest else ""
        if len(text) + len(cmd) + 1 + len(tail) > CONFIRM_TEXT:
            text = trim(text + f"{MORE} {len(cmds) - i} more command(s), listed in the message",
                        CONFIRM_TEXT)
            break
        text += cmd + "\n"
    return ConfirmObject(title=trim(f"Apply fix on {host}?", 100), text=trim(text.rstrip(), CONFIRM_TEXT),
                         confirm="Apply", deny="Cancel", style="danger")


def _fix_blocks(report: Report, plan_ids: Mapping[str, str], evidence_limit: int) -> list[dict]:
    blocks = []
    for fix in report.fixes:
        if fix.id not in plan_ids:
            continue
        cmds = "\n".join(fix.shell_commands)
        text = f":wrench: *Proposed fix:* {fix.summary}\n" + code(
            cmds, SECTION_TEXT - len(fix.summary) - 40)
        blocks.append(section(trim(text, SECTION_TEXT)))
    return blocks


def _buttons(report: Report, plan_ids: Mapping[str, str], details_id: str | None) -> list[dict]:
    buttons, used = [], 0
    fixes = [f for f in report.fixes if f.id in plan_ids]
    for i, fix in enumerate(fixes):
        button = ButtonElement(
            text=trim(f"Apply: {fix.summary}", BUTTON_TEXT), action_id=f"{ACTION_APPLY}_{i}",
            value=plan_ids[fix.id][:BUTTON_VALUE], style="primary",
            confirm=confirm_for(fix, report.host))
        used += size([button.to_dict()])
        if used > BUTTON_BUDGET or len(buttons) >= 48:
            extra = context(f"{MORE} {len(fixes) - i} more fix(es) have no button here (Slack's "
                            "size limits): apply them one at a time, then Re-check.")
            return [extra] + _actions(buttons, report.host, details_id)
        buttons.append(button)
    return _actions(buttons, report.host, details_id)


def _actions(buttons: list, host: str, details_id: str | None) -> list[dict]:
    buttons.append(ButtonElement(text="Re-check", action_id=ACTION_RECHECK, value=host))
    if details_id:
        buttons.append(ButtonElement(text="Show details", action_id=ACTION_DETAILS, value=details_id))
    # at most 25 elements per actions block; the last block keeps Re-check and details
    chunks = [buttons[i : i + 25] for i in range(0, len(buttons), 25)][-2:]
    return [ActionsBlock(elements=c).to_dict() for c in chunks]


def report_blocks(
    report: Report, plan_ids: Mapping[str, str] | None = None, details_id: str | None = None,
    note: str | None = None,
) -> list[dict]:
    """The finished report: verdict, steps, ports, findings, fixes and buttons
    (a `note`, e.g. why fixes have no button, goes just above the buttons)."""
    plan_ids = plan_ids or {}

    def build(limit: int) -> list[dict]:
        blocks = [header(_verdict_header(report, running=False))]
        blocks.append(context(f"{report.address} · {report.duration:.1f}s · "
                              f"{len(report.findings)} finding(s)"))
        for step in report.steps:
            blocks += _step_blocks(step, limit)
        if report.ports and limit:
            blocks.append(section(code(_ports_text(report), min(limit * 2, SECTION_TEXT))))
        blocks += _findings_blocks(report, limit)
        blocks += _fix_blocks(report, plan_ids, limit)
        if note:
            blocks.append(context(note))
        return blocks + _buttons(report, plan_ids, details_id)

    return _with_budget(build, MESSAGE_BUDGET, MAX_BLOCKS)


def progress_blocks(report: Report, steps: Sequence[str] = STEPS) -> list[dict]:
    """A check in progress, in the steps' order: those done with their status, the rest
    waiting (steps finish in any order: each as soon as its inputs are in)."""
    done = {s.name: s for s in report.steps}
    waiting = [s for s in steps if s not in done]
    running = waiting[0] if waiting else None
    order = [*steps, *(n for n in done if n not in steps)]

    def build(limit: int) -> list[dict]:
        blocks = [header(_verdict_header(report, running=True))]
        for name in order:
            blocks += _step_blocks(done[name], limit) if name in done else \
                [section(_pending_text(name, running))]
        return blocks

    return _with_budget(build, MESSAGE_BUDGET, MAX_BLOCKS)


def error_blocks(host: str, message: str, step: str | None = None, recheck: bool = True) -> list[dict]:
    """The check did not finish: say where and why (never left on "running")."""
    where = f" in step *{step}*" if step else ""
    blocks = [header(f":boom: {host}: the check failed"),
              section(trim(f"The check stopped{where}: {message}", SECTION_TEXT))]
    if recheck:
        blocks.append(ActionsBlock(elements=[ButtonElement(
            text="Re-check", action_id=ACTION_RECHECK, value=host)]).to_dict())
    return fit(blocks)


def fallback_text(report: Report | None, host: str, running: bool = False) -> str:
    if report is None:
        return trim(f"{host}: the check failed", FALLBACK_TEXT)
    return trim(_verdict_header(report, running), FALLBACK_TEXT)


# --- the details modal --------------------------------------------------------------
def _chunks(text: str, n: int) -> list[str]:
    return [text[i : i + n] for i in range(0, len(text), n)] or [""]


def details_blocks(report: Report) -> list[dict]:
    blocks = [header(f"{report.host} ({report.address})")]
    for step in report.steps:
        blocks.append(section(trim(f"*{step.name}* · {step.status} · {step.summary}"
                                   + (f"\n*Error:* {step.error}" if step.error else ""), SECTION_TEXT)))
        for part in _chunks(step.evidence, SECTION_TEXT - 16) if step.evidence else []:
            blocks.append(section(code(part, SECTION_TEXT)))
    if report.ports:
        blocks.append(section(code(_ports_text(report), SECTION_TEXT)))
    for f in report.findings:
        blocks.append(section(trim(f"{SEVERITY_ICON.get(f.severity, '')} *{f.summary}*\n"
                                   + code(f.evidence, SECTION_TEXT - 200), SECTION_TEXT)))
    for fix in report.fixes:
        blocks.append(section(trim(f":wrench: *{fix.summary}*\n"
                                   + code("\n".join(fix.shell_commands), SECTION_TEXT - 200),
                                   SECTION_TEXT)))
    return fit(blocks, MAX_MODAL_BLOCKS, MODAL_BUDGET)


def details_modal(report: Report) -> dict:
    """A modal with the full output (as much as a modal may hold)."""
    return View(type="modal", callback_id="mailcheck_details_view",
                title=PlainTextObject(text=trim(f"Details: {report.host}", 24)),
                close=PlainTextObject(text="Close"), blocks=details_blocks(report)).to_dict()


def expired_modal(message: str) -> dict:
    return View(type="modal", title=PlainTextObject(text="mailcheck"),
                close=PlainTextObject(text="Close"), blocks=[section(message)]).to_dict()


# --- fix outcomes (issue 5): the report message updated in place ---------------------
def _clock(at: float) -> str:
    import time as _time
    return _time.strftime("%H:%M UTC", _time.gmtime(at))


def _ports_rows(ports: Sequence) -> str:
    return "\n".join(f"{p.port:>4}/tcp {p.direction:<8} {p.family:<4} outside={p.outside or '-':<8} "
                     f"listen={p.listening:<8} firewall={p.firewall}" for p in ports)


def before_after_blocks(before: Sequence, after: Sequence) -> list[dict]:
    """Ports/verdicts before vs after a change (PortStatus lists)."""
    blocks = []
    if before:
        blocks.append(section("*Before*\n" + code(_ports_rows(before), 1400)))
    if after:
        blocks.append(section("*After*\n" + code(_ports_rows(after), 1400)))
    return blocks


def _without_button(message_blocks: Sequence[dict], action_id: str, value: str) -> list[dict]:
    """The message's blocks with the used button removed (empty actions blocks dropped)."""
    out = []
    for b in message_blocks:
        if b.get("type") == "actions":
            els = [e for e in b.get("elements", [])
                   if not (e.get("action_id") == action_id or (value and e.get("value") == value))]
            if not els:
                continue
            b = {**b, "elements": els}
        out.append(b)
    return out


def applied_blocks(message_blocks: Sequence[dict], action_id: str, value: str, *, actor: str,
                   at: float, summary: str, status: str, message: str, before: Sequence = (),
                   after: Sequence = (), change_id: str | None = None,
                   offer_rollback: bool = False) -> list[dict]:
    """The report message after an Apply click: the used button replaced by who applied what
    and when, before/after, and a Rollback button when the fix did not have its effect."""
    blocks = _without_button(message_blocks, action_id, value)
    line = f"Applied by <@{actor}> at {_clock(at)}: {summary or 'fix'}"
    if status == "not_achieved":
        line += f"\n:warning: *The fix did not have its expected effect.* {message}"
    extra = [context(line)] + before_after_blocks(before, after)
    if offer_rollback and change_id:
        extra.append(ActionsBlock(elements=[ButtonElement(
            text="Rollback", action_id=ACTION_ROLLBACK, value=change_id, style="danger")]).to_dict())
    return fit(_keep_tail(blocks, extra))


def rolled_back_blocks(message_blocks: Sequence[dict], action_id: str, value: str, *, actor: str,
                       at: float, status: str, message: str, before: Sequence = (),
                       after: Sequence = ()) -> list[dict]:
    blocks = _without_button(message_blocks, action_id, value)
    extra = [context(f"Rolled back by <@{actor}> at {_clock(at)}: {status}. {message}")]
    extra += before_after_blocks(before, after)
    return fit(_keep_tail(blocks, extra))


def _keep_tail(blocks: list[dict], extra: list[dict]) -> list[dict]:
    """Append `extra`, dropping older blocks from the end of the report if over the limits."""
    room = MAX_BLOCKS - len(extra)
    blocks = blocks[:max(room, 0)]
    while blocks and size(blocks + extra) > MESSAGE_BUDGET:
        blocks = blocks[:-1]
    return blocks + extra


def recheck_actions(host: str) -> dict:
    """An actions block with just a Re-check button (expired plan, changed precondition)."""
    return ActionsBlock(elements=[ButtonElement(
        text="Re-check", action_id=ACTION_RECHECK, value=host)]).to_dict()

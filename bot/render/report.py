"""A report as a Slack message that answers first (pure: no I/O, no clock, no client).

    header      the verdict: ":x: mx1: mail cannot flow · 2 causes"
    context     address, duration, how many symptoms the causes explain, notes
    1-5 cause sections, each group beside its fix's button (labelled by what it does:
                "Delete INPUT rule 2 + OUTPUT rule 1"; the commands are in its confirm
                dialog): what, where (the rule, the daemon), the effect on mail
    grid        in/out x IPv4/IPv6: which mail ports work
    actions     Re-check, Details (per-step evidence: the modal), fixes no shown cause has

At most 10 blocks, whatever the report: what does not fit is counted and left to Details.
The causes come from bot.diagnosis, in the order the terminal prints them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from slack_sdk.models.blocks import ConfirmObject, PlainTextObject

from bot.checks.registry import STEPS
from bot.diagnosis import Answer, Item, answer, effect
from bot.models import Finding, Fix, PortStatus, Report, StepResult
from bot.render.blockkit import (
    ACTION_APPLY,
    CONFIRM_TEXT,
    FALLBACK_TEXT,
    MESSAGE_BUDGET,
    SEVERITY_ICON,
    STATUS_ICON,
    actions,
    button,
    context,
    details_button,
    fields,
    fit,
    header,
    recheck_button,
    section,
    size,
)
from bot.render.mrkdwn import MORE, Mrkdwn, esc, md, span, trim

MAX_CAUSES = 5  # cause lines in the message; the rest are counted and left to Details
MAX_MESSAGE_BLOCKS = 10
CAUSE_TEXT = 400  # characters of one cause's summary
MAX_EXTRA_FIXES = 5  # buttons for fixes beside no shown cause


# --- the verdict ----------------------------------------------------------------------
def headline(report: Report, n_causes: int) -> str:
    """':x: mx1: mail cannot flow · 2 causes' (plain text)."""
    plural = "s" if n_causes != 1 else ""
    if report.verdict == "broken":
        return f":x: {report.host}: mail cannot flow · {n_causes} cause{plural}"
    if report.verdict == "error":
        return f":boom: {report.host}: the check could not finish"
    if n_causes:
        return f":warning: {report.host}: mail can flow · {n_causes} warning{plural}"
    return f":white_check_mark: {report.host}: mail can flow"


def fallback_text(report: Report | None, host: str, running: bool = False) -> str:
    """The message's `text` (notifications): the verdict and the first cause, escaped."""
    if running:
        return trim(esc(f"{host}: checking…"), FALLBACK_TEXT)
    if report is None:
        return trim(esc(f"{host}: the check failed"), FALLBACK_TEXT)
    a = answer(report)
    first = f" — {a.causes[0].summary}" if a.causes else ""
    return trim(esc(headline(report, len(a.causes)) + first), FALLBACK_TEXT)


# --- cause lines ------------------------------------------------------------------------
def cause_text(f: Finding) -> Mrkdwn:
    """What (the summary), where (the first line of its evidence: the rule, the unit) and
    the effect on mail when the summary does not already name its ports."""
    text = md("{} *{}*", SEVERITY_ICON.get(f.severity, ""), trim(f.summary, CAUSE_TEXT))
    where = f.evidence.strip().splitlines()[0] if f.evidence.strip() else ""
    if where and where not in f.summary:
        text += md("\n") + span(where, 160)
    if f.ports and not all(str(k.port) in f.summary for k in f.ports):
        text += md("\n_{}_", effect(f.ports))
    return text


def confirm_for(fix: Fix, host: str) -> ConfirmObject:
    """The confirm dialog: what it does and the exact commands, as many as fit (plain text:
    Slack parses no markup in it, whatever a rule's comment says)."""
    head = f"{fix.label or fix.summary} on {host}. Runs exactly:\n"
    cmds = fix.shell_commands
    text = trim(head, CONFIRM_TEXT // 2)
    for i, cmd in enumerate(cmds):
        rest = len(cmds) - i - 1
        tail = f"\n{MORE} and {rest} more (in Details)" if rest else ""
        if len(text) + len(cmd) + 3 + len(tail) > CONFIRM_TEXT:
            if i == 0:  # never a dialog without a command: the first, cut and said to be cut
                note = f"\n(cut: the whole command{'s' if len(cmds) > 1 else ''} in Details)"
                text += "$ " + trim(cmd, CONFIRM_TEXT - len(text) - len(note) - 2) + note
                break
            text += f"{MORE} {len(cmds) - i} more command(s): see Details"
            break
        text += f"$ {cmd}\n"
    return ConfirmObject(title=trim(f"Apply on {host}?", 100),
                         text=PlainTextObject(text=trim(text.rstrip(), CONFIRM_TEXT)),
                         confirm="Apply", deny="Cancel", style="danger")


def fix_button(fix: Fix, plan_id: str, n: int, host: str):
    return button(fix.label or fix.summary, f"{ACTION_APPLY}_{n}", plan_id, style="primary",
                  confirm=confirm_for(fix, host))


def _item_block(item: Item, causes: Sequence[Finding], plan_ids: Mapping[str, str], n: int,
                host: str) -> dict:
    text = Mrkdwn("\n").join(cause_text(c) for c in causes)
    fix = item.fix
    if fix is not None and fix.id in plan_ids:
        return section(text, fix_button(fix, plan_ids[fix.id], n, host))
    if fix is not None:
        text += md("\n_Fix: {}_", fix.label or fix.summary)
    return section(text)


def _error_lines(report: Report) -> list[Mrkdwn]:
    return [md(":boom: *{}* could not run: {}", s.name, trim(s.error or s.summary, CAUSE_TEXT))
            for s in report.steps if s.status == "error"]


# --- the port grid --------------------------------------------------------------------------
def port_state(p: PortStatus) -> str:
    """ok | bad | unknown: outside's answer when probed, else the firewall's verdict."""
    if p.outside is not None:
        return "ok" if p.outside == "open" else "bad"
    if p.firewall == "block":
        return "bad"
    if p.firewall == "allow" and (p.direction == "outbound" or p.listening == "public"):
        return "ok"
    return "unknown"


GRID_ICON = {"ok": ":white_check_mark:", "bad": ":x:", "unknown": ":grey_question:"}


def grid_fields(report: Report) -> list[Mrkdwn]:
    """In/out x IPv4/IPv6: the mail ports that work, fail, or are unknown."""
    out = []
    families = [f for f in ("ipv4", "ipv6") if any(p.family == f for p in report.ports)]
    for direction in ("inbound", "outbound"):
        for family in families:
            mine = [p for p in report.ports if p.direction == direction and p.family == family]
            if not mine:
                continue
            cells = []
            for state in ("bad", "unknown", "ok"):
                ports = " ".join(str(p.port) for p in mine if port_state(p) == state)
                if ports:
                    cells.append(f"{GRID_ICON[state]} {ports}")
            name = f"{'In' if direction == 'inbound' else 'Out'} · {'IPv6' if family == 'ipv6' else 'IPv4'}"
            out.append(md("*{}*  {}", name, Mrkdwn("  ".join(cells))))
    return out


# --- the message ------------------------------------------------------------------------------
def report_blocks(report: Report, plan_ids: Mapping[str, str] | None = None,
                  details_id: str | None = None, note: str | None = None) -> list[dict]:
    """The finished report, answer first (see the module's docstring); `note` (e.g. why the
    fixes have no button) goes just above the buttons."""
    plan_ids = plan_ids or {}
    a = answer(report)
    blocks = [header(headline(report, len(a.causes))), context(_summary_line(report, a))]
    shown, n_buttons = 0, 0
    leftover: list[Fix] = []
    for item in a.items:
        room = MAX_CAUSES - shown
        causes = item.causes[:room]
        if not causes:
            leftover += [item.fix] if item.fix else []
            continue
        blocks.append(_item_block(item, causes, plan_ids, n_buttons, report.host))
        n_buttons += bool(item.fix and item.fix.id in plan_ids)
        shown += len(causes)
    errors = _error_lines(report)
    if errors and shown < MAX_CAUSES:
        blocks.append(section(Mrkdwn("\n").join(errors[: MAX_CAUSES - shown])))
    grid = grid_fields(report)
    if grid:
        blocks.append(fields(grid))
    tail = _tail_note(len(a.causes) - shown, note)
    if tail:
        blocks.append(context(tail))
    extra = [f for f in (*leftover, *a.other_fixes) if f.id in plan_ids][:MAX_EXTRA_FIXES]
    buttons = [recheck_button(report.host)] + ([details_button(details_id)] if details_id else [])
    buttons += [fix_button(f, plan_ids[f.id], n_buttons + i, report.host) for i, f in enumerate(extra)]
    blocks += actions(buttons)
    while size(blocks) > MESSAGE_BUDGET and len(buttons) > 2:  # very long labels: fewer extras
        buttons.pop()
        blocks = blocks[:-1] + actions(buttons)
    return fit(blocks, MAX_MESSAGE_BLOCKS) if size(blocks) > MESSAGE_BUDGET else blocks


def _summary_line(report: Report, a: Answer) -> Mrkdwn:
    parts = [md("{} · {}s", report.address, f"{report.duration:.1f}")]
    if len(report.steps) == 1:  # a one-step check: what that step found
        parts.append(step_line(report.steps[0]))
    elif report.steps:
        parts.append(Mrkdwn(" ").join(md("{} {}", STATUS_ICON.get(s.status, ""), s.name)
                                      for s in report.steps))
    if a.symptoms:
        n = len(a.symptoms)
        parts.append(md("{} symptom{} seen from outside, explained by {}", n, "s" if n != 1 else "",
                        "this cause" if len(a.causes) == 1 else "these causes"))
    if a.notes:
        parts.append(md("{} note{} in Details", len(a.notes), "s" if len(a.notes) != 1 else ""))
    return Mrkdwn(" · ").join(parts)


def _tail_note(hidden: int, note: str | None) -> Mrkdwn | None:
    parts = []
    if hidden > 0:
        parts.append(md("{} and {} more cause{}: *Details* lists them all.", MORE, hidden,
                        "s" if hidden != 1 else ""))
    if note:
        parts.append(esc(note) if not isinstance(note, Mrkdwn) else note)
    return Mrkdwn("\n").join(parts) if parts else None


# --- while the check runs ----------------------------------------------------------------------
def step_line(step: StepResult) -> Mrkdwn:
    """':x: *firewall*: iptables, 2 rules block mail: …' (one line)."""
    text = " ".join(step.summary.split())
    return md("{} *{}*: {}", STATUS_ICON.get(step.status, ":grey_question:"), step.name, trim(text, 240))


def progress_blocks(report: Report, steps: Sequence[str] = STEPS) -> list[dict]:
    """A check in progress, one line per step in the guide's order: those done with what they
    found, the next one running, the rest waiting (steps finish in any order)."""
    done = {s.name: s for s in report.steps}
    waiting = [s for s in steps if s not in done]
    lines = []
    for name in [*steps, *(n for n in done if n not in steps)]:
        if name in done:
            lines.append(step_line(done[name]))
        elif name == waiting[0]:
            lines.append(md(":arrows_counterclockwise: *{}*: running…", name))
        else:
            lines.append(md(":white_circle: *{}*: waiting", name))
    return [header(f":hourglass_flowing_sand: {report.host}: checking…"),
            section(Mrkdwn("\n").join(lines))]


def unposted_blocks(report: Report, details_id: str | None, why: str) -> list[dict]:
    """The check finished but Slack refused its report (`why`): the verdict, that the causes
    are not shown here, and Details (the stored report) when there is one."""
    buttons = [recheck_button(report.host)] + ([details_button(details_id)] if details_id else [])
    return [header(headline(report, len(answer(report).causes))),
            section(md("The check finished, but Slack refused its report ({}), so its causes and "
                       "fix buttons are not shown here. {}", trim(str(why), 200),
                       Mrkdwn("*Details* has the full report.") if details_id
                       else Mrkdwn("Press *Re-check* to try again."))),
            *actions(buttons)]


def error_blocks(host: str, message: str, step: str | None = None, recheck: bool = True) -> list[dict]:
    """The check did not finish: say where and why (never left on "running")."""
    where = md(" in step *{}*", step) if step else Mrkdwn("")
    blocks = [header(f":boom: {host}: the check failed"),
              section(md("The check stopped{}: {}", where, trim(message, 2500)))]
    if recheck:
        blocks += actions([recheck_button(host)])
    return blocks

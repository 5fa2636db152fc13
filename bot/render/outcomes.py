"""Fix outcomes in Slack (pure): what bot.fixes returns (user ids, states, ports) as text
and blocks.

An applied (or not achieved) fix updates the report message in place: the used button
gives way to who applied what and when, the ports before and after, and a Rollback button
when the fix did not have its effect. A rollback does likewise. Other outcomes are a line
of text (ephemeral to the clicker, or in the report's thread), with a Re-check button when
the plan expired or the host changed. A break-glass apply is announced in the channel.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from bot.fixes.outcomes import ApplyOutcome, RollbackOutcome
from bot.fixes.policy import Approvers
from bot.fixes.reconcile import Reconciled
from bot.render.blockkit import (
    ACTION_ROLLBACK,
    MAX_BLOCKS,
    MESSAGE_BUDGET,
    actions,
    button,
    context,
    fit,
    recheck_actions,
    section,
    size,
)
from bot.render.mrkdwn import Mrkdwn, block, md, mention

RECHECK_STATUSES = ("expired", "precondition_changed", "void")


def _clock(at: float | None) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(at or 0))


def approvers_text(who: Approvers | None) -> Mrkdwn:
    """'; approvers: @alice, @ops' (Slack mentions of the ids), or nothing."""
    if not who:
        return Mrkdwn("")
    names = [mention(u) for u in sorted(who.users)]
    names += [Mrkdwn(f"<!subteam^{g}>") if g.isalnum() else md("{}", g) for g in sorted(who.usergroups)]
    return md("; approvers: {}", Mrkdwn(", ").join(names))


# --- text ---------------------------------------------------------------------------
def apply_text(out: ApplyOutcome, clicker: str) -> Mrkdwn:
    """'@bob · Delete INPUT rule 2 on mx1: *refused*. you may not …; approvers: @alice', and
    what is left on the host when it was NOT restored."""
    text = md("{} · {} on {}: *{}*. {}", mention(clicker), out.summary or "fix", out.host or "?",
              out.status, out.message) + approvers_text(out.approvers)
    if out.left:
        text += md("\nLeft on the host:\n") + block(out.left, 1200)
    return text


def applied_text(out: ApplyOutcome, clicker: str) -> Mrkdwn:
    """The updated message's notification text."""
    return md("Applied by {}: {} on {} ({})", mention(out.actor or clicker), out.summary or "fix",
              out.host or "?", out.status)


def rollback_text(out: RollbackOutcome, clicker: str) -> Mrkdwn:
    return md("{} · rollback on {}: *{}*. {}", mention(clicker), out.host or "?", out.status,
              out.message) + approvers_text(out.approvers)


def break_glass_text(out: ApplyOutcome) -> Mrkdwn:
    return md(":rotating_light: BREAK-GLASS by {} on {}: {}. Reason: {}", mention(out.actor),
              out.host, out.summary, out.break_glass_reason or "")


def reply_blocks(text: Mrkdwn, recheck_host: str | None) -> list[dict] | None:
    """Blocks for a reply that offers a Re-check (None: the text alone)."""
    return [section(text), recheck_actions(recheck_host)] if recheck_host else None


def recheck_host(out: ApplyOutcome) -> str | None:
    return out.host if out.host and (out.offer_recheck or out.status in RECHECK_STATUSES) else None


# --- the report message, updated in place ---------------------------------------------------
def _ports_rows(ports: Sequence) -> str:
    return "\n".join(f"{p.port:>4}/tcp {p.direction:<8} {p.family:<4} outside={p.outside or '-':<8} "
                     f"listen={p.listening:<8} firewall={p.firewall}" for p in ports)


def before_after_blocks(before: Sequence, after: Sequence) -> list[dict]:
    """Ports/verdicts before vs after a change (PortStatus lists)."""
    blocks = []
    if before:
        blocks.append(section(md("*Before*\n") + block(_ports_rows(before), 1400)))
    if after:
        blocks.append(section(md("*After*\n") + block(_ports_rows(after), 1400)))
    return blocks


def reconciled_text(r: Reconciled) -> Mrkdwn:
    """What a restart found about an apply that stopped; the host's text (rulesets) escaped."""
    change = f", change {r.change_id}" if r.change_id else ""
    return md(":warning: mailcheck stopped during a fix on {} (plan {}{}) and re-read the host "
              "at its restart: *{}*. {}", r.host, r.plan_id, change, r.status, r.message)


def _without_button(message_blocks: Sequence[dict], action_id: str, value: str) -> list[dict]:
    """The message's blocks with the used button removed (a section keeps its text, an empty
    actions block goes)."""
    def used(e: dict | None) -> bool:
        return bool(e) and (e.get("action_id") == action_id or bool(value and e.get("value") == value))

    out = []
    for b in message_blocks:
        if b.get("type") == "actions":
            els = [e for e in b.get("elements", []) if not used(e)]
            if not els:
                continue
            b = {**b, "elements": els}
        elif b.get("type") == "section" and used(b.get("accessory")):
            b = {k: v for k, v in b.items() if k != "accessory"}
        out.append(b)
    return out


def applied_blocks(message_blocks: Sequence[dict], action_id: str, value: str, out: ApplyOutcome,
                   clicker: str) -> list[dict]:
    """The report message after an Apply click: the used button replaced by who applied what
    and when, before/after, and a Rollback button when the fix did not have its effect."""
    blocks = _without_button(message_blocks, action_id, value)
    line = md("Applied by {} at {}: {}", mention(out.actor or clicker), _clock(out.at),
              out.summary or "fix")
    if out.status == "not_achieved":
        line += md("\n:warning: *The fix did not have its expected effect.* {}", out.message)
    extra = [context(line)] + before_after_blocks(out.before.ports, out.after.ports)
    if (out.offer_rollback or out.status == "not_achieved") and out.change_id:
        extra += actions([button("Rollback", ACTION_ROLLBACK, out.change_id, style="danger")])
    return fit(_keep_tail(blocks, extra))


def rolled_back_blocks(message_blocks: Sequence[dict], action_id: str, value: str,
                       out: RollbackOutcome, clicker: str) -> list[dict]:
    blocks = _without_button(message_blocks, action_id, value)
    extra = [context(md("Rolled back by {} at {}: {}. {}", mention(out.actor or clicker),
                        _clock(out.at), out.status, out.message))]
    extra += before_after_blocks(out.before.ports, out.after.ports)
    return fit(_keep_tail(blocks, extra))


def _keep_tail(blocks: list[dict], extra: list[dict]) -> list[dict]:
    """Append `extra`, dropping older blocks from the end of the report if over the limits."""
    room = MAX_BLOCKS - len(extra)
    blocks = blocks[:max(room, 0)]
    while blocks and size(blocks + extra) > MESSAGE_BUDGET:
        blocks = blocks[:-1]
    return blocks + extra

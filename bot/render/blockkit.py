"""Block Kit building blocks (pure), on slack_sdk's models, within Slack's limits.

Every message and modal built from these holds Slack's limits whatever a report holds: at
most 50 blocks in a message (100 in a modal), 3000 characters of section text, 150 of header,
75 of button label, 2000 of button value, 300 of confirm text, and a total (JSON characters
of all blocks) well under the ~13,000 at which Slack answers `msg_blocks_too_long`.

mrkdwn text goes through bot.render.mrkdwn.esc: a host's text is escaped, only a renderer's
own template (a `Mrkdwn`) is markup. Plain text (headers, button labels, confirm dialogs) is
never parsed by Slack for mentions or links, and is not escaped.

Buttons carry opaque ids only: a fix's plan id, a report id, the inventory name for a
re-check. Action ids: ACTION_* below (the listeners match them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

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

from bot.render.mrkdwn import MORE, esc, md, trim

MAX_BLOCKS = 50
MAX_MODAL_BLOCKS = 100
SECTION_TEXT = 3000
FIELD_TEXT = 2000
HEADER_TEXT = 150
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
CONFIRM_TEXT = 300
MESSAGE_BUDGET = 10_000  # JSON characters of all blocks; Slack refuses at roughly 13,000
MODAL_BUDGET = 24_000
FALLBACK_TEXT = 3000  # the `text` of chat.postMessage (notifications, screen readers)

ACTION_APPLY = "mailcheck_apply"  # + "_<n>"; value: plan id
ACTION_RECHECK = "mailcheck_recheck"  # value: inventory name
ACTION_DETAILS = "mailcheck_details"  # value: report id
ACTION_ROLLBACK = "mailcheck_rollback"  # value: change id

STATUS_ICON = {"ok": ":white_check_mark:", "warn": ":warning:", "fail": ":x:",
               "error": ":boom:", "skipped": ":fast_forward:"}
SEVERITY_ICON = {"info": ":information_source:", "warning": ":warning:", "error": ":x:",
                 "critical": ":rotating_light:"}


# --- blocks -----------------------------------------------------------------------
def mrkdwn(text: str, limit: int = SECTION_TEXT) -> MarkdownTextObject:
    return MarkdownTextObject(text=trim(esc(text), limit))


def section(text: str, accessory: ButtonElement | None = None) -> dict:
    return SectionBlock(text=mrkdwn(text), accessory=accessory).to_dict()


def fields(texts: Sequence[str]) -> dict:
    """A section of up to 10 short fields (two columns in Slack)."""
    return SectionBlock(fields=[mrkdwn(t, FIELD_TEXT) for t in texts[:10]]).to_dict()


def context(text: str) -> dict:
    return ContextBlock(elements=[mrkdwn(text)]).to_dict()


def header(text: str) -> dict:
    return HeaderBlock(text=PlainTextObject(text=trim(text, HEADER_TEXT), emoji=True)).to_dict()


def button(text: str, action_id: str, value: str, *, style: str | None = None,
           confirm: ConfirmObject | None = None) -> ButtonElement:
    return ButtonElement(text=trim(text, BUTTON_TEXT), action_id=action_id,
                         value=value[:BUTTON_VALUE], style=style, confirm=confirm)


def actions(buttons: Sequence[ButtonElement]) -> list[dict]:
    """At most 25 elements per actions block."""
    return [ActionsBlock(elements=list(buttons[i : i + 25])).to_dict()
            for i in range(0, len(buttons), 25)]


def recheck_button(host: str) -> ButtonElement:
    return button("Re-check", ACTION_RECHECK, host)


def details_button(report_id: str) -> ButtonElement:
    return button("Details", ACTION_DETAILS, report_id)


def recheck_actions(host: str) -> dict:
    """An actions block with just a Re-check button (expired plan, changed precondition)."""
    return actions([recheck_button(host)])[0]


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
        body.append(context(md("{} {} more block(s) left out to fit Slack's limits; "
                               "*Details* has the rest.", MORE, dropped)))
    return head + body + tail

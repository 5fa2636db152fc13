"""The App Home tab (pure): where a team triages.

Every inventory host with its last verdict and when, the pending fixes and the recent
changes, each with Re-check and Details. Published per user with views.publish (at most 100
blocks: hosts beyond what fits are counted, and `/mailcheck hosts` lists them all).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from slack_sdk.models.views import View

from bot.diagnosis import answer
from bot.render.blockkit import (
    MAX_MODAL_BLOCKS,
    actions,
    context,
    details_button,
    header,
    recheck_button,
    section,
)
from bot.render.mrkdwn import Mrkdwn, md, mention, span, trim
from bot.render.report import headline
from bot.store import ChangeRecord, PlanRecord, ReportRecord
from config.inventory import Inventory

MAX_PLANS = 10
MAX_CHANGES = 10


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at)) if at else "?"


def _host_blocks(name: str, address: str, record: ReportRecord | None) -> list[dict]:
    if record is None:
        text = md("*{}* {} · not checked yet", name, span(address))
        return [section(text), *actions([recheck_button(name)])]
    a = answer(record.report)
    text = md("*{}* {} · {}\n", name, span(address), headline(record.report, len(a.causes)))
    text += md("checked {} by {}", _when(record.at), mention(record.requested_by))
    if a.causes:
        text += md("\n{}", trim(a.causes[0].summary, 200))
    return [section(text), *actions([recheck_button(name), details_button(record.id)])]


def _plan_blocks(plan: PlanRecord, latest: ReportRecord | None) -> list[dict]:
    text = md(":wrench: *{}* on *{}* · proposed by {} · expires {}", plan.fix.label or plan.fix.summary,
              plan.host.name, mention(plan.requested_by), _when(plan.expires_at))
    buttons = [recheck_button(plan.host.name)] + ([details_button(latest.id)] if latest else [])
    return [section(text), *actions(buttons)]


def _change_blocks(change: ChangeRecord, latest: ReportRecord | None) -> list[dict]:
    text = md("*{}* on *{}* · applied by {} at {}", change.fix.label or change.fix.summary,
              change.host.name, mention(change.applied_by), _when(change.applied_at))
    if change.state != "applied":
        text += md(" · {}", change.state.replace("_", " "))
        if change.rolled_back_by:
            text += md(" by {} at {}", mention(change.rolled_back_by), _when(change.rolled_back_at))
    buttons = [recheck_button(change.host.name)] + ([details_button(latest.id)] if latest else [])
    return [section(text), *actions(buttons)]


def home_view(inventory: Inventory, reports: Sequence[ReportRecord], plans: Sequence[PlanRecord],
              changes: Sequence[ChangeRecord], now: float) -> dict:
    latest = {r.host: r for r in reports}
    tail: list[dict] = []
    if plans:
        tail.append(section(md("*Pending fixes* ({})", len(plans))))
        for p in plans[:MAX_PLANS]:
            tail += _plan_blocks(p, latest.get(p.host.name))
    if changes:
        tail.append(section(md("*Recent changes*")))
        for c in changes[:MAX_CHANGES]:
            tail += _change_blocks(c, latest.get(c.host.name))
    blocks = [header("mailcheck"),
              context(md("Your mail hosts: the last check of each, the fixes waiting for an "
                         "approver, the latest changes. Updated {}.", _when(now))),
              section(md("*Hosts* ({})", len(inventory.hosts)))]
    names = sorted(inventory.hosts)
    room = MAX_MODAL_BLOCKS - len(blocks) - len(tail) - 1
    shown = names[: max(room // 2, 0)]
    for name in shown:
        blocks += _host_blocks(name, inventory.hosts[name].address, latest.get(name))
    if len(shown) < len(names):
        blocks.append(context(md("{} more host(s): `/mailcheck hosts` lists them all.",
                                 len(names) - len(shown))))
    if not names:
        blocks.append(section(Mrkdwn("No hosts yet: the inventory is empty.")))
    return View(type="home", blocks=(blocks + tail)[:MAX_MODAL_BLOCKS]).to_dict()

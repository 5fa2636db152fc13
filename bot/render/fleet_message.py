"""A fleet check as one Slack message (pure: no I/O, no clock, no client).

    header    "group:mail · 12 hosts"
    context   "7 of 12 done · 2 cannot pass mail · 1 could not be checked · 4 ok · by @alice"
    rows      a section per finished host: verdict, name, time, top cause (the first cause
              of its own report), and a *Report* button that opens its full report (the
              Details modal of the stored report, as on a single check)
    context   the hosts still being checked, by name
    context   finished hosts without a row (below), by verdict and name
    context   fixes are per host: there is never a button that fixes several hosts

Slack's limits hold for any fleet: at most 50 blocks and MESSAGE_BUDGET characters. When
the rows of all finished hosts do not fit, rows go first to the hosts whose mail cannot
flow or that could not be checked, then to the others, each group in the selection's
order; a host left without a row is named in a line under its verdict (its report: the
App Home tab's Details, or `/mailcheck HOST`). Rows are shown in the selection's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.render.blockkit import (
    ACTION_DETAILS,
    MAX_BLOCKS,
    MESSAGE_BUDGET,
    button,
    context,
    header,
    section,
    size,
)
from bot.render.mrkdwn import Mrkdwn, md, mention, trim

ROW_CAUSE = 150  # characters of a row's top cause
NAMES_TEXT = 800  # characters of a line of host names (the count says how many)
ATTENTION = ("error", "broken")  # rows for these first when not every row fits
ICON = {"ok": ":white_check_mark:", "warn": ":warning:", "broken": ":x:", "error": ":boom:"}
WORDS = {"ok": "mail can flow", "broken": "mail cannot flow", "error": "could not be checked"}


@dataclass(frozen=True)
class FleetRow:
    """One finished host: its verdict, top cause, time, and its stored report (None: storing
    it failed, so no button)."""

    host: str
    verdict: str  # ok | broken | error
    cause: str
    duration: float
    report_id: str | None


@dataclass
class FleetBoard:
    """What the message shows: the selection, the hosts in its order, the finished rows;
    `elapsed` once the fleet is done; `stopped`: why it ended before every host finished."""

    selector: str
    hosts: list[str]
    started_by: str = ""
    rows: dict[str, FleetRow] = field(default_factory=dict)
    elapsed: float | None = None
    stopped: str | None = None
    _blocks: dict[str, dict] = field(default_factory=dict, repr=False)  # each row's, built once

    def add(self, row: FleetRow) -> None:
        self.rows[row.host] = row
        self._blocks.pop(row.host, None)

    def row_block(self, row: FleetRow) -> dict:
        if row.host not in self._blocks:
            self._blocks[row.host] = _row(row)
        return self._blocks[row.host]

    def names(self, verdict: str) -> list[str]:
        return [h for h in self.hosts if h in self.rows and self.rows[h].verdict == verdict]

    @property
    def running(self) -> list[str]:
        return [h for h in self.hosts if h not in self.rows]


def fleet_blocks(board: FleetBoard) -> list[dict]:
    """The message's blocks, within Slack's limits however many hosts (module docstring):
    the most rows that fit, found by bisection (more rows never take less room)."""
    order = {h: i for i, h in enumerate(board.hosts)}
    wanted = sorted(board.rows.values(), key=lambda r: (r.verdict not in ATTENTION, order[r.host]))
    row_blocks = {r.host: board.row_block(r) for r in wanted}

    def blocks_with(shown: int) -> list[dict]:
        rows = sorted(wanted[:shown], key=lambda r: order[r.host])
        return _assemble(board, [row_blocks[r.host] for r in rows], wanted[shown:])

    def fits(shown: int) -> bool:
        blocks = blocks_with(shown)
        return len(blocks) <= MAX_BLOCKS and size(blocks) <= MESSAGE_BUDGET

    low, high = 0, len(wanted)  # fits(low) holds: no row, and names trimmed to fit
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return blocks_with(low)


def fleet_text(board: FleetBoard) -> str:
    """The message's `text` (notifications): the selection and its counts."""
    return f"{board.selector}: " + _counts(board)


def _assemble(board: FleetBoard, rows: list[dict], hidden: list[FleetRow]) -> list[dict]:
    blocks = [header(f"{board.selector} · {len(board.hosts)} hosts"), _progress(board)]
    if board.stopped:
        blocks.append(section(md(":boom: *The fleet check stopped before every host finished:* {}",
                                 trim(board.stopped, 1000))))
    blocks += rows
    if board.running and not board.stopped:
        blocks.append(context(md(":hourglass_flowing_sand: checking ({}): ", len(board.running))
                              + _names(board.running)))
    if board.running and board.stopped:
        blocks.append(context(md("not checked ({}): ", len(board.running)) + _names(board.running)))
    for verdict in ("error", "broken", "ok"):
        names = [r.host for r in hidden if r.verdict == verdict]
        if names:
            blocks.append(context(md("{} {}, without a row to fit Slack's limits ({}): ",
                                     ICON[verdict], WORDS[verdict], len(names)) + _names(names)
                                  + md(" · their reports: the App Home tab, or `/mailcheck HOST`")))
    blocks.append(context(md("Fixes are per host: a row's *Report* shows the host's findings and "
                             "the fixes it proposes; `/mailcheck HOST` posts its report with the "
                             "Apply buttons.")))
    return blocks


def _progress(board: FleetBoard) -> dict:
    who = md(" · started by ") + mention(board.started_by) if board.started_by else Mrkdwn("")
    return context(md("{}", _counts(board)) + who)


def _counts(board: FleetBoard) -> str:
    parts = [f"{len(board.names(v))} {WORDS[v] if v != 'ok' else 'ok'}"
             for v in ("broken", "error", "ok") if board.names(v)]
    if board.elapsed is not None and not board.running:
        lead = f"{len(board.hosts)} hosts in {board.elapsed:.0f} s"
    else:
        lead = f"{len(board.rows)} of {len(board.hosts)} done"
    return " · ".join([lead, *parts])


def _row(r: FleetRow) -> dict:
    icon = ICON["warn"] if r.verdict == "ok" and r.cause else ICON[r.verdict]
    text = md("{} *{}* · {} · {} s", icon, r.host, WORDS[r.verdict], f"{r.duration:.1f}")
    if r.cause:
        text += md("\n{}", trim(" ".join(r.cause.split()), ROW_CAUSE))
    report = button("Report", ACTION_DETAILS, r.report_id) if r.report_id else None
    return section(text, report)


def _names(names: list[str]) -> Mrkdwn:
    text = md("{}", ", ".join(names))
    return trim(text, NAMES_TEXT) if len(text) > NAMES_TEXT else text

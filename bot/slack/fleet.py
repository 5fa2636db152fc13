"""`/mailcheck all | group:NAME | tag:NAME`: many hosts, one channel message.

The message (bot/render/fleet_message.py) is posted at once, then updated (chat.update,
paced and coalesced by LiveMessage) as each host finishes: a row with its verdict and top
cause, and a button that opens its full report. Each host's report is stored and audited
like a single check's (CheckRunner.keep, Fixes.record_check); no fix is registered, so
the message never carries an Apply button: fixes stay per host (`/mailcheck HOST`). The
hosts run as in `mailcheck check SELECTOR` (bot.fleet.run_fleet): at most `concurrency`
at a time, each within `deadline`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from bot.fleet import HostResult, fitting_concurrency, run_fleet
from bot.fleet.limits import raise_nofile
from bot.fleet.run import GRACE
from bot.models import Actor
from bot.render.fleet_message import FleetBoard, FleetRow, fleet_blocks, fleet_text
from bot.slack.runner import CheckRunner, with_changes_in_evidence
from config.inventory import Host

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetRequest:
    """Check `hosts` (what `selector` selects, in its order) for `user_id` in `channel_id`."""

    selector: str
    hosts: tuple[Host, ...]
    user_id: str
    channel_id: str
    response_url: str = ""
    steps: tuple[str, ...] | None = None
    thread_ts: str = ""

    @property
    def name(self) -> str:
        return self.selector


class FleetRunner:
    def __init__(self, runner: CheckRunner, *, concurrency: int, deadline: float) -> None:
        """`runner`: the single-check runner whose message opening, report store and audit
        the fleet shares; `concurrency`, `deadline`: MAILCHECK_FLEET_CONCURRENCY and the
        host deadline (Settings.host_deadline_or_default)."""
        self.runner, self.concurrency, self.deadline = runner, concurrency, deadline

    def at_once(self, hosts: int) -> int:
        """Hosts checked at once: the setting, fewer when the fd limit holds fewer."""
        return fitting_concurrency(min(self.concurrency, hosts), raise_nofile().after)

    def time_limit(self, hosts: int) -> float:
        """The most a fleet of `hosts` can take: each wave of hosts within its deadline (and
        the grace a cut host has to close), plus a minute for Slack."""
        return math.ceil(hosts / self.at_once(hosts)) * (self.deadline + GRACE) + 60

    async def run(self, req: FleetRequest) -> None:
        board = FleetBoard(req.selector, [h.name for h in req.hosts], started_by=req.user_id)
        msg = await self.runner.open(req, fleet_blocks(board), fleet_text(board))
        if msg is None:
            return
        actor = Actor("slack", req.user_id)
        started = time.monotonic()

        async def on_result(result: HostResult) -> None:
            board.add(await self._row(result, req, actor, msg))
            msg.show(fleet_blocks(board), fleet_text(board))

        try:
            await run_fleet(self.runner.engine, req.hosts, concurrency=self.at_once(len(req.hosts)),
                            deadline=self.deadline, on_result=on_result, steps=req.steps)
        except asyncio.CancelledError:
            board.stopped = "mailcheck is shutting down, or the fleet ran over its time limit"
            await self._end(msg, board, started)
            raise
        except Exception as e:
            log.exception("fleet check %s crashed", req.selector)
            board.stopped = f"internal error ({type(e).__name__}: {e}); the bot's log has the traceback"
        await self._end(msg, board, started)

    async def _row(self, result: HostResult, req: FleetRequest, actor: Actor, msg) -> FleetRow:
        """Audit and store the host's report (as a single check's); its row."""
        report = with_changes_in_evidence(result.report)
        try:
            await self.runner.fixes.record_check(report, actor, req.channel_id)
        except Exception:
            log.exception("recording the check of %s failed", result.host)
        report_id = await self.runner.keep(report, req, msg)
        return FleetRow(result.host, result.verdict, result.cause, result.duration, report_id)

    async def _end(self, msg, board: FleetBoard, started: float) -> None:
        board.elapsed = time.monotonic() - started
        try:
            await msg.finish(fleet_blocks(board), fleet_text(board))
        except Exception:
            log.exception("could not end the message of the fleet check %s", board.selector)

"""What the Slack side is given and what its listeners call, as small Protocols.

- `Fixes`: what the Slack side needs of bot.fixes.FixService (production passes the real
  one, built by bot.wiring; tests pass it too, on a SQLite file, or a recording fake);
- `Listeners`: what the listeners in handlers/ call with the typed requests of
  bot/slack/requests.py (bot.slack.bot.MailcheckBot is it). handlers/ import only these
  two modules, never the app that registers them.
"""

from __future__ import annotations

from typing import Protocol

from bot.fixes.outcomes import ApplyOutcome, RollbackOutcome
from bot.models import Actor, Report
from bot.slack.requests import CheckShortcut, Click, HomeOpened, SlashCommand, ViewSubmission


class Fixes(Protocol):
    async def register(self, report: Report, requested_by: Actor, channel: str = "") -> dict[str, str]:
        """Store the report's fixes server-side; returns fix id -> opaque plan id."""

    async def record_check(self, report: Report, actor: Actor, channel: str = "") -> None:
        """Audit a check (every Slack check, with fixes or not)."""

    async def apply(self, plan_id: str, actor: Actor) -> ApplyOutcome: ...

    async def rollback(self, change_id: str, actor: Actor) -> RollbackOutcome: ...


class Listeners(Protocol):
    """Each returns at once (slow work goes to the app's task set), after the listener acked."""

    def command(self, cmd: SlashCommand) -> str | None:
        """/mailcheck: the ephemeral answer to ack with (None: ack without text)."""

    def check_shortcut(self, req: CheckShortcut) -> None: ...

    def home_opened(self, req: HomeOpened) -> None: ...

    def apply(self, click: Click) -> None: ...

    def rollback(self, click: Click) -> None: ...

    def recheck(self, click: Click) -> None: ...

    def details(self, click: Click) -> None: ...

    def view_submitted(self, view: ViewSubmission) -> None: ...

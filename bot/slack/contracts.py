"""What the Slack side needs from the fix service, as a small Protocol, and what a click is.

The check engine (a bot.engine.Checker) and the fix service are injected (build_app
takes them), so tests pass fakes and production passes bot.engine.Engine and
ServiceFixes (bot/slack/service_fixes.py). `InMemoryFixService` is the trivial
implementation the Slack tests use.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

from slack_sdk.web.async_client import AsyncWebClient

from bot.models import Report


@dataclass(frozen=True)
class FixAction:
    """A click on an Apply / Roll back button, or a submitted fix modal.

    `value` is the button's opaque id (a plan id for apply, a change id for
    rollback); for a view submission it is the view's private_metadata and
    `values` holds the submitted state. `client` is the bot's Web API client;
    `respond` posts to the click's response_url (None for views).
    """

    kind: str  # apply | rollback | view
    value: str
    user_id: str
    team_id: str = ""
    channel_id: str = ""
    message_ts: str = ""
    trigger_id: str = ""
    response_url: str = ""
    callback_id: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    action_id: str = ""
    message_blocks: list[dict] = field(default_factory=list)  # the clicked message, for chat.update
    client: AsyncWebClient | None = None


class FixService(Protocol):
    async def register(self, report: Report, requested_by: str, channel: str = "") -> dict[str, str]:
        """Store the report's fixes server-side; returns fix id -> opaque plan id."""

    async def handle_apply(self, action: FixAction) -> None:
        """An Apply button was clicked (already acked; runs in a background task)."""

    async def handle_rollback(self, action: FixAction) -> None:
        """A Roll back button was clicked."""

    async def handle_view(self, action: FixAction) -> None:
        """A fix modal was submitted (e.g. a break-glass reason)."""


class InMemoryFixService:
    """Plans in a dict; clicks recorded. For tests and dry runs."""

    def __init__(self) -> None:
        self.plans: dict[str, tuple[str, str, str]] = {}  # plan id -> (host, fix id, requester)
        self.calls: list[FixAction] = []

    async def register(self, report: Report, requested_by: str, channel: str = "") -> dict[str, str]:
        ids = {}
        for fix in report.fixes:
            plan_id = "p_" + secrets.token_urlsafe(9)
            self.plans[plan_id] = (report.host, fix.id, requested_by)
            ids[fix.id] = plan_id
        return ids

    async def handle_apply(self, action: FixAction) -> None:
        self.calls.append(action)

    async def handle_rollback(self, action: FixAction) -> None:
        self.calls.append(action)

    async def handle_view(self, action: FixAction) -> None:
        self.calls.append(action)

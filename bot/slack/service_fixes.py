"""A minimal Slack face for bot.fixes.FixService (the fixes issue owns the rich
before/after message; this posts each outcome so a click is never silent)."""

from __future__ import annotations

import logging

from slack_sdk.web.async_client import AsyncWebClient

from bot.fixes import FixService as RealFixService
from bot.fixes.policy import slack_group_members
from bot.fixes.verify import CheckEngine, engine_verifier
from bot.models import Report
from bot.slack.ports import FixAction
from bot.slack.poster import SlackPoster
from config.inventory import Inventory
from config.settings import Settings

log = logging.getLogger(__name__)


class ServiceFixes:
    def __init__(self, service: RealFixService) -> None:
        self.service = service

    async def register(self, report: Report, requested_by: str, channel: str = "") -> dict[str, str]:
        await self.service.record_check(report, requested_by, channel)
        return await self.service.register(report, requested_by, channel)

    async def handle_apply(self, action: FixAction) -> None:
        out = await self.service.apply(action.value, action.user_id)
        text = f"<@{action.user_id}> · {out.summary or 'fix'} on {out.host or '?'}: " \
               f"*{out.status}*. {out.message}"
        await self._say(action, text, public=out.changed_host or bool(out.announce))

    async def handle_rollback(self, action: FixAction) -> None:
        out = await self.service.rollback(action.value, action.user_id)
        text = f"<@{action.user_id}> · rollback on {out.host or '?'}: *{out.status}*. {out.message}"
        await self._say(action, text, public=out.ok)

    async def handle_view(self, action: FixAction) -> None:
        log.info("view %s submitted by %s: not handled here", action.callback_id, action.user_id)

    async def _say(self, action: FixAction, text: str, public: bool) -> None:
        poster = SlackPoster(action.client)
        try:
            if public and action.channel_id:
                await poster.call("chat_postMessage", channel=action.channel_id, text=text[:3000],
                                  thread_ts=action.message_ts or None)
            elif action.response_url:
                await poster.respond(action.response_url, {
                    "response_type": "ephemeral", "replace_original": False, "text": text[:3000]})
        finally:
            await poster.close()


def service_fixes(settings: Settings, inventory: Inventory, engine: CheckEngine,
                  client: AsyncWebClient) -> ServiceFixes:
    """bot.fixes.FixService as `mailcheck serve` runs it: SQLite store, SSH, verified by
    the same engine, approver user groups resolved through Slack (usergroups:read)."""
    from bot.store import SQLiteStore
    from bot.transport import SSHTransport

    service = RealFixService(settings=settings, inventory=inventory,
                             store=SQLiteStore(settings.db_path),
                             connect=lambda host: SSHTransport(host, settings),
                             verifier=engine_verifier(engine),
                             group_members=slack_group_members(client))
    return ServiceFixes(service)

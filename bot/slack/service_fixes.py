"""The Slack face of bot.fixes.FixService. An applied (or not achieved) fix updates the
report message in place (chat.update): the used Apply button becomes "Applied by <@U> at
HH:MM UTC: <summary>", with ports before/after and, when the fix did not have its effect, a
Rollback button (value: the change id only); a rollback updates it likewise. Refusals go to
the clicker only (ephemeral), with a Re-check button when the plan expired or the host
changed; FixService audits them.

Not done yet: the break-glass modal (settings.break_glass). FixService.apply already takes
break_glass_reason and returns outcome.announce; the Slack side still needs, on a refusal of a
non-approver while break_glass is on, views.open with a reason input (private_metadata = plan
id) and handle_view calling apply(plan_id, user, break_glass_reason=reason), then posting
outcome.announce in the channel."""

from __future__ import annotations

import logging

from bot.fixes import FixService as RealFixService
from bot.models import Actor, Report
from bot.render import blockkit
from bot.render.mrkdwn import esc, md, mention, trim
from bot.slack.contracts import FixAction
from bot.slack.poster import SlackPoster

log = logging.getLogger(__name__)


class ServiceFixes:
    def __init__(self, service: RealFixService) -> None:
        self.service = service

    async def register(self, report: Report, requested_by: str, channel: str = "") -> dict[str, str]:
        await self.service.record_check(report, Actor("slack", requested_by), channel)
        return await self.service.register(report, Actor("slack", requested_by), channel)

    async def handle_apply(self, action: FixAction) -> None:
        out = await self.service.apply(action.value, Actor("slack", action.user_id))
        if out.changed_host:
            blocks = blockkit.applied_blocks(
                action.message_blocks, action.action_id, action.value, actor=out.actor or action.user_id,
                at=out.at, summary=out.summary, status=out.status, message=out.message,
                before=out.before.ports, after=out.after.ports, change_id=out.change_id,
                offer_rollback=out.offer_rollback or out.status == "not_achieved")
            text = md("Applied by {}: {} on {} ({})", mention(out.actor or action.user_id),
                      out.summary or "fix", out.host or "?", out.status)
            if await self._update(action, blocks, text):
                if out.announce:
                    await self._say(action, out.announce, public=True)
                return
        text = md("{} · {} on {}: *{}*. {}", mention(action.user_id), out.summary or "fix",
                  out.host or "?", out.status, out.message)
        if out.announce:
            await self._say(action, out.announce, public=True)
        await self._say(action, text, public=out.changed_host, host=out.host if out.offer_recheck
                        or out.status in ("expired", "precondition_changed", "void") else "")

    async def handle_rollback(self, action: FixAction) -> None:
        out = await self.service.rollback(action.value, Actor("slack", action.user_id))
        if out.ok:
            blocks = blockkit.rolled_back_blocks(
                action.message_blocks, action.action_id, action.value, actor=out.actor or action.user_id,
                at=out.at, status=out.status, message=out.message, before=out.before.ports,
                after=out.after.ports)
            if await self._update(action, blocks, md("Rolled back by {}", mention(out.actor or action.user_id))):
                return
        text = md("{} · rollback on {}: *{}*. {}", mention(action.user_id), out.host or "?", out.status,
                  out.message)
        await self._say(action, text, public=out.ok)

    async def _update(self, action: FixAction, blocks: list[dict], text: str) -> bool:
        """chat.update of the clicked report message; False if there is none to update."""
        if not (action.channel_id and action.message_ts and action.message_blocks):
            return False
        poster = SlackPoster(action.client)
        try:
            await poster.call("chat_update", channel=action.channel_id, ts=action.message_ts,
                              text=trim(esc(text), blockkit.FALLBACK_TEXT), blocks=blocks)
            return True
        except Exception:  # noqa: BLE001 - fall back to a thread reply
            log.exception("chat.update of %s failed", action.message_ts)
            return False
        finally:
            await poster.close()

    async def handle_view(self, action: FixAction) -> None:
        log.info("view %s submitted by %s: not handled here", action.callback_id, action.user_id)

    async def _say(self, action: FixAction, text: str, public: bool, host: str = "") -> None:
        """Public: a reply in the thread; otherwise ephemeral to the clicker, with a Re-check
        button for `host` when given (expired plan, changed precondition)."""
        poster = SlackPoster(action.client)
        try:
            if public and action.channel_id:
                await poster.call("chat_postMessage", channel=action.channel_id,
                                  text=trim(esc(text), 3000), thread_ts=action.message_ts or None)
            elif action.response_url:
                msg: dict = {"response_type": "ephemeral", "replace_original": False,
                             "text": trim(esc(text), 3000)}
                if host:
                    msg["blocks"] = [blockkit.section(text), blockkit.recheck_actions(host)]
                await poster.respond(action.response_url, msg)
        finally:
            await poster.close()

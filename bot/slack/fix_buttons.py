"""The one place a fix button meets the fixes: a click -> bot.fixes.FixService -> its outcome
(plain data) -> bot/render/outcomes -> Slack, through the app's poster (paced per channel,
429s retried).

- Apply: an applied (or not achieved) fix updates the clicked report message in place
  (chat.update); when there is none to update, or the update fails, it is said in the
  report's thread. A failed apply, one restored by the host's guard, one NOT restored and an
  unreachable host are said in the report's thread too (ApplyOutcome.announce_in_channel:
  the host may be half-changed), through the click's response_url where the bot is not in
  the channel. A refusal or an expired plan goes to the clicker only (ephemeral), with a
  Re-check button when the plan expired or the host changed. A break-glass apply is
  announced in the channel.
- Roll back: likewise; a restore that failed goes to the thread.

Not built yet: the break-glass modal (settings.break_glass). FixService.apply takes
break_glass_reason and returns out.break_glass; a refused non-approver, when break glass is
on, would get views.open with a reason input (private_metadata = plan id), and
`view_submitted` would call apply(plan_id, actor, break_glass_reason=reason).
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

from bot.models import Actor
from bot.render import outcomes as render
from bot.render.blockkit import FALLBACK_TEXT
from bot.render.mrkdwn import Mrkdwn, trim
from bot.slack.contracts import Fixes
from bot.slack.poster import NOT_IN_CHANNEL, SlackPoster
from bot.slack.requests import Click, ViewSubmission

log = logging.getLogger(__name__)


class FixButtons:
    def __init__(self, fixes: Fixes, poster: SlackPoster) -> None:
        self.fixes, self.poster = fixes, poster

    async def apply(self, click: Click) -> None:
        out = await self.fixes.apply(click.value, Actor("slack", click.user_id))
        if out.break_glass:
            await self._thread(click, render.break_glass_text(out))
        if out.changed_host:
            blocks = render.applied_blocks(click.message_blocks, click.action_id, click.value, out,
                                           click.user_id)
            if await self._update(click, blocks, render.applied_text(out, click.user_id)):
                return
        text = render.apply_text(out, click.user_id)
        if out.announce_in_channel:  # applied, failed, NOT restored, unreachable: the team must know
            await self._thread(click, text)
        else:
            await self._tell(click, text, render.reply_blocks(text, render.recheck_host(out)))

    async def rollback(self, click: Click) -> None:
        out = await self.fixes.rollback(click.value, Actor("slack", click.user_id))
        if out.ok:
            blocks = render.rolled_back_blocks(click.message_blocks, click.action_id, click.value, out,
                                               click.user_id)
            if await self._update(click, blocks, render.rollback_text(out, click.user_id)):
                return
            await self._thread(click, render.rollback_text(out, click.user_id))
        elif out.announce_in_channel:  # a restore that failed
            await self._thread(click, render.rollback_text(out, click.user_id))
        else:
            await self._tell(click, render.rollback_text(out, click.user_id))

    async def view_submitted(self, view: ViewSubmission) -> None:
        log.info("view %s submitted by %s: not handled here", view.callback_id, view.user_id)

    # --- posting, with the app's poster -----------------------------------------------------
    async def _update(self, click: Click, blocks: list[dict], text: Mrkdwn) -> bool:
        """chat.update of the clicked report message; False when there is none, or it failed."""
        if not (click.channel_id and click.message_ts and click.message_blocks):
            return False
        try:
            await self.poster.update(click.channel_id, click.message_ts, blocks,
                                     trim(text, FALLBACK_TEXT))
            return True
        except Exception:  # noqa: BLE001 - said in the thread instead
            log.exception("chat.update of %s failed", click.message_ts)
            return False

    async def _thread(self, click: Click, text: Mrkdwn) -> None:
        """In the report's thread (the channel, when the click was not on a message); where
        the bot is not in the channel, through the click's response_url, to the channel."""
        if click.channel_id:
            try:
                await self.poster.paced(click.channel_id, "chat_postMessage", text=trim(text, 3000),
                                        **({"thread_ts": click.message_ts} if click.message_ts else {}))
                return
            except SlackApiError as e:
                if e.response.get("error") not in NOT_IN_CHANNEL or not click.response_url:
                    raise
            await self.poster.respond(click.response_url, {
                "response_type": "in_channel", "replace_original": False, "text": trim(text, 3000)})
        else:
            await self._tell(click, text)

    async def _tell(self, click: Click, text: Mrkdwn, blocks: list[dict] | None = None) -> None:
        """To the clicker only (ephemeral, through the click's response_url)."""
        if not click.response_url:
            log.warning("no response_url to tell %s: %s", click.user_id, text[:200])
            return
        msg: dict = {"response_type": "ephemeral", "replace_original": False, "text": trim(text, 3000)}
        if blocks:
            msg["blocks"] = blocks
        await self.poster.respond(click.response_url, msg)

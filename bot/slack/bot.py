"""What each Slack interaction does. Listeners in handlers/ ack first and call
these; anything slow runs in the TaskSet, never before the ack."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.render import details as render_details
from bot.render.mrkdwn import Mrkdwn, esc, md, mention, span
from bot.slack.commands import CheckCommand, parse
from bot.slack.contracts import FixAction, FixService
from bot.slack.poster import SlackPoster
from bot.slack.runner import CheckRequest, CheckRunner
from bot.slack.tasks import Seen, TaskSet
from bot.store import REPORTS_PER_HOST, Store
from config.inventory import Inventory

log = logging.getLogger(__name__)


class MailcheckBot:
    def __init__(self, *, inventory: Inventory, runner: CheckRunner, fixes: FixService,
                 poster: SlackPoster, tasks: TaskSet, client: AsyncWebClient, store: Store) -> None:
        self.inventory, self.runner, self.fixes = inventory, runner, fixes
        self.poster, self.tasks, self.client, self.store = poster, tasks, client, store
        self.seen = Seen()
        self._running: dict[tuple[str, str], str] = {}  # (channel, host) -> who started it

    # --- /mailcheck -------------------------------------------------------------
    async def command(self, ack, body: dict[str, Any]) -> None:
        parsed = parse(body.get("text", ""), self.inventory)
        if not isinstance(parsed, CheckCommand):
            await ack(response_type="ephemeral", text=parsed.text)
            return
        trigger = body.get("trigger_id", "")
        if not self.seen.first(f"cmd:{trigger}" if trigger else ""):
            await ack()  # the same command delivered twice: one check only
            return
        busy = self._running.get((body.get("channel_id", ""), parsed.host.name))
        if busy:
            await ack(response_type="ephemeral", text=md(
                "A check of `{}` started by {} is still running in this channel; its message will "
                "update.", parsed.host.name, mention(busy)))
            return
        await ack(response_type="ephemeral", text=f"Checking `{parsed.host.name}`; "
                  "the result appears in this channel and updates as steps finish.")
        self.start_check(CheckRequest(parsed.host, body.get("user_id", ""), body.get("channel_id", ""),
                                      body.get("response_url", ""), parsed.steps))

    def start_check(self, req: CheckRequest) -> bool:
        """One check per host and channel at a time; False when one is already running."""
        key = (req.channel_id, req.host.name)
        if key in self._running:
            return False
        self._running[key] = req.user_id
        task = self.tasks.spawn(self.runner.run(req), name=f"check:{req.host.name}")
        task.add_done_callback(lambda _t: self._running.pop(key, None))
        return True

    # --- buttons ------------------------------------------------------------------
    def _first_click(self, body: dict, action: dict) -> bool:
        key = f"{body.get('container', {}).get('message_ts')}:{action.get('action_ts')}:" \
              f"{body.get('user', {}).get('id')}:{action.get('action_id')}"
        return self.seen.first("act:" + key)

    def _fix_action(self, kind: str, body: dict, action: dict) -> FixAction:
        return FixAction(
            kind=kind, value=action.get("value", ""), user_id=body.get("user", {}).get("id", ""),
            team_id=body.get("team", {}).get("id", ""),
            channel_id=(body.get("channel") or body.get("container") or {}).get("id", "")
            or body.get("container", {}).get("channel_id", ""),
            message_ts=body.get("container", {}).get("message_ts", ""),
            trigger_id=body.get("trigger_id", ""), response_url=body.get("response_url", ""),
            action_id=action.get("action_id", ""),
            message_blocks=list((body.get("message") or {}).get("blocks") or []),
            client=self.client)

    async def fix_click(self, ack, body: dict, action: dict, kind: str) -> None:
        await ack()
        if not self._first_click(body, action):
            return
        handle = self.fixes.handle_apply if kind == "apply" else self.fixes.handle_rollback
        self.tasks.spawn(handle(self._fix_action(kind, body, action)), name=f"{kind}:{action.get('value')}")

    async def recheck(self, ack, body: dict, action: dict) -> None:
        await ack()
        if not self._first_click(body, action):
            return
        info = self._fix_action("recheck", body, action)
        host = self.inventory.hosts.get(info.value)
        if host is None:
            self._tell(info.response_url, md("{} is no longer in the inventory; nothing checked.",
                                             span(info.value, 60)))
            return
        if not self.start_check(CheckRequest(host, info.user_id, info.channel_id, info.response_url)):
            self._tell(info.response_url, md("A check of {} is already running here.", span(host.name)))

    def _tell(self, response_url: str, text: str) -> None:
        """An ephemeral note to the clicker (in the background)."""
        self.tasks.spawn(self.poster.respond(response_url, {
            "response_type": "ephemeral", "replace_original": False, "text": esc(text)}), timeout=15)

    async def details(self, ack, body: dict, action: dict) -> None:
        await ack()
        self.tasks.spawn(self._open_details(action.get("value", ""), body.get("trigger_id", "")),
                         timeout=10, name="details")

    async def _open_details(self, report_id: str, trigger_id: str) -> None:
        """The stored report's Details (a trigger_id lives 3 s: one SQLite read fits)."""
        record = await self.store.get_report(report_id)
        view = render_details.details_modal(record.report) if record else render_details.expired_modal(
            Mrkdwn("These details are gone (older than the last "
                   f"{REPORTS_PER_HOST} checks of the host). Press *Re-check*."))
        await self.poster.call("views_open", trigger_id=trigger_id, view=view)

    # --- modals ---------------------------------------------------------------------
    async def view_submission(self, ack, body: dict, view: dict) -> None:
        await ack()
        action = FixAction(
            kind="view", value=view.get("private_metadata", ""), user_id=body.get("user", {}).get("id", ""),
            team_id=body.get("team", {}).get("id", ""), callback_id=view.get("callback_id", ""),
            values=view.get("state", {}).get("values", {}), trigger_id=body.get("trigger_id", ""),
            client=self.client)
        self.tasks.spawn(self.fixes.handle_view(action), name="view")

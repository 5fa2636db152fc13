"""What each Slack interaction does. Listeners in handlers/ ack first and call
these; anything slow runs in the TaskSet, never before the ack."""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.render import details as render_details
from bot.render import home as render_home
from bot.render.mrkdwn import Mrkdwn, esc, md, mention, span
from bot.slack.commands import CheckCommand, parse
from bot.slack.contracts import FixAction, FixService
from bot.slack.poster import SlackPoster
from bot.slack.requests import CheckShortcut, Click, HomeOpened, hosts_named
from bot.slack.runner import CheckRequest, CheckRunner
from bot.slack.tasks import Seen, TaskSet
from bot.store import REPORTS_PER_HOST, Store
from config.inventory import Inventory

log = logging.getLogger(__name__)
MAX_SHORTCUT_HOSTS = 3


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

    def start_check(self, req: CheckRequest, home_of: str | None = None) -> bool:
        """One check per host and channel at a time; False when one is already running.
        `home_of`: a user whose Home tab is published again when the check ends."""
        key = (req.channel_id, req.host.name)
        if key in self._running:
            return False
        self._running[key] = req.user_id
        task = self.tasks.spawn(self.runner.run(req), name=f"check:{req.host.name}")

        def done(_task) -> None:
            self._running.pop(key, None)
            if home_of:
                self.tasks.spawn(self.publish_home(home_of), timeout=15, name="home")

        task.add_done_callback(done)
        return True

    # --- where teams triage: a message's shortcut, the Home tab ------------------------
    def check_shortcut(self, req: CheckShortcut) -> None:
        """"Check mail host" on a message: each inventory host it names (at most
        MAX_SHORTCUT_HOSTS) is checked, the answer in that message's thread."""
        if not self.seen.first(f"sc:{req.trigger_id}" if req.trigger_id else ""):
            return
        hosts = hosts_named(req.text, self.inventory)
        if not hosts:
            known = ", ".join(f"`{n}`" for n in sorted(self.inventory.hosts)[:20]) or "none"
            self._tell(req.response_url, md(
                "That message names no host of mailcheck's inventory (by name or address), so "
                "nothing was checked. Known hosts: {}.", Mrkdwn(known)))
            return
        busy = [h.name for h in hosts[:MAX_SHORTCUT_HOSTS] if not self.start_check(CheckRequest(
            h, req.user_id, req.channel_id, req.response_url, thread_ts=req.thread_ts))]
        if busy:
            self._tell(req.response_url, md("A check of {} is already running in this channel.",
                                            ", ".join(busy)))

    def home_opened(self, req: HomeOpened) -> None:
        if req.tab == "home" and req.user_id:
            self.tasks.spawn(self.publish_home(req.user_id), timeout=15, name="home")

    async def publish_home(self, user_id: str) -> None:
        """The Home tab for one user: hosts with their last verdict, pending fixes, changes."""
        now = time.time()
        view = render_home.home_view(
            self.inventory, await self.store.latest_reports(), await self.store.pending_plans(now),
            await self.store.recent_changes(render_home.MAX_CHANGES), now)
        await self.poster.call("views_publish", user_id=user_id, view=view)

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

    def recheck(self, click: Click) -> None:
        """Re-check the host of a report (or of the Home tab: then in the clicker's direct
        message with the app, and their Home is published again when it ends)."""
        if not self.seen.first("act:" + click.key):
            return
        host = self.inventory.hosts.get(click.value)
        if host is None:
            self._tell(click.response_url, md("{} is no longer in the inventory; nothing checked.",
                                              span(click.value, 60)))
            return
        where = click.channel_id if not click.in_view else click.user_id
        if not self.start_check(CheckRequest(host, click.user_id, where, click.response_url),
                                home_of=click.user_id if click.in_view else None):
            self._tell(click.response_url, md("A check of {} is already running here.", span(host.name)))

    def _tell(self, response_url: str, text: str) -> None:
        """An ephemeral note to the clicker (in the background)."""
        self.tasks.spawn(self.poster.respond(response_url, {
            "response_type": "ephemeral", "replace_original": False, "text": esc(text)}), timeout=15)

    def details(self, click: Click) -> None:
        if self.seen.first("act:" + click.key):
            self.tasks.spawn(self._open_details(click.value, click.trigger_id), timeout=10,
                             name="details")

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

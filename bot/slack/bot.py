"""What each Slack interaction does (bot.slack.contracts.Listeners). The listeners in
handlers/ turn a payload into a typed request (bot/slack/requests.py), ack, and call these;
anything slow runs in the TaskSet, never before the ack. Fix buttons go to FixButtons.

What replicas of `serve` must agree on lives in the store, not in this process: a
delivery seen twice (bot.slack.app.once_per_delivery) and the running-check table
(one check per channel and target at a time, whichever replica runs it)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time

from bot.render import details as render_details
from bot.render import home as render_home
from bot.render.mrkdwn import Mrkdwn, esc, md, mention, span
from bot.slack.commands import (
    CheckCommand,
    DomainCommand,
    FleetCommand,
    Reply,
    domain_command,
    parse,
)
from bot.slack.fix_buttons import FixButtons
from bot.slack.fleet import FleetRequest, FleetRunner
from bot.slack.poster import SlackPoster
from bot.slack.requests import (
    CheckShortcut,
    Click,
    HomeOpened,
    SlashCommand,
    ViewSubmission,
    hosts_named,
)
from bot.slack.runner import CheckRequest, CheckRunner
from bot.slack.tasks import TaskSet
from bot.store import REPORTS_PER_HOST, Store
from config.inventory import Inventory

log = logging.getLogger(__name__)
MAX_SHORTCUT_HOSTS = 3


class MailcheckBot:
    def __init__(self, *, inventory: Inventory, runner: CheckRunner, buttons: FixButtons,
                 poster: SlackPoster, tasks: TaskSet, store: Store, fleet: FleetRunner) -> None:
        self.inventory, self.runner, self.buttons, self.fleet = inventory, runner, buttons, fleet
        self.poster, self.tasks, self.store = poster, tasks, store
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    # --- /mailcheck -------------------------------------------------------------
    async def command(self, cmd: SlashCommand) -> str | None:
        parsed = parse(cmd.text, self.inventory)
        if isinstance(parsed, Reply):
            return parsed.text
        if isinstance(parsed, FleetCommand):
            return await self.start_fleet(FleetRequest(
                parsed.selector, parsed.hosts, cmd.user_id, cmd.channel_id, cmd.response_url,
                parsed.steps))
        req = CheckRequest(parsed.host, cmd.user_id, cmd.channel_id, cmd.response_url, parsed.steps) \
            if isinstance(parsed, CheckCommand) else \
            CheckRequest(None, cmd.user_id, cmd.channel_id, cmd.response_url, domain=parsed.domain)
        busy = await self.start_check(req)
        if busy:
            return md("A check of {} started by {} is still running in this channel; its message "
                      "will update.", span(req.name), mention(busy))
        return md("Checking {}; the result appears in this channel and updates as steps finish.",
                  span(req.name))

    async def start_check(self, req: CheckRequest, home_of: str | None = None) -> str | None:
        """One check per target and channel at a time, across replicas (the store's
        running-check table): None when started, else who started the one running.
        `home_of`: a user whose Home tab is published again when the check ends."""
        key, holder = f"{req.channel_id} {req.name}", f"{self.instance} {secrets.token_hex(4)}"
        busy = await self.store.start_running(key, req.user_id, holder, self.tasks.timeout)
        if busy is not None:
            return busy
        task = self.tasks.spawn(self._run(self.runner.run(req), key, holder),
                                name=f"check:{req.name}")
        if home_of:
            task.add_done_callback(lambda _task: self.tasks.spawn(
                self.publish_home(home_of), timeout=15, name="home"))
        return None

    async def _run(self, work, key: str, holder: str) -> None:
        try:
            await work
        finally:  # also when cancelled: the entry is freed at once, not at its ttl
            await self.store.end_running(key, holder)

    async def start_fleet(self, req: FleetRequest) -> str:
        """A fleet check (one per selection and channel at a time, across replicas: the
        store's running-check table); the ephemeral answer."""
        limit = self.fleet.time_limit(len(req.hosts))
        key, holder = f"{req.channel_id} {req.selector}", f"{self.instance} {secrets.token_hex(4)}"
        busy = await self.store.start_running(key, req.user_id, holder, limit)
        if busy is not None:
            return md("A check of {} started by {} is still running in this channel; its message "
                      "will update.", span(req.selector), mention(busy))
        self.tasks.spawn(self._run(self.fleet.run(req), key, holder), timeout=limit,
                         name=f"fleet:{req.selector}")
        return md("Checking {} ({} hosts, {} at a time); one message in this channel gets a row "
                  "per host as each finishes.", span(req.selector), len(req.hosts),
                  self.fleet.at_once(len(req.hosts)))

    # --- where teams triage: a message's shortcut, the Home tab ------------------------
    async def check_shortcut(self, req: CheckShortcut) -> None:
        """"Check mail host" on a message: each inventory host it names (at most
        MAX_SHORTCUT_HOSTS) is checked, the answer in that message's thread."""
        hosts = hosts_named(req.text, self.inventory)
        if not hosts:
            known = ", ".join(f"`{n}`" for n in sorted(self.inventory.hosts)[:20]) or "none"
            self._tell(req.response_url, md(
                "That message names no host of mailcheck's inventory (by name or address), so "
                "nothing was checked. Known hosts: {}.", Mrkdwn(known)))
            return
        busy = [h.name for h in hosts[:MAX_SHORTCUT_HOSTS] if await self.start_check(CheckRequest(
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
    def apply(self, click: Click) -> None:
        self.tasks.spawn(self.buttons.apply(click), name=f"apply:{click.value}",
                         drain=True)  # a shutdown lets a fix finish and report

    def rollback(self, click: Click) -> None:
        self.tasks.spawn(self.buttons.rollback(click), name=f"rollback:{click.value}", drain=True)

    async def recheck(self, click: Click) -> None:
        """Re-check the host of a report (or of the Home tab: then in the clicker's direct
        message with the app, and their Home is published again when it ends)."""
        host = self.inventory.hosts.get(click.value)
        words = click.value.split()
        domain = domain_command(words[1:]) if host is None and words[:1] == ["dns"] else None
        if host is None and not isinstance(domain, DomainCommand):  # a domain report's: 'dns DOMAIN'
            self._tell(click.response_url, md("{} is no longer in the inventory; nothing checked.",
                                              span(click.value, 60)))
            return
        where = click.channel_id if not click.in_view else click.user_id
        req = CheckRequest(host, click.user_id, where, click.response_url,
                           domain=domain.domain if domain else None)
        if await self.start_check(req, home_of=click.user_id if click.in_view else None):
            self._tell(click.response_url, md("A check of {} is already running here.", span(req.name)))

    def _tell(self, response_url: str, text: str) -> None:
        """An ephemeral note to the clicker (in the background)."""
        self.tasks.spawn(self.poster.respond(response_url, {
            "response_type": "ephemeral", "replace_original": False, "text": esc(text)}), timeout=15)

    def details(self, click: Click) -> None:
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
    def view_submitted(self, view: ViewSubmission) -> None:
        self.tasks.spawn(self.buttons.view_submitted(view), name="view")

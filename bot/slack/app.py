"""The Bolt app: build_app() wires settings, inventory, engine, fixes and store into one
MailcheckBot (one poster, one task set, one FixButtons) and registers the listeners of
handlers/ (the app's root registers them, as in Slack's starter template)."""

from __future__ import annotations

import weakref

from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine import Checker
from bot.errors import ConfigError
from bot.slack.bot import MailcheckBot
from bot.slack.contracts import Fixes
from bot.slack.fix_buttons import FixButtons
from bot.slack.fleet import FleetRunner
from bot.slack.poster import SlackPoster
from bot.slack.runner import CheckRunner
from bot.slack.tasks import TaskSet
from bot.store import Store
from config.inventory import Inventory
from config.settings import Settings
from handlers import register_all

_BOTS: weakref.WeakKeyDictionary[AsyncApp, MailcheckBot] = weakref.WeakKeyDictionary()


def make_client(settings: Settings) -> AsyncWebClient:
    if settings.slack_bot_token is None:
        raise ConfigError("SLACK_BOT_TOKEN is not set (the bot's xoxb- token)")
    kw = {"base_url": settings.slack_api_url} if settings.slack_api_url else {}
    return AsyncWebClient(token=settings.slack_bot_token.get_secret_value(), **kw)


DELIVERY_TTL = 3600.0  # Slack retries within minutes; a trigger id is used once


def delivery_key(body: dict) -> str:
    """What a delivery keeps however often Slack sends it: an event's event_id; a command's,
    click's, shortcut's or modal's trigger_id ('' when it has neither)."""
    if body.get("event_id"):
        return f"ev:{body['event_id']}"
    return f"tr:{body['trigger_id']}" if body.get("trigger_id") else ""


def once_per_delivery(store: Store):
    """Middleware: a delivery already seen by any replica sharing the store (Slack's retry,
    X-Slack-Retry-Num, or the same payload sent twice) is acked and dropped. A retry whose
    first delivery never got through is handled: it is the first one the store sees."""

    async def middleware(req, resp, next) -> BoltResponse:
        key = delivery_key(req.body or {})
        if key and not await store.first_delivery(key, DELIVERY_TTL):
            return BoltResponse(status=200, body="")
        return await next()

    return middleware


def build_app(settings: Settings, inventory: Inventory, engine: Checker, fixes: Fixes,
              client: AsyncWebClient | None = None, *, store: Store, update_interval: float = 1.0,
              check_timeout: float = 300.0) -> AsyncApp:
    """An AsyncApp with every mailcheck listener registered.

    Signatures are verified with settings.slack_signing_secret (HTTP mode);
    the Web API goes to settings.slack_api_url when set. Raises ConfigError
    when the token or signing secret is missing.
    """
    if settings.slack_signing_secret is None:
        raise ConfigError("SLACK_SIGNING_SECRET is not set")
    client = client or make_client(settings)
    # Every listener acks and only then spawns its work into the TaskSet, so the
    # listener itself returns at once: process_before_response=True answers with the
    # ack as soon as it returns, where False would poll for the ack every 10 ms.
    app = AsyncApp(client=client, signing_secret=settings.slack_signing_secret.get_secret_value(),
                   process_before_response=True)
    app.middleware(once_per_delivery(store))
    poster = SlackPoster(client, interval=update_interval)
    tasks = TaskSet(timeout=check_timeout + 60)
    runner = CheckRunner(poster, engine, fixes, store, timeout=check_timeout)
    fleet = FleetRunner(runner, concurrency=settings.fleet_concurrency,
                        deadline=min(check_timeout, settings.host_deadline_or_default()))
    bot = MailcheckBot(inventory=inventory, runner=runner, buttons=FixButtons(fixes, poster),
                       poster=poster, tasks=tasks, store=store, fleet=fleet)
    register_all(app, bot)
    _BOTS[app] = bot
    return app


def bot_of(app: AsyncApp) -> MailcheckBot:
    """The MailcheckBot behind an app built by build_app (its tasks, poster, …)."""
    return _BOTS[app]

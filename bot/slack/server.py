"""`mailcheck serve`: Socket Mode when SLACK_APP_TOKEN is set, else HTTP mode.

HTTP mode: an aiohttp server on settings.http_port with POST /slack/events
(Bolt verifies the v0 signature and the timestamp). Socket Mode: slack_bolt's
aiohttp AsyncSocketModeHandler, and the same port serves the rest only.
Both: GET /healthz (liveness; in Socket Mode 200 only while the socket is
connected), GET /readyz (also the store answers and Slack takes the token,
auth.test kept 15 s) and GET /metrics (Prometheus text, bot/slack/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.authorization.async_single_team_authorization import (
    AsyncSingleTeamAuthorization,
)
from slack_sdk.errors import SlackApiError

from bot.engine import Checker
from bot.errors import ConfigError
from bot.fixes import FixService as RealFixService
from bot.fixes.policy import slack_group_members
from bot.render.mrkdwn import trim
from bot.render.outcomes import reconciled_text
from bot.slack.app import bot_of, build_app, make_client
from bot.slack.contracts import Fixes
from bot.slack.metrics import Metrics, Readiness
from bot.slack.poster import SlackPoster
from bot.wiring import Wiring
from config.inventory import Inventory
from config.settings import Settings

log = logging.getLogger(__name__)
Health = Callable[[], Awaitable[dict]]


def http_app(app: AsyncApp | None, health: Health, ready: Health | None = None,
             metrics: Metrics | None = None) -> web.Application:
    """/slack/events (when app is given), /healthz (liveness), /readyz (the store and Slack
    answer) and /metrics (Prometheus text) when given."""

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    def answer(state: Health):
        async def get(_request: web.Request) -> web.Response:
            body = await state()
            return web.json_response(body, status=200 if body.get("ok") else 503)
        return get

    async def prometheus(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.text(), headers={"Content-Type": metrics.content_type})

    web_app = web.Application()
    if app is not None:
        web_app.router.add_post("/slack/events", events)
    web_app.router.add_get("/healthz", answer(health))
    if ready is not None:
        web_app.router.add_get("/readyz", answer(ready))
    if metrics is not None:
        web_app.router.add_get("/metrics", prometheus)
    return web_app


def readiness(app: AsyncApp, health: Health) -> Health:
    """Ready: live (in Socket Mode: connected), the store answers, Slack takes the token."""
    probe = Readiness(bot_of(app).store.ping, app.client.auth_test)

    async def ready() -> dict:
        live, state = await health(), await probe.state()
        return {**state, "ok": bool(live.get("ok")) and state["ok"], "mode": live.get("mode")}
    return ready


async def start_site(web_app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start listening; returns the runner (to clean up) and the bound port (port 0 works)."""
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1]


async def warm_auth(app: AsyncApp) -> dict:
    """auth.test once at start: a bad token fails here, clearly, and the first
    request's ack does not wait for it. Raises ConfigError."""
    try:
        result = await app.client.auth_test()
    except SlackApiError as e:
        raise ConfigError(f"Slack refused the bot token: {e.response.get('error')}") from e
    for mw in getattr(app, "_async_middleware_list", []):  # Bolt caches it per app
        if isinstance(mw, AsyncSingleTeamAuthorization) and mw.auth_test_result is None:
            mw.auth_test_result = result
    return result.data if hasattr(result, "data") else dict(result)


def http_health(app: AsyncApp, auth: dict) -> Health:
    async def health() -> dict:
        return {"ok": True, "mode": "http", "team": auth.get("team_id"), "bot": auth.get("user_id"),
                "running_tasks": len(bot_of(app).tasks)}
    return health


def socket_health(app: AsyncApp, handler: AsyncSocketModeHandler) -> Health:
    async def health() -> dict:
        connected = await handler.client.is_connected()
        return {"ok": connected, "mode": "socket", "connected": connected,
                "running_tasks": len(bot_of(app).tasks)}
    return health


async def run_app(app: AsyncApp, settings: Settings, stop: asyncio.Event,
                  on_ready: Callable[[int], None] | None = None) -> None:
    """Serve `app` until `stop` is set; then cancel background work cleanly."""
    owned = None
    if app.client.session is None:  # one connection pool for every Web API call, not one per call
        app.client.session = owned = aiohttp.ClientSession()
    try:
        await _run_app(app, settings, stop, on_ready)
    finally:
        if owned is not None:
            await owned.close()


async def _run_app(app: AsyncApp, settings: Settings, stop: asyncio.Event,
                   on_ready: Callable[[int], None] | None) -> None:
    auth = await warm_auth(app)
    handler = None
    if settings.slack_app_token is not None:
        handler = AsyncSocketModeHandler(app, settings.slack_app_token.get_secret_value())
        await handler.connect_async()
        health = socket_health(app, handler)
    else:
        health = http_health(app, auth)
    web_app = http_app(None if handler else app, health, readiness(app, health),
                       bot_of(app).poster.metrics)
    runner, port = await start_site(web_app, settings.http_host, settings.http_port)
    log.info("mailcheck serving (%s mode) on port %s", "socket" if handler else "http", port)
    try:
        if on_ready:
            on_ready(port)
        await stop.wait()
    finally:  # no new events first, then let fixes in progress finish and report
        if handler is not None:
            await handler.close_async()
        await runner.cleanup()
        await bot_of(app).tasks.shutdown(drain=settings.drain_timeout)
        await bot_of(app).poster.close()


async def serve(settings: Settings, *, inventory: Inventory | None = None,
                engine: Checker | None = None, fixes: Fixes | None = None,
                wiring: Wiring | None = None) -> None:
    """The `mailcheck serve` entry point: runs until SIGINT/SIGTERM. The engine and the fix
    service come from `wiring` (default: Wiring(settings, inventory)) unless given:
    bot.fixes.FixService from the wiring, approver user groups resolved through Slack."""
    wiring = wiring or Wiring(settings, inventory)
    try:  # the schema is migrated here, before any event is taken
        await wiring.store.ping()
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"the store {settings.database} cannot be used: {e}") from e
    client = make_client(settings)
    engine = engine or wiring.engine()
    if fixes is None:
        fixes = wiring.fix_service(group_members=slack_group_members(client))
    app = build_app(settings, wiring.inventory, engine, fixes, client, store=wiring.store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    service = fixes if isinstance(fixes, RealFixService) else None  # a test's fake: neither
    background: list[asyncio.Task] = []

    def ready(_port: int) -> None:
        if service is not None:  # plans left mid-apply, by an earlier run or another replica
            background.append(asyncio.create_task(reconcile_every(
                service, bot_of(app).poster, settings.reconcile_interval)))

    try:
        await run_app(app, settings, stop, on_ready=ready)
    finally:
        for task in background:  # idempotent: what it did not finish, the next start does
            task.cancel()
        if service is not None and await service.drain(0):  # past drain_timeout: recorded
            log.error("fixes were cancelled at shutdown; the next start reconciles them")
        await wiring.aclose()


async def reconcile_every(service: RealFixService, poster: SlackPoster, interval: float) -> None:
    """At start, then every `interval` s (0: at start only): a replica that died mid-apply
    is reconciled by one that lives (bot/fixes/reconcile.py picks exactly one)."""
    while True:
        await announce_reconciled(service, poster)
        if interval <= 0:
            return
        await asyncio.sleep(interval)


async def announce_reconciled(service: RealFixService, poster: SlackPoster) -> None:
    """Reconcile plans left mid-apply, and tell each plan's channel what its host shows."""
    try:
        found = await service.reconcile()
    except Exception:
        log.exception("reconciling plans left mid-apply failed")
        return
    for r in found:
        log.warning("reconciled %s on %s: %s", r.plan_id, r.host, r.status)
        if not r.channel.startswith(("C", "G", "D")):  # a CLI plan: the audit log has it
            continue
        try:
            await poster.call("chat_postMessage", channel=r.channel, text=trim(reconciled_text(r), 3000))
        except SlackApiError as e:
            log.error("could not tell %s about %s: %s", r.channel, r.plan_id, e.response.get("error"))

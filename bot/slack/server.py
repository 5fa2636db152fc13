"""`mailcheck serve`: Socket Mode when SLACK_APP_TOKEN is set, else HTTP mode.

HTTP mode: an aiohttp server on settings.http_port with POST /slack/events
(Bolt verifies the v0 signature and the timestamp) and GET /healthz.
Socket Mode: slack_bolt's aiohttp AsyncSocketModeHandler, and the same port
serves only /healthz, which answers 200 only while the socket is connected.
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
from bot.slack.app import bot_of, build_app, make_client
from bot.slack.contracts import Fixes
from bot.slack.poster import SlackPoster
from bot.wiring import Wiring
from config.inventory import Inventory
from config.settings import Settings

log = logging.getLogger(__name__)
Health = Callable[[], Awaitable[dict]]


def http_app(app: AsyncApp | None, health: Health) -> web.Application:
    """/slack/events (when app is given) and /healthz."""

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    async def healthz(_request: web.Request) -> web.Response:
        state = await health()
        return web.json_response(state, status=200 if state.get("ok") else 503)

    web_app = web.Application()
    if app is not None:
        web_app.router.add_post("/slack/events", events)
    web_app.router.add_get("/healthz", healthz)
    return web_app


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
        web_app = http_app(None, socket_health(app, handler))
    else:
        web_app = http_app(app, http_health(app, auth))
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
        if service is not None:  # plans an earlier run left mid-apply: re-read their hosts
            background.append(asyncio.create_task(announce_reconciled(service, bot_of(app).poster)))

    try:
        await run_app(app, settings, stop, on_ready=ready)
    finally:
        for task in background:  # idempotent: what it did not finish, the next start does
            task.cancel()
        if service is not None and await service.drain(0):  # past drain_timeout: recorded
            log.error("fixes were cancelled at shutdown; the next start reconciles them")


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
            await poster.call("chat_postMessage", channel=r.channel, text=r.text[:3000])
        except SlackApiError as e:
            log.error("could not tell %s about %s: %s", r.channel, r.plan_id, e.response.get("error"))

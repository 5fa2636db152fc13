"""A local fake of the Slack Web API, response_urls and Socket Mode.

It records every call and refuses what Slack refuses: a bad or missing token
(`invalid_auth`), blocks over Block Kit's limits (`invalid_blocks`), a message
whose blocks are too long in total (`msg_blocks_too_long`), a channel the bot
is not in (`not_in_channel`), and it can answer 429 with Retry-After.
`apps.connections.open` hands out a WebSocket URL on this same server that
delivers Socket Mode envelopes and collects the bot's acks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
MAX_BLOCKS, MAX_MODAL_BLOCKS = 50, 100
MAX_TOTAL_TEXT = 12_000  # Slack's msg_blocks_too_long; stricter than the real ~13k


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    at: float
    status: int = 200
    error: str | None = None


@dataclass
class FakeSlack:
    bot_token: str = BOT_TOKEN
    app_token: str = APP_TOKEN
    not_in_channel: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    responses: list[dict] = field(default_factory=list)  # what was POSTed to response_urls
    messages: dict[tuple[str, str], dict] = field(default_factory=dict)  # (channel, ts) -> last
    homes: dict[str, dict] = field(default_factory=dict)  # user id -> published Home view
    acks: dict[str, dict] = field(default_factory=dict)  # socket mode envelope id -> ack
    url: str = ""
    _rate_limits: dict[str, list[float]] = field(default_factory=dict)
    _ts: itertools.count = field(default_factory=lambda: itertools.count(1))
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _ack_events: dict[str, asyncio.Event] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    # --- lifecycle ----------------------------------------------------------------
    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/response/{id}", self._response_url)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def response_url(self) -> str:
        return f"{self.url}/response/{uuid.uuid4().hex}"

    # --- knobs --------------------------------------------------------------------
    def rate_limit(self, method: str, times: int = 1, retry_after: float = 1) -> None:
        """The next `times` calls of `method` answer 429 with this Retry-After."""
        self._rate_limits.setdefault(method, []).extend([retry_after] * times)

    def of(self, method: str, ok: bool | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (ok is None or (c.error is None) == ok)]

    # --- the Web API -----------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _args(request)
        call = Call(method, args, time.monotonic())
        self.calls.append(call)
        pending = self._rate_limits.get(method)
        if pending:
            call.status, call.error = 429, "ratelimited"
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": str(pending.pop(0))})
        token = _token(request, args)
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return self._error(call, "invalid_auth" if token else "not_authed")
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return self._error(call, "unknown_method")
        result = handler(args)
        if "error" in result:
            return self._error(call, result["error"], result.get("detail"))
        return web.json_response({"ok": True, **result})

    @staticmethod
    def _error(call: Call, error: str, detail: str | None = None) -> web.Response:
        call.error = error
        body = {"ok": False, "error": error}
        if detail:
            body["response_metadata"] = {"messages": [detail]}
        return web.json_response(body)

    def _m_auth_test(self, _args: dict) -> dict:
        return {"url": "https://lab.slack.test/", "team": "Lab", "user": "mailcheck",
                "team_id": "T0LAB", "user_id": "U0BOT", "bot_id": "B0BOT"}

    def _m_chat_postMessage(self, args: dict) -> dict:
        channel = args.get("channel", "")
        if channel in self.not_in_channel:
            return {"error": "not_in_channel"}
        problem = check_blocks(args.get("blocks"), MAX_BLOCKS)
        if problem:
            return problem
        if channel.startswith(("U", "W")):  # a user: the app's direct message with them
            channel = "D" + channel[1:]
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        self.messages[(channel, ts)] = args
        return {"channel": channel, "ts": ts, "message": {"text": args.get("text")}}

    def _m_chat_update(self, args: dict) -> dict:
        key = (args.get("channel", ""), args.get("ts", ""))
        if key not in self.messages:
            return {"error": "message_not_found"}
        problem = check_blocks(args.get("blocks"), MAX_BLOCKS)
        if problem:
            return problem
        self.messages[key] = args
        return {"channel": key[0], "ts": key[1]}

    def _m_chat_postEphemeral(self, args: dict) -> dict:
        return check_blocks(args.get("blocks"), MAX_BLOCKS) or {"message_ts": "1.0"}

    @staticmethod
    def _view(args: dict, needs: str, kind: str) -> tuple[dict, dict]:
        """(the view, {} or the error Slack gives): `needs` an argument, a view of `kind`."""
        view = args.get("view")
        view = json.loads(view) if isinstance(view, str) else view
        if not view or not args.get(needs) or view.get("type") != kind:
            return view or {}, {"error": "invalid_arguments"}
        return view, check_blocks(view.get("blocks"), MAX_MODAL_BLOCKS, total=None)

    def _m_views_open(self, args: dict) -> dict:
        view, problem = self._view(args, "trigger_id", "modal")
        return problem or {"view": view}

    def _m_views_publish(self, args: dict) -> dict:
        view, problem = self._view(args, "user_id", "home")
        if not problem:
            self.homes[args["user_id"]] = view
        return problem or {"view": {**view, "id": "V0HOME"}}

    def _m_apps_connections_open(self, _args: dict) -> dict:
        return {"url": self.url.replace("http://", "ws://") + "/socket"}

    # --- response_url -------------------------------------------------------------------
    async def _response_url(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.responses.append(payload)
        problem = check_blocks(payload.get("blocks"), MAX_BLOCKS)
        if problem:
            return web.Response(status=400, text=problem["error"])
        return web.Response(text="ok")

    # --- Socket Mode ----------------------------------------------------------------------
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "connection_info": {"app_id": "A0LAB"}})
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    env = data.get("envelope_id")
                    if env:
                        self.acks[env] = data
                        self._ack_events.setdefault(env, asyncio.Event()).set()
        finally:
            self._sockets.remove(ws)
        return ws

    @property
    def socket_connected(self) -> bool:
        return bool(self._sockets)

    async def deliver(self, kind: str, payload: dict, wait: float = 5.0,
                      retry_attempt: int | None = None) -> dict:
        """Send an envelope over the socket; returns the bot's ack (raises on timeout)."""
        env = uuid.uuid4().hex
        event = self._ack_events.setdefault(env, asyncio.Event())
        envelope = {"type": kind, "envelope_id": env, "payload": payload,
                    "accepts_response_payload": kind != "events_api"}
        if retry_attempt is not None:
            envelope.update(retry_attempt=retry_attempt, retry_reason="timeout")
        await self._sockets[-1].send_json(envelope)
        await asyncio.wait_for(event.wait(), wait)
        return self.acks[env]

    async def drop_sockets(self) -> None:
        for ws in list(self._sockets):
            await ws.close()


async def _args(request: web.Request) -> dict:
    if request.content_type == "application/json":
        data = await request.json()
    else:
        data = dict(await request.post())
    data.update(request.query)
    for key in ("blocks", "view"):
        if isinstance(data.get(key), str):
            data[key] = json.loads(data[key])
    return data


def _token(request: web.Request, args: dict) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer "):]
    return args.get("token")


# --- what Slack checks in blocks -------------------------------------------------------------
LIMITS = {"header": 150, "section": 3000, "context": 3000}


def _collect(obj: Any, keep) -> list[str]:
    """The `text` strings of every dict inside obj that `keep` accepts."""
    if isinstance(obj, dict):
        out = [obj["text"]] if isinstance(obj.get("text"), str) and keep(obj) else []
        for v in obj.values():
            if isinstance(v, dict | list):
                out += _collect(v, keep)
        return out
    if isinstance(obj, list):
        return [t for item in obj for t in _collect(item, keep)]
    return []


def _texts(obj: Any) -> list[str]:
    return _collect(obj, lambda _d: True)


def _block_problem(block: dict) -> str | None:
    kind = block.get("type")
    text = (block.get("text") or {}).get("text", "")
    if kind in LIMITS and len(text) > LIMITS[kind]:
        return f"{kind} text longer than {LIMITS[kind]}"
    if kind == "section" and not text and not block.get("fields"):
        return "section without text"
    fields = block.get("fields") or []
    if len(fields) > 10 or any(len(f.get("text", "")) > 2000 for f in fields):
        return "more than 10 fields, or a field longer than 2000"
    if (block.get("accessory") or {}).get("type") == "button":
        return _button_problem(block["accessory"])
    if kind == "actions":
        elements = block.get("elements", [])
        if not 0 < len(elements) <= 25:
            return "actions must have 1..25 elements"
        for el in elements:
            problem = _button_problem(el)
            if problem:
                return problem
    return None


def _button_problem(el: dict) -> str | None:
    if len(el.get("text", {}).get("text", "")) > 75:
        return "button text longer than 75"
    if len(el.get("value", "")) > 2000:
        return "button value longer than 2000"
    confirm = el.get("confirm")
    if confirm and len(confirm.get("text", {}).get("text", "")) > 300:
        return "confirm text longer than 300"
    return None


CONTROL = re.compile(r"<[^<>\n]*>")


def mrkdwn_texts(obj: Any) -> list[str]:
    """Every text Slack reads as mrkdwn: mrkdwn text objects (not plain_text), and a message's
    top-level `text` (a dict without a type: chat.* arguments, response_url payloads)."""
    return _collect(obj, lambda d: d.get("type", "mrkdwn") == "mrkdwn")


def live_markup(obj: Any) -> list[str]:
    """What Slack would turn into a mention, a channel-wide notification or a link: each
    `<...>` control sequence in mrkdwn (escaped text, `&lt;...&gt;`, is shown as it is)."""
    return [m for t in mrkdwn_texts(obj) for m in CONTROL.findall(t)]


def check_blocks(blocks: Any, max_blocks: int, total: int | None = MAX_TOTAL_TEXT) -> dict:
    """{} when Slack would take these blocks, else {"error": ..., "detail": ...}."""
    if blocks is None:
        return {}
    if not isinstance(blocks, list) or len(blocks) > max_blocks:
        return {"error": "invalid_blocks", "detail": f"more than {max_blocks} blocks"}
    for i, block in enumerate(blocks):
        problem = _block_problem(block)
        if problem:
            return {"error": "invalid_blocks", "detail": f"block {i}: {problem}"}
    if total is not None and sum(len(t) for t in _texts(blocks)) > total:
        return {"error": "msg_blocks_too_long"}
    return {}

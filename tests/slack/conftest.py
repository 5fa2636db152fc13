"""Fixtures for the Slack tests: the fake Slack, a scripted engine, the real
Bolt app served by the real aiohttp server on 127.0.0.1 port 0, and signed
requests in Slack's own payload shapes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import pytest

from bot.checks.registry import STEPS
from bot.engine import Progress
from bot.fixes.outcomes import ApplyOutcome, RollbackOutcome
from bot.models import Actor, Finding, Fix, Report, StepResult
from bot.slack.app import bot_of, build_app
from bot.slack.server import run_app
from bot.store import SQLiteStore, Store
from config.inventory import Host, Inventory
from config.settings import Settings
from tests.slack.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def make_settings(fake: FakeSlack, *, socket: bool = False, token: str = BOT_TOKEN) -> Settings:
    return Settings(_env_file=None, SLACK_BOT_TOKEN=token, SLACK_SIGNING_SECRET=SECRET,
                    SLACK_APP_TOKEN=APP_TOKEN if socket else None, slack_api_url=fake.api_url,
                    http_port=0, http_host="127.0.0.1", inventory=None)


def make_inventory() -> Inventory:
    return Inventory.model_validate({"hosts": {
        "mx1": {"address": "198.18.200.2", "tags": ["prod"]},
        "mx2": {"address": "198.18.201.2"},
    }})


def broken_report(host: Host, steps: Sequence[str] = STEPS) -> Report:
    fix = Fix(id="fw-input-25", kind="firewall", summary="Allow inbound SMTP (25/tcp)",
              commands=[["iptables", "-I", "INPUT", "1", "-p", "tcp", "--dport", "25", "-j", "ACCEPT"]])
    return Report(
        host=host.name, address=host.address, duration=1.2,
        steps=[StepResult(name=s, status="fail" if s == "firewall" else "ok", summary=f"{s} done",
                          evidence=f"evidence of {s}") for s in steps],
        findings=[Finding(code="firewall-blocks", severity="critical", step="firewall",
                          summary="Port 25 is dropped by -A INPUT -p tcp --dport 25 -j DROP",
                          evidence="-A INPUT -p tcp -m tcp --dport 25 -j DROP", fixes=[fix.id])],
        fixes=[fix])


@dataclass
class ScriptedEngine:
    """Calls progress for each step like the real engine; records every call."""

    delay: float = 0.0
    crash_at: str | None = None
    exc: Exception = field(default_factory=lambda: RuntimeError("boom"))
    calls: list[tuple[str, tuple[str, ...] | None]] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def check(self, host: Host, *, steps: Sequence[str] | None = None,
                    progress: Progress | None = None) -> Report:
        self.calls.append((host.name, tuple(steps) if steps else None))
        full = broken_report(host, steps or STEPS)
        partial = Report(host=host.name, address=host.address)
        for step in full.steps:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.delay)
            if step.name == self.crash_at:
                raise self.exc
            partial.steps.append(step)
            if progress:
                await progress(step, partial)
        return full

    async def check_domain(self, domain: str, *, progress: Progress | None = None) -> Report:
        self.calls.append((f"dns {domain}", None))
        step = StepResult(name="dns", status="fail", summary=f"{domain}: spf_excludes_host")
        if progress:
            await progress(step, Report(host=domain, address=""))
        return Report(host=domain, address="", steps=[step], findings=[Finding(
            code="dns.spf_excludes_host", severity="error", step="dns", summary="SPF fails",
            evidence="v=spf1 -all", records=[f'{domain}. 3600 IN TXT "v=spf1 ip4:198.18.200.2 -all"'],
            advice="the DNS provider of the zone example.com: dns-provider.test")])


@dataclass(frozen=True)
class FixCall:
    kind: str  # apply | rollback
    value: str  # the plan id or change id
    actor: Actor


class RecordingFixes:
    """What the Slack side calls of bot.fixes.FixService (bot.slack.contracts.Fixes), recorded:
    plans in a dict; every apply and rollback is refused ("recorded only"), nothing runs.
    The real FixService behind the buttons: test_fix_buttons.py, test_triage.py, and the lab."""

    def __init__(self) -> None:
        self.plans: dict[str, tuple[str, str, str]] = {}  # plan id -> (host, fix id, requester)
        self.checks: list[tuple[str, str, str]] = []  # (host, actor, channel)
        self.calls: list[FixCall] = []

    async def record_check(self, report: Report, actor: Actor, channel: str = "") -> None:
        self.checks.append((report.host, str(actor), channel))

    async def register(self, report: Report, requested_by: Actor, channel: str = "") -> dict[str, str]:
        ids = {}
        for fix in report.fixes:
            plan_id = "p_" + secrets.token_urlsafe(9)
            self.plans[plan_id] = (report.host, fix.id, str(requested_by))
            ids[fix.id] = plan_id
        return ids

    async def apply(self, plan_id: str, actor: Actor) -> ApplyOutcome:
        self.calls.append(FixCall("apply", plan_id, actor))
        host = self.plans.get(plan_id, ("?",))[0]
        return ApplyOutcome("refused", "recorded only", plan_id, host=host, actor=str(actor))

    async def rollback(self, change_id: str, actor: Actor) -> RollbackOutcome:
        self.calls.append(FixCall("rollback", change_id, actor))
        return RollbackOutcome("refused", "recorded only", change_id, actor=str(actor))


@dataclass
class Served:
    url: str
    fake: FakeSlack
    engine: ScriptedEngine
    fixes: RecordingFixes
    app: object
    stop: asyncio.Event
    task: asyncio.Task

    @property
    def bot(self):
        return bot_of(self.app)

    async def settle(self) -> None:
        """Wait until every background task (checks, clicks) is done."""
        await asyncio.sleep(0.05)
        await self.bot.tasks.join()


async def start_served(fake: FakeSlack, engine, *, socket: bool = False, interval: float = 0.05,
                       check_timeout: float = 30.0, inventory: Inventory | None = None,
                       store: Store | None = None) -> Served:
    """The app served on port 0; `store` default: a fresh SQLite file in the test's tmp_path."""
    settings = make_settings(fake, socket=socket)
    fixes = RecordingFixes()
    inventory = inventory if inventory is not None else make_inventory()
    if store is None:
        if not _STORE_DIR:
            raise ValueError("start_served outside tests/slack: pass store=SQLiteStore(tmp_path / ...)")
        store = SQLiteStore(_STORE_DIR[0] / f"mc-{time.time_ns()}.db")
    app = build_app(settings, inventory, engine, fixes, update_interval=interval,
                    check_timeout=check_timeout, store=store)
    stop, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_app(app, settings, stop, on_ready=ready.set_result))
    port = await asyncio.wait_for(ready, 10)
    return Served(f"http://127.0.0.1:{port}", fake, engine, fixes, app, stop, task)


_STORE_DIR: list = []


@pytest.fixture(autouse=True)
def _store_dir(tmp_path):
    """Where start_served keeps each app's SQLite store: the test's own tmp_path."""
    _STORE_DIR[:] = [tmp_path]
    yield


@pytest.fixture
async def fake():
    fake = await FakeSlack().start()
    yield fake
    await fake.stop()


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
async def served(fake, engine):
    s = await start_served(fake, engine)
    yield s
    s.stop.set()
    await asyncio.wait_for(s.task, 15)


def buttons(blocks: list[dict]) -> list[dict]:
    """Every button of a message: section accessories and actions elements, in order."""
    out = []
    for b in blocks:
        if (b.get("accessory") or {}).get("type") == "button":
            out.append(b["accessory"])
        if b.get("type") == "actions":
            out += b["elements"]
    return out


# --- Slack's payloads, signed ----------------------------------------------------------------
def sign(body: str, timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def slash_body(text: str, response_url: str, *, channel: str = "C0MAIL", user: str = "U0ALICE",
               trigger: str | None = None) -> str:
    return urllib.parse.urlencode({
        "token": "legacy-verification-token", "team_id": "T0LAB", "team_domain": "lab",
        "channel_id": channel, "channel_name": "mail-ops", "user_id": user, "user_name": "alice",
        "command": "/mailcheck", "text": text, "api_app_id": "A0LAB",
        "is_enterprise_install": "false", "response_url": response_url,
        "trigger_id": trigger or f"{time.time_ns()}.1.abc",
    })


def action_payload(action_id: str, value: str, response_url: str, *, channel: str = "C0MAIL",
                   user: str = "U0BOB", message_ts: str = "1700000000.000100") -> dict:
    return {
        "type": "block_actions", "api_app_id": "A0LAB", "token": "legacy-verification-token",
        "user": {"id": user, "username": "bob", "name": "bob", "team_id": "T0LAB"},
        "team": {"id": "T0LAB", "domain": "lab"}, "channel": {"id": channel, "name": "mail-ops"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                      "is_ephemeral": False},
        "trigger_id": f"{time.time_ns()}.2.def", "response_url": response_url,
        "message": {"type": "message", "ts": message_ts, "text": "report", "blocks": []},
        "actions": [{"action_id": action_id, "block_id": "b1", "type": "button", "value": value,
                     "text": {"type": "plain_text", "text": "x"}, "action_ts": str(time.time())}],
    }


def view_payload(callback_id: str, metadata: str, values: dict) -> dict:
    return {
        "type": "view_submission", "api_app_id": "A0LAB", "token": "legacy-verification-token",
        "team": {"id": "T0LAB", "domain": "lab"},
        "user": {"id": "U0BOB", "username": "bob", "name": "bob", "team_id": "T0LAB"},
        "trigger_id": f"{time.time_ns()}.3.ghi",
        "view": {"id": "V0001", "team_id": "T0LAB", "type": "modal", "callback_id": callback_id,
                 "private_metadata": metadata, "state": {"values": values}, "hash": "1.a",
                 "blocks": [], "title": {"type": "plain_text", "text": "Break glass"}},
    }


def shortcut_payload(message: dict, *, callback_id: str = "mailcheck_check_host",
                     channel: str = "C0ALERTS", user: str = "U0ALICE", response_url: str = "") -> dict:
    """A message shortcut (type message_action) on `message`, as Slack sends it."""
    return {
        "type": "message_action", "callback_id": callback_id, "api_app_id": "A0LAB",
        "token": "legacy-verification-token", "action_ts": str(time.time()),
        "trigger_id": f"{time.time_ns()}.4.jkl", "response_url": response_url,
        "team": {"id": "T0LAB", "domain": "lab"}, "channel": {"id": channel, "name": "alerts"},
        "user": {"id": user, "username": "alice", "name": "alice", "team_id": "T0LAB"},
        "message_ts": message["ts"], "message": {"type": "message", **message},
    }


def event_body(event: dict) -> str:
    """An Events API delivery (event_callback) as JSON."""
    return json.dumps({"token": "legacy-verification-token", "team_id": "T0LAB", "api_app_id": "A0LAB",
                       "event": event, "type": "event_callback", "event_id": f"Ev{time.time_ns()}",
                       "event_time": int(time.time()), "authorizations": [{
                           "team_id": "T0LAB", "user_id": "U0BOT", "is_bot": True}]})


def form_payload(payload: dict) -> str:
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


async def post_signed(url: str, body: str, *, headers: dict | None = None,
                      timestamp: int | None = None, signed: bool = True) -> tuple[int, str, float]:
    """POST like Slack does; returns status, body text and seconds until the answer."""
    h = {"Content-Type": "application/json" if body.startswith("{")
         else "application/x-www-form-urlencoded"}
    if signed:
        h.update(sign(body, timestamp))
    h.update(headers or {})
    start = time.perf_counter()
    async with aiohttp.ClientSession() as s, s.post(url + "/slack/events", data=body,
                                                     headers=h) as r:
        text = await r.text()
        return r.status, text, time.perf_counter() - start

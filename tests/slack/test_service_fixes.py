"""bot/slack/fix_buttons.py: a click through the real app to the fix service and back. An
applied fix is said in the report's thread (no message to update here), a refusal goes
only to the clicker, names the approvers as mentions, and every post uses the app's poster."""

from __future__ import annotations

import asyncio
import contextlib

from bot.fixes.outcomes import ApplyOutcome, RollbackOutcome
from bot.fixes.policy import Approvers
from bot.models import Actor
from bot.slack.app import bot_of, build_app
from bot.slack.server import run_app
from bot.store import SQLiteStore
from tests.slack.conftest import (
    ScriptedEngine,
    action_payload,
    form_payload,
    make_inventory,
    make_settings,
    post_signed,
)


class RecordingService:
    """The methods of bot.fixes.FixService the Slack side calls."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, str]] = []
        self.checks: list[str] = []

    async def record_check(self, report, actor, channel=""):
        self.checks.append(report.host)

    async def register(self, report, requested_by, channel=""):
        return {f.id: "p_" + f.id for f in report.fixes}

    async def apply(self, plan_id, actor, **_kw):
        self.applied.append((plan_id, str(actor)))
        if actor == Actor("slack", "U0BOB"):
            return ApplyOutcome("applied", "port 25 open from outside", plan_id, host="mx1",
                                summary="Allow inbound SMTP", actor=str(actor), change_id="c_1")
        return ApplyOutcome("refused", "you may not approve fixes on mx1", plan_id, host="mx1",
                            actor=str(actor), approvers=Approvers(frozenset({"U0BOB"}),
                                                                  frozenset({"S0OPS"})))

    async def rollback(self, change_id, actor, **_kw):
        return RollbackOutcome("rolled_back", "restored exactly", change_id, host="mx1",
                               actor=str(actor))


@contextlib.asynccontextmanager
async def serving(fake, service, store_path):
    """The real Bolt app and HTTP server calling `service`; yields the app's URL."""
    settings = make_settings(fake)
    app = build_app(settings, make_inventory(), ScriptedEngine(), service,
                    store=SQLiteStore(store_path))
    stop, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_app(app, settings, stop, on_ready=ready.set_result))
    try:
        yield f"http://127.0.0.1:{await ready}"
        await bot_of(app).tasks.join()
    finally:
        stop.set()
        await task


async def test_applied_goes_to_the_thread_refused_only_to_the_clicker(fake, tmp_path):
    service = RecordingService()
    async with serving(fake, service, tmp_path / "mc.db") as url:
        ok = action_payload("mailcheck_apply_0", "p_fw", fake.response_url(), user="U0BOB")
        no = action_payload("mailcheck_apply_0", "p_fw", fake.response_url(), user="U0EVE")
        back = action_payload("mailcheck_rollback", "c_1", fake.response_url(), user="U0BOB")
        for payload in (ok, no, back):
            assert (await post_signed(url, form_payload(payload)))[0] == 200
    assert service.applied == [("p_fw", "U0BOB"), ("p_fw", "U0EVE")]
    posted = [c.args for c in fake.of("chat.postMessage", ok=True)]
    assert [p["thread_ts"] for p in posted] == [ok["container"]["message_ts"]] * 2
    assert "*applied*" in posted[0]["text"] and "*rolled_back*" in posted[1]["text"]
    (refusal,) = fake.responses
    assert refusal["response_type"] == "ephemeral" and "may not approve" in refusal["text"]
    assert "approvers: <@U0BOB>, <!subteam^S0OPS>" in refusal["text"]
    assert all(c.method in ("auth.test", "chat.postMessage") for c in fake.calls)
    first, second = (c.at for c in fake.of("chat.postMessage", ok=True))
    assert second - first >= 0.95  # the app's poster paces each channel (1 s by default)


class FailingService(RecordingService):
    """An apply whose restore failed: the host may be half-changed."""

    async def apply(self, plan_id, actor, **_kw):
        self.applied.append((plan_id, str(actor)))
        return ApplyOutcome("not_restored", "restoring the backup FAILED (iptables-restore: line 3 "
                            "failed): NOT restored.", plan_id, host="mx1", summary="Allow SMTP",
                            actor=str(actor), left="+-A INPUT -p tcp --dport 22 -j DROP")


async def test_a_not_restored_outcome_reaches_the_channel_also_where_the_bot_is_not(fake, tmp_path):
    fake.not_in_channel.add("C0PRIV")
    async with serving(fake, FailingService(), tmp_path / "mc.db") as url:
        here = action_payload("mailcheck_apply_0", "p_fw", fake.response_url(), user="U0BOB")
        there = action_payload("mailcheck_apply_0", "p_fw2", fake.response_url(), user="U0BOB",
                               channel="C0PRIV")
        for payload in (here, there):
            assert (await post_signed(url, form_payload(payload)))[0] == 200
    [posted] = [c.args for c in fake.of("chat.postMessage", ok=True)]
    assert posted["channel"] == "C0MAIL" and "*not_restored*" in posted["text"]
    assert "NOT restored" in posted["text"] and "--dport 22 -j DROP" in posted["text"]
    assert [c.error for c in fake.of("chat.postMessage", ok=False)] == ["not_in_channel"]
    (fallback,) = fake.responses  # the private channel hears it through the response_url
    assert fallback["response_type"] == "in_channel" and "NOT restored" in fallback["text"]

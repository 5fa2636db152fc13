"""The real Bolt app behind the real aiohttp server (HTTP mode), driven by
signed requests in Slack's payload shapes, against the fake Web API."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import pytest

from bot.errors import ConfigError, UnreachableError
from bot.models import Actor
from bot.slack.app import build_app
from bot.slack.server import run_app
from bot.store import SQLiteStore
from tests.slack.conftest import (
    RecordingFixes,
    ScriptedEngine,
    action_payload,
    buttons,
    form_payload,
    make_inventory,
    make_settings,
    post_signed,
    slash_body,
    start_served,
    view_payload,
)
from tests.slack.fake_slack import MAX_BLOCKS, check_blocks


def texts(blocks: list[dict]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def final_message(fake) -> dict:
    (key,) = fake.messages
    return fake.messages[key]


# --- refused before anything runs -------------------------------------------------------------
@pytest.mark.parametrize("how", ["unsigned", "stale", "bad_signature"])
async def test_unsigned_or_stale_requests_are_refused(served, fake, how):
    body = slash_body("mx1", fake.response_url())
    kw = {"unsigned": {"signed": False}, "stale": {"timestamp": int(time.time()) - 600},
          "bad_signature": {"headers": {"X-Slack-Signature": "v0=" + "0" * 64}}}[how]
    status, _, _ = await post_signed(served.url, body, **kw)
    await served.settle()
    assert status == 401
    assert served.engine.calls == [] and not fake.of("chat.postMessage")


async def test_help_and_hosts_are_ephemeral_answers(served, fake):
    for text, expect in (("help", "Usage"), ("", "Usage"), ("hosts", "`mx1` (198.18.200.2)")):
        status, body, _ = await post_signed(served.url, slash_body(text, fake.response_url()))
        assert status == 200
        answer = json.loads(body)
        assert answer["response_type"] == "ephemeral" and expect in answer["text"]
    assert "`mx2`" in answer["text"]
    await served.settle()
    assert served.engine.calls == [] and not fake.of("chat.postMessage")


@pytest.mark.parametrize("target", ["evil.example.com", "203.0.113.9", "root@mx1:2222", "<@U1>"])
async def test_non_inventory_target_is_refused_without_any_lookup(served, fake, monkeypatch, target):
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def recording(host, *a, **kw):
        looked_up.append(str(host))
        return real(host, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    status, body, _ = await post_signed(served.url, slash_body(target, fake.response_url()))
    await served.settle()
    answer = json.loads(body)
    assert status == 200 and answer["response_type"] == "ephemeral"
    assert "not in mailcheck's inventory" in answer["text"] and "`mx1`" in answer["text"]
    assert served.engine.calls == []
    assert not any(target.split("@")[-1].split(":")[0] in h for h in looked_up), looked_up
    assert not fake.of("chat.postMessage")


async def test_unknown_step_is_refused(served, fake):
    _, body, _ = await post_signed(served.url, slash_body("mx1 portscan", fake.response_url()))
    assert "not a step I know" in json.loads(body)["text"]
    await served.settle()
    assert served.engine.calls == []


# --- a check, posted and updated in place ------------------------------------------------------
async def test_check_posts_once_updates_in_place_and_ends_as_the_report(served, fake):
    status, body, elapsed = await post_signed(served.url, slash_body("mx1", fake.response_url()))
    assert status == 200 and "Checking `mx1`" in json.loads(body)["text"]
    assert elapsed < 1.0
    await served.settle()
    assert served.engine.calls == [("mx1", None)]
    assert len(fake.of("chat.postMessage")) == 1
    updates = fake.of("chat.update", ok=True)
    assert len(updates) >= 2
    ts = fake.of("chat.postMessage")[0].args and next(iter(fake.messages))[1]
    assert {u.args["ts"] for u in updates} == {ts}
    assert "checking" in texts(fake.of("chat.postMessage")[0].args["blocks"])
    final = final_message(fake)["blocks"]
    assert final[0]["type"] == "header" and "mx1: mail cannot flow" in final[0]["text"]["text"]
    assert "dropped by -A INPUT -p tcp --dport 25 -j DROP" in texts(final)
    (plan_id,) = served.fixes.plans
    apply = [b for b in buttons(final) if b["action_id"].startswith("mailcheck_apply")]
    assert [b["value"] for b in apply] == [plan_id]
    assert apply[0]["text"]["text"] == "Allow inbound SMTP (25/tcp)"
    assert "iptables -I INPUT 1 -p tcp --dport 25 -j ACCEPT" in apply[0]["confirm"]["text"]["text"]
    assert {b["action_id"] for b in buttons(final)} >= {"mailcheck_recheck", "mailcheck_details"}
    assert check_blocks(final, MAX_BLOCKS) == {}


async def test_one_step(served, fake):
    await post_signed(served.url, slash_body("mx2 firewall", fake.response_url()))
    await served.settle()
    assert served.engine.calls == [("mx2", ("firewall",))]
    assert "firewall" in texts(final_message(fake)["blocks"])


async def test_updates_are_paced_per_channel(fake):
    served = await start_served(fake, ScriptedEngine(), interval=0.3)
    try:
        await post_signed(served.url, slash_body("mx1", fake.response_url()))
        await served.settle()
    finally:
        served.stop.set()
        await served.task
    times = [c.at for c in fake.calls if c.method in ("chat.postMessage", "chat.update")]
    assert len(times) >= 2
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.27, gaps


async def test_rate_limited_update_is_retried_after_retry_after(served, fake):
    fake.rate_limit("chat.update", times=1, retry_after=1)
    await post_signed(served.url, slash_body("mx1", fake.response_url()))
    await served.settle()
    limited = [c for c in fake.calls if c.status == 429]
    assert len(limited) == 1
    after = [c for c in fake.of("chat.update") if c.at > limited[0].at]
    assert after and after[0].at - limited[0].at >= 0.95
    assert "mx1: mail cannot flow" in final_message(fake)["blocks"][0]["text"]["text"]


async def test_not_in_channel_falls_back_to_response_url_with_invite_hint(served, fake):
    fake.not_in_channel.add("G0PRIVATE")
    await post_signed(served.url, slash_body("mx1", fake.response_url(), channel="G0PRIVATE"))
    await served.settle()
    assert [c.error for c in fake.of("chat.postMessage")] == ["not_in_channel"]
    assert not fake.of("chat.update")
    hint, report = fake.responses
    assert hint["response_type"] == "ephemeral" and "/invite @mailcheck" in hint["text"]
    assert report["response_type"] == "in_channel" and "mx1: mail cannot flow" in texts(report["blocks"])
    assert served.engine.calls == [("mx1", None)]


async def test_retried_or_duplicate_delivery_starts_one_check(served, fake):
    body = slash_body("mx1", fake.response_url(), trigger="1234.5678.same")
    first = await post_signed(served.url, body)
    retry = await post_signed(served.url, body, headers={"X-Slack-Retry-Num": "1",
                                                         "X-Slack-Retry-Reason": "http_timeout"})
    again = await post_signed(served.url, body)
    assert [first[0], retry[0], again[0]] == [200, 200, 200]
    await served.settle()
    assert served.engine.calls == [("mx1", None)]
    assert len(fake.of("chat.postMessage")) == 1


async def test_a_second_request_for_a_running_check_joins_it(fake):
    engine = ScriptedEngine(gate=asyncio.Event())
    served = await start_served(fake, engine)
    try:
        await post_signed(served.url, slash_body("mx1", fake.response_url()))
        _, body, _ = await post_signed(served.url, slash_body("mx1", fake.response_url(), user="U0B"))
        _, other, _ = await post_signed(served.url, slash_body("mx1", fake.response_url(),
                                                               channel="C0OTHER"))
        assert "still running in this channel" in json.loads(body)["text"]
        assert "<@U0ALICE>" in json.loads(body)["text"]
        assert "Checking" in json.loads(other)["text"]
        engine.gate.set()
        await served.settle()
    finally:
        served.stop.set()
        await served.task
    assert engine.calls == [("mx1", None), ("mx1", None)]  # one per channel
    assert not served.bot._running


# --- failures never leave "running" -------------------------------------------------------------
async def test_engine_crash_ends_the_message_as_an_error(fake):
    served = await start_served(fake, ScriptedEngine(crash_at="ports"))
    try:
        await post_signed(served.url, slash_body("mx1", fake.response_url()))
        await served.settle()
    finally:
        served.stop.set()
        await served.task
    final = texts(final_message(fake)["blocks"])
    assert "the check failed" in final and "step *ports*" in final and "boom" in final
    assert "checking…" not in final and "running" not in final


async def test_ssh_failure_names_the_step_and_the_cause(fake):
    exc = UnreachableError("connection refused", host="mx1", step="services")
    served = await start_served(fake, ScriptedEngine(crash_at="services", exc=exc))
    try:
        await post_signed(served.url, slash_body("mx1", fake.response_url()))
        await served.settle()
    finally:
        served.stop.set()
        await served.task
    final = texts(final_message(fake)["blocks"])
    assert "step *services*" in final and "UnreachableError" in final
    assert "connection refused" in final


async def test_fix_service_failure_still_ends_as_the_report_without_apply_buttons(served, fake):
    async def broken_register(*_a, **_kw):
        raise RuntimeError("store is down")

    served.fixes.register = broken_register
    await post_signed(served.url, slash_body("mx1", fake.response_url()))
    await served.settle()
    final = final_message(fake)["blocks"]
    assert "mx1: mail cannot flow" in final[0]["text"]["text"]
    assert [b["action_id"] for b in buttons(final)] == ["mailcheck_recheck", "mailcheck_details"]
    assert "have no Apply button" in texts(final) and "store is down" in texts(final)


async def test_timeout_ends_the_message_as_an_error(fake):
    served = await start_served(fake, ScriptedEngine(delay=5), check_timeout=0.5)
    try:
        await post_signed(served.url, slash_body("mx1", fake.response_url()))
        await served.settle()
    finally:
        served.stop.set()
        await served.task
    final = texts(final_message(fake)["blocks"])
    assert "no result within 0s" in final or "no result within 1s" in final
    assert "step *tools*" in final


async def test_shutdown_cancels_checks_and_ends_their_messages(fake):
    engine = ScriptedEngine(gate=asyncio.Event())  # never opens: the check hangs
    served = await start_served(fake, engine)
    await post_signed(served.url, slash_body("mx1", fake.response_url()))
    for _ in range(100):
        if fake.messages:
            break
        await asyncio.sleep(0.02)
    assert len(served.bot.tasks) == 1
    served.stop.set()
    await asyncio.wait_for(served.task, 10)
    assert len(served.bot.tasks) == 0
    assert "mailcheck is shutting down" in texts(final_message(fake)["blocks"])


async def test_bad_bot_token_fails_at_start_with_a_clear_error(fake, tmp_path):
    settings = make_settings(fake, token="xoxb-wrong")
    app = build_app(settings, make_inventory(), ScriptedEngine(), RecordingFixes(),
                    store=SQLiteStore(tmp_path / "mc.db"))
    with pytest.raises(ConfigError, match="invalid_auth"):
        await run_app(app, settings, asyncio.Event())
    assert fake.of("auth.test")[0].error == "invalid_auth"


async def test_healthz_in_http_mode(served):
    async with aiohttp.ClientSession() as s, s.get(served.url + "/healthz") as r:
        assert r.status == 200
        assert (await r.json())["mode"] == "http"


# --- buttons and modals -------------------------------------------------------------------------------
async def _checked(served, fake) -> tuple[str, dict]:
    await post_signed(served.url, slash_body("mx1", fake.response_url()))
    await served.settle()
    (plan_id,) = served.fixes.plans
    return plan_id, final_message(fake)


async def test_apply_click_routes_only_the_plan_id_once(served, fake):
    plan_id, _ = await _checked(served, fake)
    payload = action_payload("mailcheck_apply_0", plan_id, fake.response_url())
    status, _, elapsed = await post_signed(served.url, form_payload(payload))
    retry = await post_signed(served.url, form_payload(payload), headers={"X-Slack-Retry-Num": "1"})
    twice = await post_signed(served.url, form_payload(payload))
    assert (status, retry[0], twice[0]) == (200, 200, 200) and elapsed < 1.0
    await served.settle()
    (call,) = served.fixes.calls
    assert (call.kind, call.value, call.actor) == ("apply", plan_id, Actor("slack", "U0BOB"))
    (refusal,) = fake.responses  # the outcome, to the clicker only, through the app's poster
    assert refusal["response_type"] == "ephemeral" and "*refused*. recorded only" in refusal["text"]


async def test_rollback_click_routes_the_change_id(served, fake):
    payload = action_payload("mailcheck_rollback", "c_abc123", fake.response_url())
    status, _, _ = await post_signed(served.url, form_payload(payload))
    await served.settle()
    assert status == 200
    assert [(c.kind, c.value) for c in served.fixes.calls] == [("rollback", "c_abc123")]


async def test_recheck_runs_the_check_again(served, fake):
    await _checked(served, fake)
    await post_signed(served.url, form_payload(action_payload("mailcheck_recheck", "mx1",
                                                              fake.response_url())))
    await post_signed(served.url, form_payload(action_payload("mailcheck_recheck", "gone.example",
                                                              fake.response_url())))
    await served.settle()
    assert served.engine.calls == [("mx1", None), ("mx1", None)]
    assert "no longer in the inventory" in fake.responses[-1]["text"]


async def test_show_details_opens_a_modal_with_the_full_output(served, fake):
    _, message = await _checked(served, fake)
    details = next(b for b in buttons(message["blocks"]) if b["action_id"] == "mailcheck_details")
    await post_signed(served.url, form_payload(action_payload("mailcheck_details", details["value"],
                                                              fake.response_url())))
    await post_signed(served.url, form_payload(action_payload("mailcheck_details", "d_unknown",
                                                              fake.response_url())))
    await served.settle()
    opened, expired = fake.of("views.open", ok=True)
    assert opened.args["view"]["type"] == "modal"
    assert "evidence of conclusion" in texts(opened.args["view"]["blocks"])
    assert "Re-check" in texts(expired.args["view"]["blocks"])


async def test_view_submission_is_acked_and_applies_nothing(served, fake, caplog):
    """The break-glass modal is not built yet (bot/slack/fix_buttons.py): a submission is
    acked, logged, and changes nothing."""
    caplog.set_level("INFO", logger="bot.slack.fix_buttons")
    values = {"reason": {"text": {"type": "plain_text_input", "value": "no approver reachable"}}}
    status, body, _ = await post_signed(served.url, form_payload(
        view_payload("mailcheck_break_glass", "p_plan1", values)))
    await served.settle()
    assert status == 200 and body == ""
    assert served.fixes.calls == []
    assert "view mailcheck_break_glass submitted by U0BOB: not handled" in caplog.text

"""Where teams triage (issue 13, item 5): the "Check mail host" message shortcut and the App
Home tab, through the real Bolt app with signed requests against the fake Web API."""

from __future__ import annotations

import asyncio
import json
import time

from bot.fixes import FixService
from bot.render import blockkit
from bot.slack.app import bot_of, build_app
from bot.slack.server import run_app
from bot.store import ChangeRecord, SQLiteStore
from tests.slack.conftest import (
    ScriptedEngine,
    action_payload,
    broken_report,
    buttons,
    event_body,
    form_payload,
    make_inventory,
    make_settings,
    post_signed,
    shortcut_payload,
    slash_body,
)

ALERT = {  # an Alertmanager notification as its Slack integration posts it
    "ts": "1700000100.000200", "user": "U0ALERTMANAGER", "text": "",
    "attachments": [{"fallback": "[FIRING:1] MailPortDown", "title": "[FIRING:1] MailPortDown",
                     "text": "*Alert:* SMTP port down\n*Details:*\n• instance: mx1.example.com:25\n"
                             "• job: blackbox"}],
}


async def _app(fake, tmp_path, engine=None):
    settings = make_settings(fake).model_copy(update={"db_path": tmp_path / "mc.db"})
    inventory = make_inventory()
    store = SQLiteStore(settings.db_path)
    service = FixService(settings=settings, inventory=inventory, store=store,
                         connect=lambda h: (_ for _ in ()).throw(AssertionError("no connection")))
    app = build_app(settings, inventory, engine or ScriptedEngine(), service,
                    store=store, update_interval=0.05)
    stop, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_app(app, settings, stop, on_ready=ready.set_result))
    url = f"http://127.0.0.1:{await ready}"

    async def close():
        stop.set()
        await task

    return app, url, store, close


async def test_shortcut_on_an_alert_checks_the_host_it_names_and_answers_in_its_thread(fake, tmp_path):
    engine = ScriptedEngine()
    app, url, _store, close = await _app(fake, tmp_path, engine)
    try:
        status, body, elapsed = await post_signed(url, form_payload(
            shortcut_payload(ALERT, response_url=fake.response_url())))
        assert status == 200 and elapsed < 1.0
        await bot_of(app).tasks.join()
        nothing = {"ts": "1700000200.000300", "text": "mx10 and mx1x are other machines"}
        await post_signed(url, form_payload(shortcut_payload(nothing, response_url=fake.response_url())))
        await bot_of(app).tasks.join()
    finally:
        await close()
    assert engine.calls == [("mx1", None)]  # 'mx1.example.com' names mx1; 'mx10' does not
    (post,) = fake.of("chat.postMessage", ok=True)
    assert post.args["channel"] == "C0ALERTS" and post.args["thread_ts"] == ALERT["ts"]
    ((channel, _ts), final), = fake.messages.items()
    assert channel == "C0ALERTS" and final["blocks"][0]["text"]["text"].startswith(":x: mx1:")
    (refusal,) = fake.responses
    assert refusal["response_type"] == "ephemeral" and "names no host" in refusal["text"]


async def test_home_tab_published_with_hosts_verdicts_pending_fixes_and_changes(fake, tmp_path):
    app, url, store, close = await _app(fake, tmp_path)
    try:
        status, _, _ = await post_signed(url, event_body(
            {"type": "app_home_opened", "user": "U0ALICE", "channel": "D0ALICE", "tab": "home",
             "event_ts": str(time.time())}))
        assert status == 200
        await bot_of(app).tasks.join()
        empty = fake.homes["U0ALICE"]
        await post_signed(url, slash_body("mx1", fake.response_url()))  # a check: a report, a plan
        await bot_of(app).tasks.join()
        report = broken_report(make_inventory().hosts["mx1"])
        await store.add_change(ChangeRecord(
            id="c_1", plan_id="p_x", host=make_inventory().hosts["mx1"], fix=report.fixes[0],
            applied_by="U0BOB", applied_at=time.time(), backup_dir="/b"))
        await post_signed(url, event_body(
            {"type": "app_home_opened", "user": "U0ALICE", "channel": "D0ALICE", "tab": "home",
             "event_ts": str(time.time())}))
        await bot_of(app).tasks.join()
    finally:
        await close()
    published = fake.of("views.publish", ok=True)
    assert [c.args["user_id"] for c in published] == ["U0ALICE", "U0ALICE"]
    first = json.dumps(empty["blocks"])
    assert "*mx1*" in first and "*mx2*" in first and "not checked yet" in first
    home = fake.homes["U0ALICE"]
    text = json.dumps(home["blocks"], ensure_ascii=False)
    assert "mx1: mail cannot flow · 1 cause" in text and "checked 20" in text and "<@U0ALICE>" in text
    assert "*Pending fixes* (1)" in text and "Allow inbound SMTP (25/tcp)* on *mx1*" in text
    assert "*Recent changes*" in text and "applied by <@U0BOB>" in text
    els = buttons(home["blocks"])
    details = [e["value"] for e in els if e["action_id"] == blockkit.ACTION_DETAILS]
    assert details
    for value in set(details):
        assert (await store.get_report(value)).host == "mx1"
    assert ("mailcheck_recheck", "mx2") in [(e["action_id"], e["value"]) for e in els]


async def test_recheck_from_home_posts_in_the_users_direct_message_and_refreshes_home(fake, tmp_path):
    engine = ScriptedEngine()
    app, url, _store, close = await _app(fake, tmp_path, engine)
    try:
        payload = action_payload(blockkit.ACTION_RECHECK, "mx2", "", user="U0ALICE")
        payload["container"] = {"type": "view", "view_id": "V0HOME"}
        payload.pop("channel"), payload.pop("message"), payload.pop("response_url")
        assert (await post_signed(url, form_payload(payload)))[0] == 200
        for _ in range(3):
            await bot_of(app).tasks.join()
    finally:
        await close()
    assert engine.calls == [("mx2", None)]
    (post,) = fake.of("chat.postMessage", ok=True)
    assert post.args["channel"] == "U0ALICE"  # Slack answers with the DM's id
    assert {c.args["channel"] for c in fake.of("chat.update")} == {"D0ALICE"}
    assert all(c.error is None for c in fake.of("chat.update"))
    assert "mx2: mail cannot flow" in json.dumps(fake.homes["U0ALICE"]["blocks"])

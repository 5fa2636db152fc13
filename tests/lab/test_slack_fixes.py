"""Issue 5, Slack half, on the real path: signed block_actions through the real Bolt app
and HTTP server, the fake Slack Web API, the real bot.fixes.FixService with a SQLiteStore,
the real Engine over real SSH against a lab host whose iptables drops port 25.

(a) an approver's click applies: the kernel (a probe from outside) sees 25 open and the
    report message is updated in place (chat.update) with before/after and "Applied by";
(b) a non-approver's click is refused ephemerally, the host's ruleset is byte-identical (without
    iptables-save's "# Generated ... <time>" lines, which tick over) and
    the refusal is in the audit log;
(d) a retried delivery (X-Slack-Retry-Num) and a second click do nothing twice: one change;
(e) with four eyes on, the requester (an approver too) cannot approve.
(c, expired plans, needs no host: tests/slack/test_fix_buttons.py.)
"""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from bot.engine import Engine
from bot.fixes import FixService
from bot.models import Actor
from bot.render import report as render
from bot.slack.app import bot_of, build_app
from bot.slack.server import run_app
from bot.store import SQLiteStore
from bot.transport import SSHTransport
from config.inventory import Inventory
from tests.slack.conftest import action_payload, buttons, form_payload, make_settings, post_signed
from tests.slack.fake_slack import MAX_BLOCKS, FakeSlack, check_blocks

pytestmark = pytest.mark.lab

TS = "1700000000.000100"


def port25_fix(report):
    fixes = [f for f in report.fixes if ("inbound", "ipv4", 25) in
             [tuple(a) for a in f.expected_allow]]
    assert fixes, "the report offers no fix that opens inbound ipv4 port 25; fixes: " + \
        "; ".join(f"{f.id}: {f.summary} {f.expected_allow}" for f in report.fixes)
    return fixes[0]


async def scenario(tmp_path, lab, client_key, clicks, **settings_kw):
    """Check the host, post its report, then send `clicks` [(user, payload-tweak, headers)]."""
    host = lab()
    host.start_exim("public")
    host.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "25", "-j", "DROP")
    assert host.probe(25) == "filtered"
    inventory = Inventory.model_validate({"hosts": {"mx-lab": {
        "address": host.ip, "identity_file": str(client_key), "known_hosts": str(host.known_hosts),
        "approvers": ["U0BOB", "U0ALICE"]}}})
    fake = await FakeSlack().start()
    settings = make_settings(fake).model_copy(update={
        "db_path": tmp_path / "mc.db", "backup_dir": host.workdir / "backups", **settings_kw})
    engine = Engine(settings, inventory)
    store = SQLiteStore(settings.db_path)
    from bot.fixes.verify import engine_verifier
    service = FixService(settings=settings, inventory=inventory, store=store,
                         connect=lambda h: SSHTransport(h, settings), verifier=engine_verifier(engine))
    fixes = service
    report = await engine.check(inventory.hosts["mx-lab"])
    fix = port25_fix(report)
    plan_ids = await fixes.register(report, Actor("slack", "U0ALICE"), "C0MAIL")
    blocks = render.report_blocks(report, plan_ids)
    fake.messages[("C0MAIL", TS)] = {"channel": "C0MAIL", "blocks": blocks, "text": "report"}
    button = next(e for e in buttons(blocks) if e.get("value") == plan_ids[fix.id])
    rules_before = host.rules()
    app = build_app(settings, inventory, engine, fixes, store=store)
    stop, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_app(app, settings, stop, on_ready=ready.set_result))
    url = f"http://127.0.0.1:{await ready}"
    try:
        sent: list[dict] = []
        for user, replay, headers in clicks:
            payload = sent[replay] if replay is not None else action_payload(
                button["action_id"], button["value"], fake.response_url(), user=user, message_ts=TS)
            payload["message"]["blocks"] = blocks
            assert (await post_signed(url, form_payload(payload), headers=headers))[0] == 200
            await bot_of(app).tasks.join()
            sent.append(payload)
    finally:
        stop.set()
        await task
        await fake.stop()
    changes = sqlite3.connect(settings.db_path).execute("SELECT count(*) FROM changes").fetchone()[0]
    audit = await store.audit(host="mx-lab", limit=200)
    return host, fake, rules_before, changes, audit, fix, sent


async def test_non_approver_is_refused_and_nothing_changes(tmp_path, lab, client_key):
    host, fake, rules_before, changes, audit, _fix, _ = await scenario(
        tmp_path, lab, client_key, [("U0EVE", None, None)])
    (refusal,) = fake.responses  # (b) ephemeral, to the clicker only
    assert refusal["response_type"] == "ephemeral" and "refused" in refusal["text"], refusal
    assert host.rules() == rules_before
    assert host.probe(25) == "filtered"
    assert changes == 0 and not fake.of("chat.update") and not fake.of("chat.postMessage")
    assert any(a.event == "refusal" and a.actor == "U0EVE" for a in audit), audit


async def test_approver_applies_message_updated_retries_do_nothing_twice(tmp_path, lab, client_key):
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    # the approver's click, Slack's retry of that delivery, then a second (double) click
    host, fake, _rules, changes, audit, fix, sent = await scenario(
        tmp_path, lab, client_key, [("U0BOB", None, None), ("U0BOB", 0, retry), ("U0BOB", None, None)])
    assert host.probe(25) == "open"  # (a) the kernel agrees
    (update,) = fake.of("chat.update", ok=True)
    assert update.args["channel"] == "C0MAIL" and update.args["ts"] == TS
    blocks = update.args["blocks"]
    text = json.dumps(blocks)
    assert check_blocks(blocks, MAX_BLOCKS) == {}
    assert "Applied by <@U0BOB> at " in text and " UTC: " in text, text
    assert "*Before*" in text and "*After*" in text
    assert sent[0]["actions"][0]["value"] not in text  # the used Apply button is gone
    assert changes == 1  # (d) exactly one change
    assert [a.event for a in audit].count("apply") == 1
    assert all(r["response_type"] == "ephemeral" for r in fake.responses)  # the 2nd click: duplicate


async def test_four_eyes_requester_cannot_approve(tmp_path, lab, client_key):
    host, fake, rules_before, changes, audit, _fix, _ = await scenario(
        tmp_path, lab, client_key, [("U0ALICE", None, None)], four_eyes=True)
    (refusal,) = fake.responses
    assert refusal["response_type"] == "ephemeral", refusal
    assert host.rules() == rules_before
    assert host.probe(25) == "filtered" and changes == 0
    assert any(a.event == "refusal" and a.actor == "U0ALICE" for a in audit), audit

"""Fix buttons on the real bot.fixes.FixService (SQLiteStore in tmp_path) through the real
Bolt app with signed block_actions, against the fake Web API. No host is needed: the
inventory's address is unreachable (198.18.x) and `connect` counts attempts, so the tests
prove nothing was tried. The applied path on a real host: tests/lab/test_slack_fixes.py."""

from __future__ import annotations

import asyncio
import json

from bot.fixes import FixService
from bot.fixes.outcomes import ApplyOutcome, Snapshot
from bot.models import Actor, Fix, PortStatus, Report
from bot.render import outcomes
from bot.render import report as render
from bot.slack.app import bot_of, build_app
from bot.slack.server import run_app
from bot.store import SQLiteStore
from config.inventory import Inventory
from tests.slack.conftest import (
    ScriptedEngine,
    action_payload,
    buttons,
    form_payload,
    make_settings,
    post_signed,
)
from tests.slack.fake_slack import MAX_BLOCKS, check_blocks

FIX = Fix(id="fw-25", kind="firewall", summary="Allow inbound SMTP (25/tcp)",
          commands=[["iptables", "-I", "INPUT", "-p", "tcp", "--dport", "25", "-j", "ACCEPT"]],
          backend="iptables", expected_allow=[("inbound", "ipv4", 25)])


async def test_expired_plan_is_refused_with_recheck_and_nothing_attempted(fake, tmp_path):
    settings = make_settings(fake).model_copy(update={"db_path": tmp_path / "mc.db", "plan_ttl": 1})
    inventory = Inventory.model_validate({"hosts": {"mx1": {
        "address": "198.18.255.254", "approvers": ["U0BOB"]}}})
    attempts: list[str] = []

    def connect(host):
        attempts.append(host.name)
        raise AssertionError("no connection may be attempted")

    store = SQLiteStore(settings.db_path)
    service = FixService(settings=settings, inventory=inventory, store=store, connect=connect)
    plan_id = (await service.register(Report(host="mx1", address="198.18.255.254", fixes=[FIX]),
                                      Actor("slack", "U0ALICE"), "C0MAIL"))[FIX.id]
    await asyncio.sleep(1.6)
    app = build_app(settings, inventory, ScriptedEngine(), service, store=store)
    stop, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_app(app, settings, stop, on_ready=ready.set_result))
    url = f"http://127.0.0.1:{await ready}"
    try:
        payload = action_payload("mailcheck_apply_0", plan_id, fake.response_url(), user="U0BOB")
        assert (await post_signed(url, form_payload(payload)))[0] == 200
        await bot_of(app).tasks.join()
    finally:
        stop.set()
        await task
    assert attempts == []
    (reply,) = fake.responses
    assert reply["response_type"] == "ephemeral" and "expired" in reply["text"], reply
    recheck = [e for b in reply.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]
    assert [(e["action_id"], e["value"]) for e in recheck] == [("mailcheck_recheck", "mx1")]
    assert not fake.of("chat.update") and not fake.of("chat.postMessage")
    audit = await store.audit(host="mx1")
    assert any(a.event == "refusal" and a.actor == "U0BOB" for a in audit), audit


def test_not_achieved_offers_rollback_with_the_change_id_only():
    report_blocks = render.report_blocks(
        Report(host="mx1", address="198.18.0.9", fixes=[FIX]), {FIX.id: "p_1"})
    before = [PortStatus(port=25, direction="inbound", outside="filtered", firewall="block")]
    out = ApplyOutcome("not_achieved", "25 still filtered from outside", "p_1", host="mx1",
                       summary=FIX.summary, actor="U0BOB", change_id="c_9", at=0,
                       before=Snapshot(ports=before), after=Snapshot(ports=before))
    blocks = outcomes.applied_blocks(report_blocks, "mailcheck_apply_0", "p_1", out, "U0BOB")
    assert check_blocks(blocks, MAX_BLOCKS) == {}
    text = json.dumps(blocks)
    assert "Applied by <@U0BOB> at 00:00 UTC: Allow inbound SMTP" in text
    assert "did not have its expected effect" in text and '"p_1"' not in text
    assert ("mailcheck_rollback", "c_9") in [(e["action_id"], e["value"]) for e in buttons(blocks)]

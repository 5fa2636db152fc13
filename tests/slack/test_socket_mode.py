"""Socket Mode: the fake's apps.connections.open hands out a local WebSocket
that delivers the same payloads as envelopes; the bot acks them over it."""

from __future__ import annotations

import asyncio
import urllib.parse

import aiohttp
import pytest

from tests.slack.conftest import action_payload, slash_body, start_served


async def _health(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.get(url + "/healthz") as r:
        return r.status, await r.json()


async def _until(pred, wait: float = 5.0) -> None:
    for _ in range(int(wait / 0.02)):
        if await pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


@pytest.fixture
async def socket_served(fake, engine):
    served = await start_served(fake, engine, socket=True)
    yield served
    served.stop.set()
    await asyncio.wait_for(served.task, 15)


def slash_payload(text: str, response_url: str, trigger: str = "99.1.socket") -> dict:
    return dict(urllib.parse.parse_qsl(slash_body(text, response_url, trigger=trigger)))


async def test_connects_with_the_app_token_and_health_tells_the_truth(socket_served, fake):
    assert [c.error for c in fake.of("apps.connections.open")] == [None]
    status, state = await _health(socket_served.url)
    assert status == 200 and state["mode"] == "socket" and state["connected"] is True
    async with aiohttp.ClientSession() as s, s.post(socket_served.url + "/slack/events") as r:
        assert r.status == 404  # no HTTP events endpoint in Socket Mode
    await fake.drop_sockets()

    async def down() -> bool:
        return (await _health(socket_served.url))[0] == 503
    await _until(down)


async def test_slash_command_envelope_is_acked_over_the_socket_and_runs(socket_served, fake):
    ack = await fake.deliver("slash_commands", slash_payload("mx1", fake.response_url()))
    assert "Checking `mx1`" in ack["payload"]["text"]
    await socket_served.settle()
    assert socket_served.engine.calls == [("mx1", None)]
    (message,) = fake.messages.values()
    assert "mx1: mail cannot flow" in message["blocks"][0]["text"]["text"]


async def test_refusal_and_help_come_back_in_the_ack(socket_served, fake):
    ack = await fake.deliver("slash_commands", slash_payload("scanme.example", fake.response_url()))
    assert "not in mailcheck's inventory" in ack["payload"]["text"]
    ack = await fake.deliver("slash_commands", slash_payload("help", fake.response_url(), "2.2"))
    assert "Usage" in ack["payload"]["text"]
    await socket_served.settle()
    assert socket_served.engine.calls == []


async def test_retried_envelope_is_acked_but_starts_nothing(socket_served, fake):
    payload = slash_payload("mx2", fake.response_url(), trigger="7.7.same")
    await fake.deliver("slash_commands", payload)
    again = await fake.deliver("slash_commands", payload, retry_attempt=1)
    assert "envelope_id" in again
    await socket_served.settle()
    assert socket_served.engine.calls == [("mx2", None)]


async def test_block_actions_envelope_is_acked_and_routed(socket_served, fake):
    await fake.deliver("slash_commands", slash_payload("mx1", fake.response_url()))
    await socket_served.settle()
    (plan_id,) = socket_served.fixes.plans
    ack = await fake.deliver("interactive", action_payload("mailcheck_apply_0", plan_id,
                                                           fake.response_url()))
    assert ack["envelope_id"]
    await socket_served.settle()
    assert [(c.kind, c.value) for c in socket_served.fixes.calls] == [("apply", plan_id)]
    assert socket_served.fixes.checks == [("mx1", "U0ALICE", "C0MAIL")]  # the check was audited

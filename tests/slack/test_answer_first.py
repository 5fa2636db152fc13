"""Issue 13 over Slack: signed requests to the real Bolt app and HTTP server, the fake Web API,
and the real engine on the guide's first case (recorded output, tests/guide_case.py).

- the final message is within budget, the cause first with its fix button beside it;
- progress: the firewall's line reaches the message while the slow probes still run
  (timestamps of the fake's recorded calls);
- Details work after `serve` restarts (the report is in the store).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket

import aiohttp

from bot.render import blockkit
from bot.slack.server import serve
from tests import guide_case
from tests.slack.conftest import (
    action_payload,
    buttons,
    form_payload,
    make_settings,
    post_signed,
    slash_body,
    start_served,
)
from tests.slack.fake_slack import MAX_BLOCKS, check_blocks

FIREWALL_LINE = ":x: *firewall*: iptables, 2 rules block mail"
PROBE_DELAY = 1.5  # a filtered port: the probe waits its timeout


def final_blocks(fake) -> list[dict]:
    ((_, message),) = fake.messages.items()
    return message["blocks"]


async def test_guide_case_answer_first_and_progress_before_the_slow_probes(fake):
    engine = guide_case.engine(probe_delay=PROBE_DELAY)
    served = await start_served(fake, engine, inventory=guide_case.inventory(), interval=0.05)
    try:
        status, _, _ = await post_signed(served.url, slash_body("mx1", fake.response_url()))
        assert status == 200
        await served.settle()
    finally:
        served.stop.set()
        await served.task
    probes_done = min(engine.prober.finished)
    early = [c for c in fake.of("chat.update", ok=True) if FIREWALL_LINE in json.dumps(c.args["blocks"])]
    assert early, [json.dumps(c.args["blocks"])[:300] for c in fake.of("chat.update")]
    print(f"firewall line at +{early[0].at - fake.of('chat.postMessage')[0].at:.2f}s, "
          f"probes done at +{probes_done - fake.of('chat.postMessage')[0].at:.2f}s")
    assert early[0].at < probes_done - 1.0  # seen while the probes still waited
    assert "*ports*: running" in json.dumps(early[0].args["blocks"])
    blocks = final_blocks(fake)
    assert check_blocks(blocks, MAX_BLOCKS) == {}
    assert len(blocks) <= 10 and blockkit.size(blocks) <= 2_500
    assert blocks[0]["text"]["text"] == ":x: mx1: mail cannot flow · 2 causes"
    assert blocks[2]["text"]["text"].startswith(":x: *iptables INPUT rule 2 drops inbound")
    fix = blocks[2]["accessory"]
    assert fix["text"]["text"] == "Delete INPUT rule 2 + OUTPUT rule 1"
    assert fix["value"] in served.fixes.plans  # an opaque plan id
    assert "-D INPUT -p tcp -m multiport" in fix["confirm"]["text"]["text"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _until(predicate, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out waiting")


async def _serve(settings):
    """`mailcheck serve` (the real serve(): store and fix service from the wiring) on the
    recorded host, until SIGTERM; returns the task and its URL once /healthz answers."""
    task = asyncio.create_task(serve(settings, inventory=guide_case.inventory(),
                                     engine=guide_case.engine()))
    url = f"http://127.0.0.1:{settings.http_port}"
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            try:
                async with s.get(url + "/healthz") as r:
                    if r.status == 200:
                        return task, url
            except aiohttp.ClientError:
                await asyncio.sleep(0.02)
    raise AssertionError("serve did not come up")


async def _stop(task) -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler stops it cleanly
    await asyncio.wait_for(task, 15)


async def test_details_work_after_serve_restarts(fake, tmp_path):
    settings = make_settings(fake).model_copy(update={
        "http_port": _free_port(), "db_path": tmp_path / "mailcheck.db"})
    task, url = await _serve(settings)
    try:
        await post_signed(url, slash_body("mx1", fake.response_url()))
        await _until(lambda: fake.messages and "cannot flow" in json.dumps(final_blocks(fake)[0]))
    finally:
        await _stop(task)
    details = next(b for b in buttons(final_blocks(fake)) if b["action_id"] == blockkit.ACTION_DETAILS)

    task, url = await _serve(settings)  # a new process' worth of state: only the file is shared
    try:
        payload = action_payload(blockkit.ACTION_DETAILS, details["value"], fake.response_url())
        assert (await post_signed(url, form_payload(payload)))[0] == 200
        await _until(lambda: fake.of("views.open"))
    finally:
        await _stop(task)
    (opened,) = fake.of("views.open", ok=True)
    text = json.dumps(opened.args["view"]["blocks"], ensure_ascii=False)
    assert "*Causes* (2)" in text and "firewall in charge: iptables" in text
    assert "-A INPUT -p tcp -m multiport --dports 25,143,993,587,465 -j DROP" in text

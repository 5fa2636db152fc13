"""`/mailcheck group:NAME | tag:NAME | all`: one message, a row per host, updated as hosts
finish, a Report button per host, never an Apply button; within Slack's limits for any fleet.

Driven like Slack: signed slash commands and button payloads to the real Bolt app and HTTP
server; the fake Web API refuses what Slack refuses (blocks over Block Kit's limits, too
long a message). The engine is scripted per host (its verdict, its delay); the same message
on real lab hosts: tests/lab/test_fleet_lab.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from bot.checks.registry import STEPS
from bot.errors import UnreachableError
from bot.models import Report, StepResult
from bot.render.fleet_message import FleetBoard, FleetRow, fleet_blocks
from config.inventory import Host, Inventory
from tests.slack.conftest import (
    action_payload,
    broken_report,
    buttons,
    form_payload,
    post_signed,
    slash_body,
    start_served,
)
from tests.slack.fake_slack import MAX_BLOCKS, check_blocks, live_markup
from tests.slack.test_http import texts


@dataclass
class FleetEngine:
    """Each host's check as scripted: (verdict, seconds); progress per step as the engine
    calls it. ok: every step ok; broken: conftest's broken report (with a fix); error: the
    host cannot be reached. `cause` overrides the broken finding's summary."""

    script: dict[str, tuple[str, float]]
    cause: str | None = None
    calls: list[str] = field(default_factory=list)

    async def check(self, host: Host, *, steps: Sequence[str] | None = None, progress=None) -> Report:
        self.calls.append(host.name)
        verdict, delay = self.script[host.name]
        await asyncio.sleep(delay)
        if verdict == "error":
            raise UnreachableError(f"host {host.name} step tools: cannot reach {host.address}:22",
                                   step="tools")
        if verdict == "broken":
            report = broken_report(host, steps or STEPS)
            if self.cause:
                report.findings[0].summary = self.cause
        else:
            report = Report(host=host.name, address=host.address, duration=delay, steps=[
                StepResult(name=s, status="ok", summary=f"{s} ok") for s in steps or STEPS])
        if progress:
            for step in report.steps:
                await progress(step, report)
        return report

    async def check_domain(self, domain: str, *, progress=None) -> Report:
        raise AssertionError("not in these tests")


def inventory(names: Sequence[str], groups: dict | None = None) -> Inventory:
    return Inventory.model_validate({
        "hosts": {n: {"address": f"198.18.{200 + i // 250}.{i % 250 + 2}", "tags": ["edge"] if i % 2 else []}
                  for i, n in enumerate(names)},
        "groups": groups or {}})


async def served_with(fake, engine, inv):
    return await start_served(fake, engine, inventory=inv, interval=0.05)


async def stop(s) -> None:
    s.stop.set()
    await asyncio.wait_for(s.task, 15)


def rows(blocks: list[dict]) -> list[dict]:
    """The host rows: sections whose button is a Report (the Details action)."""
    return [b for b in blocks if (b.get("accessory") or {}).get("action_id") == "mailcheck_details"]


async def test_group_posts_one_message_with_a_row_per_host_updated_as_they_finish(fake):
    engine = FleetEngine({"mx1": ("ok", 0.0), "mx2": ("broken", 0.1), "mx3": ("error", 0.0),
                          "mx4": ("ok", 1.0), "db1": ("ok", 0.0)})
    s = await served_with(fake, engine, inventory(["mx1", "mx2", "mx3", "mx4", "db1"],
                                                  {"mail": ["mx4", "mx1", "mx2", "mx3"]}))
    try:
        status, body, elapsed = await post_signed(s.url, slash_body("group:mail", fake.response_url()))
        answer = json.loads(body)
        assert status == 200 and elapsed < 1.0 and answer["response_type"] == "ephemeral"
        assert "Checking `group:mail` (4 hosts, 4 at a time)" in answer["text"]
        await asyncio.sleep(0.6)  # mx1, mx2, mx3 are done; mx4 takes 1 s
        ((channel, ts),) = fake.messages
        midway = fake.messages[(channel, ts)]["blocks"]
        assert [r["text"]["text"].split("*")[1] for r in rows(midway)] == ["mx1", "mx2", "mx3"]
        assert "checking (1): mx4" in texts(midway) and "3 of 4 done" in texts(midway)
        await s.settle()
    finally:
        await stop(s)
    assert sorted(engine.calls) == ["mx1", "mx2", "mx3", "mx4"]  # db1 is not in the group
    assert len(fake.of("chat.postMessage")) == 1 and all(  # one message, updated in place
        c.args["ts"] == ts for c in fake.of("chat.update"))
    assert len(fake.of("chat.update", ok=True)) >= 2 and not fake.of("chat.update", ok=False)
    final = fake.messages[(channel, ts)]["blocks"]
    got = {r["text"]["text"].split("*")[1]: r for r in rows(final)}
    assert list(got) == ["mx4", "mx1", "mx2", "mx3"]  # the group's order
    assert "mail cannot flow" in got["mx2"]["text"]["text"]
    assert "Port 25 is dropped by -A INPUT" in got["mx2"]["text"]["text"]  # its top cause
    assert "could not be checked" in got["mx3"]["text"]["text"] and "cannot reach" in got["mx3"]["text"]["text"]
    assert "mail can flow" in got["mx1"]["text"]["text"]
    assert "4 hosts in " in texts(final) and "1 mail cannot flow · 1 could not be checked · 2 ok" in texts(final)
    # a Report button per host, each its own stored report; nothing applies a fix
    ids = [b["value"] for b in buttons(final)]
    assert len(set(ids)) == 4 and all(b["action_id"] == "mailcheck_details" for b in buttons(final))
    assert s.fixes.plans == {} and sorted(h for h, _, _ in s.fixes.checks) == ["mx1", "mx2", "mx3", "mx4"]


async def test_a_rows_report_button_opens_that_hosts_full_report(fake):
    engine = FleetEngine({"mx1": ("ok", 0.0), "mx2": ("broken", 0.0)})
    s = await served_with(fake, engine, inventory(["mx1", "mx2"]))
    try:
        await post_signed(s.url, slash_body("all", fake.response_url()))
        await s.settle()
        (msg,) = fake.messages.values()
        mx2 = next(r for r in rows(msg["blocks"]) if "*mx2*" in r["text"]["text"])
        await post_signed(s.url, form_payload(action_payload(
            "mailcheck_details", mx2["accessory"]["value"], fake.response_url())))
        await s.settle()
    finally:
        await stop(s)
    (opened,) = fake.of("views.open", ok=True)
    view = opened.args["view"]
    assert view["title"]["text"] == "Details: mx2"
    shown = texts(view["blocks"])
    assert "Port 25 is dropped by -A INPUT -p tcp --dport 25 -j DROP" in shown
    assert "iptables -I INPUT 1 -p tcp --dport 25 -j ACCEPT" in shown  # its fix, to apply per host


async def test_tag_selects_its_hosts_and_a_running_selection_is_not_started_twice(fake):
    engine = FleetEngine({f"h{i}": ("ok", 0.3) for i in range(4)})
    s = await served_with(fake, engine, inventory([f"h{i}" for i in range(4)]))
    try:
        _, first, _ = await post_signed(s.url, slash_body("tag:edge", fake.response_url()))
        _, again, _ = await post_signed(s.url, slash_body("tag:edge", fake.response_url()))
        await s.settle()
    finally:
        await stop(s)
    assert "(2 hosts" in json.loads(first)["text"]
    assert "still running" in json.loads(again)["text"]
    assert sorted(engine.calls) == ["h1", "h3"] and len(fake.of("chat.postMessage")) == 1


@pytest.mark.parametrize("text,expect", [
    ("group:nope", "no group 'nope' in the inventory (groups: mail)"),
    ("tag:<!channel>", "no inventory host has tag '&lt;!channel&gt;' (tags: edge)"),
    ("group:", "malformed selector"),
    ("group:mail nosuchstep", "is not a step I know")])
async def test_a_bad_selection_is_refused_and_nothing_runs(fake, text, expect):
    engine = FleetEngine({"mx1": ("ok", 0.0), "mx2": ("ok", 0.0)})
    s = await served_with(fake, engine, inventory(["mx1", "mx2"], {"mail": ["mx1"]}))
    try:
        _, body, _ = await post_signed(s.url, slash_body(text, fake.response_url()))
        await s.settle()
    finally:
        await stop(s)
    answer = json.loads(body)
    assert answer["response_type"] == "ephemeral" and expect in answer["text"], answer["text"]
    assert not live_markup({"text": answer["text"]})
    assert engine.calls == [] and not fake.of("chat.postMessage")


async def test_a_fleet_of_300_hosts_stays_within_slacks_limits(fake):
    """300 hosts, one in 7 broken with a long cause carrying markup, one in 11 unreachable:
    every update is accepted by the fake Web API; the final message gives the hosts whose
    mail cannot flow or that could not be checked a row first, and names every other host."""
    names = [f"mx{i:03d}" for i in range(300)]
    script = {n: ("broken" if i % 7 == 0 else "error" if i % 11 == 0 else "ok", 0.0)
              for i, n in enumerate(names)}
    engine = FleetEngine(script, cause="<!channel> " + "INPUT rule drops 25 " * 30)
    s = await served_with(fake, engine, inventory(names))
    try:
        await post_signed(s.url, slash_body("all", fake.response_url()))
        await s.settle()
    finally:
        await stop(s)
    assert not [c.error for c in fake.calls if c.error]  # no update refused
    (msg,) = fake.messages.values()
    final = msg["blocks"]
    assert check_blocks(final, MAX_BLOCKS) == {} and len(final) <= MAX_BLOCKS
    assert live_markup(final) == ["<@U0ALICE>"]  # the requester; the hosts' text is escaped
    shown = [r["text"]["text"].split("*")[1] for r in rows(final)]
    attention = [n for n in names if script[n][0] != "ok"]
    assert len(shown) >= 15 and shown == sorted(shown)  # the selection's order
    assert all(script[n][0] != "ok" for n in shown)  # attention first: no ok host took a row
    others = texts([b for b in final if b.get("type") == "context"])
    assert f"without a row to fit Slack's limits ({len(names) - len(attention)})" in others
    hidden_attention = [n for n in attention if n not in shown]
    assert all(n in others for n in hidden_attention[:5])
    assert "300 hosts in " in texts(final)


def test_rows_follow_the_selection_and_stay_within_limits_as_hosts_finish():
    """The renderer alone: every intermediate board of a 200-host fleet fits Slack."""
    names = [f"host-{i}" for i in range(200)]
    board = FleetBoard("all", names, started_by="U0ALICE")
    for i, n in enumerate(reversed(names)):
        board.add(FleetRow(n, "broken" if i % 3 == 0 else "ok", "cause " * 40, 1.5, f"r_{i:012d}"))
        blocks = fleet_blocks(board)
        assert check_blocks(blocks, MAX_BLOCKS) == {}, i
        shown = [r["text"]["text"].split("*")[1] for r in rows(blocks)]
        assert shown == [n for n in names if n in shown]
    small = FleetBoard("group:mail", ["b", "a"])
    small.add(FleetRow("a", "ok", "", 0.2, "r_a"))
    small.add(FleetRow("b", "error", "host b: unreachable", 0.1, None))  # its report not stored
    blocks = fleet_blocks(small)
    assert [r["text"]["text"].split("*")[1] for r in blocks if r.get("type") == "section"] == ["b", "a"]
    assert [b["value"] for b in buttons(blocks)] == ["r_a"]

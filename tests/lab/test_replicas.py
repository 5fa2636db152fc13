"""Two `mailcheck serve` processes on one PostgreSQL behave as one bot (issue 14, part 2).

Each replica is its own process (`python -m bot.cli serve`, HTTP mode), both with
MAILCHECK_DB_URL naming one database of the session's real PostgreSQL (tests/pglab.py),
the same inventory (one lab host whose iptables drops port 25) and the fake Slack Web API
of tests/slack. Requests are Slack's real payloads, signed, sent to either replica as a
load balancer would.

- 50 simultaneous approvals of one plan, spread over both replicas: one apply on the host
  (one change row; the fix deletes the DROP rule: exactly that rule is gone and port 25 is
  open from outside), 49 clickers told "already handled";
- a report made by one replica: its Details open and its Apply works on the other;
- a slash command, then Slack's retry of it (X-Slack-Retry-Num) and a duplicate delivered
  to the other replica: one check; meanwhile another user's /mailcheck of the same host on
  the other replica is told the check is already running (the shared running-check table);
- SIGKILL of the replica in the middle of an apply (its guard armed on the host): the other
  replica's periodic reconcile re-reads the host, waits for the guard, records
  restored_by_host once, tells the channel; the host's rules are as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path

import psycopg
import pytest

from bot.render.blockkit import ACTION_DETAILS
from tests.lab.test_fix_faults import until
from tests.lab.test_serve_shutdown import Serve, apply_button, blocked_host
from tests.slack.conftest import action_payload, buttons, form_payload, post_signed, slash_body
from tests.slack.fake_slack import FakeSlack

pytestmark = pytest.mark.lab


@contextlib.asynccontextmanager
async def replicas(lab, tmp_path: Path, client_key: Path, pg_url: str, **env: str):
    """A lab host whose iptables drops 25, the fake Web API and two serve processes on
    `pg_url`, started: yields (host, fake, a, b); both killed at the end."""
    lh = blocked_host(lab)
    fake = await FakeSlack().start()
    made = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        made.append(Serve(tmp_path / name, fake, lh, client_key))
        made[-1].env.update(MAILCHECK_DB_URL=pg_url, **env)
    try:
        # two interpreters importing Slack's libraries at once: 60 s was not enough at load 55
        await asyncio.gather(*(s.start(within=240) for s in made))
        yield lh, fake, made[0], made[1]
    finally:
        for s in made:
            s.kill()
        await fake.stop()


def rows(pg_url: str, sql: str, *args) -> list[tuple]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(sql, args).fetchall()


async def report_posted(serve: Serve, fake: FakeSlack, user: str = "U0ALICE") -> tuple:
    body = slash_body("mx-lab", fake.response_url(), user=user)
    assert (await post_signed(serve.url, body))[0] == 200
    await until(lambda: apply_button(fake) is not None, 120, "the report with an Apply button")
    return apply_button(fake)


def click(button: dict, channel: str, ts: str, blocks: list, fake: FakeSlack) -> str:
    payload = action_payload(button["action_id"], button["value"], fake.response_url(),
                             user="U0BOB", channel=channel, message_ts=ts)
    payload["message"]["blocks"] = blocks
    return form_payload(payload)


async def test_fifty_simultaneous_approvals_over_two_replicas_apply_once(
        lab, tmp_path, client_key, pg_url):
    async with replicas(lab, tmp_path, client_key, pg_url, MAILCHECK_LOCK_WAIT="30") as (
            lh, fake, a, b):
        rules_before = lh.rules()
        channel, ts, blocks, button = await report_posted(a, fake)
        plan_id = button["value"]
        bodies = [click(button, channel, ts, blocks, fake) for _ in range(50)]  # 50 trigger ids
        answers = await asyncio.gather(*[post_signed((a, b)[i % 2].url, body)
                                         for i, body in enumerate(bodies)])
        assert [status for status, _, _ in answers] == [200] * 50
        await until(lambda: len(rows(pg_url, "SELECT 1 FROM audit WHERE plan_id = %s AND event"
                                     " IN ('apply', 'duplicate')", plan_id)) >= 50, 180,
                    "50 outcomes in the audit log")
        await until(lambda: rows(pg_url, "SELECT state FROM plans WHERE id = %s", plan_id)
                    == [("applied",)], 60, "the plan applied")
        events = [e for (e,) in rows(pg_url, "SELECT event FROM audit WHERE plan_id = %s", plan_id)]
        assert events.count("apply") == 1 and events.count("duplicate") == 49, events
        assert events.count("approval") == 1 and events.count("started") == 1, events
        assert rows(pg_url, "SELECT state FROM changes") == [("applied",)]
        # the fix (delete the DROP rule) ran once: exactly that rule is gone, nothing else moved
        drop = [ln for ln in rules_before.splitlines() if "--dport 25" in ln and "DROP" in ln]
        assert len(drop) == 1 and lh.rules() == rules_before.replace(drop[0] + "\n", "")
        assert lh.probe(25) == "open"
        refused = [r for r in fake.responses if "already handled" in json.dumps(r)]
        assert len(refused) == 49, [r.get("text") for r in fake.responses]  # each clicker told


async def test_a_retried_slash_command_on_the_other_replica_starts_no_second_check(
        lab, tmp_path, client_key, pg_url):
    async with replicas(lab, tmp_path, client_key, pg_url) as (_lh, fake, a, b):
        body = slash_body("mx-lab", fake.response_url(), trigger="4242.4242.retried")
        first = await post_signed(a.url, body)
        retry = await post_signed(b.url, body, headers={"X-Slack-Retry-Num": "1",
                                                        "X-Slack-Retry-Reason": "http_timeout"})
        again = await post_signed(b.url, body)  # delivered twice, no retry header
        other = await post_signed(b.url, slash_body("mx-lab", fake.response_url(), user="U0CAROL"))
        assert [first[0], retry[0], again[0], other[0]] == [200] * 4
        assert "Checking" in json.loads(first[1])["text"]
        assert retry[1] == again[1] == ""  # acked, nothing started
        busy = json.loads(other[1])["text"]
        assert "still running in this channel" in busy and "<@U0ALICE>" in busy, busy
        await until(lambda: apply_button(fake) is not None, 120, "the check's report")
        await asyncio.sleep(2)  # a second check, if one had started, would have posted by now
        posted = [c for c in fake.of("chat.postMessage", ok=True) if c.args.get("blocks")]
        assert len(posted) == 1, [c.args.get("text") for c in posted]
        checks = rows(pg_url, "SELECT actor FROM audit WHERE event = 'check'")
        assert checks == [("U0ALICE",)]
        assert rows(pg_url, "SELECT count(*) FROM running_checks") == [(0,)]  # ended
        assert rows(pg_url, "SELECT count(*) FROM deliveries WHERE key = 'tr:4242.4242.retried'") == [(1,)]


async def test_a_report_of_one_replica_is_opened_and_applied_on_the_other(
        lab, tmp_path, client_key, pg_url):
    async with replicas(lab, tmp_path, client_key, pg_url) as (lh, fake, a, b):
        channel, ts, blocks, button = await report_posted(a, fake)  # the check ran on A
        [details] = [e for e in buttons(blocks) if e.get("action_id") == ACTION_DETAILS]
        payload = action_payload(ACTION_DETAILS, details["value"], fake.response_url(),
                                 user="U0BOB", channel=channel, message_ts=ts)
        assert (await post_signed(b.url, form_payload(payload)))[0] == 200
        await until(lambda: fake.of("views.open", ok=True), 30, "B opening A's Details")
        assert "mx-lab" in json.dumps(fake.of("views.open", ok=True)[0].args["view"])
        assert (await post_signed(b.url, click(button, channel, ts, blocks, fake)))[0] == 200
        await until(lambda: rows(pg_url, "SELECT state FROM plans WHERE id = %s", button["value"])
                    == [("applied",)], 120, "A's plan applied by B")
        await until(lambda: any("Applied by <@U0BOB>" in json.dumps(c.args.get("blocks"))
                                for c in fake.of("chat.update", ok=True)), 60, "A's message updated")
        assert lh.probe(25) == "open"


async def test_sigkill_of_a_replica_mid_apply_is_reconciled_by_the_other(
        lab, tmp_path, client_key, pg_url):
    async with replicas(lab, tmp_path, client_key, pg_url, MAILCHECK_RECONCILE_INTERVAL="1") as (
            lh, fake, a, b):
        rules_before = lh.rules()
        channel, ts, blocks, button = await report_posted(a, fake)
        plan_id = button["value"]
        assert (await post_signed(a.url, click(button, channel, ts, blocks, fake)))[0] == 200
        backups = lh.workdir / "backups"
        await until(lambda: any(backups.glob("*/deadman.armed")), 90, "the guard armed on the host")
        a.kill()  # SIGKILL: no drain, no cleanup, its store lock and the plan's claim stay
        assert a.proc.returncode == -9
        assert rows(pg_url, "SELECT state FROM plans WHERE id = %s", plan_id) == [("claimed",)]

        def told() -> list[dict]:
            return [c.args for c in fake.of("chat.postMessage", ok=True)
                    if "re-read the host" in (c.args.get("text") or "")]

        await until(lambda: told(), 150, "the other replica reconciling and telling the channel")
        [note] = told()
        assert note["channel"] == channel and "*restored_by_host*" in note["text"], note
        assert rows(pg_url, "SELECT state FROM plans WHERE id = %s", plan_id) == [("failed",)]
        assert rows(pg_url, "SELECT state FROM changes") == [("restored_by_host",)]
        [(actor,)] = rows(pg_url, "SELECT actor FROM audit WHERE event = 'reconcile'")
        assert actor == "U0BOB"
        assert re.search(r"reconciled \S+ on mx-lab: restored_by_host", b.output()), b.output()[-2000:]
        assert rows(pg_url, "SELECT count(*) FROM locks") == [(0,)]  # released by the reconciler
        assert lh.rules() == rules_before and lh.probe(25) == "filtered"  # as before the fix
        await asyncio.sleep(3)  # further rounds of B's reconcile find nothing more
        assert len(told()) == 1
        assert await b.stop() == 0

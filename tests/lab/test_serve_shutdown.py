"""SIGTERM to `mailcheck serve` in the middle of an apply, then a restart (issue 10, item 4).

`mailcheck serve` runs as its own process (HTTP mode) against the fake Slack Web API, with a
real inventory, database and lab host. A real `/mailcheck` check posts the report; an
approver's click starts the planned fix; as soon as the dead-man guard is armed on the host
(the apply is under way), serve gets SIGTERM.

- drained: serve lets the apply finish (MAILCHECK_DRAIN_TIMEOUT), updates the report
  message, exits 0; after a restart the change row, the audit log and the plan all say
  applied, and nothing is left to reconcile;
- cut off (MAILCHECK_DRAIN_TIMEOUT=0, and new SSH connections to the host dropped by the
  lab once the apply has its own, so it cannot confirm): serve exits with the plan claimed, the change `started`, the apply audited as
  interrupted; the restart re-reads the host, waits for the armed guard, finds its
  .restored marker, records restored_by_host everywhere and tells the channel. The host's
  rules are byte-identical to before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.lab.test_fix_faults import until
from tests.labhost import _run
from tests.slack.conftest import (
    SECRET,
    action_payload,
    buttons,
    form_payload,
    post_signed,
    slash_body,
)
from tests.slack.fake_slack import BOT_TOKEN, FakeSlack

pytestmark = pytest.mark.lab
ROOT = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`python -m bot.cli serve` in its own process."""

    def __init__(self, tmp_path: Path, fake: FakeSlack, lh, client_key: Path, **env: str) -> None:
        inventory = tmp_path / "inventory.yaml"
        inventory.write_text(
            f"hosts:\n  mx-lab:\n    address: {lh.ip}\n    identity_file: {client_key}\n"
            f"    known_hosts: {lh.known_hosts}\n    approvers: [U0BOB]\n")
        self.port = _free_port()
        self.env = {k: v for k, v in os.environ.items()  # the session's refusing resolver stays
                    if not k.startswith(("MAILCHECK_", "SLACK_")) or k == "MAILCHECK_RESOLVERS"}
        self.env.update(
            SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET, MAILCHECK_SLACK_API_URL=fake.api_url,
            MAILCHECK_HTTP_HOST="127.0.0.1", MAILCHECK_HTTP_PORT=str(self.port),
            MAILCHECK_INVENTORY=str(inventory), MAILCHECK_DB_PATH=str(tmp_path / "mc.db"),
            MAILCHECK_BACKUP_DIR=str(lh.workdir / "backups"), MAILCHECK_PROBE_TIMEOUT="1.5",
            MAILCHECK_CONNECT_TIMEOUT="3", MAILCHECK_COMMAND_TIMEOUT="6",
            MAILCHECK_LOCKOUT_DEADLINE="20", MAILCHECK_LOCK_WAIT="1", **env)
        self.cwd, self.proc = tmp_path, None
        self.url = f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> None:
        self.log = open(self.cwd / f"serve-{time.time_ns()}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve"], env=self.env,
                                     cwd=self.cwd, stdout=self.log, stderr=subprocess.STDOUT)

    async def start(self) -> Serve:
        self._spawn()
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, Path(self.log.name).read_text()[-3000:]
                try:
                    async with s.get(self.url + "/healthz") as r:
                        if (await r.json()).get("ok"):
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError("serve did not answer /healthz within 60 s")

    async def stop(self, within: float = 150) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(self.proc.wait, within)
        self.log.close()
        return rc

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def apply_button(fake: FakeSlack):
    """The final report message and its Apply button for the iptables fix."""
    for (channel, ts), msg in fake.messages.items():
        for el in buttons(msg.get("blocks") or []):
            if el.get("action_id", "").startswith("mailcheck_apply") and \
                    "iptables" in json.dumps(el.get("confirm", {})):
                return channel, ts, msg["blocks"], el
    return None


async def check_and_click(serve: Serve, fake: FakeSlack, lh, on_lock=None) -> str:
    """/mailcheck mx-lab, then the approver's click; returns the clicked plan id once the
    guard is armed on the host (`on_lock()` runs as soon as the apply holds the host's lock)."""
    assert (await post_signed(serve.url, slash_body("mx-lab", fake.response_url())))[0] == 200
    await until(lambda: apply_button(fake) is not None, 90, "the report with an Apply button")
    channel, ts, blocks, button = apply_button(fake)
    payload = action_payload(button["action_id"], button["value"], fake.response_url(),
                             user="U0BOB", channel=channel, message_ts=ts)
    payload["message"]["blocks"] = blocks
    assert (await post_signed(serve.url, form_payload(payload)))[0] == 200
    backups = lh.workdir / "backups"
    if on_lock is not None:
        await until((backups / ".lock").exists, 60, "the apply's lock on the host")
        on_lock()
    await until(lambda: any(backups.glob("*/deadman.armed")), 60, "the guard armed on the host")
    return button["value"]


@contextlib.contextmanager
def new_ssh_dropped(lh):
    """New SSH connections from outside to the host are dropped by the lab (an nft table in the
    root namespace); the connections already open go on. The host's own rules are untouched."""
    table = f"mclab_cut_{lh.index}"
    try:
        yield lambda: (
            _run("nft", f"add table inet {table}"),
            _run("nft", f"add chain inet {table} out {{ type filter hook output priority 0; policy accept; }}"),
            _run("nft", f"add rule inet {table} out ip daddr {lh.ip} tcp dport 22 ct state new drop"))
    finally:
        _run("nft", f"delete table inet {table}", check=False)


def db(tmp_path: Path):
    con = sqlite3.connect(tmp_path / "mc.db")
    plans = dict(con.execute("SELECT id, state FROM plans").fetchall())
    changes = [(r[0], r[1], json.loads(r[2])["plan_id"]) for r in
               con.execute("SELECT id, state, body FROM changes").fetchall()]
    audit = con.execute("SELECT event, result, plan_id FROM audit ORDER BY id").fetchall()
    con.close()
    return plans, changes, audit


def blocked_host(lab):
    lh = lab()
    lh.start_exim("public")
    lh.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "25", "-j", "DROP")
    return lh


async def test_sigterm_mid_apply_drains_it_and_a_restart_finds_it_all_recorded(lab, tmp_path, client_key):
    lh = blocked_host(lab)
    fake = await FakeSlack().start()
    serve = Serve(tmp_path, fake, lh, client_key)
    try:
        await serve.start()
        plan_id = await check_and_click(serve, fake, lh)
        assert await serve.stop() == 0, serve.output()[-3000:]  # SIGTERM mid-apply
        assert "waiting up to 120s for 1 fix(es) in progress" in serve.output()  # it was mid-apply
        assert lh.probe(25) == "open"  # the apply finished during the drain
        plans, changes, audit = db(tmp_path)
        assert plans[plan_id] == "applied"
        assert [(state, p) for _c, state, p in changes] == [("applied", plan_id)]
        mine = [(e, r) for e, r, p in audit if p == plan_id]
        assert ("started", "started") in mine and ("apply", "applied") in mine, mine
        updated = [c.args for c in fake.of("chat.update", ok=True) if "Applied by <@U0BOB>" in
                   json.dumps(c.args.get("blocks"))]
        assert updated, "the channel was not told"  # the report message now says so

        await serve.start()  # the restart: nothing to reconcile, everything still true
        await asyncio.sleep(2)
        assert await serve.stop() == 0
        assert db(tmp_path) == (plans, changes, audit)
        assert "reconciled" not in serve.output()
    finally:
        serve.kill()
        await fake.stop()


async def test_sigterm_past_the_drain_time_then_the_restart_reconciles_and_tells_the_channel(
        lab, tmp_path, client_key):
    lh = blocked_host(lab)
    rules_before = lh.rules()
    fake = await FakeSlack().start()
    serve = Serve(tmp_path, fake, lh, client_key, MAILCHECK_DRAIN_TIMEOUT="0")
    try:
        await serve.start()
        # once the apply has its connection, new ones are dropped: it cannot confirm
        with new_ssh_dropped(lh) as cut:
            plan_id = await check_and_click(serve, fake, lh, on_lock=cut)
            assert await serve.stop(within=30) == 0, serve.output()[-3000:]
        plans, changes, audit = db(tmp_path)
        assert plans[plan_id] == "claimed"
        [(change_id, state, _p)] = changes
        assert state == "started"
        assert ("apply", "interrupted", plan_id) in audit, audit

        await asyncio.sleep(6)  # past the reconcile margin
        serve.env["MAILCHECK_DRAIN_TIMEOUT"] = "120"
        await serve.start()  # waits for the armed guard, then reads what the host did
        await until(lambda: any("re-read the host" in c.args["text"]
                                for c in fake.of("chat.postMessage", ok=True)), 90, "the channel told")
        told = [c.args for c in fake.of("chat.postMessage", ok=True) if "re-read the host" in c.args["text"]]
        assert told[0]["channel"] == "C0MAIL" and "*restored_by_host*" in told[0]["text"], told
        assert change_id in told[0]["text"]
        assert await serve.stop() == 0
        plans, changes, audit = db(tmp_path)
        assert plans[plan_id] == "failed"
        assert [(c, s) for c, s, _p in changes] == [(change_id, "restored_by_host")]
        assert ("reconcile", "restored_by_host", plan_id) in audit
        assert lh.rules() == rules_before and lh.probe(25) == "filtered"  # as before the fix
    finally:
        serve.kill()
        await fake.stop()

"""serve(): the `mailcheck serve` entry point with the production engine and
fix service, HTTP mode, until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import aiohttp

from bot.slack.server import serve
from tests.slack.conftest import make_inventory, make_settings, post_signed, slash_body


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_serve_runs_with_the_real_services_until_sigterm(fake, tmp_path):
    port = _free_port()
    settings = make_settings(fake).model_copy(update={"http_port": port,
                                                      "db_path": tmp_path / "mailcheck.db"})
    task = asyncio.create_task(serve(settings, inventory=make_inventory()))
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(url + "/healthz") as r:
                    state = await r.json()
                    break
            except aiohttp.ClientError:
                await asyncio.sleep(0.02)
    assert state["ok"] is True and state["mode"] == "http"
    status, body, _ = await post_signed(url, slash_body("hosts", fake.response_url()))
    assert status == 200 and "`mx1`" in body
    os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler stops it cleanly
    await asyncio.wait_for(task, 10)
    assert (tmp_path / "mailcheck.db").exists()  # the real fix store was opened

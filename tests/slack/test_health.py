"""/healthz, /readyz and /metrics on serve's HTTP server, against the fake Web API."""

from __future__ import annotations

import re
import shutil

import aiohttp

from bot.store import SQLiteStore
from tests.slack.conftest import (
    ScriptedEngine,
    action_payload,
    form_payload,
    post_signed,
    slash_body,
    start_served,
)


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample of Prometheus text (None when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + want + '}') if want else ''} (\S+)$"
    m = re.search(pattern, text, re.M)
    return float(m[1]) if m else None


async def test_metrics_count_checks_fixes_and_slack_errors(served, fake):
    fake.rate_limit("chat.update", times=1, retry_after=0.01)
    await post_signed(served.url, slash_body("mx1", fake.response_url()))
    await served.settle()
    (plan_id,) = served.fixes.plans
    await post_signed(served.url, form_payload(action_payload("mailcheck_apply_0", plan_id,
                                                              fake.response_url())))
    await served.settle()
    status, ctype, text = await get(served.url + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert sample(text, "mailcheck_checks_total", verdict="broken") == 1
    assert sample(text, "mailcheck_check_duration_seconds_count") == 1
    assert sample(text, "mailcheck_check_duration_seconds_sum") > 0
    assert sample(text, "mailcheck_fixes_total", outcome="refused") == 1  # RecordingFixes refuses
    assert sample(text, "mailcheck_slack_rate_limited_total", method="chat_update") == 1
    assert sample(text, "mailcheck_slack_api_errors_total", method="chat_update",
                  error="ratelimited") is None  # retried: not an error


async def test_healthz_and_readyz_when_all_is_well(served, fake):
    status, _, body = await get(served.url + "/healthz")
    assert status == 200 and '"ok": true' in body
    before = len(fake.of("auth.test"))
    status, _, body = await get(served.url + "/readyz")
    assert status == 200 and '"store": "ok"' in body and '"slack": "ok"' in body, body
    await get(served.url + "/readyz")
    assert len(fake.of("auth.test")) == before + 1  # auth.test answer kept briefly


async def test_readyz_fails_when_the_store_is_gone_and_says_why(fake, tmp_path):
    (tmp_path / "db").mkdir()
    served = await start_served(fake, ScriptedEngine(), store=SQLiteStore(tmp_path / "db" / "mc.db"))
    try:
        assert (await get(served.url + "/readyz"))[0] == 200
        shutil.rmtree(tmp_path / "db")
        status, _, body = await get(served.url + "/readyz")
        assert status == 503 and '"ok": false' in body and "OperationalError" in body, body
        assert (await get(served.url + "/healthz"))[0] == 200  # alive: do not restart it for this
    finally:
        served.stop.set()
        await served.task

"""When chat.update fails at the end of a check (issue 13): the result still reaches the
requester and the message claims nothing false. Real Bolt app, signed requests, fake Web API."""

from __future__ import annotations

import json

from bot.render import blockkit
from tests.slack.conftest import (
    ScriptedEngine,
    buttons,
    form_payload,
    post_signed,
    shortcut_payload,
    slash_body,
    start_served,
)
from tests.slack.fake_slack import live_markup


def texts(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


async def _run(fake, engine, body):
    served = await start_served(fake, engine)
    try:
        await post_signed(served.url, body)
        await served.settle()
    finally:
        served.stop.set()
        await served.task
    return served


async def test_bot_removed_from_the_channel_mid_check_answers_by_response_url(fake):
    """Posted, then removed from the channel: every chat.update answers not_in_channel. The
    report goes to the response_url, as when the bot never was in the channel."""
    fake._m_chat_update = lambda _args: {"error": "not_in_channel"}
    await _run(fake, ScriptedEngine(), slash_body("mx1", fake.response_url()))
    assert fake.of("chat.update") and {c.error for c in fake.of("chat.update")} == {"not_in_channel"}
    (report,) = fake.responses
    assert report["response_type"] == "in_channel"
    assert report["blocks"][0]["text"]["text"] == ":x: mx1: mail cannot flow · 1 cause"


async def test_report_refused_by_slack_says_the_check_finished_not_that_it_failed(fake):
    """The final chat.update meets more 429s than the poster retries (after the check ended):
    the message must not say the check failed or stopped in a step; it gives the verdict and
    the stored report's Details."""
    engine = ScriptedEngine()
    check = engine.check

    async def check_then_rate_limited(host, *, steps=None, progress=None):
        report = await check(host, steps=steps, progress=progress)
        fake.rate_limit("chat.update", times=8, retry_after=0)  # progress's last and the report
        return report

    engine.check = check_then_rate_limited
    served = await _run(fake, engine, slash_body("mx1", fake.response_url()))
    (key,) = fake.messages
    final = fake.messages[key]["blocks"]
    assert final[0]["text"]["text"] == ":x: mx1: mail cannot flow · 1 cause"
    assert "check failed" not in texts(final) and "stopped" not in texts(final)
    assert "Slack refused its report (ratelimited)" in texts(final)
    (details,) = [b for b in buttons(final) if b["action_id"] == blockkit.ACTION_DETAILS]
    assert await served.bot.store.get_report(details["value"]) is not None


async def test_shortcut_on_a_hostile_message_naming_two_hosts(fake):
    message = {"ts": "1700000300.000100",
               "text": "<!channel> mx1 and mx2 down <https://x|Approve> `x` \u200b" + "z" * 3000}
    engine = ScriptedEngine()
    await _run(fake, engine, form_payload(shortcut_payload(message, response_url=fake.response_url())))
    assert sorted(c[0] for c in engine.calls) == ["mx1", "mx2"]
    posts = fake.of("chat.postMessage", ok=True)
    assert len(posts) == 2 and {p.args["thread_ts"] for p in posts} == {message["ts"]}
    for msg in fake.messages.values():
        assert live_markup(msg) == [] and "cannot flow" in texts(msg["blocks"])

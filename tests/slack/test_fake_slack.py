"""The fake Web API refuses what Slack refuses (so passing against it means something)."""

from __future__ import annotations

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.slack.fake_slack import BOT_TOKEN


def section(n: int) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": "x" * n}}


def button(**kw) -> dict:
    b = {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "ok"},
         "value": "v"}
    b.update(kw)
    return {"type": "actions", "elements": [b]}


@pytest.mark.parametrize("blocks, error", [
    ([section(10)] * 51, "invalid_blocks"),
    ([section(3001)], "invalid_blocks"),
    ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "invalid_blocks"),
    ([button(text={"type": "plain_text", "text": "b" * 76})], "invalid_blocks"),
    ([button(value="v" * 2001)], "invalid_blocks"),
    ([button(confirm={"title": {"type": "plain_text", "text": "t"},
                      "text": {"type": "mrkdwn", "text": "c" * 301},
                      "confirm": {"type": "plain_text", "text": "y"},
                      "deny": {"type": "plain_text", "text": "n"}})], "invalid_blocks"),
    ([section(2900)] * 5, "msg_blocks_too_long"),  # every block fine, the total is not
])
async def test_refuses_blocks_slack_refuses(fake, blocks, error):
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.api_url)
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", blocks=blocks, text="t")
    assert e.value.response["error"] == error
    ok = await client.chat_postMessage(channel="C1", blocks=[section(2900)] * 4, text="t")
    assert ok["ok"]


@pytest.mark.parametrize("token, error", [("xoxb-wrong", "invalid_auth"), (None, "not_authed")])
async def test_refuses_bad_or_missing_tokens(fake, token, error):
    client = AsyncWebClient(token=token, base_url=fake.api_url)
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", text="t")
    assert e.value.response["error"] == error


async def test_rate_limit_and_not_in_channel(fake):
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.api_url)
    fake.rate_limit("chat.postMessage", retry_after=3)
    fake.not_in_channel.add("G1")
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", text="t")
    assert e.value.response.status_code == 429 and e.value.response.headers["Retry-After"] == "3"
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="G1", text="t")
    assert e.value.response["error"] == "not_in_channel"

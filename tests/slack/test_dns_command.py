"""`/mailcheck dns DOMAIN`: a mail domain's DNS checks alone, posted like a host's check
(the real Bolt app and HTTP server, the fake Web API, a scripted engine)."""

from __future__ import annotations

import json

import pytest

from tests.slack.conftest import action_payload, form_payload, post_signed, slash_body
from tests.slack.test_http import buttons, final_message, texts


async def test_dns_domain_is_checked_alone_and_rechecked(served, fake):
    status, body, elapsed = await post_signed(served.url, slash_body("dns Example.COM", fake.response_url()))
    assert status == 200 and elapsed < 1.0
    assert "Checking `dns example.com`" in json.loads(body)["text"]
    await served.settle()
    assert served.engine.calls == [("dns example.com", None)]
    final = final_message(fake)["blocks"]
    assert "dns example.com: mail cannot flow" in final[0]["text"]["text"]
    assert "SPF fails" in texts(final)
    # the zone line to paste and who changes it: in the report's Details
    details = next(b for b in buttons(final) if b["action_id"] == "mailcheck_details")
    await post_signed(served.url, form_payload(action_payload("mailcheck_details", details["value"],
                                                              fake.response_url())))
    await served.settle()
    (opened,) = fake.of("views.open", ok=True)
    shown = texts(opened.args["view"]["blocks"])
    assert 'example.com. 3600 IN TXT \\"v=spf1 ip4:198.18.200.2 -all\\"' in shown
    assert "dns-provider.test" in shown
    recheck = next(b for b in buttons(final) if b["action_id"] == "mailcheck_recheck")
    assert recheck["value"] == "dns example.com"
    await post_signed(served.url, form_payload(action_payload("mailcheck_recheck", recheck["value"],
                                                              fake.response_url())))
    await served.settle()
    assert served.engine.calls == [("dns example.com", None)] * 2


@pytest.mark.parametrize("text,expect", [("dns", "Usage: `/mailcheck dns DOMAIN`"),
                                         ("dns a.example b.example", "Usage"),
                                         ("dns <@U1>", "is not a mail domain"),
                                         ("dns evil;id.example", "is not a mail domain"),
                                         ("dns 203.0.113.9", "is not a mail domain")])
async def test_bad_domain_is_refused_and_nothing_runs(served, fake, text, expect):
    _, body, _ = await post_signed(served.url, slash_body(text, fake.response_url()))
    answer = json.loads(body)
    assert answer["response_type"] == "ephemeral" and expect in answer["text"]
    assert "<@" not in answer["text"]  # user text is quoted, never a mention
    await served.settle()
    assert served.engine.calls == [] and not fake.of("chat.postMessage")


async def test_host_steps_dns_and_reputation_are_single_steps(served, fake):
    _, body, _ = await post_signed(served.url, slash_body("help", fake.response_url()))
    assert "`/mailcheck dns DOMAIN`" in json.loads(body)["text"]
    await post_signed(served.url, slash_body("mx1 dns", fake.response_url()))
    await served.settle()
    assert served.engine.calls == [("mx1", ("dns",))]

"""Slack payloads -> typed requests, and which inventory hosts a message names (pure)."""

from __future__ import annotations

from bot.slack.requests import CheckShortcut, Click, hosts_named
from config.inventory import Inventory

INVENTORY = Inventory.model_validate({"hosts": {
    "mx1": {"address": "198.18.7.2"}, "mx10": {"address": "198.18.7.20"},
    "mail-eu": {"address": "198.18.9.2"}}})


def names(text: str) -> list[str]:
    return [h.name for h in hosts_named(text, INVENTORY)]


def test_hosts_are_named_by_whole_words_or_addresses_in_order():
    assert names("instance mx1.example.com:25 down") == ["mx1"]
    assert names("mx10 is down, mx1 too") == ["mx10", "mx1"]
    assert names("mx1x, xmx1, mail-eu-2, mail-eu") == ["mail-eu"]
    assert names("probe 198.18.7.20:25 failed") == ["mx10"]  # not 198.18.7.2
    assert names("198.18.7.2 and 198.18.7.25") == ["mx1"]
    assert names("nothing here") == []


def test_a_shortcut_reads_every_text_of_the_message_and_its_thread():
    body = {"type": "message_action", "user": {"id": "U1"}, "channel": {"id": "C1"},
            "trigger_id": "t", "response_url": "https://hooks.example/r",
            "message": {"ts": "2.0", "thread_ts": "1.0", "text": "",
                        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "see mx1"}}],
                        "attachments": [{"fields": [{"title": "host", "value": "mail-eu"}]}]}}
    req = CheckShortcut.from_payload(body)
    assert (req.user_id, req.channel_id, req.thread_ts) == ("U1", "C1", "1.0")  # the thread it is in
    assert [h.name for h in hosts_named(req.text, INVENTORY)] == ["mx1", "mail-eu"]


def test_a_click_on_a_message_and_one_in_the_home_tab():
    action = {"action_id": "mailcheck_recheck", "value": "mx1", "action_ts": "9.9"}
    on_message = Click.from_payload({
        "user": {"id": "U1"}, "channel": {"id": "C1"}, "response_url": "r",
        "container": {"type": "message", "message_ts": "1.0", "channel_id": "C1"},
        "message": {"blocks": [{"type": "divider"}]}}, action)
    assert (on_message.channel_id, on_message.message_ts, on_message.in_view) == ("C1", "1.0", False)
    assert on_message.message_blocks == [{"type": "divider"}]
    in_home = Click.from_payload({"user": {"id": "U1"}, "container": {"type": "view", "view_id": "V1"}},
                                 action)
    assert (in_home.channel_id, in_home.in_view, in_home.value) == ("", True, "mx1")
    assert in_home.key != on_message.key

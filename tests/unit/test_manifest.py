"""slack-manifest.yaml stays current: the commands, shortcuts and events the listeners in
handlers/ register are declared, and the scopes are exactly those the Web API methods the
code calls need."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bot.slack.requests import CHECK_HOST_SHORTCUT

ROOT = Path(__file__).parents[2]
MANIFEST = yaml.safe_load((ROOT / "slack-manifest.yaml").read_text())
SCOPE_OF = {  # Web API method -> the bot scope it needs (None: no scope)
    "chat_postMessage": "chat:write", "chat_update": "chat:write", "chat_postEphemeral": "chat:write",
    "views_open": None, "views_publish": None, "views_update": None, "auth_test": None,
    "usergroups_users_list": "usergroups:read", "users_info": "users:read",
    "is_connected": None,  # the Socket Mode client, not a Web API method
}
DESIGN_SCOPES = {
    "commands": "slash commands and shortcuts",
    "chat:write.public": "posting in public channels the bot was not invited to",
}


def code() -> str:
    return "\n".join(p.read_text() for d in ("bot", "handlers") for p in (ROOT / d).rglob("*.py"))


def test_every_listener_is_declared():
    handlers = "\n".join(p.read_text() for p in (ROOT / "handlers").glob("*.py"))
    commands = set(re.findall(r'@app\.command\("([^"]+)"\)', handlers))
    assert commands == {c["command"] for c in MANIFEST["features"]["slash_commands"]}
    assert "@app.shortcut(CHECK_HOST_SHORTCUT)" in handlers
    (shortcut,) = MANIFEST["features"]["shortcuts"]
    assert (shortcut["callback_id"], shortcut["type"], shortcut["name"]) == (
        CHECK_HOST_SHORTCUT, "message", "Check mail host")
    events = set(re.findall(r'@app\.event\("([^"]+)"\)', handlers))
    assert events == set(MANIFEST["settings"]["event_subscriptions"]["bot_events"]) == {"app_home_opened"}
    assert MANIFEST["features"]["app_home"]["home_tab_enabled"] is True
    assert MANIFEST["settings"]["interactivity"]["is_enabled"] is True


def test_scopes_are_what_the_code_calls_and_nothing_more():
    text = code()
    called = set(re.findall(r'call\("([a-z_A-Z]+)"', text)) | set(re.findall(r'paced\([^,]+, "([a-z_A-Z]+)"', text))
    called |= set(re.findall(r"client\.([a-z]+_[a-z_A-Z]+)\(", text))
    assert {"chat_postMessage", "chat_update", "views_open", "views_publish",
            "usergroups_users_list"} <= called
    unknown = called - set(SCOPE_OF)
    assert not unknown, f"add these Web API methods to SCOPE_OF: {unknown}"
    needed = {SCOPE_OF[m] for m in called} - {None} | set(DESIGN_SCOPES)
    assert set(MANIFEST["oauth_config"]["scopes"]["bot"]) == needed

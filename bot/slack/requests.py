"""Slack payloads -> typed requests (pure). The listeners in handlers/ do only this: turn
what Slack sent into one of these and hand it on, so nothing past them reads a payload.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from config.inventory import Host, Inventory

CHECK_HOST_SHORTCUT = "mailcheck_check_host"  # the message shortcut's callback_id (manifest)


@dataclass(frozen=True)
class SlashCommand:
    """/mailcheck TEXT, typed by `user_id` in `channel_id`."""

    text: str
    user_id: str
    channel_id: str
    response_url: str = ""
    trigger_id: str = ""

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> SlashCommand:
        return cls(text=body.get("text", ""), user_id=body.get("user_id", ""),
                   channel_id=body.get("channel_id", ""), response_url=body.get("response_url", ""),
                   trigger_id=body.get("trigger_id", ""))


@dataclass(frozen=True)
class ViewSubmission:
    """A submitted modal (e.g. a break-glass reason): its callback id, private metadata and
    the values entered."""

    callback_id: str
    metadata: str
    user_id: str
    values: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, body: dict[str, Any], view: dict[str, Any]) -> ViewSubmission:
        return cls(callback_id=view.get("callback_id", ""), metadata=view.get("private_metadata", ""),
                   user_id=(body.get("user") or {}).get("id", ""),
                   values=(view.get("state") or {}).get("values") or {})


@dataclass(frozen=True)
class CheckShortcut:
    """"Check mail host" on a message: check the inventory hosts it names, in its thread."""

    user_id: str
    channel_id: str
    thread_ts: str  # the message's thread (its own ts when it starts none)
    text: str  # every text of the message: its text, blocks and attachments
    response_url: str = ""
    trigger_id: str = ""

    @classmethod
    def from_payload(cls, body: dict[str, Any]) -> CheckShortcut:
        message = body.get("message") or {}
        return cls(
            user_id=(body.get("user") or {}).get("id", ""),
            channel_id=(body.get("channel") or {}).get("id", ""),
            thread_ts=message.get("thread_ts") or message.get("ts") or body.get("message_ts", ""),
            text="\n".join(texts_of(message)), response_url=body.get("response_url", ""),
            trigger_id=body.get("trigger_id", ""))


@dataclass(frozen=True)
class HomeOpened:
    user_id: str
    tab: str  # home | messages

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> HomeOpened:
        return cls(user_id=event.get("user", ""), tab=event.get("tab", "home"))


@dataclass(frozen=True)
class Click:
    """A button: Apply, Roll back, Re-check, Details; on a message, or in a view (App Home,
    a modal: then there is no channel and no message)."""

    action_id: str
    value: str
    user_id: str
    team_id: str = ""
    channel_id: str = ""
    message_ts: str = ""
    trigger_id: str = ""
    response_url: str = ""
    action_ts: str = ""
    message_blocks: list[dict] = field(default_factory=list)
    in_view: bool = False

    @classmethod
    def from_payload(cls, body: dict[str, Any], action: dict[str, Any]) -> Click:
        container = body.get("container") or {}
        return cls(
            action_id=action.get("action_id", ""), value=action.get("value", ""),
            user_id=(body.get("user") or {}).get("id", ""),
            team_id=(body.get("team") or {}).get("id", ""),
            channel_id=(body.get("channel") or {}).get("id", "") or container.get("channel_id", ""),
            message_ts=container.get("message_ts", ""), trigger_id=body.get("trigger_id", ""),
            response_url=body.get("response_url", ""), action_ts=action.get("action_ts", ""),
            message_blocks=list((body.get("message") or {}).get("blocks") or []),
            in_view=container.get("type") == "view")

    @property
    def key(self) -> str:
        """One click, however often Slack delivers it."""
        return f"{self.message_ts}:{self.action_ts}:{self.user_id}:{self.action_id}"


# --- which inventory hosts a message names -----------------------------------------------------
TEXT_KEYS = ("text", "fallback", "pretext", "title", "value", "footer", "author_name")


def texts_of(obj: Any) -> Iterable[str]:
    """Every human-readable string of a message, its blocks and attachments (Alertmanager and
    PagerDuty put the host in attachments' fields or in blocks)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in TEXT_KEYS and isinstance(value, str):
                yield value
            elif isinstance(value, dict | list):
                yield from texts_of(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from texts_of(item)


def hosts_named(text: str, inventory: Inventory) -> list[Host]:
    """The inventory hosts a text names, by inventory name or address, as whole words
    ('mx1' in 'mx1.example.com is down', not in 'mx10'), in the order they first appear."""
    found: list[tuple[int, str]] = []
    for name, host in inventory.hosts.items():
        places = [m.start() for word in {name, host.address}
                  for m in re.finditer(rf"(?<![\w.-]){re.escape(word)}(?![\w-]|\.\d)", text)]
        if places:
            found.append((min(places), name))
    return [inventory.hosts[name] for _, name in sorted(found)]

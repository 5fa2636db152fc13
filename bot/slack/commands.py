"""`/mailcheck` text -> what to do. Pure; never resolves or probes anything.

Only inventory names are accepted as targets: the bot must not become a port
scanner for anyone who can type in Slack. Replies here are ephemeral texts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.checks.registry import REGISTRY, STEPS
from bot.errors import TargetError
from bot.render.mrkdwn import escape
from config.inventory import Host, Inventory, is_selector, select_hosts, valid_domain

SINGLE_STEPS = tuple(c.name for c in REGISTRY if not c.needs)  # a step that reads no other
USAGE = (
    "*Usage*\n"
    f"• `/mailcheck HOST`: the full check of an inventory host ({', '.join(STEPS)})\n"
    "• `/mailcheck HOST STEP`: one step only, STEP one of " + ", ".join(SINGLE_STEPS) + "\n"
    "• `/mailcheck all`, `/mailcheck group:NAME`, `/mailcheck tag:NAME`: those inventory hosts "
    "at once, one message with a row per host (fixes stay per host)\n"
    "• `/mailcheck dns DOMAIN`: a mail domain's DNS records alone (MX, SPF, DMARC, MTA-STS, "
    "DANE); no host is touched\n"
    "• `/mailcheck hosts`: the hosts you can check\n"
    "• `/mailcheck help`: this text\n"
    "Results appear in this channel and update as steps finish. Fixes need an approver's click."
)


@dataclass(frozen=True)
class Reply:
    """Answer with this ephemeral text and do nothing else."""

    text: str
    refused: bool = False


@dataclass(frozen=True)
class CheckCommand:
    host: Host
    steps: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DomainCommand:
    """The DNS checks of a mail domain alone: lookups only, nothing connects to a host."""

    domain: str


@dataclass(frozen=True)
class FleetCommand:
    """The hosts an inventory selector (all, group:NAME, tag:NAME) names, in its order."""

    selector: str
    hosts: tuple[Host, ...]
    steps: tuple[str, ...] | None = None


Parsed = Reply | CheckCommand | DomainCommand | FleetCommand


def _quote(text: str) -> str:
    """User text echoed back: short, one line, no Slack mentions or links."""
    flat = re.sub(r"\s+", " ", text).strip()[:60]
    return flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")


def hosts_text(inventory: Inventory) -> str:
    if not inventory.hosts:
        return "No hosts are configured: the inventory is empty. Ask an admin to add your mail " \
               "servers to mailcheck's inventory file."
    lines = [f"*Hosts you can check* ({len(inventory.hosts)}):"]
    for name in sorted(inventory.hosts):
        host = inventory.hosts[name]
        tags = f" · tags: {', '.join(host.tags)}" if host.tags else ""
        lines.append(f"• `{name}` ({host.address}){tags}")
    if inventory.groups:
        lines.append("*Groups*: " + ", ".join(f"`group:{g}` ({len(m)})" for g, m in sorted(inventory.groups.items())))
    lines.append("Run `/mailcheck HOST` with one of these names, or `/mailcheck all`.")
    return "\n".join(lines)[:2900]


def _unknown(word: str, inventory: Inventory) -> Reply:
    known = ", ".join(f"`{n}`" for n in sorted(inventory.hosts)[:20]) or "none yet"
    return Reply(
        f"`{_quote(word)}` is not in mailcheck's inventory, so I won't connect to it or look it "
        f"up: I only check the mail servers listed there. Known hosts: {known}. "
        "`/mailcheck hosts` lists them; to add a server, ask an admin to put it in the inventory.",
        refused=True,
    )


def domain_command(words: list[str]) -> Parsed:
    """`/mailcheck dns DOMAIN`'s words after `dns`."""
    if len(words) != 1:
        return Reply("Usage: `/mailcheck dns DOMAIN`, e.g. `/mailcheck dns example.com`.", refused=True)
    try:
        return DomainCommand(valid_domain(words[0]))
    except TargetError:
        return Reply(f"`{_quote(words[0])}` is not a mail domain (a DNS name such as example.com).",
                     refused=True)


def parse(text: str, inventory: Inventory) -> Parsed:
    words = (text or "").split()
    if not words or words[0].lower() in ("help", "-h", "--help", "?"):
        return Reply(USAGE)
    if words[0].lower() == "hosts" and len(words) == 1 and "hosts" not in inventory.hosts:
        return Reply(hosts_text(inventory))
    if words[0].lower() == "dns" and "dns" not in inventory.hosts:
        return domain_command(words[1:])
    if is_selector(words[0]):  # no inventory host is named like one (refused at load)
        return fleet_command(words, inventory)
    host = inventory.hosts.get(words[0])
    if host is None:
        return _unknown(words[0], inventory)
    steps = _steps(words[1:])
    return steps if isinstance(steps, Reply) else CheckCommand(host, steps)


def _steps(words: list[str]) -> tuple[str, ...] | None | Reply:
    """The optional STEP after a target: None (every step), (STEP,), or a Reply."""
    if not words:
        return None
    step = words[0].lower()
    if len(words) > 1 or step not in SINGLE_STEPS:
        return Reply(f"`{_quote(' '.join(words))}` is not a step I know. Steps: "
                     + ", ".join(f"`{s}`" for s in SINGLE_STEPS) + ".\n" + USAGE, refused=True)
    return (step,)


def fleet_command(words: list[str], inventory: Inventory) -> Parsed:
    """`/mailcheck all | group:NAME | tag:NAME [STEP]`; a selection naming no host is refused
    with the groups or tags that exist."""
    try:
        hosts = select_hosts(words[0], inventory)
    except TargetError as e:
        return Reply(_quote_long(str(e)) + "\n`/mailcheck hosts` lists the hosts and groups.",
                     refused=True)
    steps = _steps(words[1:])
    return steps if isinstance(steps, Reply) else FleetCommand(words[0], tuple(hosts), steps)


def _quote_long(text: str) -> str:
    """A message naming user and inventory text: escaped, no mention or link."""
    return escape(re.sub(r"\s+", " ", text).strip()[:1000])

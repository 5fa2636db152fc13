"""Which rule publishes a port: the nat PREROUTING DNAT / REDIRECT a new inbound connection meets.

A container engine publishes a port with a nat rule (Docker's `-j DNAT --to-destination
172.17.0.2:25`, Docker 28's and netavark's `dnat ip to ...`), often with no process
listening on the host. The services step asks this to say "no process listens, but this
rule forwards the port to that address" instead of "nothing listens".

Pure, over the parsed Ruleset: the nat base chains on the prerouting hook are walked with
the evaluator's own walk (jumps, gotos, returns; a match not understood forks it). The
evaluator does not model the translation itself (its verdict is `unknown`): the first rule
every branch stops at is read for its target. When the walk is not certain (a match not
understood before any DNAT) the answer is None, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.firewall.evaluate import base_chains, describe, run_chain
from bot.firewall.model import Packet, Ruleset
from bot.firewall.parse import RULESET_COMMANDS, Results, parse_all
from bot.models import Command

# iptables-save: -j DNAT --to-destination ADDR[:PORT]; -j REDIRECT --to-ports PORT
# nft: dnat [ip|ip6] to ADDR[:PORT]; redirect to [:]PORT
_TARGETS = (
    (re.compile(r"-j DNAT\b.*?--to-destination\s+(\S+)"), False),
    (re.compile(r"\bdnat\s+(?:ip6?\s+)?to\s+(\S+)"), False),
    (re.compile(r"-j REDIRECT\b.*?--to-ports\s+(\d+)"), True),
    (re.compile(r"\bredirect\s+to\s+:?(\d+)"), True),
)


@dataclass(frozen=True)
class Published:
    """A nat rule that sends this port elsewhere."""

    destination: str  # '198.19.3.2:25' (DNAT), or ':2525' (REDIRECT to a local port)
    redirect: bool  # REDIRECT: to a port of the host itself
    rule: str  # the deciding rule, as the firewall shows it (table, chain, position, text)

    @property
    def address(self) -> str | None:
        """The address a DNAT sends the connection to (None for REDIRECT)."""
        if self.redirect:
            return None
        dest = self.destination
        if dest.startswith("["):  # [2001:db8::2]:25
            return dest[1:].partition("]")[0]
        return dest.rpartition(":")[0] if dest.count(":") == 1 else dest


def nat_target(text: str) -> tuple[str, bool] | None:
    """(destination, redirect) of a DNAT / REDIRECT rule's text, else None."""
    for pattern, redirect in _TARGETS:
        if m := pattern.search(text):
            return (f":{m[1]}" if redirect else m[1]), redirect
    return None


def published(ruleset: Ruleset, packet: Packet) -> Published | None:
    """The DNAT / REDIRECT that a NEW inbound `packet` meets in nat PREROUTING; None when no
    rule translates it or the walk cannot tell for certain."""
    if packet.direction != "inbound" or ruleset.problems:
        return None
    for table, chain in base_chains(ruleset, packet):
        if chain.type != "nat" or chain.hook != "prerouting":
            continue
        outcomes = run_chain(table, chain, packet)
        for out in outcomes:
            if out.kind != "unknown":
                continue
            target = nat_target(out.rule.text) if out.rule is not None else None
            if target is None or len(outcomes) != 1 or out.chain is None:
                return None  # not understood, or branches disagree: not certain
            return Published(target[0], target[1], describe(table, out.chain, out.rule))
    return None


def commands() -> list[Command]:
    """The read-only ruleset commands `published_in` reads (the firewall step runs the same)."""
    return [Command(argv) for argv in RULESET_COMMANDS]


def published_in(results: Results, packet: Packet) -> Published | None:
    """`published` on the ruleset the collected output gives."""
    return published(parse_all(results), packet)

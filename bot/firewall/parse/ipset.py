"""`ipset save` -> the elements of each address set, for iptables' `-m set --match-set`.

fail2ban's iptables-ipset actions, CSF (LF_IPSET) and hand-kept deny lists keep their
addresses in ipsets. iptables-save names the set, not its elements: `ipset save` lists
them (`create NAME hash:ip family inet ...`, then `add NAME ADDR [timeout N]`). A set of
addresses or networks (hash:ip, hash:net, bitmap:ip) matched on one direction becomes an
address match of the model, with the elements as collected. Any other set (ports,
interfaces, list:set, a `nomatch` element), or a set that was not collected, stays a match
the model does not understand: the verdicts it touches are unknown, never guessed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from bot.firewall.model import Addr, Match, Ruleset, Unknown

COMMAND = ("ipset", "save")
ADDRESS_TYPES = ("hash:ip", "hash:net", "bitmap:ip")
FAMILIES = {"inet": "ip", "inet6": "ip6"}


@dataclass(frozen=True)
class SetMatch(Unknown):
    """`-m set [!] --match-set NAME src|dst[,...]`: not understood until the set's elements are
    known (`resolve`)."""

    name: str = ""
    flags: tuple[str, ...] = ("src",)
    negate: bool = False


@dataclass(frozen=True)
class IpSet:
    kind: str  # hash:ip, hash:net, ...
    family: str  # ip | ip6 (as the tables say)
    networks: tuple[str, ...] | None  # None: not a plain address set


def parse_save(text: str) -> dict[str, IpSet]:
    """`ipset save` output -> name -> IpSet."""
    created: dict[str, tuple[str, str]] = {}
    elements: dict[str, list[str] | None] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "create":
            family = words[words.index("family") + 1] if "family" in words[:-1] else "inet"
            created[words[1]] = (words[2], FAMILIES.get(family, family))
            elements[words[1]] = []
        elif len(words) >= 3 and words[0] == "add" and elements.get(words[1]) is not None:
            elements[words[1]] = _element(words[2], words[3:], elements[words[1]])
    return {name: IpSet(kind, family, _networks(kind, elements[name])) for name, (kind, family) in created.items()}


def _element(value: str, options: list[str], so_far: list[str]) -> list[str] | None:
    return None if "nomatch" in options else [*so_far, value]


def _networks(kind: str, values: list[str] | None) -> tuple[str, ...] | None:
    if kind not in ADDRESS_TYPES or values is None:
        return None
    out: list[str] = []
    try:
        for v in values:
            if "-" in v and "/" not in v:
                lo, hi = (ipaddress.ip_address(a) for a in v.split("-", 1))
                out += [str(n) for n in ipaddress.summarize_address_range(lo, hi)]
            else:
                out.append(str(ipaddress.ip_network(v, strict=False)))
    except (ValueError, TypeError):
        return None
    return tuple(out)


def resolve(ruleset: Ruleset, sets: dict[str, IpSet]) -> None:
    """Each `-m set` match of a known address set, in a table of its family, becomes an Addr."""
    for table in ruleset.tables:
        for chain in table.chains.values():
            for rule in chain.rules:
                rule.matches = tuple(_resolved(m, sets, table.family) for m in rule.matches)


def _resolved(m: Match, sets: dict[str, IpSet], family: str) -> Match:
    if not isinstance(m, SetMatch):
        return m
    s = sets.get(m.name)
    if s is None or s.networks is None or s.family != family or m.flags[0] not in ("src", "dst"):
        return m
    return Addr("saddr" if m.flags[0] == "src" else "daddr", s.networks, m.negate, m.text)

"""The peer address space of one family, cut into regions the ruleset cannot tell apart.

Which addresses a verdict holds for is decided by the rules' address matches
(`-s`, `! -d`, nft `ip saddr`, a set's elements as collected, conntrack's
original addresses) and by the interface a peer's packets use (its route's
device). Two peer addresses that are in exactly the same address matches and
behind the same route device get the same verdict from the evaluator, always:
so one member of each region decides for the whole region, exactly. No sample.

A region is a *membership signature*: the set of address matches (by their
networks) that contain it, plus its route device. The regions are found by a
sweep over the boundaries of every network; a blocklist of 10,000 addresses in
one match is two regions (in it, not in it), not 10,000.

Left out of the space: addresses no peer has (0.0.0.0/8, loopback, multicast
and the reserved 240.0.0.0/4; ::, ::1, ff00::/8). The host's own addresses
stay in (a LAN's range reads as one network), but they bound a region of their
own: `-m addrtype --src-type LOCAL` tells them apart.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise

from bot.firewall.model import Addr, CtTuple, Routes, Ruleset, flat_matches, network

NOT_PEERS = {
    "ipv4": ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/3"),
    "ipv6": ("::/128", "::1/128", "ff00::/8"),
}
BITS = {"ipv4": 32, "ipv6": 128}
ADDRESS = {"ipv4": ipaddress.IPv4Address, "ipv6": ipaddress.IPv6Address}

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Region:
    """Peer addresses every address match of the ruleset treats alike (inclusive int ranges)."""

    ranges: tuple[tuple[int, int], ...]
    family: str
    iface: str | None  # the device of its most specific route; None: the default route, or not known
    matches: frozenset = frozenset()  # the address matches holding it (signature_key), own addresses (str)

    @property
    def own(self) -> frozenset[str]:
        """The host's own address this region is (empty: not one)."""
        return frozenset(m for m in self.matches if isinstance(m, str))

    @property
    def size(self) -> int:
        return sum(b - a + 1 for a, b in self.ranges)

    @property
    def member(self) -> str:
        """One address of the region (not a network's first address when it can avoid it)."""
        a, b = max(self.ranges, key=lambda r: r[1] - r[0])
        return str(ADDRESS[self.family](a + 1 if b - a >= 2 else a))


@functools.lru_cache(maxsize=65536)
def signature_key(networks: tuple[str, ...], family: str) -> frozenset[Net] | None:
    """An address match's networks in this family, as regions are told apart by them; None
    when the match is the same for every address (none in this family, or one is /0)."""
    version = 4 if family == "ipv4" else 6
    nets = frozenset(n for n in map(network, networks) if n and n.version == version)
    return nets if nets and all(n.prefixlen for n in nets) else None


def address_networks(ruleset: Ruleset, family: str) -> Iterator[frozenset[Net]]:
    """The networks of every address match in this family's tables (one frozenset per match)."""
    for table in ruleset.tables:
        if not table.applies_to(family):
            continue
        for chain in table.chains.values():
            for rule in chain.rules:
                for m in flat_matches(rule):
                    if isinstance(m, Addr | CtTuple) and m.networks:
                        if (nets := signature_key(m.networks, family)) is not None:
                            yield nets


def regions(ruleset: Ruleset, family: str, routes: Routes | None, own: Iterable[str] = ()) -> list[Region]:
    """The family's peer space cut by every address match, route and own address (`own`, the
    host's addresses): one Region per signature."""
    version = 4 if family == "ipv4" else 6
    events: dict[int, list[tuple[tuple, int]]] = defaultdict(list)

    def add(key: tuple, net: Net | None) -> None:
        if net is not None and net.version == version:
            events[int(net.network_address)].append((key, 1))
            events[int(net.broadcast_address) + 1].append((key, -1))

    for nets in set(address_networks(ruleset, family)):
        for net in nets:
            add(("match", nets), net)
    for text, dev in (routes.entries if routes else ()):
        if (net := network(text)) is not None and net.prefixlen:
            add(("route", net.prefixlen, dev, text), net)
    for text in own:
        add(("own", text), network(text))
    for text in NOT_PEERS[family]:
        add(("not a peer",), network(text))
    return _sweep(events, family)


def _sweep(events: dict[int, list[tuple[tuple, int]]], family: str) -> list[Region]:
    top = 2 ** BITS[family]
    points = sorted({0, top, *events})
    active: Counter = Counter()
    by_signature: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for start, end in pairwise(points):
        for key, delta in events.get(start, ()):
            active[key] += delta
            if not active[key]:
                del active[key]
        if ("not a peer",) in active:
            continue
        matches = frozenset(k[1] for k in active if k[0] in ("match", "own"))
        route = max((k for k in active if k[0] == "route"), default=None, key=lambda k: k[1])
        by_signature[(matches, route[2] if route else None)].append((start, end - 1))
    return [Region(tuple(r), family, iface, matches) for (matches, iface), r in by_signature.items()]


def networks(ranges: Iterable[tuple[int, int]], family: str) -> tuple[str, ...]:
    """Inclusive int ranges -> the fewest CIDR networks covering exactly them, in order."""
    return _networks(tuple(sorted(ranges)), family)


@functools.lru_cache(maxsize=1024)
def _networks(ranges: tuple[tuple[int, int], ...], family: str) -> tuple[str, ...]:
    merged: list[list[int]] = []
    for a, b in ranges:  # touching ranges joined first: what is left is separated by gaps, so
        if merged and a <= merged[-1][1] + 1:  # the CIDRs of one never join another's
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    cls = ADDRESS[family]
    return tuple(str(n) for a, b in merged for n in ipaddress.summarize_address_range(cls(a), cls(b)))

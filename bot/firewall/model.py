"""One firewall model for every backend.

iptables-save (nft-based and legacy, v4 and v6), `nft -j list ruleset`, ufw
(which is iptables underneath) and firewalld (nftables underneath) all become
Tables of Chains of Rules. A Rule is a conjunction of Matches and a Verdict.

Every Match answers, for one Packet, True, False or None: None means "this
model does not understand the match" and makes the evaluator fork (see
bot/firewall/evaluate.py): a verdict is certain only when both outcomes agree.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

Hook = Literal["prerouting", "input", "forward", "output", "postrouting", "ingress"]
Source = Literal["iptables-nft", "iptables-legacy", "nft"]


@dataclass(frozen=True)
class Packet:
    """The first packet (conntrack NEW) of a TCP connection, as the kernel sees it."""

    direction: Literal["inbound", "outbound"]
    family: Literal["ipv4", "ipv6"]
    dport: int
    saddr: str
    daddr: str
    sport: int = 40000
    iif: str | None = None  # inbound only
    oif: str | None = None  # outbound only
    ctstate: str = "new"  # new | established | related | invalid | untracked
    proto: str = "tcp"
    local_addrs: frozenset[str] = frozenset()  # the host's own addresses (addrtype LOCAL)


Tri = bool | None


def tri_and(values) -> Tri:
    result: Tri = True
    for v in values:
        if v is False:
            return False
        if v is None:
            result = None
    return result


def _neg(value: Tri, negate: bool) -> Tri:
    return value if value is None or not negate else not value


class Match:
    """Base: `test(packet)` -> True / False / None (not understood). `text` as the firewall shows it."""

    text: str = ""

    def test(self, p: Packet) -> Tri:  # pragma: no cover - interface
        raise NotImplementedError


PROTO_NUMBERS = {"6": "tcp", "17": "udp", "1": "icmp", "58": "ipv6-icmp", "icmpv6": "ipv6-icmp",
                 "132": "sctp", "0": "all"}


@dataclass(frozen=True)
class Proto(Match):
    protos: frozenset[str]
    negate: bool = False
    text: str = ""

    def test(self, p: Packet) -> Tri:
        names = {PROTO_NUMBERS.get(x, x) for x in self.protos}
        return _neg("all" in names or p.proto in names, self.negate)


@dataclass(frozen=True)
class Port(Match):
    """A destination or source port set: ranges inclusive."""

    field: Literal["dport", "sport"]
    ranges: tuple[tuple[int, int], ...]
    negate: bool = False
    text: str = ""

    def test(self, p: Packet) -> Tri:
        if p.proto not in ("tcp", "udp", "sctp"):
            return False
        value = p.dport if self.field == "dport" else p.sport
        return _neg(any(lo <= value <= hi for lo, hi in self.ranges), self.negate)


@dataclass(frozen=True)
class Addr(Match):
    field: Literal["saddr", "daddr"]
    networks: tuple[str, ...]
    negate: bool = False
    text: str = ""

    def test(self, p: Packet) -> Tri:
        addr = ipaddress.ip_address(p.saddr if self.field == "saddr" else p.daddr)
        hit = False
        for net in self.networks:
            try:
                n = ipaddress.ip_network(net, strict=False)
            except ValueError:
                return None
            if n.version == addr.version and addr in n:
                hit = True
                break
        return _neg(hit, self.negate)


@dataclass(frozen=True)
class Iface(Match):
    """-i/-o (iptables, '+' is a wildcard suffix) or iifname/oifname (nft, '*')."""

    field: Literal["iif", "oif"]
    names: tuple[str, ...]
    negate: bool = False
    text: str = ""

    def test(self, p: Packet) -> Tri:
        actual = p.iif if self.field == "iif" else p.oif
        if self.field == "iif" and p.direction == "outbound":
            return _neg(False, self.negate) if actual is None else None
        if self.field == "oif" and p.direction == "inbound":
            return _neg(False, self.negate) if actual is None else None
        if actual is None:
            return None
        hit = any(
            actual.startswith(n[:-1]) if n.endswith(("+", "*")) else actual == n for n in self.names
        )
        return _neg(hit, self.negate)


@dataclass(frozen=True)
class CtState(Match):
    states: frozenset[str]  # lower case: new, established, related, invalid, untracked
    negate: bool = False
    text: str = ""

    def test(self, p: Packet) -> Tri:
        return _neg(p.ctstate in self.states, self.negate)


@dataclass(frozen=True)
class AddrType(Match):
    field: Literal["saddr", "daddr"]
    types: frozenset[str]  # upper case: LOCAL, UNICAST, ...
    negate: bool = False
    text: str = ""

    def test(self, p: Packet) -> Tri:
        addr = p.saddr if self.field == "saddr" else p.daddr
        known: dict[str, bool] = {"LOCAL": addr in p.local_addrs}
        ip = ipaddress.ip_address(addr)
        known["UNICAST"] = not (ip.is_multicast or addr.endswith(".255"))
        known["MULTICAST"] = ip.is_multicast
        known["BROADCAST"] = False if ip.version == 6 else addr.endswith(".255")
        if not all(t in known for t in self.types):
            return None
        return _neg(any(known[t] for t in self.types), self.negate)


@dataclass(frozen=True)
class Always(Match):
    """Matches every packet: comments, counters, marks that only annotate."""

    text: str = ""

    def test(self, p: Packet) -> Tri:
        return True


@dataclass(frozen=True)
class Never(Match):
    """Matches no packet of ours (e.g. an ICMP type, a UDP-only option)."""

    text: str = ""

    def test(self, p: Packet) -> Tri:
        return False


@dataclass(frozen=True)
class Unknown(Match):
    """A match this model does not understand: the evaluator forks on it."""

    text: str = ""

    def test(self, p: Packet) -> Tri:
        return None


VerdictKind = Literal["accept", "drop", "reject", "jump", "goto", "return", "continue", "unknown"]


@dataclass(frozen=True)
class Verdict:
    """What a matching rule does. `continue` = non-terminating (LOG, counter, MARK)."""

    kind: VerdictKind
    chain: str | None = None  # for jump / goto
    set_ctstate: str | None = None  # with continue: e.g. "untracked" (raw CT --notrack)

    @property
    def terminal(self) -> bool:
        return self.kind in ("accept", "drop", "reject")


@dataclass
class Rule:
    matches: tuple[Match, ...]
    verdict: Verdict
    text: str  # as the user sees it: an iptables-save line, an nft rule
    position: int = 0  # 1-based position in its chain (iptables --line-numbers)
    handle: int | None = None  # nft handle
    packets: int | None = None
    bytes: int | None = None

    def test(self, p: Packet) -> Tri:
        return tri_and(m.test(p) for m in self.matches)


@dataclass
class Chain:
    name: str
    rules: list[Rule] = field(default_factory=list)
    hook: Hook | None = None  # None: a user chain, reached only by jump/goto
    priority: int = 0
    policy: Literal["accept", "drop"] | None = None  # base chains only
    type: Literal["filter", "nat", "route"] = "filter"

    @property
    def is_base(self) -> bool:
        return self.hook is not None


@dataclass
class Table:
    family: Literal["ip", "ip6", "inet", "arp", "bridge", "netdev"]
    name: str
    source: Source
    chains: dict[str, Chain] = field(default_factory=dict)

    def applies_to(self, family: str) -> bool:
        want = "ip" if family == "ipv4" else "ip6"
        return self.family in (want, "inet")

    @property
    def label(self) -> str:
        if self.source == "nft":
            return f"nft {self.family} {self.name}"
        tool = "iptables" if self.family == "ip" else "ip6tables"
        return f"{tool}{'-legacy' if self.source == 'iptables-legacy' else ''} -t {self.name}"


@dataclass
class Ruleset:
    tables: list[Table] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # parse or collection gaps

    def table(self, family: str, name: str, source: str | None = None) -> Table | None:
        for t in self.tables:
            if t.family == family and t.name == name and (source is None or t.source == source):
                return t
        return None


# Where xtables' tables hook, and at which priority (iptables-nft and legacy alike).
XTABLES_HOOKS: dict[str, tuple[tuple[str, int], ...]] = {
    "raw": (("PREROUTING", -300), ("OUTPUT", -300)),
    "mangle": (("PREROUTING", -150), ("INPUT", -150), ("FORWARD", -150), ("OUTPUT", -150),
               ("POSTROUTING", -150)),
    "nat": (("PREROUTING", -100), ("INPUT", 100), ("OUTPUT", -100), ("POSTROUTING", 100)),
    "filter": (("INPUT", 0), ("FORWARD", 0), ("OUTPUT", 0)),
    "security": (("INPUT", 50), ("FORWARD", 50), ("OUTPUT", 50)),
}

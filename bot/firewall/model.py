"""One firewall model for every backend.

iptables-save (nft-based and legacy, v4 and v6), `nft -j list ruleset`, ufw
(which is iptables underneath) and firewalld (nftables underneath) all become
Tables of Chains of Rules. A Rule is a conjunction of Matches and a Verdict.

Every Match answers, for one Packet, True, False or None: None means "this
model does not understand the match" and makes the evaluator fork (see
bot/firewall/evaluate.py): a verdict is certain only when both outcomes agree.
"""

from __future__ import annotations

import bisect
import contextvars
import functools
import ipaddress
from dataclasses import dataclass, field
from typing import Literal

Hook = Literal["prerouting", "input", "forward", "output", "postrouting", "ingress"]
Source = Literal["iptables-nft", "iptables-legacy", "nft"]


@dataclass(frozen=True)
class Routes:
    """The host's main routing table for one family, and whether it forwards packets.

    From `ip -4 route` / `ip -6 route` and the forwarding sysctl. Only what the evaluator
    needs to follow a translated packet: which device it leaves by (`device`), and
    whether the kernel forwards at all. Policy routing (`ip rule`) is not read.
    """

    entries: tuple[tuple[str, str | None], ...] = ()  # (network, device; None: no device, e.g. blackhole)
    forwarding: bool | None = None  # net.ipv4.ip_forward / net.ipv6.conf.all.forwarding; None: not known

    def device(self, address: str) -> str | None:
        """The device of the longest prefix holding address (None: no route, or not a plain one)."""
        ip = ipaddress.ip_address(address)
        best: tuple[int, str | None] | None = None
        for network, dev in self.entries:
            net = ipaddress.ip_network(network, strict=False)
            if net.version == ip.version and ip in net and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, dev)
        return best[1] if best else None


@dataclass(frozen=True)
class Packet:
    """A packet of a TCP connection as the kernel sees it: the first (conntrack NEW) or a reply.

    direction "inbound": it arrives on an interface (prerouting first); "outbound": this
    host sends it (output first). A DNAT changes daddr/dport and keeps the connection's
    original destination (orig_daddr, orig_dport: conntrack's original tuple, which
    --ctorigdst / `ct original` match); a translated packet to another host is forwarded
    (forward and postrouting hooks, with the device its route leaves by as oif).
    """

    direction: Literal["inbound", "outbound"]
    family: Literal["ipv4", "ipv6"]
    dport: int
    saddr: str
    daddr: str
    sport: int = 40000
    iif: str | None = None  # arrived on (inbound)
    oif: str | None = None  # leaves by (outbound, and forwarded packets)
    ctstate: str = "new"  # new | established | related | invalid | untracked
    proto: str = "tcp"
    local_addrs: frozenset[str] = frozenset()  # the host's own addresses (addrtype LOCAL)
    routes: Routes | None = None  # this family's routes (None: not known)
    forwarded: bool = False  # routed through this host (forward hook), not to or from it
    reply: bool = False  # in the connection's reply direction (conntrack)
    dnat: bool = False  # the connection's destination was translated (ct status dnat)
    orig_daddr: str | None = None  # conntrack's original destination, when not daddr
    orig_dport: int | None = None
    nat_by: str | None = None  # the rule that translated it, as the firewall shows it

    def original(self) -> tuple[str, str, int, int]:
        """conntrack's original tuple (saddr, daddr, sport, dport) of this packet's connection."""
        if self.reply:  # the reply goes back to the original source; SNAT is not modelled
            return self.daddr, self.orig_daddr or self.saddr, self.dport, self.orig_dport or self.sport
        return self.saddr, self.orig_daddr or self.daddr, self.sport, self.orig_dport or self.dport

    def reply_tuple(self) -> tuple[str, str, int, int]:
        """conntrack's reply tuple: from where the connection really went, back to its source."""
        if self.reply:
            return self.saddr, self.daddr, self.sport, self.dport
        return self.daddr, self.saddr, self.dport, self.sport


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
        return _neg(in_networks(p.saddr if self.field == "saddr" else p.daddr, self.networks), self.negate)


# While set, what the evaluation consulted about the packet's addresses and interfaces: each
# address match's networks, "addrtype", "iface" (bot/firewall/analysis.py reuses a verdict for
# peers that agree on all of it).
CONSULTED: contextvars.ContextVar[set | None] = contextvars.ContextVar("consulted", default=None)


def _consulted(what) -> None:
    if (seen := CONSULTED.get()) is not None:
        seen.add(what)


def in_networks(address: str, networks: tuple[str, ...]) -> Tri:
    """Is address in one of the networks? None when a network cannot be read."""
    _consulted(networks)
    spans = _spans(networks)
    if spans is None:
        return None
    addr = _address(address)
    starts, ends = spans[addr.version]
    i = bisect.bisect_right(starts, int(addr)) - 1
    return i >= 0 and int(addr) <= ends[i]


@functools.lru_cache(maxsize=1024)
def _spans(networks: tuple[str, ...]) -> dict[int, tuple[list[int], list[int]]] | None:
    """The networks per IP version as sorted, disjoint (start, end) lists, for a binary search (a
    10,000-address set is tested at every rule it sits in); None when one cannot be read."""
    found: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for text in networks:
        if (n := network(text)) is None:
            return None
        found[n.version].append((int(n.network_address), int(n.broadcast_address)))
    out = {}
    for version, spans in found.items():
        starts: list[int] = []
        ends: list[int] = []
        for a, b in sorted(spans):
            if ends and a <= ends[-1]:
                ends[-1] = max(ends[-1], b)
            else:
                starts.append(a)
                ends.append(b)
        out[version] = (starts, ends)
    return out


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@functools.lru_cache(maxsize=65536)
def network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """'192.0.2.0/24' (or an address) as a network; None when it is not one. Parsed once."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


@dataclass(frozen=True)
class Iface(Match):
    """-i/-o (iptables, '+' is a wildcard suffix) or iifname/oifname (nft, '*')."""

    field: Literal["iif", "oif"]
    names: tuple[str, ...]
    negate: bool = False
    text: str = ""

    def test(self, p: Packet) -> Tri:
        _consulted("iface")
        actual = p.iif if self.field == "iif" else p.oif
        if self.field == "iif" and p.direction == "outbound":
            return _neg(False, self.negate) if actual is None else None
        if self.field == "oif" and p.direction == "inbound" and not p.forwarded:
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
class CtTuple(Match):
    """conntrack's original or reply tuple: --ctorigdst, --ctorigdstport, `ct original ip daddr`..."""

    tuple_dir: Literal["original", "reply"]
    field: Literal["saddr", "daddr", "sport", "dport"]
    networks: tuple[str, ...] = ()  # for addresses
    ranges: tuple[tuple[int, int], ...] = ()  # for ports
    negate: bool = False
    family: str | None = None  # nft's `ct original ip daddr`: the family it reads (another: unknown)
    text: str = ""

    def test(self, p: Packet) -> Tri:
        if self.family is not None and self.family != p.family:
            return None
        values = p.original() if self.tuple_dir == "original" else p.reply_tuple()
        value = values[("saddr", "daddr", "sport", "dport").index(self.field)]
        if self.field in ("sport", "dport"):
            return _neg(any(lo <= value <= hi for lo, hi in self.ranges), self.negate)
        return _neg(in_networks(value, self.networks), self.negate)


@dataclass(frozen=True)
class CtStatus(Match):
    """--ctstatus DNAT / `ct status dnat`: was the connection's destination translated?"""

    negate: bool = False
    text: str = ""

    def test(self, p: Packet) -> Tri:
        return _neg(p.dnat, self.negate)


@dataclass(frozen=True)
class CtDirection(Match):
    """--ctdir ORIGINAL|REPLY / `ct direction original|reply`."""

    reply: bool
    negate: bool = False
    text: str = ""

    def test(self, p: Packet) -> Tri:
        return _neg(p.reply == self.reply, self.negate)


@dataclass(frozen=True)
class AddrType(Match):
    field: Literal["saddr", "daddr"]
    types: frozenset[str]  # upper case: LOCAL, UNICAST, ...
    negate: bool = False
    text: str = ""

    def test(self, p: Packet) -> Tri:
        _consulted("addrtype")
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


VerdictKind = Literal["accept", "drop", "reject", "jump", "goto", "return", "continue", "dnat", "unknown"]


@dataclass(frozen=True)
class Verdict:
    """What a matching rule does. `continue` = non-terminating (LOG, counter, MARK).

    `dnat` (iptables DNAT / REDIRECT, nft dnat / redirect, in a nat chain): the connection's
    destination becomes to_addr:to_port (None: unchanged; REDIRECT: this host, to_addr None),
    and the nat chains of this hook end there.
    """

    kind: VerdictKind
    chain: str | None = None  # for jump / goto
    set_ctstate: str | None = None  # with continue: e.g. "untracked" (raw CT --notrack)
    to_addr: str | None = None  # dnat: the new destination address (None: unchanged)
    to_port: int | None = None  # dnat: the new destination port (None: unchanged)

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


def flat_matches(rule: Rule) -> list[Match]:
    """The rule's matches, a module's several options (`-m tcp --sport .. --dport ..`) one by one."""
    out: list[Match] = []
    for m in rule.matches:
        out += list(getattr(m, "parts", None) or [m])
    return out


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

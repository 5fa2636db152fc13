"""nftables JSON expressions (`nft -j list ruleset`, 1.0.x) -> model Matches and Verdicts.

Only what changes the verdict on a plain TCP packet is understood: l4proto /
ip protocol / ip6 nexthdr, tcp/udp/th ports (values, ranges, <, >, anonymous
and named sets), ip/ip6 saddr/daddr (address, prefix, range, sets), iifname /
oifname / iif / oif (wildcards `eth*`), ct state, meta nfproto / protocol,
`fib daddr type local`, tcp flags, verdict maps (each element becomes one
rule: the keys of a map are disjoint, so the order does not matter).
Everything else (marks, limits, quotas, ct count, socket, dynamic sets,
concatenations, xt matches of iptables-nft) is Unknown: the evaluator forks
on it, never guesses. Statements (counter, log, mangle) only annotate.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import Any

from bot.firewall.model import (
    Addr,
    AddrType,
    Always,
    CtDirection,
    CtState,
    CtStatus,
    CtTuple,
    Iface,
    Match,
    Never,
    Packet,
    Port,
    Proto,
    Tri,
    Unknown,
    Verdict,
)
from bot.firewall.parse.iptables import SERVICES, TcpFlags

CT_STATES = frozenset({"new", "established", "related", "invalid", "untracked"})
L4 = ("tcp", "udp", "sctp", "dccp", "udplite")
NFPROTO = {"ipv4": "ipv4", "ipv6": "ipv6", "ip": "ipv4", "ip6": "ipv6", 2: "ipv4", 10: "ipv6"}
ANNOTATIONS = ("counter", "log", "mangle", "dup", "flow", "secmark")
VERDICTS = ("accept", "drop", "continue", "return")
# notrack is effective only before conntrack (priority -200 on prerouting/output).
CONNTRACK_PRIORITY = -200


class NotUnderstood(Exception):
    """An expression or value this module does not model."""


@dataclass(frozen=True)
class NfProto(Match):
    """`meta nfproto ipv4`, and the implicit dependency of `ip saddr` in an inet table."""

    families: frozenset[str]
    negate: bool = False
    text: str = ""

    def test(self, p: Packet) -> Tri:
        return (p.family in self.families) != self.negate


@dataclass
class Sets:
    """Named sets and maps of one table: name -> elements (None: contents change at runtime)."""

    elems: dict[str, list | None]

    def get(self, ref: str) -> list:
        name = ref[1:]
        if name not in self.elems:
            raise NotUnderstood(f"set {ref} not found")
        elems = self.elems[name]
        if elems is None:
            raise NotUnderstood(f"set {ref} is dynamic (its contents change at runtime)")
        return elems


def set_elements(obj: dict) -> list | None:
    """The elements of a `set` / `map` object; None for dynamic sets and meters."""
    flags = obj.get("flags") or []
    if isinstance(flags, str):
        flags = [flags]
    if "dynamic" in flags:
        return None
    elems = obj.get("elem") or []
    return elems if isinstance(elems, list) else None


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)[:200]


# --- values ---------------------------------------------------------------------------------

def _items(right: Any, sets: Sets) -> list:
    if isinstance(right, str) and right.startswith("@"):
        return [_unwrap(e) for e in sets.get(right)]
    if isinstance(right, dict) and "set" in right:
        items = right["set"]
        return [_unwrap(e) for e in (items if isinstance(items, list) else [items])]
    if isinstance(right, list):
        return [_unwrap(e) for e in right]
    return [_unwrap(right)]


def _unwrap(elem: Any) -> Any:
    """{"elem": {"val": X, "timeout": ...}} -> X (a set element with options)."""
    if isinstance(elem, dict) and "elem" in elem and isinstance(elem["elem"], dict):
        return elem["elem"].get("val")
    return elem


def _port(value: Any) -> int:
    if isinstance(value, bool):
        raise NotUnderstood(f"port {value!r}")
    if isinstance(value, int) and 0 <= value <= 65535:
        return value
    if isinstance(value, str):
        if value.isdigit() and int(value) <= 65535:
            return int(value)
        if value in SERVICES:
            return SERVICES[value]
        try:
            return socket.getservbyname(value, "tcp")
        except (OSError, UnicodeError, ValueError):
            pass
    raise NotUnderstood(f"port {value!r}")


def port_ranges(items: list) -> tuple[tuple[int, int], ...]:
    out = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("range"), list) and len(item["range"]) == 2:
            out.append((_port(item["range"][0]), _port(item["range"][1])))
        else:
            p = _port(item)
            out.append((p, p))
    return tuple(out)


def _networks(items: list) -> tuple[str, ...]:
    out: list[str] = []
    try:
        for item in items:
            if isinstance(item, str):
                out.append(str(ipaddress.ip_network(item, strict=False)))
            elif isinstance(item, dict) and isinstance(item.get("prefix"), dict):
                pre = item["prefix"]
                out.append(str(ipaddress.ip_network(f"{pre['addr']}/{pre['len']}", strict=False)))
            elif isinstance(item, dict) and isinstance(item.get("range"), list) and len(item["range"]) == 2:
                lo, hi = (ipaddress.ip_address(a) for a in item["range"])
                out += [str(n) for n in ipaddress.summarize_address_range(lo, hi)]
            else:
                raise NotUnderstood(f"address {compact(item)}")
    except (ValueError, TypeError, KeyError) as e:
        raise NotUnderstood(f"address: {e}") from e
    return tuple(out)


def _strings(items: list) -> tuple[str, ...]:
    if not all(isinstance(i, str) for i in items):
        raise NotUnderstood(f"values {compact(items)}")
    return tuple(items)


# --- one match expression -------------------------------------------------------------------

def match_expr(m: Any, sets: Sets, text: str) -> list[Match]:
    """{"op", "left", "right"} -> the Matches it means (with implicit dependencies)."""
    try:
        if not isinstance(m, dict):
            raise NotUnderstood("match is not an object")
        op = m.get("op", "==")
        if op not in ("==", "!=", "in", "<", ">", "<=", ">="):
            raise NotUnderstood(f"operator {op!r}")
        return _match(m.get("left"), op, m.get("right"), sets, text)
    except NotUnderstood as e:
        return [Unknown(text=f"{text} ({e})")]


def _match(left: Any, op: str, right: Any, sets: Sets, text: str) -> list[Match]:
    if not isinstance(left, dict) or len(left) != 1:
        raise NotUnderstood(f"left side {compact(left)}")
    kind, arg = next(iter(left.items()))
    if kind == "payload":
        return _payload(arg, op, right, sets, text)
    if kind == "meta":
        return _meta(arg, op, right, sets, text)
    if kind == "ct":
        return _ct(arg, op, right, sets, text)
    if kind == "fib":
        return _fib(arg, op, right, sets, text)
    if kind == "&":
        return _masked(arg, op, right, text)
    raise NotUnderstood(f"{kind} match")


def _neg(op: str) -> bool:
    if op not in ("==", "!=", "in"):
        raise NotUnderstood(f"operator {op!r}")
    return op == "!="


def _payload(arg: Any, op: str, right: Any, sets: Sets, text: str) -> list[Match]:
    if not isinstance(arg, dict):
        raise NotUnderstood("payload")
    proto, field = arg.get("protocol"), arg.get("field")
    if proto in ("icmp", "icmpv6", "igmp", "arp", "esp", "ah", "comp"):
        return [Never(text=text)]  # the implicit l4 dependency never holds for a TCP packet
    if proto in (*L4, "th") and field in ("dport", "sport"):
        dep = [] if proto == "th" else [Proto(frozenset({proto}), text=text)]
        return [*dep, _port_match(field, op, right, sets, text)]
    if proto == "tcp" and field == "flags":
        return [Proto(frozenset({"tcp"}), text=text), _tcp_flags(op, right, ("syn", "ack", "fin", "rst",
                                                                             "psh", "urg", "ecn", "cwr"), text)]
    if proto in ("ip", "ip6"):
        fam = NfProto(frozenset({NFPROTO[proto]}), text=text)
        if field in ("saddr", "daddr"):
            return [fam, Addr(field, _networks(_items(right, sets)), _neg(op), text)]
        if field in ("protocol", "nexthdr"):
            return [fam, Proto(frozenset(_protos(_items(right, sets))), _neg(op), text)]
    raise NotUnderstood(f"{proto} {field}")


def _port_match(field: str, op: str, right: Any, sets: Sets, text: str) -> Match:
    if op in ("<", ">", "<=", ">="):
        p = _port(right)
        lo, hi = {"<": (0, p - 1), "<=": (0, p), ">": (p + 1, 65535), ">=": (p, 65535)}[op]
        return Port(field, ((lo, hi),), False, text) if lo <= hi else Never(text=text)
    return Port(field, port_ranges(_items(right, sets)), _neg(op), text)


def _protos(items: list) -> list[str]:
    out = []
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int | str):
            raise NotUnderstood(f"protocol {compact(i)}")
        out.append(str(i))
    return out


def _meta(arg: Any, op: str, right: Any, sets: Sets, text: str) -> list[Match]:
    key = arg.get("key") if isinstance(arg, dict) else None
    if key == "l4proto":
        return [Proto(frozenset(_protos(_items(right, sets))), _neg(op), text)]
    if key in ("nfproto", "protocol"):
        fams = set()
        for i in _items(right, sets):
            if i not in NFPROTO:
                raise NotUnderstood(f"meta {key} {i!r}")
            fams.add(NFPROTO[i])
        return [NfProto(frozenset(fams), _neg(op), text)]
    if key in ("iifname", "oifname", "iif", "oif"):
        field = "iif" if key.startswith("i") else "oif"
        return [Iface(field, _strings(_items(right, sets)), _neg(op), text)]
    raise NotUnderstood(f"meta {key}")


CT_TUPLE_KEYS = {"saddr": "saddr", "daddr": "daddr", "ip saddr": "saddr", "ip daddr": "daddr",
                 "ip6 saddr": "saddr", "ip6 daddr": "daddr", "proto-src": "sport", "proto-dst": "dport"}


def _ct(arg: Any, op: str, right: Any, sets: Sets, text: str) -> list[Match]:
    key = arg.get("key") if isinstance(arg, dict) else None
    direction = arg.get("dir") if isinstance(arg, dict) else None
    if key in CT_TUPLE_KEYS and direction in ("original", "reply"):
        return [_ct_tuple(key, direction, op, right, sets, text)]
    if key == "status" and _items(right, sets) == ["dnat"] and op in ("==", "!=", "in"):
        return [CtStatus(op == "!=", text)]
    if key == "direction" and _items(right, sets) in (["original"], ["reply"]):
        return [CtDirection(_items(right, sets) == ["reply"], _neg(op), text)]
    if key != "state" or direction:
        raise NotUnderstood(f"ct {key}")
    states = frozenset(_strings(_items(right, sets)))
    if not states <= CT_STATES:
        raise NotUnderstood(f"ct state {sorted(states)}")
    return [CtState(states, _neg(op), text)]


def _ct_tuple(key: str, direction: str, op: str, right: Any, sets: Sets, text: str) -> Match:
    """`ct original ip daddr 198.18.1.2`, `ct original proto-dst 587` (a family other than the
    packet's is not understood: CtTuple.family)."""
    field = CT_TUPLE_KEYS[key]
    family = {"ip": "ipv4", "ip6": "ipv6"}.get(key.split()[0]) if " " in key else None
    if field in ("sport", "dport"):
        ranges = _port_match(field, op, right, sets, text)
        if not isinstance(ranges, Port):
            return ranges
        return CtTuple(direction, field, ranges=ranges.ranges, negate=ranges.negate, family=family, text=text)
    return CtTuple(direction, field, networks=_networks(_items(right, sets)), negate=_neg(op), family=family,
                   text=text)


def _fib(arg: Any, op: str, right: Any, sets: Sets, text: str) -> list[Match]:
    if not isinstance(arg, dict) or arg.get("result") != "type":
        raise NotUnderstood("fib lookup")
    flags = arg.get("flags") or []
    flags = [flags] if isinstance(flags, str) else flags
    if flags not in (["daddr"], ["saddr"]):
        raise NotUnderstood(f"fib {'.'.join(map(str, flags))} type")
    types = frozenset(t.upper() for t in _strings(_items(right, sets)))
    return [AddrType(flags[0], types, _neg(op), text)]


def _masked(arg: Any, op: str, right: Any, text: str) -> list[Match]:
    """`tcp flags & (fin|syn|rst|ack) == syn` (the only masked match understood)."""
    if not (isinstance(arg, list) and len(arg) == 2 and arg[0] == {"payload": {"protocol": "tcp", "field": "flags"}}):
        raise NotUnderstood("masked match")
    mask = arg[1] if isinstance(arg[1], list) else [arg[1]]
    comp = right if isinstance(right, list) else [right]
    flags = {f.upper() for f in _strings(mask)}
    if op not in ("==", "!="):
        raise NotUnderstood(f"tcp flags {op}")
    return [Proto(frozenset({"tcp"}), text=text),
            TcpFlags(frozenset(flags), frozenset(c.upper() for c in _strings(comp)), op == "!=", text)]


def _tcp_flags(op: str, right: Any, names: tuple[str, ...], text: str) -> Match:
    """`tcp flags syn` (op in: any of them set) or `tcp flags == syn` (exactly)."""
    flags = frozenset(f.upper() for f in _strings(right if isinstance(right, list) else [right]))
    if op == "in" and len(flags) == 1:
        return TcpFlags(flags, flags, False, text)
    if op in ("==", "!="):
        return TcpFlags(frozenset(n.upper() for n in names), flags, op == "!=", text)
    raise NotUnderstood("tcp flags")


# --- statements and verdicts ----------------------------------------------------------------

def verdict_of(obj: Any) -> Verdict | None:
    """{"accept": null} / {"jump": {"target": "x"}} -> Verdict; None when obj is not a verdict."""
    if not isinstance(obj, dict) or len(obj) != 1:
        return None
    kind, arg = next(iter(obj.items()))
    if kind in VERDICTS:
        return Verdict(kind)
    if kind == "reject":
        return Verdict("reject")
    if kind in ("jump", "goto"):
        target = arg.get("target") if isinstance(arg, dict) else None
        return Verdict(kind, str(target)) if isinstance(target, str) else Verdict("unknown")
    if kind in ("queue", "dnat", "redirect", "tproxy", "fwd", "synproxy"):
        return Verdict("unknown")  # the packet leaves the ruleset, or goes elsewhere
    return None


def statement(obj: dict, chain_hook: str | None, chain_prio: int, text: str) -> tuple[Match | None, Verdict | None]:
    """A non-match expression: (a match it implies, a verdict it gives). Unknown when not understood."""
    kind = next(iter(obj))
    if kind in ("dnat", "redirect"):
        return _dnat(kind, obj[kind], text)
    v = verdict_of(obj)
    if v is not None:
        return None, v
    if kind == "notrack":
        early = chain_hook in ("prerouting", "output") and chain_prio < CONNTRACK_PRIORITY
        return None, Verdict("continue", set_ctstate="untracked" if early else None)
    if kind in ("snat", "masquerade"):
        return None, Verdict("continue")
    if kind in ANNOTATIONS:
        return Always(text=text), None
    # limit, quota, ct count, set add/update, meter, xt, socket, numgen, ...: they decide.
    return Unknown(text=f"{text} ({kind} not understood)"), None


def _dnat(kind: str, arg: Any, text: str) -> tuple[Match | None, Verdict]:
    """`dnat [ip|ip6] to A[:P]` / `redirect [to :P]`: one address and port (a family other than
    the packet's: the rule does nothing, as the kernel's nft_nat); anything else is unknown."""
    arg = arg if isinstance(arg, dict) else {} if arg is None else None
    if arg is None or set(arg) - {"addr", "port", "family"} or (kind == "redirect" and "addr" in arg):
        return None, Verdict("unknown")
    addr, port, family = arg.get("addr"), arg.get("port"), arg.get("family")
    try:
        to_addr = None if addr is None else str(ipaddress.ip_address(addr))
        to_port = None if port is None else _port(port)
    except (ValueError, TypeError, NotUnderstood):
        return None, Verdict("unknown")
    if kind == "dnat" and to_addr is None:
        return None, Verdict("unknown")
    implied = NfProto(frozenset({NFPROTO[family]}), text=text) if family in ("ip", "ip6") else None
    return implied, Verdict("dnat", to_addr=to_addr, to_port=to_port)

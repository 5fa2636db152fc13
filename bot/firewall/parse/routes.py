"""`ip -4 route` / `ip -6 route` and the forwarding sysctls -> model Routes, per family.

What the evaluator needs to follow a packet that nat PREROUTING translated to another
host: does this host forward (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding), and by
which device does the packet leave (the main table's longest prefix). A route that is
not a plain one through a device (blackhole, unreachable, prohibit, multipath) has no
device: the evaluator then says unknown rather than guess.
"""

from __future__ import annotations

import ipaddress

from bot.firewall.model import Routes
from bot.firewall.parse import Results, ok_output

ROUTE_COMMANDS = {"ipv4": ("ip", "-4", "route"), "ipv6": ("ip", "-6", "route")}
FORWARDING_COMMANDS = {"ipv4": ("sysctl", "net.ipv4.ip_forward"),
                       "ipv6": ("sysctl", "net.ipv6.conf.all.forwarding")}
COMMANDS = (*ROUTE_COMMANDS.values(), *FORWARDING_COMMANDS.values())
ROUTE_TYPES = {"unicast", "local", "broadcast", "multicast", "throw", "unreachable", "prohibit",
               "blackhole", "nat", "anycast"}


def routes_from(results: Results, family: str) -> Routes | None:
    """This family's Routes, or None when neither the routes nor the sysctl were read."""
    table = ok_output(results, ROUTE_COMMANDS[family])
    sysctl = ok_output(results, FORWARDING_COMMANDS[family])
    if table is None and sysctl is None:
        return None
    return Routes(parse_routes(table or "", family), parse_forwarding(sysctl))


def parse_forwarding(text: str | None) -> bool | None:
    """'net.ipv4.ip_forward = 1' -> True; None when not read."""
    value = (text or "").rpartition("=")[2].strip()
    return {"0": False, "1": True}.get(value)


def parse_routes(text: str, family: str) -> tuple[tuple[str, str | None], ...]:
    """Each route's (network, device): device None for a route that is not one plain device."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if not words or line[0].isspace():  # a multipath route's nexthop lines
            continue
        kind = words.pop(0) if words[0] in ROUTE_TYPES else "unicast"
        if not words:
            continue
        network = _network(words[0], family)
        if network is None:
            continue
        dev = words[words.index("dev") + 1] if "dev" in words[:-1] else None
        plain = kind == "unicast" and "nexthop" not in words
        out.append((network, dev if plain else None))
    return tuple(out)


def _network(word: str, family: str) -> str | None:
    if word == "default":
        return "0.0.0.0/0" if family == "ipv4" else "::/0"
    try:
        return str(ipaddress.ip_network(word, strict=False))
    except ValueError:
        return None

"""Who serves each inbound mail port: a daemon of the host, a container, a nat rule, nobody.

- A listening socket (ss / lsof): public or loopback only, the processes holding it, the
  daemon behind them (Postfix's master with its smtpd or postscreen), or a container
  engine's process holding it for a container (docker-proxy, conmon, rootlessport,
  slirp4netns, pasta): the container is named from the engine's own answer (its published
  ports, or the container address the proxy forwards to).
- No socket, but a nat PREROUTING DNAT / REDIRECT that translates a connection from the
  prober (the firewall evaluator's own walk, PortVerdict.delivered): the port is `forwarded`,
  to the container at that address when the engine names one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bot.checks.base import CheckInput
from bot.checks.containers import Container, Containers
from bot.checks.parse import Listener, listener_daemon, proxy_of
from bot.firewall import parse_all
from bot.firewall.analysis import Endpoints, port_verdict
from bot.firewall.model import Packet, Ruleset
from bot.firewall.parse import routes
from bot.models import INBOUND_PORTS, Listening, PortKey


@dataclass(frozen=True)
class Served:
    listening: Listening
    process: str | None = None  # the processes holding the socket, as ss names them
    daemon: str | None = None  # a mail daemon of the host holding it
    proxy: str | None = None  # a container engine's process holding it for a container
    container: Container | None = None  # the container behind the proxy or the nat rule
    nat: Packet | None = None  # no socket: the connection as the nat rule translated it (nat_by)
    pids: tuple[int, ...] = ()  # the processes holding the socket

    @property
    def by_container(self) -> bool:
        return self.proxy is not None or self.container is not None or \
            (self.nat is not None and not to_this_host(self.nat))


def to_this_host(nat: Packet) -> bool:
    """Translated to an address of the host itself (a REDIRECT), not to a container."""
    return nat.daddr in nat.local_addrs


def serves_family(x: Listener, family: str) -> bool:
    if family == "ipv6":
        return x.family in ("ipv6", "any")
    return x.family in ("ipv4", "any") or (x.family == "ipv6" and x.address == "*")


def _container_ip(x: Listener, args: Mapping[int, str]) -> str | None:
    """docker-proxy's -container-ip (its command line names where it forwards to)."""
    for _, pid in x.users or ((x.process, x.pid),):
        if m := re.search(r"-container-ip\s+(\S+)", args.get(pid or 0, "")):
            return m[1]
    return None


def _socket(port: int, family: str, mine: list[Listener], args: Mapping[int, str],
            containers: Containers) -> Served:
    public = [x for x in mine if not x.loopback]
    pick = public or mine
    names = list(dict.fromkeys(n for x in pick for n in x.names))
    daemon = next((d for x in pick if (d := listener_daemon(x, dict(args)))), None)
    proxy = next((p for x in pick if (p := proxy_of(x))), None)
    container = None
    if proxy is not None:
        by_ip = next((c for x in pick if (c := containers.at(_container_ip(x, args)))), None)
        running = [c for c in containers.publishing(port, family) if c.running]
        container = by_ip or (running[0] if len(running) == 1 else None)
    pids = tuple(dict.fromkeys(p for x in pick for _, p in (x.users or ((x.process, x.pid),)) if p))
    return Served("public" if public else "loopback", ",".join(names) or None, daemon,
                  proxy[1] if proxy else None, container, pids=pids)


def _forwarded(inp: CheckInput, key: PortKey, ruleset: Ruleset, found: list[Listener],
               containers: Containers) -> Served:
    addr, source = inp.addresses.get(key.family), inp.sources.get(key.family)
    if not addr or not source:
        return Served("none")  # no prober address: no claim about what a rule would do to it
    local = frozenset(a.address for a in inp.facts.addresses) | {addr}
    ends = Endpoints(addr, source, inp.facts.iface_of(addr), local, routes.routes_from(inp.results, key.family))
    nat = port_verdict(ruleset, key, ends).delivered
    if nat is None or not nat.dnat:
        return Served("none")
    if to_this_host(nat):
        mine = [x for x in found if x.port == nat.dport and serves_family(x, key.family)]
        return Served("forwarded", ",".join(dict.fromkeys(n for x in mine for n in x.names)) or None, nat=nat)
    c = containers.at(nat.daddr)
    return Served("forwarded", f"{c.engine}:{c.name}" if c else None, container=c, nat=nat)


def serve_map(inp: CheckInput, found: list[Listener], args: Mapping[int, str],
              containers: Containers, families: list[str]) -> dict[PortKey, Served]:
    out = {}
    ruleset = parse_all(inp.results)
    for family in families:
        for port in INBOUND_PORTS:
            key = PortKey("inbound", family, port)
            mine = [x for x in found if x.port == port and serves_family(x, family)]
            out[key] = _socket(port, family, mine, args, containers) if mine else \
                _forwarded(inp, key, ruleset, found, containers)
    return out


def port_state(port: int, family: str, found: list[Listener]) -> tuple[Listening, str | None]:
    """(listening, process) of one port from the listeners alone (the guide's `lsof -i:PORT`)."""
    mine = [x for x in found if x.port == port and serves_family(x, family)]
    if not mine:
        return "none", None
    s = _socket(port, family, mine, {}, Containers())
    return s.listening, s.process

"""Who serves each inbound mail port: a daemon of the host, a container, a nat rule, nobody.

- A listening socket (ss / lsof): public or loopback only, the processes holding it, the
  daemon behind them (Postfix's master with its smtpd or postscreen), or a container
  engine's process holding it for a container (docker-proxy, conmon, rootlessport,
  slirp4netns, pasta): the container is named from the engine's own answer (its published
  ports, or the container address the proxy forwards to).
- No socket, but a nat PREROUTING DNAT that a connection from the prober meets
  (bot/firewall/published.py): the port is `forwarded`, to the container at that address
  when the engine names one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bot.checks.base import CheckInput
from bot.checks.containers import Container, Containers
from bot.checks.parse import Listener, listener_daemon, proxy_of
from bot.firewall.model import Packet
from bot.firewall.published import Published, published_in
from bot.models import INBOUND_PORTS, Listening, PortKey


@dataclass(frozen=True)
class Served:
    listening: Listening
    process: str | None = None  # the processes holding the socket, as ss names them
    daemon: str | None = None  # a mail daemon of the host holding it
    proxy: str | None = None  # a container engine's process holding it for a container
    container: Container | None = None  # the container behind the proxy or the nat rule
    nat: Published | None = None  # no socket: the rule that forwards the port
    pids: tuple[int, ...] = ()  # the processes holding the socket

    @property
    def by_container(self) -> bool:
        return self.proxy is not None or self.container is not None or \
            (self.nat is not None and not self.nat.redirect)


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


def _forwarded(inp: CheckInput, port: int, family: str, found: list[Listener],
               containers: Containers) -> Served:
    addr, source = inp.addresses.get(family), inp.sources.get(family)
    if not addr or not source:
        return Served("none")  # no prober address: no claim about what a rule would do to it
    packet = Packet("inbound", family, port, source, addr, iif=inp.facts.iface_of(addr),
                    local_addrs=frozenset(a.address for a in inp.facts.addresses) | {addr})
    nat = published_in(inp.results, packet)
    if nat is None:
        return Served("none")
    if nat.redirect:
        local = [x for x in found if str(x.port) == nat.destination[1:] and serves_family(x, family)]
        return Served("forwarded", ",".join(n for x in local for n in x.names) or None, nat=nat)
    c = containers.at(nat.address)
    return Served("forwarded", f"{c.engine}:{c.name}" if c else None, container=c, nat=nat)


def serve_map(inp: CheckInput, found: list[Listener], args: Mapping[int, str],
              containers: Containers, families: list[str]) -> dict[PortKey, Served]:
    out = {}
    for family in families:
        for port in INBOUND_PORTS:
            mine = [x for x in found if x.port == port and serves_family(x, family)]
            served = _socket(port, family, mine, args, containers) if mine else \
                _forwarded(inp, port, family, found, containers)
            out[PortKey("inbound", family, port)] = served
    return out


def port_state(port: int, family: str, found: list[Listener]) -> tuple[Listening, str | None]:
    """(listening, process) of one port from the listeners alone (the guide's `lsof -i:PORT`)."""
    mine = [x for x in found if x.port == port and serves_family(x, family)]
    if not mine:
        return "none", None
    s = _socket(port, family, mine, {}, Containers())
    return s.listening, s.process

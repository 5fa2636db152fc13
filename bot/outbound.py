"""The outbound test's targets: real mail servers the host connects to on 25/465/587.

MAILCHECK_OUTBOUND_TARGETS is a list of `host:port` (or `IP:port`, `[IPv6]:port`),
separated by commas or spaces, or `off`. mailcheck resolves the names itself, from
where it runs through its own resolver (MAILCHECK_RESOLVERS), not on the host, so a host whose own resolver is broken (the resolver
step says so) still gets its connections tested, and a block is told apart from a
name that does not resolve. The host then connects to the addresses (`nc -vz`).

The default is a few large providers' servers: their MX hosts on 25, their
submission hosts on 465 and 587. Tests and the demo always set lab targets; a test
guard (tests/guard.py) fails any test that resolves or connects to anything but
loopback and lab addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from bot.dns.resolver import Resolver
from bot.errors import ConfigError
from bot.models import OUTBOUND_PORTS

DEFAULT_TARGETS = ("gmail-smtp-in.l.google.com:25, hotmail-com.olc.protection.outlook.com:25, "
                   "smtp.gmail.com:465, smtp.gmail.com:587, smtp.office365.com:587")
RESOLVE_TIMEOUT = 3.0  # s for all the names at once
HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?)+$")

Lookup = Callable[[str], Awaitable[list[str]]]  # name -> its addresses (raises OSError if none)


@dataclass(frozen=True)
class Target:
    host: str  # as given: a name or an IP address
    port: int
    addresses: tuple[str, ...] = ()  # what mailcheck resolved it to (the IP itself for an IP)
    error: str | None = None  # why it has no address

    @property
    def label(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def address(self, family: str) -> str | None:
        """The first address of this family, if it has one."""
        return next((a for a in self.addresses if (":" in a) == (family == "ipv6")), None)


def parse_targets(spec: str) -> tuple[Target, ...] | None:
    """The targets in `spec`, or None for `off`. ValueError names what is wrong."""
    words = [w for w in re.split(r"[,\s]+", spec.strip()) if w]
    if not words:
        raise ValueError("MAILCHECK_OUTBOUND_TARGETS is empty: give host:port targets, or `off`")
    if len(words) == 1 and words[0].lower() == "off":
        return None
    return tuple(_target(w) for w in words)


def _target(word: str) -> Target:
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", word)
    if not m:
        raise ValueError(f"outbound target {word!r}: expected host:port, IP:port or [IPv6]:port")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if int(port) not in OUTBOUND_PORTS:
        raise ValueError(f"outbound target {word!r}: the port must be one of "
                         f"{', '.join(map(str, OUTBOUND_PORTS))}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if m.group(1) or not HOSTNAME.match(host):
            raise ValueError(f"outbound target {word!r}: {host!r} is neither an IP address nor "
                             "a host name") from None
        return Target(host.rstrip(".").lower(), int(port))
    return Target(str(ip), int(port), addresses=(str(ip),))


def resolver_lookup(nameservers: str = "", lifetime: float = RESOLVE_TIMEOUT) -> Lookup:
    """A Lookup through mailcheck's own resolver (MAILCHECK_RESOLVERS, bot.dns.resolver):
    the addresses of a name, IPv4 first; OSError when it has none or no resolver is set."""
    async def lookup(name: str) -> list[str]:
        try:
            resolver = Resolver(nameservers, lifetime)
        except ConfigError as e:
            raise OSError(str(e)) from e
        try:
            a, aaaa = await resolver.addresses(name)
        finally:
            await resolver.close()
        found = [r.address for lk in (a, aaaa) if lk.ok for r in lk.rrset]
        if not found:
            raise OSError(f"{a.describe()}; {aaaa.describe()}")
        return found
    return lookup


async def resolve_targets(targets: tuple[Target, ...], lookup: Lookup,
                          seconds: float = RESOLVE_TIMEOUT) -> tuple[Target, ...]:
    """Each named target with its addresses, or the reason it has none."""
    names = sorted({t.host for t in targets if not t.addresses})
    found = await asyncio.gather(*(_lookup(lookup, n, seconds) for n in names))
    by_name = dict(zip(names, found, strict=True))
    return tuple(t if t.addresses else replace(t, **by_name[t.host]) for t in targets)


async def _lookup(lookup: Lookup, name: str, seconds: float) -> dict:
    try:
        addresses = await asyncio.wait_for(lookup(name), seconds)
    except TimeoutError:
        return {"error": f"no answer from mailcheck's resolver within {seconds:g} s"}
    except (OSError, ValueError) as e:
        return {"error": f"mailcheck's resolver: {e.strerror if isinstance(e, OSError) and e.strerror else e}"}
    valid = tuple(a for a in addresses if is_ip(a))
    return {"addresses": valid} if valid else {"error": "mailcheck's resolver gave no address"}


def is_ip(text: str) -> bool:
    """Is `text` an IPv4 or IPv6 address (a scope such as %eth0 included)?"""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False

"""mailcheck's one DNS client: dnspython's asyncio resolver behind our settings.

Every lookup returns a `Lookup` (a failed lookup is data: nxdomain, nodata,
timeout, servfail), never raises for DNS reasons. The nameservers are
MAILCHECK_RESOLVERS (`ip[:port]`, `[v6]:port`, comma-separated) or the
system's; each lookup has its own lifetime (MAILCHECK_DNS_TIMEOUT), so any
number of concurrent lookups costs at most one lifetime even when a
nameserver is silent (with several nameservers, each gets an equal share
of the lifetime before the next is asked).

Each query asks for the AD bit (RFC 6840 5.7): a validating resolver sets it
on answers it validated, which is what DANE needs. A `Resolver` remembers
its answers for its own life only (one check): the cache belongs to this
resolver and these nameservers, never to the process.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.nameserver
import dns.rcode
import dns.resolver
import dns.reversename

from bot.errors import ConfigError

Status = Literal["ok", "nxdomain", "nodata", "timeout", "servfail", "error"]


@dataclass(frozen=True)
class Lookup:
    """One question and what the resolver said."""

    name: str
    rdtype: str
    status: Status
    rrset: tuple = ()              # dnspython rdata objects, as answered
    authenticated: bool = False    # the AD bit: DNSSEC-validated by the resolver
    cname: str | None = None       # the name was an alias: the canonical name it led to
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        """Could not tell: no verdict may rest on this lookup."""
        return self.status in ("timeout", "servfail", "error")

    @property
    def texts(self) -> list[str]:
        return [r.to_text() for r in self.rrset]

    @property
    def void(self) -> bool:
        """RFC 7208 4.6.4: a lookup that returned no answer (NXDOMAIN or NODATA)."""
        return self.status in ("nxdomain", "nodata")

    def describe(self) -> str:
        what = f"{self.rdtype} {self.name}"
        return {"ok": f"{what}: " + ", ".join(self.texts), "nxdomain": f"{what}: no such name",
                "nodata": f"{what}: no {self.rdtype} record"}.get(self.status,
                                                                f"{what}: {self.status} {self.error}".strip())


def parse_nameservers(spec: str) -> list[dns.nameserver.Do53Nameserver]:
    """'198.18.0.53, 198.18.0.54:5353, [2001:2::53]:53' -> nameservers. Raises ConfigError."""
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        host, port = item, 53
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else (53 if not rest else -1)
        elif item.count(":") == 1:
            host, p = item.split(":")
            port = int(p) if p.isdigit() else -1
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"MAILCHECK_RESOLVERS: {item!r} is not ip[:port]") from None
        if not 0 < port < 65536:
            raise ConfigError(f"MAILCHECK_RESOLVERS: bad port in {item!r}")
        out.append(dns.nameserver.Do53Nameserver(host, port))
    return out


@dataclass
class Resolver:
    """Concurrent, per-check DNS lookups. `nameservers` empty: the system's resolv.conf."""

    nameservers: str = ""
    lifetime: float = 5.0
    _cache: dict[tuple[str, str], asyncio.Future] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        servers = parse_nameservers(self.nameservers)
        try:
            self._dns = dns.asyncresolver.Resolver(configure=not servers)
        except dns.resolver.NoResolverConfiguration:
            raise ConfigError("no nameserver: /etc/resolv.conf names none; set MAILCHECK_RESOLVERS") from None
        if servers:
            self._dns.nameservers = servers
        # One lifetime per lookup, whatever the retries. Each attempt waits at most 1 s (a lost
        # UDP packet is re-sent, as dig does) and at most its server's share of the lifetime,
        # so a silent first server leaves time for the next one within that lifetime.
        self._dns.lifetime = self.lifetime
        self._dns.timeout = min(1.0, self.lifetime / max(1, len(self._dns.nameservers)))
        self._dns.flags = dns.flags.RD | dns.flags.AD
        self._dns.use_edns(0, 0, 1232)
        self._dns.cache = None

    @property
    def servers(self) -> list[str]:
        return [f"{n.address}:{n.port}" if hasattr(n, "port") else str(n) for n in self._dns.nameservers]

    async def lookup(self, name: str, rdtype: str) -> Lookup:
        """The answer for (name, rdtype); concurrent callers of the same question share it."""
        key = (name.lower().rstrip("."), rdtype.upper())
        if key not in self._cache:
            self._cache[key] = asyncio.ensure_future(self._ask(*key))
        return await asyncio.shield(self._cache[key])

    async def ptr(self, address: str) -> Lookup:
        return await self.lookup(dns.reversename.from_address(address).to_text(), "PTR")

    async def addresses(self, name: str) -> tuple[Lookup, Lookup]:
        """A and AAAA of a name, together."""
        a, aaaa = await asyncio.gather(self.lookup(name, "A"), self.lookup(name, "AAAA"))
        return a, aaaa

    async def close(self) -> None:
        """Cancel the lookups still running (the check ended or was cancelled)."""
        pending = [f for f in self._cache.values() if not f.done()]
        for f in pending:
            f.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _prefer(self, address: str, port: int) -> None:
        """The server that answered goes first for the rest of this check: a silent server
        costs its share of the lifetime once per wave of lookups, not once per lookup."""
        servers = list(self._dns.nameservers)
        for i, ns in enumerate(servers):
            if i and getattr(ns, "address", None) == address and getattr(ns, "port", None) == port:
                self._dns.nameservers = [ns] + servers[:i] + servers[i + 1:]
                return

    async def _ask(self, name: str, rdtype: str) -> Lookup:
        try:
            async with asyncio.timeout(self.lifetime):  # a hard bound over dnspython's retry loop
                ans = await self._dns.resolve(name or ".", rdtype, search=False, lifetime=self.lifetime)
        except dns.resolver.NXDOMAIN:
            return Lookup(name, rdtype, "nxdomain")
        except dns.resolver.NoAnswer:
            return Lookup(name, rdtype, "nodata")
        except (dns.resolver.LifetimeTimeout, TimeoutError):
            return Lookup(name, rdtype, "timeout", error=f"no answer within {self.lifetime:g}s")
        except dns.resolver.NoNameservers as e:
            return Lookup(name, rdtype, "servfail", error=_short(e))
        except (dns.exception.DNSException, ValueError, OSError) as e:
            return Lookup(name, rdtype, "error", error=_short(e))
        self._prefer(ans.nameserver, ans.port)
        canonical = ans.canonical_name.to_text(omit_final_dot=True)
        return Lookup(name, rdtype, "ok", tuple(ans.rrset or ()),
                      bool(ans.response.flags & dns.flags.AD),
                      canonical if canonical.lower() != name.lower() else None)


def _short(e: Exception) -> str:
    return (str(e) or type(e).__name__).splitlines()[0][:200]


def reverse_name(address: str) -> str:
    """IPv4 reversed by octet, IPv6 by nibble (IPv4-mapped ones too: RFC 5782's ::FFFF:7F00:2),
    without the in-addr/ip6.arpa suffix."""
    return ipaddress.ip_address(address).reverse_pointer.rsplit(".", 2)[0]


async def gather_map(coros: dict) -> dict:
    """Await a dict of coroutines concurrently; same keys, their results."""
    keys = list(coros)
    values = await asyncio.gather(*(coros[k] for k in keys))
    return dict(zip(keys, values, strict=True))


def names(lookups: Sequence[Lookup]) -> list[str]:
    return [t.rstrip(".") for lk in lookups if lk.ok for t in lk.texts]

"""Outbound targets in the lab: names mailcheck resolves through a lab DNS server.

`lab_lookup(address)` is an Engine `lookup` (bot/outbound.py) that asks the lab
resolver at `address` (a tests/labdns.LabResolver), never this machine's resolver, so a
test's target names resolve in the lab or not at all.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.exception

from bot.outbound import Lookup


def lab_lookup(address: str, port: int = 53) -> Lookup:
    async def lookup(name: str) -> list[str]:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers, resolver.port, resolver.lifetime = [address], port, 2.0
        out: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                out += [r.address for r in await resolver.resolve(name, rdtype)]
            except dns.resolver.NoAnswer:
                continue
            except dns.exception.DNSException as e:
                raise OSError(f"{name}: {e}") from e
        return out
    return lookup

"""A fake resolver for unit tests of the DNS evaluators: answers from a dict of records.

It has the `Resolver.lookup` interface and counts the questions it was asked,
so tests can assert what the evaluator looked up. The real resolver is tested
against the DNS lab (tests/lab/test_dns_*.py).
"""

from __future__ import annotations

from collections import Counter

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename

from bot.dns.resolver import Lookup


class StaticResolver:
    """records: {"name TYPE": [rdata text, ...]}; "name TYPE": "timeout" for a silent server."""

    def __init__(self, records: dict[str, list[str] | str], validated: set[str] = frozenset()) -> None:
        self.records = {k.lower(): v for k, v in records.items()}
        self.validated = validated  # names whose answers carry the AD bit
        self.asked: Counter[tuple[str, str]] = Counter()
        self.names = {k.split()[0] for k in self.records}

    async def lookup(self, name: str, rdtype: str) -> Lookup:
        name, rdtype = name.lower().rstrip("."), rdtype.upper()
        self.asked[name, rdtype] += 1
        value = self.records.get(f"{name} {rdtype}".lower())
        if value in ("timeout", "servfail"):
            return Lookup(name, rdtype, value, error="fake")
        if value is None:
            return Lookup(name, rdtype, "nodata" if name in self.names else "nxdomain")
        rrset = tuple(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), v)
                      for v in value)
        return Lookup(name, rdtype, "ok", rrset, authenticated=name in self.validated)

    async def ptr(self, address: str) -> Lookup:
        return await self.lookup(dns.reversename.from_address(address).to_text(), "PTR")

    async def addresses(self, name: str) -> tuple[Lookup, Lookup]:
        return await self.lookup(name, "A"), await self.lookup(name, "AAAA")

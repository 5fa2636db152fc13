"""The host's public addresses in the DNS blocklists (MAILCHECK_DNSBL_ZONES), without
false listings: each zone's RFC 5782 test entries decide whether its answers are
believed, and 127.255.255.x is "cannot check", never "listed" (bot/dns/dnsbl.py).

Its lookups start with the run for the probed address, and for the host's IPv6 address
as soon as the facts name it.
"""

from __future__ import annotations

import asyncio

from bot.checks.base import Check, CheckContext, CheckInput, StepOutcome, status_of
from bot.checks.catalogue import finding
from bot.checks.dns import public_addresses
from bot.dns.dnsbl import Listing, check_dnsbl, parse_zones
from bot.dns.issues import dnsbl_issues
from bot.dns.resolver import Resolver


class BlocklistLookups:
    def __init__(self, ctx: CheckContext) -> None:
        self.zones = parse_zones(ctx.settings.dnsbl_zones)
        self.resolver = Resolver(ctx.settings.resolvers, ctx.settings.dns_timeout)
        self._warm: dict[str, asyncio.Task] = {}

    def update(self, inp: CheckInput) -> None:
        for addr in public_addresses(inp):
            if addr not in self._warm:
                self._warm[addr] = asyncio.ensure_future(check_dnsbl(self.resolver, self.zones, [addr]))

    async def result(self, inp: CheckInput) -> tuple[list[str], list[Listing]]:
        addresses = public_addresses(inp)
        return addresses, await check_dnsbl(self.resolver, self.zones, addresses)

    async def close(self) -> None:
        for task in self._warm.values():
            task.cancel()
        await asyncio.gather(*self._warm.values(), return_exceptions=True)
        await self.resolver.close()


class Reputation(Check):
    name = "reputation"

    def lookups(self, ctx: CheckContext) -> BlocklistLookups | None:
        return BlocklistLookups(ctx) if ctx.settings is not None else None

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        if inp.lookups is None:
            return StepOutcome("skipped", "no DNS lookups were made (no settings)")
        addresses, listings = inp.lookups
        if not addresses:
            return StepOutcome("skipped", "no public address to look up (the host's are private)")
        findings = [finding(i.code, i.summary, evidence=i.evidence, severity=i.severity, advice=i.note)
                    for i in dnsbl_issues(listings)]
        evidence = "\n".join(f"{x.address} in {x.zone}: {x.state.replace('_', ' ')}"
                             + (f" ({', '.join(x.codes)}) {x.reason}" if x.codes or x.reason else "")
                             for x in listings)
        listed = sorted({f"{x.address} in {x.zone}" for x in listings if x.state == "listed"})
        unknown = sorted({x.zone for x in listings if x.state in ("cannot_check", "failed")})
        parts = [f"listed: {', '.join(listed)}" if listed else f"{', '.join(addresses)} not listed"]
        if unknown:
            parts.append(f"cannot check {', '.join(unknown)}")
        return StepOutcome(status_of(findings), "; ".join(parts), evidence, findings)

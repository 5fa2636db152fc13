"""DNS blocklists (RFC 5782), without false listings.

- An address is queried reversed (IPv4 by octet, IPv6 by nibble) under each zone.
- 127.0.0.2-127.0.0.11 means listed; the TXT record says why.
- 127.255.255.0/24 is an error code (Spamhaus: queries through a public or
  open resolver, or over the free-use limit): *cannot check*, never listed.
- Anything else (an ISP's ad server, a 127.0.1.x code we do not know) is not
  a listing either: "unexpected answer".
- Once per zone, RFC 5782 section 5's test entries: 127.0.0.2 (::FFFF:7F00:2)
  must be listed and 127.0.0.1 (::FFFF:7F00:1) must not. A resolver that
  rewrites NXDOMAIN, or a dead zone, fails this, and then none of that zone's
  answers is believed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass

from bot.dns.resolver import Lookup, Resolver, reverse_name
from bot.dns.spf_parse import txt_strings
from bot.errors import ConfigError

TEST_LISTED = {4: "127.0.0.2", 6: "::ffff:7f00:2"}
TEST_CLEAN = {4: "127.0.0.1", 6: "::ffff:7f00:1"}


def parse_zones(spec: str) -> list[str]:
    """MAILCHECK_DNSBL_ZONES: 'zen.spamhaus.org, bl.spamcop.net' -> zone names (ConfigError if bad)."""
    zones = [z.strip().lower().rstrip(".") for z in spec.split(",") if z.strip()]
    for z in zones:
        labels = z.split(".")
        if len(labels) < 2 or not all(re.fullmatch(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", lb)
                                      for lb in labels):
            raise ConfigError(f"MAILCHECK_DNSBL_ZONES: {z!r} is not a DNS zone name")
    return list(dict.fromkeys(zones))


def classify(lk: Lookup) -> str:
    """One A answer: listed | not_listed | cannot_check | unexpected | failed."""
    if lk.failed:
        return "failed"
    if lk.void:
        return "not_listed"
    codes = [ipaddress.ip_address(r.address) for r in lk.rrset]
    if any(c in ipaddress.ip_network("127.255.255.0/24") for c in codes):
        return "cannot_check"
    if codes and all(ipaddress.ip_address("127.0.0.2") <= c <= ipaddress.ip_address("127.0.0.11")
                     for c in codes):
        return "listed"
    return "unexpected"


@dataclass(frozen=True)
class ZoneHealth:
    zone: str
    usable: bool
    why: str = ""


@dataclass(frozen=True)
class Listing:
    zone: str
    address: str
    state: str            # listed | not_listed | cannot_check | failed
    codes: tuple[str, ...] = ()
    reason: str = ""      # the zone's TXT, or why we cannot tell


async def zone_health(resolver: Resolver, zone: str, version: int) -> ZoneHealth:
    """RFC 5782 5: the test entries must answer as the RFC says, or we believe nothing."""
    listed, clean = await asyncio.gather(
        resolver.lookup(f"{reverse_name(TEST_LISTED[version])}.{zone}", "A"),
        resolver.lookup(f"{reverse_name(TEST_CLEAN[version])}.{zone}", "A"))
    c_listed, c_clean = classify(listed), classify(clean)
    if "cannot_check" in (c_listed, c_clean):
        return ZoneHealth(zone, False, "the zone refuses this resolver (answer 127.255.255.x: "
                          "a public or open resolver, or over its free-use limit)")
    if "failed" in (c_listed, c_clean):
        return ZoneHealth(zone, False, (listed if listed.failed else clean).describe())
    if c_clean != "not_listed":
        return ZoneHealth(zone, False, f"the test entry {TEST_CLEAN[version]} (never listed) answers "
                          f"{', '.join(clean.texts)}: the resolver rewrites NXDOMAIN or the zone lists everything")
    if c_listed != "listed":
        return ZoneHealth(zone, False, f"the test entry {TEST_LISTED[version]} (always listed) is not "
                          "listed: the zone is dead or not a DNSBL")
    return ZoneHealth(zone, True)


async def lookup_address(resolver: Resolver, zone: str, address: str,
                         health: asyncio.Future[ZoneHealth]) -> Listing:
    """One address in one zone; A and TXT asked at once, with the zone's test entries."""
    name = f"{reverse_name(address)}.{zone}"
    a, txt, zh = await asyncio.gather(resolver.lookup(name, "A"), resolver.lookup(name, "TXT"), health)
    state, codes = classify(a), tuple(a.texts)
    if state == "failed":
        return Listing(zone, address, "failed", reason=a.describe())
    if not zh.usable:
        return Listing(zone, address, "cannot_check", codes, zh.why)
    if state == "cannot_check":
        return Listing(zone, address, state, codes, "the zone refuses this resolver (127.255.255.x)")
    if state == "unexpected":
        return Listing(zone, address, "cannot_check", codes,
                       f"answer {', '.join(codes)} is not a listing code (127.0.0.2-127.0.0.11)")
    if state == "listed":
        reason = " ".join("".join(txt_strings(r)) for r in txt.rrset) if txt.ok else ""
        missing = f"(the reason is unknown: {txt.describe()})" if txt.failed else "(no TXT reason given)"
        return Listing(zone, address, "listed", codes, reason or missing)
    return Listing(zone, address, "not_listed")


async def check_dnsbl(resolver: Resolver, zones: list[str], addresses: list[str]) -> list[Listing]:
    """Every zone x address, all at once (test entries once per zone and address family)."""
    versions = {ipaddress.ip_address(a).version for a in addresses}
    health = {(z, v): asyncio.ensure_future(zone_health(resolver, z, v)) for z in zones for v in versions}
    return list(await asyncio.gather(*(
        lookup_address(resolver, z, a, health[z, ipaddress.ip_address(a).version])
        for z in zones for a in addresses)))

"""Who holds an IP address: RDAP (RFC 9083), then whois, asked from where mailcheck runs.

RDAP: GET `{MAILCHECK_RDAP_URL}ip/{address}` (default https://rdap.org/, which
redirects to the registry holding the block), fetched as the dns step fetches it
(bot.dns.http: names through mailcheck's resolver, MAILCHECK_RESOLVERS; certificates
verified against the system store or MAILCHECK_CA_FILE); the network's name and handle,
its registrant's name and country. whois (RFC 3912) when RDAP gives nothing: the query
to MAILCHECK_WHOIS_SERVER (default whois.iana.org, its name resolved the same way),
following one `refer:` / `ReferralServer:` to the registry. Either can be `off`. A
private, loopback or link-local address is not looked up (no registry holds it).

bot/dns/owners.py asks the same RDAP server for the dns step's "who must change the
PTR" (a Controller with the abuse contact); this one gives the provider step the
holder's name, network and country, and falls back to whois.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from bot.dns.http import Https
from bot.dns.owners import as_text, entity, fetch_rdap
from bot.dns.resolver import Resolver
from bot.errors import ConfigError
from bot.outbound import is_ip, resolver_lookup

MAX_BYTES = 64 * 1024
NOT_PUBLIC = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
    "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10"))
WHOIS_KEYS = ("orgname", "org-name", "organization", "owner", "netname", "descr", "country")


@dataclass(frozen=True)
class Owner:
    """The holder of `address`'s block, as a registry says, or why it is unknown."""

    address: str
    name: str | None = None  # the organisation (registrant), else the network's name
    network: str | None = None  # the network's name / handle, e.g. AMAZON-02, NET-3-0-0-0-1
    country: str | None = None
    source: str = ""  # "RDAP https://…/ip/…" or "whois whois.ripe.net"
    error: str | None = None  # why no owner is known (every way tried)

    def describe(self) -> str:
        if self.name is None:
            return f"owner of {self.address} unknown ({self.error})"
        extra = ", ".join(x for x in (self.network, self.country) if x and x != self.name)
        return f"{self.address} is held by {self.name}{f' ({extra})' if extra else ''}, per {self.source}"


@dataclass(frozen=True)
class OwnerLookup:
    """How to ask: the RDAP base URL and whois server (each may be 'off'), one timeout each."""

    rdap_url: str = "https://rdap.org/"
    whois_server: str = "whois.iana.org"
    timeout: float = 5.0
    resolvers: str = ""  # mailcheck's nameservers (MAILCHECK_RESOLVERS; empty: resolv.conf)
    ca_file: Path | None = None  # MAILCHECK_CA_FILE

    async def lookup(self, address: str) -> Owner:
        ip = ipaddress.ip_address(address)
        if any(ip in net for net in NOT_PUBLIC):
            return Owner(address, error="not a public address: no registry holds it")
        errors = []
        for way in (self._rdap, self._whois):
            try:
                owner = await asyncio.wait_for(way(str(ip)), self.timeout)
            except TimeoutError:
                errors.append(f"{way.__name__[1:]}: no answer within {self.timeout:g} s")
                continue
            except (OSError, ValueError, ConfigError) as e:  # ConfigError: no nameserver to ask
                errors.append(f"{way.__name__[1:]}: {type(e).__name__}: {e}")
                continue
            if owner is None:
                continue
            if owner.name:
                return owner
            errors.append(f"{owner.source}: {owner.error or 'no holder named'}")
        if not errors:
            errors = ["RDAP and whois are both off (MAILCHECK_RDAP_URL, MAILCHECK_WHOIS_SERVER)"]
        return Owner(address, error="; ".join(errors))

    async def _rdap(self, address: str) -> Owner | None:
        if self.rdap_url.lower() == "off":
            return None
        resolver = Resolver(self.resolvers, self.timeout)
        try:
            url, doc, error = await fetch_rdap(resolver, self.rdap_url, address,
                                               Https(self.ca_file, self.timeout))
        finally:
            await resolver.close()
        if doc is None:
            return Owner(address, source=f"RDAP {url}", error=error)
        return parse_rdap(doc, address, f"RDAP {url}")

    async def _whois(self, address: str) -> Owner | None:
        if self.whois_server.lower() == "off":
            return None
        server = self.whois_server
        text = await self._whois_query(server, address)
        refer = referral(text)
        if refer and refer != server:
            server, text = refer, await self._whois_query(refer, address)
        return parse_whois(text, address, f"whois {server}")

    async def _whois_query(self, server: str, address: str) -> str:
        """One whois query (TCP 43, or `host:port`; a name through mailcheck's resolver)."""
        host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "43")
        ip = host if is_ip(host) else (await resolver_lookup(self.resolvers, self.timeout)(host))[0]
        reader, writer = await asyncio.open_connection(ip, int(port))
        try:
            writer.write(f"{address}\r\n".encode())
            await writer.drain()
            return (await reader.read(MAX_BYTES)).decode("utf-8", "replace")
        finally:
            writer.close()


def parse_rdap(doc: dict, address: str, source: str) -> Owner:
    """An RDAP IP network object -> its registrant (or its name), handle and country (members
    that are not strings are left out: the answer is the registry's text)."""
    registrant = entity(doc, "registrant", 0) or None
    network = as_text(doc.get("name")) or as_text(doc.get("handle"))
    name = registrant or network
    return Owner(address, name, network, as_text(doc.get("country")), source,
                 None if name else "the RDAP answer names no holder")


def referral(text: str) -> str | None:
    """IANA's `refer: whois.ripe.net` or ARIN's `ReferralServer: whois://whois.ripe.net`."""
    m = re.search(r"^(?:refer|ReferralServer|whois):\s*(?:r?whois://)?([A-Za-z0-9.-]+(?::\d+)?)\s*$",
                  text, re.M | re.I)
    return m.group(1) if m else None


def parse_whois(text: str, address: str, source: str) -> Owner:
    """The first organisation / network name and country in a whois answer."""
    seen: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key in WHOIS_KEYS and value.strip() and key not in seen:
            seen[key] = value.strip()
    name = next((seen[k] for k in ("orgname", "org-name", "organization", "owner", "descr", "netname")
                 if k in seen), None)
    return Owner(address, name, seen.get("netname"), seen.get("country"), source,
                 None if name else "the whois answer names no holder")

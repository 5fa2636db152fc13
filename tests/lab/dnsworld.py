"""Helpers for the DNS lab tests: the standard world pieces and mailcheck's context for the lab."""

from __future__ import annotations

import json

import dns.reversename

from bot.dns.domain import DnsContext
from bot.dns.http import Https
from bot.dns.resolver import Resolver
from tests.dnslab import DnsLab, Zone, reverse_zone

DOMAIN = "example.test"
TIMEOUT = 3.0


def context(lab: DnsLab, resolver: str | None = None, ca: bool = True) -> DnsContext:
    """mailcheck's DNS context pointed at the lab (MAILCHECK_RESOLVERS, MAILCHECK_CA_FILE)."""
    return DnsContext(Resolver(resolver or lab.resolver, TIMEOUT), "https://rdap.lab.test/",
                      Https(lab.ca_file if ca else None, TIMEOUT))


def lab_zone(lab: DnsLab) -> Zone:
    """lab.test: the RDAP server's name."""
    return Zone("lab.test", f"rdap A {lab.web}", signed=False)


def provider_zone() -> Zone:
    return Zone("dns-provider.test", "ns1 A 198.18.0.53\nns2 A 198.18.0.54", signed=False)


def ptr_zone(address: str, name: str, signed: bool = False) -> Zone:
    """The /24 or /64 reverse zone with the address's PTR (IPv4 or IPv6)."""
    owner = dns.reversename.from_address(address).to_text()
    return Zone(reverse_zone(address), f"{owner} PTR {name}.", signed=signed)


def rdap_file(lab: DnsLab, address: str, owner: str, abuse: str) -> dict[str, str]:
    net = address.rsplit(".", 1)[0]
    doc = {"objectClassName": "ip network", "handle": f"LAB-{net}", "startAddress": f"{net}.0",
           "endAddress": f"{net}.255", "name": "LAB-NET", "entities": [
               {"roles": ["registrant"], "vcardArray": ["vcard", [["fn", {}, "text", owner]]]},
               {"roles": ["abuse"], "vcardArray": ["vcard", [["email", {}, "text", abuse]]]}]}
    return {f"rdap.lab.test/ip/{address}": json.dumps(doc)}


def world(lab: DnsLab, *zones: Zone, dnsbl=None, files=None) -> None:
    lab.load([lab_zone(lab), provider_zone(), *zones], dnsbl=dnsbl, files=files)

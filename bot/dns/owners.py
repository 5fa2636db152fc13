"""Who controls what: a domain's DNS provider (its NS records) and an address block's
owner (RDAP, RFC 9083), and zone-file lines ready to paste.

RDAP: MAILCHECK_RDAP_URL is the base (default https://rdap.org/, which
redirects to the registry that holds the block); `{base}ip/{address}` is
fetched through mailcheck's resolver and trust store (bot.dns.http).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import dns.reversename

from bot.dns.dmarc import org_domain
from bot.dns.http import Https, fetch
from bot.dns.resolver import Resolver


@dataclass(frozen=True)
class Controller:
    """Who must make a change: 'dns-provider' (of a zone) or 'address-owner' (of a block)."""

    kind: str
    name: str                 # e.g. "dns-provider.test (ns1.dns-provider.test, ...)"
    detail: str = ""          # zone apex, or block range and handle
    contact: str = ""         # abuse/technical e-mail when known

    def describe(self) -> str:
        who = "the DNS provider of" if self.kind == "dns-provider" else "the owner of"
        return f"{who} {self.detail}: {self.name}" + (f" <{self.contact}>" if self.contact else "")


async def dns_provider(resolver: Resolver, domain: str) -> Controller:
    """The zone holding `domain` (nearest name with NS records) and its nameservers."""
    name = domain.lower().rstrip(".")
    while True:
        lk = await resolver.lookup(name, "NS")
        if lk.ok and lk.cname is None:
            servers = sorted(r.target.to_text(omit_final_dot=True) for r in lk.rrset)
            providers = sorted({org_domain(s) for s in servers})
            return Controller("dns-provider", ", ".join(providers) + f" ({', '.join(servers)})",
                              f"the zone {name}")
        if lk.failed or "." not in name:
            why = lk.describe() if lk.failed else "no NS records found"
            return Controller("dns-provider", f"unknown ({why})", f"the zone of {domain}")
        name = name.split(".", 1)[1]


async def address_owner(resolver: Resolver, address: str, rdap_url: str, https: Https) -> Controller:
    if rdap_url.lower() == "off":
        return Controller("address-owner", "unknown (RDAP not asked: MAILCHECK_RDAP_URL=off)", address)
    url = rdap_url.rstrip("/") + f"/ip/{address}"
    got = await fetch(resolver, url, https, follow_redirects=True)
    if got.error or got.status != 200:
        return Controller("address-owner", f"unknown (RDAP {url}: {got.error or f'HTTP {got.status}'})",
                          address)
    try:
        return parse_rdap(json.loads(got.text), address)
    except (ValueError, TypeError, KeyError) as e:
        return Controller("address-owner", f"unknown (RDAP answer unreadable: {e})", address)


def parse_rdap(doc: dict, address: str) -> Controller:
    """An RDAP ip network object -> its registrant (or its name) and abuse contact."""
    who, contact = "", ""
    for ent in doc.get("entities", []):
        fn, email = vcard(ent.get("vcardArray"))
        roles = ent.get("roles", [])
        if "registrant" in roles and fn and not who:
            who = fn
        if "abuse" in roles and email and not contact:
            contact = email
    block = f"{doc.get('startAddress', '?')} - {doc.get('endAddress', '?')}"
    handle = doc.get("handle", "")
    name = who or doc.get("name") or handle or "unknown"
    return Controller("address-owner", name, f"{address} (block {block}{', ' + handle if handle else ''})",
                      contact)


def vcard(card) -> tuple[str, str]:
    """(fn, email) of an RDAP entity's jCard (RFC 7095); empty when absent."""
    fn = email = ""
    if isinstance(card, list) and len(card) == 2 and isinstance(card[1], list):
        for prop in card[1]:
            if not (isinstance(prop, list) and len(prop) > 3 and isinstance(prop[3], str)):
                continue  # a registry's malformed property is skipped, not a crash
            if prop[0] == "fn":
                fn = prop[3].strip()
            elif prop[0] == "email":
                email = prop[3]
    return fn, email


def txt_line(owner: str, text: str, ttl: int = 3600) -> str:
    """A zone-file TXT line; text over 255 bytes is split into strings at spaces, and the
    space kept inside the earlier string, so the joined value is exactly `text`."""
    chunks, cur = [], ""
    for word in text.split(" "):
        piece = (" " if cur else "") + word
        if len(cur) + len(piece) > 255 and cur:
            chunks.append(cur + " ")
            cur = word
        else:
            cur += piece
    chunks.append(cur)
    quoted = " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)
    return f"{owner.rstrip('.')}. {ttl} IN TXT {quoted}"


def ptr_line(address: str, name: str, ttl: int = 3600) -> str:
    return f"{dns.reversename.from_address(address).to_text()} {ttl} IN PTR {name.rstrip('.')}."

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


async def fetch_rdap(resolver: Resolver, rdap_url: str, address: str,
                     https: Https) -> tuple[str, dict | None, str | None]:
    """(url, the RDAP ip network object, why there is none) for `address`: the one RDAP
    request of mailcheck (the dns step's address owner, the provider step's holder).
    An answer that is not JSON raises ValueError; JSON that is not an object is no answer."""
    url = rdap_url.rstrip("/") + f"/ip/{address}"
    got = await fetch(resolver, url, https, follow_redirects=True)
    if got.error or got.status != 200:
        return url, None, got.error or f"HTTP {got.status}"
    try:
        doc = json.loads(got.text)
    except RecursionError as e:  # nested past Python's stack: not an RDAP answer
        raise ValueError("the RDAP answer is nested too deeply") from e
    if not isinstance(doc, dict):  # a registry's (or a stand-in's) answer is data, not a crash
        return url, None, f"the answer is JSON {type(doc).__name__}, not an RDAP object"
    return url, doc, None


def entity(doc: dict, role: str, index: int) -> str:
    """The first non-empty vCard field (0: fn, 1: email) of an entity with `role` (a registry's
    entity or roles not of RFC 9083's shape are skipped, not a crash)."""
    entities = doc.get("entities")
    return next((field for e in (entities if isinstance(entities, list) else [])
                 if isinstance(e, dict) and isinstance(e.get("roles"), list) and role in e["roles"]
                 and (field := vcard(e.get("vcardArray"))[index])), "")


async def address_owner(resolver: Resolver, address: str, rdap_url: str, https: Https) -> Controller:
    if rdap_url.lower() == "off":
        return Controller("address-owner", "unknown (RDAP not asked: MAILCHECK_RDAP_URL=off)", address)
    try:
        url, doc, error = await fetch_rdap(resolver, rdap_url, address, https)
        if doc is None:
            return Controller("address-owner", f"unknown (RDAP {url}: {error})", address)
        return parse_rdap(doc, address)
    except (ValueError, TypeError, KeyError) as e:
        return Controller("address-owner", f"unknown (RDAP answer unreadable: {e})", address)


def parse_rdap(doc: dict, address: str) -> Controller:
    """An RDAP ip network object -> its registrant (or its name) and abuse contact."""
    who, contact = entity(doc, "registrant", 0), entity(doc, "abuse", 1)
    block = f"{as_text(doc.get('startAddress')) or '?'} - {as_text(doc.get('endAddress')) or '?'}"
    handle = as_text(doc.get("handle")) or ""
    name = who or as_text(doc.get("name")) or handle or "unknown"
    return Controller("address-owner", name, f"{address} (block {block}{', ' + handle if handle else ''})",
                      contact)


def as_text(value: object) -> str | None:
    """An RDAP member as text: a non-empty string, else None (the answer is the registry's)."""
    return (value.strip() or None) if isinstance(value, str) else None


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

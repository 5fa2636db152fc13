"""DANE for SMTP (RFC 7672): TLSA at _25._tcp.MX, trusted only when DNSSEC-validated.

Validation is the resolver's: the AD bit of a validating resolver
(MAILCHECK_RESOLVERS must name one for DANE to be checked at all). Records
are matched against the certificate the host serves on port 25 (the probe's
STARTTLS handshake). Usages 0/1 (PKIX-*) are unusable for SMTP (RFC 7672
3.1.3); usage 2 (DANE-TA) needs the chain, which the probe does not keep,
so it is reported as not checkable unless the leaf itself matches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bot.dns.resolver import Resolver


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    def text(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"


def tlsa_for(der: bytes, usage: int = 3, selector: int = 1, mtype: int = 1) -> Tlsa:
    """The TLSA record that matches this certificate (the usual '3 1 1')."""
    cert = x509.load_der_x509_certificate(der)
    blob = der if selector == 0 else cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    data = blob if mtype == 0 else hashlib.sha256(blob).digest() if mtype == 1 else hashlib.sha512(blob).digest()
    return Tlsa(usage, selector, mtype, data)


def matches(record: Tlsa, der: bytes) -> bool:
    """Does the record's association data match this (leaf) certificate?"""
    if record.selector not in (0, 1) or record.mtype not in (0, 1, 2):
        return False
    return tlsa_for(der, record.usage, record.selector, record.mtype).data == record.data


@dataclass
class DaneReport:
    mx: str
    records: list[Tlsa] = field(default_factory=list)
    authenticated: bool = False
    lookup_error: str = ""
    matching: list[Tlsa] = field(default_factory=list)
    unusable: list[Tlsa] = field(default_factory=list)

    no_certificate: bool = False   # TLSA to match, but no certificate from port 25

    @property
    def verdict(self) -> str:
        """none | insecure (ignored by senders) | unknown (lookup failed) | unchecked (no
        certificate to match, or only DANE-TA records the leaf does not match: they name a CA
        in the chain, which the probe does not keep) | match | mismatch."""
        if self.lookup_error:
            return "unknown"
        if not self.records:
            return "none"
        if not self.authenticated:
            return "insecure"
        if self.no_certificate:
            return "unchecked"
        if self.matching:
            return "match"
        return "unchecked" if self.trust_anchors else "mismatch"

    @property
    def trust_anchors(self) -> list[Tlsa]:
        """DANE-TA (usage 2) records: they match a CA certificate of the chain, not the leaf."""
        return [t for t in self.records if t.usage == 2]


async def check_dane(resolver: Resolver, mx: str, der: bytes | None) -> DaneReport:
    lk = await resolver.lookup(f"_25._tcp.{mx}", "TLSA")
    report = DaneReport(mx)
    if lk.failed:
        report.lookup_error = lk.describe()
        return report
    report.records = [Tlsa(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in lk.rrset]
    report.authenticated = lk.authenticated
    report.unusable = [t for t in report.records if t.usage in (0, 1)]
    if der is None:
        report.no_certificate = True
        return report
    report.matching = [t for t in report.records if t.usage in (2, 3) and matches(t, der)]
    return report

"""DKIM (RFC 6376 3.6.1): the selector record, its key, and whether it matches the host's key.

Keys are read with `cryptography` (already a dependency through asyncssh):
RSA published as SubjectPublicKeyInfo (the norm) or bare RSAPublicKey (some
generators), Ed25519 as the raw 32 bytes (RFC 8463). dkimpy parses keys with
its own ASN.1 code and would bring its own DNS lookups; we need neither.

The host's side is the *public* half of its signing key, derived on the host
(`openssl pkey -pubout`, bot/checks/signers.py): the private key never leaves
the host, and evidence shows fingerprints only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from bot.dns.resolver import Resolver
from bot.dns.spf_parse import txt_strings


class DkimError(ValueError):
    pass


@dataclass(frozen=True)
class DkimKey:
    tags: dict[str, str]
    key_type: str
    public: bytes          # SubjectPublicKeyInfo DER (rsa) or raw 32 bytes (ed25519); b"" = revoked
    bits: int | None = None

    @property
    def revoked(self) -> bool:
        return not self.public

    @property
    def testing(self) -> bool:
        return "y" in self.tags.get("t", "").split(":")


def parse_tags(text: str) -> dict[str, str]:
    tags = {}
    for part in (p.strip() for p in text.split(";")):
        if part:
            name, eq, value = part.partition("=")
            if not eq:
                raise DkimError(f"{part!r} is not tag=value")
            if name.strip() in tags:
                raise DkimError(f"tag {name.strip()} appears twice")
            tags[name.strip()] = "".join(value.split())
    return tags


def parse_record(text: str) -> DkimKey:
    tags = parse_tags(text)
    if "v" in tags and tags["v"] != "DKIM1":
        raise DkimError(f"v={tags['v']}: must be DKIM1")
    if "p" not in tags:
        raise DkimError("no p= tag (the public key)")
    ktype = tags.get("k", "rsa").lower()
    if not tags["p"]:
        return DkimKey(tags, ktype, b"")
    try:
        raw = base64.b64decode(tags["p"], validate=True)
    except (binascii.Error, ValueError):
        raise DkimError("p= is not valid base64") from None
    if ktype == "ed25519":
        if len(raw) != 32:
            raise DkimError(f"an ed25519 key is 32 bytes, p= has {len(raw)}")
        return DkimKey(tags, ktype, raw, 256)
    if ktype != "rsa":
        raise DkimError(f"k={ktype}: unknown key type")
    key = _load_rsa(raw)
    return DkimKey(tags, ktype, _spki(key), key.key_size)


def _load_rsa(raw: bytes) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_der_public_key(raw)
    except ValueError:
        pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(raw) + b"-----END RSA PUBLIC KEY-----\n"
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError:
            raise DkimError("p= is not an RSA public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise DkimError("p= is not an RSA key (k=rsa)")
    return key


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_of(pem: bytes) -> tuple[str, bytes]:
    """The key type and public key (as DkimKey.public) of a PEM public key."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise DkimError(f"cannot read the public key: {e}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa", _spki(key)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519", key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raise DkimError(f"unsupported key type {type(key).__name__}")


def record_for(pem: bytes) -> str:
    """The TXT value to publish for this (public) key."""
    ktype, public = public_of(pem)
    return f"v=DKIM1; k={ktype}; p={base64.b64encode(public).decode()}"


def fingerprint(public: bytes) -> str:
    """A short, safe name for a key in evidence: sha256 of its public bytes."""
    return "sha256:" + hashlib.sha256(public).hexdigest()[:16]


@dataclass
class DkimReport:
    domain: str
    selector: str
    record: str = ""
    key: DkimKey | None = None
    error: str = ""
    lookup_failed: bool = False
    matches_host: bool | None = None   # None: no host key given, or no usable record
    host_fingerprint: str = ""

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


async def check_dkim(resolver: Resolver, domain: str, selector: str,
                     host_key: bytes | None = None) -> DkimReport:
    """The record at SELECTOR._domainkey.DOMAIN; `host_key`: the public half (PEM) of the
    key the host signs with, to compare."""
    report = DkimReport(domain, selector)
    lk = await resolver.lookup(report.name, "TXT")
    if lk.failed:
        report.error, report.lookup_failed = f"cannot read {report.name}: {lk.describe()}", True
        return report
    records = ["".join(txt_strings(r)) for r in lk.rrset]
    if not records:
        report.error = f"no DKIM record at {report.name}"
        return report
    if len(records) > 1:
        report.error = f"{report.name} has {len(records)} TXT records; verifiers may pick any"
    report.record = records[0]
    try:
        report.key = parse_record(report.record)
    except DkimError as e:
        report.error = f"{report.name}: {e}"
        return report
    if report.key.revoked:
        report.error = f"{report.name} has an empty p=: the key is revoked"
    elif host_key is not None:
        try:
            ktype, public = public_of(host_key)
        except DkimError as e:
            report.error = f"the host's key for {report.name}: {e}"
            return report
        report.host_fingerprint = fingerprint(public)
        report.matches_host = ktype == report.key.key_type and public == report.key.public
    return report

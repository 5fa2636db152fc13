"""MTA-STS (RFC 8461) and SMTP TLS reporting (RFC 8460).

The policy is fetched from https://mta-sts.DOMAIN/.well-known/mta-sts.txt
through mailcheck's resolver, with certificate verification (bot.dns.http),
no redirects (RFC 8461 3.3). Each MX must match one of the policy's mx
patterns: in enforce mode, senders refuse to deliver to an MX that does not.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.dns.http import Https, fetch
from bot.dns.resolver import Resolver
from bot.dns.spf_parse import txt_strings

MAX_AGE_LIMIT = 31557600


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class StsPolicy:
    mode: str
    max_age: int
    mx: tuple[str, ...]


def parse_txt_tags(text: str) -> dict[str, str]:
    tags = {}
    for part in (p.strip() for p in text.split(";")):
        if part:
            k, _, v = part.partition("=")
            tags[k.strip()] = v.strip()
    return tags


def parse_policy(text: str) -> StsPolicy:
    """RFC 8461 3.2: key: value lines; version STSv1, mode, max_age, mx (one or more)."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.strip():
            key, colon, value = line.partition(":")
            if not colon:
                raise PolicyError(f"line {line!r} is not 'key: value'")
            fields.setdefault(key.strip(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("version must be STSv1")
    mode = (fields.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"mode {mode!r}: must be enforce, testing or none")
    age = (fields.get("max_age") or [""])[0]
    if not age.isdigit() or int(age) > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age {age!r}: must be 0-{MAX_AGE_LIMIT} seconds")
    if mode != "none" and not fields.get("mx"):
        raise PolicyError("no mx: line")
    return StsPolicy(mode, int(age), tuple(m.lower().rstrip(".") for m in fields.get("mx", [])))


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: exact, or '*.' matching exactly one leftmost label."""
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return host == pattern


@dataclass
class StsReport:
    domain: str
    txt: str = ""
    txt_error: str = ""
    policy: StsPolicy | None = None
    policy_error: str = ""
    unmatched_mx: list[str] = field(default_factory=list)
    tlsrpt: str = ""
    tlsrpt_error: str = ""
    lookup_failed: bool = False
    policy_unknown: bool = False      # the policy host's name could not be resolved

    @property
    def present(self) -> bool:
        return bool(self.txt)


async def _txt(resolver: Resolver, name: str, version: str) -> tuple[str, str, bool]:
    lk = await resolver.lookup(name, "TXT")
    if lk.failed:
        return "", lk.describe(), True
    found = ["".join(txt_strings(r)) for r in lk.rrset]
    found = [t for t in found if t.replace(" ", "").startswith(f"v={version}")]
    if len(found) > 1:
        return "", f"{name} has {len(found)} v={version} records", False
    return (found[0], "", False) if found else ("", "", False)


def unmatched(policy: StsPolicy, mx_hosts: list[str]) -> list[str]:
    """The MX hosts no pattern of the policy matches."""
    return [h for h in mx_hosts if not any(mx_matches(p, h) for p in policy.mx)]


async def check_mta_sts(resolver: Resolver, domain: str, https: Https) -> StsReport:
    """The _mta-sts and _smtp._tls records and the policy file (unmatched_mx is left to the
    caller, who knows the MX hosts: see unmatched())."""
    report = StsReport(domain)
    (txt, err, f1), (rpt, rpt_err, f2) = await asyncio.gather(
        _txt(resolver, f"_mta-sts.{domain}", "STSv1"), _txt(resolver, f"_smtp._tls.{domain}", "TLSRPTv1"))
    report.txt, report.txt_error, report.tlsrpt, report.tlsrpt_error = txt, err, rpt, rpt_err
    report.lookup_failed = f1 or f2
    if txt and not parse_txt_tags(txt).get("id", "").isalnum():
        report.txt_error = f"_mta-sts.{domain}: id= must be 1-32 letters or digits"
    if rpt and "rua" not in parse_txt_tags(rpt):
        report.tlsrpt_error = f"_smtp._tls.{domain}: no rua= (where reports go)"
    if not txt:
        return report
    got = await fetch(resolver, f"https://mta-sts.{domain}/.well-known/mta-sts.txt", https)
    if got.error or got.status != 200:
        report.policy_error = got.error or f"HTTP {got.status} (must be 200; redirects are not followed)"
        report.policy_unknown = got.lookup_failed
        return report
    try:
        report.policy = parse_policy(got.text)
    except PolicyError as e:
        report.policy_error = str(e)
    return report

"""DMARC (RFC 7489): finding the record, parsing it, alignment, report destinations.

The organisational domain comes from the Public Suffix List bundled with the
`publicsuffixlist` package (no fetch at run time; the package is released
with each list update).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from functools import lru_cache

from bot.dns.resolver import Lookup, Resolver
from bot.dns.spf_parse import txt_strings

TAGS = {"v", "p", "sp", "pct", "adkim", "aspf", "rua", "ruf", "fo", "rf", "ri", "np", "psd", "t"}
POLICIES = ("none", "quarantine", "reject")


@lru_cache(maxsize=1)
def _psl():
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def org_domain(domain: str) -> str:
    """RFC 7489 3.2: the public suffix plus one label (the domain itself if it is a suffix)."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def aligned(a: str, b: str, mode: str) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if mode == "s" else org_domain(a) == org_domain(b)


class DmarcSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class DmarcRecord:
    text: str
    tags: dict[str, str]

    @property
    def p(self) -> str:
        return self.tags.get("p", "none")

    @property
    def sp(self) -> str:
        return self.tags.get("sp", self.p)

    @property
    def pct(self) -> int:
        return int(self.tags.get("pct", "100"))

    @property
    def adkim(self) -> str:
        return self.tags.get("adkim", "r")

    @property
    def aspf(self) -> str:
        return self.tags.get("aspf", "r")

    @property
    def rua(self) -> list[str]:
        return [u.strip() for u in self.tags.get("rua", "").split(",") if u.strip()]


def parse(text: str) -> DmarcRecord:
    """A DMARC record's tags; raises DmarcSyntaxError naming the bad tag."""
    parts = [p.strip() for p in text.split(";")]
    tags: dict[str, str] = {}
    for i, part in enumerate(parts):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq:
            raise DmarcSyntaxError(f"{part!r} is not tag=value")
        if i == 0 and (name != "v" or value != "DMARC1"):
            raise DmarcSyntaxError("the record must start with v=DMARC1")
        if name in tags:
            raise DmarcSyntaxError(f"tag {name} appears twice")
        tags[name] = value
    _validate(tags)
    return DmarcRecord(text, tags)


def _validate(tags: dict[str, str]) -> None:
    if "p" not in tags and "rua" not in tags:
        raise DmarcSyntaxError("no p= tag (the policy is required)")
    for t in ("p", "sp", "np"):
        if t in tags and tags[t].lower() not in POLICIES:
            raise DmarcSyntaxError(f"{t}={tags[t]}: must be none, quarantine or reject")
        if t in tags:
            tags[t] = tags[t].lower()
    if "pct" in tags and not (tags["pct"].isdigit() and 0 <= int(tags["pct"]) <= 100):
        raise DmarcSyntaxError(f"pct={tags['pct']}: must be 0-100")
    for t in ("adkim", "aspf"):
        if t in tags and tags[t] not in ("r", "s"):
            raise DmarcSyntaxError(f"{t}={tags[t]}: must be r or s")
    for uri in (u.strip() for t in ("rua", "ruf") for u in tags.get(t, "").split(",") if u.strip()):
        if not re.match(r"^(mailto:[^@\s]+@[^@\s!]+|https?://\S+)(!\d+[kmgt]?)?$", uri, re.I):
            raise DmarcSyntaxError(f"bad report URI {uri!r}")


@dataclass
class DmarcReport:
    domain: str
    record_domain: str = ""          # where the record was found (the domain or its org domain)
    record: DmarcRecord | None = None
    error: str = ""
    lookup_failed: bool = False
    unauthorised_rua: list[str] = field(default_factory=list)  # RFC 7489 7.1: reports never sent there
    rua_failed: list[str] = field(default_factory=list)        # could not tell

    @property
    def policy(self) -> str | None:
        """The policy that applies to mail From this domain (sp for a subdomain)."""
        if not self.record:
            return None
        return self.record.p if self.record_domain == self.domain else self.record.sp


async def _record_at(resolver: Resolver, name: str) -> tuple[Lookup, list[str]]:
    lk = await resolver.lookup(name, "TXT")
    found = ["".join(txt_strings(r)) for r in lk.rrset] if lk.ok else []
    return lk, [t for t in found if t.replace(" ", "").lower().startswith("v=dmarc1")]


async def check_dmarc(resolver: Resolver, domain: str) -> DmarcReport:
    """RFC 7489 6.6.3: _dmarc.DOMAIN, else _dmarc.ORG-DOMAIN; then the rua authorisations."""
    domain = domain.lower().rstrip(".")
    report = DmarcReport(domain)
    for name in dict.fromkeys((domain, org_domain(domain))):
        lk, found = await _record_at(resolver, f"_dmarc.{name}")
        if lk.failed:
            report.error, report.lookup_failed = f"cannot read the DMARC record: {lk.describe()}", True
            return report
        if len(found) > 1:
            report.error = f"_dmarc.{name} has {len(found)} DMARC records: receivers apply none"
            return report
        if found:
            report.record_domain = name
            try:
                report.record = parse(found[0])
            except DmarcSyntaxError as e:
                report.error = f"_dmarc.{name}: {e}"
            break
    else:
        report.error = f"no DMARC record at _dmarc.{domain}" + (
            f" nor _dmarc.{org_domain(domain)}" if org_domain(domain) != domain else "")
    if report.record:
        await _check_rua(resolver, report)
    return report


async def _check_rua(resolver: Resolver, report: DmarcReport) -> None:
    external = []
    for uri in report.record.rua:
        if uri.lower().startswith("mailto:"):
            dest = uri.split("@", 1)[1].split("!")[0].lower()
            if org_domain(dest) != org_domain(report.record_domain):
                external.append((uri, dest))
    checks = await asyncio.gather(*(_record_at(resolver, f"{report.record_domain}._report._dmarc.{d}")
                                    for _, d in external))
    for (uri, _), (lk, found) in zip(external, checks, strict=True):
        if lk.failed:
            report.rua_failed.append(uri)
        elif not found:
            report.unauthorised_rua.append(uri)


@dataclass(frozen=True)
class Alignment:
    passes: bool | None   # None: cannot tell (a DNS failure, or DKIM not checked)
    disposition: str      # what receivers do with this mail: none, quarantine, reject, unknown
    explanation: str


def evaluate(report: DmarcReport, from_domain: str, spf_domain: str, spf_result: str | None,
             dkim_domain: str | None, dkim_ok: bool | None) -> Alignment | None:
    """DMARC for this host's mail: passes when SPF passes aligned or DKIM verifies aligned."""
    rec = report.record
    if rec is None:
        return None
    spf_aligned = spf_result == "pass" and aligned(spf_domain, from_domain, rec.aspf)
    dkim_aligned = bool(dkim_ok) and dkim_domain is not None and aligned(dkim_domain, from_domain, rec.adkim)
    why = [f"SPF {spf_result or 'unknown'} for {spf_domain}"
           + ("" if spf_result != "pass" else " (aligned)" if spf_aligned else
              f" but not aligned with {from_domain} (aspf={rec.aspf})"),
           "DKIM: not signed" if not dkim_domain else
           f"DKIM d={dkim_domain} " + ("verifies" if dkim_ok else "does not verify" if dkim_ok is False
                                       else "not checked")
           + ("" if not dkim_ok else " (aligned)" if dkim_aligned else
              f" but not aligned with {from_domain} (adkim={rec.adkim})")]
    policy = report.policy or "none"
    unknown = spf_result in (None, "temperror") or (dkim_domain is not None and dkim_ok is None)
    passes = True if spf_aligned or dkim_aligned else None if unknown else False
    tail = {True: ": DMARC passes", None: ": cannot tell whether DMARC passes",
            False: f": DMARC fails, receivers apply p={policy}"
                   + (f" to {rec.pct}% of messages" if rec.pct < 100 else "")}[passes]
    return Alignment(passes, {True: "none", None: "unknown", False: policy}[passes], "; ".join(why) + tail)

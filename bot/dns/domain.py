"""One domain's and one host's DNS checks, all lookups at once.

The `dns` and `reputation` checks (bot/checks/dns.py, reputation.py) call these three:

    check_domain(ctx, domain, facts) -> DomainReport    (MX, SPF, DKIM, DMARC, MTA-STS, DANE, NS)
    check_address(ctx, address, facts) -> AddressReport  (PTR, FCrDNS, banner/HELO, block owner)
    check_dnsbl(ctx.resolver, zones, addresses) -> list[Listing]   (bot.dns.dnsbl)

`facts` is what the host side knows (its public addresses, banner and HELO
names, DKIM signers and the public half of their keys, the port-25
certificate); without a host (`mailcheck dns DOMAIN`) it is empty: nothing is
compared with a host, and DANE reports every MX host's TLSA as found.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.dns import dmarc as dmarc_mod
from bot.dns.dane import DaneReport, check_dane
from bot.dns.dkim import DkimReport, check_dkim
from bot.dns.dkim_config import Signer
from bot.dns.dmarc import Alignment, DmarcReport, check_dmarc
from bot.dns.http import Https
from bot.dns.mtasts import StsReport, check_mta_sts, unmatched
from bot.dns.mx import MxReport, PtrReport, check_mx, check_ptr, name_matches
from bot.dns.owners import Controller, address_owner, dns_provider
from bot.dns.resolver import Resolver
from bot.dns.spf import SpfReport, check_spf


@dataclass
class DnsContext:
    resolver: Resolver
    rdap_url: str = "https://rdap.org/"
    https: Https = field(default_factory=Https)

    @classmethod
    def from_settings(cls, settings) -> DnsContext:
        """A fresh context (and resolver cache) for one check."""
        return cls(Resolver(settings.resolvers, settings.dns_timeout), settings.rdap_url,
                   Https(settings.ca_file, settings.dns_timeout))


@dataclass
class DnsFacts:
    addresses: list[str] = field(default_factory=list)   # the host's public addresses
    banner_name: str | None = None                        # from the port-25 greeting
    helo_name: str | None = None                          # from the MTA's config
    signers: list[Signer] | None = None                   # None: not known; []: no signer
    host_keys: dict[str, bytes] = field(default_factory=dict)   # key path -> public key PEM
    key_errors: dict[str, str] = field(default_factory=dict)    # key path -> why it is unknown
    certificate: bytes | None = None                      # DER, served on port 25

    @property
    def host(self) -> bool:
        """Is there a host to compare with (not `mailcheck dns DOMAIN` alone)?"""
        return bool(self.addresses)


@dataclass
class DomainReport:
    domain: str
    provider: Controller
    mx: MxReport
    spf: SpfReport
    dmarc: DmarcReport
    mta_sts: StsReport
    dkim: list[DkimReport] = field(default_factory=list)
    dane: list[DaneReport] = field(default_factory=list)
    alignment: Alignment | None = None


def signers_for(domain: str, signers: list[Signer] | None) -> list[Signer]:
    return [s for s in signers or [] if s.domain in (None, domain) or (s.domain and "$" in s.domain)]


async def _dkim(ctx: DnsContext, domain: str, facts: DnsFacts) -> list[DkimReport]:
    mine = [s for s in signers_for(domain, facts.signers) if "$" not in s.selector]
    keys = [facts.host_keys.get(s.key_path_for(domain) or "") for s in mine]
    return list(await asyncio.gather(*(check_dkim(ctx.resolver, domain, s.selector, k)
                                       for s, k in zip(mine, keys, strict=True))))


async def _mx_and_dane(ctx: DnsContext, domain: str, facts: DnsFacts) -> tuple[MxReport, list[DaneReport]]:
    """The MX hosts, and DANE for those that are this host (every one for a domain alone)."""
    mx = await check_mx(ctx.resolver, domain, facts.addresses)
    targets = mx.ours if facts.host else [h.name for h in mx.hosts if not h.is_ip]
    dane = await asyncio.gather(*(check_dane(ctx.resolver, h, facts.certificate) for h in targets))
    return mx, list(dane)


async def check_domain(ctx: DnsContext, domain: str, facts: DnsFacts) -> DomainReport:
    domain = domain.lower().rstrip(".")
    r = ctx.resolver
    mx_task = asyncio.ensure_future(_mx_and_dane(ctx, domain, facts))
    sts_task = asyncio.ensure_future(_mta_sts(ctx, domain, mx_task))
    provider, spf, dmarc, dkim, (mx, dane), sts = await asyncio.gather(
        dns_provider(r, domain), check_spf(r, domain, facts.addresses, facts.helo_name),
        check_dmarc(r, domain), _dkim(ctx, domain, facts), mx_task, sts_task)
    report = DomainReport(domain, provider, mx, spf, dmarc, sts, dkim, dane)
    report.alignment = alignment(report, facts)
    return report


async def _mta_sts(ctx: DnsContext, domain: str, mx_task) -> StsReport:
    fetched = asyncio.ensure_future(check_mta_sts(ctx.resolver, domain, ctx.https))
    mx, _ = await mx_task
    sts = await fetched
    if sts.policy:
        sts.unmatched_mx = unmatched(sts.policy, [h.name for h in mx.hosts])
    return sts


def alignment(report: DomainReport, facts: DnsFacts) -> Alignment | None:
    """DMARC for mail From this domain sent by this host (every address must pass SPF)."""
    results = [v.result for v in report.spf.verdicts.values()]
    spf = ("temperror" if "temperror" in results else "pass" if results and set(results) == {"pass"}
           else next((r for r in results if r != "pass"), None))
    return dmarc_mod.evaluate(report.dmarc, report.domain, report.domain, spf,
                              *dkim_outcome(report, facts))


def dkim_outcome(report: DomainReport, facts: DnsFacts) -> tuple[str | None, bool | None]:
    """(signing domain or None when mail leaves unsigned, verifies?) - None: cannot tell."""
    if facts.signers is not None and not signers_for(report.domain, facts.signers):
        return None, None
    if any(d.matches_host for d in report.dkim):
        return report.domain, True
    definite = [d.lookup_failed is False and (d.key is None or d.key.revoked or d.matches_host is False)
                for d in report.dkim]
    return report.domain, (False if definite and all(definite) else None)


@dataclass
class AddressReport:
    address: str
    ptr: PtrReport
    banner_matches: bool | None
    helo_matches: bool | None
    owner: Controller | None = None     # looked up when the PTR needs changing


async def check_address(ctx: DnsContext, address: str, facts: DnsFacts) -> AddressReport:
    ptr = await check_ptr(ctx.resolver, address)
    report = AddressReport(address, ptr, name_matches(ptr, facts.banner_name),
                           name_matches(ptr, facts.helo_name))
    if ptr.fcrdns is False or False in (report.banner_matches, report.helo_matches):
        report.owner = await address_owner(ctx.resolver, address, ctx.rdap_url, ctx.https)
    return report

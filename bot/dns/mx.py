"""MX (RFC 5321 5.1, RFC 7505) and reverse DNS (PTR, forward-confirmed) for the host.

- A domain receives mail at its MX hosts; without MX, at its own A/AAAA
  (the implicit MX); a null MX ("0 .") says it receives none.
- An MX target must be a host name with addresses: not a CNAME (RFC 5321
  5.1, RFC 2181 10.3) and not an IP address written as a name.
- "Elsewhere": no MX host has any of this host's addresses, so another host
  receives the domain's mail (not a fault when intended; it changes what the
  rest of the checks mean).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field

from bot.dns.resolver import Lookup, Resolver
from bot.outbound import is_ip


@dataclass(frozen=True)
class MxHost:
    name: str
    preference: int
    addresses: tuple[str, ...] = ()
    cname: str | None = None
    is_ip: bool = False
    error: str = ""


@dataclass
class MxReport:
    domain: str
    hosts: list[MxHost] = field(default_factory=list)
    null_mx: bool = False
    implicit: bool = False        # no MX: mail goes to the domain's own A/AAAA
    error: str = ""
    lookup_failed: bool = False
    problems: list[str] = field(default_factory=list)
    ours: list[str] = field(default_factory=list)    # MX hosts that have one of this host's addresses
    compared: bool = False     # the host's addresses were known (not `mailcheck dns DOMAIN` alone)

    @property
    def elsewhere(self) -> bool | None:
        """True: no MX host is this host. None: cannot tell (or no host to compare with)."""
        if not self.compared or self.lookup_failed or self.null_mx or any(h.error for h in self.hosts):
            return None
        return bool(self.hosts) and not self.ours


async def _host(resolver: Resolver, name: str, pref: int) -> MxHost:
    if is_ip(name):
        return MxHost(name, pref, is_ip=True)
    a, aaaa = await resolver.addresses(name)
    failed = next((lk for lk in (a, aaaa) if lk.failed), None)
    addrs = tuple(r.address for lk in (a, aaaa) if lk.ok for r in lk.rrset)
    return MxHost(name, pref, addrs, a.cname or aaaa.cname, error=failed.describe() if failed else "")


async def check_mx(resolver: Resolver, domain: str, host_addresses: list[str]) -> MxReport:
    report = MxReport(domain, compared=bool(host_addresses))
    mx = await resolver.lookup(domain, "MX")
    if mx.failed:
        report.error, report.lookup_failed = f"cannot read the MX records: {mx.describe()}", True
        return report
    if mx.status == "nxdomain":
        report.error = f"{domain} does not exist in DNS"
        return report
    records = sorted((r.preference, r.exchange.to_text(omit_final_dot=True)) for r in mx.rrset)
    if any(name in ("", ".") for _, name in records):
        report.null_mx = True
        if len(records) > 1:
            report.problems.append("a null MX must be the only MX record (RFC 7505 3)")
        return report
    if not records:
        report.implicit = True
        records = [(0, domain)]
    report.hosts = list(await asyncio.gather(*(_host(resolver, n, p) for p, n in records)))
    mine = {ipaddress.ip_address(a) for a in host_addresses}
    report.ours = [h.name for h in report.hosts if mine & {ipaddress.ip_address(a) for a in h.addresses}]
    for h in report.hosts:
        report.problems += _host_problems(h, report.implicit)
    return report


def _host_problems(h: MxHost, implicit: bool) -> list[str]:
    if h.is_ip:
        return [f"MX target {h.name} is an IP address; it must be a host name with an A/AAAA record"]
    out = []
    if h.cname and not implicit:
        out.append(f"MX target {h.name} is an alias (CNAME to {h.cname}); it must be the host's own name")
    if not h.addresses and not h.error:
        out.append(f"MX target {h.name} has no A or AAAA record: mail for it cannot be delivered")
    return out


@dataclass
class PtrReport:
    address: str
    names: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)   # names whose A/AAAA include the address
    error: str = ""
    lookup_failed: bool = False

    @property
    def fcrdns(self) -> bool | None:
        if self.lookup_failed:
            return None
        return bool(self.confirmed)


async def check_ptr(resolver: Resolver, address: str) -> PtrReport:
    """PTR of the address, and each name's forward lookup back to it (FCrDNS)."""
    report = PtrReport(address)
    lk = await resolver.ptr(address)
    if lk.failed:
        report.error, report.lookup_failed = lk.describe(), True
        return report
    report.names = [r.target.to_text(omit_final_dot=True) for r in lk.rrset]
    if not report.names:
        report.error = f"{address} has no PTR record"
        return report
    forward = await asyncio.gather(*(resolver.addresses(n) for n in report.names))
    ip = ipaddress.ip_address(address)
    for name, lookups in zip(report.names, forward, strict=True):
        if any(lk.failed for lk in lookups):
            report.lookup_failed = True
            report.error = next(lk.describe() for lk in lookups if lk.failed)
        if any(ip == ipaddress.ip_address(r.address) for lk in lookups if lk.ok for r in lk.rrset):
            report.confirmed.append(name)
    return report


def name_matches(ptr: PtrReport, name: str | None) -> bool | None:
    """Does an SMTP banner or HELO name equal a forward-confirmed PTR name? (pure)"""
    if not name or ptr.lookup_failed:
        return None
    return name.lower().rstrip(".") in {n.lower() for n in ptr.confirmed}


def banner_name(greeting: str) -> str | None:
    """The host name an SMTP greeting announces: '220 mail.example.test ESMTP ...'."""
    last = greeting.strip().splitlines()[-1] if greeting.strip() else ""
    parts = last[4:].split()
    return parts[0] if last.startswith("220") and parts else None


def addresses_of(lk: Lookup) -> list[str]:
    return [r.address for r in lk.rrset] if lk.ok else []

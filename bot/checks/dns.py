"""The guide's Part 2: the host's mail domains in DNS, and the names of its addresses.

For each mail domain (inventory `domain:`, `--domain`, else those the MTA's own
configuration names; the step says which) and each public address of the host: MX, SPF
evaluated for the host's addresses, DKIM against the key the host signs with, DMARC
alignment, MTA-STS and TLS-RPT, DANE against the certificate the port-25 probe read,
PTR and forward-confirmed reverse DNS against the SMTP banner and the HELO name (bot/dns).

Timing: the lookups are the check's own (`DnsLookups`): those for a named domain and the
probed addresses start with the run, the rest as soon as the facts, the SSH rounds or
the probes bring what they need, all concurrently with SSH and the probes; the resolver
caches each answer for the run, so the final pass only waits for what is new.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shlex
from dataclasses import dataclass, field

from bot.checks import mta_config, signers
from bot.checks.base import Check, CheckContext, CheckInput, StepOutcome, status_of
from bot.checks.catalogue import finding
from bot.dns.domain import (
    AddressReport,
    DnsContext,
    DnsFacts,
    DomainReport,
    check_address,
    check_domain,
)
from bot.dns.issues import Issue, address_issues, domain_issues
from bot.dns.mx import banner_name
from bot.dns.report import describe_address, describe_domain
from bot.errors import TargetError
from bot.models import Command, Finding
from config.inventory import valid_domain

NOT_PUBLIC = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "0.0.0.0/8", "fc00::/7", "fe80::/10", "::1/128"))


def public_addresses(inp: CheckInput) -> list[str]:
    """The host's addresses as the world reaches it: those probed (the target's, else its
    own global ones), without private, loopback or link-local ones (a NATed host's public
    address is its target's)."""
    out = []
    for family in ("ipv4", "ipv6"):
        addr = inp.addresses.get(family)
        if addr and not any(ipaddress.ip_address(addr) in n for n in NOT_PUBLIC):
            out.append(addr)
    return out


def mail_domains(inp_domains: tuple[str, ...], source: str, results) -> list[tuple[str, str]]:
    """(domain, where it was named): the run's named domains, else the MTA's."""
    if inp_domains:
        label = {"inventory": "the inventory", "--domain": "--domain", "command": "the command"}[source]
        return [(d, label) for d in inp_domains]
    return mta_config.read_mta_config(results).named_domains


def dns_facts(inp: CheckInput, domains: list[str]) -> DnsFacts:
    """What the host side knows so far, for the lookups."""
    if not inp.address:  # a domain alone
        return DnsFacts()
    cfg = mta_config.read_mta_config(inp.results)
    host = signers.read(inp.results, domains) if inp.results else signers.HostSigners()
    probe = next((p for f in ("ipv4", "ipv6") if inp.probes and (p := inp.probes.get(f, 25))), None)
    smtp = probe.smtp if probe is not None else None
    return DnsFacts(public_addresses(inp), banner_name(smtp.greeting) if smtp else None, cfg.helo_name,
                    host.signers, host.keys, host.key_errors, smtp.tls.der if smtp and smtp.tls else None)


@dataclass
class DnsResult:
    domains: list[tuple[str, str]]
    facts: DnsFacts
    reports: list[DomainReport] = field(default_factory=list)
    addresses: list[AddressReport] = field(default_factory=list)


class DnsLookups:
    """One run's DNS work: one resolver (and answer cache), warmed as inputs arrive."""

    def __init__(self, ctx: CheckContext) -> None:
        self.dns = DnsContext.from_settings(ctx.settings)
        self.named, self.source = ctx.domains, ctx.domains_source
        self._warm: dict[tuple, asyncio.Task] = {}

    def update(self, inp: CheckInput) -> None:
        """Start again whatever new facts change (cached answers cost nothing twice)."""
        facts = dns_facts(inp, list(self.named))
        signing = tuple((s.selector, s.key_path) for s in facts.signers or [])
        for d in self.named:
            key = ("domain", d, tuple(facts.addresses), facts.helo_name, signing)
            self._start(key, check_domain(self.dns, d, facts))
        for a in facts.addresses:
            self._start(("address", a, facts.banner_name, facts.helo_name), check_address(self.dns, a, facts))

    def _start(self, key: tuple, coro) -> None:
        if key in self._warm:
            coro.close()
        else:
            self._warm[key] = asyncio.ensure_future(coro)

    async def result(self, inp: CheckInput) -> DnsResult:
        domains = mail_domains(self.named, self.source, inp.results)
        facts = dns_facts(inp, [d for d, _ in domains])
        done = await asyncio.gather(*(check_domain(self.dns, d, facts) for d, _ in domains),
                                    *(check_address(self.dns, a, facts) for a in facts.addresses))
        return DnsResult(domains, facts, list(done[:len(domains)]), list(done[len(domains):]))

    async def close(self) -> None:
        for task in self._warm.values():
            task.cancel()
        await asyncio.gather(*self._warm.values(), return_exceptions=True)
        await self.dns.resolver.close()


class Dns(Check):
    name = "dns"
    ssh = "wanted"
    uses_probes = True
    domain_only = True

    def commands(self, ctx: CheckContext) -> list[Command]:
        domains = [d for d, _ in mail_domains(ctx.domains, ctx.domains_source, ctx.results)]
        return [*mta_config.commands(), *mta_config.followup_commands(ctx.results),
                *signers.commands(ctx.results, domains)]

    def lookups(self, ctx: CheckContext) -> DnsLookups | None:
        return DnsLookups(ctx) if ctx.settings is not None else None

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        res: DnsResult | None = inp.lookups
        if res is None:
            return StepOutcome("skipped", "no DNS lookups were made (no settings)")
        findings = [_finding(i, res, inp) for r in res.reports for i in domain_issues(r, res.facts)]
        findings += [_finding(i, res, inp) for a in res.addresses for i in address_issues(a, res.facts)]
        if not res.domains:
            findings.insert(0, finding("dns.no_domain", _no_domain(inp)))
        evidence = "\n".join([_sources(res, inp), *(describe_domain(r, res.facts) for r in res.reports),
                              *(describe_address(a, res.facts) for a in res.addresses)])
        if not res.domains and not res.addresses:
            return StepOutcome("skipped", "nothing to check: no mail domain and no public address",
                               evidence, findings)
        return StepOutcome(status_of(findings), _summary(res, findings), evidence, findings)


def _no_domain(inp: CheckInput) -> str:
    why = f"SSH failed ({inp.ssh_error}), so the MTA's configuration is unknown" if inp.ssh_error else \
        "the MTA's configuration names none (no exim or postfix found, or only local names)"
    return f"No mail domain to check: none in the inventory (domain:) or --domain, and {why}"


def _sources(res: DnsResult, inp: CheckInput) -> str:
    names = ", ".join(f"{d} ({src})" for d, src in res.domains) or "none"
    addrs = ", ".join(res.facts.addresses) or ("none (a domain alone)" if not inp.address else "none public")
    return f"domains: {names}\npublic addresses: {addrs}"


def _summary(res: DnsResult, findings: list[Finding]) -> str:
    bad = [f for f in findings if f.severity in ("error", "critical", "warning")]
    what = ", ".join(dict.fromkeys(f.code.split(".", 1)[1] for f in bad)) or "no problem found"
    doms = ", ".join(d for d, _ in res.domains) or "no domain"
    return f"{doms}: {what}"


def _finding(issue: Issue, res: DnsResult, inp: CheckInput) -> Finding:
    advice = [issue.controller.describe()] if issue.controller else []
    if issue.note:
        advice.append(issue.note)
    if issue.code == "dns.ptr_mismatch" and "HELO" in issue.summary:
        advice.append(helo_advice(inp, res.addresses))
    return finding(issue.code, issue.summary, evidence=issue.evidence, severity=issue.severity,
                   records=list(issue.zone_lines), advice="\n".join(a for a in advice if a))


def helo_advice(inp: CheckInput, addresses: list[AddressReport]) -> str:
    """The exact change on the host that makes the HELO name the PTR name. Advice, not a Fix:
    the fix path verifies by ports only, so nothing would check that it worked."""
    name = next((a.ptr.confirmed[0] for a in addresses if a.ptr.confirmed), None)
    cfg = mta_config.read_mta_config(inp.results)
    try:  # the address owner's text: only a host name may go into a command to paste
        name = valid_domain(name) if name is not None else None
    except TargetError:
        return ""
    if name is None:
        return ""
    if cfg.postfix is not None:
        return f"On the host: postconf -e {shlex.quote(f'smtp_helo_name = {name}')} && postfix reload"
    if cfg.exim is not None and cfg.exim.debconf is not None:
        return (f"On the host (Debian's exim): echo {shlex.quote(f'REMOTE_SMTP_HELO_DATA = {name}')} >> "
                "/etc/exim4/exim4.conf.localmacros && update-exim4.conf && "
                "invoke-rc.d exim4 reload")
    if cfg.exim is not None:
        return f"On the host: set helo_data = {name} on exim's smtp transport(s), then reload exim"
    return ""

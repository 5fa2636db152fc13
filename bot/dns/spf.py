"""SPF evaluation (RFC 7208 check_host) for the host's own addresses.

The evaluator follows include, redirect, a, mx, ptr and exists, expands
macros, and counts as section 4.6.4 counts:

- each *evaluated* include, a, mx, ptr, exists and redirect is one lookup;
  more than 10 is a permerror. Terms after the deciding match are not
  evaluated and not counted (a static count of the whole tree, which
  checkdmarc reports as the limit, over-counts: we report it separately as
  the worst case, what a sender that matches nothing costs);
- the MX and PTR answers are not lookups of their own: an MX answer of more
  than 10 names is a permerror of the mx mechanism, PTR names past 10 are
  ignored;
- a void lookup (NXDOMAIN or no answer) of a term's own query counts toward
  the limit of 2; the third is a permerror.

DNS failures (timeout, SERVFAIL) make a temperror: never a pass or a fail.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field

from bot.dns.resolver import Lookup, Resolver
from bot.dns.spf_parse import (
    LOOKUP_TERMS,
    Selection,
    SpfRecord,
    SpfSyntaxError,
    Term,
    expand,
    parse,
    select,
    txt_strings,
)

LOOKUP_LIMIT, VOID_LIMIT, MX_LIMIT, PTR_LIMIT = 10, 2, 10, 10
MAX_VISITS = 200   # records the worst-case count reads at most (a real tree reads a few dozen)


class PermError(Exception):
    pass


class TempError(Exception):
    pass


@dataclass(frozen=True)
class SpfVerdict:
    address: str
    result: str         # pass fail softfail neutral none permerror temperror
    decided_by: str     # the term and the domain whose record decided, or why none did
    lookups: int
    void_lookups: int

    @property
    def may_send(self) -> bool | None:
        return {"pass": True, "fail": False, "softfail": False}.get(self.result)


@dataclass
class _Eval:
    resolver: Resolver
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    ctx: dict[str, str]
    lookups: int = 0
    void: int = 0

    async def txt(self, domain: str) -> tuple[Lookup, Selection]:
        lk = await self.resolver.lookup(domain, "TXT")
        return lk, select([txt_strings(r) for r in lk.rrset] if lk.ok else [])

    async def record(self, domain: str) -> SpfRecord | None:
        lk, sel = await self.txt(domain)
        found = sel.found
        if lk.failed:
            raise TempError(lk.describe())
        if not found:
            return None
        if len(found) > 1:
            raise PermError(f"{domain} has {len(found)} SPF records")
        try:
            return parse(found[0])
        except SpfSyntaxError as e:
            raise PermError(f"{domain}: {e}") from None

    def count(self, term: Term, domain: str) -> None:
        self.lookups += 1
        if self.lookups > LOOKUP_LIMIT:
            raise PermError(f"more than {LOOKUP_LIMIT} DNS lookups (the 11th: {term.text} in {domain})")

    def check_void(self, lk: Lookup, term: Term) -> None:
        if lk.failed:
            raise TempError(lk.describe())
        if lk.void:
            self.void += 1
            if self.void > VOID_LIMIT:
                raise PermError(f"more than {VOID_LIMIT} void lookups (the 3rd: {lk.describe()}, for {term.text})")

    async def check_host(self, domain: str) -> tuple[str, str]:
        rec = await self.record(domain)
        if rec is None:
            return "none", f"{domain} has no SPF record"
        ctx = {**self.ctx, "d": domain}
        for term in rec.mechanisms:
            if term.kind in LOOKUP_TERMS:
                self.count(term, domain)
            if await self.matches(term, domain, ctx):
                return term.qualifier, f"{term.text} in {domain}"
        redirect = rec.modifier("redirect")
        if redirect and not any(t.kind == "all" for t in rec.mechanisms):
            self.count(redirect, domain)
            target = self.target(redirect, domain, ctx)
            result, why = await self.check_host(target)
            if result == "none":
                raise PermError(f"redirect={target} in {domain}: {target} has no SPF record")
            return result, why
        return "neutral", f"nothing in {domain}'s record matched (neutral by default)"

    def target(self, term: Term, domain: str, ctx: dict[str, str]) -> str:
        try:
            return expand(term.arg, ctx).rstrip(".") if term.arg else domain
        except SpfSyntaxError as e:
            raise PermError(f"{term.text} in {domain}: {e}") from None

    async def matches(self, term: Term, domain: str, ctx: dict[str, str]) -> bool:
        kind = term.kind
        if kind == "all":
            return True
        if kind in ("ip4", "ip6"):
            return self.ip in ipaddress.ip_network(term.arg)
        name = self.target(term, domain, ctx)
        if kind == "include":
            result, why = await self.check_host(name)
            if result == "temperror":
                raise TempError(why)
            if result in ("none", "permerror"):
                raise PermError(f"include:{name} in {domain}: {why}")
            return result == "pass"
        if kind == "exists":
            lk = await self.resolver.lookup(name, "A")
            self.check_void(lk, term)
            return lk.ok
        if kind == "a":
            lk = await self.resolver.lookup(name, self.family)
            self.check_void(lk, term)
            return self.in_any(lk, term)
        if kind == "mx":
            return await self.match_mx(name, term)
        return await self.match_ptr(name, term)

    @property
    def family(self) -> str:
        return "A" if self.ip.version == 4 else "AAAA"

    def in_any(self, lk: Lookup, term: Term) -> bool:
        prefix = term.cidr4 if self.ip.version == 4 else term.cidr6
        return any(self.ip in ipaddress.ip_network(f"{r.address}/{prefix if prefix is not None else self.ip.max_prefixlen}", strict=False)
                   for r in lk.rrset)

    async def match_mx(self, name: str, term: Term) -> bool:
        mx = await self.resolver.lookup(name, "MX")
        self.check_void(mx, term)
        hosts = [r.exchange.to_text(omit_final_dot=True) for r in mx.rrset]
        if len(hosts) > MX_LIMIT:
            raise PermError(f"{term.text}: {name} has {len(hosts)} MX records (more than {MX_LIMIT})")
        answers = await asyncio.gather(*(self.resolver.lookup(h, self.family) for h in hosts if h))
        if any(a.failed for a in answers):
            raise TempError(next(a.describe() for a in answers if a.failed))
        return any(self.in_any(a, term) for a in answers)

    async def match_ptr(self, name: str, term: Term) -> bool:
        ptr = await self.resolver.ptr(str(self.ip))
        if ptr.failed:
            return False  # RFC 7208 5.5: a DNS error in the PTR lookup: no match
        self.check_void(ptr, term)
        names = [r.target.to_text(omit_final_dot=True) for r in ptr.rrset][:PTR_LIMIT]
        answers = await asyncio.gather(*(self.resolver.lookup(n, self.family) for n in names))
        valid = [n for n, a in zip(names, answers, strict=True) if self.in_any(a, Term("a"))]
        want = name.lower()
        return any(v.lower() == want or v.lower().endswith("." + want) for v in valid)


def macro_context(address: str, domain: str, helo: str | None = None) -> dict[str, str]:
    """The macro letters for a check as postmaster@domain from this address (RFC 7208 7.3)."""
    ip = ipaddress.ip_address(address)
    i = str(ip) if ip.version == 4 else ".".join(ip.exploded.replace(":", ""))
    return {"s": f"postmaster@{domain}", "l": "postmaster", "o": domain, "d": domain, "i": i,
            "p": "unknown", "v": "in-addr" if ip.version == 4 else "ip6", "h": helo or domain}


async def evaluate(resolver: Resolver, domain: str, address: str, helo: str | None = None) -> SpfVerdict:
    """What a receiver concludes about mail from `address` for `domain` (MAIL FROM domain)."""
    ev = _Eval(resolver, ipaddress.ip_address(address), macro_context(address, domain, helo))
    try:
        result, why = await ev.check_host(domain)
    except PermError as e:
        result, why = "permerror", str(e)
    except TempError as e:
        result, why = "temperror", str(e)
    return SpfVerdict(address, result, why, ev.lookups, ev.void)


@dataclass
class SpfReport:
    domain: str
    records: list[str] = field(default_factory=list)
    error: str = ""                 # the record cannot be used (none, two, syntax, DNS failure)
    warnings: list[str] = field(default_factory=list)
    worst_case_lookups: int | None = None   # every lookup term in the tree, as a non-matching sender sees
    verdicts: dict[str, SpfVerdict] = field(default_factory=dict)
    lookup_failed: bool = False
    split_fixed: str | None = None          # the record with the space a string split lost


async def check_spf(resolver: Resolver, domain: str, addresses: list[str],
                    helo: str | None = None) -> SpfReport:
    """The domain's SPF record, its problems, and the verdict for each of the host's addresses."""
    report = SpfReport(domain)
    ev = _Eval(resolver, ipaddress.ip_address("0.0.0.0"), {})
    (lk, sel), worst, *verdicts = await asyncio.gather(
        ev.txt(domain), static_lookups(resolver, domain),
        *(evaluate(resolver, domain, a, helo) for a in addresses))
    report.records, report.warnings, report.split_fixed = sel.found, list(sel.warnings), sel.fixed
    report.worst_case_lookups = worst
    report.verdicts = dict(zip(addresses, verdicts, strict=True))
    if lk.failed:
        report.error, report.lookup_failed = f"cannot read the SPF record: {lk.describe()}", True
    elif not report.records:
        report.error = f"{domain} has no SPF record (no TXT record starting with v=spf1)"
    elif len(report.records) > 1:
        report.error = f"{domain} has {len(report.records)} SPF records; receivers treat that as an error"
    else:
        try:
            rec = parse(report.records[0])
            report.warnings += record_warnings(rec)
        except SpfSyntaxError as e:
            report.error = f"SPF syntax error: {e}"
    if report.worst_case_lookups and report.worst_case_lookups > LOOKUP_LIMIT:
        costs = await _costs(resolver, report.records[0])
        report.warnings.append(
            f"evaluating the whole policy takes {report.worst_case_lookups} DNS lookups (limit "
            f"{LOOKUP_LIMIT}): a sender that matches nothing before the 11th gets permerror"
            + (f"; lookups per term: {costs}" if costs else ""))
    return report


async def _costs(resolver: Resolver, record: str) -> str:
    """'include:a.test 1+4, mx 1': what each top-level lookup term costs in the worst case."""
    terms = [t for t in parse(record).terms if t.kind in LOOKUP_TERMS]
    nested = [t for t in terms if t.kind in ("include", "redirect") and "%" not in t.arg]
    below = dict(zip([t.text for t in nested], await asyncio.gather(
        *(static_lookups(resolver, t.arg.rstrip(".")) for t in nested)), strict=True))

    def cost(t: Term) -> str:
        if t.text not in below or below[t.text] == 0:
            return f"{t.text} 1"
        return f"{t.text} 1+{below[t.text] if below[t.text] is not None else '?'}"
    return ", ".join(cost(t) for t in terms)


def record_warnings(rec: SpfRecord) -> list[str]:
    out = []
    for t in rec.mechanisms:
        if t.kind == "all" and t.qualifier == "pass":
            out.append(f"'{t.text}' lets every host on the internet send as this domain")
        if t.kind == "ptr":
            out.append(f"'{t.text}': RFC 7208 says ptr SHOULD NOT be used (slow, and many receivers skip it)")
    return out


async def static_lookups(resolver: Resolver, domain: str, depth: int = 0,
                         visits: list[int] | None = None) -> int | None:
    """Every lookup term of the record tree (include and redirect followed, macros not):
    what a sender that matches nothing costs. None when a record in the tree cannot be read,
    or the tree is a loop or larger than MAX_VISITS records (a record that includes itself
    n times has n ** depth paths: walking them all never ends)."""
    visits = [0] if visits is None else visits
    visits[0] += 1
    if visits[0] > MAX_VISITS:
        return None
    ev = _Eval(resolver, ipaddress.ip_address("0.0.0.0"), {})
    lk, sel = await ev.txt(domain)
    found = sel.found
    if lk.failed or len(found) != 1 or depth > 12:
        return 0 if not lk.failed and not found else None
    try:
        rec = parse(found[0])
    except SpfSyntaxError:
        return None
    terms = [t for t in rec.terms if t.kind in LOOKUP_TERMS]
    if any(t.kind == "all" for t in rec.mechanisms):
        terms = [t for t in terms if t.kind != "redirect"]
    nested = [t.arg for t in terms if t.kind in ("include", "redirect") and "%" not in t.arg]
    below = await asyncio.gather(*(static_lookups(resolver, d.rstrip("."), depth + 1, visits)
                                   for d in nested))
    if any(b is None for b in below):
        return None
    return len(terms) + sum(below)

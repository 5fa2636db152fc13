"""DNS and reputation results -> issues (codes dns.* and dnsbl.*), each with its fix.

Pure. A zone-level issue carries the zone-file lines to paste (`zone_lines`)
and who controls that zone (`controller`): the domain's DNS provider, or for
a PTR the owner of the address block. A lookup that failed yields
dns.lookup_failed ("cannot tell"), never a verdict.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from bot.dns.dane import tlsa_for
from bot.dns.dkim import DkimError, fingerprint, record_for
from bot.dns.dnsbl import Listing
from bot.dns.domain import AddressReport, DnsFacts, DomainReport, signers_for
from bot.dns.owners import Controller, ptr_line, txt_line
from bot.dns.spf_parse import SpfSyntaxError, parse


@dataclass(frozen=True)
class Issue:
    code: str
    severity: str          # info | warning | error
    summary: str
    evidence: str = ""
    zone_lines: tuple[str, ...] = ()
    controller: Controller | None = None
    note: str = ""         # a fix that is not a zone line (a policy file, a host setting)


def _failed(what: str, detail: str) -> Issue:
    return Issue("dns.lookup_failed", "warning", f"Cannot tell {what}: a DNS lookup failed", detail)


def domain_issues(r: DomainReport, facts: DnsFacts) -> list[Issue]:
    return (mx_issues(r, facts) + spf_issues(r, facts) + dkim_issues(r, facts) + dmarc_issues(r)
            + sts_issues(r) + dane_issues(r, facts))


def mx_issues(r: DomainReport, facts: DnsFacts) -> list[Issue]:
    mx, d, who = r.mx, r.domain, r.provider
    if mx.lookup_failed:
        return [_failed(f"where mail for {d} goes", mx.error)]
    if mx.error:
        return [Issue("dns.mx_missing", "error", mx.error, controller=who, zone_lines=_mx_lines(d, facts))]
    if mx.null_mx:
        return [Issue("dns.null_mx", "info", f"{d} publishes a null MX (RFC 7505): it receives no mail",
                      "; ".join(mx.problems))]
    out = [Issue("dns.mx_invalid", "error", p, controller=who,
                 zone_lines=tuple(f"{d}. 3600 IN MX {h.preference} {h.cname}." for h in mx.hosts
                                  if h.cname and h.name in p))
           for p in mx.problems]
    if mx.implicit:
        out.append(Issue("dns.mx_missing", "warning", f"{d} has no MX record: senders fall back to its "
                         "A/AAAA record", controller=who, zone_lines=_mx_lines(d, facts)))
    if mx.elsewhere:
        names = ", ".join(f"{h.name} ({', '.join(h.addresses)})" for h in mx.hosts)
        out.append(Issue("dns.mx_elsewhere", "info", f"Another host receives mail for {d}: its MX is {names}, "
                         f"not this host ({', '.join(facts.addresses)})", controller=who,
                         note="Intended when another service receives the mail; if this host should "
                              "receive it, change the MX.", zone_lines=_mx_lines(d, facts)))
    return out


def _mx_lines(domain: str, facts: DnsFacts) -> tuple[str, ...]:
    name = facts.helo_name or facts.banner_name or f"mail.{domain}"
    lines = [f"{domain}. 3600 IN MX 10 {name.rstrip('.')}."]
    if name.endswith("." + domain):
        lines += [f"{name}. 3600 IN {'A' if ipaddress.ip_address(a).version == 4 else 'AAAA'} {a}"
                  for a in facts.addresses]
    return tuple(lines)


def spf_issues(r: DomainReport, facts: DnsFacts) -> list[Issue]:
    spf, d, who = r.spf, r.domain, r.provider
    if spf.lookup_failed:
        return [_failed(f"{d}'s SPF policy", spf.error)]
    out = []
    base = spf_base(spf.records, spf.split_fixed)
    fixed = (txt_line(d, spf_with_host(base, facts.addresses)),) if base is not False else ()
    if spf.error:
        code = "dns.spf_missing" if not spf.records else "dns.spf_invalid"
        note = ("one record: merge the others' terms into it and delete them"
                if len(spf.records) > 1 else "" if fixed else "correct the term named above")
        out.append(Issue(code, "error" if spf.records else "warning", spf.error,
                         "\n".join(spf.records), fixed, who, note))
    for w in spf.warnings:
        code = ("dns.spf_plus_all" if "every host" in w else "dns.spf_lookup_limit" if "lookups" in w
                else "dns.spf_split" if "join" in w else "dns.spf_warning")
        out.append(Issue(code, "error" if code == "dns.spf_plus_all" else "warning", w,
                         "\n".join(spf.records), fixed if code != "dns.spf_lookup_limit" else (), who))
    for addr, v in spf.verdicts.items():
        out += _spf_verdict_issues(r, facts, addr, v, fixed)
    return out


def _spf_verdict_issues(r: DomainReport, facts: DnsFacts, addr: str, v, fixed: tuple) -> list[Issue]:
    spf, d, who = r.spf, r.domain, r.provider
    if v.result == "temperror":
        return [_failed(f"whether {addr} may send for {d}", v.decided_by)]
    if v.result == "permerror" and spf.records and not spf.error:
        limit = "lookups" in v.decided_by
        first = (txt_line(d, spf_host_first(spf.records[0], facts.addresses)),) if limit else ()
        return [Issue("dns.spf_permerror", "error", f"SPF for {d} ends in permerror for {addr}: "
                      f"{v.decided_by}", f"{v.lookups} lookups, {v.void_lookups} void", first, who,
                      "this host's addresses first: they match before any lookup" if limit else "")]
    if v.result in ("fail", "softfail", "neutral") and spf.records:
        return [Issue("dns.spf_excludes_host", "error" if v.result == "fail" else "warning",
                      f"SPF of {d} does not let this host ({addr}) send: {v.result} by {v.decided_by}",
                      spf.records[0], fixed, who)]
    return []


def spf_base(records: list[str], split_fixed: str | None) -> str | None | bool:
    """The record a fix starts from: the one record (as its author meant it, when a split lost
    a space), the records merged when there are several, None when there is none, False
    when a syntax error leaves no sound base."""
    if split_fixed:
        return split_fixed
    if not records:
        return None
    try:
        parsed = [parse(rec) for rec in records]
    except SpfSyntaxError:
        return False
    if len(parsed) == 1:
        return records[0]
    words = [t.text for rec in parsed for t in rec.terms if t.kind not in ("all", "redirect")]
    tails = [t.text for t in parsed[0].terms if t.kind in ("all", "redirect")]
    return " ".join(["v=spf1", *dict.fromkeys(words), *tails])


def spf_with_host(record: str | None, addresses: list[str]) -> str:
    """The record with this host's addresses added before the first all/redirect."""
    add = [f"ip{ipaddress.ip_address(a).version}:{a}" for a in addresses]
    if not record:
        return " ".join(["v=spf1", *add, "~all"])
    words = record.split()
    add = [a for a in add if a not in words]
    words = ["~all" if w.lower() in ("all", "+all") else w for w in words]
    at = next((i for i, w in enumerate(words) if w.lstrip("+-~?").lower() == "all"
               or w.lower().startswith("redirect=")), len(words))
    return " ".join(words[:at] + add + words[at:])


def spf_host_first(record: str, addresses: list[str]) -> str:
    """The record with this host's addresses right after v=spf1: matched with no lookup."""
    add = [f"ip{ipaddress.ip_address(a).version}:{a}" for a in addresses]
    words = [w for w in record.split() if w not in add]
    return " ".join(words[:1] + add + words[1:])


def dkim_issues(r: DomainReport, facts: DnsFacts) -> list[Issue]:
    d, who = r.domain, r.provider
    if facts.signers is not None and not signers_for(d, facts.signers):
        return [Issue("dns.dkim_unsigned", "warning", f"No DKIM signer on this host signs mail from {d}: "
                      "it leaves unsigned", note=UNSIGNED_NOTE)]
    out = []
    for s in signers_for(d, facts.signers):
        path = s.key_path_for(d) or ""
        if path in facts.key_errors:
            out.append(Issue("dns.dkim_key_unreadable", "warning",
                             f"{s.software} signs mail from {d} with selector {s.selector}, but its key "
                             f"{path} cannot be read on the host: {facts.key_errors[path]}",
                             f"{s.source}: selector {s.selector}, key {path}",
                             note="A missing key file means mail leaves unsigned: create the key (and "
                                  "publish its record) or fix the path in the signer's configuration."))
    for k in r.dkim:
        signer = next((s for s in signers_for(d, facts.signers) if s.selector == k.selector), None)
        pem = facts.host_keys.get((signer.key_path_for(d) if signer else None) or "")
        lines = _dkim_lines(k.name, pem)
        if k.lookup_failed:
            out.append(_failed(f"{k.name}'s DKIM key", k.error))
        elif k.error:
            code = "dns.dkim_missing" if not k.record else "dns.dkim_invalid"
            out.append(Issue(code, "error", k.error, k.record, lines, who))
        elif k.matches_host is False:
            fp = fingerprint(k.key.public) if k.key else "?"
            out.append(Issue("dns.dkim_key_mismatch", "error",
                             f"{k.name} publishes a key that does not match the key the host signs "
                             "with: receivers fail every signature",
                             f"DNS key {fp}, host key {k.host_fingerprint} "
                             f"({signer.source if signer else '?'}: {signer.key_path_for(d) if signer else '?'})",
                             lines, who,
                             note="Publish the host's key (the line above), or if the host should sign "
                                  "with another selector whose record is right, change the selector "
                                  "in its configuration."))
    return out


UNSIGNED_NOTE = ("Configure DKIM signing on the host and publish the key. Debian's exim: generate a "
                 "key (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "
                 "/etc/exim4/dkim/DOMAIN.SELECTOR.key; chown root:Debian-exim, chmod 640), put "
                 "DKIM_SELECTOR = SELECTOR, DKIM_DOMAIN = ${lc:${domain:$h_from:}} and "
                 "DKIM_PRIVATE_KEY = /etc/exim4/dkim/${dkim_domain}.${dkim_selector}.key in "
                 "/etc/exim4/exim4.conf.localmacros, run update-exim4.conf and reload exim4; then "
                 "re-check for the record to publish.")


def _dkim_lines(name: str, pem: bytes | None) -> tuple[str, ...]:
    try:
        return (txt_line(name, record_for(pem)),) if pem else ()
    except DkimError:
        return ()


def dmarc_issues(r: DomainReport) -> list[Issue]:
    dm, d, who = r.dmarc, r.domain, r.provider
    if dm.lookup_failed:
        return [_failed(f"{d}'s DMARC policy", dm.error)]
    out = []
    if dm.error:
        code = "dns.dmarc_missing" if dm.record is None and "no DMARC" in dm.error else "dns.dmarc_invalid"
        out.append(Issue(code, "warning" if code == "dns.dmarc_missing" else "error", dm.error, "", (
            txt_line(f"_dmarc.{d}", f"v=DMARC1; p=none; rua=mailto:postmaster@{d}"),), who))
    for uri in dm.unauthorised_rua:
        dest = uri.split("@", 1)[1].split("!")[0]
        out.append(Issue("dns.dmarc_rua_unauthorised", "warning",
                         f"DMARC reports for {d} go to {uri}, but {dest} does not accept them "
                         "(RFC 7489 7.1): receivers drop them",
                         zone_lines=(txt_line(f"{dm.record_domain}._report._dmarc.{dest}", "v=DMARC1"),),
                         controller=Controller("dns-provider", f"whoever runs the DNS of {dest}",
                                               f"the zone of {dest}")))
    a = r.alignment
    if a and a.passes is False:
        sev = "error" if a.disposition in ("reject", "quarantine") else "warning"
        out.append(Issue("dns.dmarc_fails", sev, f"Mail from {d} sent by this host fails DMARC "
                         f"(p={a.disposition})", a.explanation, controller=who,
                         note="Fix SPF (dns.spf_*) or DKIM (dns.dkim_*) above; DMARC needs one aligned pass."))
    return out


def sts_issues(r: DomainReport) -> list[Issue]:
    s, d, who = r.mta_sts, r.domain, r.provider
    out = []
    if s.lookup_failed:
        out.append(_failed(f"{d}'s MTA-STS/TLS-RPT records", s.txt_error or s.tlsrpt_error))
    elif s.txt_error:
        out.append(Issue("dns.mta_sts_invalid", "error", s.txt_error, controller=who, zone_lines=(
            txt_line(f"_mta-sts.{d}", "v=STSv1; id=<new id, e.g. the date and time>"),)))
    if s.present and s.policy_unknown:
        out.append(_failed(f"{d}'s MTA-STS policy", s.policy_error))
    elif s.present and s.policy_error:
        out.append(Issue("dns.mta_sts_invalid", "error", f"MTA-STS policy of {d} unusable: {s.policy_error}",
                         f"https://mta-sts.{d}/.well-known/mta-sts.txt"))
    if s.policy and s.unmatched_mx:
        sev = "error" if s.policy.mode == "enforce" else "warning"
        mx = "".join(f"mx: {m}\n" for m in s.policy.mx) + "".join(f"mx: {h}\n" for h in s.unmatched_mx)
        out.append(Issue("dns.mta_sts_mx_mismatch", sev,
                         f"MTA-STS ({s.policy.mode}) for {d} does not list MX {', '.join(s.unmatched_mx)}: "
                         "senders that enforce it refuse to deliver there", f"policy mx: {', '.join(s.policy.mx)}",
                         (txt_line(f"_mta-sts.{d}", "v=STSv1; id=<new id, e.g. the date and time>"),), who,
                         note=f"policy file https://mta-sts.{d}/.well-known/mta-sts.txt:\n"
                              f"version: STSv1\nmode: {s.policy.mode}\n{mx}max_age: {s.policy.max_age}"))
    if s.tlsrpt_error and not s.lookup_failed:
        out.append(Issue("dns.tlsrpt_invalid", "warning", s.tlsrpt_error, controller=who, zone_lines=(
            txt_line(f"_smtp._tls.{d}", f"v=TLSRPTv1; rua=mailto:tls-reports@{d}"),)))
    return out


def dane_issues(r: DomainReport, facts: DnsFacts) -> list[Issue]:
    out = []
    for t in r.dane:
        want = ((f"_25._tcp.{t.mx}. 3600 IN TLSA {tlsa_for(facts.certificate).text()}",)
                if facts.certificate else ())
        if t.verdict == "unknown":
            out.append(_failed(f"DANE for {t.mx}", t.lookup_error))
        elif t.verdict == "mismatch":
            unusable = f" ({len(t.unusable)} with usage 0/1, unusable for SMTP)" if t.unusable else ""
            out.append(Issue("dns.dane_mismatch", "error",
                             f"No DNSSEC-validated TLSA record at _25._tcp.{t.mx} matches the certificate "
                             f"this host serves on port 25{unusable}: DANE senders refuse to deliver",
                             "\n".join(x.text() for x in t.records), want, r.provider))
        elif t.verdict == "unchecked" and facts.host:
            why = ("no certificate from this host's port 25 to match them against (no STARTTLS, "
                   "or the probe failed)" if t.no_certificate else
                   "the certificate this host serves matches none, and the DANE-TA (usage 2) records "
                   "match a CA of its chain, which the probe does not keep: cannot tell whether "
                   "DANE senders accept it")
            out.append(Issue("dns.dane_unchecked", "warning", f"DNSSEC-validated TLSA records at "
                             f"_25._tcp.{t.mx}, but {why}", "\n".join(x.text() for x in t.records)))
        elif t.verdict == "unchecked":
            out.append(Issue("dns.dane_unchecked", "info", f"DNSSEC-validated TLSA records at "
                             f"_25._tcp.{t.mx}: not matched against a certificate (a domain checked "
                             "alone connects to no host; `mailcheck check HOST` does)",
                             "\n".join(x.text() for x in t.records)))
        elif t.verdict == "insecure":
            out.append(Issue("dns.dane_insecure", "warning", f"TLSA at _25._tcp.{t.mx} is not DNSSEC-validated "
                             "(AD bit unset): senders ignore it", controller=r.provider))
    return out


def address_issues(a: AddressReport, facts: DnsFacts) -> list[Issue]:
    p, who = a.ptr, a.owner
    if p.lookup_failed:
        return [_failed(f"the reverse DNS of {a.address}", p.error)]
    name = facts.helo_name or facts.banner_name
    lines = (ptr_line(a.address, name),) if name else ()
    out = []
    if not p.names:
        out.append(Issue("dns.ptr_missing", "error", f"{a.address} has no PTR record: many receivers refuse "
                         "mail from it", zone_lines=lines, controller=who))
    elif not p.confirmed:
        out.append(Issue("dns.fcrdns_failed", "error", f"The PTR of {a.address} ({', '.join(p.names)}) does not "
                         "resolve back to it (forward-confirmed reverse DNS fails)", zone_lines=lines,
                         controller=who))
    for label, value, match in (("SMTP banner", facts.banner_name, a.banner_matches),
                                ("HELO name", facts.helo_name, a.helo_matches)):
        if match is False and p.confirmed:
            out.append(Issue("dns.ptr_mismatch", "warning", f"The {label} {value} is not the PTR name of "
                             f"{a.address} ({', '.join(p.confirmed)})", zone_lines=lines, controller=who,
                             note=f"or set the MTA's {label} to {p.confirmed[0]} (on the host)"))
    return out


def dnsbl_issues(listings: list[Listing]) -> list[Issue]:
    """One issue per listing; one per zone that could not be asked (its addresses named)."""
    out = []
    for item in listings:
        if item.state == "listed":
            out.append(Issue("dnsbl.listed", "error", f"{item.address} is listed in {item.zone} "
                             f"({', '.join(item.codes)}): {item.reason}", item.reason,
                             note=f"Delisting is done with {item.zone}'s operator, after fixing the cause."))
    unknown: dict[str, list[Listing]] = {}
    for item in listings:
        if item.state in ("cannot_check", "failed"):
            unknown.setdefault(item.zone, []).append(item)
    for zone, items in unknown.items():
        reasons = list(dict.fromkeys(i.reason for i in items))
        out.append(Issue("dnsbl.cannot_check", "warning",
                         f"Cannot check {', '.join(i.address for i in items)} in {zone}: {reasons[0]}",
                         "\n".join(f"{i.address}: {i.reason} {' '.join(i.codes)}".strip() for i in items)))
    return out

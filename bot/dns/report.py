"""What the DNS checks saw, as evidence lines (pure): one block per domain and per address.

Keys appear as fingerprints only (bot.dns.dkim.fingerprint), never as key material.
"""

from __future__ import annotations

from bot.dns.dkim import fingerprint
from bot.dns.domain import AddressReport, DnsFacts, DomainReport


def describe_domain(r: DomainReport, facts: DnsFacts) -> str:
    lines = [f"{r.domain} (DNS: {r.provider.name})", f"  MX: {_mx(r, facts)}", f"  SPF: {_spf(r)}"]
    lines += [f"  DKIM: {line}" for line in _dkim(r, facts)]
    lines += [f"  DMARC: {_dmarc(r)}", f"  MTA-STS: {_sts(r)}"]
    lines += [f"  DANE {t.mx}: {t.verdict}" + (" (DNSSEC-validated)" if t.authenticated else "")
              for t in r.dane]
    return "\n".join(lines)


def _mx(r: DomainReport, facts: DnsFacts) -> str:
    mx = r.mx
    if mx.error:
        return mx.error
    if mx.null_mx:
        return "null MX (receives no mail)"
    hosts = [f"{h.preference} {h.name} ({', '.join(h.addresses) or h.error or 'no address'})"
             + (" = this host" if h.name in mx.ours else "") for h in mx.hosts]
    head = "none, the domain's own address (implicit MX): " if mx.implicit else ""
    tail = "" if not facts.host else "" if mx.ours else f"; not this host ({', '.join(facts.addresses)})"
    return head + "; ".join(hosts) + tail


def _spf(r: DomainReport) -> str:
    s = r.spf
    if s.error and not s.records:
        return s.error
    verdicts = "; ".join(f"{a}: {v.result} ({v.decided_by}, {v.lookups} lookups)" for a, v in s.verdicts.items())
    return " | ".join(x for x in (" / ".join(s.records), s.error, verdicts) if x)


def _dkim(r: DomainReport, facts: DnsFacts) -> list[str]:
    if facts.signers is None:
        return ["the host's signer is unknown (no host, or its configuration could not be read)"]
    out = []
    for k in r.dkim:
        dns_fp = fingerprint(k.key.public) if k.key and k.key.public else "no key"
        if k.matches_host is None:
            host = "host key not compared"
        else:
            host = f"host key {k.host_fingerprint} {'matches' if k.matches_host else 'does NOT match'}"
        out.append(f"{k.name}: {k.error or 'DNS key ' + dns_fp}; {host}")
    return out or ["no signer on the host signs this domain"]


def _dmarc(r: DomainReport) -> str:
    d = r.dmarc
    if d.record is None:
        return d.error or "none"
    rec = d.record
    policy = f"p={rec.p} sp={rec.sp} pct={rec.pct} at _dmarc.{d.record_domain}"
    a = r.alignment
    if a is None:
        return policy
    verdict = {True: "passes", False: "FAILS", None: "cannot tell"}[a.passes]
    return f"{policy}; this host's mail {verdict}: {a.explanation}"


def _sts(r: DomainReport) -> str:
    s = r.mta_sts
    sts = s.txt_error or (f"{s.policy.mode}, max_age {s.policy.max_age}, mx {', '.join(s.policy.mx)}"
                          if s.policy else s.policy_error or ("TXT only" if s.present else "none"))
    return f"{sts}; TLS-RPT: {s.tlsrpt or s.tlsrpt_error or 'none'}"


def describe_address(a: AddressReport, facts: DnsFacts) -> str:
    p = a.ptr
    ptr = p.error or ", ".join(f"{n} ({'confirmed' if n in p.confirmed else 'NOT confirmed'})" for n in p.names)
    names = [f"{label} {value}: {'matches' if ok else 'does not match' if ok is False else 'not compared'}"
             for label, value, ok in (("banner", facts.banner_name, a.banner_matches),
                                      ("HELO", facts.helo_name, a.helo_matches)) if value]
    owner = f"; block owner: {a.owner.describe()}" if a.owner else ""
    return f"{a.address}: reverse DNS {ptr}" + "".join(f"; {n}" for n in names) + owner

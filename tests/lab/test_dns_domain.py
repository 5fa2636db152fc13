"""Domain checks against real DNS (knot, unbound) in the DNS lab: each both ways.

The world is built per test; mailcheck asks the lab's validating resolver,
as MAILCHECK_RESOLVERS would make it in production.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.dns.dkim import record_for
from bot.dns.dkim_config import Signer
from bot.dns.domain import DnsFacts, check_address, check_domain
from bot.dns.issues import address_issues, domain_issues
from bot.dns.spf import check_spf
from tests.dnslab import Zone
from tests.lab.dnsworld import DOMAIN, context, ptr_zone, rdap_file, world

pytestmark = pytest.mark.lab


def codes(issues) -> set[str]:
    return {i.code for i in issues}


def issue(issues, code):
    return next(i for i in issues if i.code == code)


async def test_mx_here_and_mx_elsewhere(dnslab):
    host = dnslab.ip(25)
    zone = Zone(DOMAIN, f"@ MX 10 mail\nmail A {host}\nother A {dnslab.ip(26)}\n"
                        '@ TXT "v=spf1 mx -all"')
    world(dnslab, zone)
    facts = DnsFacts(addresses=[host], signers=[])
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    assert rep.mx.ours == ["mail.example.test"] and rep.mx.elsewhere is False
    assert "dns.mx_elsewhere" not in codes(domain_issues(rep, facts))

    world(dnslab, Zone(DOMAIN, f"@ MX 10 other\nmail A {host}\nother A {dnslab.ip(26)}"))
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    assert rep.mx.elsewhere is True
    found = issue(domain_issues(rep, facts), "dns.mx_elsewhere")
    assert dnslab.ip(26) in found.summary and "ns1.dns-provider.test" in found.controller.name


async def test_mx_cname_ip_target_and_null_mx(dnslab):
    world(dnslab, Zone(DOMAIN, f"@ MX 10 alias\n@ MX 20 198.18.0.9.\nalias CNAME mail\nmail A {dnslab.ip(25)}"))
    facts = DnsFacts(addresses=[dnslab.ip(25)], signers=[])
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    found = [i for i in domain_issues(rep, facts) if i.code == "dns.mx_invalid"]
    assert any("alias (CNAME to mail.example.test)" in i.summary for i in found)
    assert any("IP address" in i.summary for i in found)
    assert any("IN MX 10 mail.example.test." in line for i in found for line in i.zone_lines)

    world(dnslab, Zone(DOMAIN, "@ MX 0 ."))
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    assert rep.mx.null_mx and "dns.null_mx" in codes(domain_issues(rep, facts))


async def test_ptr_fcrdns_and_names(dnslab):
    host = dnslab.ip(25)
    rdap = rdap_file(dnslab, host, "Lab Hosting Ltd", "abuse@hosting.test")
    world(dnslab, Zone(DOMAIN, f"mail A {host}"), ptr_zone(host, "mail.example.test"), files=rdap)
    facts = DnsFacts([host], banner_name="mail.example.test", helo_name="mail.example.test")
    rep = await check_address(context(dnslab), host, facts)
    assert rep.ptr.confirmed == ["mail.example.test"] and rep.ptr.fcrdns is True
    assert (rep.banner_matches, rep.helo_matches, rep.owner) == (True, True, None)
    assert address_issues(rep, facts) == []

    # PTR mismatch: the banner announces another name
    facts_other = DnsFacts([host], banner_name="smtp.example.test", helo_name="mail.example.test")
    rep = await check_address(context(dnslab), host, facts_other)
    found = issue(address_issues(rep, facts_other), "dns.ptr_mismatch")
    assert "smtp.example.test" in found.summary and found.controller.name == "Lab Hosting Ltd"

    # FCrDNS failure: the PTR name resolves to another address
    world(dnslab, Zone(DOMAIN, f"mail A {dnslab.ip(99)}"), ptr_zone(host, "mail.example.test"), files=rdap)
    rep = await check_address(context(dnslab), host, facts)
    assert rep.ptr.names == ["mail.example.test"] and rep.ptr.fcrdns is False
    found = issue(address_issues(rep, facts), "dns.fcrdns_failed")
    assert found.controller.contact == "abuse@hosting.test"
    rev = ".".join(reversed(host.split("."))) + ".in-addr.arpa."
    assert found.zone_lines == (f"{rev} 3600 IN PTR mail.example.test.",)


async def test_ptr_ipv6_nibbles_and_fcrdns(dnslab):
    host6 = "2001:2:0:1::25"
    world(dnslab, Zone(DOMAIN, f"mail AAAA {host6}"), ptr_zone(host6, "mail.example.test"))
    facts = DnsFacts([host6], helo_name="mail.example.test")
    rep = await check_address(context(dnslab), host6, facts)
    assert (rep.ptr.confirmed, rep.helo_matches) == (["mail.example.test"], True)
    world(dnslab, Zone(DOMAIN, "mail AAAA 2001:2:0:1::99"), ptr_zone(host6, "mail.example.test"))
    rep = await check_address(context(dnslab), host6, facts)
    assert rep.ptr.fcrdns is False
    assert "dns.fcrdns_failed" in codes(address_issues(rep, facts))


def _include_chain(n: int, host: str) -> list[Zone]:
    """example.test -> include:i1.chain.test -> ... -> i<n> allows the host."""
    body = "\n".join(f'i{i} TXT "v=spf1 include:i{i + 1}.chain.test -all"' for i in range(1, n))
    body += f'\ni{n} TXT "v=spf1 ip4:{host} -all"'
    return [Zone(DOMAIN, '@ TXT "v=spf1 include:i1.chain.test -all"'), Zone("chain.test", body, signed=False)]


async def test_spf_include_chain_at_and_over_the_limit(dnslab):
    host = dnslab.ip(25)
    world(dnslab, *_include_chain(10, host))
    rep = await check_spf(context(dnslab).resolver, DOMAIN, [host])
    v = rep.verdicts[host]
    assert (v.result, v.lookups, rep.worst_case_lookups) == ("pass", 10, 10)

    world(dnslab, *_include_chain(11, host))
    facts = DnsFacts([host], signers=[])
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    v = rep.spf.verdicts[host]
    assert v.result == "permerror" and "more than 10 DNS lookups" in v.decided_by
    assert any("11 DNS lookups" in w and "include:i1.chain.test 1+10" in w for w in rep.spf.warnings)
    found = issue(domain_issues(rep, facts), "dns.spf_permerror")
    assert found.zone_lines == (f'example.test. 3600 IN TXT "v=spf1 ip4:{host} include:i1.chain.test -all"',)
    assert found.controller.name.startswith("dns-provider.test")


async def test_spf_excludes_the_host(dnslab):
    host = dnslab.ip(25)
    world(dnslab, Zone(DOMAIN, f'@ TXT "v=spf1 a:mail.example.test -all"\nmail A {host}'))
    facts = DnsFacts([host], signers=[])
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    assert rep.spf.verdicts[host].result == "pass"
    assert not codes(domain_issues(rep, facts)) & {"dns.spf_excludes_host", "dns.spf_invalid"}

    world(dnslab, Zone(DOMAIN, f'@ TXT "v=spf1 a:mail.example.test" " -all"\nmail A {dnslab.ip(26)}'))
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    found = issue(domain_issues(rep, facts), "dns.spf_excludes_host")
    assert "fail by -all in example.test" in found.summary
    assert found.zone_lines == (f'example.test. 3600 IN TXT "v=spf1 a:mail.example.test ip4:{host} -all"',)

    # split badly over strings: "v=spf1" "a:mail..." is one string "v=spf1a:mail...": no SPF at all
    world(dnslab, Zone(DOMAIN, f'@ TXT "v=spf1" "a:mail.example.test -all"\nmail A {host}'))
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    assert rep.spf.records == [] and rep.spf.verdicts[host].result == "none"
    found = issue(domain_issues(rep, facts), "dns.spf_split")
    assert "v=spf1a:mail.example.test" in found.summary
    assert found.zone_lines == (f'example.test. 3600 IN TXT "v=spf1 a:mail.example.test ip4:{host} -all"',)


def _key() -> bytes:
    """A signing key's public half, as `openssl pkey -pubout` prints it on the host."""
    return rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


async def test_dkim_key_matches_or_not(dnslab):
    host, pem, old = dnslab.ip(25), _key(), _key()
    signer = Signer("opendkim", "s2024", DOMAIN, "/etc/dkim/example.test.key", "test")
    facts = DnsFacts([host], signers=[signer], host_keys={signer.key_path: pem})
    dkim_txt = " ".join(f'"{c}"' for c in _chunks(record_for(pem)))
    world(dnslab, Zone(DOMAIN, f"s2024._domainkey TXT {dkim_txt}"))
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    assert [d.matches_host for d in rep.dkim] == [True]

    old_txt = " ".join(f'"{c}"' for c in _chunks(record_for(old)))
    world(dnslab, Zone(DOMAIN, f"s2024._domainkey TXT {old_txt}"))
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    assert [d.matches_host for d in rep.dkim] == [False]
    found = issue(domain_issues(rep, facts), "dns.dkim_key_mismatch")
    assert found.zone_lines and "".join(found.zone_lines[0].split('"')[1::2]) == record_for(pem)

    # without a signer: mail leaves unsigned
    facts_none = DnsFacts([host], signers=[])
    assert "dns.dkim_unsigned" in codes(domain_issues(await check_domain(context(dnslab), DOMAIN, facts_none),
                                                      facts_none))


def _chunks(text: str, n: int = 200) -> list[str]:
    return [text[i:i + n] for i in range(0, len(text), n)]


async def test_dmarc_reject_with_failing_alignment(dnslab):
    host = dnslab.ip(25)
    facts = DnsFacts([host], signers=[])
    dmarc = '_dmarc TXT "v=DMARC1; p=reject; rua=mailto:dmarc@reports.test"'
    world(dnslab, Zone(DOMAIN, f'@ TXT "v=spf1 ip4:{host} -all"\n{dmarc}'),
          Zone("reports.test", '@ MX 0 .', signed=False))
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    assert rep.alignment.passes is True and rep.dmarc.record.p == "reject"
    assert rep.dmarc.unauthorised_rua == ["mailto:dmarc@reports.test"]
    found = issue(domain_issues(rep, facts), "dns.dmarc_rua_unauthorised")
    assert found.zone_lines == ('example.test._report._dmarc.reports.test. 3600 IN TXT "v=DMARC1"',)

    world(dnslab, Zone(DOMAIN, f'@ TXT "v=spf1 ip4:{dnslab.ip(26)} -all"\n{dmarc}'),
          Zone("reports.test", 'example.test._report._dmarc TXT "v=DMARC1"', signed=False))
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    assert (rep.alignment.passes, rep.alignment.disposition) == (False, "reject")
    assert rep.dmarc.unauthorised_rua == []
    found = issue(domain_issues(rep, facts), "dns.dmarc_fails")
    assert found.severity == "error" and "SPF fail" in found.evidence and "DKIM: not signed" in found.evidence


async def test_mta_sts_mx_patterns(dnslab):
    host = dnslab.ip(25)
    zone = Zone(DOMAIN, f"@ MX 10 mail\nmail A {host}\nmta-sts A {dnslab.web}\n"
                        '_mta-sts TXT "v=STSv1; id=20261130"\n_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tls@example.test"')

    def policy(mx: str) -> dict[str, str]:
        return {"mta-sts.example.test/.well-known/mta-sts.txt":
                f"version: STSv1\nmode: enforce\nmx: {mx}\nmax_age: 86400\n"}
    facts = DnsFacts([host], signers=[])
    world(dnslab, zone, files=policy("*.example.test"))
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    assert rep.mta_sts.policy.mode == "enforce" and rep.mta_sts.unmatched_mx == []
    assert rep.mta_sts.tlsrpt.startswith("v=TLSRPTv1")
    assert not codes(domain_issues(rep, facts)) & {"dns.mta_sts_mx_mismatch", "dns.mta_sts_invalid"}

    world(dnslab, zone, files=policy("mx.elsewhere.test"))
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    assert rep.mta_sts.unmatched_mx == ["mail.example.test"]
    found = issue(domain_issues(rep, facts), "dns.mta_sts_mx_mismatch")
    assert found.severity == "error" and "mx: mail.example.test" in found.note

    # the lab CA is trusted only when configured: the production default store refuses it
    rep = await check_domain(context(dnslab, ca=False), DOMAIN, facts)
    assert rep.mta_sts.policy is None and "certificate" in rep.mta_sts.policy_error


async def test_lab_resolver_answers_only_for_the_lab(dnslab):
    """The lab resolver has no route out: a name outside the lab's zones fails at once
    (no packet leaves the machine), and mailcheck reports that as a failed lookup."""
    world(dnslab, Zone(DOMAIN, f"mail A {dnslab.ip(25)}"))
    r = context(dnslab).resolver
    inside, outside = await r.lookup("mail.example.test", "A"), await r.lookup("example.com", "A")
    assert inside.texts == [dnslab.ip(25)]
    assert outside.failed and outside.status == "servfail"
    assert not dnslab.routes_out()

"""DNSBL and DANE against real DNS: rbldnsd zones, an NXDOMAIN-rewriting resolver,
and a DNSSEC-signed TLSA matched against the certificate a real exim serves."""

from __future__ import annotations

import pytest

from bot.dns.dane import tlsa_for
from bot.dns.dnsbl import check_dnsbl
from bot.dns.domain import DnsFacts, check_domain
from bot.dns.issues import dnsbl_issues, domain_issues
from bot.probes import Prober
from tests.dnslab import Zone, standard_dnsbl
from tests.lab.dnsworld import DOMAIN, context, world

pytestmark = pytest.mark.lab

HOST6 = "2001:2::25"


def zones(lab):
    host = lab.ip(25)
    return standard_dnsbl({host: ("127.0.0.4", "Listed: spam from $ seen at the lab trap"),
                           HOST6: ("127.0.0.3", "Listed: IPv6 spam source")})


async def test_listing_clean_and_cannot_check(dnslab):
    host, clean = dnslab.ip(25), dnslab.ip(26)
    world(dnslab, dnsbl=zones(dnslab))
    got = await check_dnsbl(context(dnslab).resolver, ["bl.test", "blocked.test"], [host, clean, HOST6])
    state = {(x.zone, x.address): x for x in got}
    assert state["bl.test", host].state == "listed"
    assert state["bl.test", host].codes == ("127.0.0.4",)
    assert state["bl.test", host].reason == f"Listed: spam from {host} seen at the lab trap"
    assert state["bl.test", HOST6].state == "listed"  # nibble-reversed query
    assert state["bl.test", clean].state == "not_listed"
    for addr in (host, clean, HOST6):
        x = state["blocked.test", addr]
        assert x.state == "cannot_check" and "127.255.255" in x.reason
    issues = dnsbl_issues(got)
    assert {(i.code, i.summary.split()[0]) for i in issues if i.code == "dnsbl.listed"} == {
        ("dnsbl.listed", host), ("dnsbl.listed", HOST6)}
    [blocked] = [i for i in issues if i.code == "dnsbl.cannot_check"]  # one per zone
    assert blocked.summary.startswith(f"Cannot check {host}, {clean}, {HOST6} in blocked.test")


async def test_nxdomain_rewriting_resolver_fakes_no_listing(dnslab):
    host, clean = dnslab.ip(25), dnslab.ip(26)
    world(dnslab, dnsbl=zones(dnslab))
    # through the rewriter, the clean address "answers" 127.0.0.2 ...
    raw = await context(dnslab, dnslab.rewriter).resolver.lookup(
        ".".join(reversed(clean.split("."))) + ".bl.test", "A")
    assert raw.texts == ["127.0.0.2"]
    # ... but the test entry 127.0.0.1 answers too, so nothing from that zone is believed
    got = await check_dnsbl(context(dnslab, dnslab.rewriter).resolver, ["bl.test"], [host, clean])
    assert {x.state for x in got} == {"cannot_check"}
    assert all("rewrites NXDOMAIN" in x.reason for x in got)
    # the same zone through an honest resolver
    got = await check_dnsbl(context(dnslab).resolver, ["bl.test"], [host, clean])
    assert [x.state for x in got] == ["listed", "not_listed"]


async def test_dead_zone_is_not_a_clean_bill(dnslab):
    world(dnslab, dnsbl={"empty.test": {}})  # a zone that lists nothing, not even 127.0.0.2
    [x] = await check_dnsbl(context(dnslab).resolver, ["empty.test"], [dnslab.ip(25)])
    assert x.state == "cannot_check" and "dead" in x.reason


async def test_tlsa_against_the_served_certificate_in_a_signed_zone(dnslab, dnshost):
    host = dnshost()  # exim's reverse lookups go to the lab resolver, never outside
    host.start_exim("public", ports=(25,), tls=host.exim_tls_cert("mail.example.test"))
    probe = await Prober(timeout=5).probe_port("IPv4", host.ip, 25)
    der = probe.smtp.tls.der
    assert probe.smtp.starttls and der

    served = tlsa_for(der).text()
    stale = tlsa_for(_other_cert()).text()
    facts = DnsFacts([host.ip], signers=[], certificate=der)
    body = f"@ MX 10 mail\nmail A {host.ip}\n_25._tcp.mail TLSA {{}}"
    world(dnslab, Zone(DOMAIN, body.format(served), signed=True))
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    [dane] = rep.dane
    assert (dane.authenticated, dane.verdict) == (True, "match")

    # a key rollover that left TLSA behind: signed, validated, and wrong
    world(dnslab, Zone(DOMAIN, body.format(stale), signed=True))
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    [dane] = rep.dane
    assert (dane.authenticated, dane.verdict) == (True, "mismatch")
    found = next(i for i in domain_issues(rep, facts) if i.code == "dns.dane_mismatch")
    assert found.zone_lines == (f"_25._tcp.mail.example.test. 3600 IN TLSA {served}",)

    # the same records unsigned: no AD bit, senders ignore them
    world(dnslab, Zone(DOMAIN, body.format(stale), signed=False))
    rep = await check_domain(context(dnslab), DOMAIN, facts)
    assert [d.verdict for d in rep.dane] == ["insecure"]
    # the lab host's own lookups reach the lab's resolver
    assert host.sh("getent", "hosts", f"mail.{DOMAIN}").stdout.split()[0] == host.ip


def _other_cert() -> bytes:
    """The certificate before the rollover: another key, same name."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(2).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)

"""The pure parts of bot/dns: DMARC, DNSBL answers, TLSA, DKIM keys and signer configs,
MTA-STS policies, zone lines, settings parsing."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import dns.rdata
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from bot.checks.mta_config import parse_transports
from bot.dns import dkim, dkim_config, dmarc, dnsbl, mtasts
from bot.dns.dane import Tlsa, matches, tlsa_for
from bot.dns.mx import banner_name
from bot.dns.owners import parse_rdap, txt_line
from bot.dns.resolver import Lookup, parse_nameservers, reverse_name
from bot.errors import ConfigError
from tests.unit.dnsdata import StaticResolver

DATA = Path(__file__).parent / "data" / "dkim"


# --- DMARC ---------------------------------------------------------------------------
def test_dmarc_parse_and_defaults():
    rec = dmarc.parse("v=DMARC1; p=reject; sp=quarantine; pct=50; rua=mailto:d@example.test")
    assert (rec.p, rec.sp, rec.pct, rec.adkim, rec.aspf) == ("reject", "quarantine", 50, "r", "r")
    assert dmarc.parse("v=DMARC1; p=none").sp == "none"


@pytest.mark.parametrize("text,why", [
    ("p=reject; v=DMARC1", "start with v=DMARC1"), ("v=DMARC1; p=block", "must be none"),
    ("v=DMARC1; p=none; pct=101", "0-100"), ("v=DMARC1; p=none; aspf=x", "r or s"),
    ("v=DMARC1; p=none; rua=d@example.test", "bad report URI"), ("v=DMARC1; sp=none", "no p="),
    ("v=DMARC1; p=none; p=reject", "twice"),
])
def test_dmarc_syntax_errors(text, why):
    with pytest.raises(dmarc.DmarcSyntaxError, match=why):
        dmarc.parse(text)


def test_org_domain_from_bundled_psl():
    assert dmarc.org_domain("a.b.example.co.uk") == "example.co.uk"
    assert dmarc.org_domain("mail.example.test") == "example.test"
    assert dmarc.aligned("mail.example.test", "example.test", "r")
    assert not dmarc.aligned("mail.example.test", "example.test", "s")


def _report(text: str, domain: str = "example.test") -> dmarc.DmarcReport:
    return dmarc.DmarcReport(domain, domain, dmarc.parse(text))


def test_alignment_outcomes():
    rep = _report("v=DMARC1; p=reject")
    ok = dmarc.evaluate(rep, "example.test", "example.test", "pass", None, None)
    assert ok.passes is True
    bad = dmarc.evaluate(rep, "example.test", "example.test", "fail", "example.test", False)
    assert (bad.passes, bad.disposition) == (False, "reject")
    # SPF passes, but for another domain: not aligned
    other = dmarc.evaluate(rep, "example.test", "bounce.other.test", "pass", None, None)
    assert other.passes is False and "not aligned" in other.explanation
    # DKIM present but not checked: cannot tell, never a guess
    unknown = dmarc.evaluate(rep, "example.test", "example.test", "fail", "example.test", None)
    assert (unknown.passes, unknown.disposition) == (None, "unknown")


async def test_rua_authorisation_and_org_fallback():
    r = StaticResolver({
        "_dmarc.example.test TXT": ['"v=DMARC1; p=none; rua=mailto:a@reports.test,mailto:b@ok.test,'
                                    'mailto:c@example.test"'],
        "example.test._report._dmarc.ok.test TXT": ['"v=DMARC1"']})
    rep = await dmarc.check_dmarc(r, "sub.example.test")
    assert rep.record_domain == "example.test" and rep.policy == "none"
    assert rep.unauthorised_rua == ["mailto:a@reports.test"]


# --- DNSBL ---------------------------------------------------------------------------
def _a(*addrs: str, status: str = "ok") -> Lookup:
    rr = tuple(dns.rdata.from_text("IN", "A", a) for a in addrs)
    return Lookup("x", "A", status, rr)


@pytest.mark.parametrize("answer,state", [
    (("127.0.0.2",), "listed"), (("127.0.0.11",), "listed"), (("127.0.0.4", "127.0.0.10"), "listed"),
    (("127.255.255.254",), "cannot_check"), (("127.255.255.252",), "cannot_check"),
    (("127.0.0.12",), "unexpected"), (("198.18.0.80",), "unexpected"), (("127.0.1.2",), "unexpected"),
])
def test_dnsbl_classify(answer, state):
    assert dnsbl.classify(_a(*answer)) == state


def test_dnsbl_zone_setting():
    assert dnsbl.parse_zones(" zen.spamhaus.org, bl.spamcop.net,ZEN.spamhaus.org. ") == [
        "zen.spamhaus.org", "bl.spamcop.net"]
    for bad in ("localhost", "bl..test", "bl test.org", "-bl.test"):
        with pytest.raises(ConfigError):
            dnsbl.parse_zones(bad)


def test_dnsbl_classify_void_and_failed():
    assert dnsbl.classify(Lookup("x", "A", "nxdomain")) == "not_listed"
    assert dnsbl.classify(Lookup("x", "A", "timeout")) == "failed"


def test_reverse_names():
    assert reverse_name("198.51.100.25") == "25.100.51.198"
    assert reverse_name("2001:db8::1") == ".".join(reversed("20010db8000000000000000000000001"))
    # IPv4-mapped IPv6 stays nibbles (dnspython's reversename would give in-addr.arpa)
    assert reverse_name("::ffff:7f00:2") == "2.0.0.0.0.0.f.7.f.f.f.f." + ".".join("0" * 20)


async def test_dnsbl_rewriting_resolver_never_lists():
    zone = "bl.test"
    answers = {f"{reverse_name(a)}.{zone} A": ["127.0.0.2"]
               for a in ("127.0.0.2", "127.0.0.1", "198.51.100.25")}
    got = await dnsbl.check_dnsbl(StaticResolver(answers), [zone], ["198.51.100.25"])
    assert [(x.state, "rewrites NXDOMAIN" in x.reason) for x in got] == [("cannot_check", True)]


async def test_dnsbl_listing_whose_reason_could_not_be_read_says_so():
    zone, addr = "bl.test", "198.51.100.25"
    answers = {f"{reverse_name('127.0.0.2')}.{zone} A": ["127.0.0.2"],
               f"{reverse_name(addr)}.{zone} A": ["127.0.0.2"], f"{reverse_name(addr)}.{zone} TXT": "timeout"}
    [got] = await dnsbl.check_dnsbl(StaticResolver(answers), [zone], [addr])
    assert got.state == "listed"
    assert "no TXT reason given" not in got.reason and "timeout" in got.reason


# --- DANE ----------------------------------------------------------------------------
def _cert(cn: str = "mail.example.test") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def test_tlsa_matching_each_selector_and_type():
    der, other = _cert(), _cert()
    for sel in (0, 1):
        for mtype in (0, 1, 2):
            rec = tlsa_for(der, 3, sel, mtype)
            assert matches(rec, der) and not matches(rec, other)
    assert not matches(Tlsa(3, 1, 9, b"\0" * 32), der)  # unknown matching type never matches


async def test_dane_verdicts():
    from bot.dns.dane import check_dane

    der, other = _cert(), _cert()
    name = "_25._tcp.mail.example.test"
    good, stale = tlsa_for(der).text(), tlsa_for(other).text()
    signed = {name}
    assert (await check_dane(StaticResolver({f"{name} TLSA": [good]}, signed), "mail.example.test", der)
            ).verdict == "match"
    assert (await check_dane(StaticResolver({f"{name} TLSA": [stale, "1 1 1 " + good.split()[3]]}, signed),
                             "mail.example.test", der)).verdict == "mismatch"  # usage 1: unusable
    assert (await check_dane(StaticResolver({f"{name} TLSA": [good]}), "mail.example.test", der)
            ).verdict == "insecure"
    assert (await check_dane(StaticResolver({f"{name} TLSA": [good]}, signed), "mail.example.test", None)
            ).verdict == "unchecked"
    assert (await check_dane(StaticResolver({f"{name} TLSA": "timeout"}), "mail.example.test", der)
            ).verdict == "unknown"
    assert (await check_dane(StaticResolver({}), "mail.example.test", der)).verdict == "none"


async def test_dane_ta_records_are_not_a_mismatch_with_the_leaf():
    """DANE-TA (usage 2) names a CA in the chain, which the probe does not keep: a leaf that
    matches none of them is "cannot tell", never "DANE senders refuse to deliver"."""
    from bot.checks.dns import DnsFacts
    from bot.dns.dane import check_dane
    from bot.dns.issues import dane_issues

    leaf, ca = _cert(), _cert("example CA")
    name = "_25._tcp.mail.example.test"
    ta = tlsa_for(ca, usage=2).text()
    rep = await check_dane(StaticResolver({f"{name} TLSA": [ta]}, {name}), "mail.example.test", leaf)
    assert rep.verdict == "unchecked"
    facts = DnsFacts(["198.51.100.25"], certificate=leaf)
    [issue] = dane_issues(type("R", (), {"dane": [rep], "provider": None})(), facts)
    assert issue.code == "dns.dane_unchecked" and "usage 2" in issue.summary
    stale = tlsa_for(_cert()).text()  # a DANE-EE record left behind next to the TA one
    assert (await check_dane(StaticResolver({f"{name} TLSA": [stale]}, {name}), "mail.example.test", leaf)
            ).verdict == "mismatch"


# --- DKIM ----------------------------------------------------------------------------
def _pub(key) -> bytes:
    """The public half as `openssl pkey -pubout` prints it on the host."""
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def test_dkim_key_matching_rsa_and_ed25519():
    k1, k2 = rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)
    rec = dkim.parse_record(dkim.record_for(_pub(k1)))
    assert rec.bits == 2048 and rec.public == dkim.public_of(_pub(k1))[1]
    assert rec.public != dkim.public_of(_pub(k2))[1]
    assert dkim.fingerprint(rec.public) != dkim.fingerprint(dkim.public_of(_pub(k2))[1])
    # the bare RSAPublicKey (PKCS#1) form some generators publish
    pkcs1 = k1.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    assert dkim.parse_record("v=DKIM1; p=" + base64.b64encode(pkcs1).decode()).public == rec.public
    ed = ed25519.Ed25519PrivateKey.generate()
    assert dkim.parse_record(dkim.record_for(_pub(ed))).key_type == "ed25519"
    with pytest.raises(dkim.DkimError, match="cannot read the public key"):
        dkim.public_of(b"-----BEGIN PRIVATE KEY-----\nnot one\n-----END PRIVATE KEY-----\n")


@pytest.mark.parametrize("text,why", [
    ("v=DKIM2; p=AAAA", "DKIM1"), ("v=DKIM1; k=rsa", "no p="), ("v=DKIM1; p=!!!", "base64"),
    ("v=DKIM1; k=ed25519; p=AAAA", "32 bytes"), ("v=DKIM1; p=AAAA", "not an RSA"),
])
def test_dkim_record_errors(text, why):
    with pytest.raises(dkim.DkimError, match=why):
        dkim.parse_record(text)


def test_dkim_revoked_and_split_base64():
    assert dkim.parse_record("v=DKIM1; p=").revoked
    k = rsa.generate_private_key(65537, 1024)
    text = dkim.record_for(_pub(k))
    spaced = text[:40] + " " + text[40:80] + "\t" + text[80:]
    assert dkim.parse_record(spaced).public == dkim.parse_record(text).public


def test_exim_signer_from_the_transports_exim_prints():
    """`exim4 -bP transports` with Debian's DKIM_* macros set (captured, exim 4.96)."""
    text = (Path(__file__).parents[1] / "data" / "mta" / "exim4_-bP_transports_dkim.txt").read_text()
    [s] = dkim_config.exim_signers((t.name, t.options) for t in parse_transports(text) if t.driver == "smtp")
    assert (s.selector, s.domain, s.key_path, s.source) == (
        "sel2026", "${lc:${domain:$h_from:}}", "/etc/exim4/dkim/${dkim_domain}.${dkim_selector}.key",
        "exim transport remote_smtp")
    assert s.dynamic and s.key_path_for("example.test") == "/etc/exim4/dkim/example.test.sel2026.key"


def test_exim_signer_options_literal_inline_and_none():
    [s] = dkim_config.exim_signers([("remote_smtp", {"dkim_domain": "example.org", "dkim_selector": "s1",
                                                     "dkim_private_key": "/etc/exim/dkim.private"})])
    assert (s.selector, s.domain, s.key_path, s.dynamic) == ("s1", "example.org", "/etc/exim/dkim.private", False)
    [inline] = dkim_config.exim_signers([("t", {"dkim_selector": "s", "dkim_private_key": "-----BEGIN ..."})])
    assert inline.key_path is None and inline.domain is None  # the key itself: nothing to read
    assert dkim_config.exim_signers([("remote_smtp", {"dkim_selector": "", "dkim_domain": "x.org"})]) == []


def test_opendkim_tables_named_in_its_conf():
    assert dkim_config.opendkim_tables((DATA / "opendkim.conf.tables").read_text()) == [
        "/usr/local/etc/dkim/keytable", "/usr/local/etc/dkim/signingtable"]
    assert dkim_config.opendkim_tables("KeyTable dsn:mysql://u@h/db/table=k\n") == []


def test_opendkim_signers():
    assert dkim_config.opendkim_signers((DATA / "opendkim.conf.debian").read_text()) == []
    [s] = dkim_config.opendkim_signers((DATA / "opendkim.conf.simple").read_text())
    assert (s.selector, s.domain, s.key_path) == ("default", "localhost", "/var/db/dkim/localhost.private")
    got = dkim_config.opendkim_signers((DATA / "opendkim.conf.tables").read_text(),
                                       (DATA / "opendkim.keytable").read_text(),
                                       (DATA / "opendkim.signingtable").read_text())
    assert [(s.domain, s.selector) for s in got] == [("example.com", "foo"), ("example.com", "bar"),
                                                     ("example.net", "baz")]


def test_rspamd_signers():
    [s] = dkim_config.rspamd_signers((DATA / "rspamd.modules.d.dkim_signing.conf").read_text())
    assert (s.selector, s.domain, s.key_path_for("example.test")) == (
        "dkim", None, "/var/lib/rspamd/dkim/example.test.dkim.key")
    got = dkim_config.rspamd_signers((DATA / "rspamd.local.d.dkim_signing.conf").read_text())
    assert [(s.domain, s.selector, s.key_path) for s in got] == [
        ("example.com", "ds", "/var/lib/rspamd/dkim/example.key"),
        ("example.com", "eddsa", "/var/lib/rspamd/dkim/eddsa.key"),
        ("example.net", "mail2024", "/var/lib/rspamd/dkim/example.net.key")]


# --- MTA-STS -------------------------------------------------------------------------
def test_mta_sts_policy_and_patterns():
    p = mtasts.parse_policy("version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\n"
                            "mx: *.backup.example.test\r\nmax_age: 604800\r\n")
    assert (p.mode, p.max_age, p.mx) == ("enforce", 604800, ("mail.example.test", "*.backup.example.test"))
    assert mtasts.mx_matches("*.backup.example.test", "mx1.backup.example.test")
    assert not mtasts.mx_matches("*.backup.example.test", "a.mx1.backup.example.test")
    assert not mtasts.mx_matches("*.backup.example.test", "backup.example.test")
    assert mtasts.mx_matches("mail.example.test", "MAIL.example.test.")
    for bad, why in (("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1", "STSv1"),
                     ("version: STSv1\nmode: on\nmx: a\nmax_age: 1", "mode"),
                     ("version: STSv1\nmode: enforce\nmax_age: 1", "no mx"),
                     ("version: STSv1\nmode: enforce\nmx: a\nmax_age: 99999999", "max_age")):
        with pytest.raises(mtasts.PolicyError, match=why):
            mtasts.parse_policy(bad)


# --- zone lines, settings, RDAP, banner -------------------------------------------------
def test_txt_line_splits_long_values_without_losing_spaces():
    value = "v=spf1 " + " ".join(f"ip4:198.51.100.{i}" for i in range(40)) + " -all"
    line = txt_line("example.test", value)
    strings = [s for s in line.split('"')[1::2]]
    assert all(len(s) <= 255 for s in strings) and len(strings) > 1
    assert "".join(strings) == value
    assert line.startswith("example.test. 3600 IN TXT ")


def test_parse_nameservers():
    got = parse_nameservers("198.18.0.53, 198.18.0.54:5353,[2001:2::53]:53, 2001:2::54")
    assert [(n.address, n.port) for n in got] == [("198.18.0.53", 53), ("198.18.0.54", 5353),
                                                 ("2001:2::53", 53), ("2001:2::54", 53)]
    for bad in ("ns1.example.test", "198.18.0.53:99999", "198.18.0.53:x"):
        with pytest.raises(ConfigError):
            parse_nameservers(bad)


def test_parse_rdap_registrant_and_abuse():
    doc = {"handle": "NET-198-51-100-0-1", "startAddress": "198.51.100.0", "endAddress": "198.51.100.255",
           "name": "EXAMPLE-NET", "entities": [
               {"roles": ["registrant"], "vcardArray": ["vcard", [["fn", {}, "text", "Example Hosting"]]]},
               {"roles": ["abuse"], "vcardArray": ["vcard", [["fn", {}, "text", "Abuse"],
                                                            ["email", {}, "text", "abuse@hosting.test"]]]}]}
    c = parse_rdap(doc, "198.51.100.25")
    assert (c.name, c.contact) == ("Example Hosting", "abuse@hosting.test")
    assert "198.51.100.0 - 198.51.100.255" in c.detail


def test_banner_name():
    assert banner_name("220 mail.example.test ESMTP Exim 4.96") == "mail.example.test"
    assert banner_name("220-first\n220 second ESMTP") == "second"
    assert banner_name("554 go away") is None


def test_spf_fix_records():
    from bot.dns.issues import spf_base, spf_host_first, spf_with_host

    # two records merged, none of their senders lost; a syntax error gives no base to build on
    assert spf_base(["v=spf1 include:a.test -all", "v=spf1 ip4:192.0.2.1 include:a.test ~all"], None) == (
        "v=spf1 include:a.test ip4:192.0.2.1 -all")
    assert spf_base(["v=spf1 foo:bar -all"], None) is False
    assert spf_base([], None) is None

    assert spf_with_host("v=spf1 mx +all", ["198.51.100.25"]) == "v=spf1 mx ip4:198.51.100.25 ~all"
    assert spf_with_host("v=spf1 a redirect=_spf.example.test", ["2001:db8::25"]) == (
        "v=spf1 a ip6:2001:db8::25 redirect=_spf.example.test")
    assert spf_with_host(None, ["198.51.100.25"]) == "v=spf1 ip4:198.51.100.25 ~all"
    assert spf_with_host("v=spf1 ip4:198.51.100.25 -all", ["198.51.100.25"]) == "v=spf1 ip4:198.51.100.25 -all"
    assert spf_host_first("v=spf1 include:a.test -all", ["198.51.100.25"]) == (
        "v=spf1 ip4:198.51.100.25 include:a.test -all")


async def test_mx_elsewhere_needs_the_host_addresses():
    from bot.dns.mx import check_mx

    r = StaticResolver({"example.test MX": ["10 mx.other.test."], "mx.other.test A": ["192.0.2.9"]})
    assert (await check_mx(r, "example.test", ["198.51.100.25"])).elsewhere is True
    assert (await check_mx(r, "example.test", [])).elsewhere is None  # `mailcheck dns DOMAIN`: no host
    r.records["example.test mx"] = "timeout"
    assert (await check_mx(r, "example.test", ["198.51.100.25"])).elsewhere is None


def test_ca_file_replaces_the_trust_store_and_never_disables_verification(tmp_path):
    import ssl

    from bot.dns.http import ssl_context

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "private CA")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(7).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(key, hashes.SHA256()))
    pem = tmp_path / "ca.pem"
    pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    ctx = ssl_context(pem)
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "private CA"),),)]
    for c in (ctx, ssl_context(None)):
        assert c.verify_mode == ssl.CERT_REQUIRED and c.check_hostname

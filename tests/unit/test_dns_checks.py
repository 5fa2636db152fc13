"""The dns and reputation steps' host side and findings, on captured exim output and a fake
resolver. (The whole Engine.check with real DNS: tests/lab/test_dns_engine.py.)"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.checks import mta_config, signers
from bot.checks.base import CheckContext, CheckInput
from bot.checks.dns import Dns, DnsResult, dns_facts, mail_domains, public_addresses
from bot.checks.reputation import Reputation
from bot.dns import dkim
from bot.dns.dnsbl import Listing
from bot.dns.domain import DnsContext, check_address, check_domain
from bot.models import Command, CommandResult
from bot.probes import PortProbe, ProbeReport, SmtpInfo
from tests.unit.dnsdata import StaticResolver

TRANSPORTS = (Path(__file__).parents[1] / "data" / "mta" / "exim4_-bP_transports_dkim.txt").read_text()
EXIM = "primary_hostname = mail.example.test\nqualify_domain = example.test\n" \
       "domainlist local_domains = @ : localhost : example.test\n"
KEY = "/etc/exim4/dkim/example.test.sel2026.key"


def res(*pairs) -> dict:
    out = {}
    for argv, rc, text, *err in pairs:
        out[argv] = CommandResult(Command(argv), rc, text, err[0] if err else "")
    return out


def pub(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


FIRST = res((mta_config.EXIM["exim4"], 0, EXIM), (mta_config.EXIM_TRANSPORTS["exim4"], 0, TRANSPORTS),
            (signers.OPENDKIM_CONF, 1, "", "cat: /etc/opendkim.conf: No such file or directory"),
            *((argv, 1, "") for argv in signers.RSPAMD_CONFS))


def test_signer_rounds_the_key_only_once_the_configuration_is_in():
    assert [c.argv for c in signers.commands({}, ["example.test"])] == [
        signers.OPENDKIM_CONF, *signers.RSPAMD_CONFS]
    second = [c.argv for c in signers.commands(FIRST, ["example.test"])]
    assert second[-1] == ("openssl", "pkey", "-pubout", "-in", KEY)  # the public half, derived there
    assert not any("cat" == a[0] and a[1].endswith(".key") for a in second)  # never the private key


def test_signer_key_read_missing_or_no_openssl():
    key = rsa.generate_private_key(65537, 1024)
    got = signers.read({**FIRST, **res((signers.pubkey_argv(KEY), 0, pub(key)))}, ["example.test"])
    [s] = got.signers
    assert (s.software, s.selector) == ("exim", "sel2026") and got.keys[KEY].startswith(b"-----BEGIN PUBLIC")
    missing = signers.read({**FIRST, **res((signers.pubkey_argv(KEY), 1, "",
                                            "Could not open file ... No such file or directory"))}, ["example.test"])
    assert missing.key_errors == {KEY: "no such file"}
    no_openssl = signers.read({**FIRST, **res((signers.pubkey_argv(KEY), 127, ""))}, ["example.test"])
    assert "openssl is not installed" in no_openssl.key_errors[KEY]
    assert signers.read({}, ["example.test"]).signers is None  # nothing read: unknown, not "unsigned"


def test_rspamd_signs_only_the_domains_it_has_a_key_for():
    conf = 'selector = "dkim";\npath = "${DBDIR}/dkim/$domain.$selector.key";\n'
    first = res((signers.OPENDKIM_CONF, 1, ""), (signers.RSPAMD_CONFS[0], 1, ""),
                (signers.RSPAMD_CONFS[1], 0, conf), (signers.RSPAMD_CONFS[2], 1, ""))
    have = "/var/lib/rspamd/dkim/example.test.dkim.key"
    keys = res((signers.pubkey_argv(have), 0, pub(rsa.generate_private_key(65537, 1024))),
               (signers.pubkey_argv("/var/lib/rspamd/dkim/example.org.dkim.key"), 1, "", "No such file"))
    got = signers.read({**first, **keys}, ["example.test", "example.org"])
    assert [(s.software, s.domain) for s in got.signers] == [("rspamd", "example.test")]
    assert got.key_errors == {}


def test_domains_named_or_from_the_mta_with_their_source():
    assert mail_domains(("example.org",), "--domain", FIRST) == [("example.org", "--domain")]
    assert mail_domains((), "", FIRST) == [("mail.example.test", "exim primary_hostname"),
                                           ("example.test", "exim qualify_domain")]
    assert mail_domains((), "", {}) == []


def inp(results=None, addresses=None, probes=None, lookups=None, address="198.18.7.2"):
    return CheckInput("mx7", address, results or {}, None, addresses=addresses or {"ipv4": address},
                      probes=probes, lookups=lookups)


def test_public_addresses_leave_out_private_ones():
    assert public_addresses(inp(addresses={"ipv4": "10.0.0.5", "ipv6": "2001:db8::25"})) == ["2001:db8::25"]
    assert public_addresses(inp(addresses={"ipv4": "198.18.7.2"})) == ["198.18.7.2"]


def test_facts_from_the_probe_and_the_mta():
    probe = PortProbe("ipv4", "198.18.7.2", 25, "open",
                      smtp=SmtpInfo(greeting="220 mail.example.test ESMTP Exim 4.96"))
    facts = dns_facts(inp(FIRST, probes=ProbeReport([probe])), ["example.test"])
    assert (facts.banner_name, facts.helo_name, facts.addresses) == (
        "mail.example.test", "mail.example.test", ["198.18.7.2"])
    assert [s.selector for s in facts.signers] == ["sel2026"] and facts.certificate is None
    assert dns_facts(inp(address=""), ["example.test"]).host is False  # a domain alone


async def test_findings_carry_zone_lines_and_who_changes_them():
    r = StaticResolver({"example.test MX": ["10 mail.example.test."], "mail.example.test A": ["198.18.9.9"],
                        "example.test NS": ["ns1.dns-provider.test."],
                        "example.test TXT": ["\"v=spf1 ip4:198.18.9.9 -all\""],
                        "7.7.18.198.in-addr.arpa PTR": ["mail.example.test."]})
    ctx = DnsContext(r)
    i = inp(FIRST)
    facts = dns_facts(i, ["example.test"])
    facts.signers = []
    result = DnsResult([("example.test", "the inventory")], facts, [await check_domain(ctx, "example.test", facts)],
                       [await check_address(ctx, "198.18.7.2", facts)])
    out = Dns().evaluate(inp(FIRST, lookups=result))
    by = {f.code: f for f in out.findings}
    assert by["dns.mx_elsewhere"].advice.startswith("the DNS provider of the zone example.test: dns-provider.test")
    spf = by["dns.spf_excludes_host"]
    assert spf.severity == "error" and spf.records == [
        'example.test. 3600 IN TXT "v=spf1 ip4:198.18.9.9 ip4:198.18.7.2 -all"']
    assert "dns.dkim_unsigned" in by and out.status == "fail"
    assert "domains: example.test (the inventory)" in out.evidence
    assert out.summary.startswith("example.test: ")


def test_no_domain_says_why():
    out = Dns().evaluate(inp(lookups=DnsResult([], dns_facts(inp(), []))))
    assert [f.code for f in out.findings] == ["dns.no_domain"]
    failed = CheckInput("mx7", "198.18.7.2", {}, None, ssh_error="AuthError: refused", lookups=DnsResult(
        [], dns_facts(inp(), [])))
    assert "SSH failed (AuthError: refused)" in Dns().evaluate(failed).findings[0].summary


def test_dkim_evidence_has_fingerprints_never_keys():
    key = rsa.generate_private_key(65537, 1024)
    text = pub(key)
    rep = dkim.DkimReport("example.test", "sel2026", record=dkim.record_for(text.encode()))
    rep.key = dkim.parse_record(rep.record)
    from bot.dns.report import _dkim

    facts = dns_facts(inp(FIRST), ["example.test"])
    line = _dkim(type("R", (), {"dkim": [rep]})(), facts)[0]
    assert "sha256:" in line and rep.record.split("p=")[1][:20] not in line


def test_reputation_findings_one_per_listing_and_one_per_zone_that_cannot_be_asked():
    listings = [Listing("bl.test", "198.18.7.2", "listed", ("127.0.0.2",), "spam trap hit"),
                Listing("blocked.test", "198.18.7.2", "cannot_check", ("127.255.255.254",), "refused"),
                Listing("blocked.test", "2001:2::7", "cannot_check", ("127.255.255.254",), "refused")]
    out = Reputation().evaluate(inp(lookups=(["198.18.7.2", "2001:2::7"], listings)))
    assert [(f.code, f.severity) for f in out.findings] == [("dnsbl.listed", "error"),
                                                           ("dnsbl.cannot_check", "warning")]
    assert "198.18.7.2, 2001:2::7 in blocked.test" in out.findings[1].summary
    assert out.summary == "listed: 198.18.7.2 in bl.test; cannot check blocked.test"
    assert Reputation().evaluate(inp(lookups=([], []))).status == "skipped"


def test_lookups_need_settings():
    assert Dns().lookups(CheckContext()) is None
    assert Dns().evaluate(inp()).status == "skipped"


def test_helo_advice_never_puts_a_hostile_ptr_name_in_a_shell_command():
    """A PTR name is the address owner's text: dnspython leaves ' and & as they are, so a
    forward-confirmed name x'&&reboot&&'.evil.test made the advice
    echo 'REMOTE_SMTP_HELO_DATA = x'&&reboot&&'.evil.test' >> ... (a command to paste)."""
    from bot.checks.dns import helo_advice
    from bot.dns.domain import AddressReport
    from bot.dns.mx import PtrReport

    def advice(name: str) -> str:
        ptr = PtrReport("198.18.7.2", [name], [name])
        return helo_advice(inp(FIRST), [AddressReport("198.18.7.2", ptr, False, False)])

    assert "REMOTE_SMTP_HELO_DATA = mail.example.test" in advice("mail.example.test") or \
        "helo_data = mail.example.test" in advice("mail.example.test")
    assert advice("x'&&reboot&&'.evil.test") == ""

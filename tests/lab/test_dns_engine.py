"""The whole Engine.check with real DNS: a lab host (real sshd, Debian's exim configured
the Debian way: its own /etc/exim4 with exim4.conf.localmacros, update-exim4.conf, the
init script; tests/eximlab.py) whose resolver is the DNS lab's, and mailcheck asking the
same lab resolver (MAILCHECK_RESOLVERS). Each situation both ways, as the report shows it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bot.checks.registry import all_checks
from bot.dns.dane import tlsa_for
from bot.dns.dkim import fingerprint, public_of, record_for
from bot.engine import Engine
from bot.models import Report
from config.inventory import Host, Inventory
from config.settings import Settings
from tests.dnslab import Zone, standard_dnsbl
from tests.eximlab import EximHost
from tests.lab.dnsworld import DOMAIN, ptr_zone, world
from tests.labhost import _run

pytestmark = pytest.mark.lab
ROOT = Path(__file__).parents[2]
MAIL = f"mail.{DOMAIN}"
EXIM_MACROS = f"MAIN_HARDCODE_PRIMARY_HOSTNAME = {MAIL}\nMAIN_QUALIFY_DOMAIN = {DOMAIN}\n"
DKIM_MACROS = ("DKIM_DOMAIN = ${lc:${domain:$h_from:}}\nDKIM_SELECTOR = sel2026\n"
               "DKIM_PRIVATE_KEY = /etc/exim4/dkim/${dkim_domain}.${dkim_selector}.key\n")


@pytest.fixture
def settings(dnslab, monkeypatch):
    """mailcheck pointed at the DNS lab, MAILCHECK_RESOLVERS as a user sets it."""
    monkeypatch.setenv("MAILCHECK_RESOLVERS", dnslab.resolver)
    # no port of these hosts is filtered: a long probe timeout costs nothing and lets the
    # SMTP dialog and STARTTLS finish on a loaded machine
    return Settings(_env_file=None, probe_timeout=5, connect_timeout=5, dns_timeout=3,
                    ca_file=dnslab.ca_file, rdap_url="https://rdap.lab.test/",
                    dnsbl_zones="bl.test,blocked.test")


def host_of(lab, domains=(DOMAIN,)) -> Host:
    return Host(name=f"mx{lab.index}", address=lab.ip, identity_file=lab.client_key,
                known_hosts=lab.known_hosts, domains=list(domains))


async def check(settings, lab, **kw) -> Report:
    return await Engine(settings, Inventory()).check(host_of(lab, **kw.pop("host", {})), **kw)


def by_code(report: Report) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in report.findings:
        out.setdefault(f.code, []).append(f)
    return out


def step(report: Report, name: str):
    return next(s for s in report.steps if s.name == name)


def zone(lab, extra: str = "", mx: str = "mail", spf: str = "v=spf1 mx -all") -> Zone:
    return Zone(DOMAIN, f"@ MX 10 {mx}\nmail A {lab.ip}\nother A 198.18.0.9\n@ TXT \"{spf}\"\n"
                        f'_dmarc TXT "v=DMARC1; p=reject"\n{extra}', signed=False)


def debian_exim(host, macros: str, before_start=None) -> Path:
    """The host's exim, the Debian way: every interface, `macros` in its
    exim4.conf.localmacros, then update-exim4.conf and the init script. Returns the
    host's /etc/exim4 as seen from here."""
    exim = EximHost(host).setup(dc_local_interfaces="")
    etc = host.etc / "exim4"
    (etc / "exim4.conf.localmacros").write_text(macros)
    if before_start is not None:
        before_start(etc)
    exim.start()
    return etc


@pytest.fixture
def mx(dnshost):
    """A lab host whose exim says it is mail.example.test (Debian's macros)."""
    host = dnshost(ipv6=False)
    debian_exim(host, EXIM_MACROS)
    return host


async def test_mx_spf_and_dmarc_here_and_elsewhere(dnslab, mx, settings):
    world(dnslab, zone(mx), ptr_zone(mx.ip, MAIL))
    good = await check(settings, mx)
    codes = by_code(good)
    assert not {"dns.mx_elsewhere", "dns.spf_excludes_host", "dns.dmarc_fails", "dns.ptr_mismatch"} & set(codes)
    assert f"domains: {DOMAIN} (the inventory)" in step(good, "dns").evidence
    assert f"{mx.ip}: pass (mx" in step(good, "dns").evidence

    # another host receives the mail, and SPF names only that host: DMARC (p=reject) fails
    world(dnslab, zone(mx, mx="other", spf="v=spf1 ip4:198.18.0.9 -all"), ptr_zone(mx.ip, MAIL))
    bad = await check(settings, mx)
    codes = by_code(bad)
    [elsewhere] = codes["dns.mx_elsewhere"]
    assert "198.18.0.9" in elsewhere.summary and "dns-provider.test" in elsewhere.advice
    [spf] = codes["dns.spf_excludes_host"]
    assert spf.severity == "error" and spf.records == [
        f'{DOMAIN}. 3600 IN TXT "v=spf1 ip4:198.18.0.9 ip4:{mx.ip} -all"']
    assert codes["dns.dmarc_fails"][0].severity == "error"
    assert step(bad, "dns").status == "fail" and bad.exit_code == 1


async def test_ptr_mismatch_with_the_banner_and_helo_exim_really_uses(dnslab, mx, settings):
    world(dnslab, zone(mx, "smtp A " + mx.ip), ptr_zone(mx.ip, f"smtp.{DOMAIN}"))
    report = await check(settings, mx)
    mismatch = by_code(report)["dns.ptr_mismatch"]
    assert sorted(f.summary.split(f" {MAIL}")[0] for f in mismatch) == ["The HELO name", "The SMTP banner"]
    helo = next(f for f in mismatch if "HELO" in f.summary)
    assert f"REMOTE_SMTP_HELO_DATA = smtp.{DOMAIN}" in helo.advice  # the exact change, on the host
    assert helo.records == [f"2.{mx.index}.18.198.in-addr.arpa. 3600 IN PTR {MAIL}."]
    # the same host once the PTR names what exim says
    world(dnslab, zone(mx), ptr_zone(mx.ip, MAIL))
    assert "dns.ptr_mismatch" not in by_code(await check(settings, mx))


async def test_dkim_key_from_the_hosts_exim_config_matches_or_not(dnslab, dnshost, settings):
    host = dnshost(ipv6=False)
    etc = debian_exim(host, EXIM_MACROS + DKIM_MACROS, before_start=_dkim_keys)
    key, other = etc / "dkim" / f"{DOMAIN}.sel2026.key", etc / "dkim" / "stale.key"
    host_pub, stale_pub = _public(key), _public(other)

    def dkim_zone(pub: bytes) -> Zone:
        txt = record_for(pub)
        return zone(host, "sel2026._domainkey TXT " + " ".join(f'"{txt[i:i + 200]}"' for i in range(0, len(txt), 200)))

    world(dnslab, dkim_zone(stale_pub), ptr_zone(host.ip, MAIL))
    report = await check(settings, host)
    [bad] = by_code(report)["dns.dkim_key_mismatch"]
    assert bad.severity == "error" and f"sel2026._domainkey.{DOMAIN}" in bad.summary
    assert fingerprint(public_of(host_pub)[1]) in bad.evidence and fingerprint(public_of(stale_pub)[1]) in bad.evidence
    assert bad.records and record_for(host_pub) == "".join(bad.records[0].split('"')[1::2])
    text = report.model_dump_json()
    for pem in (key, other):  # no private key material anywhere in the report
        body = "".join(pem.read_text().splitlines()[1:-1])
        assert body[:40] not in text and body[-40:] not in text

    world(dnslab, dkim_zone(host_pub), ptr_zone(host.ip, MAIL))
    good = await check(settings, host)
    assert not {"dns.dkim_key_mismatch", "dns.dkim_unsigned"} & set(by_code(good))
    assert "host key sha256:" in step(good, "dns").evidence and "matches" in step(good, "dns").evidence

    key.unlink()  # the signer names a key that is not there: exim sends unsigned
    gone = await check(settings, host)
    [unreadable] = by_code(gone)["dns.dkim_key_unreadable"]
    assert "no such file" in unreadable.summary


def _dkim_keys(etc: Path) -> None:
    """The signing key the macros name, and the key of an earlier rollover (no longer used)."""
    (etc / "dkim").mkdir()
    for name in (f"{DOMAIN}.sel2026.key", "stale.key"):
        _run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", str(etc / "dkim" / name))


def _public(path: Path) -> bytes:
    """What `openssl pkey -pubout` prints for the key (the test reads it directly)."""
    out = subprocess.run(["openssl", "pkey", "-pubout", "-in", str(path)], capture_output=True, check=True)
    return out.stdout


async def test_dnsbl_listed_and_cannot_check(dnslab, mx, settings):
    listed = {mx.ip: ("127.0.0.4", f"Listed: spam from {mx.ip} at the lab trap")}
    world(dnslab, zone(mx), ptr_zone(mx.ip, MAIL), dnsbl=standard_dnsbl(listed))
    report = await check(settings, mx)
    codes = by_code(report)
    [hit] = codes["dnsbl.listed"]
    assert hit.severity == "error" and f"{mx.ip} is listed in bl.test (127.0.0.4)" in hit.summary
    assert "at the lab trap" in hit.summary
    [blocked] = codes["dnsbl.cannot_check"]
    assert "blocked.test" in blocked.summary and "127.255.255" in blocked.summary
    assert step(report, "reputation").summary == f"listed: {mx.ip} in bl.test; cannot check blocked.test"
    assert report.exit_code == 1

    world(dnslab, zone(mx), ptr_zone(mx.ip, MAIL), dnsbl=standard_dnsbl())
    clean = await check(settings, mx, steps=["reputation"])
    assert [s.name for s in clean.steps] == ["reputation"]
    assert "dnsbl.listed" not in by_code(clean) and "not listed" in step(clean, "reputation").summary


async def test_tlsa_against_the_certificate_the_real_exim_serves(dnslab, dnshost, settings):
    host = dnshost(ipv6=False)
    tls = host.exim_tls_cert(MAIL)
    debian_exim(host, EXIM_MACROS + f"MAIN_TLS_ENABLE = yes\nMAIN_TLS_CERTIFICATE = {tls / 'cert.pem'}\n"
                                    f"MAIN_TLS_PRIVATEKEY = {tls / 'key.pem'}\n")
    served = tlsa_for(_der(tls / "cert.pem")).text()
    stale = "3 1 1 " + "ab" * 32

    def signed(tlsa: str) -> Zone:
        z = zone(host, f"_25._tcp.mail TLSA {tlsa}")
        return Zone(z.name, z.body, signed=True)

    world(dnslab, signed(served), ptr_zone(host.ip, MAIL))
    good = await check(settings, host)
    assert "dns.dane_mismatch" not in by_code(good)
    assert f"DANE {MAIL}: match (DNSSEC-validated)" in step(good, "dns").evidence

    world(dnslab, signed(stale), ptr_zone(host.ip, MAIL))  # a rollover that left TLSA behind
    bad = await check(settings, host)
    [mismatch] = by_code(bad)["dns.dane_mismatch"]
    assert mismatch.records == [f"_25._tcp.{MAIL}. 3600 IN TLSA {served}"]
    assert bad.exit_code == 1


def _der(pem: Path) -> bytes:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(serialization.Encoding.DER)


async def test_without_a_named_domain_the_mtas_domains_are_checked_and_said(dnslab, mx, settings):
    world(dnslab, zone(mx), ptr_zone(mx.ip, MAIL))
    report = await check(settings, mx, host={"domains": ()})
    evidence = step(report, "dns").evidence
    assert (f"domains: {MAIL} (exim primary_hostname), {DOMAIN} (exim qualify_domain), "
            "mx.lab.test (exim local_domains)") in evidence  # eximlab's dc_other_hostnames
    # --domain replaces them
    other = await check(settings, mx, host={"domains": ()}, domains=["example.org"])
    assert "domains: example.org (--domain)" in step(other, "dns").evidence


def test_mailcheck_dns_domain_alone_on_the_command_line(dnslab):
    world(dnslab, Zone(DOMAIN, '@ MX 10 mail\nmail A 198.18.0.25\n@ TXT "v=spf1 +all"', signed=False))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MAILCHECK_")},
           "MAILCHECK_RESOLVERS": dnslab.resolver, "MAILCHECK_DNS_TIMEOUT": "3",
           "MAILCHECK_CA_FILE": str(dnslab.ca_file)}
    r = subprocess.run([sys.executable, "-m", "bot.cli", "dns", DOMAIN, "--json"], capture_output=True,
                       text=True, timeout=60, env=env, cwd=ROOT)
    report = json.loads(r.stdout)
    assert r.returncode == 1 and report["host"] == DOMAIN and report["ports"] == []
    assert [s["name"] for s in report["steps"]] == ["dns"]
    codes = {f["code"] for f in report["findings"]}
    assert "dns.spf_plus_all" in codes and "dns.dmarc_missing" in codes
    assert "dns.mx_elsewhere" not in codes  # no host to compare with


async def test_a_silent_resolver_adds_at_most_one_timeout(dnslab, mx, settings, monkeypatch):
    silent = f"198.18.{dnslab.index}.99"  # routed to the DNS lab, where no one has it: no answer
    monkeypatch.setenv("MAILCHECK_RESOLVERS", silent)
    quiet = settings.model_copy(update={"resolvers": silent, "dns_timeout": 2.0})
    part1 = [c for c in all_checks() if c.name not in ("dns", "reputation")]
    t0 = time.monotonic()
    await Engine(quiet, Inventory(), checks=part1).check(host_of(mx))  # the same check without DNS
    without = time.monotonic() - t0
    t0 = time.monotonic()
    report = await Engine(quiet, Inventory()).check(host_of(mx))
    elapsed = time.monotonic() - t0
    assert step(report, "dns").status == "warn" and "dns.lookup_failed" in by_code(report)
    assert "dns.mx_elsewhere" not in by_code(report)  # no verdict rests on a failed lookup
    assert elapsed < without + 2.0 + 0.5, (elapsed, without)  # one DNS timeout, at most

"""Pure parts of the probes (certificate, SMTP reply framing) and the terminal renderer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot.models import Finding, Fix, PortStatus, Report, StepResult
from bot.probes import describe_certificate, read_reply
from bot.render.terminal import progress_line, render


def _cert(cn: str, issuer_cn: str, days: int, san: list[str]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
               .public_key(key.public_key()).serial_number(7)
               .not_valid_before(now - timedelta(days=400)).not_valid_after(now + timedelta(days=days))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), False))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_self_signed_certificate_is_reported_not_failed():
    info = describe_certificate(_cert("mx.lab.test", "mx.lab.test", 30, ["mx.lab.test", "imap.lab.test"]))
    assert info.error is None and info.self_signed
    assert info.names == ("mx.lab.test", "imap.lab.test")
    assert not info.expired(datetime.now(UTC))


def test_expired_ca_issued_certificate():
    info = describe_certificate(_cert("mx.lab.test", "Some CA", -1, ["mx.lab.test"]))
    assert not info.self_signed and info.expired(datetime.now(UTC))
    assert describe_certificate(None).error == "no certificate presented"
    assert describe_certificate(b"junk").error.startswith("unreadable certificate")


def test_read_reply_stops_at_the_last_line_of_a_multiline_reply():
    async def run():
        reader = asyncio.StreamReader()
        reader.feed_data(b"250-mx.lab.test\r\n250-SIZE 52428800\r\n250-STARTTLS\r\n250 HELP\r\n221 bye\r\n")
        return await read_reply(reader)

    assert asyncio.run(run()) == ["250-mx.lab.test", "250-SIZE 52428800", "250-STARTTLS", "250 HELP"]


def test_terminal_report():
    report = Report(host="mx1", address="198.18.1.2", steps=[
        StepResult(name="services", status="error", summary="could not run",
                   error="host mx1 step services: AuthError: refused")],
        ports=[PortStatus(port=25, direction="inbound", outside="filtered", listening="public",
                          process="exim4", firewall="block", blocked_by="-A INPUT -j DROP")],
        findings=[Finding(code="firewall.inbound_blocked", severity="error", summary="25 blocked",
                          evidence="-A INPUT -j DROP", fixes=["fw-1"])],
        fixes=[Fix(id="fw-1", kind="firewall", summary="allow 25",
                   commands=[["iptables", "-D", "INPUT", "1"]], rollback=[])])
    text = render(report)
    assert "mail cannot flow" in text
    assert "host mx1 step services: AuthError: refused" in text
    assert "filtered" in text and "<- -A INPUT -j DROP" in text
    assert "$ iptables -D INPUT 1" in text and "rollback: none" in text
    assert progress_line(report.steps[0]).startswith("[ERR ] services: could not run")

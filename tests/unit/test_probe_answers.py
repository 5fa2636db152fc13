"""What came back to the probes, on captured kernel bytes and real loopback sockets (issue 15).

The error-queue samples are `recvmsg(MSG_ERRQUEUE)` control messages captured in the lab
(tests/lab/test_probe_answers.py builds the same situations): (cmsg level, type, data hex).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from datetime import UTC, datetime

import pytest

from bot import icmp
from bot.checks.answers import attribute, plaintext_finding, slow_greeting
from bot.checks.conclusion import Conclusion
from bot.checks.ports import Ports
from bot.models import IcmpAnswer
from bot.probes import PortProbe, ProbeReport, SmtpInfo, TlsInfo, classify_failure, tls_handshake
from tests.unit.checkdata import base_ports, make_input
from tests.unit.test_checks import OK

# iptables -j REJECT --reject-with icmp-host-prohibited, in the host 198.18.2.2
HOST_PROHIBITED_V4 = (0, 11, "7100000002030a00000000000000000002000000c61202020000000000000000")
# iptables -j REJECT (default: icmp-port-unreachable); the connect fails with ECONNREFUSED, as for a RST
PORT_UNREACH_V4 = (0, 11, "6f00000002030300000000000000000002000000c61202020000000000000000")
# ip6tables -j REJECT --reject-with icmp6-adm-prohibited, in the host 2001:2:0:2::2
ADM_PROHIBITED_V6 = (41, 25, "0d0000000301010000000000000000000a000000000000002001000200000002"
                             "000000000000000200000000")
# a router namespace (198.18.2.2 toward the prober) in FORWARD: --reject-with icmp-net-prohibited
ROUTER_NET_PROHIBITED_V4 = (0, 11, "6500000002030900000000000000000002000000c61202020000000000000000")
# our own kernel: no ARP answer for 198.18.2.130 on the prober's link (source 198.18.2.1)
OWN_HOST_UNREACH_V4 = (0, 11, "7100000002030100000000000000000002000000c61202010000000000000000")


def parse(sample: tuple[int, int, str]) -> icmp.IcmpError:
    level, kind, data = sample
    return icmp.parse(level, kind, bytes.fromhex(data))


def test_sock_extended_err_parsed_from_real_bytes():
    assert parse(HOST_PROHIBITED_V4) == icmp.IcmpError("ipv4", 3, 10, "198.18.2.2", 113)
    assert parse(PORT_UNREACH_V4) == icmp.IcmpError("ipv4", 3, 3, "198.18.2.2", 111)
    assert parse(ADM_PROHIBITED_V6) == icmp.IcmpError("ipv6", 1, 1, "2001:2:0:2::2", 13)
    assert parse(ROUTER_NET_PROHIBITED_V4) == icmp.IcmpError("ipv4", 3, 9, "198.18.2.2", 101)
    names = [parse(s).name for s in (HOST_PROHIBITED_V4, PORT_UNREACH_V4, ADM_PROHIBITED_V6,
                                     ROUTER_NET_PROHIBITED_V4, OWN_HOST_UNREACH_V4)]
    assert names == ["host-prohibited", "port-unreachable", "admin-prohibited", "net-prohibited",
                     "host-unreachable"]
    assert parse(HOST_PROHIBITED_V4).describe() == \
        "ICMP host-prohibited (type 3 code 10) from 198.18.2.2"
    assert parse(ADM_PROHIBITED_V6).describe().startswith("ICMPv6 admin-prohibited (type 1 code 1)")


def test_not_an_icmp_error():
    level, kind, data = HOST_PROHIBITED_V4
    raw = bytearray.fromhex(data)
    raw[4] = 1  # SO_EE_ORIGIN_LOCAL: e.g. a local MTU error, not an answer from the network
    assert icmp.parse(level, kind, bytes(raw)) is None
    assert icmp.parse(level, kind, bytes.fromhex(data)[:10]) is None  # truncated
    assert icmp.parse(socket.SOL_SOCKET, 1, bytes.fromhex(data)) is None  # another cmsg
    unnamed = bytes.fromhex(data)[:16] + b"\x00" * 16  # offender AF_UNSPEC
    assert icmp.parse(level, kind, unnamed).sender is None


def test_classify_failure():
    refused = ConnectionRefusedError(111, "refused")
    assert classify_failure(refused, None, "198.18.2.1") == ("refused", "Connection refused")
    assert classify_failure(refused, parse(PORT_UNREACH_V4), "198.18.2.1") == (
        "rejected", "ICMP port-unreachable (type 3 code 3) from 198.18.2.2")
    own = classify_failure(OSError(113, "x"), parse(OWN_HOST_UNREACH_V4), "198.18.2.1")
    assert own[0] == "error" and own[1].startswith("this machine's own kernel answered ICMP host-unreachable")
    assert classify_failure(OSError(101, "x"), None, None) == ("error", "Network is unreachable")
    ttl = icmp.IcmpError("ipv4", 11, 0, "198.18.9.1")
    assert classify_failure(OSError(113, "x"), ttl, "198.18.2.1") == (
        "error", "ICMP time-exceeded (type 11 code 0) from 198.18.9.1")


def _probe(state="rejected", err=None, address="198.18.2.2", source="198.18.2.1", **kw) -> PortProbe:
    return PortProbe("ipv4", address, kw.pop("port", 25), state, source, icmp=err, **kw)


def test_attribute_host_path_prober():
    host = attribute(_probe(err=parse(HOST_PROHIBITED_V4)))
    assert host == IcmpAnswer(type=3, code=10, name="host-prohibited", sender="198.18.2.2", by="host")
    # the same sender seen through another probed address: one of the host's own addresses
    other = _probe(err=parse(HOST_PROHIBITED_V4), address="198.18.7.2")
    assert attribute(other).by == "path"
    assert attribute(other, ["127.0.0.1", "198.18.2.2"]).by == "host"
    assert attribute(_probe("error", parse(OWN_HOST_UNREACH_V4))).by == "prober"
    v6 = _probe(err=parse(ADM_PROHIBITED_V6), address="2001:2:0:2:0::2", source="2001:2:0:2::1")
    assert attribute(v6).by == "host"  # compared as addresses, not strings
    assert attribute(_probe(err=icmp.IcmpError("ipv4", 3, 13, None))).by == "unknown"
    assert attribute(_probe("refused")) is None


def _ports_step(*probes: PortProbe):
    return Ports().evaluate(make_input(probes=ProbeReport(list(probes), {"ipv4": "198.18.2.1"}),
                                     ports=base_ports(("ipv4",))))


def test_ports_step_reports_who_rejected():
    out = _ports_step(_probe(err=parse(HOST_PROHIBITED_V4)),
                      _probe(err=icmp.IcmpError("ipv4", 3, 9, "198.18.7.1", 101), port=587),
                      _probe("refused", port=465))
    assert out.ports[("inbound", "ipv4", 25)].icmp.by == "host"
    assert out.ports[("inbound", "ipv4", 587)].icmp.by == "path"
    got = [(f.code, f.severity, f.summary) for f in out.findings]
    assert got == [
        ("port.rejected", "error", "Port 25/IPv4 is rejected by the host itself (198.18.2.2, ICMP "
                                   "host-prohibited): its firewall rejects it"),
        ("port.refused", "warning", "Port 465/IPv4 refuses connections from outside"),
        ("port.rejected", "warning", "Port 587/IPv4 is rejected before it reaches the host: 198.18.7.1, "
                                     "a router on the path from here (not the host), answered ICMP "
                                     "net-prohibited")]
    assert out.status == "fail" and out.summary == "1 refused, 2 rejected"


def _rejected(by: str):
    return {"outside": "rejected", "firewall": "allow", "listening": "public",
            "icmp": IcmpAnswer(type=3, code=9, name="net-prohibited", sender="198.18.7.1", by=by)}


def test_conclusion_path_reject_is_a_block_outside_the_host():
    p = base_ports(("ipv4",))
    p[("inbound", "ipv4", 25)] = p[("inbound", "ipv4", 25)].model_copy(update=_rejected("path"))
    out = Conclusion().evaluate(make_input(ports=p, prior=OK))
    assert [f.code for f in out.findings] == ["provider.port_blocked"]
    assert "a router on the way, 198.18.7.1 answers ICMP net-prohibited" in out.findings[0].summary
    assert "no SYN arrives" not in out.findings[0].summary
    for by in ("host", "prober", "unknown"):
        p[("inbound", "ipv4", 25)] = p[("inbound", "ipv4", 25)].model_copy(update=_rejected(by))
        assert Conclusion().evaluate(make_input(ports=p, prior=OK)).findings == [], by


def smtp(lines: list[str], times: list[float]) -> PortProbe:
    info = SmtpInfo("\n".join(lines), starttls=True, line_times=tuple(times), greeting_time=times[-1])
    return PortProbe("ipv4", "198.18.2.2", 25, "open", "198.18.2.1", smtp=info)


def test_slow_greeting_kinds():
    assert slow_greeting(smtp(["220 mx ESMTP"], [0.4])) is None
    pre = slow_greeting(smtp(["220-mx.lab.test ESMTP", "220 mx.lab.test ESMTP Postfix"], [0.01, 6.02]))
    assert (pre.kind, round(pre.seconds, 2)) == ("pregreet", 6.02) and "postscreen" in pre.cause
    tarpit = slow_greeting(smtp(["220-a", "220-b", "220-c", "220 d"], [1.0, 2.1, 3.2, 4.3]))
    assert tarpit.kind == "trickle" and "tarpit" in tarpit.cause
    dns = slow_greeting(smtp(["220 vm ESMTP Exim 4.96"], [10.02]))
    assert dns.kind == "silence" and "sent nothing for 10.0 s" in dns.cause and "reverse DNS" in dns.cause
    tls = PortProbe("ipv4", "198.18.2.2", 993, "open", tls=TlsInfo(handshake_time=9.5))
    assert slow_greeting(tls).kind == "silence"
    never = PortProbe("ipv4", "198.18.2.2", 25, "open", smtp=SmtpInfo(error="no complete greeting",
                                                                       line_times=()))
    assert slow_greeting(never) is None  # not slow: absent, and reported as such


def test_slow_greeting_is_not_a_failure():
    out = _ports_step(smtp(["220 vm ESMTP Exim 4.96"], [10.02]))
    assert [(f.code, f.severity) for f in out.findings] == [("port.slow_greeting", "warning")]
    assert out.ports[("inbound", "ipv4", 25)].greeting_time == 10.02
    assert out.ports[("inbound", "ipv4", 25)].greeting_wait == "silence"  # for a later step
    pre = _ports_step(smtp(["220-mx ESMTP", "220 mx ESMTP Postfix"], [0.01, 6.02]))
    assert [(f.code, f.severity) for f in pre.findings] == [("port.slow_greeting", "info")]
    assert pre.findings[0].evidence == "+0.01s 220-mx ESMTP\n+6.02s 220 mx ESMTP Postfix"


def test_plain_smtp_on_465_names_the_setting():
    p = PortProbe("ipv4", "198.18.2.2", 465, "open", tls=TlsInfo(
        error="plain text where a TLS handshake was expected", plaintext="220 vm ESMTP Exim 4.96"))
    exim = base_ports(("ipv4",))[("inbound", "ipv4", 465)].model_copy(update={"process": "exim4"})
    f = plaintext_finding(p, "465/IPv4", exim)
    assert f.code == "tls.plaintext" and "RFC 8314" in f.summary
    assert "tls_on_connect_ports = 465" in f.summary and "smtpd_tls_wrappermode" not in f.summary
    unknown = plaintext_finding(p, "465/IPv4", None).summary
    assert "tls_on_connect_ports" in unknown and "smtpd_tls_wrappermode" not in unknown  # the banner
    postfix = PortProbe("ipv4", "198.18.2.2", 465, "open", tls=TlsInfo(plaintext="220 mx ESMTP Postfix"))
    pf = plaintext_finding(postfix, "465/IPv4", None).summary
    assert "smtpd_tls_wrappermode=yes" in pf and "tls_on_connect_ports" not in pf
    anon = PortProbe("ipv4", "198.18.2.2", 465, "open", tls=TlsInfo(plaintext="220 mail ESMTP"))
    both = plaintext_finding(anon, "465/IPv4", None).summary
    assert "tls_on_connect_ports" in both and "smtpd_tls_wrappermode" in both  # both, honestly
    out = _ports_step(p)
    assert [f.code for f in out.findings] == ["tls.plaintext"]  # not tls.handshake_failed
    assert out.ports[("inbound", "ipv4", 465)].plaintext == "220 vm ESMTP Exim 4.96"  # typed, for a fix


@pytest.fixture
def cert_files(tmp_path):
    """A self-signed certificate for a loopback TLS server (openssl, as the lab's dovecot uses)."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "30", "-subj", "/CN=mx.lab.test", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def _client(port: int) -> TlsInfo:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await tls_handshake(ctx, reader, writer, time.monotonic())
    finally:
        writer.close()


async def test_tls_handshake_by_hand_reads_the_certificate(cert_files):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*map(str, cert_files))
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, ssl=ctx)
    async with server:
        info = await _client(server.sockets[0].getsockname()[1])
    assert info.error is None and info.plaintext is None
    assert info.names == ("mx.lab.test",) and info.self_signed and info.version.startswith("TLS")
    assert 0 <= info.handshake_time < 5 and not info.expired(datetime.now(UTC))


async def test_tls_handshake_sees_plain_smtp():
    async def greet(reader, writer):
        await asyncio.sleep(0.3)
        writer.write(b"220 vm ESMTP Exim 4.96 ready\r\n")
        await writer.drain()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    async with server:
        info = await _client(server.sockets[0].getsockname()[1])
    assert info.plaintext == "220 vm ESMTP Exim 4.96 ready"
    assert 0.3 <= info.handshake_time < 3


def test_verification_does_not_count_an_icmp_reject_as_let_through():
    """iptables' default REJECT answers ICMP port-unreachable: the kernel says ECONNREFUSED, as for
    a RST. Read from the error queue it is `rejected`, and a fix is not verified by it."""
    from bot.fixes.verify import compare
    from bot.models import Fix, PortKey, PortStatus

    fix = Fix(id="f", kind="firewall", summary="open 25", commands=[["true"]],
              expected_allow=[PortKey("inbound", "ipv4", 25)])
    state, _ = classify_failure(ConnectionRefusedError(111, "x"), parse(PORT_UNREACH_V4), "198.18.2.1")
    result = compare(fix, [PortStatus(port=25, direction="inbound", outside=state)])
    assert state == "rejected" and not result.achieved and result.missing == ["inbound ipv4 25: rejected"]

"""Outside probes: what the internet sees of a host's mail ports.

Every probe of a host runs at once (asyncio), so a host with every port
filtered costs about one probe timeout, not one per port. Per port: a TCP
connect (open / refused / filtered / error), then on 25/587 the SMTP greeting
and EHLO (is STARTTLS offered?), on 465/993 a TLS handshake and the
certificate (names, expiry; a self-signed one is reported, not failed).

Each probe records the local source address it used (getsockname): the
firewall verdict is computed for that source. For a port that never
answered, the source is the one the kernel's route picks (a UDP connect,
which sends no packet).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.models import Family, Outside

SMTP_PORTS = (25, 587)
TLS_PORTS = (465, 993)


@dataclass(frozen=True)
class SmtpInfo:
    greeting: str = ""
    ehlo: tuple[str, ...] = ()
    starttls: bool = False
    error: str | None = None
    tls: TlsInfo | None = None   # after STARTTLS: the certificate the port serves


@dataclass(frozen=True)
class TlsInfo:
    version: str = ""
    subject: str = ""
    issuer: str = ""
    names: tuple[str, ...] = ()
    not_after: datetime | None = None
    self_signed: bool = False
    error: str | None = None
    der: bytes | None = field(default=None, repr=False)   # the leaf certificate (DANE matches it)

    def expired(self, now: datetime) -> bool:
        return self.not_after is not None and self.not_after < now


@dataclass(frozen=True)
class PortProbe:
    family: Family
    address: str
    port: int
    state: Outside
    source: str | None = None
    elapsed: float = 0.0
    error: str | None = None
    smtp: SmtpInfo | None = None
    tls: TlsInfo | None = None


@dataclass
class ProbeReport:
    probes: list[PortProbe] = field(default_factory=list)
    sources: dict[str, str | None] = field(default_factory=dict)  # family -> source address

    def get(self, family: str, port: int) -> PortProbe | None:
        return next((p for p in self.probes if p.family == family and p.port == port), None)

    def merge(self, other: ProbeReport) -> ProbeReport:
        return ProbeReport(self.probes + other.probes, {**self.sources, **other.sources})


def route_source(address: str) -> str | None:
    """The local address the kernel would use to reach `address` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((address, 9))
            return s.getsockname()[0]
    except OSError:
        return None


class Prober:
    """Probes a host's ports from here. `timeout` bounds each connect and each dialog."""

    def __init__(self, timeout: float = 4.0, ehlo_name: str = "mailcheck.invalid") -> None:
        self.timeout = timeout
        self.ehlo_name = ehlo_name

    async def probe(self, family: Family, address: str, ports: Sequence[int]) -> ProbeReport:
        """Probe every port of one address concurrently."""
        done = await asyncio.gather(*(self.probe_port(family, address, p) for p in ports),
                                    return_exceptions=True)
        probes = [p if isinstance(p, PortProbe) else
                  PortProbe(family, address, port, "error", error=f"probe failed: {p!r}")
                  for port, p in zip(ports, done, strict=True)]
        for p in done:
            if isinstance(p, BaseException) and not isinstance(p, Exception):
                raise p  # cancellation and the like are not probe results
        sources = {p.source for p in probes if p.source}
        source = sources.pop() if len(sources) == 1 else route_source(address)
        return ProbeReport(list(probes), {family: source})

    async def probe_port(self, family: Family, address: str, port: int) -> PortProbe:
        start = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), self.timeout)
        except ConnectionRefusedError:
            return PortProbe(family, address, port, "refused", route_source(address),
                             time.monotonic() - start)
        except TimeoutError:
            return PortProbe(family, address, port, "filtered", route_source(address),
                             time.monotonic() - start, f"no answer within {self.timeout:g}s")
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)
            return PortProbe(family, address, port, "error", route_source(address),
                             time.monotonic() - start, why)
        sock = writer.get_extra_info("sockname")
        source = sock[0] if sock else None
        smtp = tls = None
        try:
            if port in SMTP_PORTS:
                smtp = await self._smtp(reader, writer)
            elif port in TLS_PORTS:
                tls = await self._tls(writer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)
        return PortProbe(family, address, port, "open", source, time.monotonic() - start,
                         smtp=smtp, tls=tls)

    async def _smtp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> SmtpInfo:
        try:
            greeting = await asyncio.wait_for(read_reply(reader), self.timeout)
            if not greeting or not greeting[-1].startswith("220"):
                return SmtpInfo(greeting="\n".join(greeting), error="no 220 greeting")
            writer.write(f"EHLO {self.ehlo_name}\r\n".encode())
            ehlo = await asyncio.wait_for(read_reply(reader), self.timeout)
        except (TimeoutError, OSError, UnicodeError) as e:
            return SmtpInfo(error=f"SMTP dialog failed: {type(e).__name__} {e}".strip())
        starttls = any(line[4:].strip().upper().startswith("STARTTLS") for line in ehlo)
        err = None if ehlo and ehlo[-1].startswith("250") else "EHLO not accepted"
        tls = await self._starttls(reader, writer) if starttls and not err else None
        if tls is None:
            writer.write(b"QUIT\r\n")
        return SmtpInfo("\n".join(greeting), tuple(ehlo), starttls, err, tls)

    async def _starttls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> TlsInfo:
        """STARTTLS and the certificate served (DANE matches TLSA records against it)."""
        try:
            writer.write(b"STARTTLS\r\n")
            reply = await asyncio.wait_for(read_reply(reader), self.timeout)
        except (TimeoutError, OSError, UnicodeError) as e:
            return TlsInfo(error=f"STARTTLS failed: {type(e).__name__} {e}".strip())
        if not reply or not reply[-1].startswith("220"):
            return TlsInfo(error=f"STARTTLS refused: {' '.join(reply)[:120]}")
        return await self._tls(writer)

    async def _tls(self, writer: asyncio.StreamWriter) -> TlsInfo:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # we report on the certificate, we do not trust it
        try:
            await asyncio.wait_for(writer.start_tls(ctx), self.timeout)
        except (TimeoutError, OSError, ssl.SSLError) as e:
            return TlsInfo(error=f"TLS handshake failed: {type(e).__name__} {e}".strip())
        obj = writer.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True) if obj else None
        return describe_certificate(der, obj.version() if obj else "")


async def read_reply(reader: asyncio.StreamReader, limit: int = 50) -> list[str]:
    """One SMTP reply: lines until one whose 4th character is a space."""
    lines: list[str] = []
    while len(lines) < limit:
        raw = await reader.readline()
        if not raw:
            break
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            break
    return lines


def describe_certificate(der: bytes | None, version: str = "") -> TlsInfo:
    """Names, issuer and expiry of a DER certificate (pure)."""
    if not der:
        return TlsInfo(version=version, error="no certificate presented")
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as e:
        return TlsInfo(version=version, error=f"unreadable certificate: {e}")
    names = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += [n for n in san.get_values_for_type(x509.DNSName) if n not in names]
    not_after = cert.not_valid_after_utc.astimezone(UTC)
    return TlsInfo(version, cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
                   tuple(str(n) for n in names), not_after, cert.issuer == cert.subject, der=der)

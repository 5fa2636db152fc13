"""Outside probes: what the internet sees of a host's mail ports.

Every probe of a host runs at once (asyncio), so a host with every port
filtered costs about one probe timeout, not one per port. Per port: a TCP
connect, classified by what the kernel was told (bot.icmp): `open`;
`refused` (a TCP RST); `rejected` (an ICMP destination-unreachable, kept
with its type, code and sender); `filtered` (nothing within the probe
timeout); `error` (anything else, e.g. no route here, or our own kernel
reporting an unanswered neighbour). Then, only on ports that connected and
within the separate greeting budget: on 25/587 the SMTP greeting (each
line's arrival time is kept) and EHLO (is STARTTLS offered?), on 465/993 a
TLS handshake and the certificate (names, expiry; a self-signed one is
reported, not failed), or the plain-text line a server sent where a TLS
ServerHello was expected.

Each probe records the local source address it used (getsockname): the
firewall verdict is computed for that source. For a port that never
answered, the source is the one the kernel's route picks (a UDP connect,
which sends no packet).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot import icmp
from bot.icmp import IcmpError
from bot.models import Family, Outside

SMTP_PORTS = (25, 587)
TLS_PORTS = (465, 993)
TLS_RECORD_TYPES = frozenset(range(0x14, 0x19))  # the first byte of any TLS record


@dataclass(frozen=True)
class SmtpInfo:
    greeting: str = ""
    ehlo: tuple[str, ...] = ()
    starttls: bool = False
    error: str | None = None
    line_times: tuple[float, ...] = ()  # when each greeting line arrived, s after the connect
    greeting_time: float | None = None  # s from the connect to the greeting's last line, if it came
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
    handshake_time: float | None = None  # s from the connect to the server's first answer
    plaintext: str | None = None  # the line a server sent where a TLS ServerHello was expected
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
    icmp: IcmpError | None = None  # the ICMP error that ended the connect, if one did


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


def classify_failure(err: OSError, answer: IcmpError | None, source: str | None) -> tuple[Outside, str]:
    """A failed connect -> (state, why), from the errno and the ICMP error queued for it (pure)."""
    if answer is None:
        why = os.strerror(err.errno) if err.errno else str(err)
        return ("refused" if isinstance(err, ConnectionRefusedError) else "error"), why
    if answer.sender is not None and answer.sender == source:
        return "error", (f"this machine's own kernel answered {answer.describe()}: no neighbour "
                         "(ARP/NDP) answer on the way, or a firewall where mailcheck runs")
    if answer.unreachable:
        return "rejected", answer.describe()
    return "error", answer.describe()


class Prober:
    """Probes a host's ports from here.

    `timeout` bounds each TCP connect; `greeting_timeout` bounds, on ports that connected,
    each step of the dialog (the SMTP greeting, the EHLO answer, the TLS handshake).
    """

    def __init__(self, timeout: float = 4.0, greeting_timeout: float = 30.0,
                 ehlo_name: str = "mailcheck.invalid") -> None:
        self.timeout = timeout
        self.greeting_timeout = greeting_timeout
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
        sock = socket.socket(socket.AF_INET6 if family == "ipv6" else socket.AF_INET, socket.SOCK_STREAM)
        try:
            failed = await self._connect(sock, family, address, port, start)
            if failed is not None:
                return failed
            source = sock.getsockname()[0]
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        connected = time.monotonic()
        smtp = tls = None
        try:
            if port in SMTP_PORTS:
                smtp = await self._smtp(reader, writer, connected)
            elif port in TLS_PORTS:
                tls = await self._tls(reader, writer, connected)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)
        return PortProbe(family, address, port, "open", source, time.monotonic() - start,
                         smtp=smtp, tls=tls)

    async def _connect(self, sock: socket.socket, family: Family, address: str, port: int,
                       start: float) -> PortProbe | None:
        """Connect within the probe timeout; None when connected, else the failed probe."""
        sock.setblocking(False)
        icmp.enable(sock)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (address, port)),
                                   self.timeout)
            return None
        except TimeoutError:
            return PortProbe(family, address, port, "filtered", route_source(address),
                             time.monotonic() - start, f"no answer within {self.timeout:g}s")
        except OSError as e:
            answer = icmp.read_error_queue(sock)
            source = route_source(address)
            state, why = classify_failure(e, answer, source)
            return PortProbe(family, address, port, state, source, time.monotonic() - start, why,
                             icmp=answer)

    async def _smtp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    connected: float) -> SmtpInfo:
        lines: list[str] = []
        times: list[float] = []
        budget = self.greeting_timeout
        try:
            await asyncio.wait_for(read_reply(reader, into=lines, times=times, since=connected), budget)
        except TimeoutError:
            return SmtpInfo("\n".join(lines), error=f"no complete greeting within {budget:g}s "
                            "(MAILCHECK_GREETING_TIMEOUT)", line_times=tuple(times))
        except (OSError, UnicodeError) as e:
            return SmtpInfo("\n".join(lines), error=f"SMTP dialog failed: {type(e).__name__} {e}".strip(),
                            line_times=tuple(times))
        greeting, took = "\n".join(lines), (times[-1] if times else None)
        if not lines or not lines[-1].startswith("220"):
            return SmtpInfo(greeting, error="no 220 greeting", line_times=tuple(times), greeting_time=took)
        try:
            writer.write(f"EHLO {self.ehlo_name}\r\n".encode())
            ehlo = await asyncio.wait_for(read_reply(reader), budget)
        except (TimeoutError, OSError, UnicodeError) as e:
            why = f"no EHLO answer within {budget:g}s" if isinstance(e, TimeoutError) else \
                f"{type(e).__name__} {e}".strip()
            return SmtpInfo(greeting, error=f"SMTP dialog failed after the greeting: {why}",
                            line_times=tuple(times), greeting_time=took)
        starttls = any(line[4:].strip().upper().startswith("STARTTLS") for line in ehlo)
        err = None if ehlo and ehlo[-1].startswith("250") else "EHLO not accepted"
        tls = await self._starttls(reader, writer, connected) if starttls and not err else None
        if tls is None:
            writer.write(b"QUIT\r\n")
        return SmtpInfo(greeting, tuple(ehlo), starttls, err, line_times=tuple(times),
                        greeting_time=took, tls=tls)

    async def _starttls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        connected: float) -> TlsInfo:
        """STARTTLS and the certificate served (DANE matches TLSA records against it)."""
        try:
            writer.write(b"STARTTLS\r\n")
            reply = await asyncio.wait_for(read_reply(reader), self.greeting_timeout)
        except (TimeoutError, OSError, UnicodeError) as e:
            return TlsInfo(error=f"STARTTLS failed: {type(e).__name__} {e}".strip())
        if not reply or not reply[-1].startswith("220"):
            return TlsInfo(error=f"STARTTLS refused: {' '.join(reply)[:120]}")
        return await self._tls(reader, writer, connected)

    async def _tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   connected: float) -> TlsInfo:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # we report on the certificate, we do not trust it
        budget = self.greeting_timeout
        try:
            return await asyncio.wait_for(tls_handshake(ctx, reader, writer, connected), budget)
        except TimeoutError:
            return TlsInfo(error=f"TLS handshake: no answer within {budget:g}s (MAILCHECK_GREETING_TIMEOUT)")
        except (OSError, ssl.SSLError) as e:
            return TlsInfo(error=f"TLS handshake failed: {type(e).__name__} {e}".strip(),
                           handshake_time=time.monotonic() - connected)


async def tls_handshake(ctx: ssl.SSLContext, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, connected: float) -> TlsInfo:
    """A client handshake over the stream, looking at the server's first bytes.

    Done by hand (ssl.MemoryBIO) rather than with start_tls, so that a server speaking
    plain text (e.g. `220 ...` on 465) is seen for what it is, not as WRONG_VERSION_NUMBER.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing)
    first: float | None = None
    while True:
        try:
            tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        if outgoing.pending:
            writer.write(outgoing.read())
            await writer.drain()
        if done:
            break
        chunk = await reader.read(16384)
        if not chunk:
            raise ConnectionResetError("the server closed the connection during the TLS handshake")
        if first is None:
            first = time.monotonic() - connected
            if chunk[0] not in TLS_RECORD_TYPES:
                if b"\n" not in chunk:
                    chunk += await reader.readline()
                line = chunk.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")[:200]
                return TlsInfo(error=f"plain text where a TLS handshake was expected: {line!r}",
                               handshake_time=first, plaintext=line)
        incoming.write(chunk)
    info = describe_certificate(tls.getpeercert(binary_form=True), tls.version() or "")
    return dataclasses.replace(info, handshake_time=first)


async def read_reply(reader: asyncio.StreamReader, limit: int = 50, *, into: list[str] | None = None,
                     times: list[float] | None = None, since: float = 0.0) -> list[str]:
    """One SMTP reply: lines until one whose 4th character is a space.

    Lines go into `into` as they arrive (so a caller that times out keeps the partial reply),
    and their arrival times (monotonic, minus `since`) into `times`.
    """
    lines = into if into is not None else []
    while len(lines) < limit:
        raw = await reader.readline()
        if not raw:
            break
        if times is not None:
            times.append(time.monotonic() - since)
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

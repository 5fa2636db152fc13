"""HTTPS fetches for the DNS checks (MTA-STS policies, RDAP), through mailcheck's resolver.

Host names resolve through our `Resolver` (MAILCHECK_RESOLVERS), never the
system's, so the same nameservers answer every question of a check.

Certificates are always verified, host name included. The trust store is the
system's, or the CA bundle in MAILCHECK_CA_FILE *instead* of it (a private CA:
a staging network, the test lab). There is no switch that turns verification
off: an MTA-STS policy behind a certificate that does not verify is exactly
what senders ignore, so it must be reported, not fetched anyway.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from bot.dns.resolver import Resolver

MAX_BYTES = 64 * 1024


class LookupFailed(OSError):
    """Our resolver could not tell the host's addresses (timeout, SERVFAIL): unknown, not absent."""


class _ViaResolver(AbstractResolver):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        a, aaaa = await self.resolver.addresses(host)
        out = [ResolveResult(hostname=host, host=r.address, port=port,
                             family=socket.AF_INET6 if ":" in r.address else socket.AF_INET,
                             proto=0, flags=socket.AI_NUMERICHOST)
               for lk in (a, aaaa) if lk.ok for r in lk.rrset]
        failed = next((lk for lk in (a, aaaa) if lk.failed), None)
        if not out and failed is not None:
            raise LookupFailed(f"cannot resolve {host}: {failed.describe()}")
        if not out:
            raise OSError(f"{host} has no address")
        return out

    async def close(self) -> None:
        return None


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verifying context: the system trust store, or ca_file in its place."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


@dataclass(frozen=True)
class Https:
    """How mailcheck's own HTTPS fetches trust and wait: MAILCHECK_CA_FILE, the DNS timeout."""

    ca_file: Path | None = None
    seconds: float = 5.0


@dataclass(frozen=True)
class Fetched:
    url: str
    status: int | None = None
    text: str = ""
    content_type: str = ""
    error: str = ""
    location: str = ""
    lookup_failed: bool = False   # the host name could not be resolved: nothing is known


async def _read_body(content: aiohttp.StreamReader) -> bytes | None:
    """The whole body, or None when it is larger than MAX_BYTES. (read(n) returns what has
    arrived so far, not n bytes: one read gave the first TLS record or chunk only.)"""
    body = bytearray()
    while len(body) <= MAX_BYTES:
        chunk = await content.read(MAX_BYTES + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    return None


async def fetch(resolver: Resolver, url: str, https: Https, follow_redirects: bool = False) -> Fetched:
    """GET url (a body over MAX_BYTES is an error, never cut short). Failures are data: error
    says what went wrong, lookup_failed that our resolver could not tell the address."""
    connector = aiohttp.TCPConnector(resolver=_ViaResolver(resolver), ssl=ssl_context(https.ca_file),
                                     use_dns_cache=False)
    try:
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=https.seconds)) as session:
            async with session.get(url, allow_redirects=follow_redirects) as resp:
                body = await _read_body(resp.content)
                if body is None:
                    return Fetched(url, resp.status, error=f"the body is larger than {MAX_BYTES} bytes",
                                   content_type=resp.headers.get("Content-Type", ""))
                return Fetched(url, resp.status, body.decode("utf-8", "replace"),
                               resp.headers.get("Content-Type", ""),
                               location=resp.headers.get("Location", ""))
    except aiohttp.ClientConnectorCertificateError as e:
        return Fetched(url, error=f"certificate not trusted: {e.certificate_error}")
    except aiohttp.ClientConnectorError as e:  # our resolver's errors arrive as its os_error
        if e.os_error.errno is None:
            return Fetched(url, error=str(e.os_error), lookup_failed=isinstance(e.os_error, LookupFailed))
        return Fetched(url, error=f"{type(e).__name__}: {e}")
    except TimeoutError:
        return Fetched(url, error=f"no answer within {https.seconds:g}s")
    except (aiohttp.ClientError, OSError, ssl.SSLError, ValueError) as e:
        return Fetched(url, error=f"{type(e).__name__}: {e}")

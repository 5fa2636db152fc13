"""Did the fix do what it promised? Re-run the affected checks and compare.

A `Verifier` is an injected async callable (host, fix) -> port statuses
after the fix. `engine_verifier` builds one from the check engine (the
engine's report includes the outside probe); lab tests inject one built on
real probes until then.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bot.engine import Checker
from bot.models import Fix, PortStatus
from config.inventory import Host

Verifier = Callable[[Host, Fix], Awaitable[list[PortStatus]]]


@dataclass(frozen=True)
class VerifyResult:
    achieved: bool
    ports: list[PortStatus] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # e.g. "inbound ipv4 25: filtered"
    error: str | None = None


def engine_verifier(engine: Checker) -> Verifier:
    """Verify with a full check by the engine (services, ports with outside probe, firewall)."""

    async def verify(host: Host, fix: Fix) -> list[PortStatus]:
        report = await engine.check(host)
        return list(report.ports)

    return verify


def _open(p: PortStatus) -> bool:
    if p.outside is not None:
        return p.outside in ("open", "refused")  # refused: the firewall let it through
    return p.firewall == "allow"


def compare(fix: Fix, ports: Sequence[PortStatus]) -> VerifyResult:
    """Every port of fix.expected_allow must now pass."""
    by_key = {p.key: p for p in ports}
    missing = []
    for key in fix.expected_allow:
        p = by_key.get(key)
        where = f"{key.direction} {key.family} {key.port}"
        if p is None:
            missing.append(f"{where}: not checked")
        elif not _open(p):
            outside = p.direction == "outbound" and p.firewall == "allow" and p.outside is not None
            missing.append(f"{where}: {p.outside or p.firewall}" + (
                " although the host firewall now allows it: blocked outside the host (see the "
                "conclusion)" if outside else ""))
    return VerifyResult(achieved=not missing, ports=list(ports), missing=missing)


async def run_verify(verifier: Verifier | None, host: Host, fix: Fix) -> VerifyResult | None:
    if verifier is None or not fix.expected_allow:
        return None
    try:
        ports = await verifier(host, fix)
    except Exception as e:  # a failed check must not hide that the fix was applied
        return VerifyResult(achieved=False, error=f"verification failed: {e}")
    return compare(fix, ports)

"""Did the fix do what it promised? Re-run the affected checks and compare.

A `Verifier` is an injected async callable (host, fix) -> port statuses
after the fix. `engine_verifier` builds one from the check engine (the
engine's report includes the outside probe); lab tests inject one built on
real probes until then.
"""

from __future__ import annotations

import asyncio
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


def _open(p: PortStatus, kind: str = "firewall") -> bool:
    """Does the port now pass? A firewall fix: the firewall lets it through (a refusal
    counts: nothing may listen yet). A service or configuration fix promises a daemon
    answering there: only `open` counts (or, with no outside probe, a public listener)."""
    if kind != "firewall":
        return p.outside == "open" if p.outside is not None else p.listening in ("public", "forwarded")
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
        elif not _open(p, fix.kind):
            outside = p.direction == "outbound" and p.firewall == "allow" and p.outside is not None
            missing.append(f"{where}: {p.outside or p.firewall}" + (
                " although the host firewall now allows it: blocked outside the host (see the "
                "conclusion)" if outside else ""))
    return VerifyResult(achieved=not missing, ports=list(ports), missing=missing)


SETTLE = (2.0, 3.0, 5.0)  # s between re-checks while a restarted daemon comes up (10 s in all)


async def run_verify(verifier: Verifier | None, host: Host, fix: Fix,
                     settle: tuple[float, ...] = SETTLE) -> VerifyResult | None:
    """Re-check; a service or configuration fix restarts a daemon, which may take a few
    seconds to answer (a container's MTA starts after the engine says "started"), so it is
    re-checked after each `settle` pause until the effect shows. A firewall fix is checked once."""
    if verifier is None or not fix.expected_allow:
        return None
    pauses = list(settle) if fix.kind in ("service", "config") else []
    while True:
        try:
            ports = await verifier(host, fix)
        except Exception as e:  # a failed check must not hide that the fix was applied
            return VerifyResult(achieved=False, error=f"verification failed: {e}")
        result = compare(fix, ports)
        if result.achieved or not pauses:
            return result
        await asyncio.sleep(pauses.pop(0))

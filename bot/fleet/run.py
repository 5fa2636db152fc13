"""Checking hosts concurrently: at most `concurrency` at a time, each within a deadline.

Each host's check is the engine's, with that host's own timeouts (connect, command
budget, probes). On top, each host has an overall deadline: a host that has not finished
by then is reported at once as an error, with the steps it did finish, and its check is
cancelled; a slow or dead host never holds back the others, and the results come in the
order the hosts finish. Nothing here keeps a report after handing it over, so the memory
of a fleet check is that of the hosts in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal

from bot.checks.registry import STEPS
from bot.diagnosis import answer
from bot.engine import Checker
from bot.errors import MailcheckError
from bot.models import Report, StepResult
from config.inventory import Host

Verdict = Literal["ok", "broken", "error"]
EXIT = {"ok": 0, "broken": 1, "error": 2}
GRACE = 5.0  # seconds a cancelled check may take to close its connection and probes


@dataclass(frozen=True)
class HostResult:
    """One host's outcome in a fleet check.

    `cause`: the top cause (the worst finding's summary; for an error, what could not
    run), "" when there is nothing to say. `error`: why the check, or part of it, could
    not run (a step's error naming host and step, or the deadline), else None.
    """

    host: str
    address: str
    verdict: Verdict
    cause: str
    duration: float
    error: str | None
    report: Report

    @property
    def exit_code(self) -> int:
        return EXIT[self.verdict]

    @classmethod
    def of(cls, report: Report, duration: float) -> HostResult:
        error = next((s.error or s.summary for s in report.steps if s.status == "error"), None)
        return cls(report.host, report.address, report.verdict, top_cause(report), duration,
                   error, report)


def top_cause(report: Report) -> str:
    """The first cause the host's own report lists (bot.diagnosis.answer: the verdict's
    causes worst first, a symptom only when no cause explains it); for a report that could
    not conclude, the first step's error; else ""."""
    if report.verdict == "error":
        step = next(s for s in report.steps if s.status == "error")
        return step.error or step.summary
    causes = answer(report).causes
    return causes[0].summary if causes else ""


@dataclass
class FleetSummary:
    """Counts and names by verdict, as results arrive; `exit_code` summarises the fleet:
    2 if any host could not be checked, else 1 if any host's finding says mail cannot
    flow, else 0."""

    hosts: dict[Verdict, list[str]] = field(default_factory=lambda: {v: [] for v in EXIT})
    started: float = field(default_factory=time.monotonic)

    def add(self, result: HostResult) -> None:
        self.hosts[result.verdict].append(result.host)

    @property
    def count(self) -> int:
        return sum(map(len, self.hosts.values()))

    @property
    def exit_code(self) -> int:
        return max((EXIT[v] for v, names in self.hosts.items() if names), default=0)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


async def check_fleet(engine: Checker, hosts: Sequence[Host], *, concurrency: int,
                      deadline: float, steps: Sequence[str] | None = None
                      ) -> AsyncIterator[HostResult]:
    """Check `hosts` (in their order, `concurrency` at a time), yielding each HostResult as
    that host finishes. Stopping early (aclosing, or cancelling the consumer) cancels the
    checks still running."""
    results: asyncio.Queue[HostResult] = asyncio.Queue()
    todo = iter(hosts)

    async def worker() -> None:
        for host in todo:  # one shared iterator: each host once, in order
            result, leftover = await _check_host(engine, host, deadline=deadline, steps=steps)
            await results.put(result)
            if leftover is not None:  # past its deadline: reported; its slot frees once it closed
                await asyncio.wait({leftover}, timeout=GRACE)

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(hosts)))]
    try:
        for _ in hosts:
            yield await results.get()
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def run_fleet(engine: Checker, hosts: Sequence[Host], *, concurrency: int, deadline: float,
                    on_result: Callable[[HostResult], Awaitable[None]],
                    steps: Sequence[str] | None = None) -> FleetSummary:
    """check_fleet with a callback per result; the summary at the end."""
    summary = FleetSummary()
    async with aclosing(check_fleet(engine, hosts, concurrency=concurrency, deadline=deadline,
                                    steps=steps)) as results:
        async for result in results:
            summary.add(result)
            await on_result(result)
    return summary


async def check_host(engine: Checker, host: Host, *, deadline: float,
                     steps: Sequence[str] | None = None) -> HostResult:
    """One host's check within `deadline` seconds; never raises (but CancelledError)."""
    result, leftover = await _check_host(engine, host, deadline=deadline, steps=steps)
    if leftover is not None:
        await asyncio.wait({leftover}, timeout=GRACE)
    return result


async def _check_host(engine: Checker, host: Host, *, deadline: float,
                      steps: Sequence[str] | None) -> tuple[HostResult, asyncio.Task | None]:
    """The result, at the latest at the deadline; and the check, cancelled but perhaps still
    closing its connection, when the deadline cut it (else None)."""
    start = time.monotonic()
    seen: list[Report] = []

    async def progress(step: StepResult, report: Report) -> None:
        seen[:] = [report]

    task = asyncio.create_task(engine.check(host, steps=steps, progress=progress))
    leftover = None
    try:
        done, _ = await asyncio.wait({task}, timeout=deadline)
        if not done:
            report = past_deadline(host, seen[0].model_copy(deep=True) if seen else None,
                                   deadline, steps)
            task.cancel()
            leftover = task
        else:
            report = task.result()
    except asyncio.CancelledError:
        task.cancel()
        raise
    except Exception as e:  # noqa: BLE001 - one host's crash is that host's error
        why = str(e) if isinstance(e, MailcheckError) else f"the check crashed ({type(e).__name__}: {e})"
        report = failed(host, why if why.startswith(f"host {host.name}") else f"host {host.name}: {why}",
                        steps)
    return HostResult.of(report, time.monotonic() - start), leftover


def past_deadline(host: Host, partial: Report | None, deadline: float,
                  steps: Sequence[str] | None) -> Report:
    """What a host had reported when its deadline passed; each step still running is an
    error naming host, step and the deadline."""
    report = partial or Report(host=host.name, address=host.address)
    done = {s.name for s in report.steps}
    late = [StepResult(name=n, status="error", summary="no result within the deadline",
                       error=f"host {host.name} step {n}: no result within {deadline:g} s "
                             "(the host's deadline, MAILCHECK_HOST_DEADLINE)", duration=deadline)
            for n in (steps or STEPS) if n not in done]
    order = {n: i for i, n in enumerate(STEPS)}
    report.steps = sorted(report.steps + late, key=lambda s: order.get(s.name, len(order)))
    report.duration = deadline
    return report


def failed(host: Host, error: str, steps: Sequence[str] | None) -> Report:
    """A report whose every step is `error` (the check could not run at all)."""
    return Report(host=host.name, address=host.address, steps=[
        StepResult(name=n, status="error", summary="could not run", error=error)
        for n in (steps or STEPS)])

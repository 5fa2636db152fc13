"""The check engine: the registered steps on one host, over SSH and from outside.

The engine knows no step by name. It orders the checks by what they need
(bot.checks.base.dependency_order), gathers their inputs (bot/gather.py: SSH, the
outside probes, the outbound targets' addresses, who holds the host's address and the
checks' own DNS lookups, concurrently) and evaluates each check as soon as the inputs it
declared are in, so progress reports arrive as the steps finish: the SSH steps when
their batch is back, even while the probes still wait on a filtered port. The report
itself lists the steps in the guide's order. A transport failure or a crashing check
becomes that step's error (naming host and step); the other steps still report.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from bot.checks.base import Check, CheckContext, CheckInput, StepOutcome, closure, dependency_order
from bot.checks.registry import all_checks
from bot.diagnosis import correlate, verdict_causes, with_ids
from bot.errors import TargetError
from bot.gather import Gather
from bot.models import PortStatus, Report, StepResult
from bot.outbound import Lookup, Target, parse_targets, resolver_lookup
from bot.owner import OwnerLookup
from bot.probes import Prober
from bot.transport import Connect, ssh_connect
from config.inventory import Host, Inventory, valid_domain
from config.settings import Settings

Progress = Callable[[StepResult, Report], Awaitable[None]]


class Checker(Protocol):
    """What the Slack side and fix verification need of an engine: one check of a host."""

    async def check(self, host: Host, *, steps: Sequence[str] | None = None,
                    progress: Progress | None = None, domains: Sequence[str] | None = None) -> Report: ...

    async def check_domain(self, domain: str, *, progress: Progress | None = None) -> Report: ...


class Engine:
    def __init__(self, settings: Settings, inventory: Inventory, *,
                 transport_factory: Connect | None = None, prober: Prober | None = None,
                 checks: Sequence[Check] | None = None,
                 outbound_targets: str | None = None, lookup: Lookup | None = None,
                 owners: OwnerLookup | None = None, vantage_connect: Connect | None = None) -> None:
        """`transport_factory`: connect(host) (bot.wiring gives the jump-aware SSH one).
        `checks`: the steps (default: the registry). `outbound_targets`: the servers the
        host connects to on 25/465/587 (`nc -vz`), as MAILCHECK_OUTBOUND_TARGETS says them
        (default: that setting; `off` skips the test); `lookup` resolves their names from
        here (default: mailcheck's resolver, MAILCHECK_RESOLVERS, new for each check). `owners`: how to ask who holds the host's address (default: the RDAP and whois
        settings). `vantage_connect`: connect(host) to the vantage points (default:
        `transport_factory`). A bad target list is a TargetError."""
        self.settings = settings
        self.outbound = _outbound(settings.outbound_targets if outbound_targets is None
                                  else outbound_targets)
        self.lookup = lookup
        self.owners = owners or OwnerLookup(settings.rdap_url, settings.whois_server,
                                            settings.owner_timeout, settings.resolvers, settings.ca_file)
        self.inventory = inventory
        self.transport_factory = transport_factory or ssh_connect(settings, inventory)
        self.vantage_connect = vantage_connect or self.transport_factory
        self.prober = prober or Prober(settings.probe_timeout, settings.greeting_timeout)
        self.checks = dependency_order(list(checks) if checks is not None else all_checks())

    def select(self, steps: Sequence[str] | None) -> tuple[list[Check], set[str]]:
        """(checks to evaluate, names to report): the chosen steps plus what they need."""
        names = [c.name for c in self.checks]
        chosen = set(steps or names)
        unknown = chosen - set(names)
        if unknown:
            raise TargetError(f"unknown step(s) {', '.join(sorted(unknown))}; known: {', '.join(names)}")
        needed = closure(self.checks, chosen)
        return [c for c in self.checks if c.name in needed], chosen

    async def check(self, host: Host, *, steps: Sequence[str] | None = None,
                    progress: Progress | None = None, domains: Sequence[str] | None = None) -> Report:
        """`domains`: the mail domains to check (`--domain`), instead of the inventory's."""
        checks, report_names = self.select(steps)
        named = tuple(domains or host.domains)
        source = "--domain" if domains else "inventory" if host.domains else ""
        ctx = CheckContext(domains=named, domains_source=source, settings=self.settings,
                           vantages=self.inventory.vantages(host), connect=self.vantage_connect)
        return await self._run(host, checks, report_names, ctx, progress)

    async def check_domain(self, domain: str, *, progress: Progress | None = None) -> Report:
        """The checks that can run on a mail domain alone (`mailcheck dns DOMAIN`): no
        host, no SSH, no probes. TargetError for a name that is not a domain."""
        name = valid_domain(domain)
        checks = [c for c in self.checks if c.domain_only]
        ctx = CheckContext(domains=(name,), domains_source="command", settings=self.settings)
        return await self._run(None, checks, {c.name for c in checks}, ctx, progress)

    async def _run(self, host: Host | None, checks: list[Check], report_names: set[str],
                   ctx: CheckContext, progress: Progress | None) -> Report:
        gather = Gather(host, checks, connect=self.transport_factory, prober=self.prober,
                        command_timeout=self.settings.command_timeout, context=ctx,
                        outbound=self.outbound if host is not None else None,
                        lookup=self.lookup or resolver_lookup(self.settings.resolvers,
                                                              self.settings.dns_timeout),
                        owners=self.owners)
        run = _Run(self, gather.input(), checks, report_names)
        try:
            await gather.start()
            pending = list(checks)
            while pending:
                for check in [c for c in pending if gather.ready(c)]:
                    if all(n in run.outcomes for n in check.needs):  # in dependency order
                        pending.remove(check)
                        step = run.evaluate(check, gather)
                        if step is not None and progress is not None:
                            await progress(step, run.report)
                if pending:
                    await gather.wait()
        finally:
            await gather.close()
        run.report.duration = time.monotonic() - run.start
        return run.report


class _Run:
    """The outcomes of one check run so far, and the report built from them."""

    def __init__(self, engine: Engine, target: CheckInput, checks: list[Check], report_names: set[str]) -> None:
        """`target`: whom the run checks (its host_name and address)."""
        self.engine, self.name, self.checks, self.report_names = engine, target.host_name, checks, report_names
        self.start = time.monotonic()
        self.outcomes: dict[str, StepOutcome] = {}
        self.steps: dict[str, StepResult] = {}
        self.report = Report(host=target.host_name, address=target.address)

    def evaluate(self, check: Check, gather: Gather) -> StepResult | None:
        """Evaluate `check` on its inputs; the step result when it is reported, else None."""
        outcome = self._outcome(check, gather)
        outcome.findings = with_ids(check.name, outcome.findings)
        self.outcomes[check.name] = outcome
        if check.name in self.report_names:
            self.steps[check.name] = StepResult(
                name=check.name, status=outcome.status, summary=outcome.summary,
                evidence=outcome.evidence, error=outcome.error,
                duration=time.monotonic() - self.start)
        self._build(gather)
        return self.steps.get(check.name)

    def _outcome(self, check: Check, gather: Gather) -> StepOutcome:
        where = f"host {self.name} step {check.name}"
        if gather.ssh_error is not None and check.ssh == "required":
            return StepOutcome("error", f"could not run: {gather.ssh_error}",
                               error=f"{where}: {gather.ssh_error}")
        needs = [c.name for c in self.checks if c.name in closure(self.checks, check.needs)]
        inp = dataclasses.replace(
            gather.input(check), ports=_ports(gather.base_ports(), [self.outcomes[n] for n in needs]),
            prior={n: self.outcomes[n] for n in needs})
        try:
            if (e := gather.lookup_error(check)) is not None:
                raise e
            outcome = check.evaluate(inp)
        except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
            msg = f"{where}: the check crashed ({type(e).__name__}: {e})"
            return StepOutcome("error", "the check crashed", error=msg)
        if outcome.status == "error" and outcome.error and not outcome.error.startswith("host "):
            outcome.error = f"{where}: {outcome.error}"
        return outcome

    def _build(self, gather: Gather) -> None:
        """The report from the outcomes so far, in the checks' order (so the same outcomes
        give the same report whatever order they arrived in)."""
        done = [c.name for c in self.checks if c.name in self.outcomes]
        reported = [n for n in done if n in self.steps]
        r = self.report
        r.steps = [self.steps[n] for n in reported]
        r.findings = correlate([f for n in reported for f in self.outcomes[n].findings])
        r.causes = [f.id for f in verdict_causes(r.findings)]
        r.fixes = []
        for n in reported:
            r.fixes += [f for f in self.outcomes[n].fixes if f.id not in {x.id for x in r.fixes}]
        r.ports = list(_ports(gather.base_ports(), [self.outcomes[n] for n in done]).values())


def _ports(base: list[PortStatus], outcomes: list[StepOutcome]) -> dict:
    """The base ports with the outcomes' updates applied in order (unknown keys ignored)."""
    ports = {p.key: p for p in base}
    for outcome in outcomes:
        for key, update in outcome.ports.items():
            if key in ports:
                ports[key] = update.apply(ports[key])
    return ports


def _outbound(spec: str) -> tuple[Target, ...] | None:
    try:
        return parse_targets(spec)
    except ValueError as e:
        raise TargetError(str(e)) from e

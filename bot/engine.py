"""The check engine: the guide's steps on one host, over SSH and from outside.

One SSH connection per host. Two round trips: a tiny one for the host facts
(addresses, distro, init system) so the IPv6 probes can start at once, then
every step's commands deduplicated into one batch. The IPv4 probes start
before SSH does; all probes of a host run concurrently with the batch.
A transport failure or a crashing check becomes that step's error (naming
host and step); the other steps still report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from types import ModuleType, SimpleNamespace

from bot.checks import CheckInput, PortKey, StepOutcome, all_checks, facts
from bot.checks import ports as ports_step
from bot.checks.facts import HostFacts
from bot.errors import ConnectionLost, MailcheckError, TargetError, TransportError
from bot.models import INBOUND_PORTS, OUTBOUND_PORTS, STEPS, Command, PortStatus, Report, StepResult
from bot.probes import Prober, ProbeReport
from bot.transport import SSHTransport, Transport
from config.inventory import Host, Inventory, parse_target
from config.settings import Settings

Progress = Callable[[StepResult, Report], Awaitable[None]]
TransportFactory = Callable[[Host], Transport]
SSH_STEPS = ("tools", "services", "firewall")


class Engine:
    def __init__(self, settings: Settings, inventory: Inventory, *,
                 transport_factory: TransportFactory | None = None, prober: Prober | None = None,
                 checks: Sequence[ModuleType] | None = None,
                 outbound_target: str | None = None) -> None:
        """`outbound_target`: an outside IP address the host may connect to on 25/465/587
        (`nc -vz`) to test outbound mail for real; None (the default) skips the test."""
        self.settings = settings
        self.outbound_target = _outbound(outbound_target)
        self.inventory = inventory
        self.transport_factory = transport_factory or self._ssh
        self.prober = prober or Prober(settings.probe_timeout)
        self.checks = list(checks) if checks is not None else all_checks()

    def _ssh(self, host: Host) -> Transport:
        jump = None
        if host.jump:
            jump = parse_target(host.jump, self.inventory, host.identity_file, host.known_hosts)
        return SSHTransport(host, self.settings, jump=jump)

    def select(self, steps: Sequence[str] | None) -> tuple[list[ModuleType], set[str]]:
        """(checks to evaluate, names to report): the chosen steps plus what they need."""
        names = {c.NAME for c in self.checks}
        chosen = set(steps or names)
        unknown = chosen - names
        if unknown:
            raise TargetError(f"unknown step(s) {', '.join(sorted(unknown))}; known: {', '.join(STEPS)}")
        needed = set(chosen)
        for c in self.checks:
            if c.NAME in chosen:
                needed |= set(c.NEEDS)
        return [c for c in self.checks if c.NAME in needed], chosen

    async def check(self, host: Host, *, steps: Sequence[str] | None = None,
                    progress: Progress | None = None) -> Report:
        start = time.monotonic()
        checks, report_names = self.select(steps)
        report = Report(host=host.name, address=host.address)
        run = _Run(self, host, checks)
        await run.gather()
        report.ports = run.base_ports()
        ports = {(p.direction, p.family, p.port): p for p in report.ports}
        prior: dict[str, StepOutcome] = {}
        for check in checks:
            t0 = time.monotonic()
            outcome = run.evaluate(check, ports, prior)
            prior[check.NAME] = outcome
            _apply_ports(ports, outcome)
            if check.NAME not in report_names:
                continue
            if run.ssh_error is not None and check.NAME == "ports":
                outcome = _demoted(outcome)
            step = StepResult(name=check.NAME, status=outcome.status, summary=outcome.summary,
                              evidence=outcome.evidence, error=outcome.error,
                              duration=run.gather_time + time.monotonic() - t0)
            report.steps.append(step)
            report.findings += outcome.findings
            report.fixes += [f for f in outcome.fixes if f.id not in {x.id for x in report.fixes}]
            report.ports = list(ports.values())
            if progress is not None:
                await progress(step, report)
        report.duration = time.monotonic() - start
        return report


def _apply_ports(ports: dict[PortKey, PortStatus], outcome: StepOutcome) -> None:
    for key, fields in outcome.ports.items():
        if key in ports:
            ports[key] = ports[key].model_copy(update=fields)


def _demoted(outcome: StepOutcome) -> StepOutcome:
    """Without SSH a filtered port cannot be explained: report it, but as a warning."""
    findings = [f.model_copy(update={"severity": "warning",
                                     "summary": f.summary + " (cause unknown: SSH failed)"})
                if f.severity in ("error", "critical") else f for f in outcome.findings]
    return dataclasses.replace(outcome, findings=findings,
                               status="warn" if outcome.status == "fail" else outcome.status)


class _Run:
    """The I/O of one check: SSH batches and outside probes, gathered concurrently."""

    def __init__(self, engine: Engine, host: Host, checks: list[ModuleType]) -> None:
        self.engine, self.host, self.checks = engine, host, checks
        self.results: dict[tuple[str, ...], object] = {}
        self.facts = HostFacts()
        self.addresses: dict[str, str] = {}
        self.probes: ProbeReport | None = None
        self.ssh_error: str | None = None
        self.gather_time = 0.0
        self.wants_ssh = any(c.NAME in SSH_STEPS for c in checks)
        self.wants_probes = any(c.NAME in ("ports", "firewall", "conclusion") for c in checks)

    async def gather(self) -> None:
        t0 = time.monotonic()
        self.addresses = await resolve(self.host.address)
        tasks: dict[str, asyncio.Task] = {}
        if self.wants_probes and "ipv4" in self.addresses:
            tasks["ipv4"] = asyncio.create_task(self._probe("ipv4"))
        try:
            await self._ssh(tasks)
            reports = [await t for t in tasks.values()]
        finally:
            for t in tasks.values():  # cancelled (e.g. the caller's timeout): leave nothing behind
                t.cancel()
        if reports:
            self.probes = ProbeReport()
            for r in reports:
                self.probes = self.probes.merge(r)
        self.gather_time = time.monotonic() - t0

    async def _probe(self, family: str) -> ProbeReport:
        return await self.engine.prober.probe(family, self.addresses[family], INBOUND_PORTS)

    async def _ssh(self, tasks: dict) -> None:
        if not self.wants_ssh:
            return
        try:
            transport = self.engine.transport_factory(self.host)
        except MailcheckError as e:
            self.ssh_error = str(e)
            return
        try:
            await self._batches(transport, tasks)
        except TransportError as e:
            self.ssh_error = f"{type(e).__name__}: {e.args[0] if e.args else e}"
        finally:
            try:
                await transport.close()
            except Exception:  # noqa: BLE001 - closing a broken connection must not mask the result
                pass

    async def _batches(self, transport: Transport, tasks: dict) -> None:
        first = await transport.run(facts.commands(), step="connect")
        self.results.update({r.command.argv: r for r in first})
        self.facts = facts.read_facts(self.results)
        for family in ("ipv4", "ipv6"):
            addr = self.facts.global_address(family)
            if family not in self.addresses and addr:
                self.addresses[family] = addr
            if self.wants_probes and family in self.addresses and family not in tasks:
                tasks[family] = asyncio.create_task(self._probe(family))
        batch = self.commands()
        if batch:
            rest = await transport.run(batch, step="+".join(c.NAME for c in self.checks))
            if all(r.exit_status is None for r in rest):  # the channel died before any exit status
                raise ConnectionLost("the connection dropped while the commands ran "
                                     "(no command reported an exit status)", host=self.host.name)
            self.results.update({r.command.argv: r for r in rest})

    def commands(self) -> list[Command]:
        """Every step's commands, deduplicated by argv, each within the command budget."""
        seen: dict[tuple[str, ...], Command] = {}
        budget = self.engine.settings.command_timeout
        extra = ports_step.outbound_commands(self.engine.outbound_target) \
            if self.engine.outbound_target and any(c.NAME == "ports" for c in self.checks) else []
        for check in [*self.checks, SimpleNamespace(commands=lambda: extra)]:
            for cmd in check.commands():
                if cmd.argv not in seen and cmd.argv not in self.results:
                    seen[cmd.argv] = dataclasses.replace(cmd, timeout=min(cmd.timeout, budget))
        return list(seen.values())

    def base_ports(self) -> list[PortStatus]:
        families = ["ipv4"] + (["ipv6"] if "ipv6" in self.addresses else [])
        return [PortStatus(port=p, direction=d, family=f)
                for f in families
                for d, ports in (("inbound", INBOUND_PORTS), ("outbound", OUTBOUND_PORTS))
                for p in ports]

    def evaluate(self, check: ModuleType, ports: dict, prior: dict) -> StepOutcome:
        where = f"host {self.host.name} step {check.NAME}"
        if self.ssh_error is not None and check.NAME in SSH_STEPS:
            return StepOutcome("error", f"could not run: {self.ssh_error}", error=f"{where}: {self.ssh_error}")
        inp = CheckInput(self.host.name, self.host.address, self.results, self.facts,
                         addresses=dict(self.addresses), probes=self.probes, ports=dict(ports),
                         prior=dict(prior), outbound_target=self.engine.outbound_target)
        try:
            outcome = check.evaluate(inp)
        except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
            msg = f"{where}: the check crashed ({type(e).__name__}: {e})"
            return StepOutcome("error", "the check crashed", error=msg)
        if outcome.status == "error" and outcome.error and not outcome.error.startswith("host "):
            outcome.error = f"{where}: {outcome.error}"
        return outcome


def _outbound(target: str | None) -> str | None:
    if target is None:
        return None
    try:
        return str(ipaddress.ip_address(target))
    except ValueError as e:
        raise TargetError(f"outbound test target must be an IP address, not {target!r}") from e


async def resolve(address: str) -> dict[str, str]:
    """family -> address to probe: the IP itself, or the name's first A and AAAA records."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
        return {"ipv6" if ip.version == 6 else "ipv4": str(ip)}
    except ValueError:
        pass
    out: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    for family, af in (("ipv4", socket.AF_INET), ("ipv6", socket.AF_INET6)):
        try:
            infos = await loop.getaddrinfo(address, None, family=af, type=socket.SOCK_STREAM)
        except OSError:
            continue
        if infos:
            out[family] = infos[0][4][0]
    return out

"""The I/O of one check run: the SSH round trips, the outside probes and the checks' own
lookups, concurrently.

One SSH connection per host: a tiny round trip for the host facts (addresses, distro,
init system), so the IPv6 probes can start at once, then the commands of every check
that reads SSH, deduplicated into one batch, and another round only while a check asks
for commands it could not know before (a key file its signer's configuration names).
The IPv4 probes start before SSH does. A check's own lookups (`Check.lookups`) start
with the run and are told of each input as it arrives. Each input is in as soon as it
arrives: `wait()` returns when one more arrived. A transport failure is kept as
`ssh_error`; the probes and lookups still report. Without a host (a domain alone) there
is no SSH and no probe, only lookups.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
from collections.abc import Sequence

from bot.checks import facts
from bot.checks.base import Check, CheckContext, CheckInput, Lookups
from bot.checks.facts import HostFacts
from bot.errors import ConnectionLost, MailcheckError, TransportError
from bot.models import INBOUND_PORTS, OUTBOUND_PORTS, Command, CommandResult, PortStatus
from bot.probes import Prober, ProbeReport, route_source
from bot.transport import Connect, Transport
from config.inventory import Host

MAX_ROUNDS = 3  # command rounds after the facts: the batch, and at most two follow-ups


class Gather:
    def __init__(self, host: Host | None, checks: Sequence[Check], *, connect: Connect,
                 prober: Prober, command_timeout: float, context: CheckContext | None = None) -> None:
        """`context`: the run's settings, outbound target and named domains (facts and
        results are filled in as they arrive)."""
        self.host, self.checks, self.connect, self.prober = host, list(checks), connect, prober
        self.command_timeout, self.context = command_timeout, context or CheckContext()
        self.connects = host is not None and any(c.ssh in ("required", "wanted") for c in checks)
        self.probing = host is not None and any(c.uses_probes for c in checks)
        self.results: dict[tuple[str, ...], CommandResult] = {}
        self.facts = HostFacts()
        self.addresses: dict[str, str] = {}  # family -> the address probed
        self.sources: dict[str, str | None] = {}  # family -> the prober's source address
        self.ssh_error: str | None = None
        self.rounds = 0  # command rounds back (after the facts)
        self.lookups: dict[str, Lookups] = {}
        self._facts: asyncio.Future[None] | None = None
        self._round: asyncio.Future[None] | None = None
        self._ssh: asyncio.Task[None] | None = None
        self._probes: dict[str, asyncio.Task[ProbeReport]] = {}
        self._probe_report: ProbeReport | None = None
        self._looked_up: dict[str, asyncio.Task[object]] = {}

    # --- what is in ---------------------------------------------------------------
    @property
    def facts_in(self) -> bool:
        return self._facts is not None and self._facts.done()

    @property
    def ssh_in(self) -> bool:
        return self.facts_in and (self._ssh is None or self._ssh.done())

    @property
    def probes_in(self) -> bool:
        return self.facts_in and all(t.done() for t in self._probes.values())

    def commands_in(self, check: Check) -> bool:
        """Are `check`'s SSH results in: SSH is over (or failed), or a round came back and
        holds every command the check asks for now?"""
        if check.ssh == "none" or self.ssh_in:
            return self.facts_in
        return self.rounds > 0 and all(c.argv in self.results for c in check.commands(self.ctx()))

    def inputs_in(self, check: Check) -> bool:
        """Are the inputs `check` declared in (its SSH results, the probes)?"""
        return self.facts_in and self.commands_in(check) and (not check.uses_probes or self.probes_in)

    def ready(self, check: Check) -> bool:
        """Its declared inputs and its own lookups are in."""
        task = self._looked_up.get(check.name)
        return self.inputs_in(check) and (check.name not in self.lookups or bool(task and task.done()))

    def probes(self) -> ProbeReport | None:
        """Every family's probes merged, once all are in (None when none ran)."""
        if self._probe_report is None and self._probes and self.probes_in:
            report = ProbeReport()
            for task in self._probes.values():
                report = report.merge(task.result())
            self._probe_report = report
        return self._probe_report

    def base_ports(self) -> list[PortStatus]:
        if self.host is None:
            return []
        families = ["ipv4"] + (["ipv6"] if "ipv6" in self.addresses else [])
        return [PortStatus(port=p, direction=d, family=f)
                for f in families
                for d, ports in (("inbound", INBOUND_PORTS), ("outbound", OUTBOUND_PORTS))
                for p in ports]

    def ctx(self) -> CheckContext:
        return dataclasses.replace(self.context, facts=self.facts, results=self.results)

    def input(self, check: Check | None = None) -> CheckInput:
        """What the run knows so far, as a check reads it (probes only for one that uses them,
        once all are in; `lookups`: what the check's own lookups returned)."""
        task = self._looked_up.get(check.name) if check is not None else None
        return CheckInput(
            self.host.name if self.host else ",".join(self.context.domains),
            self.host.address if self.host else "", self.results, self.facts,
            addresses=dict(self.addresses),
            probes=self.probes() if check is None or check.uses_probes else None,
            sources=dict(self.sources),
            ssh_error=self.ssh_error if check is None or check.ssh != "none" else None,
            lookups=task.result() if task is not None and task.done() and not task.cancelled()
            and task.exception() is None else None)

    def lookup_error(self, check: Check) -> BaseException | None:
        """What crashed the check's lookups, if anything did."""
        task = self._looked_up.get(check.name)
        return task.exception() if task is not None and task.done() and not task.cancelled() else None

    # --- running ------------------------------------------------------------------
    async def start(self) -> None:
        self.lookups = {c.name: lk for c in self.checks if (lk := c.lookups(self.context)) is not None}
        if self.host is not None and (self.connects or self.probing or self.lookups):
            self.addresses = await resolve(self.host.address)
        self._facts = asyncio.get_running_loop().create_future()
        if self.probing and "ipv4" in self.addresses:
            self._probe("ipv4")
        if self.connects:
            self._ssh = asyncio.create_task(self._run_ssh())
        else:
            self._facts_known()
        self._poll()

    async def wait(self) -> None:
        """Until one more input is in. Re-raises what crashed a probe (not a result)."""
        pending = [f for f in (self._facts, self._round, self._ssh, *self._probes.values(),
                               *self._looked_up.values()) if f is not None and not f.done()]
        if not pending:
            raise RuntimeError("waiting for inputs, but every input is in")
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for f in done:
            if f not in self._looked_up.values():  # a crashed lookup is its check's error
                f.result()
        self._poll()

    async def close(self) -> None:
        """Cancel what still runs (e.g. the caller's timeout) and wait for it: nothing
        is left behind."""
        tasks = [t for t in (self._ssh, *self._probes.values(), *self._looked_up.values())
                 if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(lk.close() for lk in self.lookups.values()), return_exceptions=True)

    def _poll(self) -> None:
        """Tell each check's lookups what is in now; ask for the result of those whose
        check has its other inputs."""
        for check in self.checks:
            lk = self.lookups.get(check.name)
            if lk is None or check.name in self._looked_up:
                continue
            inp = self.input(check)
            if self.inputs_in(check):
                self._looked_up[check.name] = asyncio.create_task(lk.result(inp))
            else:
                lk.update(inp)

    def _probe(self, family: str) -> None:
        self._probes[family] = asyncio.create_task(
            self.prober.probe(family, self.addresses[family], INBOUND_PORTS))

    def _facts_known(self) -> None:
        """The facts are in (or SSH failed): the addresses are final, the rest can start."""
        if self.facts_in:
            return
        for family in ("ipv4", "ipv6"):
            addr = self.facts.global_address(family)
            if family not in self.addresses and addr:
                self.addresses[family] = addr
            if self.probing and family in self.addresses and family not in self._probes:
                self._probe(family)
        self.sources = {f: route_source(a) for f, a in self.addresses.items()}
        self._facts.set_result(None)

    async def _run_ssh(self) -> None:
        try:
            transport = self.connect(self.host)
        except MailcheckError as e:
            self.ssh_error = str(e)
            self._facts_known()
            return
        try:
            await self._batches(transport)
        except TransportError as e:
            self.ssh_error = f"{type(e).__name__}: {e.args[0] if e.args else e}"
        finally:
            try:
                await transport.close()
            except Exception:  # noqa: BLE001 - closing a broken connection must not mask the result
                pass
        self._facts_known()

    async def _batches(self, transport: Transport) -> None:
        first = await transport.run(facts.commands(), step="connect")
        self.results.update({r.command.argv: r for r in first})
        self.facts = facts.read_facts(self.results)
        self._facts_known()
        for _ in range(MAX_ROUNDS):
            batch = self.commands()
            if not batch:
                break
            names = "+".join(c.name for c in self.checks if c.ssh != "none")
            self._round = asyncio.get_running_loop().create_future()
            rest = await transport.run(batch, step=names)
            if all(r.exit_status is None for r in rest):  # the channel died before any exit status
                raise ConnectionLost("the connection dropped while the commands ran "
                                     "(no command reported an exit status)", host=self.host.name)
            self.results.update({r.command.argv: r for r in rest})
            self.rounds += 1
            self._round.set_result(None)

    def commands(self) -> list[Command]:
        """The commands every check that reads SSH asks for now and that have not run,
        deduplicated by argv, each within the command budget."""
        ctx = self.ctx()
        seen: dict[tuple[str, ...], Command] = {}
        for check in self.checks:
            if check.ssh == "none":
                continue
            for cmd in check.commands(ctx):
                if cmd.argv not in seen and cmd.argv not in self.results:
                    seen[cmd.argv] = dataclasses.replace(cmd, timeout=min(cmd.timeout, self.command_timeout))
        return list(seen.values())


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

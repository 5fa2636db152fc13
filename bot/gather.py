"""The I/O of one check run: the SSH round trips, the outside probes and lookups, concurrently.

One SSH connection per host. First a tiny round trip for the host facts (addresses,
distro, init system), so the IPv6 probes can start at once; then one batch of the
commands of every check that reads local state, and beside it, on channels of their
own, the commands of each check whose commands wait on the network (`own_batch`: nc to
a filtered port, curl at a metadata address), so those hold back no other step (a
command two checks ask for runs once). The IPv4 probes start before SSH does; mailcheck resolves the outbound targets while
SSH connects, and asks who holds the host's address (RDAP/whois) when a check reads
it. Each input is in as soon as it arrives; `wait()` returns when one more arrived. A
transport failure is kept as `ssh_error`; the probes still report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
from collections.abc import Sequence

from bot.checks import facts
from bot.checks.base import Check, CheckContext
from bot.checks.facts import HostFacts
from bot.errors import ConnectionLost, MailcheckError, TransportError
from bot.models import INBOUND_PORTS, OUTBOUND_PORTS, Command, CommandResult, PortStatus
from bot.outbound import Lookup, Target, resolve_targets, system_lookup
from bot.owner import Owner, OwnerLookup
from bot.probes import Prober, ProbeReport, route_source
from bot.transport import Connect, Transport
from config.inventory import Host


class Gather:
    def __init__(self, host: Host, checks: Sequence[Check], *, connect: Connect, prober: Prober,
                 command_timeout: float, outbound: tuple[Target, ...] | None = None,
                 lookup: Lookup = system_lookup, owners: OwnerLookup | None = None) -> None:
        """`outbound`: the targets as given (None: the outbound test is off), resolved here
        with `lookup`; `owners`: how to ask who holds the host's address."""
        self.host, self.checks, self.connect, self.prober = host, list(checks), connect, prober
        self.command_timeout, self.lookup, self.owners = command_timeout, lookup, owners
        self.outbound = outbound
        self.connects = any(c.ssh == "required" for c in checks)
        self.probing = any(c.uses_probes for c in checks)
        self.results: dict[tuple[str, ...], CommandResult] = {}
        self.facts = HostFacts()
        self.addresses: dict[str, str] = {}  # family -> the address probed
        self.sources: dict[str, str | None] = {}  # family -> the prober's source address
        self.ssh_error: str | None = None
        self._facts: asyncio.Future[None] | None = None
        self._checks: dict[str, set[asyncio.Task[None]]] = {}  # check name -> the batches it reads
        self._ssh: asyncio.Task[None] | None = None
        self._targets: asyncio.Task[tuple[Target, ...]] | None = None
        self._owner: asyncio.Task[Owner] | None = None
        self._probes: dict[str, asyncio.Task[ProbeReport]] = {}
        self._probe_report: ProbeReport | None = None

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

    def batch_in(self, check: Check) -> bool:
        """Are the SSH results `check` reads in (its batch, and the ones it shares)?"""
        tasks = self._checks.get(check.name)
        return self.ssh_in or (self.facts_in and tasks is not None and all(
            t.done() and not t.cancelled() and t.exception() is None for t in tasks))

    @property
    def owner_in(self) -> bool:
        return self.facts_in and (self._owner is None or self._owner.done())

    def ready(self, check: Check) -> bool:
        """Are the inputs `check` declared in (its SSH results, the probes, the owner)?"""
        return (self.facts_in and (check.ssh == "none" or self.batch_in(check))
                and (not check.uses_probes or self.probes_in)
                and (not check.uses_owner or self.owner_in))

    def owner(self) -> Owner | None:
        """Who holds the probed address (None when not asked)."""
        return self._owner.result() if self._owner is not None and self._owner.done() else None

    def targets(self) -> tuple[Target, ...] | None:
        """The outbound targets, resolved (as given while resolution runs; None: off)."""
        if self._targets is not None and self._targets.done():
            return self._targets.result()
        return self.outbound

    def probes(self) -> ProbeReport | None:
        """Every family's probes merged, once all are in (None when none ran)."""
        if self._probe_report is None and self._probes and self.probes_in:
            report = ProbeReport()
            for task in self._probes.values():
                report = report.merge(task.result())
            self._probe_report = report
        return self._probe_report

    def base_ports(self) -> list[PortStatus]:
        families = ["ipv4"] + (["ipv6"] if "ipv6" in self.addresses else [])
        return [PortStatus(port=p, direction=d, family=f)
                for f in families
                for d, ports in (("inbound", INBOUND_PORTS), ("outbound", OUTBOUND_PORTS))
                for p in ports]

    # --- running ------------------------------------------------------------------
    async def start(self) -> None:
        self.addresses = await resolve(self.host.address)
        self._facts = asyncio.get_running_loop().create_future()
        if self.probing and "ipv4" in self.addresses:
            self._probe("ipv4")
        address = self.addresses.get("ipv4") or self.addresses.get("ipv6")
        if self.owners is not None and address and any(c.uses_owner for c in self.checks):
            self._owner = asyncio.create_task(self.owners.lookup(address))
        if self.connects:
            if self.outbound:
                self._targets = asyncio.create_task(resolve_targets(self.outbound, self.lookup))
            self._ssh = asyncio.create_task(self._run_ssh())
        else:
            self._facts_known()

    async def wait(self) -> None:
        """Until one more input is in. Re-raises what crashed a probe or a lookup (not a
        result); a check's SSH batch that failed is the SSH task's error (`ssh_error`)."""
        batches = {t for tasks in self._checks.values() for t in tasks}
        pending = [f for f in (self._facts, self._ssh, self._owner, *batches, *self._probes.values())
                   if f is not None and not f.done()]
        if not pending:
            raise RuntimeError("waiting for inputs, but every input is in")
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for f in done:
            if f not in batches:
                f.result()

    async def close(self) -> None:
        """Cancel what still runs (e.g. the caller's timeout) and wait for it: nothing
        is left behind."""
        tasks = [t for t in (self._ssh, self._targets, self._owner, *self._probes.values())
                 if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
        if self._targets is not None:
            await self._targets
        ctx = self.context()
        ssh = [c for c in self.checks if c.ssh != "none"]
        group = {c.name: c.name if c.own_batch else "+".join(x.name for x in ssh if not x.own_batch)
                 for c in ssh}
        wanted = {c.name: self._budget(c.commands(ctx)) for c in ssh}
        owner: dict[tuple[str, ...], str] = {}  # argv -> the batch it runs in
        commands: dict[str, dict[tuple[str, ...], Command]] = {g: {} for g in group.values()}
        for name, cmds in wanted.items():
            for cmd in cmds:
                owner.setdefault(cmd.argv, group[name])
                commands[owner[cmd.argv]].setdefault(cmd.argv, cmd)
        batches = {g: asyncio.create_task(self._run(transport, list(cmds.values()), g))
                   for g, cmds in commands.items()}
        for check in ssh:
            needs = {batches[owner[c.argv]] for c in wanted[check.name]} | {batches[group[check.name]]}
            self._checks[check.name] = needs
        try:
            await asyncio.gather(*batches.values())
        except BaseException:
            for task in batches.values():
                task.cancel()
            raise

    async def _run(self, transport: Transport, batch: list[Command], step: str) -> None:
        if not batch:
            return
        rest = await transport.run(batch, step=step)
        if all(r.exit_status is None for r in rest):  # the channel died before any exit status
            raise ConnectionLost("the connection dropped while the commands ran "
                                 "(no command reported an exit status)", host=self.host.name)
        self.results.update({r.command.argv: r for r in rest})

    def context(self) -> CheckContext:
        return CheckContext(self.facts, self.targets(), dict(self.sources), dict(self.results))

    def _budget(self, commands) -> list[Command]:
        """Deduplicated by argv (and against what already ran), each within the command budget."""
        seen: dict[tuple[str, ...], Command] = {}
        for cmd in commands:
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

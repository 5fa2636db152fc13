"""The I/O of one check run: the SSH round trips, the outside probes and the lookups,
concurrently.

One SSH connection per host. First a tiny round trip for the host facts (addresses,
distro, init system), so the IPv6 probes can start at once; then one batch of the
commands of every check that reads local state, and beside it, on channels of their
own, the commands of each check whose commands wait on the network (`own_batch`: nc to
a filtered port, curl at a metadata address, dig at a silent nameserver), so those hold
back no other step (a command two checks ask for runs once). Each batch is followed by
another round only while one of its checks asks for commands it could not know before
(a key file its signer's configuration names). The IPv4 probes start before SSH does;
mailcheck resolves the outbound targets while SSH connects, and asks who holds the
host's address (RDAP/whois) when a check reads it. A check's own lookups
(`Check.lookups`) start with the run and are told of each input as it arrives. Each
input is in as soon as it arrives: `wait()` returns when one more arrived. A transport
failure is kept as `ssh_error`; the probes and lookups still report. Without a host (a
domain alone) there is no SSH and no probe, only lookups.
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
from bot.outbound import Lookup, Target, resolve_targets, resolver_lookup
from bot.owner import Owner, OwnerLookup
from bot.probes import Prober, ProbeReport, route_source
from bot.transport import Connect, Transport
from config.inventory import Host

MAX_ROUNDS = 3  # command rounds per batch after the facts: the batch, and at most two follow-ups


class Gather:
    def __init__(self, host: Host | None, checks: Sequence[Check], *, connect: Connect,
                 prober: Prober, command_timeout: float, context: CheckContext | None = None,
                 outbound: tuple[Target, ...] | None = None, lookup: Lookup | None = None,
                 owners: OwnerLookup | None = None) -> None:
        """`context`: the run's settings and named domains (facts, results, targets and
        sources are filled in as they arrive). `outbound`: the targets as given (None: the
        outbound test is off), resolved here with `lookup` (default: mailcheck's resolver as
        resolv.conf says); `owners`: how to ask who holds the host's address."""
        self.host, self.checks, self.connect, self.prober = host, list(checks), connect, prober
        self.command_timeout, self.context = command_timeout, context or CheckContext()
        self.outbound, self.lookup, self.owners = outbound, lookup or resolver_lookup(), owners
        self.connects = host is not None and any(c.ssh in ("required", "wanted") for c in checks)
        self.probing = host is not None and any(c.uses_probes for c in checks)
        self.results: dict[tuple[str, ...], CommandResult] = {}
        self.facts = HostFacts()
        self.addresses: dict[str, str] = {}  # family -> the address probed
        self.sources: dict[str, str | None] = {}  # family -> the prober's source address
        self.ssh_error: str | None = None
        self.rounds: dict[str, int] = {}  # check name -> command rounds of its batch back
        self.lookups: dict[str, Lookups] = {}
        self._facts: asyncio.Future[None] | None = None
        self._ssh: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()  # SSH batches on their way
        self._asked: set[tuple[str, ...]] = set()  # argv sent in some batch
        self._targets: asyncio.Task[tuple[Target, ...]] | None = None
        self._owner: asyncio.Task[Owner] | None = None
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

    @property
    def owner_in(self) -> bool:
        return self.facts_in and (self._owner is None or self._owner.done())

    def commands_in(self, check: Check) -> bool:
        """Are `check`'s SSH results in: SSH is over (or failed), or its batch came back and
        the results hold every command the check asks for now?"""
        if check.ssh == "none" or self.ssh_in:
            return self.facts_in
        return self.rounds.get(check.name, 0) > 0 and all(
            c.argv in self.results for c in check.commands(self.ctx()))

    def inputs_in(self, check: Check) -> bool:
        """Are the inputs `check` declared in (its SSH results, the probes, the owner)?"""
        return (self.facts_in and self.commands_in(check) and (not check.uses_probes or self.probes_in)
                and (not check.uses_owner or self.owner_in))

    def ready(self, check: Check) -> bool:
        """Its declared inputs and its own lookups are in."""
        task = self._looked_up.get(check.name)
        return self.inputs_in(check) and (check.name not in self.lookups or bool(task and task.done()))

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
        if self.host is None:
            return []
        families = ["ipv4"] + (["ipv6"] if "ipv6" in self.addresses else [])
        return [PortStatus(port=p, direction=d, family=f)
                for f in families
                for d, ports in (("inbound", INBOUND_PORTS), ("outbound", OUTBOUND_PORTS))
                for p in ports]

    def ctx(self) -> CheckContext:
        return dataclasses.replace(self.context, facts=self.facts, results=self.results,
                                   outbound=self.targets(), sources=dict(self.sources))

    def input(self, check: Check | None = None) -> CheckInput:
        """What the run knows so far, as a check reads it (probes only for one that uses them,
        once all are in; `lookups`: what the check's own lookups returned)."""
        task = self._looked_up.get(check.name) if check is not None else None
        return CheckInput(
            self.host.name if self.host else ",".join(self.context.domains),
            self.host.address if self.host else "", self.results, self.facts,
            addresses=dict(self.addresses),
            probes=self.probes() if check is None or check.uses_probes else None,
            outbound=self.targets(), sources=dict(self.sources),
            ssh_error=self.ssh_error if check is None or check.ssh != "none" else None,
            owner=self.owner() if check is not None and check.uses_owner else None,
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
        address = self.addresses.get("ipv4") or self.addresses.get("ipv6")
        if self.owners is not None and address and any(c.uses_owner for c in self.checks):
            self._owner = asyncio.create_task(self.owners.lookup(address))
        if self.connects:
            if self.outbound:
                self._targets = asyncio.create_task(resolve_targets(self.outbound, self.lookup))
            self._ssh = asyncio.create_task(self._run_ssh())
        else:
            self._facts_known()
        self._poll()

    async def wait(self) -> None:
        """Until one more input is in. Re-raises what crashed a probe or the owner lookup (not
        a result); a failed SSH batch is the SSH task's error (`ssh_error`), a crashed lookup
        its check's error."""
        quiet = self._running | set(self._looked_up.values())
        pending = [f for f in (self._facts, self._ssh, self._owner, *self._running,
                               *self._probes.values(), *self._looked_up.values())
                   if f is not None and not f.done()]
        if not pending:
            raise RuntimeError("waiting for inputs, but every input is in")
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for f in done:
            if f not in quiet:
                f.result()
        self._poll()

    async def close(self) -> None:
        """Cancel what still runs (e.g. the caller's timeout) and wait for it: nothing
        is left behind."""
        tasks = [t for t in (self._ssh, self._targets, self._owner, *self._probes.values(),
                             *self._looked_up.values()) if t is not None]
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
        """The facts, then the shared batch and each own_batch check's, concurrently."""
        first = await transport.run(facts.commands(), step="connect")
        self.results.update({r.command.argv: r for r in first})
        self.facts = facts.read_facts(self.results)
        self._facts_known()
        ssh = [c for c in self.checks if c.ssh != "none"]
        groups = [g for g in ([c for c in ssh if not c.own_batch], *([c] for c in ssh if c.own_batch)) if g]
        batches = [asyncio.create_task(self._rounds(transport, g)) for g in groups]
        try:
            await asyncio.gather(*batches)
        except BaseException:
            for task in batches:
                task.cancel()
            raise

    async def _rounds(self, transport: Transport, group: list[Check]) -> None:
        """One batch of `group`'s commands, then follow-up rounds while they ask for more."""
        if self._targets is not None and any(c.own_batch for c in group):
            await self._targets  # the outbound step's commands are built from the resolved targets
        names = "+".join(c.name for c in group)
        for _ in range(MAX_ROUNDS):
            batch = self.commands(group)
            if batch:
                self._asked |= {c.argv for c in batch}
                task = asyncio.create_task(self._run(transport, batch, names))
                self._running.add(task)
                await task
            for check in group:
                self.rounds[check.name] = self.rounds.get(check.name, 0) + 1
            if not batch:
                break

    async def _run(self, transport: Transport, batch: list[Command], step: str) -> None:
        rest = await transport.run(batch, step=step)
        if all(r.exit_status is None for r in rest):  # the channel died before any exit status
            raise ConnectionLost("the connection dropped while the commands ran "
                                 "(no command reported an exit status)", host=self.host.name)
        self.results.update({r.command.argv: r for r in rest})

    def commands(self, group: Sequence[Check] | None = None) -> list[Command]:
        """The commands the checks of `group` (default: every check that reads SSH) ask for
        now and that no batch has run or sent, deduplicated by argv, each within the command
        budget."""
        ctx = self.ctx()
        seen: dict[tuple[str, ...], Command] = {}
        for check in self.checks if group is None else group:
            if check.ssh == "none":
                continue
            for cmd in check.commands(ctx):
                if cmd.argv not in seen and cmd.argv not in self.results and cmd.argv not in self._asked:
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

"""The check contract: one step of the guide, declared so the engine needs no step's name.

A check is a class. It declares

- `name`: the step's name in the report; `needs`: the steps whose outcome and port
  updates it reads (the engine runs those first: `dependency_order`, a topological
  sort as Ansible's fact collectors use);
- `ssh`: "required" (its commands run over SSH and it cannot run without them: when
  SSH fails its outcome is an error naming host and step), "wanted" (the engine
  connects for its commands, but it also runs when SSH fails: `inp.ssh_error` says
  why), "optional" (it reads the results of its commands and whether SSH worked when
  the engine connects for another step, but never makes the engine connect) or "none";
- `uses_probes`: it reads the outside probes; `uses_owner`: it reads who holds the
  host's address (RDAP/whois, asked from where mailcheck runs);
- `own_batch`: its commands wait on the network (a filtered port, a silent server), so
  they run in a batch of their own and hold back no other step;
- `domain_only`: it can also run for a domain alone, with no host (`mailcheck dns
  DOMAIN`): no SSH, no probes, `inp.address` empty;

and implements `commands(ctx)` (the read-only commands it needs, as data, for a
context: the host's facts, what the facts round trip and earlier rounds returned, the
outbound targets, the prober's source addresses and the run's settings: a check may ask
for more commands once it has read the first ones, and the engine runs another round
while new ones are asked) and `evaluate(inp)`, a pure function from captured results to
a StepOutcome. A check that does network work of its own (DNS lookups) returns a
`Lookups` from `lookups(ctx)`: the engine starts it with the run, tells it of each input
as it arrives (`update`) so the lookups those inputs allow start at once, concurrently
with SSH and the probes, and when the check's other inputs are in, awaits `result(inp)`
and hands it to `evaluate` as `inp.lookups`. The engine runs each check as soon as the
inputs it declared are in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import ClassVar, Literal, Protocol

from bot.checks.facts import HostFacts
from bot.models import (
    Command,
    CommandResult,
    Finding,
    Fix,
    PortKey,
    PortStatus,
    PortUpdate,
    StepStatus,
)
from bot.outbound import Target
from bot.owner import Owner
from bot.probes import ProbeReport
from bot.transport import Connect
from config.inventory import Host
from config.settings import Settings

Results = Mapping[tuple[str, ...], CommandResult]
SSHUse = Literal["required", "wanted", "optional", "none"]


@dataclass(frozen=True)
class CheckContext:
    """What a check may base its commands and lookups on: the host's facts, the results of
    earlier rounds, and the run's settings."""

    facts: HostFacts = field(default_factory=HostFacts)
    outbound: tuple[Target, ...] | None = None  # resolved outbound targets; None: the test is off
    sources: Mapping[str, str | None] = field(default_factory=dict)  # family -> prober's source
    results: Results = field(default_factory=dict)  # the facts round trip's and earlier rounds'
    domains: tuple[str, ...] = ()  # the mail domains named for this run (inventory, --domain)
    domains_source: str = ""  # where they were named: "inventory", "--domain", "command"
    settings: Settings | None = None
    vantages: tuple[Host, ...] = ()  # the inventory's vantage points that probe this host too
    connect: Connect | None = None  # connect(vantage point): mailcheck's SSH, jump hosts included


@dataclass(frozen=True)
class CheckInput:
    host_name: str
    address: str
    results: Results
    facts: HostFacts
    addresses: Mapping[str, str] = field(default_factory=dict)  # family -> the address probed
    probes: ProbeReport | None = None  # only for a check that uses_probes
    ports: Mapping[PortKey, PortStatus] = field(default_factory=dict)  # with its needs' updates
    prior: Mapping[str, StepOutcome] = field(default_factory=dict)  # the outcomes of its needs
    outbound: tuple[Target, ...] | None = None  # resolved outbound targets; None: the test is off
    sources: Mapping[str, str | None] = field(default_factory=dict)  # family -> prober's source
    ssh_error: str | None = None  # why SSH failed, when the engine connected and it did
    owner: Owner | None = None  # who holds the host's address (only for a check that uses_owner)
    lookups: object = None  # what the check's own Lookups.result() returned


@dataclass
class StepOutcome:
    status: StepStatus
    summary: str
    evidence: str = ""
    findings: list[Finding] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    ports: dict[PortKey, PortUpdate] = field(default_factory=dict)
    error: str | None = None


class Lookups(Protocol):
    """A check's own network work in one run (see the module docstring)."""

    def update(self, inp: CheckInput) -> None:
        """New inputs arrived: start the lookups they allow (at once, without waiting)."""

    async def result(self, inp: CheckInput) -> object:
        """The check's other inputs are in: the finished work, for `evaluate`."""

    async def close(self) -> None:
        """Cancel what still runs."""


class Check:
    """One step of the guide. Subclasses set the class attributes and `evaluate`."""

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()
    ssh: ClassVar[SSHUse] = "none"
    uses_probes: ClassVar[bool] = False
    uses_owner: ClassVar[bool] = False
    own_batch: ClassVar[bool] = False
    domain_only: ClassVar[bool] = False

    def commands(self, ctx: CheckContext) -> list[Command]:
        """The read-only commands this step needs on the host (none by default)."""
        return []

    def lookups(self, ctx: CheckContext) -> Lookups | None:
        """This run's network work of the check's own (none by default)."""
        return None

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<check {self.name}>"


def status_of(findings: list[Finding]) -> StepStatus:
    if any(f.severity in ("error", "critical") for f in findings):
        return "fail"
    if any(f.severity == "warning" for f in findings):
        return "warn"
    return "ok"


def dependency_order(checks: Sequence[Check]) -> list[Check]:
    """The checks in the given order, except that each comes after the steps it needs
    (a stable topological sort). Raises ValueError for a need no check provides, or a
    cycle of needs."""
    by_name = {c.name: c for c in checks}
    if len(by_name) != len(checks):
        raise ValueError(f"two checks share a name: {[c.name for c in checks]}")
    for c in checks:
        if missing := [n for n in c.needs if n not in by_name]:
            raise ValueError(f"step {c.name} needs {', '.join(missing)}, which no check provides")
    try:
        TopologicalSorter({c.name: c.needs for c in checks}).prepare()
    except CycleError as e:
        raise ValueError(f"the steps' needs form a cycle: {' -> '.join(e.args[1])}") from e
    out: list[Check] = []
    rest = list(checks)
    while rest:  # no cycle: some check always has all it needs placed
        first = next(c for c in rest if all(n in {x.name for x in out} for n in c.needs))
        out.append(first)
        rest.remove(first)
    return out


def closure(checks: Iterable[Check], names: Iterable[str]) -> set[str]:
    """`names` and every step they need, transitively."""
    by_name = {c.name: c for c in checks}
    out: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo += by_name[name].needs if name in by_name else []
    return out

"""The one planner algorithm every firewall backend shares.

A backend (iptables.py, nft.py, ufw.py, firewalld.py next to this module) says
only what is its own: the places it edits (`owns`), the edit that should open
some ports at a place (`change_for`, a second way on a second attempt), what
that edit does to the model (`apply`), its commands and their undo
(`commands`), its preconditions and its persistence. This module does the rest,
the same for every backend:

- the search, step by step on a COPY of the ruleset: take the first port the
  evaluator still blocks, group the ports decided at the same point, ask the
  backend for an edit there, apply it to the copy and keep it only when it
  moved some of them (narrowed to the ports it moved); a place the backend
  does not own, or an edit it refuses, becomes a note;
- the guard: a plan is offered only when the copy then allows ports it
  blocked, and nothing that was allowed stops being allowed — SSH from the
  prober above all (inbound 22 of every family the plan touches is checked);
- the Fix: the commands in order, the rollback in reverse order, the
  persistence, the preconditions, what it opens and which rules it undoes.
"""

from __future__ import annotations

import copy
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bot.firewall.analysis import AnalysisContext, Endpoints, PortVerdict, ends_for, port_verdict
from bot.firewall.evaluate import Outcome
from bot.firewall.model import Addr, Rule, Ruleset, Table, flat_matches
from bot.firewall.parse import Results
from bot.models import BackupSpec, Command, Finding, Fix, PortKey, Precondition

MAIL_PORTS = frozenset({25, 465, 587, 143, 993})
SSH_PORT = 22
MAX_STEPS = 12

Argv = list[str]
Change = Any  # a backend's own description of one edit; it has a `reason` (str) for the summary


@dataclass
class PlannedFixes:
    """A planner's answer: the fixes it offers, and for people what it did not plan and why."""

    fixes: list[Fix] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- helpers on the model the backends share ----------------------------------------------------

def is_source_specific(rule: Rule, chain_name: str = "") -> bool:
    """A ban or an allow-list entry: tied to some source addresses (or a fail2ban chain)."""
    if chain_name.startswith(("f2b-", "fail2ban", "sshguard", "crowdsec")):
        return True
    return any(isinstance(m, Addr) and m.field == "saddr" and not m.negate
               and not set(m.networks) <= {"0.0.0.0/0", "::/0"} for m in flat_matches(rule))


# Rules a container engine writes and rewrites itself (its own chains and tables): never a
# place for a mailcheck fix, and never saved to a rules file (their addresses change with the
# containers). DOCKER-USER is the user's: Docker creates it and never touches its rules.
ENGINE_TABLES = {("ip", "docker-bridges"): "Docker", ("ip6", "docker-bridges"): "Docker",
                 ("inet", "netavark"): "Podman (netavark)"}
ENGINE_CHAINS = {"DOCKER": "Docker", "NETAVARK": "Podman (netavark)"}


def engine_of(table: Table, chain: str | None = None) -> str | None:
    """The container engine that owns this nft table or iptables chain, if one does."""
    if (owner := ENGINE_TABLES.get((table.family, table.name))) is not None:
        return owner
    if chain is None or chain == "DOCKER-USER":
        return None
    return next((engine for prefix, engine in ENGINE_CHAINS.items() if chain.startswith(prefix)), None)


def engines_in(ruleset: Ruleset, family: str) -> list[str]:
    """The container engines whose rules this family's tables hold (for persistence notes)."""
    return sorted({e for t in ruleset.tables if t.family in (family, "inet")
                   for e in [engine_of(t), *(engine_of(t, c) for c in t.chains)] if e})


def engine_note(table: Table, chain: str) -> str | None:
    """Why a place an engine owns gets no fix (None: not an engine's)."""
    engine = engine_of(table, chain)
    if engine is None:
        return None
    return (f"decided in {table.label} chain {chain}, which {engine} writes and rewrites: open the port "
            f"through {engine} (publish it)" + (" or in DOCKER-USER" if engine == "Docker" else ""))


def ports_text(ports: Iterable[int]) -> str:
    return ",".join(map(str, ports))


def labels(keys: Iterable[PortKey]) -> str:
    """'inbound 25/IPv4, inbound 465/IPv4'."""
    return ", ".join(f"{k.direction} {k.label}" for k in keys)


def button_label(changes: list[Change], opened: Iterable[PortKey]) -> str:
    """What the fix does, in a few words: the changes' own labels when each has one
    ('Delete INPUT rule 2 + OUTPUT rule 1'), else the ports it opens
    ('Open 25,143 in + 25,465,587 out (IPv4)')."""
    own = [getattr(c, "label", None) for c in changes]
    if own and all(own):
        words = [own[0]]
        for prev, this in zip(own, own[1:], strict=False):
            verb = prev.split(" ", 1)[0]
            words.append(this[len(verb) + 1:] if this.startswith(verb + " ") else this)
        return " + ".join(words)
    keys = sorted(set(opened))
    parts = [f"{ports_text(sorted({k.port for k in keys if k.direction == d}))} {arrow}"
             for d, arrow in (("inbound", "in"), ("outbound", "out")) if any(k.direction == d for k in keys)]
    families = sorted({"IPv6" if k.family == "ipv6" else "IPv4" for k in keys})
    return f"Open {' + '.join(parts)} ({', '.join(families)})"


def decided_at(pv: PortVerdict) -> Outcome | None:
    """The place (table, chain, rule or policy) that decided pv, when the evaluator names one."""
    at = pv.deciding
    return at if at is not None and at.table is not None and at.chain is not None else None


def place(at: Outcome) -> str:
    """Where a verdict was decided, in the firewall's words."""
    chain = f"{at.table.label} chain {at.chain.name}"
    return f"the policy of {chain}" if at.rule is None else chain


def owner_of(planners: Iterable[Planner], at: Outcome) -> Planner | None:
    """The planner that edits this place: the first active one that owns it, front-ends first."""
    ordered = sorted(planners, key=lambda p: not p.frontend)
    return next((p for p in ordered if p.active and p.owns(at)), None)


def verdicts(ruleset: Ruleset, keys: Iterable[PortKey], ends: Mapping[str, Endpoints]) -> dict[PortKey, PortVerdict]:
    return {k: port_verdict(ruleset, k, ends_for(k, ends[k.family])) for k in keys}


def digest(value: object) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:10]


# --- the planner -------------------------------------------------------------------------------

class Planner(ABC):
    """One firewall backend's planner. Subclasses fill in what is theirs; `plan` is the same for all.

    Ownership: a place (table, chain, rule or policy) is edited by the first active planner
    that `owns` it, front-ends first (owner_of): ufw's chains are ufw's although they are
    iptables chains. The analysis gives each blocked port to that planner; the search leaves
    a place that became another planner's on the way with a note.
    """

    name: ClassVar[str]  # the Fix's backend and id prefix
    per_family: ClassVar[bool] = False  # one Fix per address family (iptables / ip6tables)
    reads: ClassVar[tuple[Command, ...]] = ()  # read-only commands it needs besides the ruleset's
    frontend: ClassVar[bool] = False  # manages rules for the admin (ufw, firewalld): its places come first
    active: bool = True  # in use on this host (ufw enabled, firewalld running): else it owns and plans nothing
    others: tuple[Planner, ...] = ()  # the other planners on this host (set by the registry)

    @classmethod
    def follow_ups(cls, results: Results | None) -> tuple[Command, ...]:
        """Read-only commands it asks for once it has read `results` (earlier rounds)."""
        return ()

    @classmethod
    @abstractmethod
    def for_host(cls, results: Results, context: AnalysisContext) -> Planner:
        """The planner for this host, from the collected output (`reads` among it)."""

    @abstractmethod
    def owns(self, at: Outcome) -> bool:
        """Is this place (table, chain, rule or policy) one that this backend edits?"""

    @abstractmethod
    def change_for(self, pv: PortVerdict, ports: list[int], attempt: int, ends: Endpoints) -> Change | str:
        """The edit that should open `ports` where pv is decided (attempt 0, or 1: another way), or why none."""

    @abstractmethod
    def apply(self, ruleset: Ruleset, change: Change) -> None:
        """The change on a (copied) model, as the kernel will have it after the commands."""

    @abstractmethod
    def commands(self, change: Change) -> tuple[list[Argv], list[Argv]]:
        """(commands, their exact undo in the order it runs)."""

    @abstractmethod
    def preconditions(self, ruleset: Ruleset, changes: list[Change], notes: list[str]) -> list[Precondition] | None:
        """What must still be as planned when the fix is applied; None (with a note): no plan."""

    def persistence(self, ruleset: Ruleset, changes: list[Change], notes: list[str]
                    ) -> tuple[list[Argv], list[Argv]]:
        """(commands that make the change survive a reboot, their undo at the end of the rollback)."""
        return [], []

    def backup(self, changes: list[Change]) -> BackupSpec | None:
        """What the fix's backup holds (bot.models.BackupSpec; `undo` is filled in by the
        base from `commands`). None: not declared, and mailcheck refuses to apply the fix."""
        return None

    def keeps(self, table: Table) -> bool:
        """A front-end: does it keep this table's rules in its own configuration (so no other
        planner writes them to a rules file)?"""
        return False

    def kept_by(self, table: Table) -> Planner | None:
        """The other planner that keeps this table's rules in its own configuration, if any."""
        return next((p for p in self.others if p.keeps(table)), None)

    def missing(self) -> str | None:
        """What this planner lacks to plan anything at all (said in a note), or None."""
        return None

    def assemble(self, changes: list[Change]) -> tuple[list[Argv], list[Argv]]:
        """The fix's commands and rollback: each change's commands in order, their undo in reverse.
        (A manager whose changes edit one file and reload once assembles its own.)"""
        steps = [self.commands(c) for c in changes]
        return [argv for do, _ in steps for argv in do], [argv for _, undo in reversed(steps) for argv in undo]

    def setting(self, pv: PortVerdict, ends: Endpoints) -> str | None:
        """A manager's own words for what decides pv at a place it owns (CSF's TCP_IN, a firewalld
        zone, a fail2ban jail), for the finding; None when it has none."""
        return None

    def findings(self, ruleset: Ruleset) -> list[Finding]:
        """What this manager's state means beyond single ports (IPv6 left open, rules it flushes)."""
        return []

    def backend_for(self, families: tuple[str, ...]) -> str:
        return self.name

    # --- the algorithm ---------------------------------------------------------------------------

    def plan(self, ruleset: Ruleset, blocked: Iterable[tuple[str, str, int]],
             ends: Mapping[str, Endpoints]) -> PlannedFixes:
        """Fixes for the blocked keys; `ends` per family as in the analysis.

        Only the keys are used: the verdicts are recomputed on the model, so that
        before and after are comparable.
        """
        out = PlannedFixes()
        if not self.active:
            return out
        if (why := self.missing()) is not None:
            out.notes.append(why)
            return out
        keys = sorted({PortKey(*k) for k in blocked if k[1] in ends})
        families = [f for f in ends if any(k.family == f for k in keys)]
        scopes = [(f,) for f in ("ipv4", "ipv6") if f in families] if self.per_family else [tuple(ends)]
        for scope in scopes:
            fix = self._plan_scope(ruleset, [k for k in keys if k.family in scope], {f: ends[f] for f in scope},
                                   out.notes)
            if fix is not None:
                out.fixes.append(fix)
        return out

    def _plan_scope(self, ruleset: Ruleset, keys: list[PortKey], ends: Mapping[str, Endpoints],
                    notes: list[str]) -> Fix | None:
        backend = self.backend_for(tuple(ends))
        wanted = sorted(set(keys) | {PortKey("inbound", f, SSH_PORT) for f in ends})
        before = verdicts(ruleset, wanted, ends)
        for k in keys:
            if before[k].verdict == "unknown":
                reason = "; ".join(before[k].reasons)[:300]
                notes.append(f"{labels([k])}: not planned: the firewall's verdict is unknown ({reason})")
        targets = [k for k in keys if before[k].verdict == "block"]
        if not targets:
            return None
        work, changes = self._search(ruleset, targets, ends, notes)
        if not changes:
            return None
        after = verdicts(work, wanted, ends)
        lost = [k for k in wanted if before[k].verdict == "allow" and after[k].verdict != "allow"]
        if lost:
            notes.append(f"{backend}: plan refused: it would stop allowing {labels(lost)}")
            return None
        opened = [k for k in targets if after[k].verdict == "allow"]
        if not opened:
            notes.append(f"{backend}: no plan: the edits found would not open any blocked port")
            return None
        return self._fix(ruleset, backend, changes, opened, before, notes)

    def _search(self, ruleset: Ruleset, targets: list[PortKey], ends: Mapping[str, Endpoints],
                notes: list[str]) -> tuple[Ruleset, list[Change]]:
        """Step by step on a copy: the changed copy and the changes that helped, in order."""
        work = copy.deepcopy(ruleset)
        changes: list[Change] = []
        skipped: set[PortKey] = set()
        attempts: dict[tuple, int] = {}
        for _ in range(MAX_STEPS):
            now = verdicts(work, [k for k in targets if k not in skipped], ends)
            still = sorted(k for k, v in now.items() if v.verdict == "block")
            if not still:
                break
            first = now[still[0]]
            group = [k for k in still if now[k].point == first.point]
            ports = sorted({k.port for k in group})
            attempt = attempts.get(first.point, 0)
            attempts[first.point] = attempt + 1
            change = self._change_at(first, ports, attempt, ends[first.key.family])
            if isinstance(change, str):
                notes.append(f"{labels(group)}: not planned: {change}")
                skipped |= set(group)
                continue
            trial, moved = self._try(work, change, group, first.point, ends)
            if not moved:
                continue  # no effect (e.g. an append the packet never reaches): try the next way
            if len(moved) < len(ports):  # only the ports it helps
                narrow = self.change_for(first, moved, attempt, ends[first.key.family])
                if not isinstance(narrow, str) and narrow != change:
                    narrow_trial, narrow_moved = self._try(work, narrow, group, first.point, ends)
                    if narrow_moved == moved:
                        change, trial = narrow, narrow_trial
            work = trial
            changes.append(change)
        return work, changes

    def _change_at(self, pv: PortVerdict, ports: list[int], attempt: int, ends: Endpoints) -> Change | str:
        at = decided_at(pv)
        if at is None:
            return "no deciding rule"
        if owner_of((self, *self.others), at) is not self:
            return f"decided in {place(at)}, which {self.name} fixes do not edit"
        if attempt >= 2:
            return "no edit opens it"
        return self.change_for(pv, ports, attempt, ends)

    def _try(self, work: Ruleset, change: Change, group: list[PortKey], point: tuple,
             ends: Mapping[str, Endpoints]) -> tuple[Ruleset, list[int]]:
        """The change on a copy of `work`, and the ports of `group` it moved from `point`."""
        trial = copy.deepcopy(work)
        self.apply(trial, change)
        after = verdicts(trial, group, ends)
        return trial, sorted({k.port for k, v in after.items() if not (v.verdict == "block" and v.point == point)})

    def _fix(self, ruleset: Ruleset, backend: str, changes: list[Change], opened: list[PortKey],
             before: Mapping[PortKey, PortVerdict], notes: list[str]) -> Fix | None:
        pre = self.preconditions(ruleset, changes, notes)
        if pre is None:
            return None
        persist, undo_persist = self.persistence(ruleset, changes, notes)
        commands, undo = self.assemble(changes)
        spec = self.backup(changes)
        return Fix(
            id=f"{backend}-{digest(commands)}", kind="firewall", backend=backend,
            summary=f"{backend}: open {labels(opened)}: " + "; ".join(c.reason for c in changes),
            label=button_label(changes, opened),
            commands=commands, rollback=undo + undo_persist, persist=persist, preconditions=pre,
            backup=spec.model_copy(update={"undo": undo}) if spec is not None else None,
            expected_allow=opened,
            findings=sorted({before[k].blocked_by or "" for k in opened} - {""}),
        )


@dataclass(eq=False)
class FrontEnd(Planner):
    """A front-end that manages the rules for the admin (ufw, firewalld): built from its own status.

    Its places come before the iptables / nft planners' (owner_of), and it is reported as the
    firewall in charge while `active`.
    """

    frontend: ClassVar[bool] = True
    in_charge: ClassVar[bool] = True  # reported as the firewall in charge (fail2ban: only its bans)
    read_status: ClassVar[Callable[[Results], Any]]  # its status (with .active), from the output of `reads`
    # read only once `reads` show it in use: each is a Python program's start (~0.1 s of the
    # host's CPU), wasted on the many hosts where the tool is installed but does not run
    then_reads: ClassVar[tuple[Command, ...]] = ()
    status: Any

    @classmethod
    def follow_ups(cls, results: Results | None) -> tuple[Command, ...]:
        """`then_reads` when `results` (what earlier rounds returned) show it active; all of
        them for None (a corpus recording wants every answer)."""
        if results is None or not cls.then_reads:
            return cls.then_reads
        if any(c.argv not in results for c in cls.reads):
            return ()
        return cls.then_reads if cls.read_status(results).active else ()

    @property
    def active(self) -> bool:
        return bool(self.status.active)

    @classmethod
    def for_host(cls, results: Results, context: AnalysisContext) -> FrontEnd:
        return cls(cls.read_status(results))

"""nft fixes for native nftables tables: one Fix for both families (an inet table serves both).

Owns every native nft table; an active front-end owns its own first (firewalld:
`table inet firewalld`, see firewalld.py). The
search (base.py) goes on until no blocking base chain is left: every base
chain on the hook must accept. At the place that decides a blocked port:

- A blocking drop/reject rule (in a base chain or a user chain): insert an
  accept right before it, by handle:
      nft insert rule F T C position H tcp dport { 25, 465 } accept comment "mailcheck-…"
  (never delete it: an nft rule may cover other ports, sources, anything).
  A rule tied to source addresses (a ban, an allow-list) is reported, not planned.
- A drop policy: `nft add rule F T C ...` at the end of the base chain; when
  the policy is reached through a goto (the end of the goto'd chain returns
  to the policy), insert before that goto instead.
- Replies blocked (no `ct state established` accept): accept the mail ports'
  ESTABLISHED packets in the chain that drops them.

Rollback is exact without knowing the new handle at plan time: every rule
added carries a unique comment (`mailcheck-<digest>`), and the rollback
deletes the rule(s) of that chain bearing it, by the handle `nft -a list
chain` shows then: a fixed `sh -c` line whose only variable words are the
family, table and chain names, validated as nft identifiers. (`nft -e -a`
echoes the handle only at apply time; restoring a saved ruleset with
`flush ruleset; nft -f` would also undo whatever else changed meanwhile —
fail2ban bans — and cannot reload iptables-nft's xt rules.)

Preconditions: each edited chain's `nft -a list chain F T C`, normalised by
nft.normalize_nft, hashes as it did when planned (cut from the `nft -a list
ruleset` listing: a plan needs it). Persistence: the native tables (not
iptables-nft's, not firewalld's) are written to /etc/nftables.conf (RHEL:
/etc/sysconfig/nftables.conf) as `table F T; delete table F T; <nft list
table F T>` per table, checked with `nft -c -f` before it replaces the file;
the old file is kept as <file>.mailcheck-<digest> (or <file>.mailcheck-<digest>.absent
when there was none), taken once: a rollback restores the tables, then runs the persist again
(bot/fixes/rollback.py), which writes the restored tables to the file and keeps that copy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.firewall.analysis import AnalysisContext, Endpoints, PortVerdict
from bot.firewall.evaluate import Outcome
from bot.firewall.model import Port, Ruleset, Table
from bot.firewall.parse import NFT_LISTING, Results, ok_output
from bot.firewall.parse.firewalld import FirewalldStatus
from bot.firewall.parse.nft import chain_listing, normalize_nft, rules_of
from bot.firewall.parse.nft_expr import Sets
from bot.firewall.plan.base import (
    Argv,
    PlannedFixes,
    Planner,
    digest,
    engine_note,
    engine_of,
    is_source_specific,
    ports_text,
)
from bot.firewall.plan.firewalld import FirewalldPlanner
from bot.models import BackupSpec, Precondition

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
PERSIST_FILES = {"debian": "/etc/nftables.conf", "rhel": "/etc/sysconfig/nftables.conf"}


@dataclass(frozen=True)
class NftChange:
    family: str  # nft family of the table: ip | ip6 | inet
    table: str
    chain: str
    before: int | None  # handle to insert before; None: add at the end
    ports: tuple[int, ...]
    reply: bool
    reason: str
    forwarded: bool = False  # published ports (DNAT, FORWARD): matched by conntrack's original port

    @property
    def tag(self) -> str:
        key = repr((self.family, self.table, self.chain, self.ports, self.reply)) + ("fwd" if self.forwarded else "")
        return "mailcheck-" + hashlib.sha256(key.encode()).hexdigest()[:10]

    def words(self) -> list[str]:
        ports = str(self.ports[0]) if len(self.ports) == 1 else "{ " + ", ".join(map(str, self.ports)) + " }"
        state = ["ct", "state", "established"] if self.reply else []
        if self.forwarded:
            port = ["ct", "status", "dnat", "ct", "original", "proto-dst", ports]
            return ["meta", "l4proto", "tcp", *state, *port, "accept", "comment", f'"{self.tag}"']
        return ["tcp", "sport" if self.reply else "dport", ports, *state, "accept", "comment", f'"{self.tag}"']

    def exprs(self) -> list[dict]:
        right = self.ports[0] if len(self.ports) == 1 else {"set": list(self.ports)}
        state = [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "established"}}] if self.reply else []
        if self.forwarded:
            return [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, *state,
                    {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
                    {"match": {"op": "==", "left": {"ct": {"key": "proto-dst", "dir": "original"}}, "right": right}},
                    {"accept": None}]
        field = "sport" if self.reply else "dport"
        return [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": field}}, "right": right}},
                *state, {"accept": None}]

    @property
    def text(self) -> str:
        return " ".join(self.words())

    def command(self) -> list[str]:
        head = ["nft", "insert" if self.before is not None else "add", "rule", self.family, self.table, self.chain]
        where = ["position", str(self.before)] if self.before is not None else []
        return [*head, *where, *self.words()]

    def rollback(self) -> list[str]:
        chain = f"{self.family} {self.table} {self.chain}"
        script = (f"nft -a list chain {chain} | sed -n 's/.* comment \"{self.tag}\" # handle \\([0-9]*\\)$/\\1/p'"
                  f" | while read h; do nft delete rule {chain} handle \"$h\"; done")
        return ["sh", "-c", script]


def apply_change(ruleset: Ruleset, change: NftChange) -> None:
    """The change on a (copied) model, as the kernel will have it after the command."""
    table = next((t for t in ruleset.tables if t.source == "nft" and t.family == change.family
                  and t.name == change.table), None)
    if table is None or change.chain not in table.chains:
        raise ValueError(f"no chain {change.chain} in nft {change.family} {change.table}")
    chain = table.chains[change.chain]
    new = rules_of(change.exprs(), change.text, None, chain, Sets({}))
    at = next((i for i, r in enumerate(chain.rules) if r.handle == change.before), len(chain.rules))
    chain.rules[at:at] = new
    position, last = 0, object()
    for r in chain.rules:
        if r.handle is None or r.handle != last:
            position += 1
        last, r.position = r.handle, position


@dataclass(eq=False)
class NftPlanner(Planner):
    name = "nft"
    listing: str | None  # `nft -a list ruleset`: the preconditions are cut from it (without it, no plan)
    distro_family: str = "debian"  # debian | rhel: where the rules persist

    @classmethod
    def for_host(cls, results: Results, context: AnalysisContext) -> NftPlanner:
        return cls(listing=ok_output(results, NFT_LISTING), distro_family=context.distro_family)

    def missing(self) -> str | None:
        if self.listing is None:
            return "nft: no plan without `nft -a list ruleset` (needed for exact preconditions)"
        return None

    def owns(self, at: Outcome) -> bool:
        return at.table.source == "nft"

    def change_for(self, pv: PortVerdict, ports: list[int], attempt: int, ends: Endpoints) -> NftChange | str:
        d = pv.deciding
        table, chain, rule = d.table, d.chain, d.rule
        if (why := engine_note(table, chain.name)) is not None:
            return why
        if not all(IDENT.match(n) for n in (table.name, chain.name)):
            return f"{table.label} chain {chain.name!r}: a name mailcheck will not put in a command"
        head = (table.family, table.name, chain.name)
        what = f"accept {'replies from' if pv.reply_blocked else 'connections to'} {ports_text(ports)}"
        if pv.forwarded:
            what += f" (published: DNAT to {pv.dnat_to})"
        ports_t, how = tuple(sorted(ports)), (pv.reply_blocked, pv.forwarded)
        if rule is not None:
            if rule.verdict.kind not in ("drop", "reject") or rule.handle is None:
                return f"deciding rule is not a drop with a handle: {rule.text}"
            if is_source_specific(rule, chain.name):
                return f"{table.label} chain {chain.name} handle {rule.handle} is tied to source addresses: {rule.text}"
            return NftChange(*head, rule.handle, ports_t, how[0],
                             f"{what} before `{rule.text}` ({chain.name} handle {rule.handle})", how[1])
        if attempt == 0:
            return NftChange(*head, None, ports_t, how[0], f"{what} at the end of {chain.name} (policy drop)"
                             + _allow_list_warning(table, ports), how[1])
        handle = _last_base_handle(pv, table, chain.name)
        if handle is None:
            return "the policy is reached without a rule to insert before"
        return NftChange(*head, handle, ports_t, how[0],
                         f"{what} in {chain.name} before handle {handle} (policy reached through it)", how[1])

    def apply(self, ruleset: Ruleset, change: NftChange) -> None:
        apply_change(ruleset, change)

    def commands(self, change: NftChange) -> tuple[list[Argv], list[Argv]]:
        return [change.command()], [change.rollback()]

    def backup(self, changes: list[NftChange]) -> BackupSpec:
        """The native tables it edits, each saved and restored on its own (the other tables,
        iptables-nft's xt rules and fail2ban's bans among them, are left alone), guarded;
        should one not load, the exact per-rule undo guards instead."""
        return BackupSpec(nft_tables=list(dict.fromkeys(f"{c.family} {c.table}" for c in changes)),
                          guard=True)

    def preconditions(self, ruleset: Ruleset, changes: list[NftChange], notes: list[str]
                      ) -> list[Precondition] | None:
        """Each edited chain's `nft -a list chain` (normalised) hashes as it did when planned."""
        out = []
        for head in dict.fromkeys((c.family, c.table, c.chain) for c in changes):
            text = chain_listing(self.listing, *head)
            if text is None:
                notes.append(f"nft: chain {' '.join(head)} is not in `nft -a list ruleset`: no plan")
                return None
            out.append(Precondition(
                argv=["nft", "-a", "list", "chain", *head], normalize="nft",
                expect_sha256=hashlib.sha256(normalize_nft(text).encode()).hexdigest(),
                description=f"nft chain {' '.join(head)} is as it was when this fix was planned"))
        return out

    def persistence(self, ruleset: Ruleset, changes: list[NftChange], notes: list[str]
                    ) -> tuple[list[Argv], list[Argv]]:
        path = PERSIST_FILES.get(self.distro_family)
        if path is None:
            notes.append(f"nft: not persisted: unknown distribution family {self.distro_family!r}")
            return [], []
        tables = [t for t in ruleset.tables if t.source == "nft" and self.kept_by(t) is None]
        if engines := sorted({e for t in tables if (e := engine_of(t))}):
            notes.append(f"nft: {' and '.join(engines)}'s tables are not written to {path} (the engine "
                         "writes them itself, with the container addresses of the moment)")
            tables = [t for t in tables if engine_of(t) is None]
        if not all(IDENT.match(t.name) for t in tables):
            notes.append("nft: not persisted: a table name mailcheck will not put in a command")
            return [], []
        backup = f"{path}.mailcheck-{digest([c.tag for c in changes])}"
        parts = "; ".join(f"echo 'table {t.family} {t.name}'; echo 'delete table {t.family} {t.name}'; "
                          f"nft list table {t.family} {t.name}" for t in tables)
        # the copy is taken once: a rollback runs this again, and must not put the fixed file in it
        write = (f"set -e; if [ -e {backup} ] || [ -e {backup}.absent ]; then :; "
                 f"elif [ -e {path} ]; then cp -p {path} {backup}; else : > {backup}.absent; fi; "
                 f"{{ echo '#!/usr/sbin/nft -f'; {parts}; }} > {path}.new; "
                 f"nft -c -f {path}.new; mv {path}.new {path}")
        undo = (f"if [ -e {backup} ]; then mv {backup} {path}; "
                f"elif [ -e {backup}.absent ]; then rm -f {path} {backup}.absent; fi")
        return [["sh", "-c", write]], [["sh", "-c", undo]]


def _allow_list_warning(table: Table, ports: list[int]) -> str:
    """The table already accepts these ports from some sources only: say that the fix opens them to all."""
    for chain in table.chains.values():
        for rule in chain.rules:
            if rule.verdict.kind != "accept" or not is_source_specific(rule):
                continue
            covered = [p for p in ports if any(isinstance(m, Port) and m.field == "dport" and not m.negate
                                               and any(lo <= p <= hi for lo, hi in m.ranges) for m in rule.matches)]
            if covered:
                return (f" — WARNING: {chain.name} handle {rule.handle} accepts {ports_text(covered)} from some "
                        f"sources only (`{rule.text}`); this opens them to every source")
    return ""


def _last_base_handle(pv: PortVerdict, table: Table, chain: str) -> int | None:
    prefix = f"{table.label}/{chain}#"
    positions = [int(s[len(prefix):]) for s in pv.path if s.startswith(prefix)]
    rules = table.chains[chain].rules
    handles = [r.handle for r in rules if positions and r.position == positions[-1]]
    return handles[0] if handles else None


def plan_nft(ruleset: Ruleset, blocked: Iterable[tuple[str, str, int]], ends: Mapping[str, Endpoints],
             **options) -> PlannedFixes:
    """NftPlanner(**options).plan(...) next to a running firewalld (its table is never nft's to edit)."""
    planner = NftPlanner(**options)
    planner.others = (FirewalldPlanner(FirewalldStatus(True)),)
    return planner.plan(ruleset, blocked, ends)

"""Fix plans for native nftables tables, made and checked on a COPY of the model.

Step by step, as plan_iptables does: evaluate, take a port still blocked,
look at the rule or policy that decides it, edit the copy, evaluate again.
Every base chain on the hook must accept, so the loop goes on until no
blocking base chain is left (or nothing more can be done).

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
- table inet firewalld belongs to firewalld (plan_firewalld).

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
the old file is kept as <file>.mailcheck-<digest> (the rollback puts it back, or
removes the file when there was none).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from bot.firewall.analysis import Endpoints, PortVerdict, port_verdict
from bot.firewall.model import Port, Ruleset, Table
from bot.firewall.parse.nft import chain_listing, normalize_nft, rules_of
from bot.firewall.parse.nft_expr import Sets
from bot.firewall.plan.base import MAX_STEPS, SSH_PORT, is_source_specific
from bot.firewall.plan.base import PlannedFixes as Plan
from bot.models import Fix, PortKey, Precondition


def family_keys(keys, family: str) -> list[PortKey]:
    return sorted({PortKey(*k) for k in keys if k[1] == family} | {PortKey("inbound", family, SSH_PORT)})


def verdicts(ruleset: Ruleset, keys, ends: Endpoints) -> dict[PortKey, PortVerdict]:
    return {PortKey(*k): port_verdict(ruleset, k, ends) for k in keys}

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
PERSIST_FILES = {"debian": "/etc/nftables.conf", "rhel": "/etc/sysconfig/nftables.conf"}
FAMILY_NAMES = {"ipv4": "IPv4", "ipv6": "IPv6"}


@dataclass
class NftChange:
    family: str  # nft family of the table: ip | ip6 | inet
    table: str
    chain: str
    before: int | None  # handle to insert before; None: add at the end
    ports: tuple[int, ...]
    reply: bool
    reason: str

    @property
    def tag(self) -> str:
        key = repr((self.family, self.table, self.chain, self.ports, self.reply))
        return "mailcheck-" + hashlib.sha256(key.encode()).hexdigest()[:10]

    def words(self) -> list[str]:
        field = "sport" if self.reply else "dport"
        ports = str(self.ports[0]) if len(self.ports) == 1 else "{ " + ", ".join(map(str, self.ports)) + " }"
        state = ["ct", "state", "established"] if self.reply else []
        return ["tcp", field, ports, *state, "accept", "comment", f'"{self.tag}"']

    def exprs(self) -> list[dict]:
        field = "sport" if self.reply else "dport"
        right = self.ports[0] if len(self.ports) == 1 else {"set": list(self.ports)}
        out: list[dict] = [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": field}},
                                      "right": right}}]
        if self.reply:
            out.append({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "established"}})
        return [*out, {"accept": None}]

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


# --- one step ----------------------------------------------------------------------------

def change_for(pv: PortVerdict, ports: list[int], attempt: int = 0) -> NftChange | str:
    """The edit that should let `ports` through where pv is decided, or why there is none."""
    d = pv.deciding
    if d is None or d.table is None or d.chain is None:
        return "no deciding rule"
    table, chain, rule = d.table, d.chain, d.rule
    if table.source != "nft":
        return f"{table.label} is not a native nftables table (see the iptables plan)"
    if table.family == "inet" and table.name == "firewalld":
        return "table inet firewalld belongs to firewalld (see the firewalld plan)"
    if not all(IDENT.match(n) for n in (table.name, chain.name)):
        return f"{table.label} chain {chain.name!r}: a name mailcheck will not put in a command"
    head = (table.family, table.name, chain.name)
    what = "replies from" if pv.reply_blocked else "connections to"
    ports_t = tuple(sorted(ports))
    if rule is not None:
        if rule.verdict.kind not in ("drop", "reject") or rule.handle is None:
            return f"deciding rule is not a drop with a handle: {rule.text}"
        if is_source_specific(rule, chain.name):
            return f"{table.label} chain {chain.name} handle {rule.handle} is tied to source addresses: {rule.text}"
        return NftChange(*head, rule.handle, ports_t, pv.reply_blocked,
                         f"accept {what} {_ports(ports)} before `{rule.text}` ({chain.name} handle {rule.handle})")
    if attempt == 0:
        return NftChange(*head, None, ports_t, pv.reply_blocked,
                         f"accept {what} {_ports(ports)} at the end of {chain.name} (policy drop)"
                         + _allow_list_warning(table, ports))
    handle = _last_base_handle(pv, table, chain.name)
    if handle is None:
        return "the policy is reached without a rule to insert before"
    return NftChange(*head, handle, ports_t, pv.reply_blocked,
                     f"accept {what} {_ports(ports)} in {chain.name} before handle {handle} (policy reached through it)")


def _allow_list_warning(table: Table, ports: list[int]) -> str:
    """The table already accepts these ports from some sources only: say that the fix opens them to all."""
    for chain in table.chains.values():
        for rule in chain.rules:
            if rule.verdict.kind != "accept" or not is_source_specific(rule):
                continue
            covered = [p for p in ports if any(isinstance(m, Port) and m.field == "dport" and not m.negate
                                               and any(lo <= p <= hi for lo, hi in m.ranges) for m in rule.matches)]
            if covered:
                return (f" — WARNING: {chain.name} handle {rule.handle} accepts {_ports(covered)} from some "
                        f"sources only (`{rule.text}`); this opens them to every source")
    return ""


def _last_base_handle(pv: PortVerdict, table: Table, chain: str) -> int | None:
    prefix = f"{table.label}/{chain}#"
    positions = [int(s[len(prefix):]) for s in pv.path if s.startswith(prefix)]
    rules = table.chains[chain].rules
    handles = [r.handle for r in rules if positions and r.position == positions[-1]]
    return handles[0] if handles else None


def _ports(ports: Iterable[int]) -> str:
    return ",".join(map(str, ports))


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


# --- the plan ------------------------------------------------------------------------------

def _verdicts(ruleset: Ruleset, keys: Iterable[PortKey], ends: Mapping[str, Endpoints]) -> dict[PortKey, PortVerdict]:
    return {k: v for f in ends for k, v in verdicts(ruleset, [k for k in keys if k[1] == f], ends[f]).items()}


def build_changes(ruleset: Ruleset, targets: list[PortKey], ends: Mapping[str, Endpoints], notes: list[str]
                  ) -> tuple[Ruleset, list[NftChange]]:
    """Step by step on a copy: the changed copy and the changes that helped, in order."""
    work = copy.deepcopy(ruleset)
    changes: list[NftChange] = []
    skipped: set[PortKey] = set()
    attempts: dict[tuple, int] = {}
    for _ in range(MAX_STEPS):
        now = _verdicts(work, [k for k in targets if k not in skipped], ends)
        still = sorted(k for k, v in now.items() if v.verdict == "block")
        if not still:
            break
        point = now[still[0]].point
        group = [k for k in still if now[k].point == point]
        attempt = attempts.get(point, 0)
        attempts[point] = attempt + 1
        change = change_for(now[still[0]], sorted({k[2] for k in group}), attempt) if attempt < 2 \
            else "no edit opens it"
        if isinstance(change, str):
            notes.append(f"{', '.join(_label(k) for k in group)}: not planned: {change}")
            skipped |= set(group)
            continue
        trial, moved = _try(work, change, group, point, ends)
        if not moved:
            continue  # no effect (an add after a goto the packet takes): try the next way
        if {k[2] for k in moved} != set(change.ports):  # only the ports it helps
            change = replace(change, ports=tuple(sorted({k[2] for k in moved})))
            trial, _ = _try(work, change, group, point, ends)
        work = trial
        changes.append(change)
    return work, changes


def _try(work: Ruleset, change: NftChange, group: list[PortKey], point: tuple, ends) -> tuple[Ruleset, list[PortKey]]:
    trial = copy.deepcopy(work)
    apply_change(trial, change)
    after = _verdicts(trial, group, ends)
    return trial, [k for k, v in after.items() if not (v.verdict == "block" and v.point == point)]


def _label(k: PortKey) -> str:
    return f"{k[0]} {k[2]}/{FAMILY_NAMES.get(k[1], k[1])}"


def plan_nft(ruleset: Ruleset, blocked: Mapping[PortKey, object] | Iterable[PortKey], ends: Mapping[str, Endpoints],
             *, listing: str | None, distro_family: str = "debian") -> Plan:
    """One Fix for the blocked (direction, family, port) keys decided in native nft tables.

    `ends` per family as in the analysis; `listing` is `nft -a list ruleset` (the
    preconditions are cut from it: without it, no plan). Both families at once: a
    change in an inet table serves both, and expected_allow says so.
    """
    plan = Plan()
    keys = [k for k in blocked if k[1] in ends]
    if listing is None:
        plan.notes.append("nft: no plan without `nft -a list ruleset` (needed for exact preconditions)")
        return plan
    wanted = sorted(set(keys) | {k for f in ends if any(x[1] == f for x in keys) for k in family_keys([], f)})
    before = _verdicts(ruleset, wanted, ends)
    targets = [k for k in wanted if k in keys and before[k].verdict == "block"]
    if not targets:
        return plan
    work, changes = build_changes(ruleset, targets, ends, plan.notes)
    if not changes:
        return plan
    after = _verdicts(work, wanted, ends)
    lost = [k for k in wanted if before[k].verdict == "allow" and after[k].verdict != "allow"]
    opened = [k for k in targets if after[k].verdict == "allow"]
    if lost:
        plan.notes.append(f"nft: plan refused: it would stop allowing {', '.join(map(_label, lost))}")
    elif not opened:
        plan.notes.append("nft: no plan: the edits found would not open any blocked port")
    elif (fix := _fix(ruleset, changes, opened, before, listing, distro_family, plan.notes)) is not None:
        plan.fixes.append(fix)
    return plan


def _fix(ruleset, changes, opened, before, listing, distro_family, notes) -> Fix | None:
    pre = _preconditions(changes, listing, notes)
    if pre is None:
        return None
    persist, persist_undo = _persist(ruleset, changes, distro_family, notes)
    commands = [c.command() for c in changes]
    digest = hashlib.sha256(repr(commands).encode()).hexdigest()[:10]
    return Fix(
        id=f"nft-{digest}", kind="firewall", backend="nft",
        summary=f"nft: open {', '.join(map(_label, opened))}: " + "; ".join(c.reason for c in changes),
        commands=commands, rollback=[c.rollback() for c in reversed(changes)] + persist_undo,
        persist=persist, preconditions=pre, expected_allow=sorted(opened),
        findings=sorted({before[k].blocked_by or "" for k in opened} - {""}),
    )


def _preconditions(changes: list[NftChange], listing: str, notes: list[str]) -> list[Precondition] | None:
    out, seen = [], set()
    for c in changes:
        head = (c.family, c.table, c.chain)
        if head in seen:
            continue
        seen.add(head)
        text = chain_listing(listing, *head)
        if text is None:
            notes.append(f"nft: chain {' '.join(head)} is not in `nft -a list ruleset`: no plan")
            return None
        out.append(Precondition(
            argv=["nft", "-a", "list", "chain", *head], normalize="nft",
            expect_sha256=hashlib.sha256(normalize_nft(text).encode()).hexdigest(),
            description=f"nft chain {' '.join(head)} is as it was when this fix was planned"))
    return out


def _persist(ruleset: Ruleset, changes: list[NftChange], distro_family: str, notes: list[str]
             ) -> tuple[list[list[str]], list[list[str]]]:
    path = PERSIST_FILES.get(distro_family)
    if path is None:
        notes.append(f"nft: not persisted: unknown distribution family {distro_family!r}")
        return [], []
    tables = [t for t in ruleset.tables if t.source == "nft" and not (t.family == "inet" and t.name == "firewalld")]
    if not all(IDENT.match(t.name) for t in tables):
        notes.append("nft: not persisted: a table name mailcheck will not put in a command")
        return [], []
    backup = f"{path}.mailcheck-{hashlib.sha256(repr([c.tag for c in changes]).encode()).hexdigest()[:10]}"
    parts = "; ".join(f"echo 'table {t.family} {t.name}'; echo 'delete table {t.family} {t.name}'; "
                      f"nft list table {t.family} {t.name}" for t in tables)
    write = (f"set -e; if [ -e {path} ]; then cp -p {path} {backup}; else : > {backup}.absent; fi; "
             f"{{ echo '#!/usr/sbin/nft -f'; {parts}; }} > {path}.new; "
             f"nft -c -f {path}.new; mv {path}.new {path}")
    undo = (f"if [ -e {backup} ]; then mv {backup} {path}; "
            f"elif [ -e {backup}.absent ]; then rm -f {path} {backup}.absent; fi")
    return [["sh", "-c", write]], [["sh", "-c", undo]]

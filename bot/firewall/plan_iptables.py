"""Fix plans for iptables / ip6tables (nft-based or legacy), made on the model.

For each family, the plan is built step by step on a COPY of the ruleset:
take a port the evaluator still blocks, look at what decides it, and either

- delete the deciding rule by its full specification, when it concerns the
  mail ports only (never a rule that also covers other ports, and never a
  rule tied to a source address: a ban is reported, not undone), or
- insert an accept right before it (an accept appended after a reject-all
  does nothing), or, for a DROP policy, append one where the policy takes
  effect (before the rule that left the base chain when that is a goto);
- replies blocked (a DROP policy without ESTABLISHED) get an accept for the
  mail ports' ESTABLISHED packets only.

The copy is evaluated again after every step. A plan is offered only when
the evaluator then allows ports it blocked, and no key that was allowed
(SSH from the prober above all) stops being allowed. Every command has its
exact rollback; every plan states its preconditions (the rule to delete is
still there: `iptables -C`; every table it touches is byte-for-byte as
planned: sha256 of normalize_iptables_save(`iptables-save -t T`)).
"""

from __future__ import annotations

import copy
import hashlib
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bot.firewall.analysis import Endpoints, PortVerdict, port_verdict
from bot.firewall.model import Addr, Port, Rule, Ruleset, Table, Unknown
from bot.firewall.parse.iptables import normalize_iptables_save, parse_rule
from bot.models import Fix, PortKey, Precondition

MAIL_PORTS = frozenset({25, 465, 587, 143, 993})
SSH_PORT = 22
COMMENT = "mailcheck"
MAX_STEPS = 12
PERSIST_FILES = {
    ("debian", "ip"): "/etc/iptables/rules.v4", ("debian", "ip6"): "/etc/iptables/rules.v6",
    ("rhel", "ip"): "/etc/sysconfig/iptables", ("rhel", "ip6"): "/etc/sysconfig/ip6tables",
}


@dataclass
class Change:
    """One edit of one chain, in the order the commands run."""

    family: str  # ip | ip6
    table: str
    source: str
    chain: str
    action: str  # insert | append | delete
    position: int  # 1-based: where inserted, or where the deleted rule was
    spec: list[str]  # the words after `-A CHAIN`
    reason: str

    @property
    def text(self) -> str:
        return shlex.join(["-A", self.chain, *self.spec])


@dataclass
class Plan:
    fixes: list[Fix] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not planned, and why


# --- helpers on the model -----------------------------------------------------------------

def flat_matches(rule: Rule) -> list:
    out = []
    for m in rule.matches:
        out += list(getattr(m, "parts", None) or [m])
    return out


def is_source_specific(rule: Rule, chain_name: str = "") -> bool:
    """A ban or an allow-list entry: tied to some source addresses (or a fail2ban chain)."""
    if chain_name.startswith(("f2b-", "fail2ban", "sshguard", "crowdsec")):
        return True
    return any(isinstance(m, Addr) and m.field == "saddr" and not m.negate
               and not set(m.networks) <= {"0.0.0.0/0", "::/0"} for m in flat_matches(rule))


def mail_only(rule: Rule) -> bool:
    """Does the rule match nothing but (some of) the mail ports? Then it may be deleted."""
    matches = flat_matches(rule)
    ports = [m for m in matches if isinstance(m, Port)]
    if not ports or any(isinstance(m, Unknown) for m in matches):
        return False
    covered: set[int] = set()
    for m in ports:
        if m.field != "dport" or m.negate or any(hi - lo > 1000 for lo, hi in m.ranges):
            return False
        covered |= {p for lo, hi in m.ranges for p in range(lo, hi + 1)}
    return covered <= MAIL_PORTS


def find_table(ruleset: Ruleset, family: str, name: str, source: str) -> Table | None:
    return ruleset.table(family, name, source)


def render_table(table: Table) -> str:
    """The table as normalize_iptables_save(`iptables-save -t NAME`) shows it."""
    lines = [f"*{table.name}"]
    for chain in table.chains.values():
        policy = (chain.policy or "accept").upper() if chain.is_base else "-"
        lines.append(f":{chain.name} {policy}")
    lines += [r.text for chain in table.chains.values() for r in chain.rules]
    lines.append("COMMIT")
    return normalize_iptables_save("\n".join(lines))


def tools(family: str, source: str, default_source: str) -> tuple[str, str]:
    """(iptables-like command, iptables-save-like command) that edit tables of this source."""
    base = "iptables" if family == "ip" else "ip6tables"
    if source != default_source:
        base += "-legacy" if source == "iptables-legacy" else "-nft"
    return base, f"{base}-save"


# --- one step ----------------------------------------------------------------------------

def accept_spec(ports: list[int], reply: bool) -> list[str]:
    """`-p tcp -m multiport --dports 25,465 -m comment --comment mailcheck -j ACCEPT` (canonical)."""
    field = "sport" if reply else "dport"
    ports_m = (["-m", "tcp", f"--{field}", str(ports[0])] if len(ports) == 1
               else ["-m", "multiport", f"--{field}s", ",".join(map(str, ports))])
    state = ["-m", "conntrack", "--ctstate", "ESTABLISHED"] if reply else []
    return ["-p", "tcp", *ports_m, *state, "-m", "comment", "--comment", COMMENT, "-j", "ACCEPT"]


def change_for(pv: PortVerdict, ports: list[int], attempt: int = 0) -> Change | str:
    """The edit that should open `ports` at the point that decides pv, or why there is none."""
    d = pv.deciding
    if d is None or d.table is None or d.chain is None:
        return "no deciding rule"
    table, chain, rule = d.table, d.chain, d.rule
    if table.source == "nft":
        return f"{table.label} is a native nftables table (see the nft plan)"
    if chain.name.startswith(("ufw-", "ufw6-")):
        return f"chain {chain.name} belongs to ufw (see the ufw plan)"
    head = (table.family, table.name, table.source, chain.name)
    spec = accept_spec(ports, pv.reply_blocked)
    what = "replies from" if pv.reply_blocked else "connections to"
    if rule is not None:
        if rule.verdict.kind not in ("drop", "reject"):
            return f"deciding rule is not a drop: {rule.text}"
        if is_source_specific(rule, chain.name):
            return f"{table.label} chain {chain.name} rule {rule.position} is tied to source addresses (a ban?): {rule.text}"
        if not pv.reply_blocked and mail_only(rule) and attempt == 0:
            words = shlex.split(rule.text)[2:]
            return Change(*head, "delete", rule.position, words, f"delete `{rule.text}` (it only blocks mail ports)")
        return Change(*head, "insert", rule.position, spec,
                      f"accept {what} {_ports(ports)} before `{rule.text}` ({chain.name} rule {rule.position})")
    if attempt == 0:
        return Change(*head, "append", len(chain.rules) + 1, spec,
                      f"accept {what} {_ports(ports)} at the end of {chain.name} (policy DROP)")
    left = _last_base_rule(pv, table, chain.name)
    if left is None:
        return "the policy is reached without a rule to insert before"
    return Change(*head, "insert", left, spec,
                  f"accept {what} {_ports(ports)} in {chain.name} before rule {left} (policy DROP reached through it)")


def _by_policy(pv: PortVerdict) -> bool:
    d = pv.deciding
    return d is not None and d.rule is None


def _last_base_rule(pv: PortVerdict, table: Table, chain: str) -> int | None:
    prefix = f"{table.label}/{chain}#"
    positions = [int(s[len(prefix):]) for s in pv.path if s.startswith(prefix)]
    return positions[-1] if positions else None


def _ports(ports: Iterable[int]) -> str:
    return ",".join(map(str, ports))


def apply_change(ruleset: Ruleset, change: Change) -> None:
    """Apply a change to a (copied) model, as the kernel will after the command."""
    table = find_table(ruleset, change.family, change.table, change.source)
    if table is None or change.chain not in table.chains:
        raise ValueError(f"no chain {change.chain} in {change.family} {change.table}")
    rules = table.chains[change.chain].rules
    if change.action == "delete":
        del rules[change.position - 1]
    else:
        rules.insert(change.position - 1, parse_rule(change.spec, change.text, table))
    for i, r in enumerate(rules, 1):
        r.position = i


# --- the plan ------------------------------------------------------------------------------

def family_keys(keys: Iterable[PortKey], family: str) -> list[PortKey]:
    wanted = {k for k in keys if k[1] == family} | {("inbound", family, SSH_PORT)}
    return sorted(wanted)


def verdicts(ruleset: Ruleset, keys: Iterable[PortKey], ends: Endpoints) -> dict[PortKey, PortVerdict]:
    return {k: port_verdict(ruleset, k, ends) for k in keys}


def build_changes(ruleset: Ruleset, targets: list[PortKey], ends: Endpoints, notes: list[str],
                  defer_filter: bool = False) -> tuple[Ruleset, list[Change]]:
    """Step by step on a copy: returns the changed copy and the changes that helped, in order."""
    work = copy.deepcopy(ruleset)
    changes: list[Change] = []
    skipped: set[PortKey] = set()
    attempts: dict[tuple, int] = {}
    for _ in range(MAX_STEPS):
        now = verdicts(work, [k for k in targets if k not in skipped], ends)
        still = [k for k, v in now.items() if v.verdict == "block"]
        if not still:
            break
        point = now[still[0]].point
        group = [k for k in still if now[k].point == point]
        attempt = attempts.get(point, 0)
        attempts[point] = attempt + 1
        change = change_for(now[still[0]], sorted({k[2] for k in group}), attempt) if attempt < 2 else "no edit opens it"
        if isinstance(change, Change) and defer_filter and change.table == "filter" and _by_policy(now[still[0]]):
            change = "ufw is active and sets the filter policies (see the ufw plan)"
        if isinstance(change, str):
            notes.append(f"{', '.join(_label(k) for k in group)}: not planned: {change}")
            skipped |= set(group)
            continue
        trial = copy.deepcopy(work)
        apply_change(trial, change)
        moved = verdicts(trial, group, ends)
        if all(v.verdict == "block" and v.point == point for v in moved.values()):
            continue  # no effect (e.g. an append the packet never reaches): try the next way
        work = trial
        changes.append(change)
    return work, changes


def _label(k: PortKey) -> str:
    return f"{k[0]} {k[2]}/{'IPv6' if k[1] == 'ipv6' else 'IPv4'}"


def plan_iptables(ruleset: Ruleset, blocked: Mapping[PortKey, object] | Iterable[PortKey],
                  ends: Mapping[str, Endpoints], *, distro_family: str = "debian",
                  default_source: str = "iptables-nft", ufw_active: bool = False,
                  save_file_option: bool = True) -> Plan:
    """Fixes for the blocked (direction, family, port) keys; `ends` per family as in the analysis.

    `blocked` may map keys to Decisions / PortVerdicts (only the keys are used: the
    verdicts are recomputed on the model so that before and after are comparable).
    With `ufw_active`, the filter table is left to plan_ufw (ufw rewrites it).
    `default_source` is what plain `iptables` is (iptables.default_source(`iptables -V`));
    `save_file_option`: iptables-save has -f (iptables.save_has_file_option), else the
    persist step is a fixed `sh -c 'iptables-save > FILE'` (no user text in it).
    """
    plan = Plan()
    keys = list(blocked)
    for family in ("ipv4", "ipv6"):
        if family not in ends or not any(k[1] == family for k in keys):
            continue
        fix = _plan_family(ruleset, keys, family, ends[family], distro_family, default_source, plan.notes,
                           ufw_active, save_file_option)
        if fix is not None:
            plan.fixes.append(fix)
    return plan


def _plan_family(ruleset, keys, family, ends, distro_family, default_source, notes, ufw_active,
                 save_file_option) -> Fix | None:
    wanted = family_keys(keys, family)
    before = verdicts(ruleset, wanted, ends)
    targets = [k for k in wanted if k in keys and before[k].verdict == "block"]
    for k in wanted:
        if k in keys and before[k].verdict == "unknown":
            reason = "; ".join(before[k].reasons)[:300]
            notes.append(f"{_label(k)}: not planned: the firewall's verdict is unknown ({reason})")
    if not targets:
        return None
    work, changes = build_changes(ruleset, targets, ends, notes, defer_filter=ufw_active)
    if not changes:
        return None
    after = verdicts(work, wanted, ends)
    lost = [k for k in wanted if before[k].verdict == "allow" and after[k].verdict != "allow"]
    if lost:
        notes.append(f"{family}: plan refused: it would stop allowing {', '.join(_label(k) for k in lost)}")
        return None
    opened = [k for k in targets if after[k].verdict == "allow"]
    if not opened:
        notes.append(f"{family}: no plan: the edits found would not open any blocked port")
        return None
    persist = [] if ufw_active else _persist("ip" if family == "ipv4" else "ip6", changes, distro_family,
                                             default_source, notes, save_file_option)
    if ufw_active:
        notes.append(f"{family}: not persisted: ufw rebuilds iptables from its own files (a rule outside them "
                     "lives only until ufw reloads)")
    return _fix(ruleset, family, changes, opened, before, default_source, persist)


def _fix(ruleset, family, changes, opened, before, default_source, persist) -> Fix:
    commands, rollback, pre = [], [], []
    fam = "ip" if family == "ipv4" else "ip6"
    for c in changes:
        tool, _ = tools(fam, c.source, default_source)
        do, undo = _commands(tool, c)
        commands.append(do)
        rollback.insert(0, undo)
        if c.action == "delete":
            pre.append(Precondition(argv=[tool, "-t", c.table, "-C", c.chain, *c.spec],
                                    description=f"the rule to delete is still there: {c.text}"))
    pre += _table_preconditions(ruleset, changes, default_source)
    ports = ", ".join(_label(k) for k in opened)
    tool = "iptables" if fam == "ip" else "ip6tables"
    digest = hashlib.sha256(repr(commands).encode()).hexdigest()[:10]
    return Fix(
        id=f"{tool}-{digest}", kind="firewall", backend=tool,
        summary=f"{tool}: open {ports}: " + "; ".join(c.reason for c in changes),
        commands=commands, rollback=rollback + persist, persist=persist, preconditions=pre,
        expected_allow=sorted(opened),
        findings=sorted({before[k].blocked_by or "" for k in opened} - {""}),
    )


def _commands(tool: str, c: Change) -> tuple[list[str], list[str]]:
    head = [tool, "-t", c.table]
    if c.action == "delete":
        return [*head, "-D", c.chain, *c.spec], [*head, "-I", c.chain, str(c.position), *c.spec]
    if c.action == "append":
        return [*head, "-A", c.chain, *c.spec], [*head, "-D", c.chain, *c.spec]
    return [*head, "-I", c.chain, str(c.position), *c.spec], [*head, "-D", c.chain, *c.spec]


def _table_preconditions(ruleset: Ruleset, changes: list[Change], default_source: str) -> list[Precondition]:
    out, seen = [], set()
    for c in changes:
        if (c.family, c.table, c.source) in seen:
            continue
        seen.add((c.family, c.table, c.source))
        table = find_table(ruleset, c.family, c.table, c.source)
        _, save = tools(c.family, c.source, default_source)
        digest = hashlib.sha256(render_table(table).encode()).hexdigest() if table else None
        out.append(Precondition(argv=[save, "-t", c.table], normalize="iptables-save", expect_sha256=digest,
                                description=f"{save} -t {c.table} is as it was when this fix was planned"))
    return out


def _persist(fam, changes, distro_family, default_source, notes, save_file_option=True) -> list[list[str]]:
    path = PERSIST_FILES.get((distro_family, fam))
    if path is None:
        notes.append(f"{fam}: not persisted: unknown distribution family {distro_family!r}")
        return []
    if any(c.source != default_source for c in changes):
        notes.append(f"{fam}: not persisted: the change is in tables of another iptables variant")
        return []
    _, save = tools(fam, default_source, default_source)
    if not save_file_option:  # a fixed string: both words come from the tables above, never from input
        return [["sh", "-c", f"{save} > {path}"]]
    return [[save, "-f", path]]

"""iptables / ip6tables fixes (nft-based or legacy), one Fix per address family.

Owns every iptables table (iptables-nft and legacy); an active front-end owns
its part first (ufw: its chains and the filter policies, see ufw.py). At the
rule that decides a blocked port, the edit is either

- delete that rule by its full specification, when it concerns the mail ports
  only (never a rule that also covers other ports, and never a rule tied to a
  source address: a ban is reported, not undone), or
- insert an accept right before it (an accept appended after a reject-all does
  nothing), or, for a DROP policy, append one where the policy takes effect
  (second attempt: before the rule that left the base chain, when that was a goto);
- replies blocked (a DROP policy without ESTABLISHED) get an accept for the
  mail ports' ESTABLISHED packets only.

Every command has its exact rollback. Preconditions: the rule to delete is
still there (`iptables -C`); every table the fix touches is byte-for-byte as
planned (sha256 of normalize_iptables_save(`iptables-save -t T`)). Persisted
with iptables-save to the distribution's file, unless a front-end keeps the
table (ufw rebuilds iptables from its own files) or the table is the other
variant's.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.firewall.analysis import AnalysisContext, Endpoints, PortVerdict
from bot.firewall.evaluate import Outcome
from bot.firewall.model import Port, Rule, Ruleset, Table, Unknown
from bot.firewall.parse import IPT_VERSION, Results, ok_output
from bot.firewall.parse.iptables import (
    default_source,
    normalize_iptables_save,
    parse_rule,
    save_has_file_option,
)
from bot.firewall.parse.ufw import UfwStatus
from bot.firewall.plan.base import (
    MAIL_PORTS,
    Argv,
    PlannedFixes,
    Planner,
    engine_note,
    engines_in,
    flat_matches,
    is_source_specific,
    ports_text,
)
from bot.firewall.plan.ufw import UfwPlanner
from bot.models import BackupSpec, Precondition

COMMENT = "mailcheck"
PERSIST_FILES = {
    ("debian", "ip"): "/etc/iptables/rules.v4", ("debian", "ip6"): "/etc/iptables/rules.v6",
    ("rhel", "ip"): "/etc/sysconfig/iptables", ("rhel", "ip6"): "/etc/sysconfig/ip6tables",
}


@dataclass
class IptablesChange:
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

    @property
    def label(self) -> str | None:
        """'Delete INPUT rule 2' (a button's words); None for an added accept (the base says
        which ports it opens)."""
        if self.action != "delete":
            return None
        tool = "" if self.family == "ip" else "ip6tables "
        table = "" if self.table == "filter" else f" (table {self.table})"
        return f"Delete {tool}{self.chain} rule {self.position}{table}"


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


def render_table(table: Table) -> str:
    """The table as normalize_iptables_save(`iptables-save -t NAME`) shows it."""
    lines = [f"*{table.name}"]
    for chain in table.chains.values():
        policy = (chain.policy or "accept").upper() if chain.is_base else "-"
        lines.append(f":{chain.name} {policy}")
    lines += [r.text for chain in table.chains.values() for r in chain.rules]
    lines.append("COMMIT")
    return normalize_iptables_save("\n".join(lines))


def save_cmd(family: str) -> str:
    return "iptables-save" if family == "ip" else "ip6tables-save"


def tools(family: str, source: str, default_source: str) -> tuple[str, str]:
    """(iptables-like command, iptables-save-like command) that edit tables of this source."""
    base = "iptables" if family == "ip" else "ip6tables"
    if source != default_source:
        base += "-legacy" if source == "iptables-legacy" else "-nft"
    return base, f"{base}-save"


def accept_spec(ports: list[int], reply: bool, forwarded: bool = False) -> list[str]:
    """`-p tcp -m multiport --dports 25,465 -m comment --comment mailcheck -j ACCEPT` (canonical).

    forwarded (a published port: DNATed, FORWARD decides): one port, matched by conntrack's
    original destination port (FORWARD sees the container's), DNATed connections only, as
    Docker's documentation writes DOCKER-USER rules."""
    comment = ["-m", "comment", "--comment", COMMENT, "-j", "ACCEPT"]
    if forwarded:
        state = ["--ctstate", "ESTABLISHED"] if reply else []
        return ["-p", "tcp", "-m", "conntrack", *state, "--ctstatus", "DNAT", "--ctorigdstport", str(ports[0]),
                "--ctdir", "REPLY" if reply else "ORIGINAL", *comment]
    field = "sport" if reply else "dport"
    ports_m = (["-m", "tcp", f"--{field}", str(ports[0])] if len(ports) == 1
               else ["-m", "multiport", f"--{field}s", ",".join(map(str, ports))])
    state = ["-m", "conntrack", "--ctstate", "ESTABLISHED"] if reply else []
    return ["-p", "tcp", *ports_m, *state, *comment]


def apply_change(ruleset: Ruleset, change: IptablesChange) -> None:
    """Apply a change to a (copied) model, as the kernel will after the command."""
    table = ruleset.table(change.family, change.table, change.source)
    if table is None or change.chain not in table.chains:
        raise ValueError(f"no chain {change.chain} in {change.family} {change.table}")
    rules = table.chains[change.chain].rules
    if change.action == "delete":
        del rules[change.position - 1]
    else:
        rules.insert(change.position - 1, parse_rule(change.spec, change.text, table))
    for i, r in enumerate(rules, 1):
        r.position = i


@dataclass(eq=False)
class IptablesPlanner(Planner):
    name = "iptables"
    per_family = True
    distro_family: str = "debian"  # debian | rhel: where the rules persist
    default_source: str = "iptables-nft"  # what plain `iptables` is (parse.iptables.default_source)
    save_file_option: bool = True  # iptables-save has -f; else persist is a fixed `sh -c 'iptables-save > F'`

    @classmethod
    def for_host(cls, results: Results, context: AnalysisContext) -> IptablesPlanner:
        version = ok_output(results, IPT_VERSION) or ""
        return cls(distro_family=context.distro_family, default_source=default_source(version or "nf_tables"),
                   save_file_option=save_has_file_option(version))

    def backend_for(self, families: tuple[str, ...]) -> str:
        return "iptables" if families == ("ipv4",) else "ip6tables"

    def owns(self, at: Outcome) -> bool:
        return at.table.source != "nft"

    def change_for(self, pv: PortVerdict, ports: list[int], attempt: int, ends: Endpoints) -> IptablesChange | str:
        d = pv.deciding
        table, chain, rule = d.table, d.chain, d.rule
        if (why := engine_note(table, chain.name)) is not None:
            return why
        head = (table.family, table.name, table.source, chain.name)
        if pv.forwarded:  # one rule per published port (conntrack matches one original port)
            ports = ports[:1]
        spec = accept_spec(ports, pv.reply_blocked, pv.forwarded)
        what = f"accept {'replies from' if pv.reply_blocked else 'connections to'} {ports_text(ports)}"
        if pv.forwarded:
            what += f" (published: DNAT to {pv.dnat_to})"
        if rule is not None:
            if rule.verdict.kind not in ("drop", "reject"):
                return f"deciding rule is not a drop: {rule.text}"
            if is_source_specific(rule, chain.name):
                return (f"{table.label} chain {chain.name} rule {rule.position} is tied to source addresses "
                        f"(a ban?): {rule.text}")
            if not pv.reply_blocked and mail_only(rule) and attempt == 0:
                words = shlex.split(rule.text)[2:]
                return IptablesChange(*head, "delete", rule.position, words,
                                      f"delete `{rule.text}` (it only blocks mail ports)")
            return IptablesChange(*head, "insert", rule.position, spec,
                                  f"{what} before `{rule.text}` ({chain.name} rule {rule.position})")
        if attempt == 0:
            return IptablesChange(*head, "append", len(chain.rules) + 1, spec,
                                  f"{what} at the end of {chain.name} (policy DROP)")
        left = _last_base_rule(pv, table, chain.name)
        if left is None:
            return "the policy is reached without a rule to insert before"
        return IptablesChange(*head, "insert", left, spec,
                              f"{what} in {chain.name} before rule {left} (policy DROP reached through it)")

    def apply(self, ruleset: Ruleset, change: IptablesChange) -> None:
        apply_change(ruleset, change)

    def commands(self, change: IptablesChange) -> tuple[list[Argv], list[Argv]]:
        c = change
        head = [tools(c.family, c.source, self.default_source)[0], "-t", c.table]
        if c.action == "delete":
            return [[*head, "-D", c.chain, *c.spec]], [[*head, "-I", c.chain, str(c.position), *c.spec]]
        if c.action == "append":
            return [[*head, "-A", c.chain, *c.spec]], [[*head, "-D", c.chain, *c.spec]]
        return [[*head, "-I", c.chain, str(c.position), *c.spec]], [[*head, "-D", c.chain, *c.spec]]

    def backup(self, changes: list[IptablesChange]) -> BackupSpec:
        """The tables of each iptables variant the commands use, guarded."""
        kinds = dict.fromkeys(tools(c.family, c.source, self.default_source)[0] for c in changes)
        return BackupSpec(rulesets=list(kinds), guard=True)

    def preconditions(self, ruleset: Ruleset, changes: list[IptablesChange], notes: list[str]
                      ) -> list[Precondition]:
        out = []
        for c in changes:
            if c.action == "delete":
                tool = tools(c.family, c.source, self.default_source)[0]
                out.append(Precondition(argv=[tool, "-t", c.table, "-C", c.chain, *c.spec],
                                        description=f"the rule to delete is still there: {c.text}"))
        for family, name, source in dict.fromkeys((c.family, c.table, c.source) for c in changes):
            table = ruleset.table(family, name, source)
            save = tools(family, source, self.default_source)[1]
            sha = hashlib.sha256(render_table(table).encode()).hexdigest() if table else None
            out.append(Precondition(argv=[save, "-t", name], normalize="iptables-save", expect_sha256=sha,
                                    description=f"{save} -t {name} is as it was when this fix was planned"))
        return out

    def persistence(self, ruleset: Ruleset, changes: list[IptablesChange], notes: list[str]
                    ) -> tuple[list[Argv], list[Argv]]:
        """iptables-save of the whole family after the change, and again after the rollback."""
        fam = changes[0].family
        keeper = next((k for c in changes if (k := self.kept_by(ruleset.table(c.family, c.table, c.source)))), None)
        if keeper is not None:
            notes.append(f"{'ipv4' if fam == 'ip' else 'ipv6'}: not persisted: {keeper.name} rebuilds iptables "
                         f"from its own files (a rule outside them lives only until {keeper.name} reloads)")
            return [], []
        path = PERSIST_FILES.get((self.distro_family, fam))
        if path is None:
            notes.append(f"{fam}: not persisted: unknown distribution family {self.distro_family!r}")
            return [], []
        if any(c.source != self.default_source for c in changes):
            notes.append(f"{fam}: not persisted: the change is in tables of another iptables variant")
            return [], []
        if engines := engines_in(ruleset, fam):
            notes.append(f"{fam}: not persisted: the tables hold {' and '.join(engines)}'s rules, which "
                         f"{save_cmd(fam)} would write to {path} with today's container addresses; the change "
                         "lives until the next reboot (keep your own DOCKER-USER rules where you load them)")
            return [], []
        save = tools(fam, self.default_source, self.default_source)[1]
        if not self.save_file_option:  # a fixed string: both words come from the tables above, never from input
            persist = [["sh", "-c", f"{save} > {path}"]]
        else:
            persist = [[save, "-f", path]]
        return persist, persist


def _last_base_rule(pv: PortVerdict, table: Table, chain: str) -> int | None:
    prefix = f"{table.label}/{chain}#"
    positions = [int(s[len(prefix):]) for s in pv.path if s.startswith(prefix)]
    return positions[-1] if positions else None


def plan_iptables(ruleset: Ruleset, blocked: Iterable[tuple[str, str, int]], ends: Mapping[str, Endpoints],
                  *, ufw_active: bool = False, **options) -> PlannedFixes:
    """IptablesPlanner(**options).plan(...) as if alone on the host, or next to an active ufw."""
    planner = IptablesPlanner(**options)
    planner.others = (UfwPlanner(UfwStatus(active=True)),) if ufw_active else ()
    return planner.plan(ruleset, blocked, ends)

"""ufw fixes: `ufw allow [out] P/tcp`, one Fix for both families (a ufw rule covers both).

ufw's rules are iptables rules (chains ufw-user-input, ufw6-user-input,
ufw-user-output, ...), so the plan is simulated on the parsed iptables ruleset.
While ufw is active it owns its chains and the filter policies (`ufw default`).

- A port blocked by ufw's default policy (or its reject chain): `ufw allow
  P/tcp` (or `allow out`) per port; rollback `ufw delete allow P/tcp`.
- A port blocked by a user deny/reject rule that comes first and concerns the
  mail ports only, from anywhere: `ufw allow <the same spec>` — ufw then
  updates that very rule in place ("Rule updated"), keeping its position;
  rollback `ufw deny <the same spec>` restores it. (`ufw insert N allow` of
  the same spec is skipped by ufw as an existing rule, seen in the lab.)
- A deny tied to a source address (a ban) or that also covers other ports is
  not planned: it is reported. So are replies blocked by a filter policy:
  ufw has no command that accepts the replies only.
Precondition: `ufw status verbose` is as planned. ufw persists its own rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.firewall.analysis import Endpoints, PortVerdict
from bot.firewall.evaluate import Outcome
from bot.firewall.model import Addr, Port, Rule, Ruleset, Table
from bot.firewall.parse import LANG_C
from bot.firewall.parse.iptables import parse_rule, port_ranges
from bot.firewall.parse.ufw import UFW_STATUS, UfwRule, UfwStatus, status_from_results
from bot.firewall.plan.base import MAIL_PORTS, Argv, FrontEnd, PlannedFixes, flat_matches
from bot.models import BackupSpec, Command, Direction, Precondition


@dataclass(frozen=True)
class UfwChange:
    """`ufw allow [out] SPEC` for each spec, undone by `ufw <undo> [out] SPEC`."""

    direction: Direction
    specs: tuple[tuple[str, ...], ...]  # ('25/tcp',) or ('proto', 'tcp', 'to', 'any', 'port', '25,587')
    undo: tuple[str, ...]  # ('delete', 'allow') for a new rule; ('deny',) to restore an updated one
    reason: str

    def argv(self, *verb: str, spec: tuple[str, ...]) -> list[str]:
        return ["ufw", *verb, *(["out"] if self.direction == "outbound" else []), *spec]


def _user_chain(direction: str, family: str) -> str:
    return f"{'ufw' if family == 'ipv4' else 'ufw6'}-user-{'input' if direction == 'inbound' else 'output'}"


def _row_for(status: UfwStatus, direction: str, port: int) -> UfwRule | None:
    """The first user deny/reject row (IPv4 listing first) that covers the port."""
    want = "in" if direction == "inbound" else "out"
    for r in sorted(status.rules, key=lambda r: r.v6):
        if r.direction == want and r.action in ("deny", "reject") and r.covers(port):
            return r
    return None


def _spec(row_ports: tuple[tuple[int, int], ...], to: str) -> tuple[str, ...]:
    head = to.replace(" (v6)", "").strip()
    if "/" in head and "," not in head and ":" not in head and " " not in head:
        return (head,)
    ports = ",".join(f"{a}" if a == b else f"{a}:{b}" for a, b in row_ports)
    return ("proto", "tcp", "to", "any", "port", ports)


def simulate(ruleset: Ruleset, command: list[str]) -> None:
    """Apply `ufw allow [out] SPEC` to the model as ufw does in its user chains."""
    direction = "outbound" if "out" in command[2:3] else "inbound"
    spec = command[3:] if direction == "outbound" else command[2:]
    ports = _spec_ports(spec)
    for family, fam in (("ipv4", "ip"), ("ipv6", "ip6")):
        table = ruleset.table(fam, "filter")
        chain = table.chains.get(_user_chain(direction, family)) if table else None
        if chain is None:
            continue
        existing = [r for r in chain.rules if _same_ports(r, ports) and r.verdict.kind in ("drop", "reject")]
        if existing:
            i = chain.rules.index(existing[0])
            chain.rules[i] = _accept(table, chain.name, ports, i + 1)
        else:
            chain.rules.append(_accept(table, chain.name, ports, len(chain.rules) + 1))


def _spec_ports(spec: list[str]) -> tuple[tuple[int, int], ...]:
    word = spec[-1] if spec[0] == "proto" else spec[0].split("/")[0]
    return port_ranges(word)


def _same_ports(rule: Rule, ports) -> bool:
    ms = flat_matches(rule)
    if any(isinstance(m, Addr) for m in ms):
        return False
    dports = [m for m in ms if isinstance(m, Port) and m.field == "dport" and not m.negate]
    return len(dports) == 1 and set(dports[0].ranges) == set(ports)


def _accept(table: Table, chain: str, ports, position: int) -> Rule:
    if len(ports) == 1 and ports[0][0] == ports[0][1]:
        words = ["-p", "tcp", "-m", "tcp", "--dport", str(ports[0][0]), "-j", "ACCEPT"]
    else:
        joined = ",".join(f"{a}" if a == b else f"{a}:{b}" for a, b in ports)
        words = ["-p", "tcp", "-m", "multiport", "--dports", joined, "-j", "ACCEPT"]
    rule = parse_rule(words, " ".join(["-A", chain, *words]), table)
    rule.position = position
    return rule


@dataclass(eq=False)
class UfwPlanner(FrontEnd):
    name = "ufw"
    reads = (Command(UFW_STATUS, env=LANG_C),)
    read_status = staticmethod(status_from_results)
    status: UfwStatus

    def owns(self, at: Outcome) -> bool:
        if at.table.source == "nft":
            return False
        return at.chain.name.startswith(("ufw-", "ufw6-")) or (at.rule is None and at.table.name == "filter")

    def keeps(self, table: Table) -> bool:
        return self.active and table.source != "nft"  # ufw rebuilds iptables from /etc/ufw

    def change_for(self, pv: PortVerdict, ports: list[int], attempt: int, ends: Endpoints) -> UfwChange | str:
        if attempt:
            return "the ufw command found would not open it (checked on the model)"
        direction, d = pv.key.direction, pv.deciding
        if d.rule is not None and "user" in d.chain.name:
            row = _row_for(self.status, direction, ports[0])
            if row is None or row.ports is None:
                return f"the ufw rule that blocks {ports[0]} is not in `ufw status` ({d.rule.text})"
            if not row.any_source:
                return f"ufw rule `{row.text}` is tied to a source address (a ban?)"
            covered = {p for a, b in row.ports for p in range(a, b + 1)} if row.ports else {0}
            if not covered <= MAIL_PORTS or row.proto != "tcp":
                return f"ufw rule `{row.text}` also covers other ports or protocols"
            return UfwChange(direction, (_spec(row.ports, row.to),), (row.action,),
                             f"turn `{row.text}` into an allow (ufw updates it in place)")
        if pv.reply_blocked:
            return "replies are blocked by a filter policy: ufw has no command that accepts only them"
        out = "out " if direction == "outbound" else ""
        return UfwChange(direction, tuple((f"{p}/tcp",) for p in ports), ("delete", "allow"),
                         "; ".join(f"ufw allow {out}{p}/tcp" for p in ports))

    def apply(self, ruleset: Ruleset, change: UfwChange) -> None:
        for argv in self.commands(change)[0]:
            simulate(ruleset, argv)

    def commands(self, change: UfwChange) -> tuple[list[Argv], list[Argv]]:
        return ([change.argv("allow", spec=s) for s in change.specs],
                [change.argv(*change.undo, spec=s) for s in reversed(change.specs)])

    def backup(self, changes: list[UfwChange]) -> BackupSpec:
        """ufw's files and its runtime (iptables rules of both families), guarded."""
        return BackupSpec(rulesets=["iptables", "ip6tables"], paths=["/etc/ufw", "/etc/default/ufw"],
                          guard=True)

    def preconditions(self, ruleset: Ruleset, changes: list[UfwChange], notes: list[str]) -> list[Precondition]:
        return [Precondition(argv=list(UFW_STATUS), normalize="raw",
                             expect_sha256=hashlib.sha256(self.status.raw.encode()).hexdigest(),
                             description="ufw's rules are as they were when this fix was planned")]


def plan_ufw(ruleset: Ruleset, status: UfwStatus, blocked: Iterable[tuple[str, str, int]],
             ends: Mapping[str, Endpoints]) -> PlannedFixes:
    """UfwPlanner(status).plan(...): one ufw Fix for the blocked keys ufw decides."""
    return UfwPlanner(status).plan(ruleset, blocked, ends)

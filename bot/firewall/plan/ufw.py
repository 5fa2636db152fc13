"""Fix plans for ufw: `ufw allow [out] P/tcp`, made and checked on the model.

ufw's rules are iptables rules (chains ufw-user-input, ufw6-user-input,
ufw-user-output, ...), so the plan is simulated on a copy of the parsed
iptables ruleset and evaluated there, exactly as plan_iptables does.

- A port blocked by ufw's default policy: `ufw allow P/tcp` (or `allow out`);
  rollback `ufw delete allow P/tcp`.
- A port blocked by a user deny/reject rule that comes first and concerns the
  mail ports only, from anywhere: `ufw allow <the same spec>` — ufw then
  updates that very rule in place ("Rule updated"), keeping its position;
  rollback `ufw deny <the same spec>` restores it. (`ufw insert N allow` of
  the same spec is skipped by ufw as an existing rule, seen in the lab.)
- A deny tied to a source address (a ban) or that also covers other ports is
  not planned: it is reported.
ufw persists its own rules: no persist step.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping

from bot.firewall.analysis import Endpoints, PortVerdict, port_verdict
from bot.firewall.model import Addr, Port, Rule, Ruleset, Table
from bot.firewall.parse.iptables import parse_rule
from bot.firewall.parse.ufw import UfwRule, UfwStatus
from bot.firewall.plan.base import MAIL_PORTS, SSH_PORT, flat_matches
from bot.firewall.plan.base import PlannedFixes as Plan
from bot.models import Fix, PortKey, Precondition


def family_keys(keys, family: str) -> list[PortKey]:
    return sorted({PortKey(*k) for k in keys if k[1] == family} | {PortKey("inbound", family, SSH_PORT)})


def verdicts(ruleset: Ruleset, keys, ends: Endpoints) -> dict[PortKey, PortVerdict]:
    return {PortKey(*k): port_verdict(ruleset, k, ends) for k in keys}


def _user_chain(direction: str, family: str) -> str:
    return f"{'ufw' if family == 'ipv4' else 'ufw6'}-user-{'input' if direction == 'inbound' else 'output'}"


def _decided_by_ufw(pv: PortVerdict) -> bool:
    d = pv.deciding
    if d is None or d.chain is None or d.table is None or d.table.source == "nft":
        return False
    return d.chain.name.startswith(("ufw-", "ufw6-")) or (d.rule is None and d.table.name == "filter")


def _row_for(status: UfwStatus, direction: str, port: int) -> UfwRule | None:
    """The first user deny/reject row (IPv4 listing first) that covers the port."""
    want = "in" if direction == "inbound" else "out"
    for r in sorted(status.rules, key=lambda r: r.v6):
        if r.direction == want and r.action in ("deny", "reject") and r.covers(port):
            return r
    return None


def _spec(row_ports: tuple[tuple[int, int], ...], to: str) -> list[str]:
    head = to.replace(" (v6)", "").strip()
    if "/" in head and "," not in head and ":" not in head and " " not in head:
        return [head]
    ports = ",".join(f"{a}" if a == b else f"{a}:{b}" for a, b in row_ports)
    return ["proto", "tcp", "to", "any", "port", ports]


def step_for(status: UfwStatus, direction: str, port: int, pv: PortVerdict) -> tuple[list, list, str] | str:
    """(command, rollback, reason) for one blocked port, or why none."""
    out = ["out"] if direction == "outbound" else []
    d = pv.deciding
    if d is not None and d.rule is not None and d.chain is not None and "user" in d.chain.name:
        row = _row_for(status, direction, port)
        if row is None or row.ports is None:
            return f"the ufw rule that blocks {port} is not in `ufw status` ({d.rule.text})"
        if not row.any_source:
            return f"ufw rule `{row.text}` is tied to a source address (a ban?)"
        covered = {p for a, b in row.ports for p in range(a, b + 1)} if row.ports else {0}
        if not covered <= MAIL_PORTS or row.proto != "tcp":
            return f"ufw rule `{row.text}` also covers other ports or protocols"
        spec = _spec(row.ports, row.to)
        return (["ufw", "allow", *out, *spec], ["ufw", row.action, *out, *spec],
                f"turn `{row.text}` into an allow (ufw updates it in place)")
    if pv.reply_blocked:
        return "replies are blocked (not a ufw default): see the iptables plan"
    return (["ufw", "allow", *out, f"{port}/tcp"], ["ufw", "delete", "allow", *out, f"{port}/tcp"],
            f"ufw allow {'out ' if out else ''}{port}/tcp")


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
    from bot.firewall.parse.iptables import port_ranges

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


def plan_ufw(ruleset: Ruleset, status: UfwStatus, blocked: Mapping[PortKey, object] | Iterable[PortKey],
             ends: Mapping[str, Endpoints]) -> Plan:
    """One ufw Fix for the blocked keys ufw decides (both families: ufw rules cover both)."""
    plan = Plan()
    if not status.active:
        return plan
    keys = [k for k in blocked if k[1] in ends]
    wanted = {f: family_keys(keys, f) for f in ends}
    before = {f: verdicts(ruleset, wanted[f], ends[f]) for f in ends}
    steps, seen = [], set()
    for k in sorted(keys):
        pv = before[k[1]][k]
        if pv.verdict != "block" or not _decided_by_ufw(pv) or (k[0], k[2]) in seen:
            continue
        seen.add((k[0], k[2]))
        step = step_for(status, k[0], k[2], pv)
        if isinstance(step, str):
            plan.notes.append(f"{k[0]} {k[2]}: not planned: {step}")
        else:
            steps.append(step)
    if steps:
        fix = _fix(ruleset, status, steps, keys, wanted, before, ends, plan.notes)
        if fix:
            plan.fixes.append(fix)
    return plan


def _fix(ruleset, status, steps, keys, wanted, before, ends, notes) -> Fix | None:
    work = copy.deepcopy(ruleset)
    for command, _, _ in steps:
        simulate(work, command)
    after = {f: verdicts(work, wanted[f], ends[f]) for f in ends}
    lost = [k for f in ends for k in wanted[f] if before[f][k].verdict == "allow" and after[f][k].verdict != "allow"]
    if lost:
        notes.append(f"ufw plan refused: it would stop allowing {lost}")
        return None
    opened = sorted(k for k in keys if before[k[1]][k].verdict == "block" and after[k[1]][k].verdict == "allow")
    if not opened:
        notes.append("ufw: no plan: the commands found would not open any blocked port")
        return None
    commands = [s[0] for s in steps]
    digest = hashlib.sha256(repr(commands).encode()).hexdigest()[:10]
    return Fix(
        id=f"ufw-{digest}", kind="firewall", backend="ufw",
        summary="ufw: " + "; ".join(s[2] for s in steps),
        commands=commands, rollback=[s[1] for s in reversed(steps)], persist=[],
        preconditions=[Precondition(
            argv=["ufw", "status", "verbose"], description="ufw's rules are as they were when this fix was planned",
            expect_sha256=hashlib.sha256(status.raw.encode()).hexdigest(), normalize="raw")],
        expected_allow=opened,
        findings=sorted({before[k[1]][k].blocked_by or "" for k in opened} - {""}),
    )

"""Fix plans for firewalld: add the mail services to the zone that rejects them.

For each blocked inbound key decided in `table inet firewalld` by a zone's
final reject (chain filter_IN_<zone>) or its target, the fix adds firewalld's
service for the port (smtp 25, smtps 465, smtp-submission 587, imap 143,
imaps 993 — firewalld 1.3 has no service "submission") to that zone, at
runtime AND permanently:

    firewall-cmd --zone=Z --add-service=S
    firewall-cmd --permanent --zone=Z --add-service=S      (the persist step)

and not `--permanent` + `--reload`: a reload rebuilds everything from the
permanent configuration and drops runtime-only state — seen in the lab: an
interface put in a zone without --permanent fell back to no zone after
--reload; fail2ban's firewalld actions and ipsets are runtime state too.
Rollback: the same with --remove-service (runtime and permanent).

Not planned (reported): a rich rule that rejects (filter_IN_<zone>_deny: a
ban, deliberately there), outbound blocks (firewalld policies), firewalld on
the iptables backend. The effect is checked on a copy of the model, with the
rule firewalld 1.3 writes (`tcp dport P accept` in filter_IN_<zone>_allow):
no plan unless the evaluator then allows the ports and still allows SSH.
Precondition: the zone's `firewall-cmd --list-all --zone=Z` is unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Mapping

from bot.firewall.analysis import Endpoints, PortVerdict, port_verdict
from bot.firewall.model import Ruleset, Table
from bot.firewall.parse.firewalld import (
    MAIL_SERVICES,
    FirewalldStatus,
    FirewalldZone,
    valid_zone,
    zone_command,
)
from bot.firewall.parse.nft import rules_of
from bot.firewall.parse.nft_expr import Sets
from bot.firewall.plan.base import SSH_PORT
from bot.firewall.plan.base import PlannedFixes as Plan
from bot.models import Fix, PortKey, Precondition


def family_keys(keys, family: str) -> list[PortKey]:
    return sorted({PortKey(*k) for k in keys if k[1] == family} | {PortKey("inbound", family, SSH_PORT)})


def verdicts(ruleset: Ruleset, keys, ends: Endpoints) -> dict[PortKey, PortVerdict]:
    return {PortKey(*k): port_verdict(ruleset, k, ends) for k in keys}

_ZONE_CHAIN = re.compile(r"^filter_IN_(.+?)(_pre|_log|_deny|_allow|_post)?$")


def _firewalld_table(ruleset: Ruleset) -> Table | None:
    return next((t for t in ruleset.tables if t.source == "nft" and t.family == "inet" and t.name == "firewalld"),
                None)


def zone_of(pv: PortVerdict, status: FirewalldStatus, ends: Endpoints) -> FirewalldZone | str:
    """The zone whose services would let pv's packet in, or why there is none."""
    d = pv.deciding
    if d is None or d.table is None or d.chain is None:
        return "no deciding rule"
    if not (d.table.source == "nft" and d.table.family == "inet" and d.table.name == "firewalld"):
        return f"decided by {d.table.label}, not by firewalld"
    if pv.key[0] != "inbound" or pv.reply_blocked:
        return "firewalld blocks it outbound or blocks the replies (policies): not planned"
    m = _ZONE_CHAIN.match(d.chain.name)
    if m and m.group(2) == "_deny":
        return f"a firewalld rich rule rejects it (zone {m.group(1)}): {d.rule.text if d.rule else ''}"
    name = m.group(1) if m and not m.group(2) else None
    zone = status.zones.get(name) if name else status.zone_for(ends.iface, ends.peer)
    if zone is None or not valid_zone(zone.name):
        return f"no firewalld zone found for chain {d.chain.name}"
    return zone


def simulate(ruleset: Ruleset, zone: str, port: int) -> bool:
    """Add the rule firewalld writes for a service on `port` to the copy; False if the chain is missing."""
    table = _firewalld_table(ruleset)
    chain = table.chains.get(f"filter_IN_{zone}_allow") if table else None
    if chain is None:
        return False
    exprs = [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": port}},
             {"accept": None}]
    chain.rules += rules_of(exprs, f"tcp dport {port} accept", None, chain, Sets({}))
    for i, r in enumerate(chain.rules, 1):
        r.position = i
    return True


def plan_firewalld(ruleset: Ruleset, status: FirewalldStatus, blocked: Mapping[PortKey, object] | Iterable[PortKey],
                   ends: Mapping[str, Endpoints]) -> Plan:
    """One Fix adding the mail services to the zones that reject them (both families: zones are inet)."""
    plan = Plan()
    if not status.running:
        return plan
    keys = [k for k in blocked if k[1] in ends]
    wanted = sorted(set(keys) | {k for f in ends for k in family_keys([], f)})
    before = {k: v for f in ends for k, v in verdicts(ruleset, [k for k in wanted if k[1] == f], ends[f]).items()}
    steps: dict[tuple[str, str], int] = {}
    for k in sorted(keys):
        pv = before[k]
        if pv.verdict != "block" or k[2] not in MAIL_SERVICES:
            continue
        zone = zone_of(pv, status, ends[k[1]])
        if isinstance(zone, str):
            plan.notes.append(f"{k[0]} {k[2]}/{k[1]}: not planned: {zone}")
        elif MAIL_SERVICES[k[2]] in zone.services:
            plan.notes.append(f"{k[2]}: service {MAIL_SERVICES[k[2]]} is in zone {zone.name} but still blocked")
        else:
            steps[(zone.name, MAIL_SERVICES[k[2]])] = k[2]
    if steps:
        fix = _fix(ruleset, status, steps, keys, wanted, before, ends, plan.notes)
        if fix is not None:
            plan.fixes.append(fix)
    return plan


def _fix(ruleset, status, steps, keys, wanted, before, ends, notes) -> Fix | None:
    work = copy.deepcopy(ruleset)
    for (zone, _), port in steps.items():
        if not simulate(work, zone, port):
            notes.append(f"firewalld: chain filter_IN_{zone}_allow not found: no plan")
            return None
    after = {k: v for f in ends for k, v in verdicts(work, [k for k in wanted if k[1] == f], ends[f]).items()}
    lost = [k for k in wanted if before[k].verdict == "allow" and after[k].verdict != "allow"]
    opened = sorted(k for k in keys if before[k].verdict == "block" and after[k].verdict == "allow")
    if lost or not opened:
        notes.append(f"firewalld: no plan ({'it would stop allowing ' + str(lost) if lost else 'opens nothing'})")
        return None
    commands, persist, rollback = [], [], []
    for zone, service in steps:
        commands.append(["firewall-cmd", f"--zone={zone}", f"--add-service={service}"])
        persist.append(["firewall-cmd", "--permanent", f"--zone={zone}", f"--add-service={service}"])
        rollback += [["firewall-cmd", f"--zone={zone}", f"--remove-service={service}"],
                     ["firewall-cmd", "--permanent", f"--zone={zone}", f"--remove-service={service}"]]
    digest = hashlib.sha256(repr(commands).encode()).hexdigest()[:10]
    return Fix(
        id=f"firewalld-{digest}", kind="firewall", backend="firewalld",
        summary="firewalld: " + "; ".join(f"add service {s} to zone {z}" for z, s in steps),
        commands=commands, persist=persist, rollback=rollback,
        preconditions=[Precondition(argv=list(zone_command(z)), normalize="raw",
                                    expect_sha256=hashlib.sha256(status.zones[z].raw.encode()).hexdigest(),
                                    description=f"firewalld zone {z} is as it was when this fix was planned")
                       for z in sorted({z for z, _ in steps})],
        expected_allow=opened,
        findings=sorted({before[k].blocked_by or "" for k in opened} - {""}),
    )

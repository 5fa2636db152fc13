"""firewalld fixes: add the mail services to the zone that rejects them (zones are inet: both families).

While firewalld runs it owns `table inet firewalld`. For the blocked inbound
ports decided there by a zone's
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
the iptables backend. The effect is checked on a copy of the model (base.py),
with the rule firewalld 1.3 writes (`tcp dport P accept` in
filter_IN_<zone>_allow).
Precondition: the zone's `firewall-cmd --list-all --zone=Z` is unchanged.
"""


from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.firewall.analysis import Endpoints, PortVerdict
from bot.firewall.evaluate import Outcome
from bot.firewall.model import Ruleset, Table
from bot.firewall.parse import LANG_C
from bot.firewall.parse.firewalld import (
    MAIL_SERVICES,
    STATE,
    FirewalldStatus,
    FirewalldZone,
    firewalld_commands,
    status_from_results,
    valid_zone,
    zone_command,
)
from bot.firewall.parse.nft import rules_of
from bot.firewall.parse.nft_expr import Sets
from bot.firewall.plan.base import Argv, FrontEnd, PlannedFixes, ports_text
from bot.models import BackupSpec, Command, Precondition

_ZONE_CHAIN = re.compile(r"^filter_IN_(.+?)(_pre|_log|_deny|_allow|_post)?$")


@dataclass(frozen=True)
class FirewalldChange:
    zone: str
    services: tuple[tuple[str, int], ...]  # (service, its port)
    reason: str

    def argv(self, *flags: str, undo: bool = False) -> list[Argv]:
        """`firewall-cmd [--permanent] --zone=Z --add-service=S` per service (the undo in reverse order)."""
        services = reversed(self.services) if undo else self.services
        return [["firewall-cmd", *flags[:-1], f"--zone={self.zone}", f"{flags[-1]}={s}"] for s, _ in services]


def is_firewalld_table(table: Table) -> bool:
    return table.source == "nft" and table.family == "inet" and table.name == "firewalld"


def _firewalld_table(ruleset: Ruleset) -> Table | None:
    return next((t for t in ruleset.tables if is_firewalld_table(t)), None)


def zone_of(pv: PortVerdict, status: FirewalldStatus, ends: Endpoints) -> FirewalldZone | str:
    """The zone whose services would let pv's packet in, or why there is none."""
    d = pv.deciding
    if pv.key.direction != "inbound" or pv.reply_blocked:
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


@dataclass(eq=False)
class FirewalldPlanner(FrontEnd):
    name = "firewalld"
    reads = (Command(STATE, env=LANG_C),)  # "not running" where it is only installed
    then_reads = tuple(Command(argv, env=LANG_C) for argv in firewalld_commands() if argv != STATE)
    read_status = staticmethod(status_from_results)
    status: FirewalldStatus

    def owns(self, at: Outcome) -> bool:
        return is_firewalld_table(at.table)

    def keeps(self, table: Table) -> bool:
        return is_firewalld_table(table)  # running or not: its permanent configuration rebuilds it

    def change_for(self, pv: PortVerdict, ports: list[int], attempt: int, ends: Endpoints
                   ) -> FirewalldChange | str:
        zone = zone_of(pv, self.status, ends)
        if isinstance(zone, str):
            return zone
        table = pv.deciding.table
        if f"filter_IN_{zone.name}_allow" not in table.chains:
            return f"chain filter_IN_{zone.name}_allow not found"
        missing = [p for p in ports if p in MAIL_SERVICES and MAIL_SERVICES[p] not in zone.services]
        if not missing:
            present = [MAIL_SERVICES[p] for p in ports if p in MAIL_SERVICES]
            return (f"service {', '.join(present)} is in zone {zone.name} but still blocked" if present
                    else f"no firewalld service for port {ports_text(ports)}")
        services = tuple((MAIL_SERVICES[p], p) for p in missing)
        return FirewalldChange(zone.name, services,
                               f"add service {', '.join(s for s, _ in services)} to zone {zone.name}")

    def setting(self, pv: PortVerdict, ends: Endpoints) -> str | None:
        zone = zone_of(pv, self.status, ends)
        if isinstance(zone, str):
            return f"firewalld: {zone}"
        if zone.allows_port(pv.key.port):
            return f"firewalld: zone {zone.name} allows the port, yet {pv.deciding.chain.name} blocks it"
        ports = [f"{lo}-{hi}/{p}" if lo != hi else f"{lo}/{p}" for lo, hi, p in zone.ports]
        return (f"firewalld: not in zone {zone.name} (target {zone.target}; services: "
                f"{' '.join(zone.services) or 'none'}; ports: {' '.join(ports) or 'none'})")

    def apply(self, ruleset: Ruleset, change: FirewalldChange) -> None:
        for _, port in change.services:
            simulate(ruleset, change.zone, port)

    def commands(self, change: FirewalldChange) -> tuple[list[Argv], list[Argv]]:
        """At runtime; the permanent configuration is the persistence (a --reload would drop runtime state)."""
        return change.argv("--add-service"), change.argv("--remove-service", undo=True)

    def persistence(self, ruleset: Ruleset, changes: list[FirewalldChange], notes: list[str]
                    ) -> tuple[list[Argv], list[Argv]]:
        return ([a for c in changes for a in c.argv("--permanent", "--add-service")],
                [a for c in reversed(changes) for a in c.argv("--permanent", "--remove-service", undo=True)])

    def backup(self, changes: list[FirewalldChange]) -> BackupSpec:
        """Its configuration, put back and reloaded (the reload rebuilds its nft table, which
        is only compared), guarded."""
        return BackupSpec(compare=["nft"], paths=["/etc/firewalld"],
                          reload=[["firewall-cmd", "--reload"]], guard=True)

    def preconditions(self, ruleset: Ruleset, changes: list[FirewalldChange], notes: list[str]
                      ) -> list[Precondition]:
        return [Precondition(argv=list(zone_command(z)), normalize="raw",
                             expect_sha256=hashlib.sha256(self.status.zones[z].raw.encode()).hexdigest(),
                             description=f"firewalld zone {z} is as it was when this fix was planned")
                for z in sorted({c.zone for c in changes})]


def plan_firewalld(ruleset: Ruleset, status: FirewalldStatus, blocked: Iterable[tuple[str, str, int]],
                   ends: Mapping[str, Endpoints]) -> PlannedFixes:
    """FirewalldPlanner(status).plan(...): one Fix adding the mail services to the zones that reject them."""
    return FirewalldPlanner(status).plan(ruleset, blocked, ends)

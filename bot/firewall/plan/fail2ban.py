"""fail2ban fixes: a ban is lifted by fail2ban itself, `fail2ban-client set JAIL unbanip ADDR`.

While fail2ban's server runs it owns the places its banactions write: the iptables chains
f2b-JAIL (iptables-multiport & co.), a rule matching its ipset f2b-JAIL, and nftables'
`table inet f2b-table` with the sets addr-set-JAIL / addr6-set-JAIL (nftables-multiport).
A mail port blocked there for the prober is a ban of the prober's address by JAIL (when the
jail lists it: `fail2ban-client banned`): the fix asks fail2ban to lift it, so its own state
(the jail, its database) and the kernel's rules stay in step; a raw rule would leave the ban
in place. The rollback bans the address again (`banip`: a new ban, with the jail's full
bantime). On the model, the address leaves the ban rule (or the set).
Precondition: fail2ban's server answers (`fail2ban-client ping`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from bot.firewall.analysis import Endpoints, PortVerdict
from bot.firewall.evaluate import Outcome
from bot.firewall.model import Addr, Never, Ruleset, Table
from bot.firewall.parse.fail2ban import (
    F2B_BANNED,
    F2B_DUMP,
    F2B_STATUS,
    JAIL_NAME,
    Fail2banStatus,
    Jail,
    status_from_results,
)
from bot.firewall.plan.base import Argv, FrontEnd
from bot.models import BackupSpec, Command, Precondition

_SET = re.compile(r"(?:@addr6?-set-|--match-set f2b-)([A-Za-z0-9_.@+-]+)")


@dataclass(frozen=True)
class Fail2banChange:
    jail: str
    address: str
    reason: str


def jail_of(at: Outcome) -> str | None:
    """The jail whose banaction wrote this place, if fail2ban's."""
    if at.table.source != "nft" and at.chain.name.startswith("f2b-"):
        return at.chain.name[4:]
    if at.rule is not None and (at.table.source != "nft" or at.table.name == "f2b-table"):
        m = _SET.search(at.rule.text)
        return m.group(1) if m else None
    return None


def _host(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return str(ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}"))


def lift(table: Table, address: str) -> None:
    """The model after unbanip: the address gone from the source match (or set) of fail2ban's
    ban rules (its f2b-JAIL chains, its table inet f2b-table)."""
    host = _host(address)
    for chain in table.chains.values():
        if table.name != "f2b-table" and not chain.name.startswith("f2b-"):
            continue
        for rule in chain.rules:
            matches = []
            for m in rule.matches:
                if isinstance(m, Addr) and m.field == "saddr" and not m.negate and host in m.networks:
                    rest = tuple(n for n in m.networks if n != host)
                    m = replace(m, networks=rest) if rest else Never(text=m.text)
                matches.append(m)
            rule.matches = tuple(matches)


@dataclass(eq=False)
class Fail2banPlanner(FrontEnd):
    name = "fail2ban"
    in_charge = False  # it manages bans, not the firewall: the evidence names it beside who is in charge
    reads = (Command(F2B_STATUS),)  # fails when no server runs
    then_reads = (Command(F2B_BANNED), Command(F2B_DUMP))
    read_status = staticmethod(status_from_results)
    status: Fail2banStatus

    def owns(self, at: Outcome) -> bool:
        return jail_of(at) is not None

    def _jail(self, pv: PortVerdict) -> Jail | None:
        name = jail_of(pv.deciding)
        return self.status.jails.get(name) if name else None

    def change_for(self, pv: PortVerdict, ports: list[int], attempt: int, ends: Endpoints) -> Fail2banChange | str:
        name = jail_of(pv.deciding)
        jail = self._jail(pv)
        if jail is None or not JAIL_NAME.match(jail.name):
            return f"fail2ban's rule for jail {name!r}, which fail2ban does not list as a jail"
        if ends.peer is None or not jail.bans(ends.peer):
            return f"fail2ban's jail {jail.name} rule blocks it, but the jail does not list {ends.peer} as banned"
        return Fail2banChange(jail.name, ends.peer, f"lift jail {jail.name}'s ban of {ends.peer} "
                                                    f"(bantime {jail.bantime or '?'})")

    def apply(self, ruleset: Ruleset, change: Fail2banChange) -> None:
        for table in ruleset.tables:
            lift(table, change.address)

    def commands(self, change: Fail2banChange) -> tuple[list[Argv], list[Argv]]:
        head = ["fail2ban-client", "set", change.jail]
        return [[*head, "unbanip", change.address]], [[*head, "banip", change.address]]

    def backup(self, changes: list[Fail2banChange]) -> BackupSpec:
        """Nothing to save: the rollback (banip) bans the address again. Lifting a ban cannot cut
        mailcheck's SSH: no guard."""
        return BackupSpec()

    def preconditions(self, ruleset: Ruleset, changes: list[Fail2banChange], notes: list[str]) -> list[Precondition]:
        return [Precondition(argv=["fail2ban-client", "ping"], description="fail2ban's server answers")]

    def setting(self, pv: PortVerdict, ends: Endpoints) -> str | None:
        jail = self._jail(pv)
        if jail is None:
            return None
        actions = f", banaction {', '.join(jail.actions)}" if jail.actions else ""
        whom = f"bans {ends.peer}" if ends.peer and jail.bans(ends.peer) else f"holds {len(jail.banned)} ban(s)"
        return f"fail2ban: jail {jail.name} {whom} (bantime {jail.bantime or '?'}{actions})"

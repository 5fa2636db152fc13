"""fail2ban's own view: is its server running, which jails, whom they ban, for how long.

`fail2ban-client status` (the jail list; it fails when no server runs), `fail2ban-client
banned` (every jail's banned addresses, as a Python literal: [{'exim': ['198.18.2.1']}]) and
`fail2ban-client -d` (the configuration the server was started from, one Python-literal
command per line: ['set', 'exim', 'bantime', '1h'], ['set', 'exim', 'addaction', ...]).
Literals are read with ast.literal_eval (data only, never code).
"""

from __future__ import annotations

import ast
import ipaddress
import re
from dataclasses import dataclass, field

from bot.firewall.parse import Results, ok_output

F2B_STATUS = ("fail2ban-client", "status")
F2B_BANNED = ("fail2ban-client", "banned")
F2B_DUMP = ("fail2ban-client", "-d")
JAIL_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")


@dataclass(frozen=True)
class Jail:
    name: str
    banned: tuple[str, ...] = ()
    bantime: str | None = None  # as configured: "1h", "600", "-1" (forever)
    actions: tuple[str, ...] = ()  # banactions: iptables-multiport, nftables-multiport, ...

    def bans(self, address: str) -> bool:
        return any(_same(address, b) for b in self.banned)


@dataclass(frozen=True)
class Fail2banStatus:
    running: bool = False
    jails: dict[str, Jail] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.running


def _same(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _literal(text: str):
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def parse_banned(text: str) -> dict[str, tuple[str, ...]]:
    """[{'exim': ['198.18.2.1']}, {'sshd': []}] -> {'exim': ('198.18.2.1',), 'sshd': ()}."""
    data = _literal(text)
    out: dict[str, tuple[str, ...]] = {}
    for item in data if isinstance(data, list) else ():
        for jail, addrs in item.items() if isinstance(item, dict) else ():
            if isinstance(jail, str) and isinstance(addrs, list):
                out[jail] = tuple(str(a) for a in addrs)
    return out


def parse_dump(text: str) -> dict[str, dict[str, object]]:
    """`fail2ban-client -d` -> {jail: {'bantime': '1h', 'actions': [...]}}."""
    out: dict[str, dict[str, object]] = {}
    for line in text.splitlines():
        cmd = _literal(line) if line.startswith("[") else None
        if not isinstance(cmd, list) or len(cmd) < 4 or cmd[0] != "set" or not isinstance(cmd[1], str):
            continue
        jail = out.setdefault(cmd[1], {"actions": []})
        if cmd[2] == "bantime":
            jail["bantime"] = str(cmd[3])
        elif cmd[2] == "addaction":
            jail["actions"].append(str(cmd[3]))
    return out


def status_from_results(results: Results) -> Fail2banStatus:
    if ok_output(results, F2B_STATUS) is None:
        return Fail2banStatus()
    banned = parse_banned(ok_output(results, F2B_BANNED) or "")
    dump = parse_dump(ok_output(results, F2B_DUMP) or "")
    jails = {}
    for name in sorted(set(banned) | set(dump)):
        conf = dump.get(name, {})
        jails[name] = Jail(name, banned.get(name, ()), conf.get("bantime"), tuple(conf.get("actions", ())))
    return Fail2banStatus(True, jails)

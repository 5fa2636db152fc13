"""firewalld's state: is it running, which zones are active, what each allows.

The kernel's verdict on a firewalld host comes from the nftables ruleset it
loads (`table inet firewalld`, zones as chains filter_IN_<zone>_{pre,log,
deny,allow,post}) read by bot/firewall/parse/nft.py. This module reads what
firewall-cmd says, to name firewalld as the backend in charge, to tell which
zone an interface or source is in, and to plan fixes in firewalld's own terms
(services), see bot/firewall/plan/firewalld.py.

Commands (read-only, one batch; all need LANG=C):
    firewall-cmd --state                 "running" (exit 0) / "not running" (exit 252)
    firewall-cmd --get-default-zone
    firewall-cmd --get-active-zones      zone names, each followed by "  interfaces: ..." / "  sources: ..."
    firewall-cmd --list-all-zones        every zone's `--list-all` block, "(active)" marked
`--list-all --zone=Z` gives one such block; parse_list_all reads both.
Seen in the lab (firewalld 1.3, Debian 12): there is no service "submission"
(it is "smtp-submission"), and `firewall-cmd --reload` drops runtime-only
settings such as an interface added without --permanent.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

STATE = ("firewall-cmd", "--state")
DEFAULT_ZONE = ("firewall-cmd", "--get-default-zone")
ACTIVE_ZONES = ("firewall-cmd", "--get-active-zones")
ALL_ZONES = ("firewall-cmd", "--list-all-zones")
# firewalld's own service definitions (/usr/lib/firewalld/services/*.xml) for the mail ports.
MAIL_SERVICES = {25: "smtp", 465: "smtps", 587: "smtp-submission", 143: "imap", 993: "imaps"}
SERVICE_PORTS = {"smtp": 25, "smtps": 465, "smtp-submission": 587, "submission": 587, "imap": 143,
                 "imaps": 993, "ssh": 22, "pop3": 110, "pop3s": 995, "http": 80, "https": 443}
_ZONE_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_HEADER = re.compile(r"^(\S+)(?:\s+\(([^)]*)\))?\s*$")


@dataclass
class FirewalldZone:
    name: str
    active: bool = False
    default: bool = False
    target: str = "default"
    interfaces: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    ports: tuple[tuple[int, int, str], ...] = ()  # (first, last, protocol)
    rich_rules: tuple[str, ...] = ()
    raw: str = ""  # the zone's block as firewall-cmd printed it (plan preconditions hash it)

    def allows_port(self, port: int) -> bool:
        """Does a service or port entry of this zone open tcp `port` (rich rules not counted)?"""
        by_service = any(SERVICE_PORTS.get(s) == port for s in self.services)
        return by_service or any(lo <= port <= hi and proto == "tcp" for lo, hi, proto in self.ports)


@dataclass
class FirewalldStatus:
    running: bool | None  # None: firewall-cmd missing or its answer not understood
    default_zone: str | None = None
    zones: dict[str, FirewalldZone] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool | None:
        """In charge: running (the word ufw's status uses)."""
        return self.running

    @property
    def active_zones(self) -> list[FirewalldZone]:
        return [z for z in self.zones.values() if z.active]

    def zone_for(self, iface: str | None = None, source: str | None = None) -> FirewalldZone | None:
        """The zone firewalld puts a packet in: by source first, then interface, then the default zone."""
        if source:
            for z in self.active_zones:
                for net in z.sources:
                    try:
                        if ipaddress.ip_address(source) in ipaddress.ip_network(net, strict=False):
                            return z
                    except ValueError:
                        continue
        if iface:
            for z in self.active_zones:
                if iface in z.interfaces:
                    return z
        return self.zones.get(self.default_zone or "")


def firewalld_commands() -> list[tuple[str, ...]]:
    """The read-only commands parse_firewalld needs (run with LANG=C)."""
    return [STATE, DEFAULT_ZONE, ACTIVE_ZONES, ALL_ZONES]


def zone_command(zone: str) -> tuple[str, ...]:
    """`firewall-cmd --list-all --zone=Z` for one zone (the name checked: it goes into argv)."""
    if not valid_zone(zone):
        raise ValueError(f"not a firewalld zone name: {zone!r}")
    return ("firewall-cmd", "--list-all", f"--zone={zone}")


def valid_zone(name: str) -> bool:
    return bool(_ZONE_NAME.match(name or ""))


def parse_state(stdout: str, exit_status: int | None) -> bool | None:
    word = (stdout or "").strip()
    if exit_status == 0 and word == "running":
        return True
    if word == "not running" or exit_status == 252:
        return False
    return None


def parse_active_zones(text: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """`--get-active-zones` -> {zone: {"interfaces": (...), "sources": (...)}}."""
    zones: dict[str, dict[str, tuple[str, ...]]] = {}
    current = None
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            current = line.strip().split()[0]
            zones[current] = {"interfaces": (), "sources": ()}
        elif current and ":" in line:
            key, _, value = line.strip().partition(":")
            if key in ("interfaces", "sources"):
                zones[current][key] = tuple(value.split())
    return zones


def parse_list_all(text: str, problems: list[str] | None = None) -> dict[str, FirewalldZone]:
    """`--list-all [--zone=Z]` or `--list-all-zones` -> {zone: FirewalldZone}."""
    zones: dict[str, FirewalldZone] = {}
    zone: FirewalldZone | None = None
    lines: list[str] = []
    in_rich = False
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            if zone is not None:
                zone.raw = "\n".join(lines) + "\n"
            zone, lines, in_rich = _header(line), [line], False
            if zone is not None:
                zones[zone.name] = zone
            elif problems is not None:
                problems.append(f"firewall-cmd --list-all: line not understood: {line[:80]!r}")
            continue
        lines.append(line)
        if zone is None:
            continue
        if line.startswith("\t") or (in_rich and line.startswith("        ")):
            zone.rich_rules += (line.strip(),)
            continue
        key, sep, value = line.strip().partition(":")
        in_rich = key == "rich rules"
        if sep:
            _field(zone, key, value.strip(), problems)
    if zone is not None:
        zone.raw = "\n".join(lines) + "\n"
    return zones


def _header(line: str) -> FirewalldZone | None:
    m = _HEADER.match(line.strip())
    if not m or not valid_zone(m.group(1)):
        return None
    marks = {w.strip() for w in (m.group(2) or "").split(",")}
    return FirewalldZone(m.group(1), active="active" in marks, default="default" in marks)


def _field(zone: FirewalldZone, key: str, value: str, problems: list[str] | None) -> None:
    words = tuple(value.split())
    if key == "target":
        zone.target = value or "default"
    elif key in ("interfaces", "sources", "services"):
        setattr(zone, key, words)
    elif key == "ports":
        zone.ports = tuple(p for w in words if (p := _port_entry(w, problems)) is not None)


def _port_entry(word: str, problems: list[str] | None) -> tuple[int, int, str] | None:
    m = re.match(r"^(\d{1,5})(?:-(\d{1,5}))?/([a-z]+)$", word)
    if not m:
        if problems is not None:
            problems.append(f"firewalld port entry not understood: {word[:40]!r}")
        return None
    lo = int(m.group(1))
    return lo, int(m.group(2) or lo), m.group(3)


def status_from_results(results) -> FirewalldStatus:
    """parse_firewalld on the engine's results ({argv: CommandResult}) of firewalld_commands()."""
    state = results.get(STATE)
    if state is None or state.exit_status == 127:
        return FirewalldStatus(None)

    def out(argv: tuple[str, ...]) -> str:
        r = results.get(argv)
        return r.stdout if r is not None and r.exit_status == 0 else ""

    return parse_firewalld((state.stdout, state.exit_status), out(DEFAULT_ZONE), out(ACTIVE_ZONES), out(ALL_ZONES))


def parse_firewalld(state: tuple[str, int | None] | None, default_zone: str = "", active_zones: str = "",
                    list_all: str = "") -> FirewalldStatus:
    """Combine the answers of firewalld_commands() (each a stdout; state with its exit status)."""
    running = parse_state(*state) if state is not None else None
    status = FirewalldStatus(running)
    if not running:
        return status
    status.zones = parse_list_all(list_all, status.problems)
    name = (default_zone or "").strip()
    status.default_zone = name if valid_zone(name) else None
    for zname, binds in parse_active_zones(active_zones).items():
        zone = status.zones.setdefault(zname, FirewalldZone(zname))
        zone.active = True
        zone.interfaces = binds["interfaces"] or zone.interfaces
        zone.sources = binds["sources"] or zone.sources
    if status.default_zone and status.default_zone in status.zones:
        status.zones[status.default_zone].default = True
    return status

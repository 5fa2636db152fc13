"""`LANG=C ufw status verbose` -> UfwStatus: is ufw in charge, its defaults, its rules.

For reporting the backend in charge and for planning ufw fixes only: the
kernel's verdict comes from iptables-save (ufw's chains are iptables chains),
never from this listing. What cannot be read is listed in `problems`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from bot.firewall.parse.iptables import port_ranges

UFW_STATUS = ("ufw", "status", "verbose")  # run with LANG=C
_DEFAULT = re.compile(r"(\w+) \((incoming|outgoing|routed)\)")
_ROW = re.compile(
    r"^(?P<to>.+?)\s+(?P<action>ALLOW|DENY|REJECT|LIMIT)(?:\s+(?P<dir>IN|OUT|FWD))?"
    r"(?:\s+\((?P<log>log|log-all)\))?\s+(?P<src>.+?)(?:\s+#\s*(?P<comment>.*))?$"
)


@dataclass(frozen=True)
class UfwRule:
    index: int  # 1-based order in the verbose listing; NOT `ufw status numbered`'s number
    # (verbose lists outgoing rules after all incoming ones; numbered keeps insertion order)
    to: str  # "25/tcp", "25,465/tcp", "Anywhere", "993/tcp on eth0", "OpenSSH"
    action: Literal["allow", "deny", "reject", "limit"]
    direction: Literal["in", "out", "fwd"]
    source: str  # "Anywhere", "198.18.0.1", "10.0.0.0/8"
    v6: bool
    text: str
    comment: str = ""

    @property
    def proto(self) -> str | None:
        """'tcp' / 'udp' / None (both) — from the 'To' column."""
        m = re.search(r"/(tcp|udp)\b", self.to)
        return m.group(1) if m else None

    @property
    def ports(self) -> tuple[tuple[int, int], ...] | None:
        """Port ranges of the 'To' column; () = any port; None = not a port list (an app profile)."""
        head = self.to.replace(" (v6)", "").split(" on ")[0].strip()
        if head.startswith("Anywhere") or _is_address(head):
            return ()
        try:
            return port_ranges(head.split("/")[0])
        except (ValueError, KeyError):
            return None

    @property
    def any_source(self) -> bool:
        return self.source.replace(" (v6)", "").strip() == "Anywhere"

    def covers(self, port: int, proto: str = "tcp") -> bool | None:
        ports = self.ports
        if ports is None:
            return None
        return (self.proto in (None, proto)) and (not ports or any(a <= port <= b for a, b in ports))


@dataclass
class UfwStatus:
    installed: bool = True
    active: bool | None = None  # None: could not tell
    logging: str = ""
    default_incoming: str | None = None  # allow / deny / reject
    default_outgoing: str | None = None
    default_routed: str | None = None
    rules: list[UfwRule] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    raw: str = ""  # the listing as collected (its sha256 is a fix's precondition)

    def rules_for(self, direction: str, v6: bool) -> list[UfwRule]:
        return [r for r in self.rules if r.direction == direction and r.v6 == v6]


def _is_address(word: str) -> bool:
    return bool(re.fullmatch(r"[0-9.]+(/\d+)?|[0-9a-fA-F:]*:[0-9a-fA-F:.]*(/\d+)?", word))


def status_from_results(results) -> UfwStatus:
    """parse_ufw_status on the engine's results ({argv: CommandResult}); absent: not installed."""
    r = results.get(UFW_STATUS)
    return parse_ufw_status(r.stdout if r is not None else "", r.exit_status if r is not None else 127)


def parse_ufw_status(text: str, exit_status: int | None = 0) -> UfwStatus:
    """Parse `LANG=C ufw status verbose`. exit 127 (or 'command not found'): not installed."""
    status = UfwStatus(raw=text)
    if exit_status == 127 or "command not found" in text or "not found" in text.lower()[:80]:
        status.installed, status.active = False, False
        return status
    in_table = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        if in_table:
            _row(line, status)
        elif line.startswith("Status:"):
            value = line.split(":", 1)[1].strip()
            status.active = {"active": True, "inactive": False}.get(value)
        elif line.startswith("Logging:"):
            status.logging = line.split(":", 1)[1].strip()
        elif line.startswith("Default:"):
            _defaults(line, status)
        elif line.split()[:3] == ["To", "Action", "From"]:
            in_table = True
        elif set(line.split()) <= {"--", "------", "----"}:
            continue
    if status.active is None:
        status.problems.append("ufw status: no 'Status: active|inactive' line")
    if status.active and status.default_incoming is None:
        status.problems.append("ufw status: no 'Default:' line (not the verbose listing?)")
    return status


def _defaults(line: str, status: UfwStatus) -> None:
    for policy, where in _DEFAULT.findall(line):
        setattr(status, f"default_{where}", policy.lower())


def _row(line: str, status: UfwStatus) -> None:
    if line.strip().startswith("--"):
        return
    m = _ROW.match(line.strip())
    if not m:
        status.problems.append(f"ufw status: row not understood: {line.strip()[:120]}")
        return
    to, src = m.group("to").strip(), m.group("src").strip()
    v6 = "(v6)" in to or "(v6)" in src
    status.rules.append(UfwRule(
        index=len(status.rules) + 1, to=to, action=m.group("action").lower(),  # type: ignore[arg-type]
        direction=(m.group("dir") or "IN").lower(), source=src, v6=v6,  # type: ignore[arg-type]
        text=line.strip(), comment=(m.group("comment") or "").strip()))

"""Parsers for the outputs the services step reads (pure, total: never raise).

ss -Hltnp, lsof (-i:PORT as in the guide, or -iTCP -sTCP:LISTEN), systemctl
status (the guide's samples), ps -eo pid=,comm=,args=.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SERVICE_PORTS = {"smtp": 25, "submission": 587, "submissions": 465, "smtps": 465, "urd": 465,
                 "imap": 143, "imap2": 143, "imaps": 993}
LOOPBACK = {"127.0.0.1", "::1", "localhost", "ip6-localhost"}


@dataclass(frozen=True)
class Listener:
    port: int
    address: str  # '*' for every address
    process: str | None = None
    pid: int | None = None
    family: str = "any"  # ipv4 | ipv6 | any (a dual-stack socket)
    users: tuple[tuple[str, int], ...] = ()  # every (process, pid) holding the socket (ss -p)

    @property
    def loopback(self) -> bool:
        return self.address in LOOPBACK or self.address.startswith("127.")

    @property
    def names(self) -> tuple[str, ...]:
        """Every process name holding the socket, in ss's order (Postfix: smtpd and master)."""
        names = [n for n, _ in self.users] or ([self.process] if self.process else [])
        return tuple(dict.fromkeys(names))


def _split_addr(text: str) -> tuple[str, str, str] | None:
    """'0.0.0.0:25' -> ('*', '25', 'ipv4'); '[::1]:25' -> ('::1', '25', 'ipv6'); '*:25' -> any."""
    addr, sep, port = text.rpartition(":")
    if not sep:
        return None
    family = "any" if addr == "*" else "ipv6" if ":" in addr else "ipv4"
    addr = addr.strip("[]")
    if "%" in addr:  # 127.0.0.53%lo, fe80::1%eth0
        addr = addr.split("%", 1)[0]
    if addr in ("0.0.0.0", "::", ""):
        addr = "*"
    return addr, port, family


def _port(text: str) -> int | None:
    if text.isdigit():
        return int(text)
    return SERVICE_PORTS.get(text)


_SS_USER = re.compile(r'\("(?P<name>[^"]+)",pid=(?P<pid>\d+)')


def parse_ss(text: str) -> list[Listener]:
    """`ss -Hltnp`: State Recv-Q Send-Q Local Peer [users:(("exim4",pid=1,fd=3))]."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 5 or words[0] not in ("LISTEN", "UNCONN"):
            continue
        sp = _split_addr(words[3])
        port = _port(sp[1]) if sp else None
        if sp is None or port is None:
            continue
        users = tuple((m["name"], int(m["pid"])) for m in _SS_USER.finditer(line))
        first = users[0] if users else (None, None)
        out.append(Listener(port, sp[0], first[0], first[1], sp[2], users))
    return out


def parse_lsof(text: str) -> list[Listener]:
    """lsof output (the guide's `lsof -i:25` or `lsof -nP -iTCP -sTCP:LISTEN`)."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 9 or words[0] == "COMMAND" or "(LISTEN)" not in line:
            continue
        name = words[-2] if words[-1] == "(LISTEN)" else words[-1]
        sp = _split_addr(name)
        port = _port(sp[1]) if sp else None
        if sp is None or port is None:
            continue
        pid = int(words[1]) if words[1].isdigit() else None
        family = sp[2] if sp[2] != "any" else {"IPv4": "ipv4", "IPv6": "ipv6"}.get(words[4], "any")
        out.append(Listener(port, sp[0], words[0], pid, family))
    return out


@dataclass(frozen=True)
class UnitStatus:
    unit: str
    description: str = ""
    loaded: str = ""  # loaded | not-found | masked ...
    active: str = ""  # active | inactive | failed | activating ...
    sub: str = ""  # running | dead | exited ...
    since: str = ""
    main_pid: int | None = None

    @property
    def running(self) -> bool:
        return self.active == "active" and self.sub in ("running", "")


_HEAD = re.compile(r"^\s*(?:[●○×*]\s+)?(?P<unit>[\w@.:-]+\.service)(?:\s+-\s+(?P<desc>.*))?$")
_ACTIVE = re.compile(r"^\s*Active:\s+(?P<active>[\w-]+)(?:\s+\((?P<sub>[^)]+)\))?(?:\s+since\s+(?P<since>[^;]+))?")
_PID = re.compile(r"^\s*Main PID:\s+(?P<pid>\d+)")


def parse_systemctl_status(text: str) -> dict[str, UnitStatus]:
    """`systemctl status UNIT...` text, one block per unit (the guide's samples)."""
    units: dict[str, dict] = {}
    current: dict | None = None
    for line in text.splitlines():
        if m := _HEAD.match(line):
            current = {"unit": m["unit"], "description": (m["desc"] or "").strip()}
            units[m["unit"]] = current
        elif current is None:
            continue
        elif line.strip().startswith("Loaded:"):
            current["loaded"] = line.split(":", 1)[1].split()[0] if line.split(":", 1)[1].split() else ""
        elif m := _ACTIVE.match(line):
            current.update(active=m["active"], sub=m["sub"] or "", since=(m["since"] or "").strip())
        elif m := _PID.match(line):
            current["main_pid"] = int(m["pid"])
    return {u: UnitStatus(**d) for u, d in units.items()}


@dataclass(frozen=True)
class Process:
    pid: int
    comm: str
    args: str


def parse_ps(text: str) -> list[Process]:
    """`ps -eo pid=,comm=,args=`."""
    out = []
    for line in text.splitlines():
        words = line.split(None, 2)
        if len(words) >= 2 and words[0].isdigit():
            out.append(Process(int(words[0]), words[1], words[2] if len(words) > 2 else words[1]))
    return out


# --- which daemon is it --------------------------------------------------------

DAEMONS = ("exim", "postfix", "sendmail", "opensmtpd", "dovecot", "courier", "cyrus")
MTA = ("exim", "postfix", "sendmail", "opensmtpd")
# Postfix's own programs (master(8) runs them; none of them is another daemon's name)
POSTFIX_PROGRAMS = ("postscreen", "tlsproxy", "dnsblog", "qmqpd", "postlogd", "qmgr", "pickup")


def daemon_of(process: str | None, args: str = "") -> str | None:
    """exim/postfix/sendmail/opensmtpd/dovecot/courier/cyrus from a process name (and args)."""
    name = (process or "").lower()
    text = f"{name} {args.lower()}"
    if name.startswith("exim"):
        return "exim"
    if "postfix" in text or name in POSTFIX_PROGRAMS or (name == "smtpd" and "-n" in args.split()):
        return "postfix"  # master, `smtpd -n smtp -t inet`, postscreen
    if (name == "master" and "cyrus" in text) or name.startswith("cyr"):
        return "cyrus"
    if name == "smtpd" or "opensmtpd" in text:
        return "opensmtpd"
    if name.startswith("sendmail"):
        return "sendmail"
    if name.startswith("dovecot") or name in ("imap-login", "pop3-login"):
        return "dovecot"
    if name.startswith("courier") or "courier" in text:
        return "courier"
    return None


def listener_daemon(x: Listener, args: dict[int, str] | None = None) -> str | None:
    """The daemon behind a listening socket, from every process holding it (and their ps args
    by pid): Postfix's sockets are held by master and by the smtpd or postscreen it started."""
    args = args or {}
    users = x.users or (((x.process, x.pid or 0),) if x.process else ())
    found = [d for name, pid in users if (d := daemon_of(name, args.get(pid, "")))]
    names = set(x.names)
    if "postfix" in found or ("master" in names and names & {"smtpd", "postscreen", "qmqpd"}):
        return "postfix"
    return found[0] if found else None


# --- container engines' port holders ---------------------------------------------

# A process that holds a published port for a container (the mail daemon runs inside it):
# name -> (engine, how)
PROXIES = {
    "docker-proxy": ("docker", "Docker's userland proxy (docker-proxy)"),
    "dockerd": ("docker", "dockerd itself (with the userland proxy off it holds the published port)"),
    "conmon": ("podman", "Podman's conmon (it holds the published ports of a rootful container)"),
    "rootlessport": ("podman", "rootless Podman's port forwarder (rootlessport)"),
    "rootlessport-child": ("podman", "rootless Podman's port forwarder (rootlessport)"),
    "slirp4netns": ("podman", "slirp4netns (a rootless container's network)"),
    # pasta is passt under another name: ss shows the binary's name (passt.avx2 on AVX2 CPUs)
    **{name: ("podman", "pasta (a rootless container's network)")
       for name in ("pasta", "pasta.avx2", "passt", "passt.avx2")},
}


def proxy_of(x: Listener) -> tuple[str, str] | None:
    """(engine, description) when a container engine's process holds the socket."""
    return next((PROXIES[n] for n in x.names if n in PROXIES), None)

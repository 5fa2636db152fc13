"""Real fail2ban (Debian's 1.0.2) in a lab host, with its own configuration and socket.

The host's /etc/fail2ban is a copy (/etc/netns/mcN/fail2ban, bind-mounted over /etc by
`ip netns exec`, so the SSH sessions mailcheck opens see the same files), with a
fail2ban.local giving the server its own socket, pid file, database and log, and a
jail.local enabling one jail of Debian's jail.conf (exim by default) on a log file of
the host's own. Bans are made the way an administrator makes them:
`fail2ban-client set JAIL banip ADDR`; the server then runs the real banaction
(iptables-multiport, nftables-multiport, ...) inside the host.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

STATUS_COMMANDS = (
    ("fail2ban-client", "status"),
    ("fail2ban-client", "-d"),
)


def jail_commands(jail: str) -> tuple[tuple[str, ...], ...]:
    return (("fail2ban-client", "status", jail), ("fail2ban-client", "get", jail, "bantime"),
            ("fail2ban-client", "get", jail, "banip", "--with-time"),
            ("fail2ban-client", "get", jail, "actions"))


def start_fail2ban(host, jail: str = "exim", banaction: str = "iptables-multiport",
                   port: str = "smtp,465,submission", bantime: str = "1h") -> None:
    etc = host.etc / "fail2ban"
    shutil.copytree("/etc/fail2ban", etc, symlinks=True)
    (etc / "jail.d" / "defaults-debian.conf").unlink(missing_ok=True)  # its sshd jail reads auth.log
    run = Path(f"/run/fail2ban-{host.ns}")
    run.mkdir(exist_ok=True)
    host.cleanups.append(lambda: shutil.rmtree(run, ignore_errors=True))
    logfile = host.workdir / f"{jail}.log"
    logfile.touch()
    (etc / "fail2ban.local").write_text(
        f"[Definition]\nlogtarget = {host.workdir}/fail2ban.log\nsocket = {run}/fail2ban.sock\n"
        f"pidfile = {run}/fail2ban.pid\ndbfile = {host.workdir}/fail2ban.sqlite3\n")
    (etc / "jail.local").write_text(
        "[sshd]\nenabled = false\n\n"
        f"[{jail}]\nenabled = true\nport = {port}\nlogpath = {logfile}\nbackend = polling\n"
        f"banaction = {banaction}\nbantime = {bantime}\n")
    host.restart_sshd()  # SSH sessions see the host's own /etc/fail2ban
    host.daemon("fail2ban-client", "-x", "start")
    deadline = time.monotonic() + 30
    while host.sh("fail2ban-client", "ping", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host.ns}: fail2ban did not answer: {(host.workdir / 'fail2ban.log').read_text()[-2000:]}")
        time.sleep(0.2)
    host.cleanups.append(lambda: host.sh("fail2ban-client", "stop", check=False))


def ban(host, jail: str, address: str) -> None:
    host.sh("fail2ban-client", "set", jail, "banip", address)
    deadline = time.monotonic() + 15  # the action runs in the server's thread: wait for the rule
    while address not in host.sh("fail2ban-client", "get", jail, "banip").stdout:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host.ns}: {address} not banned in {jail}")
        time.sleep(0.1)


def unban(host, jail: str, address: str) -> None:
    host.sh("fail2ban-client", "set", jail, "unbanip", address)

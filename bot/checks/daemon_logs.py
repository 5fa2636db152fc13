"""A down daemon's evidence is its own log, not the mail log of another daemon.

- systemd: `journalctl -u UNIT -n 20` of that daemon's unit(s) only (Postfix: postfix@-,
  the instance Debian runs, and postfix).
- otherwise the file the daemon is configured to log to: exim's mainlog and paniclog
  (Debian /var/log/exim4, RHEL /var/log/exim); Dovecot's `log_path` (doveconf); Postfix's
  `maillog_file` (postlogd) and `postfix status`; when a daemon logs to syslog, its own
  lines of the mail log (/var/log/mail.log, /var/log/maillog), by syslog tag.

The configured file is read by one fixed script: it asks the daemon for the path and tails
it, so no path the host printed is ever put into a command line by mailcheck.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bot.models import Command, CommandResult

Results = Mapping[tuple[str, ...], CommandResult]

LINES = 20
MAIL_LOGS = ("/var/log/mail.log", "/var/log/maillog")  # syslog's mail facility: Debian, RHEL
EXIM_FILES = ("/var/log/exim4/mainlog", "/var/log/exim4/paniclog",
              "/var/log/exim/main.log", "/var/log/exim/panic.log")
# "$@" is a fixed argv of ours that prints the configured path; syslog, stderr and the like
# (no absolute file) exit 3.
_CONFIGURED = ('p=$("$@" 2>/dev/null) || exit; case $p in /dev/*|"") exit 3;; '
               f'/*) exec tail -n {LINES} -- "$p";; esac; exit 3')
CONFIGURED = {
    "dovecot": ("sh", "-c", _CONFIGURED, "sh", "doveconf", "-h", "log_path"),
    "postfix": ("sh", "-c", _CONFIGURED, "sh", "postconf", "-h", "maillog_file"),
}
POSTFIX_STATUS = ("postfix", "status")
UNITS = {"exim": ("exim4", "exim"), "postfix": ("postfix@-", "postfix"), "dovecot": ("dovecot",),
         "opensmtpd": ("opensmtpd",), "sendmail": ("sendmail",), "courier": ("courier-imap",),
         "cyrus": ("cyrus-imapd",)}
# a daemon's lines in the mail log, by syslog tag: 'postfix/smtpd[12]:', 'dovecot:', 'exim[3]:'
_TAG = {"exim": r"exim4?", "postfix": r"postfix(?:@[\w.-]+)?(?:/[\w.-]+)*", "dovecot": r"dovecot",
        "opensmtpd": r"smtpd", "sendmail": r"sendmail|sm-mta", "courier": r"courier[\w-]*",
        "cyrus": r"cyrus(?:/[\w.-]+)*|master"}


def journal(unit: str) -> tuple[str, ...]:
    return ("journalctl", "--no-pager", "-n", str(LINES), "-u", unit)


def commands(systemd: bool | None) -> list[Command]:
    tails = [("tail", "-n", str(LINES), p) for p in EXIM_FILES]
    tails += [("tail", "-n", "300", p) for p in MAIL_LOGS]  # filtered by daemon below
    cmds = [Command(t, timeout=5) for t in tails]
    cmds += [Command(argv, timeout=5) for argv in (*CONFIGURED.values(), POSTFIX_STATUS)]
    if systemd:
        cmds += [Command(journal(u), timeout=10) for units in UNITS.values() for u in units]
    return cmds


def _out(results: Results, argv: tuple[str, ...]) -> str | None:
    r = results.get(argv)
    if r is None or not r.ok:
        return None
    return r.stdout.strip() or None


def evidence(daemon: str, results: Results, systemd: bool | None) -> str:
    """The daemon's own last log lines, each part headed by where it came from: its journal,
    its own files, else its lines of the mail log (syslog). Postfix adds `postfix status`."""
    own = []
    if systemd:
        own += [f"$ journalctl -u {unit} -n {LINES}\n{text}" for unit in UNITS.get(daemon, ())
                if (text := _out(results, journal(unit))) and "-- No entries --" not in text]
    if daemon == "exim":
        own += [f"$ tail -n {LINES} {p}\n{text}" for p in EXIM_FILES
                if (text := _out(results, ("tail", "-n", str(LINES), p)))]
    if daemon in CONFIGURED and (text := _out(results, CONFIGURED[daemon])):
        what = "log_path (doveconf)" if daemon == "dovecot" else "maillog_file (postconf)"
        own.append(f"$ tail -n {LINES} <{what}>\n{text}")
    parts = own or _syslog(daemon, results)
    r = results.get(POSTFIX_STATUS)
    if daemon == "postfix" and r is not None and not r.missing and (r.stdout + r.stderr).strip():
        parts.insert(0, "$ postfix status\n" + (r.stdout + r.stderr).strip())
    return "\n".join(parts) or f"(no log of {daemon} found: " + _where(daemon, systemd) + ")"


def _syslog(daemon: str, results: Results) -> list[str]:
    tag = re.compile(rf"\s(?:{_TAG.get(daemon, re.escape(daemon))})(?:\[\d+\])?:\s")
    out = []
    for path in MAIL_LOGS:
        text = _out(results, ("tail", "-n", "300", path))
        mine = [line for line in (text or "").splitlines() if tag.search(line)]
        if mine:
            out.append(f"$ grep {daemon} {path} | tail -n {LINES}\n" + "\n".join(mine[-LINES:]))
    return out


def _where(daemon: str, systemd: bool | None) -> str:
    looked = [f"journalctl -u {u}" for u in UNITS.get(daemon, ())] if systemd else []
    if daemon == "exim":
        looked += list(EXIM_FILES)
    if daemon in CONFIGURED:
        looked.append("its configured log file")
    looked += [f"its lines in {p}" for p in MAIL_LOGS]
    return "looked at " + ", ".join(looked)

"""Which service unit (or init script) runs a mail daemon, and how to restart it."""

from __future__ import annotations

UNITS = {  # (daemon, distro family) -> unit / init script name
    ("exim", "debian"): "exim4", ("exim", "rhel"): "exim", ("exim", "unknown"): "exim4",
}
DEFAULT_UNIT = {"postfix": "postfix", "opensmtpd": "opensmtpd", "sendmail": "sendmail",
                "dovecot": "dovecot", "courier": "courier-imap", "cyrus": "cyrus-imapd"}
# the unit whose state says whether the daemon runs, where it differs from the one restarted:
# Debian's postfix.service is a oneshot wrapper ("active (exited)" even when Postfix is down);
# the instance postfix@-.service runs master.
STATE_UNITS = {"postfix": ("postfix@-", "postfix")}


def unit_name(daemon: str, distro_family: str) -> str:
    return UNITS.get((daemon, distro_family)) or DEFAULT_UNIT.get(daemon, daemon)


def state_units(daemon: str, distro_family: str) -> tuple[str, ...]:
    """The units to read for the daemon's state, the most specific first."""
    return STATE_UNITS.get(daemon, (unit_name(daemon, distro_family),))


def restart_command(daemon: str, distro_family: str, systemd: bool | None) -> list[str]:
    unit = unit_name(daemon, distro_family)
    return ["systemctl", "restart", unit] if systemd else [f"/etc/init.d/{unit}", "restart"]

"""mailcheck's own small error tree.

Transport libraries raise their own exceptions; they are mapped once, at the
edge (bot.transport), into these. A non-zero exit status of a remote command
is *not* an error: it is data in a CommandResult.
"""

from __future__ import annotations


class MailcheckError(Exception):
    """Base of every error mailcheck raises on purpose."""


class TargetError(MailcheckError):
    """The target given by the user is malformed or not in the inventory."""


class ConfigError(MailcheckError):
    """Settings or the inventory file are wrong."""


class TransportError(MailcheckError):
    """Talking to the host failed. `host` names it, `step` says where."""

    def __init__(self, message: str, *, host: str = "", step: str = "") -> None:
        super().__init__(message)
        self.host = host
        self.step = step

    def __str__(self) -> str:
        msg = super().__str__()
        where = " ".join(p for p in (self.host and f"host {self.host}", self.step and f"step {self.step}") if p)
        return f"{where}: {msg}" if where else msg


class HostKeyError(TransportError):
    """The host's key is unknown or differs from known_hosts."""


class AuthError(TransportError):
    """The host refused our credentials."""


class UnreachableError(TransportError):
    """The host could not be reached (refused, timed out, no route)."""


class ConnectionLost(TransportError):
    """The connection dropped while commands were running."""


class CommandTimeout(TransportError):
    """A batch of commands did not finish within its budget."""


class OutputTooLarge(TransportError):
    """The host sent more output than mailcheck keeps from one batch (max_host_output)."""

"""The dead-man lock-out guard on the host: arm it, disarm it, read what it did.

Arming touches `deadman.armed` in the backup directory and starts the job
(bot.transport.detached_command) with `systemd-run --on-active` where systemd
is the host's init and systemd-run exists, else `setsid -f`. The job renames
`armed` to `armed.fired` before restoring and then leaves `armed.restored`
or `armed.restore-failed`; mailcheck disarms by renaming `armed` to
`armed.cancelled` when it confirms the change, or to `armed.undone` once it restored the
backup itself (so a restart never takes that for a confirmed change). Whoever renames first wins. `GuardState` is what the
directory shows, read in one command, and says nothing it did not see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.fixes.backup import Backup
from bot.models import Command
from bot.transport import GUARD_MARKERS, Transport, detached_command

SYSTEMD_PROBES = (Command(("test", "-d", "/run/systemd/system"), timeout=5),
                  Command(("systemd-run", "--version"), timeout=5))

Seen = Literal["armed", "cancelled", "undone", "restored", "restore_failed", "restoring", "none"]


@dataclass(frozen=True)
class GuardState:
    seen: Seen
    log: str = ""  # the tail of deadman.log
    age: float | None = None  # seconds since the guard was armed (the armed file's age)

    @property
    def summary(self) -> str:
        return {
            "armed": "the guard is still armed (it has not fired)",
            "cancelled": "the guard was disarmed",
            "undone": "mailcheck restored the backup itself, then disarmed the guard "
                      "(deadman.armed.undone)",
            "restored": "the guard fired and the host restored the backup (deadman.armed.restored)",
            "restore_failed": "the guard fired and the restore FAILED on the host "
                              "(deadman.armed.restore-failed)",
            "restoring": "the guard fired but has not finished restoring (no result marker yet)",
            "none": "no guard files were found",
        }[self.seen]


async def uses_systemd(t: Transport) -> bool:
    """systemd runs the host (/run/systemd/system) and systemd-run exists."""
    results = await t.run(list(SYSTEMD_PROBES), step="fix")
    return all(r.ok for r in results)


def arm_commands(bp: Backup, delay: int, systemd: bool, unit: str) -> list[Command]:
    """The job first, then its arming file: an `armed` file always has a job behind it (a job
    whose file never appeared does nothing when it wakes)."""
    return [detached_command(bp.restore, delay=delay, armed=bp.armed, log=bp.log,
                             systemd=systemd, unit=unit),
            Command(("touch", bp.armed), timeout=10)]


def disarm_command(bp: Backup, undone: bool = False) -> Command:
    """Succeeds only if the job had not fired yet (an atomic rename). undone: mailcheck has
    restored the backup itself (`armed.undone`), else it confirms the change (`armed.cancelled`)."""
    return Command(("mv", bp.armed, bp.armed + (".undone" if undone else ".cancelled")), timeout=10)


def quiet_disarm_command(bp: Backup) -> Command:
    """Before any change: succeeds when no guard can fire any more (disarmed now, or its armed
    file never appeared); fails when it fired or cannot be disarmed."""
    script = 'mv "$1" "$1.cancelled" 2>/dev/null || { [ ! -e "$1" ] && [ ! -e "$1.fired" ]; }'
    return Command(("sh", "-c", script, "sh", bp.armed), timeout=10)


def state_command(bp: Backup) -> Command:
    q = ["armed", *(f"armed.{m}" for m in GUARD_MARKERS)]
    script = ('d=$1; for m in ' + " ".join(q) + '; do [ -e "$d/deadman.$m" ] && echo "$m"; done; '
              'if [ -e "$d/deadman.armed" ]; then '
              'echo "age $(( $(date +%s) - $(stat -c %Y "$d/deadman.armed") ))"; fi; '
              'echo --; tail -n 20 "$d/deadman.log" 2>/dev/null; exit 0')
    return Command(("sh", "-c", script, "sh", bp.directory), timeout=10)


def parse_state(stdout: str) -> GuardState:
    names, _, log = stdout.partition("--\n")
    found = {ln.strip() for ln in names.splitlines() if ln.strip() and not ln.startswith("age ")}
    ages = [ln.split()[1] for ln in names.splitlines() if ln.startswith("age ")]
    age = float(ages[0]) if ages and ages[0].lstrip("-").isdigit() else None
    if "armed.restored" in found:
        seen: Seen = "restored"
    elif "armed.restore-failed" in found:
        seen = "restore_failed"
    elif "armed.fired" in found:
        seen = "restoring"
    elif "armed.cancelled" in found:
        seen = "cancelled"
    elif "armed.undone" in found:
        seen = "undone"
    elif "armed" in found:
        seen = "armed"
    else:
        seen = "none"
    return GuardState(seen, log.strip()[-2000:], age)


async def read_state(t: Transport, bp: Backup) -> GuardState:
    [r] = await t.run([state_command(bp)], step="fix")
    return parse_state(r.stdout)

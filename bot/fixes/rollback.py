"""Rolling an applied change back: restore its backup exactly, then persist that.

The restore lines were stored with the change when it was applied (so a
rollback needs nothing but the store and SSH). Where the backup holds running
rulesets (iptables, nft), the fix's persist commands run again afterwards, so
the rules saved for boot match the restored ones; a backup of configuration
files (firewalld's /etc/firewalld) restores the saved state itself, and there
the fix's persist would be the fix again (`firewall-cmd --permanent
--add-service`). Then the ruleset is compared with the one recorded before the fix.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, field

from bot.errors import TransportError
from bot.fixes import hostlock
from bot.fixes.backup import backup_for, line_from_dict, normalize_ruleset
from bot.fixes.evidence import CommandLog, left_on_host, restore_failure
from bot.models import BackupSpec, Command
from bot.store import ChangeRecord
from bot.transport import Connect, Transport, script_command
from config.inventory import Host
from config.settings import Settings


@dataclass
class RollbackResult:
    ok: bool
    message: str
    exact: bool | None = None  # ruleset now == ruleset before the fix (normalised)
    log: list[CommandLog] = field(default_factory=list)
    ruleset_before: str = ""  # before the rollback (= after the fix)
    ruleset_after: str = ""
    drift: bool = False  # refused: the rules changed since the fix
    busy: bool = False  # another mailcheck holds the host's lock


def drifted(change: ChangeRecord, now: str) -> bool:
    """Did the rules change since the fix was applied (restoring would drop those changes)?"""
    return bool(change.ruleset_after) and \
        normalize_ruleset(now) != normalize_ruleset(change.ruleset_after)


async def restore_change(settings: Settings, connect: Connect, change: ChangeRecord,
                         host: Host, force: bool = False) -> RollbackResult:
    """Restore `change` on `host` (today's inventory entry), under the lock on the host."""
    if not change.restore_lines:
        return RollbackResult(False, "this change has no backup or rollback commands to run")
    lock = hostlock.HostLock.for_change(
        str(settings.backup_dir), "r_" + secrets.token_urlsafe(6), f"rollback of {change.id}",
        settings.database, settings.lockout_deadline + 600)
    t = connect(host)
    try:
        held = await hostlock.acquire(t, lock, settings.lock_wait)
        if held is not None:
            return RollbackResult(False, f"another mailcheck is changing {host.name}: {held}",
                                  busy=True)
        try:
            return await _restore(settings, t, change, force)
        finally:
            with contextlib.suppress(TransportError):  # else it expires by itself
                await hostlock.release(t, lock)
    except TransportError as e:  # before the restore started: nothing was done
        return RollbackResult(False, f"could not talk to {host.name} ({e}): nothing was rolled back")
    finally:
        await t.close()


async def _restore(settings: Settings, t: Transport, change: ChangeRecord,
                   force: bool) -> RollbackResult:
    lines = [line_from_dict(d) for d in change.restore_lines]
    dumps = _dumps(change)
    log: list[CommandLog] = []
    before = "".join(r.stdout for r in await t.run(dumps, step="rollback")) if dumps else ""
    if not force and drifted(change, before):
        return RollbackResult(False, "the rules changed since this fix was applied; restoring "
                              "the backup would undo those changes too. Nothing was done "
                              "(`mailcheck rollback --force` restores it anyway)",
                              ruleset_before=before, drift=True)
    budget = max(settings.command_timeout, 10.0) * len(lines)
    try:
        r = (await t.run([script_command(lines, timeout=budget, keep_going=True)],
                         step="rollback"))[0]
    except TransportError as e:
        return RollbackResult(False, f"the connection was lost during the restore ({e}): whether "
                              f"{change.backup_dir} was restored is unknown; look at the host",
                              ruleset_before=before)
    log.append(CommandLog.of(r))
    if not r.ok:
        try:
            after: str | None = "".join(x.stdout for x in await t.run(dumps, step="rollback"))
        except TransportError:
            after = None  # left_on_host says the rulesets could not be read
        return RollbackResult(False, f"restoring {change.backup_dir} FAILED "
                              f"({restore_failure(lines, change.fix, r)}): NOT rolled back. Left on the host: "
                              f"{left_on_host(change.ruleset_before, after)}",
                              log=log, ruleset_before=before, ruleset_after=after or "")
    spec = change.fix.backup or BackupSpec()
    persist = change.fix.persist if spec.rulesets or spec.nft_tables else []
    failed = []
    try:
        for argv in persist:
            p = (await t.run([Command(tuple(argv), timeout=settings.command_timeout)],
                             step="rollback"))[0]
            log.append(CommandLog.of(p))
            if not p.ok:
                failed.append(p.command.display)
        after = "".join(r.stdout for r in await t.run(dumps, step="rollback")) if dumps else ""
    except TransportError as e:  # the restore itself succeeded
        return RollbackResult(True, f"restored the backup {change.backup_dir}, then the connection "
                              f"was lost ({e}): persisting failed or is unknown (the saved rules "
                              "may bring the change back at reboot)", log=log, ruleset_before=before)
    exact = (normalize_ruleset(after) == normalize_ruleset(change.ruleset_before)) if dumps else None
    msg = f"restored the backup {change.backup_dir}"
    if failed:
        msg += (f", but persisting failed: {', '.join(failed)} (the saved rules may bring the "
                "change back at reboot)")
    if exact is False:
        msg += "; the ruleset now differs from the one before the fix (changed meanwhile?)"
    return RollbackResult(True, msg, exact=exact, log=log, ruleset_before=before,
                          ruleset_after=after)


def _dumps(change: ChangeRecord) -> list[Command]:
    return backup_for(change.fix, "/", change.host.name, change.id).dump

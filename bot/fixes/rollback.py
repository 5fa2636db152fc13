"""Rolling an applied change back: restore its backup exactly, then persist that.

The restore lines were stored with the change when it was applied (so a
rollback needs nothing but the store and SSH). Afterwards the fix's persist
commands run again, so the saved rules match the restored ones, and the
ruleset is compared with the one recorded before the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.fixes.apply import CommandLog
from bot.fixes.backup import backup_for, line_from_dict, normalize_ruleset
from bot.models import Command
from bot.store import ChangeRecord
from bot.transport import Connect, script_command
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


def drifted(change: ChangeRecord, now: str) -> bool:
    """Did the rules change since the fix was applied (restoring would drop those changes)?"""
    return bool(change.ruleset_after) and \
        normalize_ruleset(now) != normalize_ruleset(change.ruleset_after)


async def restore_change(settings: Settings, connect: Connect, change: ChangeRecord,
                         force: bool = False) -> RollbackResult:
    lines = [line_from_dict(d) for d in change.restore_lines]
    if not lines:
        return RollbackResult(False, "this change has no backup or rollback commands to run")
    dumps = _dumps(change)
    log: list[CommandLog] = []
    t = connect(change.host)
    try:
        before = "".join(r.stdout for r in await t.run(dumps, step="rollback")) if dumps else ""
        if not force and drifted(change, before):
            return RollbackResult(False, "the rules changed since this fix was applied; restoring "
                                  "the backup would undo those changes too. Nothing was done "
                                  "(`mailcheck rollback --force` restores it anyway)",
                                  ruleset_before=before, drift=True)
        r = (await t.run([script_command(lines, timeout=settings.command_timeout)],
                         step="rollback"))[0]
        log.append(CommandLog.of(r))
        if not r.ok:
            return RollbackResult(False, f"restoring {change.backup_dir} failed: "
                                  f"{r.stderr.strip()}", log=log, ruleset_before=before)
        for argv in change.fix.persist:
            p = (await t.run([Command(tuple(argv), timeout=settings.command_timeout)],
                             step="rollback"))[0]
            log.append(CommandLog.of(p))
        after = "".join(r.stdout for r in await t.run(dumps, step="rollback")) if dumps else ""
    finally:
        await t.close()
    exact = (normalize_ruleset(after) == normalize_ruleset(change.ruleset_before)) if dumps else None
    msg = f"restored the backup {change.backup_dir}"
    if exact is False:
        msg += "; the ruleset now differs from the one before the fix (changed meanwhile?)"
    return RollbackResult(True, msg, exact=exact, log=log, ruleset_before=before,
                          ruleset_after=after)


def _dumps(change: ChangeRecord) -> list[Command]:
    return backup_for(change.fix, "/", change.host.name, change.id).dump

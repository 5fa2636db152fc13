"""Applying one plan on its host, as iptables-apply would.

1. re-run the plan's preconditions; anything different -> refuse (re-check);
2. dump the ruleset (for before/after) and back it up to a timestamped
   directory on the host;
3. firewall fixes: arm a dead-man job on the host (detached, `setsid -f`)
   that restores the backup after settings.lockout_deadline seconds;
4. run exactly fix.commands, one at a time, in order; a failing command
   stops the run and the backup is restored at once;
5. over a FRESH SSH connection, disarm the job (an atomic `mv` of its
   arming file: whoever renames it first wins). If the host cannot be
   reached, wait for the deadline and check that the host restored itself;
6. only then run fix.persist (so a lock-out never reaches the saved rules),
   and dump the ruleset again.

The caller holds the host lock and has claimed the plan.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from bot.errors import TransportError
from bot.firewall.parse.iptables import normalize_iptables_save
from bot.firewall.parse.nft import normalize_nft
from bot.fixes.backup import Backup, backup_for, drop_new_filter_lines, line_to_dict
from bot.models import Command, CommandResult, Precondition
from bot.store import ChangeRecord, PlanRecord
from bot.transport import Connect, Transport, detached_command, script_command
from config.inventory import Host
from config.settings import Settings

ApplierStatus = Literal["applied", "not_started", "precondition_changed", "backup_failed",
                      "command_failed", "restored_by_host", "connection_lost", "unreachable"]
GRACE = 3.0  # seconds after the deadline before looking whether the host restored itself


@dataclass(frozen=True)
class CommandLog:
    command: str
    exit_status: int | None
    stdout: str
    stderr: str

    @classmethod
    def of(cls, r: CommandResult) -> CommandLog:
        return cls(r.command.display, r.exit_status, r.stdout[-4000:], r.stderr[-4000:])


@dataclass
class ApplyResult:
    status: ApplierStatus
    message: str
    change: ChangeRecord | None = None
    log: list[CommandLog] = field(default_factory=list)
    ruleset_before: str = ""
    ruleset_after: str = ""


def fingerprint(stdout: str, normalize: str = "raw") -> str:
    """sha256 of a precondition's normalised stdout, as the planners compute it.

    "iptables-save" uses the firewall package's normalize_iptables_save (the
    planner hashes with it); "nft" uses nft.normalize_nft (likewise).
    """
    if normalize == "iptables-save":
        text = normalize_iptables_save(stdout)
    elif normalize == "nft":
        text = normalize_nft(stdout)
    else:
        text = stdout
    return hashlib.sha256(text.encode()).hexdigest()


def precondition_problem(pre: Precondition, result: CommandResult) -> str | None:
    if pre.expect_exit is not None and result.exit_status != pre.expect_exit:
        return f"{pre.description}: `{result.command.display}` exited {result.exit_status}, " \
               f"expected {pre.expect_exit}"
    if pre.expect_sha256 and fingerprint(result.stdout, pre.normalize) != pre.expect_sha256:
        return f"{pre.description}: `{result.command.display}` shows something different now"
    return None


class Applier:
    def __init__(self, settings: Settings, connect: Connect) -> None:
        self.settings = settings
        self.connect = connect

    def _cmd(self, argv: Sequence[str]) -> Command:
        return Command(tuple(argv), timeout=self.settings.command_timeout)

    async def _run(self, t: Transport, cmd: Command, log: list[CommandLog]) -> CommandResult:
        result = (await t.run([cmd], step="fix"))[0]
        log.append(CommandLog.of(result))
        return result

    async def _dump(self, t: Transport, backup: Backup) -> str:
        if not backup.dump:
            return ""
        results = await t.run(backup.dump, step="fix")
        return "".join(r.stdout for r in results)

    async def check_preconditions(self, t: Transport, pres: Sequence[Precondition]) -> list[str]:
        if not pres:
            return []
        results = await t.run([self._cmd(p.argv) for p in pres], step="precondition")
        return [msg for p, r in zip(pres, results, strict=True)
                if (msg := precondition_problem(p, r))]

    async def apply(self, plan: PlanRecord, actor: str, change_id: str) -> ApplyResult:
        bp = backup_for(plan.fix, str(self.settings.backup_dir), plan.host.name, change_id)
        log: list[CommandLog] = []
        t = self.connect(plan.host)
        try:
            try:
                ready = await self._prepare(t, plan, bp, log)
            except TransportError as e:
                await self._disarm_quietly(plan.host, bp)
                return ApplyResult("not_started", f"nothing was applied: {e}", log=log)
            if isinstance(ready, ApplyResult):
                return ready
            ready, bp = ready
            result = await self._change(t, plan, bp, actor, change_id, log)
            result.ruleset_before = ready
            if result.change is not None:
                result.change.ruleset_before = ready
        finally:
            await t.close()
        return result

    async def _prepare(self, t: Transport, plan: PlanRecord, bp: Backup,
                       log: list[CommandLog]) -> tuple[str, Backup] | ApplyResult:
        """Preconditions, dump, backup, dead-man: (ruleset before, final backup) or why not."""
        if plan.fix.kind == "firewall" and plan.fix.backup is None:
            return ApplyResult("backup_failed", "this firewall fix does not declare its backup "
                               "(Fix.backup): mailcheck does not change a firewall without a "
                               "backup and a lock-out guard; nothing was applied")
        problems = await self.check_preconditions(t, plan.fix.preconditions)
        if problems:
            return ApplyResult("precondition_changed", "the host changed since the check; "
                               "nothing was applied, run the check again:\n- "
                               + "\n- ".join(problems))
        dumps = await t.run(bp.dump, step="fix") if bp.dump else []
        before = "".join(r.stdout for r in dumps)
        bp = await self._exact_restore(t, bp, dumps)
        backup = await self._run(t, script_command(bp.take), log)
        if not backup.ok:
            return ApplyResult("backup_failed", f"could not back up to {bp.directory}; nothing "
                               f"was applied: {backup.stderr.strip()}", log=log)
        bp = await self._test_load(t, bp, log)
        if isinstance(bp, ApplyResult):
            return bp
        if bp.guard:
            armed = await self._arm(t, bp, log)
            if armed is not None:
                return ApplyResult("backup_failed", armed, log=log)
        return before, bp

    async def _test_load(self, t: Transport, bp: Backup, log: list[CommandLog]) -> Backup | ApplyResult:
        """Would every saved ruleset load? If not, the declared undo restores instead; without
        one the fix is refused (a backup that cannot be loaded is no safety net)."""
        if not bp.test:
            return bp
        results = [await self._run(t, script_command([line]), log) for line in bp.test]
        failed = [f"`{line.line()}`: {r.stderr.strip() or f'exit {r.exit_status}'}"
                  for line, r in zip(bp.test, results, strict=True) if not r.ok]
        if not failed:
            return bp
        if bp.undo:
            log.append(CommandLog("(the saved ruleset would not load: the fix's exact undo guards "
                                  "and restores instead)", None, "", "\n".join(failed)))
            return bp.undo_instead()
        return ApplyResult("backup_failed", "the backup would not load, so it cannot guard this "
                           "change; nothing was applied: " + "; ".join(failed), log=log)

    async def _exact_restore(self, t: Transport, bp: Backup,
                             dumps: list[CommandResult]) -> Backup:
        """Add the deletion of filter tables that did not exist (iptables-nft hosts)."""
        saves = [(r.command.argv[0], r.stdout) for r in dumps if r.command.argv[0].endswith("tables-save")]
        progs = [s.removesuffix("-save") for s, text in saves if "*filter" not in text]
        if not progs:
            return bp
        versions = await t.run([self._cmd((p, "-V")) for p in progs], step="fix")
        nft_based = {p for p, v in zip(progs, versions, strict=True) if "nf_tables" in v.stdout}
        extra = drop_new_filter_lines(saves, nft_based)
        return replace(bp, restore=[*bp.restore, *extra]) if extra else bp

    async def _change(self, t: Transport, plan: PlanRecord, bp: Backup, actor: str,
                      change_id: str, log: list[CommandLog]) -> ApplyResult:
        guarded = bp.guard
        armed_at = time.monotonic()
        outcome = await self._run_commands(t, plan, bp, log)
        if outcome is not None and (outcome.status == "command_failed" or not guarded):
            return outcome
        if guarded:
            gone = await self._confirm(plan.host, bp, armed_at, outcome is not None, log)
            if gone is not None:
                return gone
        return await self._persist(plan, bp, actor, change_id, log)

    async def _disarm_quietly(self, host: Host, bp: Backup) -> None:
        """Best effort after a failure before any change: no stale job may fire later."""
        fresh = self.connect(host)
        try:
            await fresh.run([self._cmd(("mv", bp.armed, bp.armed + ".cancelled"))], step="fix")
        except TransportError:
            pass
        finally:
            await fresh.close()

    async def _arm(self, t: Transport, bp: Backup, log: list[CommandLog]) -> str | None:
        touch = await self._run(t, self._cmd(("touch", bp.armed)), log)
        job = await self._run(t, detached_command(
            bp.restore, delay=self.settings.lockout_deadline, armed=bp.armed, log=bp.log), log)
        if touch.ok and job.ok:
            return None
        return "could not start the lock-out guard on the host (setsid -f); nothing was applied"

    async def _run_commands(self, t: Transport, plan: PlanRecord, bp: Backup,
                            log: list[CommandLog]) -> ApplyResult | None:
        """None when every command succeeded; connection_lost / command_failed otherwise."""
        for argv in plan.fix.commands:
            try:
                r = await self._run(t, self._cmd(argv), log)
            except TransportError as e:
                return ApplyResult("connection_lost", str(e), log=log)
            if not r.ok:
                await self._restore_now(t, bp, log)
                return ApplyResult("command_failed", f"`{r.command.display}` failed (exit "
                                   f"{r.exit_status}): {r.stderr.strip()}; the backup was "
                                   "restored", log=log)
        return None

    async def _restore_now(self, t: Transport, bp: Backup, log: list[CommandLog]) -> bool:
        await self._run(t, self._cmd(("mv", bp.armed, bp.armed + ".cancelled")), log)
        return (await self._run(t, script_command(bp.restore), log)).ok

    async def _confirm(self, host: Host, bp: Backup, armed_at: float, lost: bool,
                       log: list[CommandLog]) -> ApplyResult | None:
        """Disarm over a fresh connection. None: reachable and disarmed."""
        fresh = self.connect(host)
        try:
            r = await self._run(fresh, self._cmd(("mv", bp.armed, bp.armed + ".cancelled")), log)
            if not r.ok:
                return ApplyResult("restored_by_host", "the lock-out deadline passed before "
                                   "mailcheck could confirm; the host restored the backup", log=log)
            if lost:
                await self._run(fresh, script_command(bp.restore), log)
                return ApplyResult("connection_lost", "the SSH connection dropped while applying; "
                                   "the backup was restored", log=log)
            return None
        except TransportError as e:
            log.append(CommandLog(f"fresh SSH connection to {host.name}", None, "", str(e)))
        finally:
            await fresh.close()
        return await self._await_host_restore(host, bp, armed_at, log)

    async def _await_host_restore(self, host: Host, bp: Backup, armed_at: float,
                                  log: list[CommandLog]) -> ApplyResult:
        wait = armed_at + self.settings.lockout_deadline + GRACE - time.monotonic()
        await asyncio.sleep(max(0.0, wait))
        fresh = self.connect(host)
        try:
            r = await self._run(fresh, self._cmd(("test", "-e", bp.armed + ".fired")), log)
        except TransportError as e:
            return ApplyResult("unreachable", f"mailcheck lost SSH access after the change and "
                               f"still cannot reach {host.name} after the deadline: {e}", log=log)
        finally:
            await fresh.close()
        if r.ok:
            return ApplyResult("restored_by_host", "the change cut mailcheck's SSH access; the "
                               "host restored the backup by itself after "
                               f"{self.settings.lockout_deadline}s", log=log)
        return ApplyResult("unreachable", "SSH access was lost and the host did not report a "
                           "restore; check it by hand", log=log)

    async def _persist(self, plan: PlanRecord, bp: Backup, actor: str, change_id: str,
                       log: list[CommandLog]) -> ApplyResult:
        """The change is confirmed: persist it and record it, even if this connection fails."""
        failed, after = [], ""
        t = self.connect(plan.host)
        try:
            for argv in plan.fix.persist:
                r = await self._run(t, self._cmd(argv), log)
                if not r.ok:
                    failed.append(r.command.display)
            after = await self._dump(t, bp)
        except TransportError as e:
            failed.append(f"(connection: {e})")
        finally:
            await t.close()
        change = ChangeRecord(
            id=change_id, plan_id=plan.id, host=plan.host, fix=plan.fix, applied_by=actor,
            applied_at=time.time(), backup_dir=bp.directory,
            restore_lines=[line_to_dict(s) for s in bp.restore], ruleset_after=after,
        )
        msg = "applied" if not failed else f"applied, but persisting failed: {', '.join(failed)} " \
            "(the change is lost at reboot)"
        return ApplyResult("applied", msg, change=change, log=log, ruleset_after=after)

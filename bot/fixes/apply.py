"""Applying one plan on its host, as iptables-apply would, and saying exactly what happened.

1. refuse a firewall fix that declares no backup; the guard's deadline is
   settings.lockout_deadline, or longer when the commands may take longer
   (their budgets one after the other, plus a fresh connection to confirm):
   it never fires in the middle of an apply;
2. take the lock ON THE HOST (bot/fixes/hostlock.py), waiting up to
   settings.lock_wait: another mailcheck, whatever its database, is named;
3. re-run the plan's preconditions; anything different -> refuse (re-check);
4. dump the rulesets (before), report the change as started (the caller writes
   its row), back up, test-load every saved ruleset (or guard with the
   declared undo, or refuse), arm the dead-man job (bot/fixes/guard.py);
5. run exactly fix.commands, one at a time; a failing command stops the run
   and the backup is restored at once: restore first, check its result and
   the rulesets, disarm only after a restore that succeeded. A restore that
   failed is reported as NOT restored, with what is left on the host, and the
   guard stays armed to try again;
6. over a FRESH connection (the same `connect`, so through the jump host),
   disarm the job. If the host cannot be reached, wait for the deadline and
   report exactly the marker the job left (`.restored`, `.restore-failed`);
7. only then run fix.persist, and dump the rulesets again.

The caller holds the store's lock and has claimed the plan.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from bot.errors import TransportError
from bot.fixes import guard, hostlock
from bot.fixes.backup import (
    Backup,
    backup_for,
    drop_new_filter_lines,
    line_from_dict,
    line_to_dict,
)
from bot.fixes.evidence import (
    CommandLog,
    fingerprint,
    left_on_host,
    precondition_problem,
    restore_failure,
    same_ruleset,
)
from bot.models import Command, CommandResult, Fix, Precondition
from bot.store import ChangeRecord, PlanRecord
from bot.transport import Connect, Transport, script_command
from config.inventory import Host
from config.settings import Settings

__all__ = ["Applier", "ApplyResult", "CommandLog", "fingerprint", "precondition_problem",
           "command_budget"]

ApplierStatus = Literal[
    "applied",
    "refused",  # mailcheck will not apply this (undeclared backup, unloadable backup, deadline)
    "busy",  # another mailcheck holds the host's lock
    "not_started",  # the host could not be talked to before anything changed
    "precondition_changed",
    "backup_failed",
    "command_failed",  # a command failed; the backup was restored (and checked)
    "connection_lost",  # SSH dropped mid-apply; restored over a fresh connection
    "restored_by_host",  # the host's guard restored the backup (its .restored marker)
    "not_restored",  # a restore failed, or the guard's did: the host may be half-changed
    "unreachable",  # SSH lost and what the host did is unknown
    # only from settle() (reconcile after a restart):
    "unchanged",  # no guard files and the rulesets equal those before: nothing is in effect
    "unknown",  # no guard files and the rulesets differ (or none saved): look at the host
]
GRACE = 3.0  # seconds after the deadline before looking whether the host restored itself
KILL_AFTER = 2  # `timeout -k 2`: a command's budget is its timeout plus this
MARGIN = 2.0  # arming, round trips: the guard's deadline must exceed the budget by more
Started = Callable[[ChangeRecord], Awaitable[None]]


@dataclass
class ApplyResult:
    status: ApplierStatus
    message: str
    change: ChangeRecord | None = None  # set from the moment the change was started
    log: list[CommandLog] = field(default_factory=list)
    ruleset_before: str = ""
    ruleset_after: str = ""
    left: str = ""  # what is left on the host when it was not restored


@dataclass
class _Run:
    """One apply in progress."""

    plan: PlanRecord
    host: Host
    bp: Backup
    change: ChangeRecord
    log: list[CommandLog] = field(default_factory=list)
    before: str = ""
    arming: bool = False  # the guard's job was sent: from here a live guard may be on the host
    confirming: bool = False  # this apply sent the disarm that confirms the change
    armed_at: float | None = None

    def result(self, status: ApplierStatus, message: str, **kw) -> ApplyResult:
        return ApplyResult(status, message, change=self.change, log=self.log,
                           ruleset_before=self.before, **kw)


def command_budget(fix: Fix, settings: Settings) -> float:
    """The longest the fix's commands may take, one after the other."""
    each = max(1, round(fix.timeout or settings.command_timeout)) + KILL_AFTER  # as `timeout -k`
    return float(each * len(fix.commands))


def files_only_before_reload(fix: Fix, bp: Backup, failed: Sequence[str]) -> Backup:
    """The restore after a configuration fix stopped before its restart: the files only.

    The commands before a config fix's restart only write files and test them, so the running
    daemon never read the change: putting the files back is exact, and restarting it could only
    stop it (systemd's restart of Debian's exim4 is stop + start, and the start fails on an
    administrator's broken template: exim down where it was serving)."""
    reloads = {tuple(a) for a in (fix.backup.reload if fix.backup else [])}
    argvs = [tuple(a) for a in fix.commands]
    if fix.kind != "config" or not reloads or tuple(failed) not in argvs:
        return bp
    if reloads & set(argvs[:argvs.index(tuple(failed)) + 1]):
        return bp  # the restart ran (or was the one that failed): restart on the restored files
    return replace(bp, restore=[line for line in bp.restore if line.argv not in reloads])


class Applier:
    def __init__(self, settings: Settings, connect: Connect) -> None:
        self.settings = settings
        self.connect = connect
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # tests pass a fake clock

    def _cmd(self, argv: Sequence[str], fix: Fix | None = None) -> Command:
        timeout = (fix.timeout if fix else None) or self.settings.command_timeout
        env = tuple(sorted(fix.env.items())) if fix else ()
        return Command(tuple(argv), timeout=timeout, env=env)

    async def _run(self, t: Transport, cmd: Command, log: list[CommandLog]) -> CommandResult:
        result = (await t.run([cmd], step="fix"))[0]
        log.append(CommandLog.of(result))
        return result

    async def _dump(self, t: Transport, bp: Backup) -> str:
        results = await t.run(bp.dump, step="fix") if bp.dump else []
        return "".join(r.stdout for r in results)

    async def check_preconditions(self, t: Transport, pres: Sequence[Precondition]) -> list[str]:
        if not pres:
            return []
        results = await t.run([self._cmd(p.argv) for p in pres], step="precondition")
        return [msg for p, r in zip(pres, results, strict=True)
                if (msg := precondition_problem(p, r))]

    def refusal(self, fix: Fix, bp: Backup) -> str | None:
        """Why this fix cannot be applied safely at all (before touching the host)."""
        if fix.kind == "firewall" and fix.backup is None:
            return ("this firewall fix does not declare its backup (Fix.backup): mailcheck does "
                    "not change a firewall without a backup and a lock-out guard")
        return None

    def deadline(self, fix: Fix) -> int:
        """When the guard fires, in seconds after arming: settings.lockout_deadline, or longer
        when the fix's commands (their budgets, one after the other) and the confirming
        connection may take longer, so that it never fires in the middle of an apply."""
        need = command_budget(fix, self.settings) + self.settings.connect_timeout + MARGIN
        return max(self.settings.lockout_deadline, math.ceil(need) + 1)

    # --- the whole apply ------------------------------------------------------------------
    async def apply(self, plan: PlanRecord, host: Host, actor: str, change_id: str,
                    started: Started) -> ApplyResult:
        """Apply `plan` on `host` (today's inventory entry). `started(change)` is awaited
        once, before the first command that writes on the host."""
        bp = backup_for(plan.fix, str(self.settings.backup_dir), host.name, change_id)
        change = ChangeRecord(
            id=change_id, plan_id=plan.id, host=host, fix=plan.fix, applied_by=actor,
            applied_at=time.time(), backup_dir=bp.directory, state="started",
            restore_lines=[line_to_dict(s) for s in bp.restore])
        run = _Run(plan, host, bp, change)
        why = self.refusal(plan.fix, bp)
        if why:
            return ApplyResult("refused", f"{why}; nothing was applied")
        lock = hostlock.HostLock.for_change(
            str(self.settings.backup_dir), change_id, f"{actor}, fix {plan.fix.id}",
            self.settings.database, self._lock_ttl(plan.fix))
        t = self.connect(host)
        try:
            try:
                held = await hostlock.acquire(t, lock, self.settings.lock_wait)
            except TransportError as e:
                return ApplyResult("not_started", f"nothing was applied: {e}")
            if held is not None:
                return ApplyResult("busy", f"another mailcheck is changing {host.name}: {held}")
            try:
                return await self._locked(t, run, started)
            finally:
                await self._release(t, host, lock)
        finally:
            await t.close()

    def _lock_ttl(self, fix: Fix) -> float:
        return self.deadline(fix) + command_budget(fix, self.settings) + 600

    async def _release(self, t: Transport, host: Host, lock: hostlock.HostLock) -> None:
        for conn in (t, None):
            fresh = conn or self.connect(host)
            try:
                await hostlock.release(fresh, lock)
                return
            except TransportError:
                continue
            finally:
                if conn is None:
                    await fresh.close()

    async def _locked(self, t: Transport, run: _Run, started: Started) -> ApplyResult:
        try:
            early = await self._prepare(t, run, started)
        except TransportError as e:
            note = ""
            if run.arming and not await self._disarm_quietly(run):
                note = (f"; the guard armed on the host could not be disarmed and will restore "
                        f"the backup {run.bp.directory} (taken just before) by itself")
            return run.result("not_started", f"nothing was applied: {e}{note}")
        return early or await self._change(t, run)

    async def _prepare(self, t: Transport, run: _Run, started: Started) -> ApplyResult | None:
        """Preconditions, dump, started, backup, test-load, guard. None: go on."""
        problems = await self.check_preconditions(t, run.plan.fix.preconditions)
        if problems:
            return ApplyResult("precondition_changed", "the host changed since the check; "
                               "nothing was applied, run the check again:\n- "
                               + "\n- ".join(problems))
        dumps = await t.run(run.bp.dump, step="fix") if run.bp.dump else []
        run.before = run.change.ruleset_before = "".join(r.stdout for r in dumps)
        run.bp = await self._exact_restore(t, run.bp, dumps)
        run.change.restore_lines = [line_to_dict(s) for s in run.bp.restore]
        await started(run.change)
        take = await self._run(t, script_command(run.bp.take), run.log)
        if not take.ok:
            return run.result("backup_failed", f"could not back up to {run.bp.directory}; "
                              f"nothing was applied: {take.stderr.strip()}")
        bp = await self._test_load(t, run.bp, run.log)
        if isinstance(bp, str):
            return run.result("refused", bp)
        run.bp = bp
        run.change.restore_lines = [line_to_dict(s) for s in bp.restore]
        if bp.guard:
            return await self._arm(t, run)
        return None

    async def _test_load(self, t: Transport, bp: Backup, log: list[CommandLog]) -> Backup | str:
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
            log.append(CommandLog.note("the saved ruleset would not load: the fix's exact undo "
                                       "guards and restores instead", "\n".join(failed)))
            return bp.undo_instead()
        return ("the backup would not load, so it cannot guard this change; nothing was "
                "applied: " + "; ".join(failed))

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

    async def _arm(self, t: Transport, run: _Run) -> ApplyResult | None:
        systemd = await guard.uses_systemd(t)
        unit = f"mailcheck-guard-{run.change.id}"
        run.arming = True  # a cut during these two may leave a job and its armed file behind
        job, touch = [await self._run(t, c, run.log) for c in
                      guard.arm_commands(run.bp, self.deadline(run.plan.fix), systemd, unit)]
        run.armed_at = time.monotonic()
        if touch.ok and job.ok:
            return None
        how = "systemd-run" if systemd else "setsid -f"
        await self._disarm_quietly(run)
        return run.result("backup_failed", f"could not start the lock-out guard on the host "
                          f"({how}: {job.stderr.strip() or touch.stderr.strip()}); nothing was applied")

    async def _disarm_quietly(self, run: _Run) -> bool:
        """Best effort after a failure before any change: no stale job may fire later."""
        fresh = self.connect(run.host)
        try:
            return (await fresh.run([guard.quiet_disarm_command(run.bp)], step="fix"))[0].ok
        except TransportError:
            return False
        finally:
            await fresh.close()

    # --- commands, restore, confirm, persist -------------------------------------------------
    async def _change(self, t: Transport, run: _Run) -> ApplyResult:
        failed = await self._run_commands(t, run)
        if isinstance(failed, CommandResult):
            return await self._after_failure(t, run, failed)
        if failed is not None and not run.bp.guard:
            return await self._lost_unguarded(run, failed)
        if run.bp.guard:
            gone = await self._confirm(run, lost=failed)
            if gone is not None:
                return gone
        return await self._persist(run)

    async def _run_commands(self, t: Transport, run: _Run) -> CommandResult | str | None:
        """None: every command succeeded; a failed result; or why the connection was lost."""
        fix = run.plan.fix
        for argv in fix.commands:
            cmd = self._cmd(argv, fix)
            if run.armed_at is not None and self._too_late(run, cmd):
                run.log.append(CommandLog.note("stopped before the guard's deadline", cmd.display))
                return CommandResult(cmd, None, "", "not run: too close to the lock-out deadline")
            try:
                r = await self._run(t, cmd, run.log)
            except TransportError as e:
                return f"{type(e).__name__} during `{cmd.display}`: {e}"
            if not r.ok:
                return r
        return None

    def _too_late(self, run: _Run, cmd: Command) -> bool:
        spent = time.monotonic() - (run.armed_at or 0.0)
        return spent + cmd.timeout + KILL_AFTER + self.settings.connect_timeout \
            >= self.deadline(run.plan.fix)

    async def _after_failure(self, t: Transport, run: _Run, r: CommandResult) -> ApplyResult:
        what = f"`{r.command.display}` failed (exit {r.exit_status}): {r.stderr.strip()}"
        files_only = files_only_before_reload(run.plan.fix, run.bp, r.command.argv)
        kept = "" if files_only is run.bp else \
            "; the daemon was not restarted: the fix stopped before its restart, so it never read the change"
        run.bp = files_only
        try:
            ok, text, left = await self._restore_now(t, run)
            text += kept if ok else ""
        except TransportError as e:
            lost = f"{what}; then {type(e).__name__}: {e}"
            if not run.bp.guard:
                return await self._lost_unguarded(run, lost)
            return await self._confirm(run, lost=lost)  # never None when lost
        return run.result("command_failed" if ok else "not_restored", f"{what}; {text}", left=left)

    async def _lost_unguarded(self, run: _Run, why: str) -> ApplyResult:
        fresh = self.connect(run.host)
        try:
            ok, text, left = await self._restore_now(fresh, run)
        except TransportError as e:
            return run.result("unreachable", f"the connection was lost ({why}) and the host "
                              f"cannot be reached again ({e}): look at it by hand")
        finally:
            await fresh.close()
        return run.result("connection_lost" if ok else "not_restored",
                          f"the connection was lost ({why}); over a fresh connection {text}",
                          left=left)

    async def _restore_now(self, t: Transport, run: _Run) -> tuple[bool, str, str]:
        """Restore, check, and only then disarm: (restored, what to say, what is left)."""
        bp = run.bp
        if not bp.restore:
            after = await self._dump(t, bp)
            return False, "this fix has no undo: NOT restored", left_on_host(run.before, after)
        budget = max(self.settings.command_timeout, 10.0) * max(1, len(bp.restore))
        r = await self._run(t, script_command(bp.restore, timeout=budget, keep_going=True), run.log)
        after = await self._dump(t, bp)
        if not r.ok:
            again = " The guard on the host stays armed and tries once more at its deadline." \
                if bp.guard else ""
            return False, (f"restoring the backup {bp.directory} FAILED ({restore_failure(bp.restore, run.plan.fix, r)}):"
                           f" NOT restored.{again}"), left_on_host(run.before, after)
        note = ""
        if bp.guard and not (await self._run(t, guard.disarm_command(bp, undone=True), run.log)).ok:
            note = " (the host's guard had fired too)"
        exact = " and the rulesets equal those before" if bp.dump and same_ruleset(run.before, after) \
            else ("; the rulesets now differ from before:\n" + left_on_host(run.before, after)
                  if bp.dump else "")
        return True, f"the backup was restored{exact}{note}", ""

    async def _confirm(self, run: _Run, lost: str | None) -> ApplyResult | None:
        """Over a fresh connection: restore (if the old one was lost) or disarm.
        None: reachable and disarmed, the change stands."""
        fresh = self.connect(run.host)
        try:
            if lost is not None:
                ok, text, left = await self._restore_now(fresh, run)
                return run.result("connection_lost" if ok else "not_restored",
                                  f"the SSH connection was lost while applying ({lost}); over a "
                                  f"fresh connection {text}", left=left)
            run.confirming = True
            if (await self._run(fresh, guard.disarm_command(run.bp), run.log)).ok:
                return None
            return await self._guard_result(fresh, run, "the lock-out deadline passed before "
                                            "mailcheck could confirm")
        except TransportError as e:
            run.log.append(CommandLog.note(f"fresh SSH connection to {run.host.name} failed", str(e)))
        finally:
            await fresh.close()
        return await self._await_host_restore(run, lost)

    async def _await_host_restore(self, run: _Run, lost: str | None) -> ApplyResult:
        wait = (run.armed_at or 0.0) + self.deadline(run.plan.fix) + GRACE - time.monotonic()
        await self.sleep(max(0.0, wait))
        why = f"mailcheck lost SSH access ({lost})" if lost else \
            "the change cut mailcheck's SSH access"
        fresh = self.connect(run.host)
        try:
            return await self._guard_result(fresh, run, why)
        except TransportError as e:
            return run.result("unreachable", f"{why} and still cannot reach {run.host.name} after "
                              f"the guard's deadline ({e}): whether the host restored its backup is "
                              "unknown; look at it by hand")
        finally:
            await fresh.close()

    async def _guard_result(self, t: Transport, run: _Run, why: str) -> ApplyResult:
        """Report exactly what the guard's files show (waiting briefly for a restore in progress)."""
        state = await guard.read_state(t, run.bp)
        for _ in range(15):
            if state.seen != "restoring":
                break
            await self.sleep(1.0)
            state = await guard.read_state(t, run.bp)
        run.log.append(CommandLog.note(state.summary, state.log))
        after = await self._dump(t, run.bp)
        left = left_on_host(run.before, after)
        if state.seen == "restored":
            return run.result("restored_by_host", f"{why}; {state.summary}: {left}",
                              ruleset_after=after)
        if state.seen == "cancelled" and run.confirming:  # our confirm ran; its answer was lost
            done = await self._persist(run)
            done.message = ("the confirmation's answer was lost, but the guard shows this apply "
                            f"disarmed it: the change stands; {done.message}")
            return done
        if state.seen == "undone":  # mailcheck's own restore succeeded before the cut
            return run.result("connection_lost", f"{why}; {state.summary}: {left}",
                              ruleset_after=after)
        if state.seen == "armed":  # it did not fire: we can reach the host, so restore now
            ok, text, left = await self._restore_now(t, run)
            return run.result("connection_lost" if ok else "not_restored",
                              f"{why}; the guard had not fired, so mailcheck restored now: {text}",
                              left=left)
        what = "the guard was disarmed, not by this apply" if state.seen == "cancelled" \
            else state.summary
        return run.result("not_restored", f"{why}; {what}. NOT restored: {left}", left=left)

    # --- after a restart ------------------------------------------------------------------------
    async def settle(self, plan: PlanRecord, change: ChangeRecord, host: Host, why: str) -> ApplyResult:
        """What became of a change whose apply stopped (mailcheck died or was stopped): wait
        for its guard while it is armed, then report exactly what the host shows.
        Raises TransportError when the host cannot be reached."""
        bp = Backup(directory=change.backup_dir, take=[], guard=True,
                    restore=[line_from_dict(d) for d in change.restore_lines],
                    dump=backup_for(change.fix, "/", host.name, change.id).dump)
        run = _Run(plan, host, bp, change, before=change.ruleset_before)
        t = self.connect(host)
        try:
            state = await guard.read_state(t, bp)
            if state.seen == "armed":
                wait = self.deadline(change.fix) - (state.age or 0.0) + GRACE
                run.log.append(CommandLog.note(f"the guard is armed; waiting {max(wait, 0):.0f}s "
                                               "for its deadline"))
                await t.close()
                await self.sleep(max(0.0, wait))
                t = self.connect(host)
            elif state.seen in ("cancelled", "undone", "none"):
                after = await self._dump(t, bp)
                return self._settled(run, state, after)
            return await self._guard_result(t, run, why)
        finally:
            await t.close()

    def _settled(self, run: _Run, state: guard.GuardState, after: str) -> ApplyResult:
        left = left_on_host(run.before, after)
        if state.seen == "undone":
            return run.result("command_failed", f"{state.summary} before it stopped: {left}",
                              ruleset_after=after)
        if state.seen == "cancelled":
            return run.result("applied", "the guard had been disarmed: the change was confirmed and "
                              "is in effect, but mailcheck stopped before recording it (whether it "
                              f"was persisted is unknown): {left}", ruleset_after=after)
        if run.bp.dump and same_ruleset(run.before, after):
            return run.result("unchanged", f"no guard was armed and {left}: nothing of this fix "
                              "is in effect", ruleset_after=after)
        return run.result("unknown", f"no guard was armed; {left}", left=left, ruleset_after=after)

    async def _persist(self, run: _Run) -> ApplyResult:
        """The change is confirmed: persist it and record it, even if this connection fails."""
        failed, after = [], ""
        t = self.connect(run.host)
        try:
            for argv in run.plan.fix.persist:
                r = await self._run(t, self._cmd(argv), run.log)
                if not r.ok:
                    failed.append(r.command.display)
            after = await self._dump(t, run.bp)
        except TransportError as e:
            failed.append(f"(connection: {e})")
        finally:
            await t.close()
        run.change.ruleset_after = after
        msg = "applied" if not failed else f"applied, but persisting failed: {', '.join(failed)} " \
            "(the change is lost at reboot)"
        return run.result("applied", msg, ruleset_after=after)

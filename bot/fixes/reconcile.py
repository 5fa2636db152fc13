"""At startup: plans left `claimed` by a mailcheck that stopped in the middle of an apply.

A plan is claimed before its apply starts and leaves that state when the
apply ends. One still `claimed` after a restart was interrupted (a crash, a
SIGTERM past the drain time). For each, `reconcile` re-reads the host and
records what it really shows:

- no `started` change row: the apply stopped before anything was written on
  the host: nothing was changed;
- a `started` row: the guard's files and the rulesets (Applier.settle): a
  guard still armed is waited for; then `.restored` / `.restore-failed`, a
  disarmed guard (the change was confirmed and is in effect), or no guard.

The change row and the plan get their true state, the audit log a
`reconcile` entry, the store's and the host's locks are released, and the
result is returned as data for the channel the plan was shown in.

A plan is left alone while its apply may still be alive: claimed less than
CLAIM_MARGIN seconds ago (between its claim and taking the store's lock), or
while the store's lock of its host is held by a process that is alive (on
this machine; this very process included, by its run token) or by one on
another machine whose lock has not lapsed (its own apply, or the one it
waits for; a holder renews its lock while it works, so a dead one's lapses
within storelock.LOCK_TTL). Such a plan is reconciled later.

Replicas of `serve` sharing a database run this at start and then every
MAILCHECK_RECONCILE_INTERVAL seconds, so a replica killed mid-apply is
reconciled by another. Exactly one reconciles a plan: it first takes the
host's store lock (acquire when free, or take it over from the dead holder
by one conditional update), then re-reads the plan, which must still be
claimed.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from dataclasses import dataclass

from bot.errors import TransportError
from bot.fixes import hostlock, storelock
from bot.fixes.apply import Applier, ApplyResult
from bot.fixes.outcomes import RESULTS, ApplyStatus
from bot.fixes.storelock import LOCK_TTL
from bot.store import AuditEntry, ChangeRecord, PlanRecord, Store
from config.inventory import Inventory

CLAIM_MARGIN = 5.0
_OWNER = re.compile(r"\[mailcheck pid (\d+) on (\S+?)(?: run (\w+))?\]$")
_RUN = secrets.token_hex(4)  # this process, even where pids repeat (pid 1 in a container)


def owner_tag() -> str:
    """Appended to the store lock's holder: which process holds it."""
    return f"[mailcheck pid {os.getpid()} on {socket.gethostname()} run {_RUN}]"


def _alive(holder: str) -> bool:
    m = _OWNER.search(holder)
    if m is None or m[2] != socket.gethostname():
        return True  # another machine (or unknown): alive until its lock expires
    pid = int(m[1])
    if pid == os.getpid():
        return m[3] == _RUN  # this process's own apply; or an earlier one with this pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Reconciled:
    """What a restart found about one interrupted apply: post `text` in `channel`."""

    plan_id: str
    host: str
    channel: str
    status: ApplyStatus
    message: str
    change_id: str | None = None  # shown by bot.render.outcomes.reconciled_text


@dataclass(frozen=True)
class Reconciler:
    store: Store
    applier: Applier
    inventory: Inventory

    async def run(self, now: float | None = None) -> list[Reconciled]:
        now = now or time.time()
        out = []
        for plan in await self.store.plans_in_state("claimed"):
            if (plan.claimed_at or 0) > now - CLAIM_MARGIN:
                continue  # between its claim and its lock
            held = await self.store.get_lock(plan.host.name)
            if held is not None and _alive(held.holder):
                continue  # its apply, or one it waits for, is running
            me = f"reconcile of plan {plan.id} {owner_tag()}"
            if held is None:
                taken = await self.store.acquire_lock(plan.host.name, me, LOCK_TTL) is None
            else:  # its holder died: one conditional update, one winner among replicas
                taken = await self.store.take_over_lock(plan.host.name, held.holder, me, LOCK_TTL)
            if not taken:
                continue  # another replica reconciles it (or a new apply took the host)
            async with storelock.kept(self.store, plan.host.name, me):
                current = await self.store.get_plan(plan.id)
                if current is not None and current.state == "claimed":
                    out.append(await self._one(current))
        return out

    async def _one(self, plan: PlanRecord) -> Reconciled:
        changes = await self.store.changes_of_plan(plan.id)
        started = [c for c in changes if c.state == "started"]
        change = started[-1] if started else None
        if change is None and changes:  # its end was recorded on the change, not the plan
            return await self._recorded(plan, changes[-1])
        if change is None:
            result = ApplyResult("unchanged", "mailcheck stopped before this change started: "
                                 "nothing was changed on the host")
        else:
            result = await self._settle(plan, change)
        status, plan_state, change_state = RESULTS[result.status]
        if change is not None:
            await self.store.update_change(change.model_copy(update={
                "state": change_state, "ruleset_after": result.ruleset_after or change.ruleset_after}))
        await self.store.set_plan_state(plan.id, plan_state)
        await self.store.add_audit(AuditEntry(
            event="reconcile", actor=plan.claimed_by or "", host=plan.host.name, plan_id=plan.id,
            change_id=change.id if change else None, result=result.status,
            output=result.message, detail={"left_on_host": result.left}))
        return Reconciled(plan.id, plan.host.name, plan.channel, status, result.message,
                          change.id if change else None)

    async def _recorded(self, plan: PlanRecord, change: ChangeRecord) -> Reconciled:
        """The apply recorded its change's end, but the store failed before the plan's: the
        plan takes the state its change row already says (nothing is re-read or redone)."""
        state = "applied" if change.state == "rolled_back" else change.state
        status, plan_state = next(((s, p) for s, p, c in RESULTS.values() if c == state),
                                  ("unreachable", "failed"))
        message = f"the apply's change {change.id} was recorded as {change.state}; its plan " \
            "was not (the store failed in between); the plan now says so"
        await self.store.set_plan_state(plan.id, plan_state)
        await self.store.add_audit(AuditEntry(
            event="reconcile", actor=plan.claimed_by or "", host=plan.host.name, plan_id=plan.id,
            change_id=change.id, result=change.state, output=message))
        return Reconciled(plan.id, plan.host.name, plan.channel, status, message, change.id)

    async def _settle(self, plan: PlanRecord, change: ChangeRecord) -> ApplyResult:
        host = self.inventory.hosts.get(plan.host.name) or change.host
        why = "mailcheck stopped during this apply"
        try:
            result = await self.applier.settle(plan, change, host, why)
        except TransportError as e:
            return ApplyResult("unreachable", f"{why}, and {host.name} cannot be reached now "
                               f"({e}): what the host did is unknown; look at it by hand",
                               change=change)
        backup_dir = str(self.applier.settings.backup_dir).rstrip("/")
        lock = hostlock.HostLock(f"{backup_dir}/.lock", change.id, "", 0)
        t = self.applier.connect(host)
        try:
            await hostlock.release(t, lock)
        except TransportError:
            pass  # it expires by itself
        finally:
            await t.close()
        return result

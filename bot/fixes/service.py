"""FixService: the one path from "someone approved" to a changed host.

The Slack buttons and `mailcheck fix` call the same methods:

    register(report, requested_by: Actor, channel, host=None) -> {fix_id: plan_id}
    apply(plan_id, actor: Actor, *, actor_groups=None, break_glass_reason=None, digest=None)
        -> ApplyOutcome
    rollback(change_id, actor: Actor, *, actor_groups=None) -> RollbackOutcome
    audit(host=None, limit=50) -> list[AuditEntry]
    record_check(report, actor: Actor, channel="")

Who asked is an Actor (bot.models): trust follows its kind; the audit log and the
plans keep its text form, str(actor).

Order inside apply: plan exists -> not yet claimed -> not expired -> content
still hashes to what was shown -> today's inventory -> policy -> atomic claim ->
the store's host lock -> (bot/fixes/apply.py) the lock on the host,
preconditions, a `started` change row, backup, test-load, dead-man, commands,
confirm, persist -> verify. Every refusal and every stage is written to the
audit log; the change row ends in the state the host is really in.

Once claimed, an apply runs in a task of its own that a cancelled caller does
not cancel (asyncio.shield): `drain(timeout)` waits for those on shutdown and
cancels only what is still running after `timeout`; a plan left `claimed` by
that (or by a crash) is found by `reconcile()` at the next start
(bot/fixes/reconcile.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from bot.errors import TransportError
from bot.fixes.apply import Applier, ApplyResult
from bot.fixes.outcomes import RESULTS, ApplyOutcome, RollbackOutcome, Snapshot
from bot.fixes.plans import PlanBook, digest_problem
from bot.fixes.policy import GroupMembers, Policy
from bot.fixes.reconcile import Reconciled, Reconciler, owner_tag
from bot.fixes.rollback import restore_change
from bot.fixes.verify import Verifier, run_verify
from bot.models import Actor, Report
from bot.store import AuditEntry, ChangeRecord, ChangeState, PlanRecord, Store
from bot.transport import Connect
from config.inventory import Host, Inventory
from config.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
LOCK_TTL_EXTRA = 600.0  # a lock outlives a crashed bot by at most deadline + this


class FixService:
    def __init__(
        self, *, settings: Settings, inventory: Inventory, store: Store, connect: Connect,
        verifier: Verifier | None = None, group_members: GroupMembers | None = None,
    ) -> None:
        self.settings = settings
        self.inventory = inventory
        self.store = store
        self.connect = connect
        self.verifier = verifier
        self.policy = Policy(settings, inventory, *(() if group_members is None else (group_members,)))
        self.plans = PlanBook(store, settings.plan_ttl)
        self.applier = Applier(settings, connect)
        self._inflight: set[asyncio.Task] = set()

    # --- shielded work and shutdown ----------------------------------------------------
    async def _shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` in a task of its own: cancelling the caller does not cancel it."""
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def reconcile(self, now: float | None = None) -> list[Reconciled]:
        """Plans left `claimed` by an apply that stopped: re-read their hosts and record the
        truth (bot/fixes/reconcile.py). Call at startup; returns what to tell each channel."""
        return await Reconciler(self.store, self.applier, self.inventory).run(now)

    @property
    def busy(self) -> int:
        """Applies and rollbacks running now."""
        return len(self._inflight)

    async def drain(self, within: float) -> int:
        """Wait up to `within` s for the applies and rollbacks in flight; cancel what is still
        running then (its plan stays `claimed` for reconcile). Returns how many were cancelled."""
        pending = set(self._inflight)
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=within)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
        return len(pending)

    # --- plans and checks ----------------------------------------------------
    async def register(
        self, report: Report, requested_by: Actor, channel: str = "", host: Host | None = None
    ) -> dict[str, str]:
        """Store the report's fixes as plans; returns fix id -> opaque plan id."""
        host = host or self.inventory.get(report.host)
        plans = await self.plans.register(host, report, str(requested_by), channel)
        for fix_id, plan in plans.items():
            await self._audit("plan", str(requested_by), host.name, plan_id=plan.id,
                              commands=plan.fix.shell_commands, result="pending",
                              detail={"fix": fix_id, "digest": plan.digest, "channel": channel,
                                      "expires_at": plan.expires_at})
        return {fix_id: plan.id for fix_id, plan in plans.items()}

    async def plan(self, plan_id: str) -> PlanRecord | None:
        return await self.plans.get(plan_id)

    async def record_check(self, report: Report, actor: Actor, channel: str = "") -> None:
        await self._audit("check", str(actor), report.host, result=report.verdict,
                          output="\n".join(f.summary for f in report.findings),
                          detail={"channel": channel, "fixes": [f.id for f in report.fixes]})

    async def audit(self, host: str | None = None, limit: int = 50) -> list[AuditEntry]:
        return await self.store.audit(host, limit)

    # --- apply -----------------------------------------------------------------
    async def apply(
        self, plan_id: str, actor: Actor, *, actor_groups: list[str] | None = None,
        break_glass_reason: str | None = None, digest: str | None = None,
    ) -> ApplyOutcome:
        plan = await self.store.get_plan(plan_id)
        if plan is None:
            return await self._refuse(ApplyOutcome("unknown_plan", "no such plan (it may belong "
                                                   "to another bot); run the check again",
                                                   plan_id, actor=str(actor), offer_recheck=True))
        out = self._outcome(plan, actor)
        early = await self._gate(plan, out, actor, actor_groups, break_glass_reason, digest)
        if early is not None:
            return early
        if not await self.store.claim_plan(plan.id, str(actor), time.time()):
            return await self._duplicate(out)
        await self._audit("break_glass" if out.break_glass else "approval", out.actor, plan.host.name,
                          plan_id=plan.id, commands=out.commands, result="claimed",
                          detail={"reason": break_glass_reason, "digest": plan.digest})
        host = self.inventory.hosts.get(plan.host.name) or plan.host
        return await self._shielded(self._claimed(plan, host, out))

    async def _claimed(self, plan: PlanRecord, host: Host, out: ApplyOutcome) -> ApplyOutcome:
        holder = lock_holder(plan.model_copy(update={"claimed_by": out.actor}))
        held = await self._lock(plan.host.name, holder)
        if held is not None:
            await self.store.unclaim_plan(plan.id)
            out.status, out.message = "busy", f"another change is running on " \
                f"{plan.host.name}: held by {held}; try again when it is done"
            return await self._refuse(out)
        try:
            return await self._apply_locked(plan, host, out)
        finally:
            await self.store.release_lock(plan.host.name, holder)

    def _outcome(self, plan: PlanRecord, actor: Actor) -> ApplyOutcome:
        return ApplyOutcome(
            "refused", "", plan.id, host=plan.host.name, fix_id=plan.fix.id,
            summary=plan.fix.summary, actor=str(actor), commands=plan.fix.shell_commands,
            before=Snapshot(ports=list(plan.before_ports)),
        )

    async def _gate(self, plan: PlanRecord, out: ApplyOutcome, actor: Actor,
                    actor_groups: list[str] | None, reason: str | None,
                    digest: str | None) -> ApplyOutcome | None:
        """Everything that refuses before the claim (None: go on)."""
        if plan.state != "pending":
            return await self._duplicate(out, plan)
        if plan.expired():
            out.status, out.offer_recheck = "expired", True
            out.message = "this plan expired (plans live " \
                f"{self.settings.plan_ttl // 60} min); run the check again for a fresh one"
            return await self._refuse(out)
        problem = digest_problem(plan, digest)
        if problem:
            out.status, out.message, out.offer_recheck = "void", problem, True
            return await self._refuse(out)
        current = self.inventory.hosts.get(plan.host.name)
        problem = _inventory_problem(plan.host, current, actor)
        if problem:
            out.status, out.message, out.offer_recheck = "void", problem, True
            return await self._refuse(out)
        requesters = {Actor.parse(r) for r in await self.store.requesters(plan.digest)}
        permission = await self.policy.decide(
            current or plan.host, actor, requesters | {Actor.parse(plan.requested_by)},
            actor_groups=actor_groups, break_glass_reason=reason)
        if not permission.allowed:
            out.message, out.approvers = permission.reason, permission.approvers
            return await self._refuse(out, code=permission.code)
        if permission.break_glass:
            out.break_glass, out.break_glass_reason = True, (reason or "").strip()
        return None

    async def _duplicate(self, out: ApplyOutcome, plan: PlanRecord | None = None) -> ApplyOutcome:
        plan = plan or await self.store.get_plan(out.plan_id)
        who = plan.claimed_by if plan else "someone"
        when = time.strftime("%H:%M:%S UTC", time.gmtime(plan.claimed_at)) \
            if plan and plan.claimed_at else "earlier"
        out.status = "duplicate"
        out.message = f"already handled: {who} approved this fix at {when} " \
            f"(state {plan.state if plan else 'unknown'}); nothing was done twice"
        return await self._refuse(out, event="duplicate")

    async def _lock(self, host: str, holder: str) -> str | None:
        ttl = self.settings.lockout_deadline + LOCK_TTL_EXTRA
        deadline = time.monotonic() + self.settings.lock_wait
        while True:
            held = await self.store.acquire_lock(host, holder, ttl)
            if held is None:
                return None
            if time.monotonic() >= deadline:
                return held.holder
            await asyncio.sleep(0.1)

    async def _apply_locked(self, plan: PlanRecord, host: Host, out: ApplyOutcome) -> ApplyOutcome:
        change_id = "c_" + secrets.token_urlsafe(9)
        started: list[ChangeRecord] = []

        async def record_start(change: ChangeRecord) -> None:
            await self.store.add_change(change)
            started.append(change)
            await self._audit("started", out.actor, plan.host.name, plan_id=plan.id,
                              change_id=change.id, commands=out.commands, result="started",
                              detail={"backup": change.backup_dir})

        try:
            result = await self.applier.apply(plan, host, out.actor, change_id, record_start)
        except TransportError as e:  # the applier maps these; this is the last safety net
            result = ApplyResult("unreachable", f"lost the host during the change: {e}; "
                                 "look at it by hand", change=started[0] if started else None)
        except asyncio.CancelledError:
            await asyncio.shield(self._interrupted(plan, out, started))
            raise
        out.log, out.left = result.log, result.left
        out.before.ruleset = result.ruleset_before
        out.after.ruleset = result.ruleset_after
        if result.status in ("busy", "not_started"):  # nothing happened on the host: may be retried
            await self.store.unclaim_plan(plan.id)
            if result.change is not None:
                await self._finish_change(result.change, "not_applied")
            out.status, out.message, out.offer_recheck = (
                "busy" if result.status == "busy" else "failed"), result.message, True
            return await self._refuse(out) if result.status == "busy" else \
                await self._audited(plan, out, result)
        status, plan_state, change_state = RESULTS[result.status]
        if result.change is not None:
            await self._finish_change(result.change, change_state)
        await self.store.set_plan_state(plan.id, plan_state)
        out.status, out.message = status, result.message
        if status != "applied":
            out.offer_recheck = True
            return await self._audited(plan, out, result)
        out.change_id = change_id
        await self._audited(plan, out, result)
        await self._verify(plan, out)
        return out

    async def _finish_change(self, change: ChangeRecord, state: ChangeState) -> None:
        await self.store.update_change(change.model_copy(update={"state": state}))

    async def _audited(self, plan: PlanRecord, out: ApplyOutcome, result: ApplyResult) -> ApplyOutcome:
        await self._audit("apply", out.actor, plan.host.name, plan_id=plan.id,
                          change_id=result.change.id if result.change else None,
                          commands=[e.command for e in result.log], output=_log_text(result.log),
                          result=result.status, detail={"message": result.message,
                                                        "left_on_host": result.left,
                                                        "break_glass": out.break_glass})
        return out

    async def _interrupted(self, plan: PlanRecord, out: ApplyOutcome,
                           started: list[ChangeRecord]) -> None:
        """Cancelled mid-apply (shutdown past its drain time): say so; reconcile() finishes."""
        try:
            await self._audit("apply", out.actor, plan.host.name, plan_id=plan.id,
                              change_id=started[0].id if started else None, result="interrupted",
                              output="mailcheck stopped during this apply; the next start "
                                     "re-reads the host and reports its state")
        except Exception:  # noqa: BLE001 - the store may be gone too; reconcile still finds it
            log.exception("could not audit the interrupted apply of %s", plan.id)

    async def _verify(self, plan: PlanRecord, out: ApplyOutcome) -> None:
        check = await run_verify(self.verifier, plan.host, plan.fix)
        out.verify = check
        if check is None:
            return
        out.after.ports = check.ports
        if not check.achieved:
            out.status, out.offer_rollback = "not_achieved", True
            why = check.error or "; ".join(check.missing)
            out.message = f"applied, but the re-check does not show the expected effect ({why}); " \
                "roll back?"
        await self._audit("verify", out.actor, plan.host.name, plan_id=plan.id,
                          change_id=out.change_id, result="achieved" if check.achieved else
                          "not_achieved", output="\n".join(check.missing),
                          detail={"ports": [p.model_dump(mode="json") for p in check.ports]})

    # --- rollback ----------------------------------------------------------------
    async def rollback(self, change_id: str, actor: Actor, *, actor_groups: list[str] | None = None,
                       force: bool = False) -> RollbackOutcome:
        """Restore the change's backup. Refused (status "drift") when the rules changed
        since the fix was applied, unless force (then later changes are undone too)."""
        change = await self.store.get_change(change_id)
        if change is None:
            out = RollbackOutcome("unknown_change", "no such change", change_id, actor=str(actor))
            return await self._refuse_rollback(out)
        out = RollbackOutcome("refused", "", change_id, host=change.host.name, actor=str(actor))
        current = self.inventory.hosts.get(change.host.name)
        problem = _inventory_problem(change.host, current, actor)
        if problem:
            out.message = problem
            return await self._refuse_rollback(out)
        host = current or change.host  # today's approvers, address and jump host
        permission = await self.policy.decide(host, actor, None, actor_groups=actor_groups)
        if not permission.allowed:
            out.message, out.approvers = permission.reason, permission.approvers
            return await self._refuse_rollback(out, code=permission.code)
        return await self._shielded(self._rollback_claimed(change_id, host, out, force))

    async def _rollback_claimed(self, change_id: str, host: Host, out: RollbackOutcome,
                                force: bool) -> RollbackOutcome:
        holder = f"{out.actor} (rollback {change_id})"
        held = await self._lock(host.name, holder)
        if held is not None:
            out.status, out.message = "busy", f"another change is running on " \
                f"{host.name}: held by {held}"
            return await self._refuse_rollback(out)
        try:
            return await self._rollback_locked(change_id, host, out, force)
        finally:
            await self.store.release_lock(host.name, holder)

    async def _rollback_locked(self, change_id: str, host: Host, out: RollbackOutcome,
                               force: bool) -> RollbackOutcome:
        change = await self.store.get_change(change_id)
        if change is None or change.state != "applied":
            out.status = "duplicate"
            out.message = f"already rolled back by {change.rolled_back_by}" \
                if change is not None and change.state == "rolled_back" else \
                f"this change is {change.state if change else 'unknown'}, not applied: nothing to roll back"
            return await self._refuse_rollback(out)
        result = await restore_change(self.settings, self.connect, change, host, force)
        out.log, out.exact, out.message = result.log, result.exact, result.message
        out.before.ruleset, out.after.ruleset = result.ruleset_before, result.ruleset_after
        if result.ok:
            await self.store.mark_change(change_id, "rolled_back", out.actor)
            out.status = "rolled_back"
        else:
            out.status = "drift" if result.drift else "busy" if result.busy else "failed"
        await self._audit("rollback", out.actor, out.host, plan_id=change.plan_id,
                          change_id=change_id, commands=[e.command for e in result.log],
                          output=_log_text(result.log), result=out.status,
                          detail={"exact": result.exact, "backup": change.backup_dir,
                                  "force": force})
        return out

    # --- audit helpers -------------------------------------------------------------
    async def _audit(self, event: str, actor: str, host: str, **kw) -> None:
        await self.store.add_audit(AuditEntry(event=event, actor=actor, host=host, **kw))

    async def _refuse(self, out: ApplyOutcome, code: str = "", event: str = "refusal"
                      ) -> ApplyOutcome:
        detail: dict = {"code": code}
        if out.approvers is not None:
            detail["approvers"] = sorted(out.approvers.users) + sorted(out.approvers.usergroups)
        await self._audit(event, out.actor, out.host, plan_id=out.plan_id, commands=out.commands,
                          result=out.status, output=out.message, detail=detail)
        return out

    async def _refuse_rollback(self, out: RollbackOutcome, code: str = "") -> RollbackOutcome:
        await self._audit("refusal", out.actor, out.host, change_id=out.change_id,
                          result=f"rollback {out.status}", output=out.message,
                          detail={"code": code})
        return out



def lock_holder(plan: PlanRecord) -> str:
    """The store lock's holder text for an apply of `plan` (reconcile releases it by this)."""
    return f"{plan.claimed_by} (fix {plan.fix.id}, plan {plan.id}) {owner_tag()}"


def _inventory_problem(planned: Host, current: Host | None, actor: Actor) -> str | None:
    """Approvers and addresses come from today's inventory, not from the plan's copy."""
    if current is None:
        if actor.kind == "cli":
            return None  # an ad-hoc target of `mailcheck fix`
        return f"{planned.name} is no longer in the inventory; nothing is applied there"
    if (current.address, current.port, current.user) != (planned.address, planned.port, planned.user):
        return f"{planned.name}'s address in the inventory changed since the check; run it again"
    return None


def _log_text(log) -> str:
    parts = []
    for e in log:
        parts.append(f"$ {e.command}\n[exit {e.exit_status}]\n{e.stdout}{e.stderr}")
    return "\n".join(parts)[-20000:]

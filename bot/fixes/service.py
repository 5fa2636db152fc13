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
still hashes to what was shown -> policy -> atomic claim -> host lock ->
preconditions, backup, dead-man, commands, confirm, persist -> verify.
Every refusal and every stage is written to the audit log.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from bot.errors import TransportError
from bot.fixes.apply import Applier, ApplyResult
from bot.fixes.outcomes import ApplyOutcome, RollbackOutcome, Snapshot
from bot.fixes.plans import PlanBook, digest_problem
from bot.fixes.policy import GroupMembers, Policy
from bot.fixes.rollback import restore_change
from bot.fixes.verify import Verifier, run_verify
from bot.models import Actor, Report
from bot.store import AuditEntry, PlanRecord, Store
from bot.transport import Connect
from config.inventory import Host, Inventory
from config.settings import Settings

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
        holder = f"{actor} (fix {plan.fix.id}, plan {plan.id})"
        held = await self._lock(plan.host.name, holder)
        if held is not None:
            await self.store.unclaim_plan(plan.id)
            out.status, out.message = "busy", f"another change is running on " \
                f"{plan.host.name}: held by {held}; try again when it is done"
            return await self._refuse(out)
        try:
            return await self._apply_locked(plan, out)
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
        permission = await self.policy.decide(
            current or plan.host, actor, Actor.parse(plan.requested_by),
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

    async def _apply_locked(self, plan: PlanRecord, out: ApplyOutcome) -> ApplyOutcome:
        change_id = "c_" + secrets.token_urlsafe(9)
        try:
            result = await self.applier.apply(plan, out.actor, change_id)
        except TransportError as e:  # the applier maps these; this is the last safety net
            result = ApplyResult("unreachable", f"lost the host during the change: {e}; "
                                 "look at it by hand")
        out.log = result.log
        out.before.ruleset = result.ruleset_before
        out.after.ruleset = result.ruleset_after
        await self._audit_apply(plan, out, result)
        if result.status != "applied" or result.change is None:
            return await self._not_applied(plan, out, result)
        await self.store.add_change(result.change)
        await self.store.set_plan_state(plan.id, "applied")
        out.change_id = change_id
        out.status, out.message = "applied", result.message
        await self._verify(plan, out)
        return out

    async def _not_applied(self, plan: PlanRecord, out: ApplyOutcome,
                           result: ApplyResult) -> ApplyOutcome:
        refused = result.status == "precondition_changed"
        out.message = result.message
        out.offer_recheck = True
        if result.status == "not_started":  # nothing happened on the host: may be retried
            await self.store.unclaim_plan(plan.id)
            out.status = "failed"
            return out
        await self.store.set_plan_state(plan.id, "refused" if refused else "failed")
        if refused:
            out.status = "precondition_changed"
        elif result.status in ("restored_by_host", "unreachable"):
            out.status = result.status
        else:
            out.status = "failed"
        return out

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
        permission = await self.policy.decide(change.host, actor, None, actor_groups=actor_groups)
        if not permission.allowed:
            out.message, out.approvers = permission.reason, permission.approvers
            return await self._refuse_rollback(out)
        holder = f"{actor} (rollback {change_id})"
        held = await self._lock(change.host.name, holder)
        if held is not None:
            out.status, out.message = "busy", f"another change is running on " \
                f"{change.host.name}: held by {held}"
            return await self._refuse_rollback(out)
        try:
            return await self._rollback_locked(change_id, out, force)
        finally:
            await self.store.release_lock(change.host.name, holder)

    async def _rollback_locked(self, change_id: str, out: RollbackOutcome,
                               force: bool) -> RollbackOutcome:
        change = await self.store.get_change(change_id)
        if change is None or change.state != "applied":
            out.status = "duplicate"
            out.message = f"already rolled back by {change.rolled_back_by if change else '?'}"
            return await self._refuse_rollback(out)
        result = await restore_change(self.settings, self.connect, change, force)
        out.log, out.exact, out.message = result.log, result.exact, result.message
        out.before.ruleset, out.after.ruleset = result.ruleset_before, result.ruleset_after
        if result.ok:
            await self.store.mark_change(change_id, "rolled_back", out.actor)
            out.status = "rolled_back"
        else:
            out.status = "drift" if result.drift else "failed"
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

    async def _refuse_rollback(self, out: RollbackOutcome) -> RollbackOutcome:
        await self._audit("refusal", out.actor, out.host, change_id=out.change_id,
                          result=f"rollback {out.status}", output=out.message)
        return out

    async def _audit_apply(self, plan: PlanRecord, out: ApplyOutcome, result: ApplyResult) -> None:
        await self._audit("apply", out.actor, plan.host.name, plan_id=plan.id,
                          change_id=result.change.id if result.change else None,
                          commands=[e.command for e in result.log], output=_log_text(result.log),
                          result=result.status, detail={"message": result.message,
                                                        "break_glass": out.break_glass})


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

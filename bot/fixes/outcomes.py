"""What FixService returns: everything a Slack message or the terminal needs, as plain data
(user ids, states, ports): how it is shown is the renderers' business (bot/render)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from bot.fixes.evidence import CommandLog
from bot.fixes.policy import Approvers
from bot.fixes.verify import VerifyResult
from bot.models import PortStatus
from bot.store import ChangeState, PlanState

ApplyStatus = Literal[
    "applied",  # done and verified (or nothing to verify)
    "not_achieved",  # done, but the re-check does not show the expected effect: offer rollback
    "refused",  # policy: read-only, not an approver, four eyes, break-glass refused
    "expired",  # too old: re-check
    "void",  # the plan's content no longer matches what was approved: re-check
    "unknown_plan",
    "duplicate",  # already claimed or applied (double click, retried delivery): nothing done
    "busy",  # another change holds the host's lock
    "precondition_changed",  # the host changed since the check: re-check
    "failed",  # nothing was changed, or a step failed and the backup was restored (the message
               # says which, and whether the rulesets equal those before)
    "restored_by_host",  # the change cut SSH; the host's dead-man job restored the backup
    "not_restored",  # a restore FAILED (or there was none): the host may be half-changed
    "unreachable",  # SSH lost and the restore could not be confirmed: look at the host
]
# Outcomes the whole channel must see (the host may have changed, or an apply went wrong);
# the others (refusals, a duplicate click) go to the clicker only.
ANNOUNCED = ("applied", "not_achieved", "failed", "restored_by_host", "not_restored", "unreachable")
# the applier's status -> (the outcome's status, the plan's state, the change row's state)
RESULTS: dict[str, tuple[ApplyStatus, PlanState, ChangeState]] = {
    "applied": ("applied", "applied", "applied"),
    "refused": ("failed", "refused", "not_applied"),
    "backup_failed": ("failed", "failed", "not_applied"),
    "precondition_changed": ("precondition_changed", "refused", "not_applied"),
    "command_failed": ("failed", "failed", "restored"),
    "connection_lost": ("failed", "failed", "restored"),
    "restored_by_host": ("restored_by_host", "failed", "restored_by_host"),
    "not_restored": ("not_restored", "failed", "not_restored"),
    "unreachable": ("unreachable", "failed", "unreachable"),
    "unchanged": ("failed", "failed", "not_applied"),
    "unknown": ("unreachable", "failed", "unreachable"),
}
RollbackStatus = Literal["rolled_back", "refused", "unknown_change", "duplicate", "busy", "failed",
                         "drift"]  # drift: the rules changed since the fix; needs force


@dataclass
class Snapshot:
    ruleset: str = ""
    ports: list[PortStatus] = field(default_factory=list)


@dataclass
class ApplyOutcome:
    status: ApplyStatus
    message: str
    plan_id: str
    host: str = ""
    fix_id: str = ""
    summary: str = ""
    actor: str = ""
    change_id: str | None = None
    commands: list[str] = field(default_factory=list)
    log: list[CommandLog] = field(default_factory=list)
    before: Snapshot = field(default_factory=Snapshot)
    after: Snapshot = field(default_factory=Snapshot)
    verify: VerifyResult | None = None
    break_glass: bool = False  # applied on a typed reason, without an approver: announce it
    break_glass_reason: str | None = None
    approvers: Approvers | None = None  # who may approve, when the actor may not
    left: str = ""  # what is left on the host when it was not restored
    offer_rollback: bool = False
    offer_recheck: bool = False
    at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.status == "applied"

    @property
    def changed_host(self) -> bool:
        return self.status in ("applied", "not_achieved")

    @property
    def announce_in_channel(self) -> bool:
        """The channel must be told (not only the clicker): see ANNOUNCED."""
        return self.status in ANNOUNCED or self.break_glass


@dataclass
class RollbackOutcome:
    status: RollbackStatus
    message: str
    change_id: str
    host: str = ""
    actor: str = ""
    approvers: Approvers | None = None  # who may, when the actor may not
    exact: bool | None = None
    log: list[CommandLog] = field(default_factory=list)
    before: Snapshot = field(default_factory=Snapshot)
    after: Snapshot = field(default_factory=Snapshot)
    at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.status == "rolled_back"

    @property
    def announce_in_channel(self) -> bool:
        """Rolled back, or a restore that failed: the channel must know."""
        return self.status in ("rolled_back", "failed")

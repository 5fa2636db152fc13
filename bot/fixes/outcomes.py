"""What FixService returns: everything a Slack message or the terminal needs, as plain data
(user ids, states, ports): how it is shown is the renderers' business (bot/render)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from bot.fixes.apply import CommandLog
from bot.fixes.policy import Approvers
from bot.fixes.verify import VerifyResult
from bot.models import PortStatus

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
    "failed",  # backup / a command / the connection failed; the backup was restored
    "restored_by_host",  # the change cut SSH; the host's dead-man job restored the backup
    "unreachable",  # SSH lost and the restore could not be confirmed: look at the host
]
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
    offer_rollback: bool = False
    offer_recheck: bool = False
    at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.status == "applied"

    @property
    def changed_host(self) -> bool:
        return self.status in ("applied", "not_achieved")


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

"""What the store keeps (plans, changes, audit entries, reports, locks) and the Store
protocol every backend implements (bot/store/sql.py, over SQLite or PostgreSQL)."""

from __future__ import annotations

import time
from typing import Any, Literal, Protocol

from pydantic import AliasChoices, BaseModel, Field

from bot.models import Fix, PortStatus, Report
from config.inventory import Host

REPORTS_PER_HOST = 50

PlanState = Literal["pending", "claimed", "applied", "failed", "refused"]
ChangeState = Literal[
    "started",  # written before the first command that writes on the host
    "applied",  # confirmed (and persisted, unless the audit says otherwise)
    "rolled_back",
    "restored",  # a step failed and mailcheck restored the backup (checked)
    "restored_by_host",  # the host's guard restored it (its .restored marker)
    "not_restored",  # a restore failed: the host may be half-changed
    "unreachable",  # what the host did is unknown
    "not_applied",  # stopped before any fix command ran (backup, guard, refusal)
    "failed",  # older rows
]


class PlanRecord(BaseModel):
    id: str
    host: Host
    fix: Fix
    digest: str
    requested_by: str
    channel: str = ""
    created_at: float
    expires_at: float
    state: PlanState = "pending"
    claimed_by: str | None = None
    claimed_at: float | None = None
    before_ports: list[PortStatus] = Field(default_factory=list)

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at


class ChangeRecord(BaseModel):
    id: str
    plan_id: str
    host: Host
    fix: Fix
    applied_by: str
    applied_at: float
    backup_dir: str
    restore_lines: list[dict] = Field(  # transport.ScriptLine fields; older rows: restore_steps
        default_factory=list, validation_alias=AliasChoices("restore_lines", "restore_steps"))
    ruleset_before: str = ""
    ruleset_after: str = ""
    state: ChangeState = "applied"
    rolled_back_by: str | None = None
    rolled_back_at: float | None = None


class AuditEntry(BaseModel):
    id: int | None = None
    ts: float = Field(default_factory=time.time)
    event: str  # check, approval, refusal, apply, verify, rollback, break_glass, lockout, ...
    actor: str = ""
    host: str = ""
    plan_id: str | None = None
    change_id: str | None = None
    commands: list[str] = Field(default_factory=list)
    output: str = ""
    result: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


class ReportRecord(BaseModel):
    """A finished check, kept next to the plans: Details and the App Home read it after a
    restart too. `channel`/`ts`: the Slack message it was posted as, when it was."""

    id: str
    report: Report
    requested_by: str = ""
    channel: str = ""
    ts: str = ""
    at: float = Field(default_factory=time.time)

    @property
    def host(self) -> str:
        return self.report.host


class LockHeld(BaseModel):
    host: str
    holder: str
    since: float


class Store(Protocol):
    """Persistence for fixes and for what replicas of `serve` share. Every method may raise
    the driver's errors only (sqlite3.Error, psycopg.Error)."""

    async def add_audit(self, entry: AuditEntry) -> int: ...
    async def audit(self, host: str | None = None, limit: int = 50) -> list[AuditEntry]: ...

    async def add_plan(self, plan: PlanRecord) -> None: ...
    async def get_plan(self, plan_id: str) -> PlanRecord | None: ...
    async def claim_plan(self, plan_id: str, actor: str, now: float) -> bool:
        """pending and unexpired -> claimed by `actor`; True for exactly one caller."""
        ...
    async def set_plan_state(self, plan_id: str, state: PlanState) -> None: ...
    async def unclaim_plan(self, plan_id: str) -> None: ...

    async def add_change(self, change: ChangeRecord) -> None: ...
    async def get_change(self, change_id: str) -> ChangeRecord | None: ...
    async def mark_change(self, change_id: str, state: ChangeState, actor: str | None) -> bool:
        """applied -> `state`; True for exactly one caller."""
        ...
    async def update_change(self, change: ChangeRecord) -> None:
        """Replace a change's row (its state and body), e.g. started -> applied."""
        ...
    async def plans_in_state(self, state: PlanState) -> list[PlanRecord]: ...
    async def changes_of_plan(self, plan_id: str) -> list[ChangeRecord]: ...
    async def requesters(self, digest: str) -> set[str]:
        """Everyone who requested a plan with this digest (ran the check, or pressed Re-check)."""
        ...

    async def acquire_lock(self, host: str, holder: str, ttl: float) -> LockHeld | None:
        """Take the host's lock: None when taken, else who holds it."""
        ...
    async def release_lock(self, host: str, holder: str) -> None: ...
    async def get_lock(self, host: str) -> LockHeld | None:
        """Who holds the host's lock now (None: nobody, or it expired)."""
        ...
    async def take_over_lock(self, host: str, old_holder: str, holder: str, ttl: float) -> bool:
        """The lock held by `old_holder` (a dead process) passes to `holder`; True for
        exactly one caller (reconcile's claim on an interrupted apply)."""
        ...

    async def first_delivery(self, key: str, ttl: float) -> bool:
        """True the first time `key` (a Slack delivery: trigger id, action) is seen within
        `ttl` s, by any process sharing the store; False for a retry or a double submit."""
        ...
    async def start_running(self, key: str, who: str, holder: str, ttl: float) -> str | None:
        """Enter a check in the running-check table (`key`: channel and target): None when
        entered, else `who` of the check already running (for at most its `ttl`)."""
        ...
    async def end_running(self, key: str, holder: str) -> None: ...

    async def ping(self) -> None:
        """One round trip (readiness); raises when the store cannot be reached."""
        ...
    async def close(self) -> None: ...

    async def add_report(self, record: ReportRecord) -> None:
        """Keep a finished check (the newest REPORTS_PER_HOST per host are kept)."""
        ...
    async def get_report(self, report_id: str) -> ReportRecord | None: ...
    async def latest_reports(self) -> list[ReportRecord]:
        """The newest report of each host."""
        ...
    async def pending_plans(self, now: float) -> list[PlanRecord]:
        """Plans still pending and not expired, newest first."""
        ...
    async def recent_changes(self, limit: int = 10) -> list[ChangeRecord]:
        """Applied changes, newest first (rolled back ones included)."""
        ...

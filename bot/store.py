"""Where fixes remember things: audit log, pending plans, applied changes, host locks.

Callers depend on the `Store` protocol only; `SQLiteStore` is the default
(one file, no server). Every method is async; SQLite work runs in a thread
with a fresh connection per call, so several bot processes may share one
file. The atomic steps (claiming a plan, taking a host lock) are single
`BEGIN IMMEDIATE` transactions: exactly one caller wins.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import AliasChoices, BaseModel, Field

from bot.models import Fix, PortStatus, Report
from config.inventory import Host

T = TypeVar("T")

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
    """Persistence for fixes. Every method may raise sqlite3/driver errors only."""

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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, event TEXT NOT NULL,
    actor TEXT, host TEXT, plan_id TEXT, change_id TEXT, commands TEXT, output TEXT,
    result TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS audit_host ON audit(host, id);
CREATE TABLE IF NOT EXISTS plans (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, expires_at REAL NOT NULL,
    claimed_by TEXT, claimed_at REAL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, rolled_back_by TEXT, rolled_back_at REAL,
    body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS locks (
    host TEXT PRIMARY KEY, holder TEXT NOT NULL, since REAL NOT NULL, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, at REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reports_host ON reports(host, at);
"""
REPORTS_PER_HOST = 50


class _Reports:
    """SQLiteStore's reports, pending-plan and change listings (App Home, Details)."""

    async def add_report(self, record: ReportRecord) -> None:
        def go(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO reports (id, host, at, body) VALUES (?,?,?,?)",
                       (record.id, record.host, record.at, record.model_dump_json()))
            db.execute("DELETE FROM reports WHERE host = ? AND id NOT IN (SELECT id FROM reports"
                       " WHERE host = ? ORDER BY at DESC LIMIT ?)",
                       (record.host, record.host, REPORTS_PER_HOST))

        await self._do(go)

    async def get_report(self, report_id: str) -> ReportRecord | None:
        def go(db: sqlite3.Connection) -> ReportRecord | None:
            row = db.execute("SELECT body FROM reports WHERE id = ?", (report_id,)).fetchone()
            return ReportRecord.model_validate_json(row["body"]) if row else None

        return await self._do(go)

    async def latest_reports(self) -> list[ReportRecord]:
        def go(db: sqlite3.Connection) -> list[ReportRecord]:
            rows = db.execute("SELECT body FROM reports r WHERE at = (SELECT max(at) FROM reports"
                              " WHERE host = r.host) ORDER BY host").fetchall()
            return [ReportRecord.model_validate_json(r["body"]) for r in rows]

        return await self._do(go)

    async def pending_plans(self, now: float) -> list[PlanRecord]:
        def go(db: sqlite3.Connection) -> list[PlanRecord]:
            rows = db.execute("SELECT * FROM plans WHERE state = 'pending' AND expires_at > ?"
                              " ORDER BY expires_at DESC", (now,)).fetchall()
            return [PlanRecord.model_validate_json(r["body"]) for r in rows]

        return await self._do(go)

    async def recent_changes(self, limit: int = 10) -> list[ChangeRecord]:
        def go(db: sqlite3.Connection) -> list[ChangeRecord]:
            rows = db.execute("SELECT * FROM changes ORDER BY rowid DESC LIMIT ?", (int(limit),)).fetchall()
            return [ChangeRecord.model_validate_json(r["body"]).model_copy(update={
                "state": r["state"], "rolled_back_by": r["rolled_back_by"],
                "rolled_back_at": r["rolled_back_at"]}) for r in rows]

        return await self._do(go)


class SQLiteStore(_Reports):
    """The default Store: one SQLite file (WAL), safe across threads and processes."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    async def _do(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return out
            finally:
                db.close()

        return await asyncio.to_thread(run)

    # --- audit ---------------------------------------------------------------
    async def add_audit(self, entry: AuditEntry) -> int:
        e = entry

        def go(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO audit (ts, event, actor, host, plan_id, change_id, commands, output,"
                " result, detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (e.ts, e.event, e.actor, e.host, e.plan_id, e.change_id, json.dumps(e.commands),
                 e.output, e.result, json.dumps(e.detail, default=str)),
            )
            return int(cur.lastrowid)

        return await self._do(go)

    async def audit(self, host: str | None = None, limit: int = 50) -> list[AuditEntry]:
        def go(db: sqlite3.Connection) -> list[AuditEntry]:
            where, args = ("WHERE host = ?", [host]) if host else ("", [])
            rows = db.execute(
                f"SELECT * FROM audit {where} ORDER BY id DESC LIMIT ?", [*args, int(limit)]
            ).fetchall()
            return [_audit_row(r) for r in rows]

        return await self._do(go)

    # --- plans ---------------------------------------------------------------
    async def add_plan(self, plan: PlanRecord) -> None:
        await self._do(lambda db: db.execute(
            "INSERT INTO plans (id, state, expires_at, body) VALUES (?,?,?,?)",
            (plan.id, plan.state, plan.expires_at, plan.model_dump_json()),
        ))

    async def get_plan(self, plan_id: str) -> PlanRecord | None:
        def go(db: sqlite3.Connection) -> PlanRecord | None:
            row = db.execute("SELECT * FROM plans WHERE id = ?", (plan_id,)).fetchone()
            return None if row is None else _plan_row(row)

        return await self._do(go)

    async def plans_in_state(self, state: PlanState) -> list[PlanRecord]:
        return await self._do(lambda db: [_plan_row(r) for r in db.execute(
            "SELECT * FROM plans WHERE state = ? ORDER BY claimed_at", (state,)).fetchall()])

    async def requesters(self, digest: str) -> set[str]:
        return await self._do(lambda db: {r[0] for r in db.execute(
            "SELECT json_extract(body, '$.requested_by') FROM plans"
            " WHERE json_extract(body, '$.digest') = ?", (digest,)).fetchall()})

    async def claim_plan(self, plan_id: str, actor: str, now: float) -> bool:
        return await self._do(lambda db: db.execute(
            "UPDATE plans SET state = 'claimed', claimed_by = ?, claimed_at = ?"
            " WHERE id = ? AND state = 'pending' AND expires_at > ?",
            (actor, now, plan_id, now),
        ).rowcount == 1)

    async def set_plan_state(self, plan_id: str, state: PlanState) -> None:
        await self._do(lambda db: db.execute(
            "UPDATE plans SET state = ? WHERE id = ?", (state, plan_id)))

    async def unclaim_plan(self, plan_id: str) -> None:
        await self._do(lambda db: db.execute(
            "UPDATE plans SET state = 'pending', claimed_by = NULL, claimed_at = NULL"
            " WHERE id = ? AND state = 'claimed'", (plan_id,)))

    # --- changes -------------------------------------------------------------
    async def add_change(self, change: ChangeRecord) -> None:
        await self._do(lambda db: db.execute(
            "INSERT INTO changes (id, state, body) VALUES (?,?,?)",
            (change.id, change.state, change.model_dump_json()),
        ))

    async def get_change(self, change_id: str) -> ChangeRecord | None:
        def go(db: sqlite3.Connection) -> ChangeRecord | None:
            row = db.execute("SELECT * FROM changes WHERE id = ?", (change_id,)).fetchone()
            return None if row is None else _change_row(row)

        return await self._do(go)

    async def update_change(self, change: ChangeRecord) -> None:
        await self._do(lambda db: db.execute(
            "UPDATE changes SET state = ?, body = ? WHERE id = ?",
            (change.state, change.model_dump_json(), change.id)))

    async def changes_of_plan(self, plan_id: str) -> list[ChangeRecord]:
        return await self._do(lambda db: [_change_row(r) for r in db.execute(
            "SELECT * FROM changes WHERE json_extract(body, '$.plan_id') = ?", (plan_id,)).fetchall()])

    async def mark_change(self, change_id: str, state: ChangeState, actor: str | None) -> bool:
        return await self._do(lambda db: db.execute(
            "UPDATE changes SET state = ?, rolled_back_by = ?, rolled_back_at = ?"
            " WHERE id = ? AND state = 'applied'", (state, actor, time.time(), change_id),
        ).rowcount == 1)

    # --- host locks ----------------------------------------------------------
    async def acquire_lock(self, host: str, holder: str, ttl: float) -> LockHeld | None:
        def go(db: sqlite3.Connection) -> LockHeld | None:
            now = time.time()
            row = db.execute("SELECT * FROM locks WHERE host = ?", (host,)).fetchone()
            if row is not None and row["until"] > now:
                return LockHeld(host=host, holder=row["holder"], since=row["since"])
            db.execute(
                "INSERT OR REPLACE INTO locks (host, holder, since, until) VALUES (?,?,?,?)",
                (host, holder, now, now + ttl),
            )
            return None

        return await self._do(go)

    async def release_lock(self, host: str, holder: str) -> None:
        await self._do(lambda db: db.execute(
            "DELETE FROM locks WHERE host = ? AND holder = ?", (host, holder)))

    async def get_lock(self, host: str) -> LockHeld | None:
        def go(db: sqlite3.Connection) -> LockHeld | None:
            row = db.execute("SELECT * FROM locks WHERE host = ? AND until > ?",
                             (host, time.time())).fetchone()
            return None if row is None else LockHeld(host=host, holder=row["holder"], since=row["since"])

        return await self._do(go)


def _plan_row(row: sqlite3.Row) -> PlanRecord:
    plan = PlanRecord.model_validate_json(row["body"])
    return plan.model_copy(update={"state": row["state"], "claimed_by": row["claimed_by"],
                                   "claimed_at": row["claimed_at"]})


def _change_row(row: sqlite3.Row) -> ChangeRecord:
    change = ChangeRecord.model_validate_json(row["body"])
    return change.model_copy(update={"state": row["state"], "rolled_back_by": row["rolled_back_by"],
                                     "rolled_back_at": row["rolled_back_at"]})


def _audit_row(r: sqlite3.Row) -> AuditEntry:
    return AuditEntry(
        id=r["id"], ts=r["ts"], event=r["event"], actor=r["actor"] or "", host=r["host"] or "",
        plan_id=r["plan_id"], change_id=r["change_id"], commands=json.loads(r["commands"] or "[]"),
        output=r["output"] or "", result=r["result"] or "", detail=json.loads(r["detail"] or "{}"),
    )

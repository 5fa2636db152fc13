"""The Store, written once in SQL that SQLite and PostgreSQL both run.

Each method is one transaction of its backend (bot/store/backends.py). The steps
that must happen exactly once are single conditional statements, never a read
and then a write: a claim is `UPDATE … WHERE state = 'pending' RETURNING`, a lock
or a running check an upsert that replaces only an expired row (`ON CONFLICT …
DO UPDATE … WHERE until <= now RETURNING`), a delivery key an upsert likewise.
On PostgreSQL a racing statement waits for the row's first writer and re-reads
it, so exactly one wins; on SQLite `BEGIN IMMEDIATE` serialises them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from bot.store.backends import Backend, Tx
from bot.store.records import (
    REPORTS_PER_HOST,
    AuditEntry,
    ChangeRecord,
    ChangeState,
    LockHeld,
    PlanRecord,
    PlanState,
    ReportRecord,
)

Row = Mapping[str, Any]
PRUNE_EVERY = 200  # first_delivery calls between prunes of expired keys


class SQLStore:
    """The Store protocol (bot/store/records.py) over a Backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self._json = "json_extract(body, '$.{}')" if backend.dialect == "sqlite" \
            else "(body::jsonb ->> '{}')"
        self._change_order = "rowid" if backend.dialect == "sqlite" else "seq"
        self._deliveries = 0

    async def _one(self, sql: str, *args: Any) -> Row | None:
        async with self.backend.tx() as tx:
            return (await tx.run(sql, args)).one()

    async def _all(self, sql: str, *args: Any) -> list[Row]:
        async with self.backend.tx() as tx:
            return (await tx.run(sql, args)).rows

    async def _count(self, sql: str, *args: Any) -> int:
        async with self.backend.tx() as tx:
            return (await tx.run(sql, args)).rowcount

    async def ping(self) -> None:
        await self._one("SELECT 1 AS one")

    async def close(self) -> None:
        await self.backend.close()

    # --- audit ---------------------------------------------------------------
    async def add_audit(self, entry: AuditEntry) -> int:
        e = entry
        row = await self._one(
            "INSERT INTO audit (ts, event, actor, host, plan_id, change_id, commands, output,"
            " result, detail) VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING id",
            e.ts, e.event, e.actor, e.host, e.plan_id, e.change_id, json.dumps(e.commands),
            e.output, e.result, json.dumps(e.detail, default=str))
        return int(row["id"])

    async def audit(self, host: str | None = None, limit: int = 50) -> list[AuditEntry]:
        where, args = ("WHERE host = ?", [host]) if host else ("", [])
        rows = await self._all(f"SELECT * FROM audit {where} ORDER BY id DESC LIMIT ?",
                               *args, int(limit))
        return [_audit_row(r) for r in rows]

    # --- plans ---------------------------------------------------------------
    async def add_plan(self, plan: PlanRecord) -> None:
        await self._count("INSERT INTO plans (id, state, expires_at, body) VALUES (?,?,?,?)",
                          plan.id, plan.state, plan.expires_at, plan.model_dump_json())

    async def get_plan(self, plan_id: str) -> PlanRecord | None:
        row = await self._one("SELECT * FROM plans WHERE id = ?", plan_id)
        return None if row is None else _plan_row(row)

    async def plans_in_state(self, state: PlanState) -> list[PlanRecord]:
        rows = await self._all("SELECT * FROM plans WHERE state = ? ORDER BY claimed_at", state)
        return [_plan_row(r) for r in rows]

    async def requesters(self, digest: str) -> set[str]:
        rows = await self._all(f"SELECT {self._json.format('requested_by')} AS who FROM plans"
                               f" WHERE {self._json.format('digest')} = ?", digest)
        return {r["who"] for r in rows}

    async def pending_plans(self, now: float) -> list[PlanRecord]:
        rows = await self._all("SELECT * FROM plans WHERE state = 'pending' AND expires_at > ?"
                               " ORDER BY expires_at DESC", now)
        return [_plan_row(r) for r in rows]

    async def claim_plan(self, plan_id: str, actor: str, now: float) -> bool:
        row = await self._one(
            "UPDATE plans SET state = 'claimed', claimed_by = ?, claimed_at = ?"
            " WHERE id = ? AND state = 'pending' AND expires_at > ? RETURNING id",
            actor, now, plan_id, now)
        return row is not None

    async def set_plan_state(self, plan_id: str, state: PlanState) -> None:
        await self._count("UPDATE plans SET state = ? WHERE id = ?", state, plan_id)

    async def unclaim_plan(self, plan_id: str) -> None:
        await self._count("UPDATE plans SET state = 'pending', claimed_by = NULL,"
                          " claimed_at = NULL WHERE id = ? AND state = 'claimed'", plan_id)

    # --- changes -------------------------------------------------------------
    async def add_change(self, change: ChangeRecord) -> None:
        await self._count("INSERT INTO changes (id, state, body) VALUES (?,?,?)",
                          change.id, change.state, change.model_dump_json())

    async def get_change(self, change_id: str) -> ChangeRecord | None:
        row = await self._one("SELECT * FROM changes WHERE id = ?", change_id)
        return None if row is None else _change_row(row)

    async def update_change(self, change: ChangeRecord) -> None:
        await self._count("UPDATE changes SET state = ?, body = ? WHERE id = ?",
                          change.state, change.model_dump_json(), change.id)

    async def changes_of_plan(self, plan_id: str) -> list[ChangeRecord]:
        rows = await self._all(f"SELECT * FROM changes WHERE {self._json.format('plan_id')} = ?"
                               f" ORDER BY {self._change_order}", plan_id)
        return [_change_row(r) for r in rows]

    async def mark_change(self, change_id: str, state: ChangeState, actor: str | None) -> bool:
        row = await self._one(
            "UPDATE changes SET state = ?, rolled_back_by = ?, rolled_back_at = ?"
            " WHERE id = ? AND state = 'applied' RETURNING id", state, actor, time.time(), change_id)
        return row is not None

    async def recent_changes(self, limit: int = 10) -> list[ChangeRecord]:
        rows = await self._all(f"SELECT * FROM changes ORDER BY {self._change_order} DESC LIMIT ?",
                               int(limit))
        return [_change_row(r) for r in rows]

    # --- host locks ----------------------------------------------------------
    async def acquire_lock(self, host: str, holder: str, ttl: float) -> LockHeld | None:
        async with self.backend.tx() as tx:
            row = await _lease(tx, "locks", "host", host, holder, ttl,
                               "SELECT holder, since FROM locks WHERE host = ?")
        return None if row is None else LockHeld(host=host, holder=row["holder"], since=row["since"])

    async def release_lock(self, host: str, holder: str) -> None:
        await self._count("DELETE FROM locks WHERE host = ? AND holder = ?", host, holder)

    async def get_lock(self, host: str) -> LockHeld | None:
        row = await self._one("SELECT holder, since FROM locks WHERE host = ? AND until > ?",
                              host, time.time())
        return None if row is None else LockHeld(host=host, holder=row["holder"], since=row["since"])

    async def take_over_lock(self, host: str, old_holder: str, holder: str, ttl: float) -> bool:
        now = time.time()
        row = await self._one("UPDATE locks SET holder = ?, since = ?, until = ?"
                              " WHERE host = ? AND holder = ? RETURNING host",
                              holder, now, now + ttl, host, old_holder)
        return row is not None

    # --- what replicas share: deliveries seen, checks running ----------------------
    async def first_delivery(self, key: str, ttl: float) -> bool:
        now = time.time()
        async with self.backend.tx() as tx:
            self._deliveries += 1
            if self._deliveries % PRUNE_EVERY == 1:
                await tx.run("DELETE FROM deliveries WHERE at <= ?", (now - ttl,))
            row = (await tx.run(
                "INSERT INTO deliveries (key, at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
                " SET at = excluded.at WHERE deliveries.at <= ? RETURNING key",
                (key, now, now - ttl))).one()
        return row is not None

    async def start_running(self, key: str, who: str, holder: str, ttl: float) -> str | None:
        async with self.backend.tx() as tx:
            row = await _lease(tx, "running_checks", "key", key, holder, ttl,
                               "SELECT who FROM running_checks WHERE key = ?", who=who)
        return None if row is None else row["who"]

    async def end_running(self, key: str, holder: str) -> None:
        await self._count("DELETE FROM running_checks WHERE key = ? AND holder = ?", key, holder)

    # --- reports -------------------------------------------------------------
    async def add_report(self, record: ReportRecord) -> None:
        async with self.backend.tx() as tx:
            await tx.run("INSERT INTO reports (id, host, at, body) VALUES (?,?,?,?)"
                         " ON CONFLICT (id) DO UPDATE SET host = excluded.host, at = excluded.at,"
                         " body = excluded.body",
                         (record.id, record.host, record.at, record.model_dump_json()))
            await tx.run("DELETE FROM reports WHERE host = ? AND id NOT IN (SELECT id FROM reports"
                         " WHERE host = ? ORDER BY at DESC LIMIT ?)",
                         (record.host, record.host, REPORTS_PER_HOST))

    async def get_report(self, report_id: str) -> ReportRecord | None:
        row = await self._one("SELECT body FROM reports WHERE id = ?", report_id)
        return ReportRecord.model_validate_json(row["body"]) if row else None

    async def latest_reports(self) -> list[ReportRecord]:
        rows = await self._all("SELECT body FROM reports r WHERE at = (SELECT max(at) FROM reports"
                               " WHERE host = r.host) ORDER BY host")
        return [ReportRecord.model_validate_json(r["body"]) for r in rows]


async def _lease(tx: Tx, table: str, key_col: str, key: str, holder: str, ttl: float,
                 current: str, **extra: str) -> Row | None:
    """Take `table`'s row for `key` unless an unexpired one exists: None when taken, else
    that row (read by `current`). One upsert: it replaces only an expired row."""
    now = time.time()
    cols = [key_col, *extra, "holder", "since", "until"]
    sets = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
    for _ in range(3):  # the holder may release between the two statements: try again
        taken = (await tx.run(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            f" ON CONFLICT ({key_col}) DO UPDATE SET {sets} WHERE {table}.until <= ?"
            f" RETURNING {key_col}", (key, *extra.values(), holder, now, now + ttl, now))).one()
        if taken is not None:
            return None
        row = (await tx.run(current, (key,))).one()
        if row is not None:
            return row
    return {"holder": "(changing hands)", "since": now, "who": "someone"}


def _plan_row(row: Row) -> PlanRecord:
    plan = PlanRecord.model_validate_json(row["body"])
    return plan.model_copy(update={"state": row["state"], "claimed_by": row["claimed_by"],
                                   "claimed_at": row["claimed_at"]})


def _change_row(row: Row) -> ChangeRecord:
    change = ChangeRecord.model_validate_json(row["body"])
    return change.model_copy(update={"state": row["state"], "rolled_back_by": row["rolled_back_by"],
                                     "rolled_back_at": row["rolled_back_at"]})


def _audit_row(r: Row) -> AuditEntry:
    return AuditEntry(
        id=r["id"], ts=r["ts"], event=r["event"], actor=r["actor"] or "", host=r["host"] or "",
        plan_id=r["plan_id"], change_id=r["change_id"], commands=json.loads(r["commands"] or "[]"),
        output=r["output"] or "", result=r["result"] or "", detail=json.loads(r["detail"] or "{}"),
    )

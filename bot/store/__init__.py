"""Where mailcheck remembers things: audit log, plans, changes, host locks, reports, and
what replicas of `serve` share (deliveries seen, checks running).

Callers depend on the `Store` protocol only. `open_store(url)` picks the backend
from MAILCHECK_DB_URL: `sqlite:///FILE` (the default, one file, no server) or
`postgresql://…` (several `serve` processes on one database). Schema versions
are migrated at start on both (bot/store/schema.py).
"""

from __future__ import annotations

from pathlib import Path

from bot.store.backends import PostgresBackend, SQLiteBackend, backend_for
from bot.store.records import (
    REPORTS_PER_HOST,
    AuditEntry,
    ChangeRecord,
    ChangeState,
    LockHeld,
    PlanRecord,
    PlanState,
    ReportRecord,
    Store,
)
from bot.store.sql import SQLStore


class SQLiteStore(SQLStore):
    """The default Store: one SQLite file (WAL), safe across threads and processes."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(SQLiteBackend(path))
        self.path = str(path)


class PostgresStore(SQLStore):
    """The Store on PostgreSQL (psycopg 3, async pool): for replicas of `serve`."""

    def __init__(self, url: str) -> None:
        super().__init__(PostgresBackend(url))


def open_store(url: str) -> SQLStore:
    """The Store MAILCHECK_DB_URL names. Raises ConfigError for a URL it cannot use."""
    return SQLStore(backend_for(url))


__all__ = [
    "REPORTS_PER_HOST", "AuditEntry", "ChangeRecord", "ChangeState", "LockHeld", "PlanRecord",
    "PlanState", "PostgresStore", "ReportRecord", "SQLiteStore", "SQLStore", "Store",
    "open_store",
]

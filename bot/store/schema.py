"""Versioned schema migrations, one list per dialect, run at start by bot/store/sql.py.

A migration is a version number and its statements. `schema_migrations` records
the versions applied; at start every missing version runs, in order, inside the
transaction that records it (on PostgreSQL under an advisory lock, so replicas
starting together migrate once). Version 1 is the schema SQLite databases had
before versions were recorded, written with IF NOT EXISTS so such a file is
adopted as it is. Never edit a released migration: add the next version.
"""

from __future__ import annotations

from typing import Literal

Dialect = Literal["sqlite", "postgresql"]
MIGRATE_LOCK = 0x6D61696C63  # pg_advisory_xact_lock key: "mailc"

_TABLES_V1 = {
    "sqlite": """
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
CREATE INDEX IF NOT EXISTS reports_host ON reports(host, at)
""",
    "postgresql": """
CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, event TEXT NOT NULL,
    actor TEXT, host TEXT, plan_id TEXT, change_id TEXT, commands TEXT, output TEXT,
    result TEXT, detail TEXT);
CREATE INDEX audit_host ON audit(host, id);
CREATE TABLE plans (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
    claimed_by TEXT, claimed_at DOUBLE PRECISION, body TEXT NOT NULL);
CREATE TABLE changes (
    seq BIGSERIAL UNIQUE, id TEXT PRIMARY KEY, state TEXT NOT NULL, rolled_back_by TEXT,
    rolled_back_at DOUBLE PRECISION, body TEXT NOT NULL);
CREATE TABLE locks (
    host TEXT PRIMARY KEY, holder TEXT NOT NULL, since DOUBLE PRECISION NOT NULL,
    until DOUBLE PRECISION NOT NULL);
CREATE TABLE reports (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL);
CREATE INDEX reports_host ON reports(host, at)
""",
}

# 2: what serve's replicas share: delivery keys seen (retry/dedup memory) and the
# running-check table
_SHARED_V2 = """
CREATE TABLE deliveries (key TEXT PRIMARY KEY, at {real} NOT NULL);
CREATE INDEX deliveries_at ON deliveries(at);
CREATE TABLE running_checks (
    key TEXT PRIMARY KEY, who TEXT NOT NULL, holder TEXT NOT NULL, since {real} NOT NULL,
    until {real} NOT NULL)
"""
_REAL = {"sqlite": "REAL", "postgresql": "DOUBLE PRECISION"}


def migrations(dialect: Dialect) -> list[tuple[int, list[str]]]:
    """[(version, [statement, ...]), ...] in order."""
    return [(1, _split(_TABLES_V1[dialect])),
            (2, _split(_SHARED_V2.format(real=_REAL[dialect])))]


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]

"""Where bot/store/sql.py's transactions run: a SQLite file or a PostgreSQL server.

A backend gives `tx()`, an async context manager yielding a `Tx` whose `run(sql,
args)` returns the rows as mappings and the row count. SQL is written once with
`?` placeholders; the PostgreSQL backend turns them into psycopg's `%s`.

- SQLite: one connection per transaction, opened with `BEGIN IMMEDIATE` (the
  write lock is taken first, so a transaction's reads and writes are one atomic
  step across threads and processes); statements run in a worker thread.
- PostgreSQL: psycopg 3's async connection pool; each `tx()` is one transaction
  at READ COMMITTED, where a conditional UPDATE / upsert that races another
  waits for it and re-reads the row: exactly one of them matches.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bot.errors import ConfigError
from bot.store.schema import MIGRATE_LOCK, Dialect, migrations
from config.settings import redact_url


@dataclass(frozen=True)
class Result:
    rows: list[Mapping[str, Any]]
    rowcount: int

    def one(self) -> Mapping[str, Any] | None:
        return self.rows[0] if self.rows else None


class Tx(Protocol):
    async def run(self, sql: str, args: Sequence[Any] = ()) -> Result: ...


class Backend(Protocol):
    dialect: Dialect
    name: str  # for logs and lock holders: the file, or the URL without its password

    def tx(self) -> Any:  # async context manager -> Tx
        ...
    async def close(self) -> None: ...


class SQLiteBackend:
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.name = str(Path(self.path).absolute())
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
        db.close()
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        return db

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[Tx]:
        async with _file_lock(self.name):  # one transaction per file per process at a time
            db = await asyncio.to_thread(self._begin)
            try:
                yield _SQLiteTx(db)
            except BaseException:
                await asyncio.shield(asyncio.to_thread(_end, db, "ROLLBACK"))
                raise
            await asyncio.shield(asyncio.to_thread(_end, db, "COMMIT"))

    def _begin(self) -> sqlite3.Connection:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self) -> None:
        """Synchronously, when the store is built (as before versions were recorded)."""
        db = self._begin()
        try:
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                       "version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
            done = {r[0] for r in db.execute("SELECT version FROM schema_migrations")}
            for version, statements in migrations("sqlite"):
                if version not in done:
                    for statement in statements:
                        db.execute(statement)
                    db.execute("INSERT INTO schema_migrations VALUES (?, unixepoch())", (version,))
        except BaseException:
            _end(db, "ROLLBACK")
            raise
        _end(db, "COMMIT")

    async def close(self) -> None:
        return None


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = \
    weakref.WeakKeyDictionary()


def _file_lock(name: str) -> asyncio.Lock:
    """This event loop's lock of one SQLite file. Without it, transactions waiting in BEGIN
    IMMEDIATE could fill the worker threads that the transaction holding the file needs
    for its next statement (a deadlock until the 30 s busy timeout)."""
    locks = _LOCKS.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(name, asyncio.Lock())


def _end(db: sqlite3.Connection, how: str) -> None:
    try:
        db.execute(how)
    finally:
        db.close()


class _SQLiteTx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    async def run(self, sql: str, args: Sequence[Any] = ()) -> Result:
        return await asyncio.to_thread(_run_sqlite, self.db, sql, args)


def _run_sqlite(db: sqlite3.Connection, sql: str, args: Sequence[Any]) -> Result:
    cur = db.execute(sql, tuple(args))
    rows = cur.fetchall() if cur.description else []
    return Result(rows, cur.rowcount)


class PostgresBackend:
    """psycopg 3 (async) with a connection pool; migrations on the first transaction."""

    dialect: Dialect = "postgresql"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        try:
            from psycopg_pool import AsyncConnectionPool
        except ImportError as e:  # pragma: no cover - a dependency of the package
            raise ConfigError("MAILCHECK_DB_URL names PostgreSQL, but psycopg is not installed "
                              "(pip install 'psycopg[binary,pool]')") from e
        self.name, self._url = redact_url(url), url
        self._pool = AsyncConnectionPool(url, min_size=min_size, max_size=max_size, open=False,
                                         kwargs={"autocommit": False}, timeout=30)
        self._ready: asyncio.Lock | None = None
        self._migrated = False

    async def _open(self) -> None:
        if self._migrated:
            return
        self._ready = self._ready or asyncio.Lock()
        async with self._ready:
            if self._migrated:
                return
            import psycopg

            try:  # one connection first: its error says why (the pool's would only time out)
                conn = await psycopg.AsyncConnection.connect(self._url, connect_timeout=10)
            except psycopg.Error as e:
                raise ConfigError(f"the store {self.name} cannot be reached: {e}") from e
            async with conn, conn.transaction():
                await _migrate_pg(conn)
            await self._pool.open(wait=True, timeout=30)
            self._migrated = True

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[Tx]:
        await self._open()
        from psycopg.rows import dict_row

        async with self._pool.connection() as conn, conn.transaction():
            yield _PgTx(conn.cursor(row_factory=dict_row))

    async def close(self) -> None:
        if not self._pool.closed:
            await self._pool.close()


_PLACEHOLDER = re.compile(r"\?")


class _PgTx:
    def __init__(self, cur: Any) -> None:
        self.cur = cur

    async def run(self, sql: str, args: Sequence[Any] = ()) -> Result:
        await self.cur.execute(_PLACEHOLDER.sub("%s", sql), tuple(args))
        rows = await self.cur.fetchall() if self.cur.description else []
        return Result(rows, self.cur.rowcount)


async def _migrate_pg(conn: Any) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                       "version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
    done = {r[0] for r in await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()}
    for version, statements in migrations("postgresql"):
        if version in done:
            continue
        for statement in statements:
            await conn.execute(statement)
        await conn.execute("INSERT INTO schema_migrations VALUES (%s, extract(epoch from now()))",
                           (version,))


def backend_for(url: str) -> SQLiteBackend | PostgresBackend:
    """`sqlite:///relative.db`, `sqlite:////absolute.db` or `postgresql://…` (also
    `postgres://`). Raises ConfigError for anything else."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"MAILCHECK_DB_URL {url!r}: a SQLite URL is sqlite:///FILE")
        return SQLiteBackend(path)
    if scheme in ("postgresql", "postgres"):
        return PostgresBackend(url)
    raise ConfigError(f"MAILCHECK_DB_URL {redact_url(url)!r}: use sqlite:///FILE or postgresql://…")

"""SQLite backend: one aiosqlite connection in WAL mode, a file, one scheduler.

Transactions are ``BEGIN IMMEDIATE`` … ``COMMIT`` on the single connection, kept
together by an asyncio lock; reads take the lock without a transaction (this
process is the only writer). With ``exclusive`` the store holds an exclusive
``flock`` on ``<db>.lock`` for as long as it is open, so that a second scheduler
cannot share the file: SQLite has no row locks to split runs between schedulers.

The schema is :data:`MIGRATIONS`, tracked with ``PRAGMA user_version``; all pending
migrations apply in one transaction (SQLite DDL is transactional), the version is
re-read inside it, so two processes opening at once migrate once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from datadog_platform.scheduler.store.base import (
    Conn,
    Migration,
    Store,
    StoreError,
    StoreLockedError,
    index_existing_pipelines,
)

T = TypeVar("T")

_V1 = """
    CREATE TABLE pipelines (
        name            TEXT PRIMARY KEY,
        latest_version  INTEGER NOT NULL,
        create_time     INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE pipeline_versions (
        name         TEXT NOT NULL REFERENCES pipelines (name),
        version      INTEGER NOT NULL,
        spec         BLOB NOT NULL,
        create_time  INTEGER NOT NULL,
        PRIMARY KEY (name, version)
    ) STRICT;
    CREATE TABLE runs (
        run_id            TEXT PRIMARY KEY,
        pipeline          TEXT NOT NULL,
        pipeline_version  INTEGER NOT NULL,
        state             TEXT NOT NULL,
        create_time       INTEGER NOT NULL,
        start_time        INTEGER,
        end_time          INTEGER,
        error_message     TEXT NOT NULL DEFAULT '',
        request_id        TEXT NOT NULL DEFAULT '',
        FOREIGN KEY (pipeline, pipeline_version) REFERENCES pipeline_versions (name, version)
    ) STRICT;
    CREATE INDEX runs_unfinished ON runs (state) WHERE state IN ('QUEUED', 'RUNNING');
    CREATE TABLE stages (
        run_id         TEXT NOT NULL REFERENCES runs (run_id),
        position       INTEGER NOT NULL,
        stage_id       TEXT NOT NULL,
        steps          TEXT NOT NULL,
        state          TEXT NOT NULL,
        attempt        INTEGER NOT NULL DEFAULT 0,
        start_time     INTEGER,
        end_time       INTEGER,
        metrics        TEXT NOT NULL DEFAULT '{}',
        outputs        TEXT NOT NULL DEFAULT '[]',
        error_reason   TEXT NOT NULL DEFAULT '',
        error_message  TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (run_id, stage_id)
    ) STRICT;
    CREATE TABLE idempotency_records (
        method       TEXT NOT NULL,
        request_id   TEXT NOT NULL,
        fingerprint  TEXT NOT NULL,
        response     TEXT NOT NULL,
        create_time  INTEGER NOT NULL,
        PRIMARY KEY (method, request_id)
    ) STRICT;
    """

# Adds what issue 4 needs: schedules, pause, tag/label filters, run params and
# intervals, triggers, backfills, leases (owner, lease_expires, generation),
# cancel requests, the stage DAG and retry state, stage logs and watermarks.
_V2 = """
    ALTER TABLE pipelines ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE pipelines ADD COLUMN schedule_create_time INTEGER;
    ALTER TABLE pipelines ADD COLUMN last_fire_time INTEGER;
    CREATE TABLE pipeline_tags (
        name  TEXT NOT NULL REFERENCES pipelines (name),
        tag   TEXT NOT NULL,
        PRIMARY KEY (name, tag)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX pipeline_tags_by_tag ON pipeline_tags (tag, name);
    CREATE TABLE pipeline_labels (
        name         TEXT NOT NULL REFERENCES pipelines (name),
        label_key    TEXT NOT NULL,
        label_value  TEXT NOT NULL,
        PRIMARY KEY (name, label_key)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX pipeline_labels_by_label ON pipeline_labels (label_key, label_value, name);

    ALTER TABLE runs ADD COLUMN params TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE runs ADD COLUMN run_trigger TEXT NOT NULL DEFAULT 'MANUAL';
    ALTER TABLE runs ADD COLUMN logical_date INTEGER;
    ALTER TABLE runs ADD COLUMN data_interval_start INTEGER;
    ALTER TABLE runs ADD COLUMN data_interval_end INTEGER;
    ALTER TABLE runs ADD COLUMN backfill_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN owner TEXT;
    ALTER TABLE runs ADD COLUMN lease_expires INTEGER;
    ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    -- A manual run's interval is its creation instant.
    UPDATE runs SET logical_date = create_time, data_interval_start = create_time,
        data_interval_end = create_time;
    CREATE INDEX runs_by_pipeline ON runs (pipeline, run_id);
    CREATE INDEX runs_by_pipeline_state ON runs (pipeline, state);
    CREATE INDEX runs_by_logical_date ON runs (pipeline, logical_date);
    CREATE INDEX runs_by_backfill ON runs (backfill_id);

    ALTER TABLE stages ADD COLUMN upstream TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE stages ADD COLUMN next_attempt_time INTEGER;
    ALTER TABLE stages ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;

    CREATE TABLE stage_logs (
        run_id    TEXT NOT NULL,
        stage_id  TEXT NOT NULL,
        attempt   INTEGER NOT NULL,
        seq       INTEGER NOT NULL,
        log_time  INTEGER NOT NULL,
        level     TEXT NOT NULL,
        step      TEXT NOT NULL,
        message   TEXT NOT NULL,
        PRIMARY KEY (run_id, stage_id, attempt, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE watermarks (
        pipeline  TEXT NOT NULL,
        step      TEXT NOT NULL,
        value     TEXT NOT NULL,
        PRIMARY KEY (pipeline, step)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE backfills (
        backfill_id      TEXT PRIMARY KEY,
        pipeline         TEXT NOT NULL,
        start_date       INTEGER NOT NULL,
        end_date         INTEGER NOT NULL,
        max_active_runs  INTEGER NOT NULL,
        only_failed      INTEGER NOT NULL,
        state            TEXT NOT NULL,
        create_time      INTEGER NOT NULL,
        end_time         INTEGER,
        logical_dates    TEXT NOT NULL,
        params           TEXT NOT NULL,
        request_id       TEXT NOT NULL
    ) STRICT;
    CREATE INDEX backfills_by_pipeline ON backfills (pipeline, backfill_id);
    """

# Issue 5: the data-quality check results of a stage's current or last attempt.
_V3 = """
    ALTER TABLE stages ADD COLUMN checks TEXT NOT NULL DEFAULT '[]';
    """

#: Schema migrations, applied in order; migration N (1-based) sets user_version N.
#: Never edit a released entry: append a new one.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(_V1),
    Migration(_V2, post=index_existing_pipelines),
    Migration(_V3),
)


class _SqliteConn:
    """:class:`Conn` over an aiosqlite connection (whose placeholders are ``?``)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._db.execute(sql, args) as cursor:
            return cursor.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self._db.executemany(sql, rows):
            pass

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return list(await self._db.execute_fetchall(sql, args))


class SqliteStore(Store):
    """The store in a SQLite file. Open with :meth:`connect` (or ``open_store``)."""

    backend = "sqlite"
    single_scheduler = True
    MIGRATIONS = MIGRATIONS

    def __init__(self, db: aiosqlite.Connection, path: Path, lock_fd: int | None) -> None:
        self._db = db
        self._conn = _SqliteConn(db)
        self._lock = asyncio.Lock()
        self._lock_fd = lock_fd
        self.path = path

    @classmethod
    async def connect(
        cls, path: Path, *, exclusive: bool = True, migrate: bool = True
    ) -> SqliteStore:
        """Open (creating it and its parent directories if needed) and migrate.

        StoreLockedError if ``exclusive`` and another process has it open exclusively.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock_exclusively(path) if exclusive else None
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) so that the
            # sqlite3 module never opens one behind our back.
            db = await aiosqlite.connect(path, isolation_level=None)
        except BaseException:
            _unlock(lock_fd)
            raise
        store = cls(db, path, lock_fd)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute("PRAGMA busy_timeout = 5000")
            if migrate:
                await store.upgrade()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        async with self._lock:
            try:
                await self._db.close()
            finally:
                _unlock(self._lock_fd)
                self._lock_fd = None

    async def schema_version(self) -> int:
        async with self._lock:
            return await self._user_version()

    async def _user_version(self) -> int:
        rows = await self._db.execute_fetchall("PRAGMA user_version")
        return int(next(iter(rows))[0])

    async def upgrade(self) -> list[int]:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                current = await self._user_version()
                if current > len(MIGRATIONS):
                    raise StoreError(
                        f"the SQLite store {self.path} has schema version {current}, newer than"
                        f" this scheduler knows ({len(MIGRATIONS)}): upgrade the scheduler"
                    )
                applied = list(range(current + 1, len(MIGRATIONS) + 1))
                for number in applied:
                    migration = MIGRATIONS[number - 1]
                    for statement in _statements(migration.sql):
                        await self._db.execute(statement)
                    if migration.post is not None:
                        await migration.post(self._conn)
                if applied:
                    await self._db.execute(f"PRAGMA user_version = {applied[-1]}")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")
            return applied

    def _in_list(self, values: Sequence[str]) -> tuple[str, Any]:
        # One JSON parameter instead of one placeholder per value: no variable limit
        # and one statement text whatever the number of values.
        return "IN (SELECT value FROM json_each(?))", json.dumps(list(values))

    async def _transaction(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                result = await body(self._conn)
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")
            return result

    async def _read(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        async with self._lock:
            return await body(self._conn)


def _statements(script: str) -> list[str]:
    """The SQL statements of ``script``, split where SQLite sees a complete one.

    (``executescript`` would commit the migration's transaction before running.)
    """
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return statements


def _lock_exclusively(path: Path) -> int:
    """Take an exclusive flock on ``<path>.lock`` (held until the fd closes)."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip()
        os.close(fd)
        raise StoreLockedError(
            f"the SQLite store {path} is in use by another scheduler"
            f"{f' (pid {holder})' if holder else ''}: a SQLite store serves one scheduler"
            f" at a time (lock {lock_path}); stop it, or use PostgreSQL for several"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    # The holder's pid, for the message above (informative only: the flock decides).
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)

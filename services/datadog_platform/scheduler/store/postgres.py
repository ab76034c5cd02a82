"""PostgreSQL backend: an asyncpg pool; several schedulers may share one database.

Write transactions run at READ COMMITTED on a pooled connection; row locks do the
coordination (``FOR UPDATE SKIP LOCKED`` for lease claims, ``FOR UPDATE`` on the
runs an ``apply`` fences, the pipeline row for ``try_start_run``). Reads that take
several statements run in a read-only REPEATABLE READ snapshot. Deadlocks and
serialisation failures make the write run again.

Queries are the shared ones (``?`` placeholders), rewritten once each to ``$n``.
The schema is :data:`MIGRATIONS`, tracked in ``schema_migrations``; pending ones
apply in one transaction under ``pg_advisory_xact_lock``, so concurrent schedulers
starting on a new database migrate it once. Column types mirror the SQLite schema
(times are BIGINT microseconds, JSON is TEXT) so that both share one row codec.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from datadog_platform.scheduler.store.base import Conn, Migration, Store, StoreError

T = TypeVar("T")

#: Key of the advisory lock held while migrating (any constant unique to this schema).
_MIGRATION_LOCK = 0x6461746164_6F67  # "datadog"

_V1 = """
CREATE TABLE pipelines (
    name                  TEXT PRIMARY KEY,
    latest_version        INTEGER NOT NULL,
    create_time           BIGINT NOT NULL,
    paused                BOOLEAN NOT NULL DEFAULT FALSE,
    schedule_create_time  BIGINT,
    last_fire_time        BIGINT
);
CREATE TABLE pipeline_versions (
    name         TEXT NOT NULL REFERENCES pipelines (name),
    version      INTEGER NOT NULL,
    spec         BYTEA NOT NULL,
    create_time  BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE pipeline_tags (
    name  TEXT NOT NULL REFERENCES pipelines (name),
    tag   TEXT NOT NULL,
    PRIMARY KEY (name, tag)
);
CREATE INDEX pipeline_tags_by_tag ON pipeline_tags (tag, name);
CREATE TABLE pipeline_labels (
    name         TEXT NOT NULL REFERENCES pipelines (name),
    label_key    TEXT NOT NULL,
    label_value  TEXT NOT NULL,
    PRIMARY KEY (name, label_key)
);
CREATE INDEX pipeline_labels_by_label ON pipeline_labels (label_key, label_value, name);
CREATE TABLE runs (
    run_id               TEXT PRIMARY KEY,
    pipeline             TEXT NOT NULL,
    pipeline_version     INTEGER NOT NULL,
    state                TEXT NOT NULL,
    create_time          BIGINT NOT NULL,
    start_time           BIGINT,
    end_time             BIGINT,
    error_message        TEXT NOT NULL DEFAULT '',
    request_id           TEXT NOT NULL DEFAULT '',
    params               TEXT NOT NULL DEFAULT '{}',
    run_trigger          TEXT NOT NULL DEFAULT 'MANUAL',
    logical_date         BIGINT,
    data_interval_start  BIGINT,
    data_interval_end    BIGINT,
    backfill_id          TEXT NOT NULL DEFAULT '',
    generation           INTEGER NOT NULL DEFAULT 0,
    owner                TEXT,
    lease_expires        BIGINT,
    cancel_requested     BOOLEAN NOT NULL DEFAULT FALSE,
    FOREIGN KEY (pipeline, pipeline_version) REFERENCES pipeline_versions (name, version)
);
-- Claims scan the unfinished runs oldest first.
CREATE INDEX runs_unfinished ON runs (create_time, run_id) WHERE state IN ('QUEUED', 'RUNNING');
CREATE INDEX runs_by_pipeline ON runs (pipeline, run_id);
CREATE INDEX runs_by_pipeline_state ON runs (pipeline, state);
CREATE INDEX runs_by_logical_date ON runs (pipeline, logical_date);
CREATE INDEX runs_by_backfill ON runs (backfill_id);
CREATE TABLE stages (
    run_id             TEXT NOT NULL REFERENCES runs (run_id),
    position           INTEGER NOT NULL,
    stage_id           TEXT NOT NULL,
    steps              TEXT NOT NULL,
    state              TEXT NOT NULL,
    attempt            INTEGER NOT NULL DEFAULT 0,
    start_time         BIGINT,
    end_time           BIGINT,
    metrics            TEXT NOT NULL DEFAULT '{}',
    outputs            TEXT NOT NULL DEFAULT '[]',
    error_reason       TEXT NOT NULL DEFAULT '',
    error_message      TEXT NOT NULL DEFAULT '',
    upstream           TEXT NOT NULL DEFAULT '[]',
    next_attempt_time  BIGINT,
    attempt_base       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, stage_id)
);
CREATE TABLE stage_logs (
    run_id    TEXT NOT NULL,
    stage_id  TEXT NOT NULL,
    attempt   INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    log_time  BIGINT NOT NULL,
    level     TEXT NOT NULL,
    step      TEXT NOT NULL,
    message   TEXT NOT NULL,
    PRIMARY KEY (run_id, stage_id, attempt, seq)
);
CREATE TABLE watermarks (
    pipeline  TEXT NOT NULL,
    step      TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (pipeline, step)
);
CREATE TABLE backfills (
    backfill_id      TEXT PRIMARY KEY,
    pipeline         TEXT NOT NULL,
    start_date       BIGINT NOT NULL,
    end_date         BIGINT NOT NULL,
    max_active_runs  INTEGER NOT NULL,
    only_failed      BOOLEAN NOT NULL,
    state            TEXT NOT NULL,
    create_time      BIGINT NOT NULL,
    end_time         BIGINT,
    logical_dates    TEXT NOT NULL,
    params           TEXT NOT NULL,
    request_id       TEXT NOT NULL
);
CREATE INDEX backfills_by_pipeline ON backfills (pipeline, backfill_id);
CREATE TABLE idempotency_records (
    method       TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    response     TEXT NOT NULL,
    create_time  BIGINT NOT NULL,
    PRIMARY KEY (method, request_id)
);
"""

# Issue 5: the data-quality check results of a stage's current or last attempt.
_V2 = """
ALTER TABLE stages ADD COLUMN checks TEXT NOT NULL DEFAULT '[]';
"""

#: Schema migrations, applied in order; migration N (1-based) is version N in
#: ``schema_migrations``. Never edit a released entry: append a new one.
MIGRATIONS: tuple[Migration, ...] = (Migration(_V1), Migration(_V2))

_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


@functools.lru_cache(maxsize=1024)
def to_dollar_placeholders(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1``, ``$2``, … (outside quoted text)."""
    out: list[str] = []
    number = 0
    quote = ""
    for char in sql:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "?":
            number += 1
            out.append(f"${number}")
            continue
        out.append(char)
    return "".join(out)


def _row_count(status: str) -> int:
    """Rows changed, from a command status such as ``UPDATE 3`` or ``INSERT 0 1``."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


class _PgConn:
    """:class:`Conn` over an asyncpg connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return _row_count(await self._conn.execute(to_dollar_placeholders(sql), *args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(to_dollar_placeholders(sql), rows)

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return await self._conn.fetch(to_dollar_placeholders(sql), *args)


class PostgresStore(Store):
    """The store in a PostgreSQL database. Open with :meth:`connect` (or ``open_store``)."""

    backend = "postgresql"
    single_scheduler = False
    MIGRATIONS = MIGRATIONS
    _FOR_UPDATE = " FOR UPDATE"
    _FOR_NO_KEY_UPDATE = " FOR NO KEY UPDATE"
    _FOR_KEY_SHARE = " FOR KEY SHARE"
    _SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(
        cls, dsn: str, *, migrate: bool = True, min_size: int = 1, max_size: int = 10
    ) -> PostgresStore:
        """Open a pool on ``dsn`` (a ``postgresql://`` URL, as asyncpg reads it) and migrate."""
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
        store = cls(pool)
        try:
            if migrate:
                await store.upgrade()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        await self._pool.close()

    async def schema_version(self) -> int:
        async with self._pool.acquire() as conn:
            if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
                return 0
            return int(
                await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            )

    async def upgrade(self) -> list[int]:
        async with self._pool.acquire() as conn, conn.transaction():
            # Serialises schedulers migrating the same database; released at commit.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
            if done and max(done) > len(MIGRATIONS):
                raise StoreError(
                    f"the PostgreSQL store has schema version {max(done)}, newer than this"
                    f" scheduler knows ({len(MIGRATIONS)}): upgrade the scheduler"
                )
            applied: list[int] = []
            for number, migration in enumerate(MIGRATIONS, start=1):
                if number in done:
                    continue
                await conn.execute(migration.sql)  # no arguments: several statements run
                if migration.post is not None:
                    await migration.post(_PgConn(conn))
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)
                applied.append(number)
            return applied

    def _in_list(self, values: Sequence[str]) -> tuple[str, Any]:
        return "= ANY(?::text[])", list(values)

    def _retryable(self, error: Exception) -> bool:
        return isinstance(error, _RETRYABLE)

    async def _transaction(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        async with self._pool.acquire() as conn, conn.transaction():
            return await body(_PgConn(conn))

    async def _read(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            return await body(_PgConn(conn))

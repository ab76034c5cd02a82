"""The store protocol and its one implementation, over a thin SQL adapter.

Why one implementation: both backends hold the same tables with the same columns
and value encodings (see :mod:`.codecs`), and the queries are portable SQL
(``INSERT … ON CONFLICT``, ``RETURNING``, ``TRUE``/``FALSE``, partial indexes
work on SQLite ≥ 3.35 and PostgreSQL alike), so every query and every piece of
domain logic (idempotency, fencing, cancel/retry through ``domain.mark_cancelled``
and ``domain.prepare_retry``) is written once, here, with ``?`` placeholders. A
backend supplies only what really differs:

- a :class:`Conn` adapter (aiosqlite as is; asyncpg with ``?`` rewritten to ``$n``
  and status strings turned into row counts);
- transactions: SQLite has one connection, an asyncio lock and ``BEGIN IMMEDIATE``
  (the writer lock is taken up front, so a transaction never fails half-way on
  lock upgrade); PostgreSQL takes a pooled connection, READ COMMITTED for writes
  and a read-only REPEATABLE READ snapshot for multi-statement reads;
- row locks (``FOR UPDATE`` / ``SKIP LOCKED`` / ``FOR KEY SHARE``): empty on SQLite,
  whose writers are serialised by the database lock and which serves one scheduler;
- the "column in a list" fragment (``IN (SELECT value FROM json_each(?))`` versus
  ``= ANY(?::text[])``) so that a list is one parameter and one cached statement;
- migrations, schema version and opening/closing.

Write transactions are retried (a few times) when a concurrent writer won a race:
an idempotency record inserted meanwhile, or a PostgreSQL deadlock/serialisation
failure. Every write body therefore reloads what it decides on.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import (
    already_exists,
    failed_precondition,
    invalid_argument,
    not_found,
)
from datadog_platform.scheduler.domain import (
    BACKFILL_ALREADY_FINISHED,
    BACKFILL_NOT_FOUND,
    PIPELINE_ALREADY_EXISTS,
    PIPELINE_HAS_ACTIVE_RUNS,
    PIPELINE_NOT_FOUND,
    PIPELINE_VERSION_NOT_FOUND,
    REQUEST_ID_REUSED,
    RUN_NOT_FOUND,
    STAGE_NOT_FOUND,
    Backfill,
    BackfillState,
    Run,
    RunChange,
    RunState,
    StageLogLine,
    mark_cancelled,
    prepare_retry,
    run_already_finished,
)
from datadog_platform.scheduler.platform_counts import PlatformCounts
from datadog_platform.scheduler.store import codecs
from datadog_platform.scheduler.store.codecs import (
    BACKFILL_COLUMNS,
    LOG_COLUMNS,
    PIPELINE_COLUMNS,
    RUN_COLUMNS,
    STAGE_COLUMNS,
    dumps,
    micros,
    opt_micros,
)

T = TypeVar("T")

#: How many times a write transaction runs when it keeps losing races.
_WRITE_ATTEMPTS = 5

_UNFINISHED = "('QUEUED', 'RUNNING')"


class StoreError(Exception):
    """The store cannot be opened or used as asked (bad URL, newer schema, …)."""


class StoreLockedError(StoreError):
    """Another process holds the SQLite store's lock file."""


@dataclass(frozen=True)
class IdempotencyKey:
    """Scopes a client's ``request_id`` to one method; ``fingerprint`` identifies the
    request so that reusing the id for a different request is caught."""

    method: str
    request_id: str
    fingerprint: str


@dataclass(frozen=True)
class DeleteResult:
    """What ``delete_pipeline`` removed."""

    versions: int
    runs: int


@dataclass(frozen=True)
class RenewResult:
    """Outcome of ``renew_leases``: runs whose lease is gone, runs asked to cancel."""

    lost: set[str] = field(default_factory=set)
    cancel_requested: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class ScheduleState:
    """A scheduled pipeline as the ticker needs it.

    ``pipeline``: its latest version; ``create_time``: when a schedule first appeared
    on it (kept across updates that keep a schedule, reset when one removes it).
    """

    pipeline: pipeline_pb2.Pipeline
    paused: bool
    last_fire_time: datetime | None
    create_time: datetime


@dataclass(frozen=True)
class Migration:
    """One schema step: SQL (several statements) and optionally a data step after it."""

    sql: str
    post: Callable[[Conn], Awaitable[None]] | None = None


class Conn(Protocol):
    """The SQL adapter the store runs its queries through (``?`` placeholders)."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; returns the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per parameter row."""
        ...

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        """Run a query (or a statement with RETURNING); returns its rows."""
        ...


class _Raced(Exception):
    """A concurrent transaction recorded the same idempotency key first: run again."""


async def _fetchrow(conn: Conn, sql: str, *args: Any) -> Sequence[Any] | None:
    rows = await conn.fetch(sql, *args)
    return rows[0] if rows else None


class Store(abc.ABC):
    """The scheduler's durable state. Open one with :func:`open_store`.

    All methods are coroutines; times are aware UTC datetimes. Domain errors
    (``DomainError``) carry the reasons of :mod:`datadog_platform.scheduler.domain`.
    """

    #: "sqlite" or "postgresql".
    backend: ClassVar[str]
    #: Whether one scheduler at most uses the store (SQLite): claims may ignore leases.
    single_scheduler: ClassVar[bool]
    #: The backend's ordered migrations; migration N (1-based) is schema version N.
    MIGRATIONS: ClassVar[tuple[Migration, ...]]

    # Row-lock clauses appended to SELECTs (empty where writers are serialised anyway).
    _FOR_UPDATE: ClassVar[str] = ""
    _FOR_NO_KEY_UPDATE: ClassVar[str] = ""
    _FOR_KEY_SHARE: ClassVar[str] = ""
    _SKIP_LOCKED: ClassVar[str] = ""

    # --- what a backend provides ------------------------------------------------------

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection(s) and locks."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The number of migrations applied to the database."""

    @abc.abstractmethod
    async def upgrade(self) -> list[int]:
        """Apply pending migrations; returns their numbers (opening already migrates)."""

    @abc.abstractmethod
    def _in_list(self, values: Sequence[str]) -> tuple[str, Any]:
        """The SQL that follows a text column to test membership in ``values``, and its
        one parameter."""

    @abc.abstractmethod
    async def _transaction(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``body`` in one write transaction (commit on return, roll back on error)."""

    @abc.abstractmethod
    async def _read(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``body`` on a consistent view, for reads."""

    def _retryable(self, error: Exception) -> bool:
        """Whether a write that failed with ``error`` may simply run again."""
        return False

    @property
    def latest_schema_version(self) -> int:
        """The schema version this code migrates to."""
        return len(self.MIGRATIONS)

    @staticmethod
    async def open(url: str | Path, *, exclusive: bool = True) -> Store:
        """Same as :func:`open_store`."""
        from datadog_platform.scheduler.store import open_store

        return await open_store(str(url), exclusive=exclusive)

    async def _write(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        attempt = 1
        while True:
            try:
                return await self._transaction(body)
            except _Raced:
                if attempt >= _WRITE_ATTEMPTS:
                    raise
            except Exception as exc:
                if attempt >= _WRITE_ATTEMPTS or not self._retryable(exc):
                    raise
            attempt += 1

    # --- idempotency ------------------------------------------------------------------

    async def _recorded(self, conn: Conn, key: IdempotencyKey | None) -> dict[str, Any] | None:
        if key is None:
            return None
        row = await _fetchrow(
            conn,
            "SELECT fingerprint, response FROM idempotency_records"
            " WHERE method = ? AND request_id = ?",
            key.method,
            key.request_id,
        )
        if row is None:
            return None
        if row[0] != key.fingerprint:
            raise invalid_argument(
                REQUEST_ID_REUSED,
                f"request_id {key.request_id!r} was already used for a different "
                f"{key.method} request",
            )
        return json.loads(row[1])

    async def _record(
        self, conn: Conn, key: IdempotencyKey | None, response: dict[str, Any], now: datetime
    ) -> None:
        if key is None:
            return
        inserted = await conn.fetch(
            "INSERT INTO idempotency_records"
            " (method, request_id, fingerprint, response, create_time) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (method, request_id) DO NOTHING RETURNING method",
            key.method,
            key.request_id,
            key.fingerprint,
            dumps(response),
            micros(now),
        )
        if not inserted:
            raise _Raced

    # --- pipelines --------------------------------------------------------------------

    async def create_pipeline(
        self, spec: pipeline_pb2.Pipeline, now: datetime, idem: IdempotencyKey | None = None
    ) -> pipeline_pb2.Pipeline:
        """Store ``spec`` as version 1 of a new pipeline; returns it as stored.

        ALREADY_EXISTS (PIPELINE_ALREADY_EXISTS) if the name is taken; with an
        idempotency key seen before, returns the version the first request created.
        """
        clean = codecs.without_output_fields(spec)

        async def body(conn: Conn) -> pipeline_pb2.Pipeline:
            recorded = await self._recorded(conn, idem)
            if recorded is None:
                t = micros(now)
                inserted = await conn.fetch(
                    "INSERT INTO pipelines (name, latest_version, create_time,"
                    " schedule_create_time) VALUES (?, 1, ?, ?)"
                    " ON CONFLICT (name) DO NOTHING RETURNING name",
                    clean.name,
                    t,
                    t if codecs.has_schedule(clean) else None,
                )
                if not inserted:
                    raise already_exists(
                        PIPELINE_ALREADY_EXISTS,
                        f'pipeline "{clean.name}" already exists',
                        pipeline=clean.name,
                    )
                await self._insert_version(conn, clean, 1, t)
                recorded = {"name": clean.name, "version": 1}
                await self._record(conn, idem, recorded, now)
            return await self._pipeline_version(conn, recorded["name"], recorded["version"])

        return await self._write(body)

    async def update_pipeline(
        self, spec: pipeline_pb2.Pipeline, now: datetime, idem: IdempotencyKey | None = None
    ) -> pipeline_pb2.Pipeline:
        """Store ``spec`` as the next version of its pipeline; returns it as stored.

        NOT_FOUND (PIPELINE_NOT_FOUND) if there is no such pipeline. Gaining a
        schedule sets the schedule's create time; losing it clears that and the
        last fire time.
        """
        clean = codecs.without_output_fields(spec)

        async def body(conn: Conn) -> pipeline_pb2.Pipeline:
            recorded = await self._recorded(conn, idem)
            if recorded is None:
                t = micros(now)
                if codecs.has_schedule(clean):
                    schedule, args = "schedule_create_time = COALESCE(schedule_create_time, ?)", [t]
                else:
                    schedule, args = "schedule_create_time = NULL, last_fire_time = NULL", []
                row = await _fetchrow(
                    conn,
                    f"UPDATE pipelines SET latest_version = latest_version + 1, {schedule}"
                    " WHERE name = ? RETURNING latest_version",
                    *args,
                    clean.name,
                )
                if row is None:
                    raise _pipeline_not_found(clean.name)
                await self._insert_version(conn, clean, row[0], t)
                recorded = {"name": clean.name, "version": row[0]}
                await self._record(conn, idem, recorded, now)
            return await self._pipeline_version(conn, recorded["name"], recorded["version"])

        return await self._write(body)

    async def _insert_version(
        self, conn: Conn, spec: pipeline_pb2.Pipeline, version: int, t: int
    ) -> None:
        await conn.execute(
            "INSERT INTO pipeline_versions (name, version, spec, create_time) VALUES (?, ?, ?, ?)",
            spec.name,
            version,
            codecs.spec_bytes(spec),
            t,
        )
        await index_pipeline(conn, spec)

    async def delete_pipeline(self, name: str) -> DeleteResult:
        """Delete a pipeline with its versions, runs, stages, logs, backfills,
        watermarks and schedule state.

        NOT_FOUND (PIPELINE_NOT_FOUND); FAILED_PRECONDITION (PIPELINE_HAS_ACTIVE_RUNS)
        while one of its runs is QUEUED or RUNNING.
        """

        async def body(conn: Conn) -> DeleteResult:
            head = await _fetchrow(
                conn, f"SELECT name FROM pipelines WHERE name = ?{self._FOR_UPDATE}", name
            )
            if head is None:
                raise _pipeline_not_found(name)
            active = await _fetchrow(
                conn,
                f"SELECT run_id FROM runs WHERE pipeline = ? AND state IN {_UNFINISHED} LIMIT 1",
                name,
            )
            if active is not None:
                raise failed_precondition(
                    PIPELINE_HAS_ACTIVE_RUNS,
                    f'pipeline "{name}" has unfinished runs (e.g. "{active[0]}");'
                    " cancel them or wait for them to finish first",
                    pipeline=name,
                    run_id=active[0],
                )
            its_runs = "(SELECT run_id FROM runs WHERE pipeline = ?)"
            await conn.execute(f"DELETE FROM stage_logs WHERE run_id IN {its_runs}", name)
            await conn.execute(f"DELETE FROM stages WHERE run_id IN {its_runs}", name)
            runs = await conn.execute("DELETE FROM runs WHERE pipeline = ?", name)
            for table in ("backfills", "watermarks"):
                await conn.execute(f"DELETE FROM {table} WHERE pipeline = ?", name)
            for table in ("pipeline_tags", "pipeline_labels"):
                await conn.execute(f"DELETE FROM {table} WHERE name = ?", name)
            versions = await conn.execute("DELETE FROM pipeline_versions WHERE name = ?", name)
            await conn.execute("DELETE FROM pipelines WHERE name = ?", name)
            return DeleteResult(versions=versions, runs=runs)

        return await self._write(body)

    async def get_pipeline(self, name: str, version: int = 0) -> pipeline_pb2.Pipeline:
        """A pipeline version (0 = latest) with its output-only fields set.

        NOT_FOUND: PIPELINE_NOT_FOUND or PIPELINE_VERSION_NOT_FOUND.
        """
        return await self._read(lambda conn: self._pipeline_version(conn, name, version))

    async def list_pipelines(
        self,
        limit: int,
        after: str = "",
        *,
        tags: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
    ) -> list[pipeline_pb2.Pipeline]:
        """The latest versions of up to ``limit`` pipelines named after ``after``, by
        name, that have every tag of ``tags`` and every label of ``labels``."""
        clauses = ["p.name > ?"]
        args: list[Any] = [after]
        for tag in dict.fromkeys(tags):
            clauses.append(
                "EXISTS (SELECT 1 FROM pipeline_tags t WHERE t.name = p.name AND t.tag = ?)"
            )
            args.append(tag)
        for key, value in (labels or {}).items():
            clauses.append(
                "EXISTS (SELECT 1 FROM pipeline_labels l WHERE l.name = p.name"
                " AND l.label_key = ? AND l.label_value = ?)"
            )
            args.extend((key, value))
        sql = (
            f"SELECT {PIPELINE_COLUMNS} FROM pipelines p JOIN pipeline_versions v"
            " ON v.name = p.name AND v.version = p.latest_version"
            f" WHERE {' AND '.join(clauses)} ORDER BY p.name LIMIT ?"
        )

        async def body(conn: Conn) -> list[pipeline_pb2.Pipeline]:
            return [codecs.pipeline_of(*row) for row in await conn.fetch(sql, *args, limit)]

        return await self._read(body)

    async def set_paused(self, name: str, paused: bool, now: datetime) -> pipeline_pb2.Pipeline:
        """Pause or unpause a pipeline; returns its latest version. NOT_FOUND."""

        async def body(conn: Conn) -> pipeline_pb2.Pipeline:
            if not await conn.execute(
                "UPDATE pipelines SET paused = ? WHERE name = ?", paused, name
            ):
                raise _pipeline_not_found(name)
            return await self._pipeline_version(conn, name, 0)

        return await self._write(body)

    async def _pipeline_version(self, conn: Conn, name: str, version: int) -> pipeline_pb2.Pipeline:
        if version:
            version_sql, args = "?", [version]
        else:
            version_sql, args = "p.latest_version", []
        row = await _fetchrow(
            conn,
            f"SELECT {PIPELINE_COLUMNS} FROM pipelines p LEFT JOIN pipeline_versions v"
            f" ON v.name = p.name AND v.version = {version_sql} WHERE p.name = ?",
            *args,
            name,
        )
        if row is None:
            raise _pipeline_not_found(name)
        if row[2] is None:
            raise not_found(
                PIPELINE_VERSION_NOT_FOUND,
                f'pipeline "{name}" has no version {version}',
                pipeline=name,
                version=str(version),
            )
        return codecs.pipeline_of(*row)

    # --- schedules --------------------------------------------------------------------

    async def schedule_states(self) -> list[ScheduleState]:
        """Every pipeline whose latest version has a schedule (paused ones too), by name."""

        async def body(conn: Conn) -> list[ScheduleState]:
            rows = await conn.fetch(
                f"SELECT {PIPELINE_COLUMNS}, p.last_fire_time, p.schedule_create_time"
                " FROM pipelines p JOIN pipeline_versions v"
                " ON v.name = p.name AND v.version = p.latest_version"
                " WHERE p.schedule_create_time IS NOT NULL ORDER BY p.name"
            )
            return [
                ScheduleState(
                    pipeline=codecs.pipeline_of(*row[:6]),
                    paused=bool(row[5]),
                    last_fire_time=codecs.opt_time(row[6]),
                    create_time=codecs.time_of(row[7]),
                )
                for row in rows
            ]

        return await self._read(body)

    async def set_last_fire_time(self, name: str, fire_time: datetime) -> None:
        """Record the latest fire time a run was created for (it only moves forward)."""
        t = micros(fire_time)

        async def body(conn: Conn) -> None:
            await conn.execute(
                "UPDATE pipelines SET last_fire_time = ?"
                " WHERE name = ? AND (last_fire_time IS NULL OR last_fire_time < ?)",
                t,
                name,
                t,
            )

        await self._write(body)

    # --- runs -------------------------------------------------------------------------

    async def create_run(
        self,
        run: Run,
        idem: IdempotencyKey | None = None,
        *,
        owner: str,
        lease_until: datetime,
    ) -> tuple[Run, bool]:
        """Insert ``run`` and its stages, leased to ``owner`` with generation 1.

        Returns (run, True) when inserted (``run.generation`` is set); (the stored
        run, False) if a run with that id exists; (the recorded run, False) if the
        idempotency key was seen. NOT_FOUND (PIPELINE_NOT_FOUND) for a deleted pipeline.
        """

        async def body(conn: Conn) -> tuple[Run, bool]:
            recorded = await self._recorded(conn, idem)
            if recorded is not None:
                return codecs.run_from_json(recorded["run"]), False
            # Key-share lock: a concurrent delete_pipeline waits for this insert (or
            # this sees the pipeline gone) instead of failing on a foreign key.
            if not await conn.fetch(
                f"SELECT name FROM pipelines WHERE name = ?{self._FOR_KEY_SHARE}", run.pipeline
            ):
                raise _pipeline_not_found(run.pipeline)
            values = list(codecs.run_values(run))
            values[-1] = 1  # generation
            inserted = await conn.fetch(
                f"INSERT INTO runs ({RUN_COLUMNS}, owner, lease_expires) VALUES"
                f" ({', '.join('?' * (len(values) + 2))})"
                " ON CONFLICT (run_id) DO NOTHING RETURNING run_id",
                *values,
                owner,
                micros(lease_until),
            )
            if not inserted:
                existing = await self._one_run(conn, run.run_id)
                await self._record(
                    conn, idem, {"run": codecs.run_to_json(existing)}, run.create_time
                )
                return existing, False
            if run.stages:
                await conn.executemany(
                    f"INSERT INTO stages (run_id, position, {STAGE_COLUMNS})"
                    f" VALUES ({', '.join('?' * (2 + len(codecs.STAGE_FIELDS)))})",
                    [
                        (run.run_id, position, *codecs.stage_values(stage))
                        for position, stage in enumerate(run.stages)
                    ],
                )
            run.generation = 1
            await self._record(conn, idem, {"run": codecs.run_to_json(run)}, run.create_time)
            return run, True

        return await self._write(body)

    async def apply(self, changes: Sequence[RunChange]) -> set[str]:
        """Write many runs' changes in ONE transaction; returns the lost run ids.

        Each change's run row is written only if its generation still matches
        ``change.run.generation`` (the lease fence); only then are its stages
        updated, its logs appended and its watermarks saved. Nothing of a run whose
        fence failed (or that does not exist) is written; its id is returned.
        """
        if not changes:
            return set()
        ids = sorted({c.run.run_id for c in changes})

        async def body(conn: Conn) -> set[str]:
            in_ids, arg = self._in_list(ids)
            # PostgreSQL: lock the rows (in id order, against deadlocks) so that no
            # claim can bump a generation between this check and the writes.
            rows = await conn.fetch(
                f"SELECT run_id, generation FROM runs WHERE run_id {in_ids}"
                f" ORDER BY run_id{self._FOR_UPDATE}",
                arg,
            )
            generations = {row[0]: row[1] for row in rows}
            kept = [c for c in changes if generations.get(c.run.run_id) == c.run.generation]
            if kept:
                await self._write_changes(conn, kept)
            return set(ids) - {c.run.run_id for c in kept}

        return await self._write(body)

    async def _write_changes(self, conn: Conn, changes: Sequence[RunChange]) -> None:
        await conn.executemany(
            "UPDATE runs SET state = ?, start_time = ?, end_time = ?, error_message = ?"
            " WHERE run_id = ? AND generation = ?",
            [
                (
                    c.run.state.value,
                    opt_micros(c.run.start_time),
                    opt_micros(c.run.end_time),
                    c.run.error_message,
                    c.run.run_id,
                    c.run.generation,
                )
                for c in changes
            ],
        )
        stages = [
            (*codecs.stage_values(s)[1:], c.run.run_id, s.stage_id)
            for c in changes
            for s in c.stages
        ]
        if stages:
            await conn.executemany(_UPDATE_STAGE, stages)
        logs = [codecs.log_values(line) for c in changes for line in c.logs]
        if logs:
            # A line already there (same run, stage, attempt, seq) is a replay: keep it.
            await conn.executemany(
                f"INSERT INTO stage_logs ({LOG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, stage_id, attempt, seq) DO NOTHING",
                logs,
            )
        watermarks = [
            (c.run.pipeline, step, value) for c in changes for step, value in c.watermarks.items()
        ]
        if watermarks:
            await conn.executemany(
                "INSERT INTO watermarks (pipeline, step, value) VALUES (?, ?, ?)"
                " ON CONFLICT (pipeline, step) DO UPDATE SET value = excluded.value",
                watermarks,
            )

    async def get_run(self, run_id: str) -> Run:
        """A run with its stages; NOT_FOUND (RUN_NOT_FOUND)."""
        return await self._read(lambda conn: self._one_run(conn, run_id))

    async def list_runs(
        self,
        limit: int,
        *,
        pipeline: str = "",
        states: Sequence[RunState] = (),
        before: str = "",
        backfill_id: str = "",
    ) -> list[Run]:
        """Up to ``limit`` runs, newest run id first; the keyword arguments filter when
        set (``before``: only run ids sorting before it)."""
        where, args = _page_filter(
            "run_id",
            pipeline=pipeline,
            states=[RunState(s).value for s in states],
            before=before,
            backfill_id=backfill_id,
        )
        return await self._read(
            lambda conn: self._runs(conn, f"{where}ORDER BY run_id DESC LIMIT ?", *args, limit)
        )

    async def runs_by_logical_date(
        self, pipeline: str, start: datetime, end: datetime
    ) -> dict[datetime, Run]:
        """The latest-created run of each logical date in [start, end), any trigger."""

        async def body(conn: Conn) -> dict[datetime, Run]:
            runs = await self._runs(
                conn,
                "WHERE pipeline = ? AND logical_date >= ? AND logical_date < ?"
                " ORDER BY create_time, run_id",
                pipeline,
                micros(start),
                micros(end),
            )
            # In creation order, so that the latest run of a date wins.
            return {run.logical_date: run for run in runs if run.logical_date is not None}

        return await self._read(body)

    async def cancel_run(
        self, run_id: str, now: datetime, idem: IdempotencyKey | None = None
    ) -> Run:
        """Mark a run nobody drives, and its unfinished stages, CANCELLED at once.

        Also bumps its generation and drops its lease, so that a scheduler that
        adopted it meanwhile loses it. NOT_FOUND; FAILED_PRECONDITION
        (RUN_ALREADY_FINISHED) unless ``idem`` was recorded by the cancel that did it.
        """

        async def body(conn: Conn) -> Run:
            if await self._recorded(conn, idem) is not None:
                return await self._one_run(conn, run_id)
            run = await self._one_run(conn, run_id, lock=True)
            if run.state.is_terminal:
                raise run_already_finished(run)
            changed = mark_cancelled(run, now)
            run.generation += 1
            await self._save_run(conn, run, owner=None, lease_expires=None)
            if changed:
                await self._save_stages(conn, run.run_id, changed)
            await self._record(conn, idem, {"run_id": run_id}, now)
            return run

        return await self._write(body)

    async def request_cancel(self, run_id: str) -> Run:
        """Ask the run's driver to cancel it (seen at its next lease renewal).

        NOT_FOUND; FAILED_PRECONDITION (RUN_ALREADY_FINISHED) for a finished run.
        """

        async def body(conn: Conn) -> Run:
            run = await self._one_run(conn, run_id, lock=True)
            if run.state.is_terminal:
                raise run_already_finished(run)
            await conn.execute("UPDATE runs SET cancel_requested = TRUE WHERE run_id = ?", run_id)
            return run

        return await self._write(body)

    async def record_cancel(self, idem: IdempotencyKey, now: datetime) -> None:
        """Remember a CancelRun request_id (for a cancel done through a run's driver)."""

        async def body(conn: Conn) -> None:
            if await self._recorded(conn, idem) is None:
                await self._record(conn, idem, {"run_id": ""}, now)

        await self._write(body)

    async def cancel_recorded(self, idem: IdempotencyKey) -> bool:
        """Whether a CancelRun with this request_id (and fingerprint) already succeeded."""

        async def body(conn: Conn) -> bool:
            return await self._recorded(conn, idem) is not None

        return await self._read(body)

    async def retry_run(
        self,
        run_id: str,
        now: datetime,
        idem: IdempotencyKey | None = None,
        *,
        owner: str,
        lease_until: datetime,
    ) -> tuple[Run, bool]:
        """Put a finished, unsuccessful run back to RUNNING (``domain.prepare_retry``),
        leased to ``owner`` with the next generation.

        Each reset stage gets ``attempt_base`` = its attempt count. Returns the run and
        whether it was reset now; with an idempotency key seen before, changes nothing
        and returns the run as the first request returned it (and False).
        """

        async def body(conn: Conn) -> tuple[Run, bool]:
            recorded = await self._recorded(conn, idem)
            if recorded is not None:
                return codecs.run_from_json(recorded["run"]), False
            run = await self._one_run(conn, run_id, lock=True)
            changed = prepare_retry(run)
            for stage in changed:
                stage.attempt_base = stage.attempt
                stage.next_attempt_time = None
            run.generation += 1
            await self._save_run(conn, run, owner=owner, lease_expires=micros(lease_until))
            if changed:
                await self._save_stages(conn, run_id, changed)
            await self._record(conn, idem, {"run": codecs.run_to_json(run)}, now)
            return run, True

        return await self._write(body)

    async def try_start_run(
        self, run_id: str, generation: int, max_active_runs: int, now: datetime
    ) -> bool:
        """Move a QUEUED run to RUNNING if fewer than ``max_active_runs`` (0: no limit)
        runs of its pipeline are RUNNING; returns whether the run is RUNNING now.

        False if the fence fails (unknown run, other generation) or the run is not
        QUEUED; True without a change if it is already RUNNING. Serialised per
        pipeline (PostgreSQL locks the pipeline's row).
        """

        async def body(conn: Conn) -> bool:
            row = await _fetchrow(
                conn, "SELECT pipeline, state, generation FROM runs WHERE run_id = ?", run_id
            )
            if row is None or row[2] != generation:
                return False
            if row[1] != RunState.QUEUED.value:
                return row[1] == RunState.RUNNING.value
            if self._FOR_NO_KEY_UPDATE:
                # NO KEY UPDATE: serialises the starts of this pipeline's runs without
                # blocking create_run's KEY SHARE lock on the same row.
                await conn.fetch(
                    f"SELECT name FROM pipelines WHERE name = ?{self._FOR_NO_KEY_UPDATE}", row[0]
                )
            if max_active_runs > 0:
                running = await _fetchrow(
                    conn,
                    "SELECT COUNT(*) FROM runs WHERE pipeline = ? AND state = 'RUNNING'",
                    row[0],
                )
                if running is not None and running[0] >= max_active_runs:
                    return False
            return bool(
                await conn.execute(
                    "UPDATE runs SET state = 'RUNNING', start_time = ?"
                    " WHERE run_id = ? AND generation = ? AND state = 'QUEUED'",
                    micros(now),
                    run_id,
                    generation,
                )
            )

        return await self._write(body)

    async def _one_run(self, conn: Conn, run_id: str, *, lock: bool = False) -> Run:
        runs = await self._runs(conn, f"WHERE run_id = ?{self._FOR_UPDATE if lock else ''}", run_id)
        if not runs:
            raise not_found(RUN_NOT_FOUND, f'run "{run_id}" does not exist', run_id=run_id)
        return runs[0]

    async def _runs(self, conn: Conn, where: str, *args: Any) -> list[Run]:
        """Runs selected by ``where`` (with its ORDER BY), with their stages: two queries."""
        rows = await conn.fetch(f"SELECT {RUN_COLUMNS} FROM runs {where}", *args)
        if not rows:
            return []
        in_ids, arg = self._in_list([row[0] for row in rows])
        stages: dict[str, list[Any]] = {row[0]: [] for row in rows}
        for stage_row in await conn.fetch(
            f"SELECT run_id, {STAGE_COLUMNS} FROM stages WHERE run_id {in_ids}"
            " ORDER BY run_id, position",
            arg,
        ):
            stages[stage_row[0]].append(codecs.stage_of(stage_row[1:]))
        return [codecs.run_of(row, stages[row[0]]) for row in rows]

    async def _save_run(
        self, conn: Conn, run: Run, *, owner: str | None, lease_expires: int | None
    ) -> None:
        await conn.execute(
            "UPDATE runs SET state = ?, start_time = ?, end_time = ?, error_message = ?,"
            " generation = ?, owner = ?, lease_expires = ?, cancel_requested = FALSE"
            " WHERE run_id = ?",
            run.state.value,
            opt_micros(run.start_time),
            opt_micros(run.end_time),
            run.error_message,
            run.generation,
            owner,
            lease_expires,
            run.run_id,
        )

    async def _save_stages(self, conn: Conn, run_id: str, stages: Sequence[Any]) -> None:
        await conn.executemany(
            _UPDATE_STAGE,
            [(*codecs.stage_values(s)[1:], run_id, s.stage_id) for s in stages],
        )

    # --- leases -----------------------------------------------------------------------

    async def claim_runs(
        self,
        owner: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        *,
        ignore_leases: bool = False,
    ) -> list[Run]:
        """Take the lease of up to ``limit`` unfinished runs, oldest first.

        Claimable: runs nobody owns or whose lease expired before ``now``; with
        ``ignore_leases``, every unfinished run not owned by ``owner``. Each claimed
        run gets ``owner``, ``lease_until`` and the next generation (returned runs
        carry it). PostgreSQL skips rows other transactions hold (SKIP LOCKED), so
        concurrent claimers never get the same run.
        """
        if ignore_leases:
            claimable, arg = "(owner IS NULL OR owner <> ?)", owner
        else:
            claimable, arg = "(owner IS NULL OR lease_expires < ?)", micros(now)

        async def body(conn: Conn) -> list[Run]:
            claimed = await conn.fetch(
                "UPDATE runs SET owner = ?, lease_expires = ?, generation = generation + 1"
                " WHERE run_id IN (SELECT run_id FROM runs"
                f" WHERE state IN {_UNFINISHED} AND {claimable}"
                f" ORDER BY create_time, run_id LIMIT ?{self._SKIP_LOCKED}) RETURNING run_id",
                owner,
                micros(lease_until),
                arg,
                limit,
            )
            if not claimed:
                return []
            in_ids, ids = self._in_list([row[0] for row in claimed])
            return await self._runs(
                conn, f"WHERE run_id {in_ids} ORDER BY create_time, run_id", ids
            )

        return await self._write(body)

    async def renew_leases(
        self, owner: str, generations: Mapping[str, int], lease_until: datetime
    ) -> RenewResult:
        """Extend ``owner``'s leases of the given runs (run id → generation held).

        ``lost``: runs no longer held with that generation (not extended);
        ``cancel_requested``: held runs someone asked to cancel.
        """
        if not generations:
            return RenewResult()
        ids = sorted(generations)
        t = micros(lease_until)

        async def body(conn: Conn) -> RenewResult:
            await conn.executemany(
                "UPDATE runs SET lease_expires = ?"
                " WHERE run_id = ? AND owner = ? AND generation = ?",
                [(t, run_id, owner, generations[run_id]) for run_id in ids],
            )
            in_ids, arg = self._in_list(ids)
            rows = await conn.fetch(
                "SELECT run_id, owner, generation, cancel_requested FROM runs"
                f" WHERE run_id {in_ids}",
                arg,
            )
            held = {
                row[0]: bool(row[3])
                for row in rows
                if row[1] == owner and row[2] == generations[row[0]]
            }
            return RenewResult(
                lost=set(ids) - held.keys(),
                cancel_requested={run_id for run_id, asked in held.items() if asked},
            )

        return await self._write(body)

    async def release_runs(self, owner: str) -> None:
        """Expire ``owner``'s leases now (clean shutdown) so that others adopt its runs."""

        async def body(conn: Conn) -> None:
            await conn.execute(
                f"UPDATE runs SET lease_expires = 0 WHERE owner = ? AND state IN {_UNFINISHED}",
                owner,
            )

        await self._write(body)

    # --- watermarks and logs ----------------------------------------------------------

    async def watermarks(self, pipeline: str) -> dict[str, str]:
        """The saved watermarks of a pipeline's steps (step → value)."""

        async def body(conn: Conn) -> dict[str, str]:
            rows = await conn.fetch(
                "SELECT step, value FROM watermarks WHERE pipeline = ?", pipeline
            )
            return {row[0]: row[1] for row in rows}

        return await self._read(body)

    async def stage_logs(
        self, run_id: str, stage_id: str, attempt: int, after_seq: int, limit: int
    ) -> list[StageLogLine]:
        """Up to ``limit`` log lines of a stage attempt with ``seq`` > ``after_seq``, in order."""

        async def body(conn: Conn) -> list[StageLogLine]:
            rows = await conn.fetch(
                f"SELECT {LOG_COLUMNS} FROM stage_logs WHERE run_id = ? AND stage_id = ?"
                " AND attempt = ? AND seq > ? ORDER BY seq LIMIT ?",
                run_id,
                stage_id,
                attempt,
                after_seq,
                limit,
            )
            return [codecs.log_of(row) for row in rows]

        return await self._read(body)

    async def latest_attempt(self, run_id: str, stage_id: str) -> int:
        """The stage's attempt count (0: never dispatched).

        NOT_FOUND: RUN_NOT_FOUND, or STAGE_NOT_FOUND for a stage the run lacks.
        """

        async def body(conn: Conn) -> int:
            row = await _fetchrow(
                conn,
                "SELECT attempt FROM stages WHERE run_id = ? AND stage_id = ?",
                run_id,
                stage_id,
            )
            if row is not None:
                return int(row[0])
            if not await conn.fetch("SELECT run_id FROM runs WHERE run_id = ?", run_id):
                raise not_found(RUN_NOT_FOUND, f'run "{run_id}" does not exist', run_id=run_id)
            raise not_found(
                STAGE_NOT_FOUND,
                f'run "{run_id}" has no stage "{stage_id}"',
                run_id=run_id,
                stage_id=stage_id,
            )

        return await self._read(body)

    # --- backfills --------------------------------------------------------------------

    async def create_backfill(
        self, backfill: Backfill, idem: IdempotencyKey | None = None
    ) -> tuple[Backfill, bool]:
        """Insert a backfill unless its id exists or the idempotency key was seen
        (then returns the stored one and False). NOT_FOUND (PIPELINE_NOT_FOUND)."""

        async def body(conn: Conn) -> tuple[Backfill, bool]:
            recorded = await self._recorded(conn, idem)
            if recorded is not None:
                return await self._one_backfill(conn, recorded["backfill_id"]), False
            if not await conn.fetch(
                f"SELECT name FROM pipelines WHERE name = ?{self._FOR_KEY_SHARE}",
                backfill.pipeline,
            ):
                raise _pipeline_not_found(backfill.pipeline)
            inserted = await conn.fetch(
                f"INSERT INTO backfills ({BACKFILL_COLUMNS}) VALUES ({', '.join('?' * 12)})"
                " ON CONFLICT (backfill_id) DO NOTHING RETURNING backfill_id",
                *codecs.backfill_values(backfill),
            )
            await self._record(
                conn, idem, {"backfill_id": backfill.backfill_id}, backfill.create_time
            )
            return await self._one_backfill(conn, backfill.backfill_id), bool(inserted)

        return await self._write(body)

    async def get_backfill(self, backfill_id: str) -> Backfill:
        """A backfill with its counters; NOT_FOUND (BACKFILL_NOT_FOUND)."""
        return await self._read(lambda conn: self._one_backfill(conn, backfill_id))

    async def list_backfills(
        self,
        limit: int,
        *,
        pipeline: str = "",
        before: str = "",
        states: Sequence[BackfillState] = (),
    ) -> list[Backfill]:
        """Up to ``limit`` backfills, newest id first, filtered like ``list_runs``."""
        where, args = _page_filter(
            "backfill_id",
            pipeline=pipeline,
            states=[BackfillState(s).value for s in states],
            before=before,
        )
        return await self._read(
            lambda conn: self._backfills(
                conn, f"{where}ORDER BY backfill_id DESC LIMIT ?", *args, limit
            )
        )

    async def finish_backfill(
        self, backfill_id: str, state: BackfillState, now: datetime
    ) -> Backfill:
        """Move a RUNNING backfill to ``state``; FAILED_PRECONDITION
        (BACKFILL_ALREADY_FINISHED) if it already finished; NOT_FOUND."""

        async def body(conn: Conn) -> Backfill:
            changed = await conn.execute(
                "UPDATE backfills SET state = ?, end_time = ?"
                " WHERE backfill_id = ? AND state = 'RUNNING'",
                BackfillState(state).value,
                micros(now),
                backfill_id,
            )
            backfill = await self._one_backfill(conn, backfill_id)
            if not changed:
                raise failed_precondition(
                    BACKFILL_ALREADY_FINISHED,
                    f'backfill "{backfill_id}" already finished ({backfill.state.value})',
                    backfill_id=backfill_id,
                    state=backfill.state.value,
                )
            return backfill

        return await self._write(body)

    async def _one_backfill(self, conn: Conn, backfill_id: str) -> Backfill:
        found = await self._backfills(conn, "WHERE backfill_id = ?", backfill_id)
        if not found:
            raise not_found(
                BACKFILL_NOT_FOUND,
                f'backfill "{backfill_id}" does not exist',
                backfill_id=backfill_id,
            )
        return found[0]

    async def _backfills(self, conn: Conn, where: str, *args: Any) -> list[Backfill]:
        rows = await conn.fetch(f"SELECT {BACKFILL_COLUMNS} FROM backfills {where}", *args)
        if not rows:
            return []
        in_ids, arg = self._in_list([row[0] for row in rows])
        counters = {
            row[0]: (int(row[1]), int(row[2]), int(row[3]))
            for row in await conn.fetch(
                "SELECT backfill_id, COUNT(*),"
                " COALESCE(SUM(CASE WHEN state = 'SUCCEEDED' THEN 1 ELSE 0 END), 0),"
                " COALESCE(SUM(CASE WHEN state IN ('FAILED', 'CANCELLED') THEN 1 ELSE 0 END), 0)"
                f" FROM runs WHERE backfill_id {in_ids} GROUP BY backfill_id",
                arg,
            )
        }
        return [codecs.backfill_of(row, counters.get(row[0], (0, 0, 0))) for row in rows]

    # --- metrics ----------------------------------------------------------------------

    async def metrics_counts(self, *, stages: bool = True) -> PlatformCounts:
        """Pipelines, runs by state and (unless ``stages`` is false: the stage table is
        the big one) stages by state and the rows and bytes succeeded stages wrote.

        One consistent read; every query is an aggregate (a scan of the table it
        counts), meant for an occasional GetMetrics or a rate-limited scrape.
        """
        # Stage metrics are a JSON text column on both backends (see codecs); only
        # the way to take a number out of it differs.
        if self.backend == "postgresql":
            rows_expr = "(metrics::jsonb ->> 'rows_written')::bigint"
            bytes_expr = "(metrics::jsonb ->> 'bytes_written')::bigint"
        else:
            rows_expr = "json_extract(metrics, '$.rows_written')"
            bytes_expr = "json_extract(metrics, '$.bytes_written')"

        async def body(conn: Conn) -> PlatformCounts:
            (pipelines,) = (await conn.fetch("SELECT COUNT(*) FROM pipelines"))[0]
            runs = await conn.fetch("SELECT state, COUNT(*) FROM runs GROUP BY state")
            if not stages:
                return PlatformCounts(pipelines=int(pipelines), runs=_counts(runs))
            by_state = await conn.fetch("SELECT state, COUNT(*) FROM stages GROUP BY state")
            (rows_written, bytes_written) = (
                await conn.fetch(
                    f"SELECT COALESCE(SUM({rows_expr}), 0), COALESCE(SUM({bytes_expr}), 0)"
                    " FROM stages WHERE state = 'SUCCEEDED'"
                )
            )[0]
            return PlatformCounts(
                pipelines=int(pipelines),
                runs=_counts(runs),
                stages=_counts(by_state),
                rows_written=int(rows_written),
                bytes_written=int(bytes_written),
            )

        return await self._read(body)


def _counts(rows: Iterable[Sequence[Any]]) -> dict[str, int]:
    return {str(state): int(count) for state, count in rows}


_UPDATE_STAGE = (
    "UPDATE stages SET "
    + ", ".join(f"{name} = ?" for name in codecs.STAGE_FIELDS[1:])
    + " WHERE run_id = ? AND stage_id = ?"
)


def _pipeline_not_found(name: str) -> Exception:
    return not_found(PIPELINE_NOT_FOUND, f'pipeline "{name}" does not exist', pipeline=name)


async def index_pipeline(conn: Conn, spec: pipeline_pb2.Pipeline) -> None:
    """(Re)write the tag and label rows that ``list_pipelines`` filters on."""
    await conn.execute("DELETE FROM pipeline_tags WHERE name = ?", spec.name)
    await conn.execute("DELETE FROM pipeline_labels WHERE name = ?", spec.name)
    if spec.tags:
        await conn.executemany(
            "INSERT INTO pipeline_tags (name, tag) VALUES (?, ?)",
            [(spec.name, tag) for tag in dict.fromkeys(spec.tags)],
        )
    if spec.labels:
        await conn.executemany(
            "INSERT INTO pipeline_labels (name, label_key, label_value) VALUES (?, ?, ?)",
            [(spec.name, key, value) for key, value in sorted(spec.labels.items())],
        )


async def index_existing_pipelines(conn: Conn) -> None:
    """Data step of the migration that adds tag/label rows and schedule state: fill
    them from the latest stored version of every pipeline."""
    rows = await conn.fetch(
        "SELECT p.name, v.spec, p.create_time FROM pipelines p JOIN pipeline_versions v"
        " ON v.name = p.name AND v.version = p.latest_version"
    )
    for name, blob, create_time in rows:
        spec = pipeline_pb2.Pipeline.FromString(blob)
        spec.name = name
        await index_pipeline(conn, spec)
        if codecs.has_schedule(spec):
            await conn.execute(
                "UPDATE pipelines SET schedule_create_time = ? WHERE name = ?", create_time, name
            )


__all__ = [
    "Conn",
    "DeleteResult",
    "IdempotencyKey",
    "Migration",
    "RenewResult",
    "ScheduleState",
    "Store",
    "StoreError",
    "StoreLockedError",
]


def _page_filter(
    key: str, *, pipeline: str, states: Sequence[str], before: str, backfill_id: str = ""
) -> tuple[str, list[Any]]:
    """The WHERE clause (or "") and its arguments of a newest-first listing by ``key``:
    each filter applies when set; ``before`` continues after that key."""
    clauses: list[str] = []
    args: list[Any] = []
    for clause, value in (("pipeline = ?", pipeline), ("backfill_id = ?", backfill_id)):
        if value:
            clauses.append(clause)
            args.append(value)
    if states:
        clauses.append(f"state IN ({', '.join('?' * len(states))})")
        args.extend(states)
    if before:
        clauses.append(f"{key} < ?")
        args.append(before)
    return (f"WHERE {' AND '.join(clauses)} " if clauses else ""), args

"""The scheduler's durable state in SQLite (aiosqlite, WAL mode).

Pipelines and their versions, runs and their stages, and idempotency records. The
schema is an ordered list of migration scripts tracked with ``PRAGMA user_version``
and applied on open. One connection serves the process; an asyncio lock keeps each
transaction's statements together (``BEGIN IMMEDIATE`` … ``COMMIT``).

Times are stored as integer microseconds since the epoch (UTC); pipeline specs as
deterministic protobuf bytes without their output-only fields.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from google.protobuf.timestamp_pb2 import Timestamp

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import (
    already_exists,
    invalid_argument,
    not_found,
)
from datadog_platform.scheduler.domain import (
    PIPELINE_ALREADY_EXISTS,
    PIPELINE_NOT_FOUND,
    PIPELINE_VERSION_NOT_FOUND,
    REQUEST_ID_REUSED,
    RUN_NOT_FOUND,
    Run,
    RunState,
    StageOutput,
    StageRun,
    StageState,
    TaskMetrics,
    mark_cancelled,
    prepare_retry,
    run_already_finished,
)

#: Schema migrations, applied in order; migration N (1-based) sets user_version N.
#: Never edit a released entry: append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
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
    """,
)


@dataclass(frozen=True)
class IdempotencyKey:
    """Scopes a client's ``request_id`` to one method; ``fingerprint`` identifies the
    request so that reusing the id for a different request is caught."""

    method: str
    request_id: str
    fingerprint: str


class Store:
    """Async access to the scheduler database. Open with :meth:`open`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating it and its parent directories if needed) and migrate."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) so that the
        # sqlite3 module never opens one behind our back.
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute("PRAGMA busy_timeout = 5000")
            store = cls(db)
            await store._migrate()
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection."""
        async with self._lock:
            await self._db.close()

    async def schema_version(self) -> int:
        """The number of migrations applied."""
        async with self._lock:
            return await self._user_version()

    async def _user_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        async with self._lock:
            current = await self._user_version()
            for number, script in enumerate(MIGRATIONS, start=1):
                if number <= current:
                    continue
                # executescript runs the statements as written; the version bump commits
                # together with the schema change, so a crash leaves either both or neither.
                try:
                    await self._db.executescript(
                        f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
                    )
                except BaseException:
                    if self._db.in_transaction:
                        await self._db.execute("ROLLBACK")
                    raise

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    # --- idempotency -------------------------------------------------------------

    async def _recorded_response(
        self, db: aiosqlite.Connection, key: IdempotencyKey | None
    ) -> dict[str, Any] | None:
        if key is None:
            return None
        async with db.execute(
            "SELECT fingerprint, response FROM idempotency_records"
            " WHERE method = ? AND request_id = ?",
            (key.method, key.request_id),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        if row[0] != key.fingerprint:
            raise invalid_argument(
                REQUEST_ID_REUSED,
                f"request_id {key.request_id!r} was already used for a different "
                f"{key.method} request",
            )
        return json.loads(row[1])

    async def _record_response(
        self,
        db: aiosqlite.Connection,
        key: IdempotencyKey | None,
        response: dict[str, Any],
        now: datetime,
    ) -> None:
        if key is None:
            return
        await db.execute(
            "INSERT INTO idempotency_records"
            " (method, request_id, fingerprint, response, create_time) VALUES (?, ?, ?, ?, ?)",
            (key.method, key.request_id, key.fingerprint, json.dumps(response), _micros(now)),
        )

    # --- pipelines -----------------------------------------------------------------

    async def create_pipeline(
        self,
        spec: pipeline_pb2.Pipeline,
        now: datetime,
        idempotency: IdempotencyKey | None = None,
    ) -> pipeline_pb2.Pipeline:
        """Store ``spec`` as version 1 of a new pipeline; returns it as stored.

        With an idempotency key seen before, returns the pipeline version that the
        first request created instead.
        """
        async with self._transaction() as db:
            recorded = await self._recorded_response(db, idempotency)
            if recorded is None:
                async with db.execute(
                    "SELECT 1 FROM pipelines WHERE name = ?", (spec.name,)
                ) as cursor:
                    if await cursor.fetchone() is not None:
                        raise already_exists(
                            PIPELINE_ALREADY_EXISTS,
                            f'pipeline "{spec.name}" already exists',
                            pipeline=spec.name,
                        )
                clean = _without_output_fields(spec)
                await db.execute(
                    "INSERT INTO pipelines (name, latest_version, create_time) VALUES (?, 1, ?)",
                    (spec.name, _micros(now)),
                )
                await db.execute(
                    "INSERT INTO pipeline_versions (name, version, spec, create_time)"
                    " VALUES (?, 1, ?, ?)",
                    (spec.name, clean.SerializeToString(deterministic=True), _micros(now)),
                )
                recorded = {"name": spec.name, "version": 1}
                await self._record_response(db, idempotency, recorded, now)
            return await self._pipeline_version(db, recorded["name"], recorded["version"])

    async def get_pipeline(self, name: str, version: int = 0) -> pipeline_pb2.Pipeline:
        """A pipeline version (0 = latest) with its output-only fields set."""
        async with self._lock:
            return await self._pipeline_version(self._db, name, version)

    async def list_pipelines(self, limit: int, after: str = "") -> list[pipeline_pb2.Pipeline]:
        """The latest version of up to ``limit`` pipelines named after ``after``, by name."""
        async with (
            self._lock,
            self._db.execute(
                "SELECT p.name, p.create_time, v.version, v.spec, v.create_time"
                " FROM pipelines p JOIN pipeline_versions v"
                " ON v.name = p.name AND v.version = p.latest_version"
                " WHERE p.name > ? ORDER BY p.name LIMIT ?",
                (after, limit),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [_pipeline_of(*row) for row in rows]

    async def _pipeline_version(
        self, db: aiosqlite.Connection, name: str, version: int
    ) -> pipeline_pb2.Pipeline:
        async with db.execute(
            "SELECT latest_version, create_time FROM pipelines WHERE name = ?", (name,)
        ) as cursor:
            head = await cursor.fetchone()
        if head is None:
            raise not_found(PIPELINE_NOT_FOUND, f'pipeline "{name}" does not exist', pipeline=name)
        wanted = version or int(head[0])
        async with db.execute(
            "SELECT spec, create_time FROM pipeline_versions WHERE name = ? AND version = ?",
            (name, wanted),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise not_found(
                PIPELINE_VERSION_NOT_FOUND,
                f'pipeline "{name}" has no version {wanted}',
                pipeline=name,
                version=str(wanted),
            )
        return _pipeline_of(name, head[1], wanted, row[0], row[1])

    # --- runs --------------------------------------------------------------------

    async def create_run(self, run: Run, idempotency: IdempotencyKey | None = None) -> Run:
        """Insert ``run`` and its stages in one transaction; returns it.

        With an idempotency key seen before, inserts nothing and returns the run as
        the first request returned it.
        """
        async with self._transaction() as db:
            recorded = await self._recorded_response(db, idempotency)
            if recorded is not None:
                return run_from_json(recorded["run"])
            await db.execute(
                "INSERT INTO runs (run_id, pipeline, pipeline_version, state, create_time,"
                " start_time, end_time, error_message, request_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.run_id,
                    run.pipeline,
                    run.pipeline_version,
                    run.state.value,
                    _micros(run.create_time),
                    _micros(run.start_time),
                    _micros(run.end_time),
                    run.error_message,
                    run.request_id,
                ),
            )
            for position, stage in enumerate(run.stages):
                await db.execute(
                    "INSERT INTO stages (run_id, position, stage_id, steps, state, attempt,"
                    " start_time, end_time, metrics, outputs, error_reason, error_message)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run.run_id, position, stage.stage_id, *_stage_values(stage)),
                )
            await self._record_response(db, idempotency, {"run": run_to_json(run)}, run.create_time)
            return run

    async def update_run(self, run: Run, stages: Sequence[StageRun] = ()) -> None:
        """Save the run's own fields and the given stages' in one transaction."""
        async with self._transaction() as db:
            await self._update_run(db, run, stages)

    async def _update_run(
        self, db: aiosqlite.Connection, run: Run, stages: Sequence[StageRun]
    ) -> None:
        await db.execute(
            "UPDATE runs SET state = ?, start_time = ?, end_time = ?, error_message = ?"
            " WHERE run_id = ?",
            (
                run.state.value,
                _micros(run.start_time),
                _micros(run.end_time),
                run.error_message,
                run.run_id,
            ),
        )
        for stage in stages:
            await db.execute(
                "UPDATE stages SET steps = ?, state = ?, attempt = ?, start_time = ?,"
                " end_time = ?, metrics = ?, outputs = ?, error_reason = ?,"
                " error_message = ? WHERE run_id = ? AND stage_id = ?",
                (*_stage_values(stage), run.run_id, stage.stage_id),
            )

    async def get_run(self, run_id: str) -> Run:
        """A run with its stages; NOT_FOUND (RUN_NOT_FOUND) if there is none."""
        async with self._lock:
            runs = await self._runs("WHERE run_id = ?", (run_id,))
        if not runs:
            raise not_found(RUN_NOT_FOUND, f'run "{run_id}" does not exist', run_id=run_id)
        return runs[0]

    async def list_runs(
        self,
        limit: int,
        *,
        pipeline: str = "",
        states: Sequence[RunState] = (),
        before: str = "",
    ) -> list[Run]:
        """Up to ``limit`` runs, newest first (run ids sort by creation time).

        ``pipeline`` and ``states`` filter when not empty; ``before`` continues after
        the run with that id.
        """
        clauses: list[str] = []
        params: list[Any] = []
        if pipeline:
            clauses.append("pipeline = ?")
            params.append(pipeline)
        if states:
            clauses.append(f"state IN ({', '.join('?' for _ in states)})")
            params.extend(s.value for s in states)
        if before:
            clauses.append("run_id < ?")
            params.append(before)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        async with self._lock:
            return await self._runs(f"{where}ORDER BY run_id DESC LIMIT ?", (*params, limit))

    async def cancel_run(
        self, run_id: str, now: datetime, idempotency: IdempotencyKey | None = None
    ) -> Run:
        """Mark a run no process drives, and its unfinished stages, CANCELLED at once.

        NOT_FOUND if there is no such run; FAILED_PRECONDITION (RUN_ALREADY_FINISHED)
        if it already reached a final state, unless ``idempotency`` was recorded by
        the cancel that finished it.
        """
        async with self._transaction() as db:
            if await self._recorded_response(db, idempotency) is not None:
                return await self._one_run(run_id)
            run = await self._one_run(run_id)
            if run.state.is_terminal:
                raise run_already_finished(run)
            mark_cancelled(run, now)
            await self._update_run(db, run, run.stages)
            await self._record_response(db, idempotency, {"run_id": run_id}, now)
            return run

    async def record_cancel(self, idempotency: IdempotencyKey, now: datetime) -> None:
        """Remember a CancelRun request_id (for a cancel done through a run's driver)."""
        async with self._transaction() as db:
            if await self._recorded_response(db, idempotency) is None:
                await self._record_response(db, idempotency, {"run_id": ""}, now)

    async def cancel_recorded(self, idempotency: IdempotencyKey) -> bool:
        """Whether a CancelRun with this request_id (and run) already succeeded."""
        async with self._lock:
            return await self._recorded_response(self._db, idempotency) is not None

    async def retry_run(
        self, run_id: str, now: datetime, idempotency: IdempotencyKey | None = None
    ) -> tuple[Run, bool]:
        """Put a finished, unsuccessful run back to RUNNING (see ``prepare_retry``).

        The run and its reset stages commit in one transaction. Returns the run and
        whether it was reset now; with an idempotency key seen before, changes
        nothing and returns the run as the first request returned it (and False).
        """
        async with self._transaction() as db:
            recorded = await self._recorded_response(db, idempotency)
            if recorded is not None:
                return run_from_json(recorded["run"]), False
            run = await self._one_run(run_id)
            changed = prepare_retry(run)
            await self._update_run(db, run, changed)
            await self._record_response(db, idempotency, {"run": run_to_json(run)}, now)
            return run, True

    async def _one_run(self, run_id: str) -> Run:
        runs = await self._runs("WHERE run_id = ?", (run_id,))
        if not runs:
            raise not_found(RUN_NOT_FOUND, f'run "{run_id}" does not exist', run_id=run_id)
        return runs[0]

    async def unfinished_runs(self) -> list[Run]:
        """Runs still QUEUED or RUNNING (left so by a previous process), oldest first."""
        async with self._lock:
            return await self._runs(
                "WHERE state IN (?, ?) ORDER BY create_time, run_id",
                (RunState.QUEUED.value, RunState.RUNNING.value),
            )

    async def _runs(self, where: str, params: tuple[Any, ...]) -> list[Run]:
        async with self._db.execute(
            "SELECT run_id, pipeline, pipeline_version, state, create_time, start_time,"
            f" end_time, error_message, request_id FROM runs {where}",
            params,
        ) as cursor:
            rows = await cursor.fetchall()
        runs: list[Run] = []
        for row in rows:
            async with self._db.execute(
                "SELECT stage_id, steps, state, attempt, start_time, end_time, metrics,"
                " outputs, error_reason, error_message FROM stages WHERE run_id = ?"
                " ORDER BY position",
                (row[0],),
            ) as cursor:
                stage_rows = await cursor.fetchall()
            runs.append(
                Run(
                    run_id=row[0],
                    pipeline=row[1],
                    pipeline_version=row[2],
                    state=RunState(row[3]),
                    create_time=_time(row[4]),
                    start_time=_opt_time(row[5]),
                    end_time=_opt_time(row[6]),
                    error_message=row[7],
                    request_id=row[8],
                    stages=[_stage_of(*stage_row) for stage_row in stage_rows],
                )
            )
        return runs


# --- row codecs ------------------------------------------------------------------------


def _micros(value: datetime | None) -> int | None:
    if value is None:
        return None
    return round(value.timestamp() * 1_000_000)


def _time(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)


def _opt_time(micros: int | None) -> datetime | None:
    return None if micros is None else _time(micros)


def _timestamp(micros: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def _without_output_fields(spec: pipeline_pb2.Pipeline) -> pipeline_pb2.Pipeline:
    clean = pipeline_pb2.Pipeline()
    clean.CopyFrom(spec)
    for name in ("version", "create_time", "update_time"):
        clean.ClearField(name)
    return clean


def _pipeline_of(
    name: str, create_time: int, version: int, spec: bytes, version_time: int
) -> pipeline_pb2.Pipeline:
    pipeline = pipeline_pb2.Pipeline.FromString(spec)
    pipeline.name = name
    pipeline.version = version
    pipeline.create_time.CopyFrom(_timestamp(create_time))
    pipeline.update_time.CopyFrom(_timestamp(version_time))
    return pipeline


def _metrics_json(metrics: TaskMetrics) -> dict[str, int]:
    return {
        "rows_read": metrics.rows_read,
        "bytes_read": metrics.bytes_read,
        "rows_written": metrics.rows_written,
        "bytes_written": metrics.bytes_written,
    }


def _outputs_json(outputs: Sequence[StageOutput]) -> list[dict[str, Any]]:
    return [
        {"step": o.step, "location": o.location, "rows_written": o.rows_written} for o in outputs
    ]


def _stage_values(stage: StageRun) -> tuple[Any, ...]:
    return (
        json.dumps(list(stage.steps)),
        stage.state.value,
        stage.attempt,
        _micros(stage.start_time),
        _micros(stage.end_time),
        json.dumps(_metrics_json(stage.metrics)),
        json.dumps(_outputs_json(stage.outputs)),
        stage.error_reason,
        stage.error_message,
    )


def _stage_of(
    stage_id: str,
    steps: str,
    state: str,
    attempt: int,
    start_time: int | None,
    end_time: int | None,
    metrics: str,
    outputs: str,
    error_reason: str,
    error_message: str,
) -> StageRun:
    return StageRun(
        stage_id=stage_id,
        steps=tuple(json.loads(steps)),
        state=StageState(state),
        attempt=attempt,
        start_time=_opt_time(start_time),
        end_time=_opt_time(end_time),
        metrics=TaskMetrics(**json.loads(metrics)),
        outputs=tuple(StageOutput(**o) for o in json.loads(outputs)),
        error_reason=error_reason,
        error_message=error_message,
    )


def run_to_json(run: Run) -> dict[str, Any]:
    """A run as JSON-compatible data (for idempotency records)."""
    return {
        "run_id": run.run_id,
        "pipeline": run.pipeline,
        "pipeline_version": run.pipeline_version,
        "state": run.state.value,
        "create_time": _micros(run.create_time),
        "start_time": _micros(run.start_time),
        "end_time": _micros(run.end_time),
        "error_message": run.error_message,
        "request_id": run.request_id,
        "stages": [
            dict(zip(_STAGE_FIELDS, (s.stage_id, *_stage_values(s)), strict=True))
            for s in run.stages
        ],
    }


def run_from_json(data: dict[str, Any]) -> Run:
    """The inverse of :func:`run_to_json`."""
    return Run(
        run_id=data["run_id"],
        pipeline=data["pipeline"],
        pipeline_version=data["pipeline_version"],
        state=RunState(data["state"]),
        create_time=_time(data["create_time"]),
        start_time=_opt_time(data["start_time"]),
        end_time=_opt_time(data["end_time"]),
        error_message=data["error_message"],
        request_id=data["request_id"],
        stages=[_stage_of(**stage) for stage in data["stages"]],
    )


_STAGE_FIELDS = (
    "stage_id",
    "steps",
    "state",
    "attempt",
    "start_time",
    "end_time",
    "metrics",
    "outputs",
    "error_reason",
    "error_message",
)

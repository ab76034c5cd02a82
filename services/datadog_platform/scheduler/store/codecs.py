"""Row codecs shared by both backends: domain objects ↔ column values.

Both schemas store the same values, so one codec serves both: times are integer
microseconds since the epoch (UTC), structured fields are compact JSON text,
pipeline specs are deterministic protobuf bytes without their output-only fields,
enums are their string values, flags are Python bools.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.scheduler.domain import (
    Backfill,
    BackfillState,
    CheckResult,
    LogLevel,
    LogLine,
    Run,
    RunState,
    RunTrigger,
    StageLogLine,
    StageOutput,
    StageRun,
    StageState,
    TaskMetrics,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

#: Columns of ``runs`` that make a domain Run, in the order of :func:`run_values`.
RUN_FIELDS = (
    "run_id",
    "pipeline",
    "pipeline_version",
    "state",
    "create_time",
    "start_time",
    "end_time",
    "error_message",
    "request_id",
    "params",
    "run_trigger",
    "logical_date",
    "data_interval_start",
    "data_interval_end",
    "backfill_id",
    "generation",
)
RUN_COLUMNS = ", ".join(RUN_FIELDS)

#: Columns of ``stages`` after ``run_id``, in the order of :func:`stage_values`.
STAGE_FIELDS = (
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
    "upstream",
    "next_attempt_time",
    "attempt_base",
    "checks",
)
STAGE_COLUMNS = ", ".join(STAGE_FIELDS)

#: Defaults of fields that idempotency records written by older schemas lack.
_RUN_DEFAULTS: dict[str, Any] = {
    "params": "{}",
    "run_trigger": RunTrigger.MANUAL.value,
    "logical_date": None,
    "data_interval_start": None,
    "data_interval_end": None,
    "backfill_id": "",
    "generation": 0,
}
_STAGE_DEFAULTS: dict[str, Any] = {
    "upstream": "[]",
    "next_attempt_time": None,
    "attempt_base": 0,
    "checks": "[]",
}

BACKFILL_COLUMNS = (
    "backfill_id, pipeline, start_date, end_date, max_active_runs, only_failed, state,"
    " create_time, end_time, logical_dates, params, request_id"
)
LOG_COLUMNS = "run_id, stage_id, attempt, seq, log_time, level, step, message"


# --- scalars -------------------------------------------------------------------------


def micros(value: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact)."""
    return (value - EPOCH) // _MICROSECOND


def opt_micros(value: datetime | None) -> int | None:
    return None if value is None else micros(value)


def time_of(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def opt_time(value: int | None) -> datetime | None:
    return None if value is None else time_of(value)


#: One encoder: ``json.dumps`` with options builds a new one per call (apply's hot path).
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_quote = json.encoder.encode_basestring_ascii  # what the encoder does to each string


def dumps(value: Any) -> str:
    """Compact JSON text (the encoding of every structured column)."""
    return _ENCODER.encode(value)


def _strings(values: Sequence[str]) -> str:
    # A JSON array of strings without the encoder's generic machinery (hot path).
    return f"[{','.join(map(_quote, values))}]"


def _timestamp(value: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMicroseconds(value)
    return stamp


# --- pipelines -----------------------------------------------------------------------


def without_output_fields(spec: pipeline_pb2.Pipeline) -> pipeline_pb2.Pipeline:
    """A copy of ``spec`` as stored: output-only fields cleared."""
    clean = pipeline_pb2.Pipeline()
    clean.CopyFrom(spec)
    for name in ("version", "create_time", "update_time", "paused", "next_run_time"):
        clean.ClearField(name)
    return clean


def spec_bytes(spec: pipeline_pb2.Pipeline) -> bytes:
    return spec.SerializeToString(deterministic=True)


def has_schedule(spec: pipeline_pb2.Pipeline) -> bool:
    """Whether the spec runs by itself (a schedule with a cron expression)."""
    return spec.HasField("schedule") and bool(spec.schedule.cron)


#: ``pipelines p JOIN pipeline_versions v`` columns read by :func:`pipeline_of`.
PIPELINE_COLUMNS = "p.name, p.create_time, v.version, v.spec, v.create_time, p.paused"


def pipeline_of(
    name: str, create_time: int, version: int, spec: bytes, version_time: int, paused: Any
) -> pipeline_pb2.Pipeline:
    """A stored version with its output-only fields set (``next_run_time`` excepted:
    it is the schedule's to compute)."""
    pipeline = pipeline_pb2.Pipeline.FromString(spec)
    pipeline.name = name
    pipeline.version = version
    pipeline.create_time.CopyFrom(_timestamp(create_time))
    pipeline.update_time.CopyFrom(_timestamp(version_time))
    pipeline.paused = bool(paused)
    return pipeline


# --- runs and stages -----------------------------------------------------------------


def _metrics_text(m: TaskMetrics) -> str:
    # Formatted directly (four ints): several times faster than the JSON encoder.
    return (
        f'{{"rows_read":{int(m.rows_read)},"bytes_read":{int(m.bytes_read)},'
        f'"rows_written":{int(m.rows_written)},"bytes_written":{int(m.bytes_written)}}}'
    )


def _outputs_text(outputs: Sequence[StageOutput]) -> str:
    if not outputs:
        return "[]"
    return dumps(
        [{"step": o.step, "location": o.location, "rows_written": o.rows_written} for o in outputs]
    )


def _checks_text(checks: Sequence[CheckResult]) -> str:
    if not checks:
        return "[]"
    return dumps(
        [
            {
                "step": c.step,
                "check": c.check,
                "passed": c.passed,
                "failing_rows": c.failing_rows,
                "message": c.message,
                "action": c.action,
            }
            for c in checks
        ]
    )


def run_values(run: Run) -> tuple[Any, ...]:
    """The run's :data:`RUN_FIELDS` column values."""
    return (
        run.run_id,
        run.pipeline,
        run.pipeline_version,
        run.state.value,
        micros(run.create_time),
        opt_micros(run.start_time),
        opt_micros(run.end_time),
        run.error_message,
        run.request_id,
        dumps(run.params),
        run.trigger.value,
        opt_micros(run.logical_date),
        opt_micros(run.data_interval_start),
        opt_micros(run.data_interval_end),
        run.backfill_id,
        run.generation,
    )


def stage_values(stage: StageRun) -> tuple[Any, ...]:
    """The stage's :data:`STAGE_FIELDS` column values."""
    return (
        stage.stage_id,
        _strings(stage.steps),
        stage.state.value,
        stage.attempt,
        opt_micros(stage.start_time),
        opt_micros(stage.end_time),
        _metrics_text(stage.metrics),
        _outputs_text(stage.outputs),
        stage.error_reason,
        stage.error_message,
        _strings(stage.upstream),
        opt_micros(stage.next_attempt_time),
        stage.attempt_base,
        _checks_text(stage.checks),
    )


def stage_of(row: Sequence[Any]) -> StageRun:
    """The inverse of :func:`stage_values`."""
    return StageRun(
        stage_id=row[0],
        steps=tuple(json.loads(row[1])),
        state=StageState(row[2]),
        attempt=row[3],
        start_time=opt_time(row[4]),
        end_time=opt_time(row[5]),
        metrics=TaskMetrics(**json.loads(row[6])),
        outputs=tuple(StageOutput(**o) for o in json.loads(row[7])),
        error_reason=row[8],
        error_message=row[9],
        upstream=tuple(json.loads(row[10])),
        next_attempt_time=opt_time(row[11]),
        attempt_base=row[12],
        checks=tuple(CheckResult(**c) for c in json.loads(row[13])),
    )


def run_of(row: Sequence[Any], stages: list[StageRun]) -> Run:
    """The inverse of :func:`run_values`."""
    return Run(
        run_id=row[0],
        pipeline=row[1],
        pipeline_version=row[2],
        state=RunState(row[3]),
        create_time=time_of(row[4]),
        start_time=opt_time(row[5]),
        end_time=opt_time(row[6]),
        error_message=row[7],
        request_id=row[8],
        params=json.loads(row[9]),
        trigger=RunTrigger(row[10]),
        logical_date=opt_time(row[11]),
        data_interval_start=opt_time(row[12]),
        data_interval_end=opt_time(row[13]),
        backfill_id=row[14],
        generation=row[15],
        stages=stages,
    )


def run_to_json(run: Run) -> dict[str, Any]:
    """A run as JSON-compatible data (the response of an idempotency record)."""
    data = dict(zip(RUN_FIELDS, run_values(run), strict=True))
    data["stages"] = [dict(zip(STAGE_FIELDS, stage_values(s), strict=True)) for s in run.stages]
    return data


def run_from_json(data: dict[str, Any]) -> Run:
    """The inverse of :func:`run_to_json`; also reads records of schema version 1."""
    data = {**_RUN_DEFAULTS, **data}
    stages = [
        stage_of([{**_STAGE_DEFAULTS, **stage}[name] for name in STAGE_FIELDS])
        for stage in data["stages"]
    ]
    return run_of([data[name] for name in RUN_FIELDS], stages)


# --- logs and backfills --------------------------------------------------------------


def log_values(log: StageLogLine) -> tuple[Any, ...]:
    """The line's :data:`LOG_COLUMNS` values."""
    line = log.line
    return (
        log.run_id,
        log.stage_id,
        log.attempt,
        log.seq,
        micros(line.time),
        line.level.value,
        line.step,
        line.message,
    )


def log_of(row: Sequence[Any]) -> StageLogLine:
    return StageLogLine(
        run_id=row[0],
        stage_id=row[1],
        attempt=row[2],
        seq=row[3],
        line=LogLine(time=time_of(row[4]), level=LogLevel(row[5]), step=row[6], message=row[7]),
    )


def backfill_values(backfill: Backfill) -> tuple[Any, ...]:
    """The backfill's :data:`BACKFILL_COLUMNS` values (counters are derived, not stored)."""
    return (
        backfill.backfill_id,
        backfill.pipeline,
        micros(backfill.start_date),
        micros(backfill.end_date),
        backfill.max_active_runs,
        backfill.only_failed,
        backfill.state.value,
        micros(backfill.create_time),
        opt_micros(backfill.end_time),
        dumps([micros(d) for d in backfill.logical_dates]),
        dumps(backfill.params),
        backfill.request_id,
    )


def backfill_of(row: Sequence[Any], counters: Sequence[int] = (0, 0, 0)) -> Backfill:
    """The inverse of :func:`backfill_values`, with (created, succeeded, failed) runs."""
    return Backfill(
        backfill_id=row[0],
        pipeline=row[1],
        start_date=time_of(row[2]),
        end_date=time_of(row[3]),
        max_active_runs=row[4],
        only_failed=bool(row[5]),
        state=BackfillState(row[6]),
        create_time=time_of(row[7]),
        end_time=opt_time(row[8]),
        logical_dates=tuple(time_of(d) for d in json.loads(row[9])),
        params=json.loads(row[10]),
        request_id=row[11],
        created_runs=counters[0],
        succeeded_runs=counters[1],
        failed_runs=counters[2],
    )

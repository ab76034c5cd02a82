"""Running one attempt of a stage: source → transforms → sink, streamed end to end.

The stage reads record batches from the source through a :class:`DataPlane`,
pushes each through the transforms (off the event loop) and hands them to the
sink's write as they come, so memory stays bounded by a few batches whatever the
size of the data. Inline sources and discard sinks are built-ins evaluated here
(``builtins.py``), with no connector call; a stage made of nothing else runs
synchronously, with no task, thread or timer.

The attempt is reported as events: started, throttled progress and batched log
lines, then exactly one of succeeded (with the steps' watermarks) or failed. A
failure of the stage is an event, not an exception; only a malformed stage
(INVALID_STAGE) and a full executor (EXECUTOR_BUSY) are refused, before any event.

This module does not import grpc: the data plane is a protocol implemented over
gRPC in ``data_plane.py`` and by in-memory fakes in unit tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import pyarrow as pa
import structlog

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.errors import (
    DomainError,
    ErrorCode,
    FieldViolation,
    invalid_argument,
    resource_exhausted,
)
from datadog_platform.core.expressions import predicate_problem
from datadog_platform.core.logging import get_logger
from datadog_platform.core.tasks import (
    LogLevel,
    LogLine,
    StageOutput,
    StageTask,
    TaskEvent,
    TaskFailed,
    TaskLog,
    TaskMetrics,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)
from datadog_platform.executor.builtins import (
    DISCARD_LOCATION,
    discard,
    inline_batch,
    is_discard,
    is_inline,
)
from datadog_platform.executor.transforms import BatchTransform, bind_transform
from datadog_platform.executor.watermarks import WatermarkTracker

INVALID_STAGE = "INVALID_STAGE"
INTERNAL = "INTERNAL"
#: Every slot is running an attempt (RESOURCE_EXHAUSTED); the caller backs off.
EXECUTOR_BUSY = "EXECUTOR_BUSY"

#: Stage attempts an executor runs at once unless configured otherwise.
DEFAULT_SLOTS = 16
# A failure with one of these codes may pass if the attempt runs again.
RETRYABLE_CODES = frozenset(
    {ErrorCode.UNAVAILABLE, ErrorCode.DEADLINE_EXCEEDED, ErrorCode.RESOURCE_EXHAUSTED}
)
PROGRESS_INTERVAL_SECONDS = 0.25
# How long a cancelled stage may take to unwind before the call gives up on it.
_CANCEL_GRACE_SECONDS = 1.0

log = get_logger(__name__)


# --- what the data plane offers the stage -------------------------------------------


@dataclass(frozen=True)
class SourceStream:
    """An open read: its schema, then its record batches."""

    schema: pa.Schema
    batches: AsyncIterator[pa.RecordBatch]


@dataclass(frozen=True)
class WriteResult:
    """What a sink committed."""

    rows_written: int
    location: str


class DataPlane(Protocol):
    """Reads and writes Arrow data through the connector service."""

    def read(self, source: step_pb2.SourceSpec) -> AbstractAsyncContextManager[SourceStream]:
        """Open a read of ``source``; leaving the context cancels it if still running.

        Raises :class:`DomainError` on entering or while iterating the batches.
        """
        ...

    async def write(
        self,
        sink: step_pb2.SinkSpec,
        idempotency_key: str,
        schema: pa.Schema,
        batches: AsyncIterator[pa.RecordBatch],
    ) -> WriteResult:
        """Write every batch to ``sink`` and commit once they are exhausted.

        If ``batches`` raises, or the call is cancelled, nothing is committed and the
        exception propagates unchanged. Connector failures raise :class:`DomainError`.
        """
        ...


# --- shape of a stage ----------------------------------------------------------------


@dataclass(frozen=True)
class StagePlan:
    """A validated stage: one source, transforms in order, one sink."""

    source_step: str
    source: step_pb2.SourceSpec
    transforms: tuple[tuple[str, step_pb2.TransformSpec], ...]
    sink_step: str
    sink: step_pb2.SinkSpec
    #: Step name -> watermark column, for the steps that keep a watermark.
    watermarks: Mapping[str, str] = field(default_factory=dict)

    @property
    def builtin_only(self) -> bool:
        """Inline source straight into a discard sink: nothing to stream or to call."""
        return not self.transforms and is_inline(self.source) and is_discard(self.sink)

    def idempotency_key(self, task: StageTask) -> str:
        """The sink write's key: the same for every attempt of this stage in this run."""
        return f"{task.run_id}/{task.stage_id}/{self.sink_step}"


def plan_stage(task: StageTask) -> StagePlan:
    """Check the stage's shape; raise INVALID_ARGUMENT ``INVALID_STAGE`` listing every problem.

    The steps must be one source, zero or more transforms and one sink, each
    consuming exactly the previous one.
    """
    violations: list[FieldViolation] = []
    if not task.run_id:
        violations.append(FieldViolation("run_id", "is required"))
    if not task.stage_id:
        violations.append(FieldViolation("stage_id", "is required"))
    steps = list(task.steps)
    if len(steps) < 2:
        violations.append(
            FieldViolation(
                "steps",
                f"a stage is one source step, transforms, then one sink step; got {len(steps)} "
                "step(s)",
            )
        )
    else:
        violations.extend(_step_violations(steps))
    if violations:
        problems = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise invalid_argument(INVALID_STAGE, f"malformed stage: {problems}", violations)
    return StagePlan(
        source_step=steps[0].name,
        source=steps[0].source,
        transforms=tuple((s.name, s.transform) for s in steps[1:-1]),
        sink_step=steps[-1].name,
        sink=steps[-1].sink,
        watermarks={s.name: s.watermark.column for s in steps if s.watermark.column},
    )


def _step_violations(steps: list[step_pb2.Step]) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    seen: set[str] = set()
    for index, step in enumerate(steps):
        path = f"steps[{index}]"
        if not step.name:
            violations.append(FieldViolation(f"{path}.name", "is required"))
        elif step.name in seen:
            violations.append(FieldViolation(f"{path}.name", f"duplicate step name {step.name!r}"))
        seen.add(step.name)

        expected = "source" if index == 0 else "sink" if index == len(steps) - 1 else "transform"
        kind = step.WhichOneof("kind")
        if kind is None:
            violations.append(FieldViolation(path, f"must be a {expected} step; no kind is set"))
        elif kind != expected:
            violations.append(
                FieldViolation(path, f"is a {kind} step where the stage needs a {expected} step")
            )
        else:
            violations.extend(_spec_violations(path, step))

        wanted = [] if index == 0 else [steps[index - 1].name]
        if list(step.inputs) != wanted:
            violations.append(
                FieldViolation(
                    f"{path}.inputs",
                    "a source step takes no inputs"
                    if index == 0
                    else f"must be [{steps[index - 1].name!r}], the previous step of the stage",
                )
            )
    return violations


def _spec_violations(path: str, step: step_pb2.Step) -> list[FieldViolation]:
    kind = step.WhichOneof("kind")
    assert kind is not None
    spec = getattr(step, kind)
    spec_kind = spec.WhichOneof("kind")
    if spec_kind is None:
        return [FieldViolation(f"{path}.{kind}", f"no kind of {kind} is set")]
    if kind == "transform" and spec_kind == "filter":
        problem = predicate_problem(spec.filter.predicate)
        if problem:
            return [FieldViolation(f"{path}.transform.filter.predicate", problem)]
    return []


# --- running an attempt --------------------------------------------------------------


@dataclass
class _Counters:
    rows_read: int = 0
    bytes_read: int = 0
    rows_written: int = 0
    bytes_written: int = 0

    def snapshot(self) -> TaskMetrics:
        return TaskMetrics(self.rows_read, self.bytes_read, self.rows_written, self.bytes_written)


class _StepFailed(Exception):
    """A domain error attributed to the step it happened in."""

    def __init__(self, step: str, error: DomainError, message: str = "") -> None:
        super().__init__(message or error.message)
        self.step = step
        self.error = error


class _Attempt:
    """What one attempt accumulates: counters, log lines not yet sent, watermarks."""

    def __init__(self, plan: StagePlan, task: StageTask, executor_id: str) -> None:
        self.plan = plan
        self.task = task
        self.counters = _Counters()
        self.watermarks = WatermarkTracker(plan.watermarks)
        self._lines: list[LogLine] = []
        steps = " → ".join(_describe(step) for step in task.steps)
        self.log(
            LogLevel.INFO,
            f"stage {task.stage_id!r} attempt {task.attempt} started on {executor_id}: {steps}",
        )

    def log(self, level: LogLevel, message: str, step: str = "") -> None:
        self._lines.append(LogLine(datetime.now(UTC), level, message, step))

    def take_log(self) -> TaskLog | None:
        """The lines logged since the last call, as one event (None if there are none)."""
        if not self._lines:
            return None
        lines, self._lines = tuple(self._lines), []
        return TaskLog(lines)

    def read_done(self) -> None:
        self.log(LogLevel.INFO, f"read {_rows(self.counters.rows_read)}", self.plan.source_step)

    def succeeded(self, result: WriteResult) -> TaskSucceeded:
        self.log(
            LogLevel.INFO,
            f"committed {_rows(result.rows_written)} to {result.location}",
            self.plan.sink_step,
        )
        watermarks = self.watermarks.values()
        for step, value in watermarks.items():
            column = self.plan.watermarks[step]
            self.log(LogLevel.INFO, f"watermark: max({column}) = {value}", step)
        output = StageOutput(self.plan.sink_step, result.location, result.rows_written)
        return TaskSucceeded(
            metrics=self.counters.snapshot(), outputs=(output,), watermarks=watermarks
        )

    def failed(self, failure: _StepFailed) -> TaskFailed:
        message = str(failure)
        self.log(LogLevel.ERROR, message, failure.step)
        return TaskFailed(
            reason=failure.error.reason,
            message=message,
            step=failure.step,
            retryable=failure.error.code in RETRYABLE_CODES,
            metrics=self.counters.snapshot(),
        )

    def internal_error(self) -> TaskFailed:
        message = "internal error in the executor; see its log for details"
        self.log(LogLevel.ERROR, message)
        return TaskFailed(
            reason=INTERNAL,
            message=message,
            step="",
            retryable=False,
            metrics=self.counters.snapshot(),
        )


class StageRunner:
    """Runs stage attempts against a data plane, at most ``slots`` at a time."""

    def __init__(
        self,
        data_plane: DataPlane,
        executor_id: str,
        progress_interval: float = PROGRESS_INTERVAL_SECONDS,
        slots: int = DEFAULT_SLOTS,
    ) -> None:
        if slots < 1:
            raise ValueError(f"an executor needs at least one slot, not {slots}")
        self._data_plane = data_plane
        self._executor_id = executor_id
        self._progress_interval = progress_interval
        self._slots = slots
        self._running = 0

    @property
    def running(self) -> int:
        """Attempts holding a slot now."""
        return self._running

    async def execute(self, task: StageTask) -> AsyncIterator[TaskEvent]:
        """The events of one attempt.

        Raises DomainError INVALID_STAGE (malformed) or EXECUTOR_BUSY (every slot
        taken) before any event. Closing or cancelling the iteration cancels the
        stage and its connector calls, and frees its slot.
        """
        plan = plan_stage(task)
        if self._running >= self._slots:
            raise resource_exhausted(
                EXECUTOR_BUSY,
                f"executor {self._executor_id} is running {self._running} stage attempts, "
                "its limit; try again later",
                executor_id=self._executor_id,
                slots=str(self._slots),
            )
        self._running += 1
        try:
            yield TaskStarted(self._executor_id)
            attempt = _Attempt(plan, task, self._executor_id)
            if plan.builtin_only:
                started = time.perf_counter()
                outcome = self._run_builtin(attempt)
                _log_outcome(attempt, outcome, started)
                log_event = attempt.take_log()
                if log_event is not None:
                    yield log_event
                yield outcome
            else:
                # aclosing: closing this generator must stop the stage now, not at GC.
                async with aclosing(self._stream(attempt)) as events:
                    async for event in events:
                        yield event
        finally:
            self._running -= 1

    @staticmethod
    def _run_builtin(attempt: _Attempt) -> TaskSucceeded | TaskFailed:
        """Inline → discard, synchronously: the whole no-op stage."""
        plan, counters = attempt.plan, attempt.counters
        try:
            try:
                batch = inline_batch(plan.source.inline)
            except DomainError as exc:
                raise _step_failed(plan.source_step, "source", exc) from exc
            counters.rows_read, counters.bytes_read = batch.num_rows, batch.nbytes
            attempt.read_done()
            if attempt.watermarks:
                for step in (plan.source_step, plan.sink_step):
                    _bind_watermarks(attempt.watermarks, step, batch.schema)
                    attempt.watermarks.observe(step, batch)
            counters.rows_written, counters.bytes_written = batch.num_rows, batch.nbytes
            return attempt.succeeded(WriteResult(batch.num_rows, DISCARD_LOCATION))
        except _StepFailed as failure:
            return attempt.failed(failure)

    async def _stream(self, attempt: _Attempt) -> AsyncIterator[TaskEvent]:
        """Run the attempt in a task; report throttled progress and log lines meanwhile."""
        task = attempt.task
        context = {"run_id": task.run_id, "stage_id": task.stage_id, "attempt": task.attempt}
        stage_log = log.bind(**context)
        started = time.perf_counter()
        stage_log.info("stage.started", steps=[s.name for s in task.steps])
        running = asyncio.create_task(self._run(attempt, context))
        try:
            reported = attempt.counters.snapshot()
            while not running.done():
                await asyncio.wait({running}, timeout=self._progress_interval)
                if running.done():
                    break
                log_event = attempt.take_log()
                if log_event is not None:
                    yield log_event
                current = attempt.counters.snapshot()
                if current != reported:
                    reported = current
                    yield TaskProgress(current)
            outcome = self._outcome(running, attempt, stage_log)
            _log_outcome(attempt, outcome, started, stage_log)
            log_event = attempt.take_log()
            if log_event is not None:
                yield log_event
            yield outcome
        finally:
            if not running.done():
                # The caller went away (cancelled call): stop the data moving now.
                running.cancel()
                await asyncio.wait({running}, timeout=_CANCEL_GRACE_SECONDS)
                stage_log.info("stage.cancelled", stopped=running.done())

    async def _run(self, attempt: _Attempt, context: dict[str, object]) -> WriteResult:
        # This task runs in its own copy of the context: the binding stays with the stage.
        structlog.contextvars.bind_contextvars(**context)
        plan, watermarks = attempt.plan, attempt.watermarks
        async with AsyncExitStack() as stack:
            source = await self._open_source(plan, stack)
            _bind_watermarks(watermarks, plan.source_step, source.schema)
            schema = source.schema
            transforms: list[BatchTransform] = []
            if plan.transforms:
                transforms = await asyncio.to_thread(_bind_all, plan.transforms, schema)
                for transform in transforms:
                    stack.callback(transform.close)
                    _bind_watermarks(watermarks, transform.step, transform.output_schema)
                schema = transforms[-1].output_schema
            _bind_watermarks(watermarks, plan.sink_step, schema)
            batches = await stack.enter_async_context(aclosing(_pump(attempt, source, transforms)))
            try:
                if is_discard(plan.sink):
                    result = WriteResult(await discard(batches), DISCARD_LOCATION)
                else:
                    result = await self._data_plane.write(
                        plan.sink, plan.idempotency_key(attempt.task), schema, batches
                    )
            except DomainError as exc:
                raise _step_failed(plan.sink_step, "sink", exc) from exc
            return result

    async def _open_source(self, plan: StagePlan, stack: AsyncExitStack) -> SourceStream:
        """The stage's source: an inline one evaluated here, others through the data plane."""
        try:
            if is_inline(plan.source):
                batch = inline_batch(plan.source.inline)
                return SourceStream(batch.schema, _one(batch))
            return await stack.enter_async_context(self._data_plane.read(plan.source))
        except DomainError as exc:
            raise _step_failed(plan.source_step, "source", exc) from exc

    @staticmethod
    def _outcome(
        running: asyncio.Task[WriteResult],
        attempt: _Attempt,
        stage_log: structlog.stdlib.BoundLogger,
    ) -> TaskSucceeded | TaskFailed:
        try:
            result = running.result()
        except _StepFailed as failure:
            return attempt.failed(failure)
        except Exception:
            stage_log.exception("stage.internal_error")
            return attempt.internal_error()
        return attempt.succeeded(result)


def _describe(step: step_pb2.Step) -> str:
    """``name (kind role)``, e.g. ``orders (file source)``."""
    role = step.WhichOneof("kind") or "step"
    spec = getattr(step, role, None)
    kind = spec.WhichOneof("kind") if spec is not None else None
    return f"{step.name} ({kind} {role})" if kind else f"{step.name} ({role})"


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _bind_watermarks(watermarks: WatermarkTracker, step: str, schema: pa.Schema) -> None:
    try:
        watermarks.bind(step, schema)
    except DomainError as exc:
        raise _StepFailed(step, exc) from exc


def _log_outcome(
    attempt: _Attempt,
    outcome: TaskSucceeded | TaskFailed,
    started: float,
    stage_log: structlog.stdlib.BoundLogger | None = None,
) -> None:
    """One service log line per attempt (the stage's own lines go to the caller).

    A built-in stage's success is DEBUG: the RPC's own log line already records
    the call, and at hundreds of no-op stages a second one more line each costs
    more than the stage.
    """
    failed = isinstance(outcome, TaskFailed)
    if stage_log is None:
        method = log.warning if failed else log.debug
        task = attempt.task
        context = {"run_id": task.run_id, "stage_id": task.stage_id, "attempt": task.attempt}
    else:
        method = stage_log.warning if failed else stage_log.info
        context = {}
    method(
        "stage.finished",
        outcome=type(outcome).__name__,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        **context,
        **_log_fields(outcome),
    )


def _step_failed(step: str, role: str, error: DomainError) -> _StepFailed:
    return _StepFailed(step, error, f"{role} step {step!r}: {error.message}")


async def _one(batch: pa.RecordBatch) -> AsyncIterator[pa.RecordBatch]:
    yield batch


def _bind_all(
    specs: Sequence[tuple[str, step_pb2.TransformSpec]], schema: pa.Schema
) -> list[BatchTransform]:
    """Bind each transform to its input schema, in order (blocking)."""
    bound: list[BatchTransform] = []
    try:
        for step, spec in specs:
            try:
                transform = bind_transform(step, spec, schema)
            except DomainError as exc:
                raise _StepFailed(step, exc) from exc
            bound.append(transform)
            schema = transform.output_schema
    except BaseException:
        for transform in bound:
            transform.close()
        raise
    return bound


def _apply_all(
    transforms: Sequence[BatchTransform], batch: pa.RecordBatch, watermarks: WatermarkTracker
) -> pa.RecordBatch:
    """Run one batch through every transform (blocking)."""
    for transform in transforms:
        try:
            batch = transform.apply(batch)
        except DomainError as exc:
            raise _StepFailed(transform.step, exc) from exc
        if batch.num_rows == 0:
            break
        watermarks.observe(transform.step, batch)
    return batch


async def _pump(
    attempt: _Attempt, source: SourceStream, transforms: Sequence[BatchTransform]
) -> AsyncIterator[pa.RecordBatch]:
    """The sink's input: source batches through the transforms, counted on the way."""
    plan, counters, watermarks = attempt.plan, attempt.counters, attempt.watermarks
    batches = aiter(source.batches)
    while True:
        try:
            batch = await anext(batches)
        except StopAsyncIteration:
            attempt.read_done()
            return
        except DomainError as exc:
            raise _step_failed(plan.source_step, "source", exc) from exc
        counters.rows_read += batch.num_rows
        counters.bytes_read += batch.nbytes
        if watermarks:
            watermarks.observe(plan.source_step, batch)
        if transforms:
            batch = await asyncio.to_thread(_apply_all, transforms, batch, watermarks)
        if batch.num_rows == 0:
            continue
        counters.rows_written += batch.num_rows
        counters.bytes_written += batch.nbytes
        if watermarks:
            watermarks.observe(plan.sink_step, batch)
        yield batch


def _log_fields(outcome: TaskSucceeded | TaskFailed) -> dict[str, object]:
    fields: dict[str, object] = {
        "rows_read": outcome.metrics.rows_read,
        "rows_written": outcome.metrics.rows_written,
    }
    if isinstance(outcome, TaskFailed):
        fields.update(
            reason=outcome.reason,
            step=outcome.step,
            error=outcome.message,
            retryable=outcome.retryable,
        )
    return fields

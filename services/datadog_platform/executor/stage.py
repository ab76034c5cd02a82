"""Running one attempt of a stage: source → transforms → sink, streamed end to end.

The stage reads record batches from the source through a :class:`DataPlane`,
pushes each through the transforms (off the event loop) and hands them to the
sink's write as they come, so memory stays bounded by a few batches whatever the
size of the data. The attempt is reported as events: started, throttled
progress, then exactly one of succeeded or failed. A failure of the stage is an
event, not an exception; only a malformed stage is refused (INVALID_STAGE).

This module does not import grpc: the data plane is a protocol implemented over
gRPC in ``data_plane.py`` and by in-memory fakes in unit tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import structlog

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.errors import DomainError, ErrorCode, FieldViolation, invalid_argument
from datadog_platform.core.expressions import predicate_problem
from datadog_platform.core.logging import get_logger
from datadog_platform.core.tasks import (
    StageOutput,
    StageTask,
    TaskEvent,
    TaskFailed,
    TaskMetrics,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)
from datadog_platform.executor.transforms import BatchTransform, bind_transform

INVALID_STAGE = "INVALID_STAGE"
INTERNAL = "INTERNAL"

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


# --- the attempt and its events ------------------------------------------------------


# --- shape of a stage ----------------------------------------------------------------


@dataclass(frozen=True)
class StagePlan:
    """A validated stage: one source, transforms in order, one sink."""

    source_step: str
    source: step_pb2.SourceSpec
    transforms: tuple[tuple[str, step_pb2.TransformSpec], ...]
    sink_step: str
    sink: step_pb2.SinkSpec

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


class StageRunner:
    """Runs stage attempts against a data plane."""

    def __init__(
        self,
        data_plane: DataPlane,
        executor_id: str,
        progress_interval: float = PROGRESS_INTERVAL_SECONDS,
    ) -> None:
        self._data_plane = data_plane
        self._executor_id = executor_id
        self._progress_interval = progress_interval

    async def execute(self, task: StageTask) -> AsyncIterator[TaskEvent]:
        """The events of one attempt; raises DomainError(INVALID_STAGE) before any event.

        Closing or cancelling the iteration cancels the stage and its connector calls.
        """
        plan = plan_stage(task)
        context = {"run_id": task.run_id, "stage_id": task.stage_id, "attempt": task.attempt}
        stage_log = log.bind(**context)
        counters = _Counters()
        started = time.perf_counter()
        stage_log.info("stage.started", steps=[s.name for s in task.steps])
        yield TaskStarted(self._executor_id)

        running = asyncio.create_task(self._run(plan, task, counters, context))
        try:
            reported = counters.snapshot()
            while not running.done():
                await asyncio.wait({running}, timeout=self._progress_interval)
                current = counters.snapshot()
                if not running.done() and current != reported:
                    reported = current
                    yield TaskProgress(current)
            outcome = self._outcome(running, plan, counters.snapshot(), stage_log)
            log_method = stage_log.info if isinstance(outcome, TaskSucceeded) else stage_log.warning
            log_method(
                "stage.finished",
                outcome=type(outcome).__name__,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                **_log_fields(outcome),
            )
            yield outcome
        finally:
            if not running.done():
                # The caller went away (cancelled call): stop the data moving now.
                running.cancel()
                await asyncio.wait({running}, timeout=_CANCEL_GRACE_SECONDS)
                stage_log.info("stage.cancelled", stopped=running.done())

    async def _run(
        self, plan: StagePlan, task: StageTask, counters: _Counters, context: dict[str, object]
    ) -> WriteResult:
        # This task runs in its own copy of the context: the binding stays with the stage.
        structlog.contextvars.bind_contextvars(**context)
        async with AsyncExitStack() as stack:
            try:
                source = await stack.enter_async_context(self._data_plane.read(plan.source))
            except DomainError as exc:
                raise _step_failed(plan.source_step, "source", exc) from exc
            transforms = await asyncio.to_thread(_bind_all, plan.transforms, source.schema)
            for transform in transforms:
                stack.callback(transform.close)
            schema = transforms[-1].output_schema if transforms else source.schema
            batches = await stack.enter_async_context(
                aclosing(_pump(plan.source_step, source, transforms, counters))
            )
            try:
                return await self._data_plane.write(
                    plan.sink, plan.idempotency_key(task), schema, batches
                )
            except DomainError as exc:
                raise _step_failed(plan.sink_step, "sink", exc) from exc

    @staticmethod
    def _outcome(
        running: asyncio.Task[WriteResult],
        plan: StagePlan,
        metrics: TaskMetrics,
        stage_log: structlog.stdlib.BoundLogger,
    ) -> TaskSucceeded | TaskFailed:
        try:
            result = running.result()
        except _StepFailed as failure:
            return TaskFailed(
                reason=failure.error.reason,
                message=str(failure),
                step=failure.step,
                retryable=failure.error.code in RETRYABLE_CODES,
                metrics=metrics,
            )
        except Exception:
            stage_log.exception("stage.internal_error")
            return TaskFailed(
                reason=INTERNAL,
                message="internal error in the executor; see its log for details",
                step="",
                retryable=False,
                metrics=metrics,
            )
        output = StageOutput(plan.sink_step, result.location, result.rows_written)
        return TaskSucceeded(metrics=metrics, outputs=(output,))


def _step_failed(step: str, role: str, error: DomainError) -> _StepFailed:
    return _StepFailed(step, error, f"{role} step {step!r}: {error.message}")


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


def _apply_all(transforms: Sequence[BatchTransform], batch: pa.RecordBatch) -> pa.RecordBatch:
    """Run one batch through every transform (blocking)."""
    for transform in transforms:
        try:
            batch = transform.apply(batch)
        except DomainError as exc:
            raise _StepFailed(transform.step, exc) from exc
        if batch.num_rows == 0:
            break
    return batch


async def _pump(
    source_step: str,
    source: SourceStream,
    transforms: Sequence[BatchTransform],
    counters: _Counters,
) -> AsyncIterator[pa.RecordBatch]:
    """The sink's input: source batches through the transforms, counted on the way."""
    batches = aiter(source.batches)
    while True:
        try:
            batch = await anext(batches)
        except StopAsyncIteration:
            return
        except DomainError as exc:
            raise _step_failed(source_step, "source", exc) from exc
        counters.rows_read += batch.num_rows
        counters.bytes_read += batch.nbytes
        if transforms:
            batch = await asyncio.to_thread(_apply_all, transforms, batch)
        if batch.num_rows == 0:
            continue
        counters.rows_written += batch.num_rows
        counters.bytes_written += batch.nbytes
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

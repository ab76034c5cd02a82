"""Running one attempt of a stage: a small DAG of sources, transforms and one sink, streamed.

The stage reads its sources concurrently through a :class:`DataPlane`, runs the
transforms in the engine (``engine/``: DuckDB queries over Arrow streams, Python
operators between them, off the event loop) and hands the sink's input to its
write as it comes, so memory stays bounded by a few batches per stream whatever
the size of the data (blocking transforms spill under the engine's memory limit).
Inline sources and discard sinks are built-ins evaluated here (``builtins.py``),
with no connector call; a stage made of nothing else runs synchronously, with no
task, thread, timer or DuckDB.

The attempt is reported as events: started, throttled progress (totals and per
source/sink step) and batched log lines, then exactly one of succeeded (with the
steps' watermarks, check results and step metrics) or failed. A failure of the
stage is an event, not an exception; only a malformed stage (INVALID_STAGE) and a
full executor (EXECUTOR_BUSY) are refused, before any event.

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
from typing import Any, Protocol

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
from datadog_platform.core.file_extensions import infer_format
from datadog_platform.core.logging import get_logger
from datadog_platform.core.tasks import (
    CheckResult,
    LogLevel,
    LogLine,
    StageOutput,
    StageTask,
    StepMetrics,
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
from datadog_platform.executor.engine.graph import StageGraph, build_graph
from datadog_platform.executor.engine.kinds import transform_kinds
from datadog_platform.executor.engine.operators import (
    BatchOperator,
    QuarantineWriter,
    run_operator,
)
from datadog_platform.executor.engine.pushdown import (
    narrowable_sources,
    project,
    same_outputs,
    used_columns,
    with_required,
)
from datadog_platform.executor.engine.query import (
    BoundQuery,
    Engine,
    QueryRun,
    bind_segment,
    runtime_error,
    transform_error,
)
from datadog_platform.executor.parquet_spool import ParquetSpool
from datadog_platform.executor.watermarks import WatermarkTracker

__all__ = [
    "DEFAULT_SLOTS",
    "EXECUTOR_BUSY",
    "INTERNAL",
    "INVALID_STAGE",
    "DataPlane",
    "ProjectingDataPlane",
    "SourceStream",
    "StagePlan",
    "StageRunner",
    "StageTask",
    "TaskEvent",
    "TaskFailed",
    "TaskLog",
    "TaskMetrics",
    "TaskProgress",
    "TaskStarted",
    "TaskSucceeded",
    "WriteResult",
    "plan_stage",
]

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


class ProjectingDataPlane(DataPlane, Protocol):
    """A data plane that can also describe a source, read some of its columns and hand
    string columns over as dictionaries.

    The stage uses it for projection pushdown when the data plane has ``describe``;
    a plain :class:`DataPlane` (e.g. a test fake) always reads every column.
    """

    async def describe(self, source: step_pb2.SourceSpec) -> pa.Schema:
        """The schema a full read of ``source`` streams; raises :class:`DomainError`."""
        ...

    def read(
        self,
        source: step_pb2.SourceSpec,
        columns: Sequence[str] = (),
        *,
        dictionary_strings: bool = False,
        spool: ParquetSpool | None = None,
    ) -> AbstractAsyncContextManager[SourceStream]:
        """Open a read of ``columns`` of ``source`` (in that order; every column when empty).

        With ``dictionary_strings``, a string column's batches may hold dictionaries of
        strings instead (only DuckDB queries may be given those: ``engine.bridge``). With
        ``spool``, Parquet sent as stored may go to the spool instead of the batches.
        """
        ...


# --- shape of a stage ----------------------------------------------------------------


@dataclass(frozen=True)
class StagePlan:
    """A validated stage: its DAG, and the steps keeping a watermark."""

    graph: StageGraph
    #: Step name -> watermark column, for the steps that keep a watermark.
    watermarks: Mapping[str, str] = field(default_factory=dict)

    @property
    def source_step(self) -> str:
        """The first source step."""
        return self.graph.sources[0].name

    @property
    def source(self) -> step_pb2.SourceSpec:
        """The first source step's spec."""
        return self.graph.sources[0].step.source

    @property
    def transforms(self) -> tuple[tuple[str, step_pb2.TransformSpec], ...]:
        """The transform steps and their specs, in stage order."""
        return tuple((n.name, n.step.transform) for n in self.graph.transforms)

    @property
    def sink_step(self) -> str:
        """The sink step."""
        return self.graph.sink.name

    @property
    def sink(self) -> step_pb2.SinkSpec:
        """The sink step's spec."""
        return self.graph.sink.step.sink

    @property
    def builtin_only(self) -> bool:
        """Inline source straight into a discard sink: nothing to stream or to call."""
        sources = self.graph.sources
        return (
            len(sources) == 1
            and not self.transforms
            and is_inline(sources[0].step.source)
            and is_discard(self.sink)
        )

    def idempotency_key(self, task: StageTask) -> str:
        """The sink write's key: the same for every attempt of this stage in this run."""
        return f"{task.run_id}/{task.stage_id}/{self.sink_step}"


def plan_stage(task: StageTask) -> StagePlan:
    """Check the stage's shape; raise INVALID_ARGUMENT ``INVALID_STAGE`` listing every problem.

    The steps are a DAG of one or more sources, transforms and one sink, the last
    step (``engine.graph``).
    """
    violations: list[FieldViolation] = []
    if not task.run_id:
        violations.append(FieldViolation("run_id", "is required"))
    if not task.stage_id:
        violations.append(FieldViolation("stage_id", "is required"))
    graph, step_violations = build_graph(list(task.steps), transform_kinds())
    violations.extend(step_violations)
    if violations or graph is None:
        problems = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise invalid_argument(INVALID_STAGE, f"malformed stage: {problems}", violations)
    return StagePlan(
        graph=graph,
        watermarks={s.name: s.watermark.column for s in task.steps if s.watermark.column},
    )


# --- running an attempt --------------------------------------------------------------


@dataclass
class _Moved:
    rows: int = 0
    bytes: int = 0


class _Counters:
    """Rows and bytes per source and sink step (quarantine sinks under their operator)."""

    def __init__(self, graph: StageGraph) -> None:
        self.sources = {node.name: _Moved() for node in graph.sources}
        self.sink = _Moved()
        self.sink_step = graph.sink.name
        self.quarantines: dict[str, QuarantineWriter] = {}

    def snapshot(self) -> TaskMetrics:
        """The totals (quarantined rows are not in the sink's)."""
        return TaskMetrics(
            sum(m.rows for m in self.sources.values()),
            sum(m.bytes for m in self.sources.values()),
            self.sink.rows,
            self.sink.bytes,
        )

    def steps(self) -> tuple[StepMetrics, ...]:
        """Per source, sink and quarantine step."""
        moved = [StepMetrics(name, m.rows, m.bytes) for name, m in self.sources.items()]
        moved.append(StepMetrics(self.sink_step, self.sink.rows, self.sink.bytes))
        moved.extend(StepMetrics(step, w.rows, w.bytes) for step, w in self.quarantines.items())
        return tuple(moved)


class _StepFailed(Exception):
    """A domain error attributed to the step it happened in."""

    def __init__(self, step: str, error: DomainError, message: str = "") -> None:
        super().__init__(message or error.message)
        self.step = step
        self.error = error


class _Attempt:
    """What one attempt accumulates: counters, log lines not yet sent, watermarks, checks."""

    def __init__(self, plan: StagePlan, task: StageTask, executor_id: str) -> None:
        self.plan = plan
        self.task = task
        self.counters = _Counters(plan.graph)
        self.watermarks = WatermarkTracker(plan.watermarks)
        self.operators: list[BatchOperator] = []
        self.extra_outputs: list[StageOutput] = []
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

    def progress(self) -> TaskProgress:
        return TaskProgress(self.counters.snapshot(), self.counters.steps())

    def read_done(self, step: str) -> None:
        self.log(LogLevel.INFO, f"read {_rows(self.counters.sources[step].rows)}", step)

    def checks(self) -> tuple[CheckResult, ...]:
        results: list[CheckResult] = []
        for operator in self.operators:
            results.extend(operator.results())
        return tuple(results)

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
            metrics=self.counters.snapshot(),
            outputs=(output, *self.extra_outputs),
            watermarks=watermarks,
            checks=self.checks(),
            steps=self.counters.steps(),
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
            checks=self.checks(),
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
    """Runs stage attempts against a data plane, at most ``slots`` at a time.

    ``engine`` is the DuckDB engine transforms run in; without one, the runner uses
    the process's default engine (default settings), created when a stage first needs it.
    """

    def __init__(
        self,
        data_plane: DataPlane,
        executor_id: str,
        progress_interval: float = PROGRESS_INTERVAL_SECONDS,
        slots: int = DEFAULT_SLOTS,
        engine: Engine | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError(f"an executor needs at least one slot, not {slots}")
        self._data_plane = data_plane
        # A ProjectingDataPlane (it has describe) takes columns, dictionaries and spools.
        self._projecting = hasattr(data_plane, "describe")
        self._executor_id = executor_id
        self._progress_interval = progress_interval
        self._slots = slots
        self._running = 0
        self._engine = engine

    @property
    def running(self) -> int:
        """Attempts holding a slot now."""
        return self._running

    def engine(self) -> Engine:
        """The DuckDB engine: the one given, else the process's default one."""
        if self._engine is None:
            self._engine = default_engine()
        return self._engine

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
            read = counters.sources[plan.source_step]
            read.rows, read.bytes = batch.num_rows, batch.nbytes
            attempt.read_done(plan.source_step)
            if attempt.watermarks:
                for step in (plan.source_step, plan.sink_step):
                    _bind_watermarks(attempt.watermarks, step, batch.schema)
                    attempt.watermarks.observe(step, batch)
            counters.sink.rows, counters.sink.bytes = batch.num_rows, batch.nbytes
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
            reported = attempt.progress()
            while not running.done():
                await asyncio.wait({running}, timeout=self._progress_interval)
                if running.done():
                    break
                log_event = attempt.take_log()
                if log_event is not None:
                    yield log_event
                current = attempt.progress()
                if current != reported:
                    reported = current
                    yield current
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
        graph = plan.graph
        async with AsyncExitStack() as stack:
            pushdown = await self._projections(attempt)
            stack.callback(pushdown.close)
            # Only a DuckDB query takes string columns as dictionaries (engine.bridge),
            # and only one that waits for its whole input reads it from a spool.
            dictionaries = frozenset(
                node.name
                for node in graph.sources
                if graph.read_by_queries_only(node.name) and node.name not in plan.watermarks
            )
            spools: dict[str, ParquetSpool] = {}
            for name in dictionaries if self._projecting else ():
                source = graph.node(name).step.source
                if _parquet_files(source) and graph.read_whole_by_one_query(name):
                    spool = ParquetSpool(self.engine().spool_dir, attempt.counters.sources[name])
                    stack.callback(spool.close)
                    spools[name] = spool
            sources = await self._open_sources(graph, stack, pushdown.columns, dictionaries, spools)
            schemas = {name: source.schema for name, source in sources.items()}
            for name, schema in schemas.items():
                _bind_watermarks(watermarks, name, schema)
            engine = self.engine() if graph.segments else None
            if pushdown.bound is not None and all(
                pushdown.schemas[name].equals(schema) for name, schema in schemas.items()
            ):
                # The narrowed binding was made on exactly these schemas: no need to redo it.
                queries, operators = pushdown.bound
                pushdown.bound = None  # closed with the stage's other operators
                schemas = pushdown.schemas
            else:
                pushdown.close()
                queries, operators = await asyncio.to_thread(_bind_stage, engine, graph, schemas)
            attempt.operators = list(operators.values())
            for operator in operators.values():
                stack.callback(operator.close)
            for node in graph.transforms:
                _bind_watermarks(watermarks, node.name, schemas[node.name])
            sink_input = graph.sink.inputs[0]
            _bind_watermarks(watermarks, plan.sink_step, schemas[sink_input])

            async def stream(batches: AsyncIterator[pa.RecordBatch]) -> AsyncIterator[Any]:
                # Closed in reverse order of creation: downstream first, sources last.
                return await stack.enter_async_context(aclosing(batches))  # type: ignore[type-var]

            streams: dict[str, AsyncIterator[pa.RecordBatch]] = {}
            for name, source in sources.items():
                streams[name] = await stream(_source_batches(attempt, name, source))
            for node in graph.transforms:
                if node.name in operators:
                    operator = operators[node.name]
                    writer = self._quarantine_writer(attempt, operator)
                    if writer is not None:
                        stack.callback(writer.cancel)
                    streams[node.name] = await stream(
                        _operator_batches(attempt, operator, streams[node.inputs[0]], writer)
                    )
                elif node.name in queries:
                    bound = queries[node.name]
                    assert engine is not None
                    leaves = {leaf: streams[leaf] for leaf in bound.segment.leaves}
                    streams[node.name] = await stream(
                        _query_batches(attempt, engine, graph, bound, leaves, spools)
                    )
            batches = await stream(_sink_batches(attempt, streams[sink_input]))
            try:
                if is_discard(plan.sink):
                    result = WriteResult(await discard(batches), DISCARD_LOCATION)
                else:
                    result = await self._data_plane.write(
                        plan.sink, plan.idempotency_key(attempt.task), schemas[sink_input], batches
                    )
            except DomainError as exc:
                raise _step_failed(plan.sink_step, "sink", exc) from exc
            return result

    async def _projections(self, attempt: _Attempt) -> _Pushdown:
        """Source step → the only columns its queries read, for sources that need fewer
        than all (projection pushdown, ``engine.pushdown``); none when nothing narrows.

        Costs one ``describe`` per connector source, and only when some query may
        read fewer columns than its sources have. Any doubt reads every column: a
        failing describe or bind here is left for the real read and bind to report.
        """
        graph = attempt.plan.graph
        describe = getattr(self._data_plane, "describe", None)
        candidates = [
            name
            for name in narrowable_sources(graph)
            if not is_inline(graph.node(name).step.source)
        ]
        if describe is None or not candidates:
            return _Pushdown()

        async def schema_of(spec: step_pb2.SourceSpec) -> pa.Schema:
            return inline_batch(spec.inline).schema if is_inline(spec) else await describe(spec)

        nodes = graph.sources
        try:
            described = await asyncio.gather(*(schema_of(n.step.source) for n in nodes))
        except DomainError as exc:
            log.debug("stage.pushdown_skipped", error=exc.message)
            return _Pushdown()
        schemas = {n.name: s for n, s in zip(nodes, described, strict=True)}
        pushdown = await asyncio.to_thread(
            _narrow_sources, self.engine(), graph, schemas, candidates, attempt.plan.watermarks
        )
        for name, columns in pushdown.columns.items():
            attempt.log(
                LogLevel.INFO,
                f"reading {len(columns)} of {len(schemas[name])} columns: {', '.join(columns)}",
                name,
            )
        return pushdown

    async def _open_sources(
        self,
        graph: StageGraph,
        stack: AsyncExitStack,
        columns: Mapping[str, Sequence[str]],
        dictionaries: frozenset[str],
        spools: Mapping[str, ParquetSpool],
    ) -> dict[str, SourceStream]:
        """Every source, opened concurrently: inline ones here, others through the data plane
        (of ``columns[step]`` only, when given; string columns possibly as dictionaries
        for the steps in ``dictionaries``, and stored Parquet into ``spools[step]``, when
        the data plane can)."""

        async def open_one(name: str, spec: step_pb2.SourceSpec, own: AsyncExitStack) -> Any:
            try:
                if is_inline(spec):
                    batch = inline_batch(spec.inline)
                    return SourceStream(batch.schema, _one(batch))
                if self._projecting:
                    plane: Any = self._data_plane
                    read = plane.read(
                        spec,
                        columns.get(name, ()),
                        dictionary_strings=name in dictionaries,
                        spool=spools.get(name),
                    )
                    return await own.enter_async_context(read)
                return await own.enter_async_context(self._data_plane.read(spec))
            except DomainError as exc:
                raise _step_failed(name, "source", exc) from exc

        nodes = graph.sources
        if len(nodes) == 1:  # no task hop: the read starts as soon as the stage does
            node = nodes[0]
            return {node.name: await open_one(node.name, node.step.source, stack)}
        stacks = [AsyncExitStack() for _ in nodes]
        for own in stacks:
            stack.push_async_exit(own)
        opened = await asyncio.gather(
            *(open_one(n.name, n.step.source, own) for n, own in zip(nodes, stacks, strict=True)),
            return_exceptions=True,
        )
        for result in opened:
            if isinstance(result, BaseException):
                raise result
        return {node.name: result for node, result in zip(nodes, opened, strict=True)}

    def _quarantine_writer(
        self, attempt: _Attempt, operator: BatchOperator
    ) -> QuarantineWriter | None:
        spec = operator.quarantine
        if spec is None:
            return None
        key = f"{attempt.task.run_id}/{attempt.task.stage_id}/{operator.step}/quarantine"

        async def write(schema: pa.Schema, batches: AsyncIterator[pa.RecordBatch]) -> WriteResult:
            if is_discard(spec):
                return WriteResult(await discard(batches), DISCARD_LOCATION)
            return await self._data_plane.write(spec, key, schema, batches)

        writer = QuarantineWriter(operator, write)
        attempt.counters.quarantines[operator.step] = writer
        return writer

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


_default_engine: Engine | None = None


def default_engine() -> Engine:
    """One engine with default settings for the whole process (kept until exit)."""
    global _default_engine
    if _default_engine is None:
        _default_engine = Engine()
    return _default_engine


def _bind_stage(
    engine: Engine | None, graph: StageGraph, schemas: dict[str, pa.Schema]
) -> tuple[dict[str, BoundQuery], dict[str, BatchOperator]]:
    """Bind every query and operator in stage order, filling ``schemas`` (blocking)."""
    kinds = transform_kinds()
    queries: dict[str, BoundQuery] = {}
    operators: dict[str, BatchOperator] = {}
    try:
        for node in graph.transforms:
            try:
                if node.name in graph.operators:
                    make = kinds[node.kind].make_operator
                    operator = make(node.name, node.spec, schemas[node.inputs[0]])
                    operators[node.name] = operator
                    schemas[node.name] = operator.output_schema
                elif (segment := graph.segment_of(node.name)) is not None:
                    assert engine is not None
                    queries[node.name] = bind_segment(engine, graph, segment, schemas)
            except DomainError as exc:
                raise _StepFailed(str(exc.metadata.get("step") or node.name), exc) from exc
            except _StepFailed:
                raise
            except Exception as exc:
                step = str(getattr(exc, "step", "") or "")
                if not step:
                    raise
                raise _StepFailed(step, transform_error(step, str(exc))) from exc
    except BaseException:
        for operator in operators.values():
            operator.close()
        raise
    return queries, operators


@dataclass
class _Pushdown:
    """Columns to read per source, and the stage bound on the narrowed source schemas."""

    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Every step's schema in that binding (sources: the narrowed schemas).
    schemas: dict[str, pa.Schema] = field(default_factory=dict)
    bound: tuple[dict[str, BoundQuery], dict[str, BatchOperator]] | None = None

    def close(self) -> None:
        """Release the binding's operators (when it is not used)."""
        if self.bound is not None:
            for operator in self.bound[1].values():
                operator.close()
            self.bound = None


def _narrow_sources(
    engine: Engine,
    graph: StageGraph,
    schemas: Mapping[str, pa.Schema],
    candidates: Sequence[str],
    watermarks: Mapping[str, str],
) -> _Pushdown:
    """The columns to read of each candidate source (blocking; see ``_projections``).

    Binds the stage on the full schemas, asks DuckDB's plan which columns each query
    reads, then binds again on the narrowed schemas and keeps the narrowing only if
    every query and operator output is unchanged. That binding is kept: the stage
    reuses it when the reads come back with the schemas it expected.
    """
    full = dict(schemas)
    try:
        queries, operators = _bind_stage(engine, graph, full)
        for operator in operators.values():
            operator.close()
        narrowed: dict[str, tuple[str, ...]] = {}
        for bound in queries.values():
            for leaf, columns in used_columns(engine, bound).items():
                if leaf not in candidates:
                    continue
                kept = with_required(columns, schemas[leaf], [watermarks.get(leaf, "")])
                if kept is not None:
                    narrowed[leaf] = kept
        if not narrowed:
            return _Pushdown()
        check = {name: project(schema, narrowed.get(name)) for name, schema in schemas.items()}
        result = _Pushdown(narrowed, check, _bind_stage(engine, graph, check))
    except Exception as exc:  # a doubt costs speed, never the stage: read every column
        log.debug("stage.pushdown_skipped", error=str(exc))
        return _Pushdown()
    if not same_outputs(graph, full, check):
        result.close()
        log.debug("stage.pushdown_skipped", error="outputs differ on the narrowed inputs")
        return _Pushdown()
    return result


async def _source_batches(
    attempt: _Attempt, step: str, source: SourceStream
) -> AsyncIterator[pa.RecordBatch]:
    """A source's batches, counted and watermarked; its errors name the step."""
    moved, watermarks = attempt.counters.sources[step], attempt.watermarks
    batches = aiter(source.batches)
    while True:
        try:
            batch = await anext(batches)
        except StopAsyncIteration:
            attempt.read_done(step)
            return
        except DomainError as exc:
            raise _step_failed(step, "source", exc) from exc
        moved.rows += batch.num_rows
        moved.bytes += batch.nbytes
        if watermarks:
            watermarks.observe(step, batch)
        yield batch


def _parquet_files(source: step_pb2.SourceSpec) -> bool:
    """Whether ``source`` reads Parquet files (spooled reads are unsplit: only Parquet
    gains from them)."""
    if source.WhichOneof("kind") != "file":
        return False
    fmt = source.file.format or infer_format(source.file.path)
    return fmt == step_pb2.FILE_FORMAT_PARQUET


async def _query_batches(
    attempt: _Attempt,
    engine: Engine,
    graph: StageGraph,
    bound: BoundQuery,
    leaves: Mapping[str, AsyncIterator[pa.RecordBatch]],
    spools: Mapping[str, ParquetSpool],
) -> AsyncIterator[pa.RecordBatch]:
    """A segment's output: its query run over its input streams, fed concurrently."""
    spooled = {leaf: spools[leaf] for leaf in leaves if leaf in spools}
    run = QueryRun(engine, bound, spooled)
    feeds = [asyncio.create_task(run.feeds[leaf].feed(batches)) for leaf, batches in leaves.items()]
    step, watermarks = bound.segment.output, attempt.watermarks
    try:
        output = run.start()
        while True:
            try:
                batch = await anext(output)
            except StopAsyncIteration:
                for leaf, spool in spooled.items():
                    if spool.sealed:
                        attempt.log(
                            LogLevel.INFO,
                            f"the query read the stored Parquet of {leaf!r} itself, "
                            f"from {spool.files} spooled file(s)",
                            leaf,
                        )
                return
            except Exception as exc:
                # A failed input makes the query fail too: the input's error says why.
                source = run.source_error()
                if source is not None:
                    raise source from None
                if isinstance(exc, DomainError):
                    raise _StepFailed(step, exc) from exc
                failed_step, error = runtime_error(graph, bound, exc)
                raise _StepFailed(failed_step, error) from None
            if bound.needs_cast:
                batch = batch.cast(bound.schema)
            if watermarks:
                watermarks.observe(step, batch)
            yield batch
    finally:
        await run.stop()
        for feed in feeds:
            feed.cancel()
        await asyncio.gather(*feeds, return_exceptions=True)


async def _operator_batches(
    attempt: _Attempt,
    operator: BatchOperator,
    batches: AsyncIterator[pa.RecordBatch],
    quarantine: QuarantineWriter | None,
) -> AsyncIterator[pa.RecordBatch]:
    """An operator's output; its quarantine write commits once its input is exhausted."""
    step, watermarks = operator.step, attempt.watermarks
    try:
        async with aclosing(run_operator(operator, batches, quarantine)) as output:
            async for batch in output:
                if watermarks:
                    watermarks.observe(step, batch)
                yield batch
        if quarantine is not None:
            result = await quarantine.finish()
            assert isinstance(result, WriteResult)
            attempt.extra_outputs.append(StageOutput(step, result.location, result.rows_written))
            attempt.log(
                LogLevel.INFO,
                f"quarantined {_rows(result.rows_written)} to {result.location}",
                step,
            )
    except DomainError as exc:
        raise _StepFailed(step, exc) from exc
    except (_StepFailed, asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as exc:
        if getattr(exc, "step", None) is None:
            raise
        raise _StepFailed(step, transform_error(step, str(exc))) from exc


async def _sink_batches(
    attempt: _Attempt, batches: AsyncIterator[pa.RecordBatch]
) -> AsyncIterator[pa.RecordBatch]:
    """The sink's input, counted and watermarked; empty batches skipped."""
    moved, step, watermarks = attempt.counters.sink, attempt.plan.sink_step, attempt.watermarks
    async for batch in batches:
        if batch.num_rows == 0:
            continue
        moved.rows += batch.num_rows
        moved.bytes += batch.nbytes
        if watermarks:
            watermarks.observe(step, batch)
        yield batch


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

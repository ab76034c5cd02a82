"""Stage shape validation and the event stream of an attempt, over an in-memory data plane."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
import structlog
from google.protobuf import json_format

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.errors import DomainError, ErrorCode, not_found, unavailable
from datadog_platform.core.tasks import LogLevel
from datadog_platform.executor.stage import (
    INVALID_STAGE,
    SourceStream,
    StageRunner,
    StageTask,
    TaskFailed,
    TaskLog,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
    WriteResult,
    plan_stage,
)

SCHEMA = pa.schema([("id", pa.int64()), ("code", pa.string())])


def source(name: str = "src") -> step_pb2.Step:
    return step_pb2.Step(
        name=name,
        source=step_pb2.SourceSpec(file=step_pb2.FileSource(path="in.csv")),
    )


def filter_step(name: str, predicate: str, after: str) -> step_pb2.Step:
    return step_pb2.Step(
        name=name,
        inputs=[after],
        transform=step_pb2.TransformSpec(filter=step_pb2.FilterTransform(predicate=predicate)),
    )


def sink(name: str = "out", after: str = "keep") -> step_pb2.Step:
    return step_pb2.Step(
        name=name,
        inputs=[after],
        sink=step_pb2.SinkSpec(file=step_pb2.FileSink(path="out.parquet")),
    )


def task(steps: Sequence[step_pb2.Step], run_id: str = "run1") -> StageTask:
    return StageTask(run_id=run_id, stage_id="out", attempt=2, steps=list(steps))


def good_steps(predicate: str = "id % 2 = 0") -> list[step_pb2.Step]:
    return [source(), filter_step("keep", predicate, "src"), sink()]


def batches(count: int, rows: int = 10) -> list[pa.RecordBatch]:
    return [
        pa.RecordBatch.from_pydict(
            {
                "id": list(range(i * rows, (i + 1) * rows)),
                "code": [str(n) for n in range(i * rows, (i + 1) * rows)],
            },
            schema=SCHEMA,
        )
        for i in range(count)
    ]


class MemoryDataPlane:
    """Reads given batches; a write commits only once its input is exhausted."""

    def __init__(
        self,
        data: list[pa.RecordBatch],
        *,
        delay: float = 0.0,
        read_error: DomainError | None = None,
        read_error_after: DomainError | None = None,
        write_error: DomainError | None = None,
    ) -> None:
        self.data = data
        self.delay = delay
        self.read_error = read_error
        self.read_error_after = read_error_after
        self.write_error = write_error
        self.read_closed = False
        self.write_started = False
        self.write_key = ""
        self.committed: pa.Table | None = None
        self.log_context: dict[str, object] = {}

    @asynccontextmanager
    async def read(self, spec: step_pb2.SourceSpec) -> AsyncIterator[SourceStream]:
        self.log_context = structlog.contextvars.get_contextvars()
        if self.read_error:
            raise self.read_error
        try:
            yield SourceStream(SCHEMA, self._batches())
        finally:
            self.read_closed = True

    async def _batches(self) -> AsyncIterator[pa.RecordBatch]:
        for batch in self.data:
            if self.delay:
                await asyncio.sleep(self.delay)
            yield batch
        if self.read_error_after:
            raise self.read_error_after

    async def write(
        self,
        spec: step_pb2.SinkSpec,
        idempotency_key: str,
        schema: pa.Schema,
        data: AsyncIterator[pa.RecordBatch],
    ) -> WriteResult:
        self.write_started = True
        self.write_key = idempotency_key
        received = [batch async for batch in data]
        if self.write_error:
            raise self.write_error
        self.committed = pa.Table.from_batches(received, schema=schema)
        return WriteResult(self.committed.num_rows, f"memory://{spec.file.path}")


async def events_of(plane: MemoryDataPlane, steps: Sequence[step_pb2.Step], interval: float = 0.25):
    runner = StageRunner(plane, executor_id="host:1", progress_interval=interval)
    return [event async for event in runner.execute(task(steps))]


# --- shape validation ----------------------------------------------------------------


def test_plan_of_a_good_stage() -> None:
    plan = plan_stage(task(good_steps()))
    assert (plan.source_step, plan.sink_step) == ("src", "out")
    assert [name for name, _ in plan.transforms] == ["keep"]
    assert plan.idempotency_key(task(good_steps())) == "run1/out/out"


def test_source_straight_to_sink_is_a_stage() -> None:
    plan = plan_stage(task([source(), sink(after="src")]))
    assert plan.transforms == ()


def fields_of(steps: Sequence[step_pb2.Step], run_id: str = "run1") -> list[str]:
    with pytest.raises(DomainError) as info:
        plan_stage(task(steps, run_id=run_id))
    assert info.value.code == ErrorCode.INVALID_ARGUMENT
    assert info.value.reason == INVALID_STAGE
    return [v.field for v in info.value.violations]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([], ["steps"]),
        ([source()], ["steps"]),
        ([filter_step("keep", "true", "src"), sink()], ["steps[0]", "steps[0].inputs"]),
        ([source(), filter_step("keep", "true", "src")], ["steps[1]"]),
        ([source(), sink("mid", "src"), sink(after="mid")], ["steps[1]"]),
        # Several sources are fine, but each must feed a step.
        ([source(), source("again"), sink(after="again")], ["steps[0]"]),
        ([source(), step_pb2.Step(name="x", inputs=["src"]), sink(after="x")], ["steps[1]"]),
        ([source(), filter_step("keep", "true", "elsewhere"), sink()], ["steps[1].inputs"]),
        ([source(), sink(after="nothing")], ["steps[1].inputs"]),
        ([source(), filter_step("src", "true", "src"), sink(after="src")], ["steps[1].name"]),
        ([source(""), sink(after="")], ["steps[0].name"]),
        (good_steps(predicate=""), ["steps[1].transform.filter.predicate"]),
        (good_steps(predicate="id >"), ["steps[1].transform.filter.predicate"]),
        (good_steps(predicate="true; DROP TABLE x"), ["steps[1].transform.filter.predicate"]),
        (
            [step_pb2.Step(name="src", source=step_pb2.SourceSpec()), sink(after="src")],
            ["steps[0].source"],
        ),
    ],
)
def test_malformed_stages_are_refused_with_one_violation_per_problem(
    steps: list[step_pb2.Step], expected: list[str]
) -> None:
    assert fields_of(steps) == expected


def test_source_with_inputs_is_refused() -> None:
    steps = good_steps()
    steps[0].inputs.append("x")
    assert fields_of(steps) == ["steps[0].inputs"]


def test_run_and_stage_ids_are_required() -> None:
    with pytest.raises(DomainError) as info:
        plan_stage(StageTask(run_id="", stage_id="", attempt=1, steps=good_steps()))
    assert [v.field for v in info.value.violations] == ["run_id", "stage_id"]
    assert "run_id: is required" in info.value.message


async def test_malformed_stage_raises_before_any_event() -> None:
    plane = MemoryDataPlane(batches(1))
    runner = StageRunner(plane, executor_id="host:1")
    events = runner.execute(task([source()]))
    with pytest.raises(DomainError):
        await anext(events)
    assert not plane.write_started


# --- running an attempt --------------------------------------------------------------


async def test_success_streams_filtered_rows_and_reports_counts() -> None:
    plane = MemoryDataPlane(batches(3))
    events = await events_of(plane, good_steps())
    assert events[0] == TaskStarted("host:1")
    done = events[-1]
    assert isinstance(done, TaskSucceeded)
    assert all(isinstance(e, TaskProgress | TaskLog) for e in events[1:-1])
    assert plane.committed is not None
    assert plane.committed.column("id").to_pylist() == list(range(0, 30, 2))
    assert plane.committed.schema == SCHEMA
    assert plane.write_key == "run1/out/out"
    assert (done.metrics.rows_read, done.metrics.rows_written) == (30, 15)
    assert done.metrics.bytes_read > done.metrics.bytes_written > 0
    assert [(o.step, o.location, o.rows_written) for o in done.outputs] == [
        ("out", "memory://out.parquet", 15)
    ]
    assert plane.read_closed


async def test_empty_source_commits_an_empty_output_with_the_schema() -> None:
    plane = MemoryDataPlane([])
    events = await events_of(plane, good_steps())
    assert isinstance(events[-1], TaskSucceeded)
    assert plane.committed is not None
    assert plane.committed.num_rows == 0
    assert plane.committed.schema == SCHEMA


async def test_stage_log_context_is_bound() -> None:
    plane = MemoryDataPlane(batches(1))
    await events_of(plane, good_steps())
    assert {k: plane.log_context.get(k) for k in ("run_id", "stage_id", "attempt")} == {
        "run_id": "run1",
        "stage_id": "out",
        "attempt": 2,
    }


async def test_progress_is_cumulative_and_throttled() -> None:
    plane = MemoryDataPlane(batches(30), delay=0.02)
    started = asyncio.get_running_loop().time()
    events = await events_of(plane, good_steps(), interval=0.1)
    elapsed = asyncio.get_running_loop().time() - started
    progress = [e for e in events if isinstance(e, TaskProgress)]
    assert progress, "a 0.6 s stage reports progress"
    assert len(progress) <= elapsed / 0.1 + 1
    rows = [p.metrics.rows_read for p in progress]
    assert rows == sorted(rows)
    assert len(set(rows)) == len(rows), "no progress event without new data"
    assert isinstance(events[-1], TaskSucceeded)
    assert events[-1].metrics.rows_read == 300 >= rows[-1]


async def test_transform_error_mid_stream_fails_and_commits_nothing() -> None:
    data = batches(2)
    bad = pa.RecordBatch.from_pydict({"id": [99], "code": ["not a number"]}, schema=SCHEMA)
    plane = MemoryDataPlane([*data, bad])
    events = await events_of(plane, good_steps(predicate="CAST(code AS INTEGER) > 3"))
    failed = events[-1]
    assert isinstance(failed, TaskFailed)
    assert failed.reason == "TRANSFORM_ERROR"
    assert failed.step == "keep"
    assert not failed.retryable
    assert "'keep'" in failed.message
    assert "CAST(code AS INTEGER) > 3" in failed.message
    assert "Conversion Error" in failed.message
    assert plane.write_started
    assert plane.committed is None
    assert failed.metrics.rows_read == 21
    assert plane.read_closed


async def test_unknown_column_fails_before_the_sink_is_opened() -> None:
    plane = MemoryDataPlane(batches(2))
    events = await events_of(plane, good_steps(predicate="nope = 1"))
    failed = events[-1]
    assert isinstance(failed, TaskFailed)
    assert (failed.reason, failed.step) == ("TRANSFORM_ERROR", "keep")
    assert 'Referenced column "nope" not found' in failed.message
    assert not plane.write_started


async def test_source_error_keeps_reason_names_step_and_is_not_retryable() -> None:
    plane = MemoryDataPlane([], read_error=not_found("SOURCE_NOT_FOUND", "no file 'in.csv'"))
    events = await events_of(plane, good_steps())
    assert [type(e) for e in events] == [TaskStarted, TaskLog, TaskFailed]
    failed = events[-1]
    assert isinstance(failed, TaskFailed)
    assert (failed.reason, failed.step, failed.retryable) == ("SOURCE_NOT_FOUND", "src", False)
    assert failed.message == "source step 'src': no file 'in.csv'"
    assert not plane.write_started


async def test_broken_read_mid_stream_is_retryable_and_commits_nothing() -> None:
    error = unavailable("ARROW_STREAM_INCOMPLETE", "stream ended without a completion frame")
    plane = MemoryDataPlane(batches(2), read_error_after=error)
    failed = (await events_of(plane, good_steps()))[-1]
    assert isinstance(failed, TaskFailed)
    assert (failed.reason, failed.step, failed.retryable) == (
        "ARROW_STREAM_INCOMPLETE",
        "src",
        True,
    )
    assert plane.committed is None


async def test_sink_error_is_attributed_to_the_sink() -> None:
    error = DomainError(ErrorCode.PERMISSION_DENIED, "PATH_OUTSIDE_ROOT", "path escapes the root")
    plane = MemoryDataPlane(batches(1), write_error=error)
    failed = (await events_of(plane, good_steps()))[-1]
    assert isinstance(failed, TaskFailed)
    assert (failed.reason, failed.step, failed.retryable) == ("PATH_OUTSIDE_ROOT", "out", False)
    assert failed.message == "sink step 'out': path escapes the root"


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (ErrorCode.UNAVAILABLE, True),
        (ErrorCode.DEADLINE_EXCEEDED, True),
        (ErrorCode.RESOURCE_EXHAUSTED, True),
        (ErrorCode.INVALID_ARGUMENT, False),
        (ErrorCode.INTERNAL, False),
    ],
)
async def test_retryable_iff_transient_code(code: ErrorCode, retryable: bool) -> None:
    plane = MemoryDataPlane([], read_error=DomainError(code, "X", "x"))
    failed = (await events_of(plane, good_steps()))[-1]
    assert isinstance(failed, TaskFailed)
    assert failed.retryable is retryable


async def test_unexpected_exception_is_an_opaque_internal_failure() -> None:
    class Broken(MemoryDataPlane):
        async def write(self, *args: object, **kwargs: object) -> WriteResult:
            raise RuntimeError("secret=hunter2")

    failed = (await events_of(Broken(batches(1)), good_steps()))[-1]
    assert isinstance(failed, TaskFailed)
    assert failed.reason == "INTERNAL"
    assert "hunter2" not in failed.message


async def test_closing_the_events_cancels_the_stage_before_it_commits() -> None:
    plane = MemoryDataPlane(batches(1000), delay=0.01)
    runner = StageRunner(plane, executor_id="host:1", progress_interval=0.05)
    events = runner.execute(task(good_steps()))
    assert isinstance(await anext(events), TaskStarted)
    event = await anext(events)
    while isinstance(event, TaskLog):
        event = await anext(events)
    assert isinstance(event, TaskProgress)
    started = asyncio.get_running_loop().time()
    await events.aclose()
    assert asyncio.get_running_loop().time() - started < 1.0
    assert plane.read_closed
    assert plane.committed is None


async def test_cancelling_the_consumer_cancels_the_stage() -> None:
    plane = MemoryDataPlane(batches(1000), delay=0.01)
    runner = StageRunner(plane, executor_id="host:1", progress_interval=0.05)
    seen: list[object] = []
    progressed = asyncio.Event()

    async def consume() -> None:
        async for event in runner.execute(task(good_steps())):
            seen.append(event)
            if isinstance(event, TaskProgress):
                progressed.set()

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(progressed.wait(), timeout=5)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert plane.read_closed
    assert plane.committed is None
    assert not any(isinstance(e, TaskSucceeded | TaskFailed) for e in seen)


# --- built-ins: inline source, discard sink --------------------------------------------


class NoDataPlane:
    """Any connector call fails the test: built-ins must not make one."""

    def read(self, spec: step_pb2.SourceSpec) -> object:
        raise AssertionError(f"unexpected read of {spec}")

    async def write(self, *args: object, **kwargs: object) -> WriteResult:
        raise AssertionError("unexpected write")


def inline_source(
    name: str = "src", rows: Sequence[dict[str, object]] = ({"id": 1},)
) -> step_pb2.Step:
    spec = json_format.ParseDict({"rows": list(rows)}, step_pb2.InlineSource())
    return step_pb2.Step(name=name, source=step_pb2.SourceSpec(inline=spec))


def discard_sink(name: str = "out", after: str = "src") -> step_pb2.Step:
    return step_pb2.Step(
        name=name, inputs=[after], sink=step_pb2.SinkSpec(discard=step_pb2.DiscardSink())
    )


def with_watermark(step: step_pb2.Step, column: str) -> step_pb2.Step:
    step.watermark.column = column
    return step


def lines_of(events: Sequence[object]) -> list[tuple[LogLevel, str, str]]:
    return [
        (line.level, line.step, line.message)
        for event in events
        if isinstance(event, TaskLog)
        for line in event.lines
    ]


async def test_no_op_stage_is_three_events_and_no_connector_call() -> None:
    events = await events_of(NoDataPlane(), [inline_source(), discard_sink()])  # type: ignore[arg-type]
    assert [type(e) for e in events] == [TaskStarted, TaskLog, TaskSucceeded]
    done = events[-1]
    assert isinstance(done, TaskSucceeded)
    assert [(o.step, o.location, o.rows_written) for o in done.outputs] == [
        ("out", "discard://", 1)
    ]
    assert (done.metrics.rows_read, done.metrics.rows_written) == (1, 1)
    assert done.metrics.bytes_read == done.metrics.bytes_written > 0
    assert done.watermarks == {}
    assert lines_of(events) == [
        (
            LogLevel.INFO,
            "",
            "stage 'out' attempt 2 started on host:1: src (inline source) → out (discard sink)",
        ),
        (LogLevel.INFO, "src", "read 1 row"),
        (LogLevel.INFO, "out", "committed 1 row to discard://"),
    ]
    log_event = events[1]
    assert isinstance(log_event, TaskLog)
    now = datetime.now(UTC)
    assert all(now - timedelta(seconds=5) < line.time <= now for line in log_event.lines)


async def test_no_op_stage_with_no_rows_succeeds_with_nothing() -> None:
    events = await events_of(NoDataPlane(), [inline_source(rows=()), discard_sink()])  # type: ignore[arg-type]
    done = events[-1]
    assert isinstance(done, TaskSucceeded)
    assert (done.metrics.rows_read, done.outputs[0].rows_written) == (0, 0)
    assert (LogLevel.INFO, "out", "committed 0 rows to discard://") in lines_of(events)


async def test_bad_inline_rows_fail_the_source_step() -> None:
    rows = ({"v": 1}, {"v": "x"})
    events = await events_of(NoDataPlane(), [inline_source(rows=rows), discard_sink()])  # type: ignore[arg-type]
    failed = events[-1]
    assert isinstance(failed, TaskFailed)
    assert (failed.reason, failed.step, failed.retryable) == ("INVALID_INLINE_ROWS", "src", False)
    assert failed.message.startswith("source step 'src': inline rows: column 'v' mixes number")
    assert lines_of(events)[-1] == (LogLevel.ERROR, "src", failed.message)


async def test_inline_through_a_filter_into_discard_streams_without_the_connector() -> None:
    rows = [{"id": i, "code": str(i)} for i in range(10)]
    steps = [
        inline_source(rows=rows),
        filter_step("keep", "id >= 7", "src"),
        discard_sink(after="keep"),
    ]
    events = await events_of(NoDataPlane(), steps)  # type: ignore[arg-type]
    done = events[-1]
    assert isinstance(done, TaskSucceeded)
    assert (done.metrics.rows_read, done.metrics.rows_written) == (10, 3)
    assert done.outputs[0].location == "discard://"
    assert [(step, message) for _, step, message in lines_of(events)[1:]] == [
        ("src", "read 10 rows"),
        ("out", "committed 3 rows to discard://"),
    ]


async def test_inline_source_into_a_connector_sink() -> None:
    plane = MemoryDataPlane([])
    rows = [{"id": 1, "code": "a"}, {"id": 2, "code": "b"}]
    events = await events_of(plane, [inline_source(rows=rows), sink(after="src")])
    assert isinstance(events[-1], TaskSucceeded)
    assert not plane.log_context, "the inline source must not be read through the data plane"
    assert plane.committed is not None
    assert plane.committed.to_pylist() == rows
    assert plane.write_key == "run1/out/out"


async def test_connector_source_into_discard() -> None:
    plane = MemoryDataPlane(batches(3))
    events = await events_of(plane, [source(), discard_sink()])
    done = events[-1]
    assert isinstance(done, TaskSucceeded)
    assert (done.metrics.rows_read, done.outputs[0].rows_written) == (30, 30)
    assert not plane.write_started
    assert plane.read_closed


# --- log lines -------------------------------------------------------------------------


async def test_a_quick_stage_sends_its_lines_in_one_event_before_the_outcome() -> None:
    # A long interval: on a loaded machine even a quick stage may outlast the default.
    events = await events_of(MemoryDataPlane(batches(2)), good_steps(), interval=30)
    logs = [e for e in events if isinstance(e, TaskLog)]
    assert len(logs) == 1
    assert events[-2] is logs[0]
    assert lines_of(events) == [
        (
            LogLevel.INFO,
            "",
            "stage 'out' attempt 2 started on host:1: src (file source) → keep (filter transform)"
            " → out (file sink)",
        ),
        (LogLevel.INFO, "src", "read 20 rows"),
        (LogLevel.INFO, "out", "committed 10 rows to memory://out.parquet"),
    ]


async def test_a_long_stage_sends_its_first_line_early() -> None:
    events = await events_of(MemoryDataPlane(batches(10), delay=0.02), good_steps(), interval=0.05)
    kinds = [type(e) for e in events]
    # The first line goes out early; how the rest batch up depends on timing.
    assert kinds.count(TaskLog) >= 2
    assert kinds.index(TaskLog) < kinds.index(TaskProgress)
    assert lines_of(events)[0][2].startswith("stage 'out' attempt 2 started")


async def test_failures_are_logged_at_error_level_with_their_step() -> None:
    error = DomainError(ErrorCode.PERMISSION_DENIED, "PATH_OUTSIDE_ROOT", "path escapes the root")
    events = await events_of(MemoryDataPlane(batches(1), write_error=error), good_steps())
    assert lines_of(events)[-1] == (
        LogLevel.ERROR,
        "out",
        "sink step 'out': path escapes the root",
    )


async def test_internal_errors_are_logged_without_their_details() -> None:
    class Broken(MemoryDataPlane):
        async def write(self, *args: object, **kwargs: object) -> WriteResult:
            raise RuntimeError("secret=hunter2")

    events = await events_of(Broken(batches(1)), good_steps())
    level, step, message = lines_of(events)[-1]
    assert (level, step) == (LogLevel.ERROR, "")
    assert "hunter2" not in message


# --- slots -----------------------------------------------------------------------------


async def test_a_full_executor_refuses_before_any_event_and_frees_slots() -> None:
    slow = MemoryDataPlane(batches(1000), delay=0.01)
    runner = StageRunner(slow, executor_id="host:1", slots=2)
    first = runner.execute(task(good_steps()))
    second = runner.execute(task(good_steps()))
    assert isinstance(await anext(first), TaskStarted)
    assert isinstance(await anext(second), TaskStarted)
    assert runner.running == 2

    with pytest.raises(DomainError) as info:
        await anext(runner.execute(task([inline_source(), discard_sink()])))
    error = info.value
    assert (error.code, error.reason) == (ErrorCode.RESOURCE_EXHAUSTED, "EXECUTOR_BUSY")
    assert error.metadata == {"executor_id": "host:1", "slots": "2"}
    assert "host:1" in error.message
    # A malformed stage is refused as such, busy or not.
    with pytest.raises(DomainError) as info:
        await anext(runner.execute(task([source()])))
    assert info.value.reason == INVALID_STAGE

    await first.aclose()
    assert runner.running == 1
    events = [e async for e in runner.execute(task([inline_source(), discard_sink()]))]
    assert isinstance(events[-1], TaskSucceeded)
    assert runner.running == 1
    await second.aclose()
    assert runner.running == 0


async def test_finished_and_failed_attempts_free_their_slot() -> None:
    runner = StageRunner(MemoryDataPlane(batches(1)), executor_id="host:1", slots=1)
    for steps in (
        [inline_source(), discard_sink()],
        [inline_source(rows=({"v": 1}, {"v": "x"})), discard_sink()],
        good_steps(),
    ):
        events = [e async for e in runner.execute(task(steps))]
        assert isinstance(events[-1], TaskSucceeded | TaskFailed)
        assert runner.running == 0


def test_an_executor_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        StageRunner(NoDataPlane(), executor_id="host:1", slots=0)  # type: ignore[arg-type]


# --- watermarks ------------------------------------------------------------------------


async def test_watermarks_of_source_transform_and_sink_steps() -> None:
    steps = [
        with_watermark(source(), "id"),
        with_watermark(filter_step("keep", "id % 2 = 0 AND id < 25", "src"), "code"),
        with_watermark(sink(), "id"),
    ]
    events = await events_of(MemoryDataPlane(batches(3)), steps)
    done = events[-1]
    assert isinstance(done, TaskSucceeded)
    # code is a string: "8" > "24" > ... in string order.
    assert done.watermarks == {"src": "29", "keep": "8", "out": "24"}
    assert (LogLevel.INFO, "src", "watermark: max(id) = 29") in lines_of(events)


async def test_no_rows_means_no_watermark() -> None:
    steps = [
        with_watermark(source(), "id"),
        filter_step("keep", "id < 0", "src"),
        with_watermark(sink(), "id"),
    ]
    done = (await events_of(MemoryDataPlane(batches(2)), steps))[-1]
    assert isinstance(done, TaskSucceeded)
    assert done.watermarks == {"src": "19"}


async def test_no_op_stage_watermark() -> None:
    rows = ({"ts": "2026-11-01T08:00:00"}, {"ts": "2026-11-02T07:00:00"}, {"ts": None})
    steps = [with_watermark(inline_source(rows=rows), "ts"), discard_sink()]
    done = (await events_of(NoDataPlane(), steps))[-1]  # type: ignore[arg-type]
    assert isinstance(done, TaskSucceeded)
    assert done.watermarks == {"src": "2026-11-02T07:00:00"}


@pytest.mark.parametrize("builtin", [True, False])
async def test_missing_watermark_column_fails_before_anything_is_written(builtin: bool) -> None:
    plane = MemoryDataPlane(batches(1))
    if builtin:
        steps = [inline_source(), with_watermark(discard_sink(), "updated_at")]
    else:
        steps = [source(), filter_step("keep", "true", "src"), with_watermark(sink(), "updated_at")]
    events = await events_of(plane, steps)
    failed = events[-1]
    assert isinstance(failed, TaskFailed)
    assert (failed.reason, failed.step, failed.retryable) == ("INVALID_WATERMARK", "out", False)
    assert "step 'out'" in failed.message
    assert "'updated_at'" in failed.message
    assert failed.metrics.rows_written == 0
    assert not plane.write_started
    assert lines_of(events)[-1] == (LogLevel.ERROR, "out", failed.message)

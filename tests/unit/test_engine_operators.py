"""Python operators between DuckDB segments, quarantine writes, and several sources at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from google.protobuf import json_format

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.core.tasks import CheckResult, StepMetrics
from datadog_platform.executor.engine.kinds import transform_kinds
from datadog_platform.executor.stage import (
    SourceStream,
    StageRunner,
    StageTask,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
    WriteResult,
)
from datadog_platform.executor.transforms.base import TransformKind

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


class OddQuarantine:
    """A test operator: upper-cases names, quarantines odd ids, counts them as a check."""

    def __init__(self, step: str, spec: Any, schema: pa.Schema) -> None:
        self.step = step
        self.output_schema = schema
        self.quarantine = step_pb2.SinkSpec(file=step_pb2.FileSink(path="bad.parquet"))
        self.quarantine_schema = schema.append(pa.field("_failed_checks", pa.string()))
        self.failing = 0
        self.closed = False
        self.fail_on_finish = spec.allow_unsafe

    def process(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.RecordBatch | None]:
        odd = pc.equal(pc.bit_wise_and(batch.column("id"), 1), 1)
        good = batch.filter(pc.invert(odd))
        good = good.set_column(1, "name", pc.utf8_upper(good.column("name")))
        bad = batch.filter(odd)
        self.failing += bad.num_rows
        reasons = pa.array(["odd"] * bad.num_rows, pa.string())
        return good, bad.append_column("_failed_checks", reasons)

    def finish(self) -> None:
        if self.fail_on_finish:
            raise DomainError(ErrorCode.INVALID_ARGUMENT, "CHECK_FAILED", "too many odd rows")

    def results(self) -> tuple[CheckResult, ...]:
        return (CheckResult(self.step, "even", self.failing == 0, self.failing, "", "QUARANTINE"),)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def operator_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    # The "cast" kind stands in for any operator: only its make_operator matters here.
    kind = TransformKind("cast", "test operator", (), 1, 1, True, None, OddQuarantine)
    monkeypatch.setitem(transform_kinds(), "cast", kind)  # type: ignore[arg-type]


def batches(count: int, rows: int = 10, start: int = 0) -> list[pa.RecordBatch]:
    return [
        pa.RecordBatch.from_pydict(
            {
                "id": list(range(start + i * rows, start + (i + 1) * rows)),
                "name": [f"n{n}" for n in range(start + i * rows, start + (i + 1) * rows)],
            },
            schema=SCHEMA,
        )
        for i in range(count)
    ]


class Plane:
    """Sources by path; writes committed by path once their input is exhausted."""

    def __init__(self, data: dict[str, list[pa.RecordBatch]], delay: float = 0.0) -> None:
        self.data = data
        self.delay = delay
        self.open_reads: set[str] = set()
        self.max_open_reads = 0
        self.committed: dict[str, pa.Table] = {}
        self.keys: dict[str, str] = {}

    @asynccontextmanager
    async def read(self, spec: step_pb2.SourceSpec) -> AsyncIterator[SourceStream]:
        path = spec.file.path
        self.open_reads.add(path)
        self.max_open_reads = max(self.max_open_reads, len(self.open_reads))
        try:
            yield SourceStream(SCHEMA, self._batches(path))
        finally:
            self.open_reads.discard(path)

    async def _batches(self, path: str) -> AsyncIterator[pa.RecordBatch]:
        for batch in self.data[path]:
            await asyncio.sleep(self.delay)
            yield batch

    async def write(
        self,
        spec: step_pb2.SinkSpec,
        idempotency_key: str,
        schema: pa.Schema,
        data: AsyncIterator[pa.RecordBatch],
    ) -> WriteResult:
        received = [batch async for batch in data]
        table = pa.Table.from_batches(received, schema=schema)
        self.committed[spec.file.path] = table
        self.keys[spec.file.path] = idempotency_key
        return WriteResult(table.num_rows, f"memory://{spec.file.path}")


def steps(*specs: dict[str, Any]) -> list[step_pb2.Step]:
    return [json_format.ParseDict(spec, step_pb2.Step()) for spec in specs]


def src(name: str) -> dict[str, Any]:
    return {"name": name, "source": {"file": {"path": name}}}


OUT = {"name": "out", "sink": {"file": {"path": "out.parquet"}}}


async def run(plane: Plane, stage: Sequence[step_pb2.Step]) -> list[object]:
    runner = StageRunner(plane, executor_id="host:1", progress_interval=0.05)  # type: ignore[arg-type]
    task = StageTask(run_id="r", stage_id="s", attempt=1, steps=list(stage))
    return [event async for event in runner.execute(task)]


async def test_an_operator_between_two_queries_with_its_quarantine() -> None:
    plane = Plane({"a": batches(3)})
    stage = steps(
        src("a"),
        {"name": "small", "transform": {"filter": {"predicate": "id < 25"}}},
        {"name": "chk", "transform": {"cast": {}}},
        {"name": "named", "transform": {"derive": {"columns": [{"name": "n", "expr": "id * 10"}]}}},
        OUT,
    )
    events = await run(plane, stage)
    done = events[-1]
    assert isinstance(done, TaskSucceeded), done
    out = plane.committed["out.parquet"]
    assert out.column("id").to_pylist() == list(range(0, 25, 2))
    assert out.column("name").to_pylist()[:2] == ["N0", "N2"]
    assert out.column("n").to_pylist()[:2] == [0, 20]
    bad = plane.committed["bad.parquet"]
    assert bad.column("id").to_pylist() == list(range(1, 25, 2))
    assert plane.keys["bad.parquet"] == "r/s/chk/quarantine"
    assert [(o.step, o.location, o.rows_written) for o in done.outputs] == [
        ("out", "memory://out.parquet", 13),
        ("chk", "memory://bad.parquet", 12),
    ]
    assert done.checks == (CheckResult("chk", "even", False, 12, "", "QUARANTINE"),)
    assert [(s.step, s.rows) for s in done.steps] == [("a", 30), ("out", 13), ("chk", 12)]


async def test_an_operator_failing_at_finish_fails_the_stage_and_commits_nothing() -> None:
    plane = Plane({"a": batches(2)})
    stage = steps(src("a"), {"name": "chk", "transform": {"cast": {"allow_unsafe": True}}}, OUT)
    failed = (await run(plane, stage))[-1]
    assert isinstance(failed, TaskFailed)
    assert (failed.reason, failed.step) == ("CHECK_FAILED", "chk")
    assert "out.parquet" not in plane.committed
    assert failed.checks == (CheckResult("chk", "even", False, 10, "", "QUARANTINE"),)


async def test_sources_are_read_concurrently_into_one_query() -> None:
    plane = Plane({"a": batches(5), "b": batches(5, start=1000)}, delay=0.01)
    stage = steps(
        src("a"),
        src("b"),
        {
            "name": "u",
            "inputs": ["a", "b"],
            "transform": {"sql": {"query": "SELECT * FROM a UNION ALL SELECT * FROM b"}},
        },
        OUT,
    )
    events = await run(plane, stage)
    done = events[-1]
    assert isinstance(done, TaskSucceeded), done
    assert plane.max_open_reads == 2
    assert plane.committed["out.parquet"].num_rows == 100
    assert [(s.step, s.rows) for s in done.steps] == [("a", 50), ("b", 50), ("out", 100)]
    progress = [e for e in events if isinstance(e, TaskProgress)]
    assert all(isinstance(step, StepMetrics) for event in progress for step in event.steps)


async def test_closing_a_multi_source_stage_closes_every_stream_within_a_second() -> None:
    plane = Plane({"a": batches(1000), "b": batches(1000)}, delay=0.01)
    stage = steps(
        src("a"),
        src("b"),
        {
            "name": "u",
            "inputs": ["a", "b"],
            "transform": {"sql": {"query": "SELECT * FROM a UNION ALL SELECT * FROM b"}},
        },
        OUT,
    )
    runner = StageRunner(plane, executor_id="host:1", progress_interval=0.05)  # type: ignore[arg-type]
    task = StageTask(run_id="r", stage_id="s", attempt=1, steps=stage)
    events = runner.execute(task)
    assert isinstance(await anext(events), TaskStarted)
    while not isinstance(await anext(events), TaskProgress):
        pass
    assert plane.open_reads == {"a", "b"}
    loop = asyncio.get_running_loop()
    started = loop.time()
    await events.aclose()
    assert loop.time() - started < 1.0
    assert plane.open_reads == set()
    assert plane.committed == {}
    assert runner.running == 0

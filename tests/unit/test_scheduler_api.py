"""The scheduler API's pure parts: protobuf ↔ domain translation and spec checks."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import json_format, struct_pb2

from datadog_platform.api.common.v1 import connection_pb2, task_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.core.connection_refs import connection_references
from datadog_platform.core.errors import DomainError, FieldViolation
from datadog_platform.scheduler.domain import (
    Backfill,
    BackfillState,
    LogLevel,
    LogLine,
    PlannedStage,
    Run,
    RunState,
    RunTrigger,
    StageRun,
    StageState,
)
from datadog_platform.scheduler.pipelines import (
    PipelineRegistry,
    invalid_spec,
    without_output_fields,
)
from datadog_platform.scheduler.servicer import (
    backfill_pb,
    json_of_value,
    log_line_pb,
    params_of,
    plan_pb,
    run_pb,
    value_of_json,
)
from datadog_platform.scheduler.store import open_store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def spec_of(document: dict[str, object]) -> pipeline_pb2.Pipeline:
    return json_format.ParseDict(document, pipeline_pb2.Pipeline())


def test_json_values_round_trip_with_integral_numbers_as_ints() -> None:
    document = {"n": 7, "ratio": 0.5, "name": "eu", "on": True, "none": None, "days": [1, 2.5]}
    value = value_of_json(document)
    assert isinstance(value, struct_pb2.Value)
    back = json_of_value(value)
    assert back == document
    assert isinstance(back["n"], int)
    assert isinstance(back["days"][0], int)
    params = {"a": value_of_json(3), "b": value_of_json("x")}
    assert params_of(params) == {"a": 3, "b": "x"}
    assert json_of_value(value_of_json(2.0**60)) == 2.0**60  # beyond exact ints: a float


def test_run_pb_carries_params_trigger_interval_backfill_and_stage_fields() -> None:
    run = Run(
        run_id="r1",
        pipeline="p",
        pipeline_version=3,
        state=RunState.RUNNING,
        create_time=T0,
        stages=[
            StageRun(
                "facts",
                ("facts", "facts_out"),
                state=StageState.QUEUED,
                attempt=2,
                upstream=("dims",),
                next_attempt_time=T0 + timedelta(seconds=5),
                error_reason="EXECUTOR_UNAVAILABLE",
            )
        ],
        params={"region": "eu", "limit": 10},
        trigger=RunTrigger.BACKFILL,
        logical_date=T0,
        data_interval_start=T0,
        data_interval_end=T0 + timedelta(days=1),
        backfill_id="b1",
    )
    message = run_pb(run)
    assert message.trigger == run_pb2.RUN_TRIGGER_BACKFILL
    assert message.logical_date.ToDatetime(UTC) == T0
    assert message.data_interval_end.ToDatetime(UTC) == T0 + timedelta(days=1)
    assert message.backfill_id == "b1"
    assert {k: json_of_value(v) for k, v in message.params.items()} == run.params
    assert not message.HasField("start_time")
    (stage,) = message.stages
    assert list(stage.upstream) == ["dims"]
    assert stage.next_attempt_time.ToDatetime(UTC) == T0 + timedelta(seconds=5)
    assert (stage.state, stage.attempt) == (run_pb2.STAGE_STATE_QUEUED, 2)


def test_backfill_pb_counts_its_intervals() -> None:
    backfill = Backfill(
        backfill_id="b1",
        pipeline="p",
        start_date=T0,
        end_date=T0 + timedelta(days=3),
        max_active_runs=2,
        only_failed=True,
        state=BackfillState.RUNNING,
        create_time=T0,
        logical_dates=tuple(T0 + timedelta(days=i) for i in range(3)),
        params={"x": 1},
        created_runs=2,
        succeeded_runs=1,
        failed_runs=1,
    )
    message = backfill_pb(backfill)
    assert (message.total_runs, message.created_runs, message.succeeded_runs) == (3, 2, 1)
    assert message.failed_runs == 1
    assert message.state == run_pb2.BACKFILL_STATE_RUNNING
    assert message.only_failed
    assert not message.HasField("end_time")
    assert json_of_value(message.params["x"]) == 1


def test_log_lines_and_plans() -> None:
    line = log_line_pb(LogLine(T0, LogLevel.WARNING, "slow", step="orders"))
    assert line == task_pb2.LogLine(
        time=line.time, level=task_pb2.LOG_LEVEL_WARNING, step="orders", message="slow"
    )
    assert line.time.ToDatetime(UTC) == T0
    plan = plan_pb([PlannedStage("b", ("a", "b"), upstream=("x",), artifact_output="a")])
    assert plan == [pipeline_pb2.PlannedStage(stage_id="b", steps=["a", "b"], upstream=["x"])]


def test_output_only_fields_are_dropped() -> None:
    spec = spec_of(
        {"name": "p", "version": 4, "paused": True, "nextRunTime": "2030-01-01T00:00:00Z"}
    )
    assert without_output_fields(spec) == pipeline_pb2.Pipeline(name="p")


def test_connection_references_name_the_field_of_each_connection() -> None:
    spec = spec_of(
        {
            "name": "p",
            "steps": [
                {"name": "a", "source": {"file": {"path": "x.csv"}}},
                {"name": "b", "source": {"database": {"connection": "wh", "table": "t"}}},
                {"name": "c", "source": {"inline": {"rows": [{"n": 1}]}}},
                {"name": "d", "inputs": ["a"], "sink": {"rest": {"connection": "api"}}},
                {"name": "e", "inputs": ["b"], "sink": {"file": {"connection": "s3", "path": "y"}}},
                {"name": "f", "inputs": ["c"], "sink": {"artifact": {"key": "k"}}},
                {"name": "g", "inputs": ["c"], "sink": {"database": {"connection": ""}}},
            ],
        }
    )
    assert connection_references(spec) == [
        ("pipeline.steps[0].source.file.connection", "local"),
        ("pipeline.steps[1].source.database.connection", "wh"),
        ("pipeline.steps[3].sink.rest.connection", "api"),
        ("pipeline.steps[4].sink.file.connection", "s3"),
    ]


def test_invalid_spec_message_summarises_the_first_problems() -> None:
    violations = [FieldViolation(f"pipeline.steps[{i}]", "bad") for i in range(4)]
    error = invalid_spec(violations)
    assert error.reason == "INVALID_PIPELINE_SPEC"
    assert error.message == (
        "the pipeline spec has 4 problems: pipeline.steps[0]: bad; pipeline.steps[1]: bad; "
        "pipeline.steps[2]: bad; ..."
    )
    assert error.violations == tuple(violations)


class _Catalog:
    """The connector's connection list as the registry sees it (``hang``: never answers)."""

    def __init__(self, names: list[str], *, hang: bool = False) -> None:
        self.names = names
        self.hang = hang
        self.calls = 0

    async def list_connections(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[connection_pb2.Connection], str]:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        # Two pages, to check that the registry reads them all.
        start = int(page_token or 0)
        page = [connection_pb2.Connection(name=n) for n in self.names[start : start + 1]]
        more = start + 1 < len(self.names)
        return page, str(start + 1) if more else ""


FILE_PIPELINE = {
    "name": "p",
    "steps": [
        {"name": "a", "source": {"file": {"path": "in.csv"}}},
        {
            "name": "b",
            "inputs": ["a"],
            "sink": {"file": {"connection": "archive", "path": "o.csv"}},
        },
    ],
}


async def test_connections_are_checked_when_the_connector_answers(tmp_path: Path) -> None:
    store = await open_store(str(tmp_path / "s.db"))
    try:
        catalog = _Catalog(["local", "archive"])
        registry = PipelineRegistry(store, catalog)
        assert (await registry.validate(spec_of(FILE_PIPELINE))).valid
        catalog.names = ["local", "warehouse"]
        verdict = await registry.validate(spec_of(FILE_PIPELINE))
        assert [v.field for v in verdict.violations] == ["pipeline.steps[1].sink.file.connection"]
        assert "configured: local, warehouse" in verdict.violations[0].description
        with pytest.raises(DomainError) as raised:
            await registry.create(spec_of(FILE_PIPELINE))
        assert raised.value.reason == "INVALID_PIPELINE_SPEC"
        # A spec naming no connection does not ask the connector.
        calls = catalog.calls
        inline = {"name": "q", "steps": [{"name": "a", "source": {"inline": {}}}]}
        await registry.validate(spec_of(inline))
        assert catalog.calls == calls
    finally:
        await store.close()


async def test_a_connector_that_does_not_answer_does_not_block_creation(tmp_path: Path) -> None:
    store = await open_store(str(tmp_path / "s.db"))
    try:
        registry = PipelineRegistry(store, _Catalog([], hang=True), connection_check_timeout=0.05)
        created = await registry.create(spec_of(FILE_PIPELINE))
        assert created.spec.version == 1
    finally:
        await store.close()


def test_successive_snapshots_reconvert_only_the_stages_that_changed() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    stages = [StageRun(f"s{i}", (f"s{i}",)) for i in range(3)]
    run = Run("r1", "p", 1, RunState.RUNNING, now, stages)
    converted: dict = {}
    first = run_pb(run, converted)
    # The next snapshot: copies, one of them changed.
    later = Run("r1", "p", 1, RunState.RUNNING, now, [copy.copy(s) for s in stages])
    later.stages[1].state = StageState.SUCCEEDED
    later.stages[1].attempt = 1
    second = run_pb(later, converted)
    assert second.stages[1].state == run_pb2.STAGE_STATE_SUCCEEDED
    assert second.stages[1].attempt == 1
    assert second.stages[0] == first.stages[0]
    assert converted["s0"][0] is stages[0]  # unchanged: the first conversion is reused
    assert converted["s1"][0] is later.stages[1]
    assert second == run_pb(later)  # the same message as a conversion from scratch

"""SQLite store: pipelines, runs, idempotency records, paging, migrations, reopening."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.scheduler.domain import (
    Run,
    RunState,
    StageOutput,
    StageRun,
    StageState,
    TaskMetrics,
)
from datadog_platform.scheduler.store import MIGRATIONS, IdempotencyKey, Store

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def pipeline(name: str, description: str = "") -> pipeline_pb2.Pipeline:
    spec = pipeline_pb2.Pipeline(name=name, description=description, tags=["t"])
    spec.labels["team"] = "data"
    step = spec.steps.add(name="src")
    step.source.file.path = "in.csv"
    return spec


def new_run(run_id: str, name: str = "p") -> Run:
    return Run(
        run_id=run_id,
        pipeline=name,
        pipeline_version=1,
        state=RunState.QUEUED,
        create_time=T0,
        stages=[StageRun("out", ("src", "out")), StageRun("other", ("a", "other"))],
        request_id="req-1",
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "nested" / "s.db")
    yield opened
    await opened.close()


async def test_open_creates_the_file_in_wal_mode_with_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "s.db"
    store = await Store.open(path)
    assert await store.schema_version() == len(MIGRATIONS)
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"pipelines", "pipeline_versions", "runs", "stages", "idempotency_records"} <= tables


async def test_migrations_apply_once_and_reopening_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    for _ in range(3):
        store = await Store.open(path)
        assert await store.schema_version() == len(MIGRATIONS)
        await store.close()


async def test_create_and_get_a_pipeline(store: Store) -> None:
    spec = pipeline("orders")
    spec.version = 7  # output-only: ignored
    created = await store.create_pipeline(spec, T0)
    assert created.version == 1
    assert created.create_time.ToDatetime(tzinfo=UTC) == T0
    assert created.update_time.ToDatetime(tzinfo=UTC) == T0
    assert created.labels["team"] == "data"
    assert created.steps[0].source.file.path == "in.csv"
    assert await store.get_pipeline("orders") == created
    assert await store.get_pipeline("orders", 1) == created


async def test_unknown_pipelines_and_versions_are_not_found(store: Store) -> None:
    await store.create_pipeline(pipeline("orders"), T0)
    with pytest.raises(DomainError) as raised:
        await store.get_pipeline("nope")
    assert (raised.value.code, raised.value.reason) == (ErrorCode.NOT_FOUND, "PIPELINE_NOT_FOUND")
    with pytest.raises(DomainError) as raised:
        await store.get_pipeline("orders", 2)
    assert raised.value.reason == "PIPELINE_VERSION_NOT_FOUND"


async def test_an_existing_name_already_exists(store: Store) -> None:
    await store.create_pipeline(pipeline("orders"), T0)
    with pytest.raises(DomainError) as raised:
        await store.create_pipeline(pipeline("orders", "other"), T0)
    assert (raised.value.code, raised.value.reason) == (
        ErrorCode.ALREADY_EXISTS,
        "PIPELINE_ALREADY_EXISTS",
    )
    assert (await store.get_pipeline("orders")).description == ""


async def test_pipeline_idempotency_returns_the_first_result(store: Store) -> None:
    key = IdempotencyKey("CreatePipeline", "req-1", "fp")
    first = await store.create_pipeline(pipeline("orders"), T0, key)
    again = await store.create_pipeline(pipeline("orders"), T0 + timedelta(hours=1), key)
    assert again == first
    with pytest.raises(DomainError) as raised:
        await store.create_pipeline(
            pipeline("orders"), T0, IdempotencyKey("CreatePipeline", "req-1", "other")
        )
    assert raised.value.reason == "REQUEST_ID_REUSED"


async def test_list_pipelines_pages_by_name(store: Store) -> None:
    for name in ["c", "a", "e", "b", "d"]:
        await store.create_pipeline(pipeline(name), T0)
    assert [p.name for p in await store.list_pipelines(2)] == ["a", "b"]
    assert [p.name for p in await store.list_pipelines(2, after="b")] == ["c", "d"]
    assert [p.name for p in await store.list_pipelines(10, after="d")] == ["e"]
    assert await store.list_pipelines(10, after="e") == []
    assert all(p.version == 1 for p in await store.list_pipelines(10))


async def test_runs_round_trip_with_their_stages(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    run = new_run("r1")
    assert await store.create_run(run) == run
    assert await store.get_run("r1") == run

    run.state = RunState.RUNNING
    run.start_time = T0 + timedelta(seconds=1)
    stage = run.stages[0]
    stage.state = StageState.SUCCEEDED
    stage.attempt = 1
    stage.start_time, stage.end_time = T0, T0 + timedelta(seconds=2)
    stage.metrics = TaskMetrics(rows_read=50, bytes_read=1000, rows_written=35, bytes_written=700)
    stage.outputs = (StageOutput("out", "file:///tmp/o.parquet", 35),)
    await store.update_run(run, [stage])
    assert await store.get_run("r1") == run

    run.stages[1].state = StageState.FAILED
    run.stages[1].error_reason = "SOURCE_NOT_FOUND"
    run.stages[1].error_message = "no such file"
    run.state, run.error_message, run.end_time = RunState.FAILED, "it failed", T0
    await store.update_run(run, [run.stages[1]])
    assert await store.get_run("r1") == run


async def test_unknown_runs_are_not_found(store: Store) -> None:
    with pytest.raises(DomainError) as raised:
        await store.get_run("nope")
    assert (raised.value.code, raised.value.reason) == (ErrorCode.NOT_FOUND, "RUN_NOT_FOUND")


async def test_run_idempotency_returns_the_first_run(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    key = IdempotencyKey("RunPipeline", "req-1", "p")
    first = await store.create_run(new_run("r1"), key)
    first_copy = new_run("r1")
    # Progress since then does not change what the retry gets: the first response.
    first.state = RunState.RUNNING
    await store.update_run(first)
    again = await store.create_run(new_run("r2"), key)
    assert again == first_copy
    with pytest.raises(DomainError):
        await store.get_run("r2")
    # The same request_id on another method is another key.
    await store.create_pipeline(pipeline("q"), T0, IdempotencyKey("CreatePipeline", "req-1", "x"))


async def test_unfinished_runs_are_the_queued_and_running_ones(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    for run_id, state in [
        ("r1", RunState.QUEUED),
        ("r2", RunState.RUNNING),
        ("r3", RunState.SUCCEEDED),
        ("r4", RunState.FAILED),
    ]:
        run = new_run(run_id)
        run.state = state
        await store.create_run(run)
    assert [r.run_id for r in await store.unfinished_runs()] == ["r1", "r2"]


async def test_everything_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    created = await store.create_pipeline(
        pipeline("p"), T0, IdempotencyKey("CreatePipeline", "req", "fp")
    )
    run = new_run("r1")
    await store.create_run(run, IdempotencyKey("RunPipeline", "req", "p"))
    await store.close()

    store = await Store.open(path)
    try:
        assert await store.get_pipeline("p") == created
        assert [p.name for p in await store.list_pipelines(10)] == ["p"]
        assert await store.get_run("r1") == run
        assert await store.unfinished_runs() == [run]
        again = await store.create_pipeline(
            pipeline("p"), T0, IdempotencyKey("CreatePipeline", "req", "fp")
        )
        assert again == created
        assert (
            await store.create_run(new_run("r9"), IdempotencyKey("RunPipeline", "req", "p"))
        ) == run
    finally:
        await store.close()


async def test_a_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    run = new_run("r1")
    run.stages.append(StageRun("out", ("dup",)))  # duplicate stage id: the insert fails
    with pytest.raises(sqlite3.IntegrityError):
        await store.create_run(run)
    with pytest.raises(DomainError):
        await store.get_run("r1")

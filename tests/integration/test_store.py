"""The scheduler store, one suite run against SQLite and the real PostgreSQL server.

Each PostgreSQL test gets a database of its own (random name, dropped afterwards) on
127.0.0.1:5432 (user postgres); without the server these tests fail, never skip.
Backend-specific behaviour (SQLite exclusivity and WAL, PostgreSQL SKIP LOCKED and
concurrent migrations) has tests of its own at the end.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.cli import db as db_cli
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.scheduler.domain import (
    Backfill,
    BackfillState,
    CheckResult,
    LogLevel,
    LogLine,
    Run,
    RunChange,
    RunState,
    RunTrigger,
    StageLogLine,
    StageOutput,
    StageRun,
    StageState,
    TaskMetrics,
)
from datadog_platform.scheduler.store import (
    IdempotencyKey,
    RenewResult,
    Store,
    StoreError,
    StoreLockedError,
    open_store,
    parse_store_url,
)
from datadog_platform.scheduler.store.postgres import MIGRATIONS as PG_MIGRATIONS
from datadog_platform.scheduler.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
LEASE = T0 + timedelta(seconds=10)


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty store of each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "nested" / "s.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await open_store(store_url)
    try:
        yield opened
    finally:
        await opened.close()


# --- helpers -------------------------------------------------------------------------


def pipeline(
    name: str,
    description: str = "",
    *,
    tags: Sequence[str] = ("t",),
    labels: dict[str, str] | None = None,
    cron: str = "",
) -> pipeline_pb2.Pipeline:
    spec = pipeline_pb2.Pipeline(name=name, description=description, tags=list(tags))
    for key, value in (labels if labels is not None else {"team": "data"}).items():
        spec.labels[key] = value
    step = spec.steps.add(name="src")
    step.source.file.path = "in.csv"
    if cron:
        spec.schedule.cron = cron
        spec.schedule.timezone = "Europe/Paris"
    return spec


def new_run(
    run_id: str,
    name: str = "p",
    *,
    state: RunState = RunState.QUEUED,
    create_time: datetime = T0,
    logical_date: datetime | None = None,
    backfill_id: str = "",
) -> Run:
    logical = logical_date or create_time
    return Run(
        run_id=run_id,
        pipeline=name,
        pipeline_version=1,
        state=state,
        create_time=create_time,
        stages=[
            StageRun("a", ("src", "a")),
            StageRun("b", ("a", "b"), upstream=("a",)),
        ],
        request_id="req-1",
        params={"n": 1, "s": "x", "l": [1.5, None, True], "d": {"k": "v"}},
        trigger=RunTrigger.BACKFILL if backfill_id else RunTrigger.SCHEDULE,
        logical_date=logical,
        data_interval_start=logical,
        data_interval_end=logical + timedelta(days=1),
        backfill_id=backfill_id,
    )


async def create(store: Store, run: Run, owner: str = "A", lease: datetime = LEASE) -> Run:
    created, inserted = await store.create_run(run, owner=owner, lease_until=lease)
    assert inserted
    return created


def log(run: Run, stage_id: str, attempt: int, seq: int, message: str = "") -> StageLogLine:
    line = LogLine(T0 + timedelta(seconds=seq), LogLevel.INFO, message or f"line {seq}", "src")
    return StageLogLine(run.run_id, stage_id, attempt, seq, line)


def reason_of(raised: pytest.ExceptionInfo[DomainError]) -> tuple[ErrorCode, str]:
    return raised.value.code, raised.value.reason


async def finish(store: Store, run: Run, state: RunState) -> None:
    run.state = state
    run.end_time = T0
    for stage in run.stages:
        if not stage.state.is_terminal:
            stage.state = StageState.SUCCEEDED if state is RunState.SUCCEEDED else StageState.FAILED
    assert await store.apply([RunChange(run, list(run.stages))]) == set()


# --- opening and migrations ----------------------------------------------------------


async def test_open_migrates_to_the_latest_version_and_upgrade_is_idempotent(
    store_url: str,
) -> None:
    for _ in range(2):
        store = await open_store(store_url)
        try:
            assert await store.schema_version() == store.latest_schema_version >= 1
            assert await store.upgrade() == []
        finally:
            await store.close()


async def test_upgrade_applies_every_migration_of_a_new_database_once(store_url: str) -> None:
    store = await open_store(store_url, migrate=False)
    try:
        assert await store.schema_version() == 0
        assert await store.upgrade() == list(range(1, store.latest_schema_version + 1))
        assert await store.upgrade() == []
        assert await store.schema_version() == store.latest_schema_version
    finally:
        await store.close()


async def test_backend_properties(store: Store, store_url: str) -> None:
    assert store.backend == parse_store_url(store_url).backend
    assert store.single_scheduler is (store.backend == "sqlite")


def test_store_urls_name_their_backend() -> None:
    assert parse_store_url("a/b.db").backend == "sqlite"
    assert parse_store_url("a/b.db").location == "a/b.db"
    assert parse_store_url("sqlite:///var/s.db").location == "/var/s.db"
    assert parse_store_url("sqlite://rel/s.db").location == "rel/s.db"
    assert parse_store_url("postgres://u@h/d").backend == "postgresql"
    secret = parse_store_url("postgresql://u:pw@h:5432/d")
    assert (secret.backend, secret.location) == ("postgresql", "postgresql://u:pw@h:5432/d")
    assert secret.display == "postgresql://u:***@h:5432/d"
    with pytest.raises(StoreError, match="unsupported store URL"):
        parse_store_url("mysql://h/d")
    with pytest.raises(StoreError):
        parse_store_url("sqlite://")


# --- pipelines -----------------------------------------------------------------------


async def test_create_and_get_a_pipeline(store: Store) -> None:
    spec = pipeline("orders")
    spec.version = 7  # output-only: ignored
    spec.paused = True  # output-only: ignored
    created = await store.create_pipeline(spec, T0)
    assert created.version == 1
    assert created.create_time.ToDatetime(tzinfo=UTC) == T0
    assert created.update_time.ToDatetime(tzinfo=UTC) == T0
    assert not created.paused
    assert created.labels["team"] == "data"
    assert created.steps[0].source.file.path == "in.csv"
    assert await store.get_pipeline("orders") == created
    assert await store.get_pipeline("orders", 1) == created


async def test_unknown_pipelines_and_versions_are_not_found(store: Store) -> None:
    await store.create_pipeline(pipeline("orders"), T0)
    with pytest.raises(DomainError) as raised:
        await store.get_pipeline("nope")
    assert reason_of(raised) == (ErrorCode.NOT_FOUND, "PIPELINE_NOT_FOUND")
    with pytest.raises(DomainError) as raised:
        await store.get_pipeline("orders", 2)
    assert reason_of(raised) == (ErrorCode.NOT_FOUND, "PIPELINE_VERSION_NOT_FOUND")
    for call in (
        store.update_pipeline(pipeline("nope"), T0),
        store.set_paused("nope", True, T0),
        store.delete_pipeline("nope"),
    ):
        with pytest.raises(DomainError) as raised:
            await call
        assert reason_of(raised) == (ErrorCode.NOT_FOUND, "PIPELINE_NOT_FOUND")


async def test_an_existing_name_already_exists(store: Store) -> None:
    await store.create_pipeline(pipeline("orders"), T0)
    with pytest.raises(DomainError) as raised:
        await store.create_pipeline(pipeline("orders", "other"), T0)
    assert reason_of(raised) == (ErrorCode.ALREADY_EXISTS, "PIPELINE_ALREADY_EXISTS")
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

    update_key = IdempotencyKey("UpdatePipeline", "req-1", "fp2")
    v2 = await store.update_pipeline(pipeline("orders", "v2"), T0, update_key)
    assert await store.update_pipeline(pipeline("orders", "v2"), T0, update_key) == v2
    assert (await store.get_pipeline("orders")).version == 2


async def test_updates_make_new_versions_and_keep_the_old_ones(store: Store) -> None:
    await store.create_pipeline(pipeline("orders", "one"), T0)
    t1 = T0 + timedelta(hours=1)
    v2 = await store.update_pipeline(pipeline("orders", "two"), t1)
    assert (v2.version, v2.description) == (2, "two")
    assert v2.create_time.ToDatetime(tzinfo=UTC) == T0
    assert v2.update_time.ToDatetime(tzinfo=UTC) == t1
    assert (await store.get_pipeline("orders", 1)).description == "one"
    assert await store.get_pipeline("orders") == v2
    assert (await store.update_pipeline(pipeline("orders", "three"), t1)).version == 3


async def test_list_pipelines_pages_by_name(store: Store) -> None:
    for name in ["c", "a", "e", "b", "d"]:
        await store.create_pipeline(pipeline(name), T0)
    await store.update_pipeline(pipeline("b", "new"), T0)
    assert [p.name for p in await store.list_pipelines(2)] == ["a", "b"]
    assert [p.name for p in await store.list_pipelines(2, after="b")] == ["c", "d"]
    assert [p.name for p in await store.list_pipelines(10, after="d")] == ["e"]
    assert await store.list_pipelines(10, after="e") == []
    listed = {p.name: p for p in await store.list_pipelines(10)}
    assert (listed["b"].version, listed["b"].description) == (2, "new")


async def test_list_pipelines_filters_by_every_tag_and_label(store: Store) -> None:
    await store.create_pipeline(
        pipeline("a", tags=["x", "y"], labels={"team": "d", "env": "p"}), T0
    )
    await store.create_pipeline(pipeline("b", tags=["x"], labels={"team": "d"}), T0)
    await store.create_pipeline(pipeline("c", tags=[], labels={"team": "e"}), T0)

    async def names(**filters: object) -> list[str]:
        return [p.name for p in await store.list_pipelines(10, **filters)]  # type: ignore[arg-type]

    assert await names(tags=["x"]) == ["a", "b"]
    assert await names(tags=["x", "y"]) == ["a"]
    assert await names(tags=["z"]) == []
    assert await names(labels={"team": "d"}) == ["a", "b"]
    assert await names(labels={"team": "d", "env": "p"}) == ["a"]
    assert await names(labels={"team": "e"}, tags=["x"]) == []
    assert await names(tags=["x"], after="a") == ["b"]
    # The latest version's tags and labels count, not the old ones.
    await store.update_pipeline(pipeline("b", tags=["z"], labels={"team": "f"}), T0)
    assert await names(tags=["x"]) == ["a"]
    assert await names(tags=["z"], labels={"team": "f"}) == ["b"]


async def test_pause_and_unpause(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    paused = await store.set_paused("p", True, T0)
    assert paused.paused
    assert (await store.get_pipeline("p")).paused
    assert (await store.list_pipelines(10))[0].paused
    # Pausing is the pipeline's, not a version's: it survives an update.
    assert (await store.update_pipeline(pipeline("p", "v2"), T0)).paused
    assert not (await store.set_paused("p", False, T0)).paused


async def test_schedule_states(store: Store) -> None:
    await store.create_pipeline(pipeline("manual"), T0)
    await store.create_pipeline(pipeline("daily", cron="@daily"), T0)
    [state] = await store.schedule_states()
    assert state.pipeline.name == "daily"
    assert state.pipeline.schedule.cron == "@daily"
    assert (state.paused, state.last_fire_time, state.create_time) == (False, None, T0)

    fire = T0 + timedelta(days=1)
    await store.set_last_fire_time("daily", fire)
    await store.set_last_fire_time("daily", T0)  # never backwards
    await store.set_paused("daily", True, T0)
    t1 = T0 + timedelta(days=2)
    await store.update_pipeline(pipeline("daily", cron="@hourly"), t1)  # keeps the schedule
    await store.update_pipeline(pipeline("manual", cron="@hourly"), t1)  # gains one
    states = {s.pipeline.name: s for s in await store.schedule_states()}
    assert states["daily"].pipeline.schedule.cron == "@hourly"
    assert states["daily"].pipeline.version == 2
    assert (states["daily"].paused, states["daily"].last_fire_time) == (True, fire)
    assert states["daily"].create_time == T0
    assert (states["manual"].create_time, states["manual"].last_fire_time) == (t1, None)

    await store.update_pipeline(pipeline("daily"), t1)  # loses it
    assert [s.pipeline.name for s in await store.schedule_states()] == ["manual"]
    await store.update_pipeline(pipeline("daily", cron="@daily"), t1 + timedelta(hours=1))
    again = {s.pipeline.name: s for s in await store.schedule_states()}["daily"]
    assert (again.create_time, again.last_fire_time) == (t1 + timedelta(hours=1), None)


async def test_delete_cascades_to_everything_of_the_pipeline(store: Store) -> None:
    await store.create_pipeline(pipeline("p", cron="@daily"), T0)
    await store.update_pipeline(pipeline("p", "v2", cron="@daily", tags=["only-p"]), T0)
    await store.create_pipeline(pipeline("other", tags=["only-p"]), T0)
    done = await create(store, new_run("r1", backfill_id="b1"))
    await store.apply([RunChange(done, logs=[log(done, "a", 1, 1)], watermarks={"src": "9"})])
    await finish(store, done, RunState.SUCCEEDED)
    await create(store, new_run("r2", create_time=T0 + timedelta(seconds=1)))
    kept = await create(store, new_run("o1", "other"))
    await store.apply([RunChange(kept, logs=[log(kept, "a", 1, 1)], watermarks={"src": "1"})])
    await store.create_backfill(backfill("b1"))
    await store.set_last_fire_time("p", T0)

    with pytest.raises(DomainError) as raised:
        await store.delete_pipeline("p")  # r2 is QUEUED
    assert reason_of(raised) == (ErrorCode.FAILED_PRECONDITION, "PIPELINE_HAS_ACTIVE_RUNS")
    assert raised.value.metadata["run_id"] == "r2"
    await store.cancel_run("r2", T0)

    result = await store.delete_pipeline("p")
    assert (result.versions, result.runs) == (2, 2)
    for call in (store.get_pipeline("p"), store.get_run("r1"), store.get_backfill("b1")):
        with pytest.raises(DomainError):
            await call
    assert await store.stage_logs("r1", "a", 1, 0, 10) == []
    assert await store.watermarks("p") == {}
    assert await store.schedule_states() == []
    assert [p.name for p in await store.list_pipelines(10, tags=["only-p"])] == ["other"]
    assert await store.list_runs(10, pipeline="p") == []
    # The other pipeline is untouched; the name can be reused from version 1.
    assert (await store.get_run("o1")).run_id == "o1"
    assert await store.watermarks("other") == {"src": "1"}
    assert len(await store.stage_logs("o1", "a", 1, 0, 10)) == 1
    recreated = await store.create_pipeline(pipeline("p", tags=[]), T0)
    assert recreated.version == 1
    assert await store.list_pipelines(10, tags=["only-p"]) == [await store.get_pipeline("other")]


# --- runs ----------------------------------------------------------------------------


async def test_runs_round_trip_with_every_field(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    run = new_run("r1")
    run.stages[1].next_attempt_time = T0
    run.stages[1].attempt_base = 2
    created, inserted = await store.create_run(run, owner="A", lease_until=LEASE)
    assert inserted
    assert created.generation == 1
    assert await store.get_run("r1") == created

    run.state = RunState.RUNNING
    run.start_time = T0 + timedelta(seconds=1)
    stage = run.stages[0]
    stage.state = StageState.SUCCEEDED
    stage.attempt = 1
    stage.start_time, stage.end_time = T0, T0 + timedelta(seconds=2)
    stage.metrics = TaskMetrics(rows_read=50, bytes_read=1000, rows_written=35, bytes_written=700)
    stage.outputs = (StageOutput("out", "file:///tmp/o.parquet", 35),)
    assert await store.apply([RunChange(run, [stage])]) == set()
    assert await store.get_run("r1") == run

    run.stages[1].state = StageState.FAILED
    run.stages[1].error_reason = "SOURCE_NOT_FOUND"
    run.stages[1].error_message = "no such file"
    run.state, run.error_message, run.end_time = RunState.FAILED, "it failed", T0
    assert await store.apply([RunChange(run, [run.stages[1]])]) == set()
    assert await store.get_run("r1") == run


CHECKS = (
    CheckResult("checked", "ids", True, action="FAIL"),
    CheckResult("checked", "email", False, 12, "12 rows do not match '^.+@.+$'", "QUARANTINE"),
    CheckResult("checked", "unicode ✓", False, 0, "row count 0 < 1 — «vide»", "WARN"),
)


async def test_stage_checks_round_trip_on_success_and_failure(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    run = new_run("r1")
    await store.create_run(run, owner="A", lease_until=LEASE)
    assert (await store.get_run("r1")).stages[0].checks == ()
    run.stages[0].state = StageState.SUCCEEDED
    run.stages[0].checks = CHECKS
    run.stages[1].state = StageState.FAILED
    run.stages[1].checks = (CheckResult("b", "positive", False, 3, "3 rows", "FAIL"),)
    assert await store.apply([RunChange(run, list(run.stages))]) == set()
    stored = await store.get_run("r1")
    assert stored.stages[0].checks == CHECKS
    assert stored.stages[1].checks == run.stages[1].checks
    assert stored == run
    [listed] = await store.list_runs(10)
    assert listed.stages[0].checks == CHECKS
    run.stages[0].checks = ()  # a later attempt without checks clears them
    assert await store.apply([RunChange(run, [run.stages[0]])]) == set()
    assert (await store.get_run("r1")).stages[0].checks == ()


async def test_idempotency_records_keep_checks_and_read_records_without_them(
    store: Store,
) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    run = new_run("r1")
    run.stages[0].checks = CHECKS
    key = IdempotencyKey("RunPipeline", "req-c", "p")
    await store.create_run(run, key, owner="A", lease_until=LEASE)
    again, inserted = await store.create_run(new_run("r2"), key, owner="A", lease_until=LEASE)
    assert not inserted
    assert again.stages[0].checks == CHECKS


async def test_create_run_inserts_once_per_run_id_and_per_idempotency_key(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    first = await create(store, new_run("r1"))
    # Same run id (a deterministic scheduled run created twice): the stored one.
    other = new_run("r1", create_time=T0 + timedelta(hours=1))
    again, inserted = await store.create_run(other, owner="B", lease_until=LEASE)
    assert not inserted
    assert again == first

    key = IdempotencyKey("RunPipeline", "req-1", "p")
    recorded, inserted = await store.create_run(new_run("r2"), key, owner="A", lease_until=LEASE)
    assert inserted
    recorded_copy = replace(recorded, stages=[replace(s) for s in recorded.stages])
    recorded.state = RunState.RUNNING  # progress does not change what a retry gets
    await store.apply([RunChange(recorded)])
    retried, inserted = await store.create_run(new_run("r3"), key, owner="A", lease_until=LEASE)
    assert not inserted
    assert retried == recorded_copy
    with pytest.raises(DomainError):
        await store.get_run("r3")
    with pytest.raises(DomainError) as raised:
        await store.create_run(
            new_run("r4"), IdempotencyKey("RunPipeline", "req-1", "q"), owner="A", lease_until=LEASE
        )
    assert raised.value.reason == "REQUEST_ID_REUSED"
    # The same request_id on another method is another key.
    await store.create_pipeline(pipeline("q"), T0, IdempotencyKey("CreatePipeline", "req-1", "x"))


async def test_create_run_of_an_unknown_pipeline_is_not_found(store: Store) -> None:
    with pytest.raises(DomainError) as raised:
        await store.create_run(new_run("r1", "nope"), owner="A", lease_until=LEASE)
    assert reason_of(raised) == (ErrorCode.NOT_FOUND, "PIPELINE_NOT_FOUND")


async def test_unknown_runs_are_not_found(store: Store) -> None:
    for call in (
        store.get_run("nope"),
        store.cancel_run("nope", T0),
        store.request_cancel("nope"),
        store.retry_run("nope", T0, owner="A", lease_until=LEASE),
        store.latest_attempt("nope", "a"),
    ):
        with pytest.raises(DomainError) as raised:
            await call
        assert reason_of(raised) == (ErrorCode.NOT_FOUND, "RUN_NOT_FOUND")


async def test_apply_writes_all_changes_in_one_go(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    await store.create_pipeline(pipeline("q"), T0)
    r1 = await create(store, new_run("r1"))
    r2 = await create(store, new_run("r2", "q"))
    r1.state = r2.state = RunState.RUNNING
    r1.stages[0].state = StageState.RUNNING
    r1.stages[0].attempt = 1
    r2.stages[1].state = StageState.QUEUED
    lines = [log(r1, "a", 1, seq) for seq in (1, 2, 3)]
    changes = [
        RunChange(r1, [r1.stages[0]], lines, {"src": "10"}),
        RunChange(r2, [r2.stages[1]], [], {"src": "20", "x": "y"}),
    ]
    assert await store.apply(changes) == set()
    assert await store.get_run("r1") == r1
    assert await store.get_run("r2") == r2
    assert await store.stage_logs("r1", "a", 1, 0, 10) == lines
    assert await store.watermarks("p") == {"src": "10"}
    assert await store.watermarks("q") == {"src": "20", "x": "y"}
    # Watermarks are upserted; a replayed log line is ignored.
    again = RunChange(r1, logs=[log(r1, "a", 1, 3, "replayed"), log(r1, "a", 1, 4)])
    again.watermarks["src"] = "11"
    assert await store.apply([again]) == set()
    assert await store.watermarks("p") == {"src": "11"}
    assert [line.line.message for line in await store.stage_logs("r1", "a", 1, 0, 10)] == [
        "line 1",
        "line 2",
        "line 3",
        "line 4",
    ]
    assert await store.apply([]) == set()


async def test_apply_with_a_stale_generation_writes_nothing_of_that_run(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    r1 = await create(store, new_run("r1", create_time=T0))
    r2 = await create(store, new_run("r2", create_time=T0 + timedelta(seconds=1)))
    before = await store.get_run("r1")
    # Another scheduler adopts r1 (its lease expired): r1's generation moves on.
    later = LEASE + timedelta(seconds=1)
    [adopted] = await store.claim_runs("B", later, later + timedelta(seconds=10), 1)
    assert adopted.run_id == "r1"
    assert adopted.generation == 2

    for run in (r1, r2):
        run.state = RunState.RUNNING
        run.stages[0].state = StageState.RUNNING
    ghost = replace(r2, run_id="ghost")
    changes = [
        RunChange(r1, [r1.stages[0]], [log(r1, "a", 1, 1)], {"src": "stale"}),
        RunChange(r2, [r2.stages[0]], [log(r2, "a", 1, 1)], {"other": "ok"}),
        RunChange(ghost),
    ]
    assert await store.apply(changes) == {"r1", "ghost"}
    assert await store.get_run("r1") == replace(before, generation=2)
    assert await store.stage_logs("r1", "a", 1, 0, 10) == []
    assert await store.watermarks("p") == {"other": "ok"}
    assert (await store.get_run("r2")).stages[0].state is StageState.RUNNING
    # The new owner's writes go through.
    adopted.state = RunState.RUNNING
    assert await store.apply([RunChange(adopted)]) == set()
    assert (await store.get_run("r1")).state is RunState.RUNNING


async def test_list_runs_filters_and_pages_newest_first(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    await store.create_pipeline(pipeline("q"), T0)
    for run_id, name, backfill_id in [
        ("r1", "p", ""),
        ("r2", "q", ""),
        ("r3", "p", "b1"),
        ("r4", "p", "b1"),
        ("r5", "q", ""),
    ]:
        await create(store, new_run(run_id, name, backfill_id=backfill_id))
    await finish(store, await store.get_run("r4"), RunState.FAILED)

    async def ids(limit: int = 10, **filters: object) -> list[str]:
        return [r.run_id for r in await store.list_runs(limit, **filters)]  # type: ignore[arg-type]

    assert await ids() == ["r5", "r4", "r3", "r2", "r1"]
    assert await ids(2) == ["r5", "r4"]
    assert await ids(2, before="r4") == ["r3", "r2"]
    assert await ids(pipeline="p") == ["r4", "r3", "r1"]
    assert await ids(states=[RunState.FAILED]) == ["r4"]
    assert await ids(states=[RunState.QUEUED, RunState.RUNNING], pipeline="q") == ["r5", "r2"]
    assert await ids(backfill_id="b1") == ["r4", "r3"]
    assert await ids(backfill_id="b1", before="r4") == ["r3"]
    runs = await store.list_runs(1, pipeline="p")
    assert [len(r.stages) for r in runs] == [2]


async def test_runs_by_logical_date_keeps_the_latest_created_run(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    day = timedelta(days=1)
    await create(store, new_run("a1", logical_date=T0, create_time=T0))
    await create(store, new_run("a2", logical_date=T0, create_time=T0 + timedelta(minutes=5)))
    await create(store, new_run("b1", logical_date=T0 + day, create_time=T0))
    await create(store, new_run("c1", logical_date=T0 + 2 * day, create_time=T0))
    found = await store.runs_by_logical_date("p", T0, T0 + 2 * day)
    assert {d: r.run_id for d, r in found.items()} == {T0: "a2", T0 + day: "b1"}
    assert await store.runs_by_logical_date("q", T0, T0 + 2 * day) == {}


async def test_cancel_a_run_nobody_drives(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    run = await create(store, new_run("r1"))
    run.stages[0].state = StageState.SUCCEEDED
    await store.apply([RunChange(run, [run.stages[0]])])
    key = IdempotencyKey("CancelRun", "c-1", "r1")
    cancelled = await store.cancel_run("r1", T0, key)
    assert cancelled.state is RunState.CANCELLED
    assert cancelled.end_time == T0
    assert [s.state for s in cancelled.stages] == [StageState.SUCCEEDED, StageState.CANCELLED]
    assert cancelled.generation == 2
    assert await store.get_run("r1") == cancelled
    # The former driver is fenced out; the cancel is not re-done.
    assert await store.apply([RunChange(run)]) == {"r1"}
    assert await store.cancel_run("r1", T0, key) == cancelled
    assert await store.cancel_recorded(key)
    with pytest.raises(DomainError) as raised:
        await store.cancel_run("r1", T0)
    assert reason_of(raised) == (ErrorCode.FAILED_PRECONDITION, "RUN_ALREADY_FINISHED")
    # A finished run is not claimable.
    later = LEASE + timedelta(seconds=1)
    assert await store.claim_runs("B", later, later + timedelta(seconds=10), 10) == []


async def test_request_cancel_reaches_the_owner_at_its_renewal(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    run = await create(store, new_run("r1"))
    other = await create(store, new_run("r2"))
    asked = await store.request_cancel("r1")
    assert asked.run_id == "r1"
    renewed = await store.renew_leases("A", {"r1": 1, "r2": 1}, LEASE + timedelta(seconds=5))
    assert (renewed.lost, renewed.cancel_requested) == (set(), {"r1"})
    await finish(store, other, RunState.SUCCEEDED)
    with pytest.raises(DomainError) as raised:
        await store.request_cancel("r2")
    assert reason_of(raised) == (ErrorCode.FAILED_PRECONDITION, "RUN_ALREADY_FINISHED")
    assert run.state is RunState.QUEUED


async def test_record_cancel_remembers_the_request(store: Store) -> None:
    key = IdempotencyKey("CancelRun", "c-1", "r1")
    assert not await store.cancel_recorded(key)
    await store.record_cancel(key, T0)
    await store.record_cancel(key, T0)  # twice is fine
    assert await store.cancel_recorded(key)
    with pytest.raises(DomainError):
        await store.cancel_recorded(IdempotencyKey("CancelRun", "c-1", "r2"))


async def test_retry_resets_the_unsuccessful_stages_and_takes_the_lease(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    run = await create(store, new_run("r1"))
    run.stages[0].state, run.stages[0].attempt = StageState.SUCCEEDED, 1
    run.stages[1].state, run.stages[1].attempt = StageState.FAILED, 3
    run.stages[1].error_reason = "X"
    run.stages[1].next_attempt_time = T0
    run.state, run.end_time, run.error_message = RunState.FAILED, T0, "failed"
    await store.apply([RunChange(run, run.stages)])

    key = IdempotencyKey("RetryRun", "rt-1", "r1")
    retried, reset = await store.retry_run("r1", T0, key, owner="B", lease_until=LEASE)
    assert reset
    assert (retried.state, retried.end_time, retried.error_message) == (RunState.RUNNING, None, "")
    assert retried.generation == 2
    first, second = retried.stages
    assert (first.state, first.attempt) == (StageState.SUCCEEDED, 1)
    assert (second.state, second.attempt, second.attempt_base) == (StageState.PENDING, 3, 3)
    assert (second.error_reason, second.next_attempt_time) == ("", None)
    assert await store.get_run("r1") == retried
    # B holds it now: A's renewal loses it, B's keeps it.
    assert (await store.renew_leases("A", {"r1": 1}, LEASE)).lost == {"r1"}
    assert (await store.renew_leases("B", {"r1": 2}, LEASE)).lost == set()

    again, reset = await store.retry_run("r1", T0, key, owner="B", lease_until=LEASE)
    assert (again, reset) == (retried, False)
    with pytest.raises(DomainError) as raised:
        await store.retry_run("r1", T0, owner="B", lease_until=LEASE)
    assert reason_of(raised) == (ErrorCode.FAILED_PRECONDITION, "RUN_NOT_FINISHED")
    retried.state = RunState.SUCCEEDED
    await store.apply([RunChange(retried)])
    with pytest.raises(DomainError) as raised:
        await store.retry_run("r1", T0, owner="B", lease_until=LEASE)
    assert reason_of(raised) == (ErrorCode.FAILED_PRECONDITION, "RUN_ALREADY_SUCCEEDED")


async def test_try_start_run_honours_max_active_runs(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    runs = [await create(store, new_run(f"r{i}")) for i in range(3)]
    t1 = T0 + timedelta(seconds=1)
    assert await store.try_start_run("r0", 1, 1, t1)
    assert await store.try_start_run("r0", 1, 1, t1)  # already RUNNING: still yes
    assert not await store.try_start_run("r1", 1, 1, t1)
    assert not await store.try_start_run("r1", 7, 0, t1)  # stale generation
    assert not await store.try_start_run("nope", 1, 0, t1)
    started = await store.get_run("r0")
    assert (started.state, started.start_time) == (RunState.RUNNING, t1)
    assert (await store.get_run("r1")).state is RunState.QUEUED
    runs[0].state = RunState.SUCCEEDED
    await store.apply([RunChange(runs[0])])
    assert await store.try_start_run("r1", 1, 1, t1)
    assert await store.try_start_run("r2", 1, 0, t1)  # 0: no limit
    assert not await store.try_start_run("r0", 1, 0, t1)  # finished


async def test_concurrent_starts_never_exceed_max_active_runs(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    for i in range(8):
        await create(store, new_run(f"r{i}"))
    started = await asyncio.gather(*(store.try_start_run(f"r{i}", 1, 3, T0) for i in range(8)))
    assert sum(started) == 3
    assert len(await store.list_runs(10, states=[RunState.RUNNING])) == 3


# --- leases --------------------------------------------------------------------------


async def test_claim_renew_and_release(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    for i in range(4):
        await create(store, new_run(f"r{i}", create_time=T0 + timedelta(seconds=i)))
    await finish(store, await store.get_run("r3"), RunState.SUCCEEDED)
    soon = T0 + timedelta(seconds=5)
    later = LEASE + timedelta(seconds=1)
    lease_b = later + timedelta(seconds=10)

    assert await store.claim_runs("B", soon, soon + timedelta(seconds=10), 10) == []  # A holds
    first = await store.claim_runs("B", later, lease_b, 2)
    assert [(r.run_id, r.generation) for r in first] == [("r0", 2), ("r1", 2)]
    assert [len(r.stages) for r in first] == [2, 2]
    rest = await store.claim_runs("B", later, lease_b, 10)
    assert [r.run_id for r in rest] == ["r2"]  # r3 finished
    assert await store.claim_runs("C", later, lease_b, 10) == []

    lost_by_a = await store.renew_leases("A", {"r0": 1, "r1": 1, "r2": 1}, lease_b)
    assert lost_by_a.lost == {"r0", "r1", "r2"}
    held = await store.renew_leases("B", {"r0": 2, "r1": 2, "r2": 2, "gone": 1}, lease_b)
    assert (held.lost, held.cancel_requested) == ({"gone"}, set())
    assert await store.renew_leases("B", {}, lease_b) == RenewResult()

    await store.release_runs("B")
    adopted = await store.claim_runs("C", later, lease_b, 10)  # before B's lease ends
    assert [(r.run_id, r.generation) for r in adopted] == [("r0", 3), ("r1", 3), ("r2", 3)]


async def test_claim_ignoring_leases_takes_every_run_not_already_ours(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    await create(store, new_run("r0"), owner="old")
    await create(store, new_run("r1"), owner="me")
    claimed = await store.claim_runs("me", T0, LEASE, 10, ignore_leases=True)
    assert [(r.run_id, r.generation) for r in claimed] == [("r0", 2)]
    assert (await store.renew_leases("old", {"r0": 1}, LEASE)).lost == {"r0"}


async def test_concurrent_writes_on_one_store(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    runs = await asyncio.gather(*(create(store, new_run(f"r{i:02}")) for i in range(20)))
    for run in runs:
        run.state = RunState.RUNNING
    lost = await asyncio.gather(*(store.apply([RunChange(run)]) for run in runs))
    assert lost == [set()] * 20
    assert len(await store.list_runs(50, states=[RunState.RUNNING])) == 20


async def test_a_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    run = new_run("r1")
    run.stages.append(StageRun("a", ("dup",)))  # duplicate stage id: the insert fails
    with pytest.raises((sqlite3.IntegrityError, asyncpg.UniqueViolationError)):
        await store.create_run(run, owner="A", lease_until=LEASE)
    with pytest.raises(DomainError):
        await store.get_run("r1")


# --- logs ----------------------------------------------------------------------------


async def test_stage_logs_page_by_attempt_and_seq(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    run = await create(store, new_run("r1"))
    run.stages[0].attempt = 2
    lines = [log(run, "a", 1, seq) for seq in range(1, 6)] + [log(run, "a", 2, 1)]
    lines.append(replace(log(run, "b", 1, 1), line=LogLine(T0, LogLevel.ERROR, "boom")))
    assert await store.apply([RunChange(run, [run.stages[0]], lines)]) == set()

    page = await store.stage_logs("r1", "a", 1, 0, 2)
    assert [line.seq for line in page] == [1, 2]
    assert [line.seq for line in await store.stage_logs("r1", "a", 1, 2, 2)] == [3, 4]
    assert [line.seq for line in await store.stage_logs("r1", "a", 1, 4, 10)] == [5]
    assert await store.stage_logs("r1", "a", 1, 5, 10) == []
    assert await store.stage_logs("r1", "a", 2, 0, 10) == [lines[5]]
    assert await store.stage_logs("r1", "b", 1, 0, 10) == [lines[6]]
    assert page[0] == lines[0]

    assert await store.latest_attempt("r1", "a") == 2
    assert await store.latest_attempt("r1", "b") == 0
    with pytest.raises(DomainError) as raised:
        await store.latest_attempt("r1", "zzz")
    assert reason_of(raised) == (ErrorCode.NOT_FOUND, "STAGE_NOT_FOUND")


# --- backfills -----------------------------------------------------------------------


def backfill(backfill_id: str, name: str = "p", **changes: object) -> Backfill:
    value = Backfill(
        backfill_id=backfill_id,
        pipeline=name,
        start_date=T0,
        end_date=T0 + timedelta(days=3),
        max_active_runs=2,
        only_failed=True,
        state=BackfillState.RUNNING,
        create_time=T0,
        logical_dates=(T0, T0 + timedelta(days=1), T0 + timedelta(days=2)),
        params={"x": 1},
        request_id="bf-req",
    )
    return replace(value, **changes)  # type: ignore[arg-type]


async def test_backfills_with_counters_from_their_runs(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    created, inserted = await store.create_backfill(backfill("b1"))
    assert inserted
    assert created == backfill("b1")
    assert await store.get_backfill("b1") == created
    again, inserted = await store.create_backfill(backfill("b1", max_active_runs=9))
    assert (again, inserted) == (created, False)

    runs = [await create(store, new_run(f"r{i}", backfill_id="b1")) for i in range(4)]
    await create(store, new_run("x", backfill_id=""))
    await finish(store, runs[0], RunState.SUCCEEDED)
    await finish(store, runs[1], RunState.FAILED)
    await store.cancel_run("r2", T0)
    counted = await store.get_backfill("b1")
    assert (counted.created_runs, counted.succeeded_runs, counted.failed_runs) == (4, 1, 2)

    finished = await store.finish_backfill("b1", BackfillState.CANCELLED, T0)
    assert (finished.state, finished.end_time) == (BackfillState.CANCELLED, T0)
    assert finished.created_runs == 4
    with pytest.raises(DomainError) as raised:
        await store.finish_backfill("b1", BackfillState.SUCCEEDED, T0)
    assert reason_of(raised) == (ErrorCode.FAILED_PRECONDITION, "BACKFILL_ALREADY_FINISHED")
    for call in (
        store.get_backfill("nope"),
        store.finish_backfill("nope", BackfillState.FAILED, T0),
    ):
        with pytest.raises(DomainError) as raised:
            await call
        assert reason_of(raised) == (ErrorCode.NOT_FOUND, "BACKFILL_NOT_FOUND")
    with pytest.raises(DomainError) as raised:
        await store.create_backfill(backfill("b9", "nope"))
    assert reason_of(raised) == (ErrorCode.NOT_FOUND, "PIPELINE_NOT_FOUND")


async def test_backfill_idempotency_and_listing(store: Store) -> None:
    await store.create_pipeline(pipeline("p"), T0)
    await store.create_pipeline(pipeline("q"), T0)
    key = IdempotencyKey("BackfillPipeline", "k", "fp")
    first, inserted = await store.create_backfill(backfill("b1"), key)
    assert inserted
    assert await store.create_backfill(backfill("b2"), key) == (first, False)
    await store.create_backfill(backfill("b3", "q"))
    await store.create_backfill(backfill("b4"))
    await store.finish_backfill("b4", BackfillState.SUCCEEDED, T0)

    async def ids(limit: int = 10, **filters: object) -> list[str]:
        return [b.backfill_id for b in await store.list_backfills(limit, **filters)]  # type: ignore[arg-type]

    assert await ids() == ["b4", "b3", "b1"]
    assert await ids(2) == ["b4", "b3"]
    assert await ids(before="b3") == ["b1"]
    assert await ids(pipeline="p") == ["b4", "b1"]
    assert await ids(states=[BackfillState.RUNNING]) == ["b3", "b1"]


# --- SQLite only ---------------------------------------------------------------------


async def test_sqlite_file_is_in_wal_mode_with_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "s.db"
    store = await open_store(f"sqlite://{path}")
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(SQLITE_MIGRATIONS)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"pipelines", "runs", "stages", "stage_logs", "backfills", "watermarks"} <= tables


async def test_sqlite_store_serves_one_scheduler_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = await open_store(path)
    try:
        with pytest.raises(StoreLockedError, match="in use by another scheduler") as raised:
            await open_store(path)
        assert f"pid {os.getpid()}" in str(raised.value)
        # Tools that do not drive runs (datadog db upgrade) may open it alongside.
        side = await open_store(path, exclusive=False)
        assert await side.schema_version() == len(SQLITE_MIGRATIONS)
        await side.close()
    finally:
        await first.close()
    second = await open_store(path)  # released on close
    await second.close()


async def test_sqlite_version_1_database_is_migrated_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    spec = pipeline("old", tags=["legacy"], labels={"team": "ops"}, cron="@daily")
    with sqlite3.connect(path) as db:
        db.executescript(SQLITE_MIGRATIONS[0].sql)
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO pipelines VALUES ('old', 1, 1000)")
        db.execute(
            "INSERT INTO pipeline_versions VALUES ('old', 1, ?, 1000)",
            (spec.SerializeToString(),),
        )
        db.execute(
            "INSERT INTO runs (run_id, pipeline, pipeline_version, state, create_time)"
            " VALUES ('r1', 'old', 1, 'RUNNING', 2000)"
        )
        db.execute(
            "INSERT INTO stages (run_id, position, stage_id, steps, state)"
            " VALUES ('r1', 0, 'src', '[\"src\"]', 'RUNNING')"
        )
    store = await open_store(path)
    try:
        assert await store.schema_version() == len(SQLITE_MIGRATIONS)
        assert [p.name for p in await store.list_pipelines(10, tags=["legacy"])] == ["old"]
        assert [p.name for p in await store.list_pipelines(10, labels={"team": "ops"})] == ["old"]
        [state] = await store.schedule_states()
        assert state.create_time == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=1000)
        run = await store.get_run("r1")
        assert run.logical_date == run.create_time
        assert (run.trigger, run.params, run.generation) == (RunTrigger.MANUAL, {}, 0)
        assert run.stages[0].upstream == ()
        [claimed] = await store.claim_runs("me", T0, LEASE, 10)  # nobody owns it
        assert claimed.generation == 1
    finally:
        await store.close()


async def test_sqlite_version_2_database_gains_empty_stage_checks(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as db:
        for migration in SQLITE_MIGRATIONS[:2]:
            db.executescript(migration.sql)
        db.execute("PRAGMA user_version = 2")
        db.execute("INSERT INTO pipelines (name, latest_version, create_time) VALUES ('p', 1, 1)")
        db.execute("INSERT INTO pipeline_versions VALUES ('p', 1, ?, 1)", (b"",))
        db.execute(
            "INSERT INTO runs (run_id, pipeline, pipeline_version, state, create_time)"
            " VALUES ('r1', 'p', 1, 'RUNNING', 2000)"
        )
        db.execute(
            "INSERT INTO stages (run_id, position, stage_id, steps, state)"
            " VALUES ('r1', 0, 'src', '[\"src\"]', 'SUCCEEDED')"
        )
    store = await open_store(path)
    try:
        assert await store.schema_version() == len(SQLITE_MIGRATIONS) >= 3
        assert (await store.get_run("r1")).stages[0].checks == ()
    finally:
        await store.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await (await open_store(path)).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(SQLITE_MIGRATIONS) + 1}")
    for _ in range(2):  # the failed open released its lock: the same error again
        with pytest.raises(StoreError, match="newer than this scheduler"):
            await open_store(path)


# --- PostgreSQL only -----------------------------------------------------------------


async def test_postgres_claims_of_two_schedulers_never_overlap(pg_url: str) -> None:
    one, two = await open_store(pg_url), await open_store(pg_url)
    try:
        await one.create_pipeline(pipeline("p"), T0)
        for i in range(40):
            await create(one, new_run(f"r{i:02}", create_time=T0 + timedelta(seconds=i)))
        later = LEASE + timedelta(seconds=1)
        claimed: dict[str, list[str]] = {"B": [], "C": []}
        while True:
            got_b, got_c = await asyncio.gather(
                one.claim_runs("B", later, later + timedelta(seconds=30), 3),
                two.claim_runs("C", later, later + timedelta(seconds=30), 3),
            )
            if not got_b and not got_c:
                break
            claimed["B"] += [r.run_id for r in got_b]
            claimed["C"] += [r.run_id for r in got_c]
        assert not set(claimed["B"]) & set(claimed["C"])
        assert sorted(claimed["B"] + claimed["C"]) == [f"r{i:02}" for i in range(40)]
    finally:
        await one.close()
        await two.close()


async def test_postgres_claims_skip_rows_locked_by_others(pg_url: str) -> None:
    store = await open_store(pg_url)
    try:
        await store.create_pipeline(pipeline("p"), T0)
        for i in range(3):
            await create(store, new_run(f"r{i}", create_time=T0 + timedelta(seconds=i)))
        other = await asyncpg.connect(pg_url)
        try:
            async with other.transaction():
                await other.execute("SELECT 1 FROM runs WHERE run_id = 'r0' FOR UPDATE")
                later = LEASE + timedelta(seconds=1)
                claimed = await asyncio.wait_for(
                    store.claim_runs("B", later, later + timedelta(seconds=9), 10), timeout=5
                )
                assert [r.run_id for r in claimed] == ["r1", "r2"]
        finally:
            await other.close()
    finally:
        await store.close()


async def test_postgres_schedulers_create_a_deterministic_run_once(pg_url: str) -> None:
    stores = [await open_store(pg_url) for _ in range(3)]
    try:
        await stores[0].create_pipeline(pipeline("p"), T0)
        results = await asyncio.gather(
            *(
                s.create_run(new_run("sched-1"), owner=f"S{i}", lease_until=LEASE)
                for i, s in enumerate(stores)
            )
        )
        assert sorted(inserted for _, inserted in results) == [False, False, True]
        key = IdempotencyKey("RunPipeline", "same", "fp")
        results = await asyncio.gather(
            *(
                s.create_run(new_run(f"manual-{i}"), key, owner="S", lease_until=LEASE)
                for i, s in enumerate(stores)
            )
        )
        assert len({run.run_id for run, _ in results}) == 1
        assert sum(inserted for _, inserted in results) == 1
        assert len(await stores[0].list_runs(10)) == 2
    finally:
        for s in stores:
            await s.close()


async def test_postgres_concurrent_opens_migrate_once(pg_url: str) -> None:
    stores = await asyncio.gather(*(open_store(pg_url) for _ in range(4)))
    try:
        versions = {await s.schema_version() for s in stores}
        assert versions == {stores[0].latest_schema_version}
    finally:
        for s in stores:
            await s.close()
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r[0] for r in rows] == list(range(1, stores[0].latest_schema_version + 1))


async def test_postgres_version_1_database_gains_empty_stage_checks(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        await conn.execute(PG_MIGRATIONS[0].sql)
        await conn.execute("INSERT INTO schema_migrations (version) VALUES (1)")
        await conn.execute(
            "INSERT INTO pipelines (name, latest_version, create_time) VALUES ('p', 1, 1)"
        )
        await conn.execute("INSERT INTO pipeline_versions VALUES ('p', 1, $1, 1)", b"")
        await conn.execute(
            "INSERT INTO runs (run_id, pipeline, pipeline_version, state, create_time)"
            " VALUES ('r1', 'p', 1, 'RUNNING', 2000)"
        )
        await conn.execute(
            "INSERT INTO stages (run_id, position, stage_id, steps, state)"
            " VALUES ('r1', 0, 'src', '[\"src\"]', 'SUCCEEDED')"
        )
    finally:
        await conn.close()
    store = await open_store(pg_url)
    try:
        assert await store.upgrade() == []
        assert await store.schema_version() == len(PG_MIGRATIONS) >= 2
        assert (await store.get_run("r1")).stages[0].checks == ()
    finally:
        await store.close()


# --- datadog db upgrade --------------------------------------------------------------


def _run_db_cli(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="datadog")
    db_cli.add_db_parser(parser.add_subparsers(dest="area", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_db_upgrade_prints_the_migrations_and_the_version(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    url = str(tmp_path / "s.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    assert _run_db_cli(["db", "upgrade", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "applied migrations 1" in out
    assert out.strip().splitlines()[-1].startswith("schema version ")
    assert _run_db_cli(["db", "upgrade", "--store", url]) == 0
    assert "up to date" in capsys.readouterr().out


def test_db_upgrade_takes_the_url_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "env.db"
    monkeypatch.setenv("DATADOG_SCHEDULER_STORE", f"sqlite://{path}")
    assert _run_db_cli(["db", "upgrade"]) == 0
    assert path.exists()
    assert f"schema version {len(SQLITE_MIGRATIONS)}" in capsys.readouterr().out


def test_db_upgrade_reports_a_bad_url_without_a_traceback() -> None:
    from datadog_platform.cli.errors import CliError

    with pytest.raises(CliError, match="unsupported store URL"):
        _run_db_cli(["db", "upgrade", "--store", "mysql://x/y"])

"""Group commit (scheduler.state_writer) against a real SQLite store: coalescing,
one transaction for many runs, logs and watermarks, fence failures, store errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.scheduler.domain import (
    LogLevel,
    LogLine,
    Run,
    RunChange,
    RunState,
    StageLogLine,
    StageRun,
    StageState,
    TaskMetrics,
    new_run_id,
    utc_now,
)
from datadog_platform.scheduler.state_writer import StateWriter
from datadog_platform.scheduler.store import Store, open_store

pytestmark = pytest.mark.timeout(20)

PIPELINE = ParseDict(
    {
        "name": "p",
        "steps": [
            {"name": "src", "source": {"inline": {"rows": [{"x": 1}]}}},
            {"name": "a", "inputs": ["src"], "sink": {"discard": {}}},
        ],
    },
    pipeline_pb2.Pipeline(),
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(tmp_path / "s.db")
    await opened.create_pipeline(PIPELINE, utc_now())
    yield opened
    await opened.close()


async def new_run(store: Store) -> Run:
    run = Run(new_run_id(), "p", 1, RunState.QUEUED, utc_now(), [StageRun("a", ("src", "a"))])
    created, _ = await store.create_run(
        run, owner="me", lease_until=utc_now() + timedelta(seconds=60)
    )
    return created


class Recorder:
    def __init__(self) -> None:
        self.committed: list[list[RunChange]] = []
        self.lost: list[set[str]] = []

    def on_committed(self, changes: Sequence[RunChange]) -> None:
        self.committed.append(list(changes))

    def on_lost(self, run_ids: set[str]) -> None:
        self.lost.append(run_ids)


def writer_of(store: Store, recorder: Recorder, **options: Any) -> StateWriter:
    writer = StateWriter(
        store, on_committed=recorder.on_committed, on_lost=recorder.on_lost, **options
    )
    writer.start()
    return writer


async def test_changes_of_a_run_coalesce_and_the_latest_state_wins(store: Store) -> None:
    run = await new_run(store)
    recorder = Recorder()
    writer = writer_of(store, recorder)
    stage = run.stages[0]
    run.state = RunState.RUNNING
    for attempt in range(1, 6):
        stage.state = StageState.QUEUED
        stage.attempt = attempt
        writer.touch(run, [stage])
    stage.metrics = TaskMetrics(rows_read=9)
    writer.touch(run, [stage])
    assert await writer.commit() == set()
    assert writer.transactions == 1
    ((change,),) = recorder.committed
    assert (change.run.state, change.run.stages) == (RunState.RUNNING, [])
    assert [(s.attempt, s.metrics.rows_read) for s in change.stages] == [(5, 9)]
    # The change is a copy: later changes of the live objects do not alter it.
    assert change.stages[0] is not stage
    stage.attempt = 6
    assert change.stages[0].attempt == 5
    stored = await store.get_run(run.run_id)
    assert (stored.state, stored.stages[0].attempt) == (RunState.RUNNING, 5)
    await writer.close()


async def test_many_runs_go_in_one_transaction_with_logs_and_watermarks(store: Store) -> None:
    runs = [await new_run(store) for _ in range(20)]
    recorder = Recorder()
    writer = writer_of(store, recorder)
    now = utc_now()
    for run in runs:
        stage = run.stages[0]
        stage.state = StageState.SUCCEEDED
        line = StageLogLine(run.run_id, "a", 1, 1, LogLine(now, LogLevel.INFO, "hello", "a"))
        writer.touch(run, [stage], logs=[line], watermarks={"src": run.run_id})
    await writer.commit()
    assert writer.transactions == 1
    assert len(recorder.committed[0]) == 20
    for run in runs:
        assert (await store.get_run(run.run_id)).stages[0].state is StageState.SUCCEEDED
        (line,) = await store.stage_logs(run.run_id, "a", 1, 0, 10)
        assert line.line.message == "hello"
    assert await store.watermarks("p") in ({"src": r.run_id} for r in runs)
    await writer.close()


async def test_changes_nobody_waits_for_linger_then_are_written(store: Store) -> None:
    run = await new_run(store)
    recorder = Recorder()
    writer = writer_of(store, recorder, linger=0.05)
    run.stages[0].state = StageState.RUNNING
    writer.touch(run, run.stages)
    await asyncio.sleep(0.01)
    assert recorder.committed == []
    await asyncio.sleep(0.1)
    assert len(recorder.committed) == 1
    assert (await store.get_run(run.run_id)).stages[0].state is StageState.RUNNING
    await writer.close()


async def test_a_failed_fence_reports_the_run_and_writes_nothing_of_it(store: Store) -> None:
    kept, taken = await new_run(store), await new_run(store)
    now = utc_now()
    claimed = await store.claim_runs(
        "thief", now, now + timedelta(seconds=60), 10, ignore_leases=True
    )
    assert {r.run_id for r in claimed} == {kept.run_id, taken.run_id}
    kept.generation = next(r.generation for r in claimed if r.run_id == kept.run_id)
    recorder = Recorder()
    writer = writer_of(store, recorder)
    for run in (kept, taken):
        run.stages[0].state = StageState.RUNNING
        writer.touch(run, run.stages)
    assert await writer.commit() == {taken.run_id}
    assert recorder.lost == [{taken.run_id}]
    assert [c.run.run_id for c in recorder.committed[0]] == [kept.run_id]
    assert (await store.get_run(kept.run_id)).stages[0].state is StageState.RUNNING
    assert (await store.get_run(taken.run_id)).stages[0].state is StageState.PENDING
    await writer.close()


async def test_a_failing_transaction_is_retried_with_newer_changes(store: Store) -> None:
    run = await new_run(store)
    recorder = Recorder()
    apply = store.apply
    failures = 2

    async def flaky_apply(changes: Sequence[RunChange]) -> set[str]:
        nonlocal failures
        if failures:
            failures -= 1
            # A newer change arrives while the store is down.
            run.stages[0].attempt = 7
            writer.touch(run, run.stages)
            raise OSError("database unreachable")
        return await apply(changes)

    store.apply = flaky_apply  # type: ignore[method-assign]
    writer = writer_of(store, recorder)
    run.stages[0].state = StageState.QUEUED
    run.stages[0].attempt = 1
    line = StageLogLine(run.run_id, "a", 1, 1, LogLine(utc_now(), LogLevel.INFO, "kept", ""))
    writer.touch(run, run.stages, logs=[line])
    assert await asyncio.wait_for(writer.commit(), 5) == set()
    stored = await store.get_run(run.run_id)
    assert (stored.stages[0].state, stored.stages[0].attempt) == (StageState.QUEUED, 7)
    assert [entry.line.message for entry in await store.stage_logs(run.run_id, "a", 1, 0, 10)] == [
        "kept"
    ]
    await writer.close()

"""Backfills on a real store and run manager, with real executor and connector
services: validation, intervals, concurrency, only_failed, cancel and listing.

Backfills are advanced by explicit ``tick(now)`` calls; the tests wait only for
runs to finish.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.scheduler.backfills import BackfillManager
from datadog_platform.scheduler.domain import (
    Backfill,
    BackfillState,
    Run,
    RunState,
    RunTrigger,
    deterministic_run_id,
)
from datadog_platform.scheduler.executor_client import ExecutorDispatcher
from datadog_platform.scheduler.runs import RunManager
from datadog_platform.scheduler.schedules import ScheduleTicker
from datadog_platform.scheduler.store import Store, open_store

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2024, 7, 1, tzinfo=UTC)
JUNE_1 = datetime(2024, 6, 1, tzinfo=UTC)


def day(d: int, hour: int = 0) -> datetime:
    return datetime(2024, 6, d, hour, tzinfo=UTC)


def daily(name: str, *, schedule: bool = True, **extra: Any) -> pipeline_pb2.Pipeline:
    """Copies the day's partition file in/<ds>.csv (missing file: the run fails)."""
    spec: dict[str, Any] = {
        "name": name,
        "params": {"region": "eu"},
        "steps": [
            {"name": "src", "source": {"file": {"path": "in/{{ ds }}.csv"}}},
            {
                "name": "out",
                "inputs": ["src"],
                "sink": {"file": {"path": "out/{{ params.region }}/{{ run_id }}.csv"}},
            },
        ],
        **extra,
    }
    if schedule:
        spec["schedule"] = {"cron": "0 2 * * *"}
    return ParseDict(spec, pipeline_pb2.Pipeline())


def partitions(root: Path, *days: int) -> None:
    (root / "in").mkdir(exist_ok=True)
    for d in days:
        (root / "in" / f"2024-06-{d:02d}.csv").write_text(f"id,day\n1,{d}\n")


@pytest.fixture
def backfills(store: Store, runs: RunManager) -> BackfillManager:
    return BackfillManager(store, runs, clock=lambda: T0)


async def runs_of(store: Store, backfill_id: str) -> list[Run]:
    """The backfill's runs, oldest logical date first."""
    found = await store.list_runs(10_000, backfill_id=backfill_id)
    return sorted(found, key=lambda r: r.run_id)


async def drive(
    store: Store, backfills: BackfillManager, backfill_id: str, max_unfinished: int
) -> Backfill:
    """Tick until the backfill finishes, checking its concurrency bound throughout."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        await backfills.tick(T0)
        backfill = await backfills.get(backfill_id)
        if backfill.state.is_terminal:
            return backfill
        unfinished = [r for r in await runs_of(store, backfill_id) if not r.state.is_terminal]
        assert len(unfinished) <= max_unfinished
        assert asyncio.get_running_loop().time() < deadline, "backfill did not finish"
        await asyncio.sleep(0.02)


async def test_backfill_runs_each_interval_with_bounded_concurrency(
    store: Store, backfills: BackfillManager, data_root: Path
) -> None:
    partitions(data_root, 1, 2, 3, 4, 5)
    await store.create_pipeline(daily("nightly"), T0)
    # Backfills work while the schedule is paused.
    await store.set_paused("nightly", True, T0)

    created = await backfills.create(
        "nightly", day(1), day(6), max_active_runs=2, params={"region": "us"}
    )
    assert created.state is BackfillState.RUNNING
    assert created.pipeline == "nightly"
    assert created.logical_dates == tuple(day(d, 2) for d in (1, 2, 3, 4, 5))
    assert created.max_active_runs == 2
    assert created.params == {"region": "us"}
    assert created.create_time == T0
    assert created.created_runs == 2  # the first runs start before create returns

    finished = await drive(store, backfills, created.backfill_id, max_unfinished=2)
    assert finished.state is BackfillState.SUCCEEDED
    assert (finished.created_runs, finished.succeeded_runs, finished.failed_runs) == (5, 5, 0)
    assert finished.end_time == T0

    done = await runs_of(store, created.backfill_id)
    assert [r.logical_date for r in done] == list(created.logical_dates)
    for run in done:
        assert run.run_id == deterministic_run_id("nightly", run.logical_date, created.backfill_id)  # type: ignore[arg-type]
        assert run.trigger is RunTrigger.BACKFILL
        assert run.backfill_id == created.backfill_id
        assert run.state is RunState.SUCCEEDED
        assert run.params == {"region": "us"}
        assert run.data_interval_start == run.logical_date
        assert run.data_interval_end == run.logical_date + timedelta(days=1)  # type: ignore[operator]
    outputs = sorted(p.stem for p in (data_root / "out" / "us").iterdir())
    assert outputs == [r.run_id for r in done]
    # Nothing more happens to a finished backfill.
    assert await backfills.tick(T0) == 0


async def test_failed_intervals_and_only_failed(
    store: Store, backfills: BackfillManager, data_root: Path
) -> None:
    partitions(data_root, 1, 3)  # 2 June's file is missing: that run fails
    await store.create_pipeline(daily("partial"), T0)
    first = await backfills.create("partial", day(1), day(4), max_active_runs=3)
    assert first.created_runs == 3
    first = await drive(store, backfills, first.backfill_id, max_unfinished=3)
    assert first.state is BackfillState.FAILED
    assert (first.created_runs, first.succeeded_runs, first.failed_runs) == (3, 2, 1)
    states = {r.logical_date: r.state for r in await runs_of(store, first.backfill_id)}
    assert states == {
        day(1, 2): RunState.SUCCEEDED,
        day(2, 2): RunState.FAILED,
        day(3, 2): RunState.SUCCEEDED,
    }

    # Only the failed interval and the never-run one (4 June) run again.
    partitions(data_root, 2, 4)
    rerun = await backfills.create("partial", day(1), day(5), only_failed=True)
    assert rerun.only_failed
    assert rerun.logical_dates == (day(2, 2), day(4, 2))
    assert rerun.max_active_runs == 1  # 0 means 1
    rerun = await drive(store, backfills, rerun.backfill_id, max_unfinished=1)
    assert rerun.state is BackfillState.SUCCEEDED
    assert (rerun.created_runs, rerun.succeeded_runs) == (2, 2)
    # Another backfill's runs of the same intervals have other ids.
    assert {r.run_id for r in await runs_of(store, rerun.backfill_id)}.isdisjoint(
        r.run_id for r in await runs_of(store, first.backfill_id)
    )

    # Nothing left to re-run: the backfill succeeds at once, with no runs.
    empty = await backfills.create("partial", day(1), day(5), only_failed=True)
    assert empty.logical_dates == ()
    assert empty.state is BackfillState.SUCCEEDED
    assert empty.created_runs == 0


async def test_the_ticker_advances_backfills(
    store: Store, runs: RunManager, backfills: BackfillManager, data_root: Path
) -> None:
    partitions(data_root, 1, 2)
    await store.create_pipeline(daily("ticked"), T0)
    await store.set_paused("ticked", True, T0)  # no scheduled runs in the way
    ticker = ScheduleTicker(store, runs, backfills=backfills)
    backfill = await backfills.create("ticked", day(1), day(3))
    assert backfill.created_runs == 1
    deadline = asyncio.get_running_loop().time() + 30
    while (await backfills.get(backfill.backfill_id)).created_runs < 2:
        assert asyncio.get_running_loop().time() < deadline
        await ticker.tick(T0)
        await asyncio.sleep(0.02)
    assert (await drive(store, backfills, backfill.backfill_id, 1)).state is BackfillState.SUCCEEDED


async def test_create_validates_the_request(store: Store, backfills: BackfillManager) -> None:
    await store.create_pipeline(daily("unscheduled", schedule=False), T0)
    await store.create_pipeline(daily("scheduled"), T0)

    async def refused(*args: Any, **kwargs: Any) -> DomainError:
        with pytest.raises(DomainError) as caught:
            await backfills.create(*args, **kwargs)
        return caught.value

    error = await refused("missing", day(1), day(2))
    assert (error.code, error.reason) == (ErrorCode.NOT_FOUND, "PIPELINE_NOT_FOUND")
    error = await refused("unscheduled", day(1), day(2))
    assert (error.code, error.reason) == (ErrorCode.FAILED_PRECONDITION, "PIPELINE_NOT_SCHEDULED")
    assert "no schedule" in error.message

    for start, end in [(day(2), day(2)), (day(3), day(2))]:
        error = await refused("scheduled", start, end)
        assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, "INVALID_REQUEST")
        assert [v.field for v in error.violations] == ["end_date"]
        assert "after start_date" in error.violations[0].description

    error = await refused("scheduled", None, None, max_active_runs=-1)
    assert [v.field for v in error.violations] == ["start_date", "end_date", "max_active_runs"]
    error = await refused("", day(1), day(2))
    assert [v.field for v in error.violations] == ["pipeline"]

    # A range without any fire time (02:00 is outside [00:00, 01:00)).
    error = await refused("scheduled", day(1), day(1, 1))
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert "no interval" in error.message
    # More than 10,000 daily intervals.
    error = await refused("scheduled", JUNE_1, JUNE_1 + timedelta(days=10_001))
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert "more than 10000 intervals" in error.message
    assert [v.field for v in error.violations] == ["end_date"]

    error = await refused("scheduled", day(1), day(2), params={"nope": 1})
    assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, "UNKNOWN_PARAM")
    error = await refused("scheduled", day(1), day(2), request_id="x" * 500)
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert await backfills.list() == ([], "")


async def test_cancel_stops_the_backfill_and_its_runs(tmp_path: Path) -> None:
    # An executor nobody listens on, and a long backoff: the first run stays
    # unfinished (waiting to retry) until cancelled.
    store = await open_store(tmp_path / "cancel.db")
    dispatcher = ExecutorDispatcher("127.0.0.1:1")
    runs = RunManager(store, dispatcher, instance_id="cancel-test")
    await runs.start()
    try:
        retry = {"maxAttempts": 5, "initialBackoff": "600s", "maxBackoff": "600s"}
        await store.create_pipeline(daily("stuck", defaultRetry=retry), T0)
        backfills = BackfillManager(store, runs, clock=lambda: T0)
        backfill = await backfills.create("stuck", day(1), day(4))
        [run] = await runs_of(store, backfill.backfill_id)
        assert not run.state.is_terminal

        cancelled = await backfills.cancel(backfill.backfill_id)
        assert cancelled.state is BackfillState.CANCELLED
        assert cancelled.end_time == T0
        assert (cancelled.created_runs, cancelled.failed_runs) == (1, 1)
        [run] = await runs_of(store, backfill.backfill_id)
        assert run.state is RunState.CANCELLED
        # No more runs, and no second cancel.
        assert await backfills.tick(T0) == 0
        assert len(await runs_of(store, backfill.backfill_id)) == 1
        with pytest.raises(DomainError) as caught:
            await backfills.cancel(backfill.backfill_id)
        assert (caught.value.code, caught.value.reason) == (
            ErrorCode.FAILED_PRECONDITION,
            "BACKFILL_ALREADY_FINISHED",
        )
    finally:
        await runs.close()
        await dispatcher.close()
        await store.close()


async def test_get_list_pages_and_request_ids(
    store: Store, backfills: BackfillManager, data_root: Path
) -> None:
    partitions(data_root, 1, 2, 3)
    await store.create_pipeline(daily("a"), T0)
    await store.create_pipeline(daily("b"), T0)
    first = await backfills.create("a", day(1), day(2), request_id="req-1")
    again = await backfills.create("a", day(1), day(2), request_id="req-1")
    assert again.backfill_id == first.backfill_id
    assert again.request_id == "req-1"
    with pytest.raises(DomainError) as caught:
        await backfills.create("a", day(1), day(3), request_id="req-1")
    assert caught.value.reason == "REQUEST_ID_REUSED"
    second = await backfills.create("b", day(2), day(3))
    third = await backfills.create("a", day(3), day(4))

    page, token = await backfills.list(page_size=2)
    assert [b.backfill_id for b in page] == [third.backfill_id, second.backfill_id]
    assert token
    page, token = await backfills.list(page_size=2, page_token=token)
    assert [b.backfill_id for b in page] == [first.backfill_id]
    assert token == ""
    page, _ = await backfills.list(pipeline="a")
    assert [b.backfill_id for b in page] == [third.backfill_id, first.backfill_id]
    assert (await backfills.get(second.backfill_id)).pipeline == "b"

    with pytest.raises(DomainError) as caught:
        await backfills.list(page_token="bogus")
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(DomainError) as caught:
        await backfills.list(page_size=-1)
    assert caught.value.reason == "INVALID_PAGE_SIZE"
    with pytest.raises(DomainError) as caught:
        await backfills.get("0" * 32)
    assert (caught.value.code, caught.value.reason) == (ErrorCode.NOT_FOUND, "BACKFILL_NOT_FOUND")
    with pytest.raises(DomainError) as caught:
        await backfills.get("")
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    for backfill in (first, second, third):
        await drive(store, backfills, backfill.backfill_id, 1)

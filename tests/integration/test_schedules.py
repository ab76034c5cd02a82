"""The schedule ticker on a real store and run manager, with real executor and
connector services: which runs each tick creates, with which intervals and ids.

Ticks take an explicit ``now`` (a fixed clock), so no test waits for time to pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.scheduler.domain import (
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

T0 = datetime(2024, 6, 1, 0, 10, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def scheduled(name: str, cron: str, **schedule: Any) -> pipeline_pb2.Pipeline:
    """A one-stage pipeline (copy a CSV file) with a schedule."""
    return ParseDict(
        {
            "name": name,
            "schedule": {"cron": cron, **schedule},
            "params": {"region": "eu"},
            "steps": [
                {"name": "src", "source": {"file": {"path": "in.csv"}}},
                {
                    "name": "out",
                    "inputs": ["src"],
                    "sink": {"file": {"path": "out/{{ params.region }}/{{ run_id }}.csv"}},
                },
            ],
        },
        pipeline_pb2.Pipeline(),
    )


@pytest.fixture(autouse=True)
def input_file(data_root: Path) -> None:
    (data_root / "in.csv").write_text("id,amount\n1,5\n2,7\n")


async def scheduled_runs(store: Store, pipeline: str) -> list[Run]:
    """The pipeline's runs, oldest logical date first."""
    return sorted(await store.list_runs(10_000, pipeline=pipeline), key=lambda r: r.run_id)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(1000):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in 20 s")


def intervals(runs: list[Run]) -> list[tuple[datetime | None, datetime | None]]:
    return [(r.data_interval_start, r.data_interval_end) for r in runs]


async def test_catchup_creates_every_missed_interval_once(
    store: Store, runs: RunManager, data_root: Path
) -> None:
    spec = await store.create_pipeline(scheduled("hourly", "0 * * * *", catchup=True), T0)
    ticker = ScheduleTicker(store, runs)

    assert await ticker.tick(utc(2024, 6, 1, 3, 10)) == 3
    created = await scheduled_runs(store, "hourly")
    starts = [utc(2024, 6, 1, 0), utc(2024, 6, 1, 1), utc(2024, 6, 1, 2)]
    assert intervals(created) == [(s, s + timedelta(hours=1)) for s in starts]
    for run, start in zip(created, starts, strict=True):
        assert run.run_id == deterministic_run_id("hourly", start, "schedule")
        assert run.logical_date == start
        assert run.trigger is RunTrigger.SCHEDULE
        assert run.pipeline_version == spec.version
        assert run.params == {"region": "eu"}
        assert run.backfill_id == ""

    # The same tick again, or before the next fire time: nothing new.
    assert await ticker.tick(utc(2024, 6, 1, 3, 10)) == 0
    assert await ticker.tick(utc(2024, 6, 1, 3, 59, 59)) == 0
    assert await ticker.tick(utc(2024, 6, 1, 4, 0)) == 1
    assert len(await scheduled_runs(store, "hourly")) == 4
    [state] = await store.schedule_states()
    assert state.last_fire_time == utc(2024, 6, 1, 4)

    # The runs really run: each wrote its output.
    async def finished() -> bool:
        return all(r.state.is_terminal for r in await scheduled_runs(store, "hourly"))

    await eventually(finished)
    done = await scheduled_runs(store, "hourly")
    assert {r.state for r in done} == {RunState.SUCCEEDED}
    assert sorted(p.stem for p in (data_root / "out" / "eu").iterdir()) == [r.run_id for r in done]


async def test_without_catchup_only_the_latest_due_interval_runs(
    store: Store, runs: RunManager
) -> None:
    await store.create_pipeline(scheduled("latest", "0 * * * *"), T0)
    ticker = ScheduleTicker(store, runs)

    assert await ticker.tick(utc(2024, 6, 1, 5, 30)) == 1
    assert await ticker.tick(utc(2024, 6, 1, 5, 45)) == 0
    # 06:00 is missed; at 07:05 only the 07:00 fire time runs, for [06:00, 07:00).
    assert await ticker.tick(utc(2024, 6, 1, 7, 5)) == 1
    assert intervals(await scheduled_runs(store, "latest")) == [
        (utc(2024, 6, 1, 4), utc(2024, 6, 1, 5)),
        (utc(2024, 6, 1, 6), utc(2024, 6, 1, 7)),
    ]


async def test_no_fire_time_before_the_schedule_was_created(store: Store, runs: RunManager) -> None:
    await store.create_pipeline(scheduled("fresh", "0 0 * * *", catchup=True), T0)
    ticker = ScheduleTicker(store, runs)
    assert await ticker.tick(utc(2024, 6, 1, 23, 59)) == 0  # 1 June 00:00 is before T0
    assert await ticker.tick(utc(2024, 6, 2, 0, 0)) == 1
    assert intervals(await scheduled_runs(store, "fresh")) == [(utc(2024, 6, 1), utc(2024, 6, 2))]


async def test_start_time_in_the_past_and_end_time(store: Store, runs: RunManager) -> None:
    await store.create_pipeline(
        scheduled(
            "bounded",
            "0 0 * * *",
            catchup=True,
            start_time="2024-05-30T00:00:00Z",
            end_time="2024-06-03T00:00:00Z",
        ),
        T0,
    )
    ticker = ScheduleTicker(store, runs)
    # Fire times 30 May .. 3 June (the end is included); none after.
    assert await ticker.tick(utc(2024, 6, 10)) == 5
    assert await ticker.tick(utc(2024, 6, 20)) == 0
    created = await scheduled_runs(store, "bounded")
    assert [r.data_interval_end for r in created] == [utc(2024, 5, d) for d in (30, 31)] + [
        utc(2024, 6, d) for d in (1, 2, 3)
    ]
    assert created[0].logical_date == utc(2024, 5, 29)


async def test_start_time_in_the_future(store: Store, runs: RunManager) -> None:
    await store.create_pipeline(
        scheduled("later", "0 * * * *", start_time="2024-06-01T05:00:00Z"), T0
    )
    ticker = ScheduleTicker(store, runs)
    assert await ticker.tick(utc(2024, 6, 1, 4, 59)) == 0
    assert await ticker.tick(utc(2024, 6, 1, 5, 0)) == 1
    assert intervals(await scheduled_runs(store, "later")) == [
        (utc(2024, 6, 1, 4), utc(2024, 6, 1, 5))
    ]


async def test_paused_pipelines_get_no_runs_until_unpaused(store: Store, runs: RunManager) -> None:
    await store.create_pipeline(scheduled("pausable", "0 * * * *", catchup=True), T0)
    await store.create_pipeline(scheduled("other", "0 * * * *"), T0)
    await store.set_paused("pausable", True, T0)
    ticker = ScheduleTicker(store, runs)
    assert await ticker.tick(utc(2024, 6, 1, 3, 30)) == 1  # "other" only
    assert await scheduled_runs(store, "pausable") == []
    await store.set_paused("pausable", False, utc(2024, 6, 1, 3, 31))
    # With catchup the intervals missed while paused run once unpaused.
    assert await ticker.tick(utc(2024, 6, 1, 3, 32)) == 3
    assert len(await scheduled_runs(store, "pausable")) == 3


async def test_daylight_saving_intervals_in_paris(store: Store, runs: RunManager) -> None:
    # 02:30 does not exist on 31 March 2024 in Paris: that day's run fires at 03:30.
    await store.create_pipeline(
        scheduled(
            "paris",
            "30 2 * * *",
            timezone="Europe/Paris",
            catchup=True,
            start_time="2024-03-30T00:00:00Z",
        ),
        T0,
    )
    ticker = ScheduleTicker(store, runs)
    assert await ticker.tick(utc(2024, 4, 2)) == 3
    created = await scheduled_runs(store, "paris")
    assert [r.data_interval_end for r in created] == [
        utc(2024, 3, 30, 1, 30),  # 02:30 CET
        utc(2024, 3, 31, 1, 30),  # 03:30 CEST (02:30 skipped, shifted by the gap)
        utc(2024, 4, 1, 0, 30),  # 02:30 CEST
    ]
    lengths = [r.data_interval_end - r.data_interval_start for r in created[1:]]  # type: ignore[operator]
    assert lengths == [timedelta(hours=24), timedelta(hours=23)]


async def test_a_long_catchup_is_created_in_chunks(store: Store, runs: RunManager) -> None:
    await store.create_pipeline(
        scheduled("chunky", "*/5 * * * *", catchup=True, start_time="2024-06-01T00:00:00Z"), T0
    )
    ticker = ScheduleTicker(store, runs, max_runs_per_tick=4)
    now = utc(2024, 6, 1, 0, 50)  # 11 fire times: 00:00 .. 00:50
    assert [await ticker.tick(now) for _ in range(4)] == [4, 4, 3, 0]
    created = await scheduled_runs(store, "chunky")
    assert [r.data_interval_end for r in created] == [
        utc(2024, 6, 1, 0, m) for m in range(0, 55, 5)
    ]


async def test_two_tickers_never_create_a_run_twice(store: Store, runs: RunManager) -> None:
    await store.create_pipeline(
        scheduled("shared", "*/10 * * * *", catchup=True, start_time="2024-06-01T00:00:00Z"), T0
    )
    first, second = ScheduleTicker(store, runs), ScheduleTicker(store, runs)
    now = utc(2024, 6, 1, 2, 0)  # 13 fire times
    counts = await asyncio.gather(first.tick(now), second.tick(now), first.tick(now))
    assert sum(counts) == 13
    created = await scheduled_runs(store, "shared")
    assert len(created) == len({r.run_id for r in created}) == 13


async def test_a_broken_pipeline_does_not_stop_the_others(store: Store, runs: RunManager) -> None:
    # The API refuses such a cron; one stored anyway must not break the ticker.
    await store.create_pipeline(scheduled("broken", "61 * * * *"), T0)
    await store.create_pipeline(scheduled("fine", "0 * * * *"), T0)
    ticker = ScheduleTicker(store, runs)
    assert await ticker.tick(utc(2024, 6, 1, 1, 0)) == 1
    assert len(await scheduled_runs(store, "fine")) == 1


async def test_background_loop_ticks_until_closed(store: Store, runs: RunManager) -> None:
    await store.create_pipeline(
        scheduled("looped", "0 * * * *", catchup=True, start_time="2024-06-01T00:00:00Z"), T0
    )
    now = utc(2024, 6, 1, 2, 30)
    ticker = ScheduleTicker(store, runs, clock=lambda: now, interval=0.02)
    ticker.start()

    async def three() -> bool:
        return len(await scheduled_runs(store, "looped")) == 3

    await eventually(three)
    now = utc(2024, 6, 1, 3, 0)
    await eventually(lambda: _count_is(store, "looped", 4))
    await ticker.close()
    now = utc(2024, 6, 1, 9, 0)
    await asyncio.sleep(0.1)
    assert len(await scheduled_runs(store, "looped")) == 4
    await ticker.close()  # closing twice is fine


async def _count_is(store: Store, pipeline: str, count: int) -> bool:
    return len(await scheduled_runs(store, pipeline)) == count


# --- two schedulers on one PostgreSQL database ----------------------------------------


async def test_two_schedulers_on_postgresql_never_duplicate_a_scheduled_run(
    pg_url: str, executor_address: str, data_root: Path
) -> None:
    (data_root / "in.csv").write_text("id,amount\n1,5\n")
    stores = [await open_store(pg_url), await open_store(pg_url)]
    dispatchers = [ExecutorDispatcher(executor_address) for _ in stores]
    managers = [
        RunManager(s, d, instance_id=f"scheduler-{i}")
        for i, (s, d) in enumerate(zip(stores, dispatchers, strict=True))
    ]
    try:
        for manager in managers:
            await manager.start()
        await stores[0].create_pipeline(
            scheduled("ha", "*/5 * * * *", catchup=True, start_time="2024-06-01T00:00:00Z"), T0
        )
        tickers = [ScheduleTicker(s, m) for s, m in zip(stores, managers, strict=True)]
        for minute in (30, 31, 45, 60):
            now = utc(2024, 6, 1, 0, 0) + timedelta(minutes=minute)
            await asyncio.gather(*(t.tick(now) for t in tickers for _ in range(2)))
        created = await scheduled_runs(stores[1], "ha")
        assert len(created) == len({r.run_id for r in created}) == 13  # 00:00 .. 01:00
        assert [r.data_interval_end for r in created] == [
            utc(2024, 6, 1, 0, 0) + timedelta(minutes=5 * i) for i in range(13)
        ]

        async def finished() -> bool:
            return all(r.state is RunState.SUCCEEDED for r in await scheduled_runs(stores[0], "ha"))

        await eventually(finished)
    finally:
        for manager in managers:
            await manager.close()
        for dispatcher in dispatchers:
            await dispatcher.close()
        for opened in stores:
            await opened.close()

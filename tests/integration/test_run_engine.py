"""Run engine with two schedulers on one PostgreSQL database (the real server on
127.0.0.1:5432): adoption of a dead scheduler's run, cancellation through the store,
max_active_runs across schedulers, and a fence failure.

Each scheduler has its own store (its own connection pool), as two processes would;
the executor is an in-test dispatcher (the crash tests with real processes are in
tests/e2e).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.scheduler.domain import (
    Run,
    RunState,
    StageOutput,
    StageState,
    StageTask,
    TaskEvent,
    TaskMetrics,
    TaskStarted,
    TaskSucceeded,
    utc_now,
)
from datadog_platform.scheduler.runs import RunManager
from datadog_platform.scheduler.store import Store, open_store

pytestmark = pytest.mark.timeout(60)


def noop(name: str, after: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    source: dict[str, Any] = {"name": f"{name}_src", "source": {"inline": {"rows": [{"x": 1}]}}}
    if after:
        source["after"] = list(after)
    return [source, {"name": name, "inputs": [f"{name}_src"], "sink": {"discard": {}}}]


def spec(name: str, steps: list[dict[str, Any]], **fields: Any) -> pipeline_pb2.Pipeline:
    return ParseDict({"name": name, "steps": steps, **fields}, pipeline_pb2.Pipeline())


def success(stage_id: str) -> list[TaskEvent]:
    return [
        TaskStarted(),
        TaskSucceeded(TaskMetrics(rows_read=1), (StageOutput(stage_id, "discard", 1),)),
    ]


class Gated:
    """Starts each attempt and holds it until the test releases its stage."""

    def __init__(self, *, hold: bool = True) -> None:
        self.hold = hold
        self.tasks: list[StageTask] = []
        self.open: set[tuple[str, int]] = set()
        self.closed: list[tuple[str, int]] = []
        self.released: set[str] = set()
        self._changed = asyncio.Event()

    def release(self, stage_id: str) -> None:
        self.released.add(stage_id)
        self._changed.set()

    async def execute(self, task: StageTask) -> AsyncIterator[TaskEvent]:
        self.tasks.append(task)
        key = (task.stage_id, task.attempt)
        self.open.add(key)
        try:
            yield TaskStarted()
            while self.hold and task.stage_id not in self.released:
                self._changed.clear()
                await self._changed.wait()
            for event in success(task.stage_id)[1:]:
                yield event
        finally:
            self.open.discard(key)
            self.closed.append(key)


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[list[Store]]:
    opened = [await open_store(pg_url), await open_store(pg_url)]
    await opened[0].create_pipeline(spec("pair", noop("a") + noop("b", ("a",))), utc_now())
    yield opened
    for store in opened:
        await store.close()


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def stored_state(store: Store, run_id: str) -> RunState:
    return (await store.get_run(run_id)).state


async def test_a_dead_schedulers_run_is_adopted_once_its_lease_expires(
    stores: list[Store],
) -> None:
    first_dispatcher = Gated()
    first = RunManager(stores[0], first_dispatcher, instance_id="first", lease_seconds=1.0)
    second_dispatcher = Gated(hold=False)
    second = RunManager(stores[1], second_dispatcher, instance_id="second", lease_seconds=1.0)
    await first.start()
    await second.start()
    try:
        run_id = (await first.start_run("pair")).run_id
        await eventually(lambda: first_dispatcher.open == {("a", 1)})
        await asyncio.sleep(0.3)
        assert second_dispatcher.tasks == []  # held by the first, renewed
        died = time.monotonic()
        await first.close(release=False)  # as if killed: the lease is left to expire
        await eventually(lambda: len(second_dispatcher.tasks) == 2)
        adopted_after = time.monotonic() - died
        assert 0.5 < adopted_after < 2.5
        await second.wait_idle()
        run = await stores[1].get_run(run_id)
        assert run.state is RunState.SUCCEEDED
        assert [(s.stage_id, s.attempt) for s in run.stages] == [("a", 2), ("b", 1)]
        assert [(t.stage_id, t.attempt) for t in second_dispatcher.tasks] == [("a", 2), ("b", 1)]
        # The dead scheduler's attempt was over before the adopter dispatched its own.
        assert first_dispatcher.closed == [("a", 1)]
    finally:
        await first.close()
        await second.close()


async def test_a_cleanly_stopped_schedulers_runs_are_adopted_at_once(stores: list[Store]) -> None:
    first = RunManager(stores[0], Gated(), instance_id="first")
    second_dispatcher = Gated(hold=False)
    second = RunManager(stores[1], second_dispatcher, instance_id="second")
    await first.start()
    await second.start()
    try:
        run_id = (await first.start_run("pair")).run_id
        await asyncio.sleep(0.1)
        stopped = time.monotonic()
        await first.close()  # releases its leases
        await eventually(lambda: len(second_dispatcher.tasks) == 2)
        assert time.monotonic() - stopped < 1.5
        await second.wait_idle()
        assert await stored_state(stores[1], run_id) is RunState.SUCCEEDED
    finally:
        await second.close()


async def test_cancel_from_another_scheduler_goes_through_the_store(stores: list[Store]) -> None:
    driver_dispatcher = Gated()
    driver = RunManager(stores[0], driver_dispatcher, instance_id="driver")
    other = RunManager(stores[1], Gated(), instance_id="other")
    await driver.start()
    await other.start()
    try:
        run_id = (await driver.start_run("pair")).run_id
        await eventually(lambda: driver_dispatcher.open == {("a", 1)})
        started = time.monotonic()
        cancelled = await other.cancel_run(run_id, request_id="c-1")
        assert time.monotonic() - started < 1.5
        assert cancelled.state is RunState.CANCELLED
        assert [s.state for s in cancelled.stages] == [StageState.CANCELLED] * 2
        assert driver_dispatcher.closed == [("a", 1)]  # the attempt was cancelled
        await driver.wait_idle()
        assert await stores[0].get_run(run_id) == cancelled
        # The same request again returns the run; a new one says it is finished.
        assert (await other.cancel_run(run_id, request_id="c-1")).state is RunState.CANCELLED
        with pytest.raises(Exception, match="already finished"):
            await other.cancel_run(run_id)
    finally:
        await driver.close()
        await other.close()


async def test_cancelling_a_run_whose_holder_died_cancels_it_in_the_store(
    stores: list[Store],
) -> None:
    dead = RunManager(stores[0], Gated(), instance_id="dead", lease_seconds=60)
    other = RunManager(stores[1], Gated(), instance_id="other", lease_seconds=0.5)
    await dead.start()
    await other.start()
    try:
        run_id = (await dead.start_run("pair")).run_id
        await asyncio.sleep(0.1)
        await dead.close(release=False)  # its 60 s lease stays
        started = time.monotonic()
        cancelled = await other.cancel_run(run_id)
        # Nobody answered within a lease (+ margin): cancelled in the store.
        assert 0.4 < time.monotonic() - started < 4
        assert cancelled.state is RunState.CANCELLED
        assert await stored_state(stores[0], run_id) is RunState.CANCELLED
    finally:
        await other.close()


async def test_max_active_runs_holds_across_schedulers(stores: list[Store]) -> None:
    await stores[0].create_pipeline(spec("single", noop("x"), maxActiveRuns=1), utc_now())
    first_dispatcher = Gated()
    first = RunManager(stores[0], first_dispatcher, instance_id="first")
    second_dispatcher = Gated(hold=False)
    second = RunManager(stores[1], second_dispatcher, instance_id="second")
    await first.start()
    await second.start()
    try:
        running = (await first.start_run("single")).run_id
        await eventually(lambda: len(first_dispatcher.tasks) == 1)
        waiting = (await second.start_run("single")).run_id
        await asyncio.sleep(0.5)
        assert second_dispatcher.tasks == []
        assert await stored_state(stores[1], waiting) is RunState.QUEUED
        first_dispatcher.release("x")
        await first.wait_idle()
        assert await stored_state(stores[0], running) is RunState.SUCCEEDED
        # The other scheduler polls admission every second.
        await eventually(lambda: len(second_dispatcher.tasks) == 1, within=3)
        await second.wait_idle()
        assert await stored_state(stores[1], waiting) is RunState.SUCCEEDED
    finally:
        await first.close()
        await second.close()


async def test_a_fenced_write_after_adoption_stops_the_old_driver(stores: list[Store]) -> None:
    old_dispatcher = Gated()
    old = RunManager(stores[0], old_dispatcher, instance_id="old")
    await old.start()
    try:
        run_id = (await old.start_run("pair")).run_id
        await eventually(lambda: old_dispatcher.open == {("a", 1)})
        claimed: list[Run] = []
        while not claimed:  # SKIP LOCKED: not while a write of the old driver holds it
            now = utc_now()
            claimed = await stores[1].claim_runs(
                "new", now, now + timedelta(seconds=60), 10, ignore_leases=True
            )
        (taken,) = claimed
        old_dispatcher.release("a")  # its success write is fenced off (or the renewal sees it)
        await old.wait_idle()
        run = await stores[1].get_run(run_id)
        assert run.generation == taken.generation
        # Nothing the old driver did after the claim was written (RUNNING may or may
        # not have made it before).
        assert run.state is RunState.RUNNING
        assert run.stages[0].state in (StageState.QUEUED, StageState.RUNNING)
        assert (run.stages[0].attempt, run.stages[1].state) == (1, StageState.PENDING)
    finally:
        await old.close()

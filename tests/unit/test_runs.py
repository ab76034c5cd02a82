"""Run engine: DAG driving, limits, retries, timeouts, group commit, leases, logs.

Real SQLite store; the executor is replaced by in-test implementations of the
domain ``Dispatcher`` protocol (a unit test of the engine, not of the services:
the integration tests use the real executor). PostgreSQL-only behaviour (two
schedulers on one database) is in tests/integration/test_run_engine.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.scheduler.domain import (
    DispatchError,
    LogLevel,
    LogLine,
    Run,
    RunState,
    RunTrigger,
    StageOutput,
    StageRun,
    StageState,
    StageTask,
    TaskEvent,
    TaskFailed,
    TaskLog,
    TaskMetrics,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
    new_run_id,
    utc_now,
)
from datadog_platform.scheduler.runs import RunManager
from datadog_platform.scheduler.store import Store, open_store

pytestmark = pytest.mark.timeout(30)

STATE_ORDER = list(StageState)


def chain(prefix: str, **sink: Any) -> list[dict[str, Any]]:
    """A file → filter → file chain: one stage named ``<prefix>_out``."""
    return [
        {"name": f"{prefix}_src", "source": {"file": {"path": f"{prefix}.csv"}}},
        {
            "name": f"{prefix}_big",
            "inputs": [f"{prefix}_src"],
            "transform": {"filter": {"predicate": "amount > 100"}},
        },
        {
            "name": f"{prefix}_out",
            "inputs": [f"{prefix}_big"],
            "sink": {"file": {"path": f"{prefix}.parquet"}},
            **sink,
        },
    ]


def noop(name: str, after: tuple[str, ...] = (), **sink: Any) -> list[dict[str, Any]]:
    """A no-op stage named ``name`` (inline → discard) that waits for ``after``."""
    source: dict[str, Any] = {"name": f"{name}_src", "source": {"inline": {"rows": [{"x": 1}]}}}
    if after:
        source["after"] = list(after)
    return [source, {"name": name, "inputs": [f"{name}_src"], "sink": {"discard": {}}, **sink}]


def spec(name: str, steps: list[dict[str, Any]], **fields: Any) -> pipeline_pb2.Pipeline:
    return ParseDict({"name": name, "steps": steps, **fields}, pipeline_pb2.Pipeline())


ONE_STAGE = spec("one", chain("a"))
TWO_STAGES = spec("two", chain("a") + chain("b"))
#: a → (b, c) → d, and e on its own.
DIAMOND = spec(
    "diamond",
    noop("a") + noop("b", ("a",)) + noop("c", ("a",)) + noop("d", ("b", "c")) + noop("e"),
)

METRICS = TaskMetrics(rows_read=50, bytes_read=5000, rows_written=35, bytes_written=3500)


def success(stage_id: str) -> list[TaskEvent]:
    return [
        TaskStarted("exec-1"),
        TaskProgress(TaskMetrics(rows_read=10)),
        TaskSucceeded(METRICS, (StageOutput(stage_id, f"file:///out/{stage_id}", 35),)),
    ]


class ScriptedDispatcher:
    """Plays a fixed script of events (or raises) for each attempt."""

    def __init__(self, script: Callable[[StageTask], list[TaskEvent] | Exception]) -> None:
        self.script = script
        self.tasks: list[StageTask] = []
        self.times: list[float] = []

    async def execute(self, task: StageTask) -> AsyncIterator[TaskEvent]:
        self.tasks.append(task)
        self.times.append(time.time())
        outcome = self.script(task)
        if isinstance(outcome, Exception):
            raise outcome
        for event in outcome:
            await asyncio.sleep(0)
            yield event


class GatedDispatcher:
    """Yields the events a test pushes into each stage's queue; ``None`` ends the stream."""

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[TaskEvent | None]] = {}
        self.tasks: list[StageTask] = []
        self.open: set[str] = set()
        self.closed: list[str] = []

    def queue(self, stage_id: str) -> asyncio.Queue[TaskEvent | None]:
        return self.queues.setdefault(stage_id, asyncio.Queue())

    def finish(self, stage_id: str) -> None:
        for event in success(stage_id):
            self.queue(stage_id).put_nowait(event)

    async def execute(self, task: StageTask) -> AsyncIterator[TaskEvent]:
        self.tasks.append(task)
        self.open.add(task.stage_id)
        queue = self.queue(task.stage_id)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self.open.discard(task.stage_id)
            self.closed.append(task.stage_id)


managers: list[RunManager] = []


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(tmp_path / "s.db")
    for pipeline in (ONE_STAGE, TWO_STAGES, DIAMOND):
        await opened.create_pipeline(pipeline, utc_now())
    yield opened
    while managers:
        await managers.pop().close()
    await opened.close()


async def manager_of(store: Store, dispatcher: Any, **options: Any) -> RunManager:
    options.setdefault("instance_id", f"test-{len(managers)}-{new_run_id()[-6:]}")
    manager = RunManager(store, dispatcher, **options)
    managers.append(manager)
    await manager.start()
    return manager


async def until(manager: RunManager, run_id: str, predicate: Callable[[Run], bool]) -> Run:
    async for run in manager.watch(run_id):
        if predicate(run):
            return run
    raise AssertionError("the run ended before the condition held")


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def finished(manager: RunManager, run_id: str) -> Run:
    await manager.wait_idle()
    return await manager.get_run(run_id)


def states(run: Run) -> dict[str, StageState]:
    return {s.stage_id: s.state for s in run.stages}


# --- basics -----------------------------------------------------------------------------------


async def test_a_successful_run(store: Store) -> None:
    dispatcher = ScriptedDispatcher(lambda task: success(task.stage_id))
    manager = await manager_of(store, dispatcher)
    created = await manager.start_run("one")
    assert created.state is RunState.QUEUED
    assert created.pipeline_version == 1
    assert [(s.stage_id, s.steps, s.state) for s in created.stages] == [
        ("a_out", ("a_src", "a_big", "a_out"), StageState.PENDING)
    ]
    assert len(created.run_id) == 32
    assert created.trigger is RunTrigger.MANUAL
    assert created.logical_date == created.data_interval_start == created.data_interval_end
    assert created.logical_date == created.create_time

    run = await finished(manager, created.run_id)
    assert run.state is RunState.SUCCEEDED
    assert run.start_time is not None
    assert run.end_time is not None
    assert run.error_message == ""
    (stage,) = run.stages
    assert stage.state is StageState.SUCCEEDED
    assert stage.attempt == 1
    assert stage.metrics == METRICS
    assert stage.outputs == (StageOutput("a_out", "file:///out/a_out", 35),)
    assert stage.start_time is not None
    assert stage.end_time is not None
    assert await store.get_run(run.run_id) == run

    (task,) = dispatcher.tasks
    assert (task.run_id, task.stage_id, task.attempt, task.timeout) == (
        run.run_id,
        "a_out",
        1,
        None,
    )
    assert [s.name for s in task.steps] == ["a_src", "a_big", "a_out"]
    assert task.steps[1].transform.filter.predicate == "amount > 100"


async def test_a_failed_stage_fails_the_run(store: Store) -> None:
    def script(task: StageTask) -> list[TaskEvent]:
        if task.stage_id == "b_out":
            return [TaskStarted(), TaskFailed("SOURCE_NOT_FOUND", "b.csv does not exist", "b_src")]
        return success(task.stage_id)

    manager = await manager_of(store, ScriptedDispatcher(script))
    run = await finished(manager, (await manager.start_run("two")).run_id)
    assert run.state is RunState.FAILED
    assert run.error_message == 'stage "b_out" failed: b.csv does not exist'
    a, b = run.stages
    assert a.state is StageState.SUCCEEDED
    assert (b.state, b.error_reason, b.error_message) == (
        StageState.FAILED,
        "SOURCE_NOT_FOUND",
        "b.csv does not exist",
    )
    assert b.end_time is not None
    assert await store.get_run(run.run_id) == run


@pytest.mark.parametrize(
    ("outcome", "reason", "words"),
    [
        (DispatchError("EXECUTOR_UNAVAILABLE", "executor down"), "EXECUTOR_UNAVAILABLE", "down"),
        ([TaskStarted(), TaskProgress(METRICS)], "STAGE_INCOMPLETE", "without reporting"),
        (RuntimeError("bug"), "STAGE_INTERNAL_ERROR", "internal error"),
    ],
)
async def test_dispatch_problems_fail_the_stage(
    store: Store, outcome: Any, reason: str, words: str
) -> None:
    manager = await manager_of(store, ScriptedDispatcher(lambda task: outcome))
    run = await finished(manager, (await manager.start_run("one")).run_id)
    assert run.state is RunState.FAILED
    (stage,) = run.stages
    assert stage.state is StageState.FAILED
    assert stage.error_reason == reason
    assert words in stage.error_message
    assert run.error_message.startswith('stage "a_out" failed: ')


async def test_params_and_the_ticker_api(store: Store) -> None:
    await store.create_pipeline(
        spec("withparams", chain("a"), params={"n": 1, "who": "x"}), utc_now()
    )
    dispatcher = ScriptedDispatcher(lambda task: success(task.stage_id))
    manager = await manager_of(store, dispatcher)
    run = await manager.start_run("withparams", params={"n": 5})
    assert run.params == {"n": 5, "who": "x"}
    with pytest.raises(DomainError) as raised:
        await manager.start_run("withparams", params={"nope": 1})
    assert (raised.value.code, raised.value.reason) == (ErrorCode.INVALID_ARGUMENT, "UNKNOWN_PARAM")

    pipeline = await store.get_pipeline("withparams")
    start = utc_now().replace(microsecond=0) - timedelta(days=1)
    end = start + timedelta(days=1)
    run_id = "0" * 31 + "1"
    created, fresh = await manager.create_run(
        pipeline,
        run_id=run_id,
        trigger=RunTrigger.SCHEDULE,
        logical_date=start,
        interval_end=end,
        params=None,
    )
    assert fresh
    assert (created.trigger, created.logical_date, created.data_interval_start) == (
        RunTrigger.SCHEDULE,
        start,
        start,
    )
    assert (created.data_interval_end, created.params) == (end, {"n": 1, "who": "x"})
    again, fresh = await manager.create_run(
        pipeline,
        run_id=run_id,
        trigger=RunTrigger.SCHEDULE,
        logical_date=start,
        interval_end=end,
        params=None,
    )
    assert not fresh
    assert again.run_id == run_id
    await manager.wait_idle()
    assert sorted(t.run_id for t in dispatcher.tasks) == sorted([run.run_id, run_id])
    assert (await manager.get_run(run_id)).state is RunState.SUCCEEDED


async def test_request_id_returns_the_first_run_and_dispatches_once(store: Store) -> None:
    dispatcher = ScriptedDispatcher(lambda task: success(task.stage_id))
    manager = await manager_of(store, dispatcher)
    first = await manager.start_run("one", request_id="req-1")
    await manager.wait_idle()
    again = await manager.start_run("one", request_id="req-1")
    assert again == first
    assert again.state is RunState.QUEUED
    other = await manager.start_run("one", request_id="req-2")
    assert other.run_id != first.run_id
    await manager.wait_idle()
    assert [t.run_id for t in dispatcher.tasks] == [first.run_id, other.run_id]
    with pytest.raises(DomainError) as raised:
        await manager.start_run("two", request_id="req-1")
    assert raised.value.reason == "REQUEST_ID_REUSED"


async def test_unknown_pipelines_and_runs_are_not_found(store: Store) -> None:
    manager = await manager_of(store, ScriptedDispatcher(lambda task: []))
    with pytest.raises(DomainError) as raised:
        await manager.start_run("nope")
    assert (raised.value.code, raised.value.reason) == (ErrorCode.NOT_FOUND, "PIPELINE_NOT_FOUND")
    with pytest.raises(DomainError) as raised:
        await manager.get_run("nope")
    assert raised.value.reason == "RUN_NOT_FOUND"
    with pytest.raises(DomainError) as raised:
        await anext(manager.watch("nope"))
    assert raised.value.reason == "RUN_NOT_FOUND"
    with pytest.raises(DomainError) as raised:
        await manager.get_run("")
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT


async def test_list_runs_pages_newest_first_and_filters(store: Store) -> None:
    manager = await manager_of(store, ScriptedDispatcher(lambda task: success(task.stage_id)))
    ids = []
    for name in ("one", "two", "one"):
        ids.append((await manager.start_run(name)).run_id)
        await manager.wait_idle()
        await asyncio.sleep(0.002)  # run ids sort by millisecond
    page, token = await manager.list_runs(page_size=2)
    assert [r.run_id for r in page] == ids[::-1][:2]
    assert token
    rest, end = await manager.list_runs(page_size=2, page_token=token)
    assert [r.run_id for r in rest] == [ids[0]]
    assert end == ""
    only_one, _ = await manager.list_runs(pipeline="one")
    assert [r.run_id for r in only_one] == [ids[2], ids[0]]
    assert (await manager.list_runs(pipeline="nope"))[0] == []
    assert (await manager.list_runs(states=(RunState.FAILED,)))[0] == []
    assert (await manager.list_runs(backfill_id="bf"))[0] == []
    with pytest.raises(DomainError) as raised:
        await manager.list_runs(page_token="garbage")
    assert raised.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(DomainError) as raised:
        await manager.list_runs(page_size=-1)
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT


# --- watching -----------------------------------------------------------------------------------


async def test_watchers_see_committed_states_and_live_progress(store: Store) -> None:
    dispatcher = GatedDispatcher()
    manager = await manager_of(store, dispatcher, progress_persist_interval=3600)
    run_id = (await manager.start_run("one")).run_id
    watch = manager.watch(run_id)
    snapshot = await anext(watch)
    assert snapshot.run_id == run_id
    while snapshot.stages[0].state is not StageState.QUEUED:
        snapshot = await anext(watch)
    assert snapshot.state is RunState.RUNNING
    # Watchers are told after the commit: the store has what they see.
    stored = await store.get_run(run_id)
    assert (stored.state, stored.stages[0].state) == (RunState.RUNNING, StageState.QUEUED)

    queue = dispatcher.queue("a_out")
    queue.put_nowait(TaskStarted())
    snapshot = await anext(watch)
    assert snapshot.stages[0].state is StageState.RUNNING
    assert (await store.get_run(run_id)).stages[0].state is StageState.RUNNING

    for rows in (10, 20, 30):
        queue.put_nowait(TaskProgress(TaskMetrics(rows_read=rows)))
        snapshot = await anext(watch)
        assert snapshot.stages[0].metrics.rows_read == rows
    assert (await manager.get_run(run_id)).stages[0].metrics.rows_read == 30
    # Progress within the persist interval is shown live but not written.
    assert (await store.get_run(run_id)).stages[0].metrics.rows_read == 0

    queue.put_nowait(success("a_out")[-1])
    rest = [snapshot async for snapshot in watch]
    assert rest[-1].state is RunState.SUCCEEDED
    assert all(not s.state.is_terminal for s in rest[:-1])
    assert (await store.get_run(run_id)).stages[0].metrics == METRICS
    # Watching a finished run yields it once and ends.
    assert [r.state async for r in manager.watch(run_id)] == [RunState.SUCCEEDED]


async def test_progress_is_written_once_the_interval_has_passed(store: Store) -> None:
    dispatcher = GatedDispatcher()
    manager = await manager_of(store, dispatcher, progress_persist_interval=0)
    run_id = (await manager.start_run("one")).run_id
    dispatcher.queue("a_out").put_nowait(TaskStarted())
    await until(manager, run_id, lambda r: r.stages[0].state is StageState.RUNNING)
    dispatcher.queue("a_out").put_nowait(TaskProgress(TaskMetrics(rows_read=7)))
    await until(manager, run_id, lambda r: r.stages[0].metrics.rows_read == 7)
    assert (await store.get_run(run_id)).stages[0].metrics.rows_read == 7
    dispatcher.queue("a_out").put_nowait(None)
    await manager.wait_idle()


# --- the DAG --------------------------------------------------------------------------------------


async def test_stages_follow_the_dag_and_independent_ones_run_in_parallel(store: Store) -> None:
    gated = GatedDispatcher()
    manager = await manager_of(store, gated)
    created = await manager.start_run("diamond")
    assert {s.stage_id: s.upstream for s in created.stages} == {
        "a": (),
        "b": ("a",),
        "c": ("a",),
        "d": ("b", "c"),
        "e": (),
    }
    run_id = created.run_id
    # The roots start together; the others wait.
    await eventually(lambda: gated.open == {"a", "e"})
    run = await manager.get_run(run_id)
    assert states(run) == {
        "a": StageState.QUEUED,
        "b": StageState.PENDING,
        "c": StageState.PENDING,
        "d": StageState.PENDING,
        "e": StageState.QUEUED,
    }
    gated.finish("a")
    await eventually(lambda: gated.open == {"b", "c", "e"})
    gated.finish("b")
    await until(manager, run_id, lambda r: states(r)["b"] is StageState.SUCCEEDED)
    await asyncio.sleep(0.05)
    assert "d" not in gated.open  # still waits for c
    assert states(await manager.get_run(run_id))["d"] is StageState.PENDING
    gated.finish("c")
    await eventually(lambda: "d" in gated.open)
    gated.finish("d")
    gated.finish("e")
    run = await finished(manager, run_id)
    assert run.state is RunState.SUCCEEDED
    order = [t.stage_id for t in gated.tasks]
    assert order.index("a") < order.index("b") < order.index("d")
    assert order.index("c") < order.index("d")
    assert await store.get_run(run_id) == run


async def test_a_failure_makes_the_downstream_stages_upstream_failed(store: Store) -> None:
    def script(task: StageTask) -> list[TaskEvent]:
        if task.stage_id == "a":
            return [TaskStarted(), TaskFailed("SOURCE_NOT_FOUND", "gone", "a_src")]
        return success(task.stage_id)

    dispatcher = ScriptedDispatcher(script)
    manager = await manager_of(store, dispatcher)
    run = await finished(manager, (await manager.start_run("diamond")).run_id)
    assert run.state is RunState.FAILED
    assert states(run) == {
        "a": StageState.FAILED,
        "b": StageState.UPSTREAM_FAILED,
        "c": StageState.UPSTREAM_FAILED,
        "d": StageState.UPSTREAM_FAILED,
        "e": StageState.SUCCEEDED,
    }
    assert sorted(t.stage_id for t in dispatcher.tasks) == ["a", "e"]
    blocked = {s.stage_id: s for s in run.stages}["d"]
    assert (blocked.error_reason, blocked.attempt) == ("UPSTREAM_FAILED", 0)
    assert blocked.end_time is not None
    assert run.error_message == 'stage "a" failed: gone; 3 downstream stages not run'
    assert await store.get_run(run.run_id) == run


# --- limits ---------------------------------------------------------------------------------------


async def test_the_global_limit_bounds_stages_in_flight(store: Store) -> None:
    await store.create_pipeline(
        spec("wide", noop("root") + [s for i in range(5) for s in noop(f"s{i}", ("root",))]),
        utc_now(),
    )
    gated = GatedDispatcher()
    manager = await manager_of(store, gated, max_parallel_stages=2)
    run_id = (await manager.start_run("wide")).run_id
    await eventually(lambda: gated.open == {"root"})
    gated.finish("root")
    await eventually(lambda: len(gated.open) == 2)
    await asyncio.sleep(0.05)
    assert len(gated.open) == 2
    run = await manager.get_run(run_id)
    # The others are QUEUED: ready, waiting for a slot.
    assert sorted(s.state for s in run.stages).count(StageState.QUEUED) == 5
    first = sorted(gated.open)[0]
    gated.finish(first)
    await eventually(lambda: len(gated.tasks) == 4)
    assert len(gated.open) == 2
    for i in range(5):
        gated.finish(f"s{i}")
    assert (await finished(manager, run_id)).state is RunState.SUCCEEDED


async def test_max_active_tasks_bounds_a_pipeline_over_its_runs(store: Store) -> None:
    await store.create_pipeline(spec("narrow", noop("x") + noop("y"), maxActiveTasks=1), utc_now())
    dispatched: list[tuple[str, str]] = []
    release = asyncio.Event()
    in_flight = 0
    peak = 0

    class Counting:
        async def execute(self, task: StageTask) -> AsyncIterator[TaskEvent]:
            nonlocal in_flight, peak
            dispatched.append((task.run_id, task.stage_id))
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                await release.wait()
                for event in success(task.stage_id):
                    yield event
            finally:
                in_flight -= 1

    manager = await manager_of(store, Counting())
    first = (await manager.start_run("narrow")).run_id
    second = (await manager.start_run("narrow")).run_id
    await eventually(lambda: len(dispatched) == 1)
    await asyncio.sleep(0.05)
    assert len(dispatched) == 1
    release.set()
    await manager.wait_idle()
    assert peak == 1
    assert len(dispatched) == 4
    for run_id in (first, second):
        assert (await manager.get_run(run_id)).state is RunState.SUCCEEDED


async def test_max_active_runs_keeps_runs_queued_until_admitted(store: Store) -> None:
    await store.create_pipeline(spec("single", noop("x"), maxActiveRuns=1), utc_now())
    gated = GatedDispatcher()
    manager = await manager_of(store, gated)
    first = (await manager.start_run("single")).run_id
    await eventually(lambda: gated.open == {"x"})
    second = (await manager.start_run("single")).run_id
    await asyncio.sleep(0.1)
    waiting = await manager.get_run(second)
    assert (waiting.state, waiting.start_time) == (RunState.QUEUED, None)
    assert (await store.get_run(second)).state is RunState.QUEUED
    assert len(gated.tasks) == 1
    started = time.monotonic()
    gated.finish("x")
    # Admitted as soon as the first run finished here (not at the next poll).
    await eventually(lambda: len(gated.tasks) == 2)
    assert time.monotonic() - started < 0.5
    assert (await manager.get_run(first)).state is RunState.SUCCEEDED
    admitted = await manager.get_run(second)
    assert admitted.state is RunState.RUNNING
    assert admitted.start_time is not None
    gated.finish("x")
    assert (await finished(manager, second)).state is RunState.SUCCEEDED


# --- group commit -----------------------------------------------------------------------------


async def test_state_changes_are_written_in_few_transactions(store: Store) -> None:
    width = 200
    steps = noop("root") + [s for i in range(width) for s in noop(f"s{i}", ("root",))]
    steps += noop("join", tuple(f"s{i}" for i in range(width)))
    await store.create_pipeline(spec("fan", steps), utc_now())
    applied: list[int] = []
    apply = store.apply

    async def counting_apply(changes: Any) -> set[str]:
        applied.append(sum(len(c.stages) for c in changes))
        return await apply(changes)

    store.apply = counting_apply  # type: ignore[method-assign]
    manager = await manager_of(
        store, ScriptedDispatcher(lambda task: success(task.stage_id)), max_parallel_stages=64
    )
    run = await finished(manager, (await manager.start_run("fan")).run_id)
    assert run.state is RunState.SUCCEEDED
    assert all(s.attempt == 1 for s in run.stages)
    # Each stage changes state 3 times (QUEUED, RUNNING, SUCCEEDED) at least.
    assert sum(applied) >= width + 2
    assert len(applied) < 60, applied
    assert await store.get_run(run.run_id) == run


# --- retries --------------------------------------------------------------------------------------


async def retrying_pipeline(store: Store, name: str, **policy: Any) -> str:
    """A one-stage pipeline whose sink step carries ``policy`` (tiny backoffs)."""
    await store.create_pipeline(
        spec(
            name,
            chain("a", retry={"initialBackoff": "0.001s", "maxBackoff": "0.005s", **policy}),
        ),
        utc_now(),
    )
    return name


def failing(times: int, outcome: Callable[[], list[TaskEvent] | Exception]) -> Any:
    """A script whose first ``times`` attempts end with ``outcome``, then succeed."""

    def script(task: StageTask) -> list[TaskEvent] | Exception:
        return outcome() if task.attempt <= times else success(task.stage_id)

    return script


def unavailable() -> list[TaskEvent]:
    return [TaskStarted(), TaskFailed("SOURCE_UNAVAILABLE", "db refused", "a_src", True)]


def not_found() -> list[TaskEvent]:
    return [TaskStarted(), TaskFailed("SOURCE_NOT_FOUND", "a.csv does not exist", "a_src")]


async def test_retryable_failures_are_retried_until_success(store: Store) -> None:
    name = await retrying_pipeline(store, "retried", maxAttempts=3)
    delays: list[float] = []

    def uniform(low: float, high: float) -> float:
        delays.append(high)
        return high

    dispatcher = ScriptedDispatcher(failing(2, unavailable))
    manager = await manager_of(store, dispatcher, uniform=uniform)
    run_id = (await manager.start_run(name)).run_id
    run = await finished(manager, run_id)
    assert run.state is RunState.SUCCEEDED
    (stage,) = run.stages
    assert (stage.state, stage.attempt, stage.error_reason) == (StageState.SUCCEEDED, 3, "")
    assert stage.next_attempt_time is None
    assert stage.metrics == METRICS
    assert [t.attempt for t in dispatcher.tasks] == [1, 2, 3]
    assert delays == [0.001, 0.002]  # initial, then doubled (default multiplier)
    assert await store.get_run(run_id) == run
    # The failed attempts' logs say what happened.
    attempt, lines, _ = await manager.stage_logs(run_id, "a_out", attempt=1)
    assert attempt == 1
    assert [line.level for line in lines] == [LogLevel.WARNING]
    assert "attempt 1 failed (SOURCE_UNAVAILABLE): db refused; retrying in" in lines[0].message


async def test_a_lost_executor_and_a_timeout_are_retried(store: Store) -> None:
    name = await retrying_pipeline(store, "lost", maxAttempts=3)
    outcomes = iter(
        [DispatchError("EXECUTOR_UNAVAILABLE", "stream broke"), DispatchError("STAGE_TIMEOUT", "")]
    )
    dispatcher = ScriptedDispatcher(failing(2, lambda: next(outcomes)))
    manager = await manager_of(store, dispatcher)
    run = await finished(manager, (await manager.start_run(name)).run_id)
    assert run.state is RunState.SUCCEEDED
    assert run.stages[0].attempt == 3


async def test_a_non_retryable_failure_fails_after_one_attempt(store: Store) -> None:
    name = await retrying_pipeline(store, "fatal", maxAttempts=5)
    dispatcher = ScriptedDispatcher(failing(5, not_found))
    manager = await manager_of(store, dispatcher)
    run = await finished(manager, (await manager.start_run(name)).run_id)
    assert run.state is RunState.FAILED
    (stage,) = run.stages
    assert (stage.state, stage.attempt, stage.error_reason) == (
        StageState.FAILED,
        1,
        "SOURCE_NOT_FOUND",
    )
    assert len(dispatcher.tasks) == 1


async def test_retry_all_failures_retries_any_failure(store: Store) -> None:
    name = await retrying_pipeline(store, "all", maxAttempts=3, retryAllFailures=True)
    dispatcher = ScriptedDispatcher(failing(1, not_found))
    manager = await manager_of(store, dispatcher)
    run = await finished(manager, (await manager.start_run(name)).run_id)
    assert run.state is RunState.SUCCEEDED
    assert run.stages[0].attempt == 2


async def test_exhausted_attempts_fail_with_the_last_error(store: Store) -> None:
    name = await retrying_pipeline(store, "exhausted", maxAttempts=3)
    count = iter(range(1, 100))

    def numbered() -> list[TaskEvent]:
        return [TaskFailed("SOURCE_UNAVAILABLE", f"refused #{next(count)}", "a_src", True)]

    dispatcher = ScriptedDispatcher(failing(99, numbered))
    manager = await manager_of(store, dispatcher)
    run = await finished(manager, (await manager.start_run(name)).run_id)
    assert run.state is RunState.FAILED
    (stage,) = run.stages
    assert (stage.state, stage.attempt) == (StageState.FAILED, 3)
    assert (stage.error_reason, stage.error_message) == ("SOURCE_UNAVAILABLE", "refused #3")
    assert run.error_message == 'stage "a_out" failed: refused #3'
    assert len(dispatcher.tasks) == 3


async def test_the_pipeline_default_policy_applies(store: Store) -> None:
    await store.create_pipeline(
        spec("defaulted", chain("a"), defaultRetry={"maxAttempts": 2, "initialBackoff": "0s"}),
        utc_now(),
    )
    dispatcher = ScriptedDispatcher(failing(1, unavailable))
    manager = await manager_of(store, dispatcher)
    run = await finished(manager, (await manager.start_run("defaulted")).run_id)
    assert run.state is RunState.SUCCEEDED
    assert run.stages[0].attempt == 2
    # Without any policy, a retryable failure still fails after one attempt.
    dispatcher.script = failing(1, unavailable)
    run = await finished(manager, (await manager.start_run("one")).run_id)
    assert (run.state, run.stages[0].attempt) == (RunState.FAILED, 1)


async def test_the_backoff_deadline_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await open_store(path)
    await retrying_pipeline(store, "slow", maxAttempts=2, initialBackoff="1s", maxBackoff="1s")
    first = RunManager(
        store, ScriptedDispatcher(failing(1, unavailable)), instance_id="first", uniform=max
    )
    await first.start()
    run_id = (await first.start_run("slow")).run_id
    waiting = await until(first, run_id, lambda r: r.stages[0].next_attempt_time is not None)
    due = waiting.stages[0].next_attempt_time
    assert due is not None
    assert (waiting.stages[0].state, waiting.stages[0].attempt) == (StageState.QUEUED, 1)
    assert (await store.get_run(run_id)).stages[0].next_attempt_time == due
    await first.close()
    await store.close()

    store = await open_store(path)
    try:
        dispatcher = ScriptedDispatcher(lambda task: success(task.stage_id))
        second = RunManager(store, dispatcher, instance_id="second")
        assert await second.start() == 1
        run = await finished(second, run_id)
        await second.close()
        assert run.state is RunState.SUCCEEDED
        assert [t.attempt for t in dispatcher.tasks] == [2]
        # It waited for the remaining delay, not a fresh one, and not none at all.
        assert dispatcher.times[0] >= due.timestamp() - 0.01
        assert dispatcher.times[0] < due.timestamp() + 0.5
    finally:
        await store.close()


async def test_executor_busy_backs_off_without_using_an_attempt(store: Store) -> None:
    name = await retrying_pipeline(store, "busy", maxAttempts=1)
    answers = iter([DispatchError("EXECUTOR_BUSY", "all slots taken")] * 4)

    def script(task: StageTask) -> list[TaskEvent] | Exception:
        return next(answers, None) or success(task.stage_id)

    waits: list[float] = []

    def uniform(low: float, high: float) -> float:
        waits.append(high)
        return low

    dispatcher = ScriptedDispatcher(script)
    manager = await manager_of(store, dispatcher, uniform=uniform)
    run = await finished(manager, (await manager.start_run(name)).run_id)
    assert run.state is RunState.SUCCEEDED
    assert run.stages[0].attempt == 1
    assert [t.attempt for t in dispatcher.tasks] == [1] * 5
    assert waits == [0.02, 0.04, 0.08, 0.16]  # doubling; capped at 2 s


async def test_cancelling_during_the_backoff_is_prompt(store: Store) -> None:
    name = await retrying_pipeline(
        store, "slowcancel", maxAttempts=3, initialBackoff="60s", maxBackoff="60s"
    )
    dispatcher = ScriptedDispatcher(failing(99, unavailable))
    manager = await manager_of(store, dispatcher, uniform=lambda low, high: high)
    run_id = (await manager.start_run(name)).run_id
    await until(manager, run_id, lambda r: r.stages[0].next_attempt_time is not None)
    started = time.monotonic()
    cancelled = await manager.cancel_run(run_id)
    assert time.monotonic() - started < 1.0
    assert cancelled.state is RunState.CANCELLED
    assert [(s.state, s.attempt, s.next_attempt_time) for s in cancelled.stages] == [
        (StageState.CANCELLED, 1, None)
    ]
    await manager.wait_idle()
    assert len(dispatcher.tasks) == 1
    assert await store.get_run(run_id) == cancelled


# --- timeouts -------------------------------------------------------------------------------------


class Hanging:
    """Starts every attempt listed in ``hang`` and never ends it; others succeed."""

    def __init__(self, hang: Callable[[StageTask], bool]) -> None:
        self.hang = hang
        self.tasks: list[StageTask] = []
        self.cancelled: list[tuple[str, int]] = []

    async def execute(self, task: StageTask) -> AsyncIterator[TaskEvent]:
        self.tasks.append(task)
        if not self.hang(task):
            for event in success(task.stage_id):
                yield event
            return
        yield TaskStarted()
        try:
            await asyncio.Event().wait()
        finally:
            self.cancelled.append((task.stage_id, task.attempt))


async def test_a_stage_timeout_fails_the_attempt_and_is_retried(store: Store) -> None:
    steps = chain("a", retry={"maxAttempts": 2, "initialBackoff": "0s"}, timeout="5s")
    steps[0]["timeout"] = "0.2s"  # the smallest of the stage's steps applies
    await store.create_pipeline(spec("timed", steps), utc_now())
    dispatcher = Hanging(lambda task: task.attempt == 1)
    manager = await manager_of(store, dispatcher)
    started = time.monotonic()
    run = await finished(manager, (await manager.start_run("timed")).run_id)
    assert 0.2 <= time.monotonic() - started < 2
    assert run.state is RunState.SUCCEEDED
    assert [t.timeout for t in dispatcher.tasks] == [0.2, 0.2]
    assert dispatcher.cancelled == [("a_out", 1)]
    _, lines, _ = await manager.stage_logs(run.run_id, "a_out", attempt=1)
    assert "STAGE_TIMEOUT" in lines[0].message
    assert "timeout of 0.2s" in lines[0].message


async def test_the_run_timeout_cancels_unfinished_stages_and_fails_the_run(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await open_store(path)
    await store.create_pipeline(
        spec(
            "deadline", noop("quick") + noop("stuck") + noop("after", ("stuck",)), runTimeout="1s"
        ),
        utc_now(),
    )
    hanging = Hanging(lambda task: task.stage_id == "stuck")
    first = RunManager(store, hanging, instance_id="first")
    await first.start()
    run_id = (await first.start_run("deadline")).run_id
    await eventually(lambda: len(hanging.tasks) == 2)
    await asyncio.sleep(0.6)
    # The deadline counts from the run's start, across a restart.
    await first.close()
    await store.close()
    store = await open_store(path)
    try:
        hanging = Hanging(lambda task: task.stage_id == "stuck")
        second = RunManager(store, hanging, instance_id="second")
        adopted = time.monotonic()
        await second.start()
        run = await finished(second, run_id)
        assert time.monotonic() - adopted < 0.8  # not a whole run_timeout from now
        await second.close()
        assert run.state is RunState.FAILED
        assert run.error_message == "the run exceeded its run_timeout of 1s"
        assert run.end_time is not None
        assert run.start_time is not None
        assert run.end_time - run.start_time >= timedelta(seconds=1)
        by_id = {s.stage_id: s for s in run.stages}
        assert by_id["quick"].state is StageState.SUCCEEDED
        assert (by_id["stuck"].state, by_id["stuck"].error_reason) == (
            StageState.CANCELLED,
            "RUN_TIMEOUT",
        )
        assert (by_id["after"].state, by_id["after"].error_reason) == (
            StageState.CANCELLED,
            "RUN_TIMEOUT",
        )
        assert hanging.cancelled == [("stuck", 2)]
        assert await store.get_run(run_id) == run
    finally:
        await store.close()


# --- templates, logs, watermarks ----------------------------------------------------------------


async def test_a_template_error_fails_the_stage_without_retry(store: Store) -> None:
    steps = chain("a", retry={"maxAttempts": 3, "retryAllFailures": True})
    steps[0]["source"]["file"]["path"] = "in_{{ params.n + 1 }}.csv"
    await store.create_pipeline(spec("templated", steps, params={"n": 1}), utc_now())
    dispatcher = ScriptedDispatcher(lambda task: success(task.stage_id))
    manager = await manager_of(store, dispatcher)
    good = await finished(manager, (await manager.start_run("templated")).run_id)
    assert good.state is RunState.SUCCEEDED
    assert dispatcher.tasks[0].steps[0].source.file.path == "in_2.csv"
    bad = await finished(manager, (await manager.start_run("templated", params={"n": "x"})).run_id)
    assert bad.state is RunState.FAILED
    (stage,) = bad.stages
    assert (stage.state, stage.attempt, stage.error_reason) == (
        StageState.FAILED,
        1,
        "TEMPLATE_ERROR",
    )
    assert 'step "a_src"' in stage.error_message
    assert len(dispatcher.tasks) == 1


async def test_logs_and_watermarks_are_written(store: Store) -> None:
    steps = chain("a")
    steps[0]["watermark"] = {"column": "id", "initial": "0"}
    steps[0]["source"]["file"]["path"] = "in_{{ watermark }}.csv"
    await store.create_pipeline(spec("incremental", steps), utc_now())
    now = utc_now()
    lines = [LogLine(now, LogLevel.INFO, f"line {i}", "a_src") for i in range(5)]

    def script(task: StageTask) -> list[TaskEvent]:
        return [
            TaskStarted(),
            TaskLog(tuple(lines[:3])),
            TaskLog(tuple(lines[3:])),
            TaskSucceeded(METRICS, (), {"a_src": str(41 + task.attempt + len(dispatcher.tasks))}),
        ]

    dispatcher = ScriptedDispatcher(script)
    manager = await manager_of(store, dispatcher)
    run = await finished(manager, (await manager.start_run("incremental")).run_id)
    assert run.state is RunState.SUCCEEDED
    assert await store.watermarks("incremental") == {"a_src": "43"}
    assert dispatcher.tasks[0].steps[0].source.file.path == "in_0.csv"

    attempt, page, token = await manager.stage_logs(run.run_id, "a_out", page_size=2)
    assert (attempt, page) == (1, lines[:2])
    assert token
    attempt, page, token = await manager.stage_logs(
        run.run_id, "a_out", page_size=2, page_token=token
    )
    assert (attempt, page) == (1, lines[2:4])
    attempt, page, token = await manager.stage_logs(
        run.run_id, "a_out", attempt=1, page_size=2, page_token=token
    )
    assert (attempt, page, token) == (1, lines[4:], "")
    stored = await store.stage_logs(run.run_id, "a_out", 1, 0, 100)
    assert [line.seq for line in stored] == [1, 2, 3, 4, 5]

    # The next run's templates see the saved watermark.
    await finished(manager, (await manager.start_run("incremental")).run_id)
    assert dispatcher.tasks[1].steps[0].source.file.path == "in_43.csv"
    assert await store.watermarks("incremental") == {"a_src": "44"}

    for bad in (
        {"page_token": "garbage"},
        {"page_token": token or "x"},
        {"page_size": -1},
        {"attempt": -1},
    ):
        with pytest.raises(DomainError) as raised:
            await manager.stage_logs(run.run_id, "a_out", **bad)
        assert raised.value.code is ErrorCode.INVALID_ARGUMENT
    other_token = (await manager.stage_logs(run.run_id, "a_out", page_size=1))[2]
    with pytest.raises(DomainError) as raised:
        await manager.stage_logs(run.run_id, "a_out", attempt=2, page_token=other_token)
    assert raised.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(DomainError) as raised:
        await manager.stage_logs(run.run_id, "nope")
    assert raised.value.code is ErrorCode.NOT_FOUND


# --- restarts and leases ----------------------------------------------------------------------


async def test_a_restarted_manager_resumes_unfinished_runs(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await open_store(path)
    await store.create_pipeline(TWO_STAGES, utc_now())
    gated = GatedDispatcher()
    manager = RunManager(store, gated, instance_id="first")
    await manager.start()
    run_id = (await manager.start_run("two")).run_id
    # Stage a_out finishes; b_out is running when the process "dies".
    gated.finish("a_out")
    gated.queue("b_out").put_nowait(TaskStarted())
    await until(
        manager,
        run_id,
        lambda r: [s.state for s in r.stages] == [StageState.SUCCEEDED, StageState.RUNNING],
    )
    await manager.close()
    assert "b_out" in gated.closed  # the interrupted attempt was cancelled
    await store.close()

    store = await open_store(path)
    try:
        left = await store.get_run(run_id)
        assert left.state is RunState.RUNNING
        assert [(s.state, s.attempt) for s in left.stages] == [
            (StageState.SUCCEEDED, 1),
            (StageState.RUNNING, 1),
        ]
        dispatcher = ScriptedDispatcher(lambda task: success(task.stage_id))
        manager = RunManager(store, dispatcher, instance_id="second")
        assert await manager.start() == 1
        run = await finished(manager, run_id)
        assert run.state is RunState.SUCCEEDED
        # Only the unfinished stage runs again, as a new attempt.
        assert [(t.stage_id, t.attempt) for t in dispatcher.tasks] == [("b_out", 2)]
        assert [s.attempt for s in run.stages] == [1, 2]
        assert await store.get_run(run_id) == run
        await manager.close()
    finally:
        await store.close()


async def test_a_lost_lease_stops_the_driver_without_writing(store: Store) -> None:
    gated = GatedDispatcher()
    # No lease loop (not started): the fence of the next write finds the loss.
    manager = RunManager(store, gated, instance_id="mine")
    managers.append(manager)
    run_id = (await manager.start_run("two")).run_id
    gated.queue("a_out").put_nowait(TaskStarted())
    gated.queue("b_out").put_nowait(TaskStarted())
    await until(manager, run_id, lambda r: all(s.state is StageState.RUNNING for s in r.stages))
    (stolen,) = await store.claim_runs(
        "thief", utc_now(), utc_now() + timedelta(seconds=60), 10, ignore_leases=True
    )
    assert stolen.run_id == run_id
    gated.finish("a_out")  # its SUCCEEDED write fails the fence
    await manager.wait_idle()
    assert "b_out" in gated.closed  # the other attempt was cancelled at once
    run = await store.get_run(run_id)
    assert [s.state for s in run.stages] == [StageState.RUNNING, StageState.RUNNING]
    assert run.state is RunState.RUNNING
    assert run.generation == stolen.generation
    # No longer driven here: reads come from the store.
    assert await manager.get_run(run_id) == run


async def test_the_lease_loop_notices_a_lost_lease(store: Store) -> None:
    gated = GatedDispatcher()
    manager = await manager_of(store, gated, lease_seconds=0.3)
    run_id = (await manager.start_run("one")).run_id
    await eventually(lambda: gated.open == {"a_out"})
    await store.claim_runs(
        "thief", utc_now(), utc_now() + timedelta(seconds=60), 10, ignore_leases=True
    )
    await eventually(lambda: "a_out" in gated.closed, within=2)
    await manager.wait_idle()
    assert (await store.get_run(run_id)).stages[0].state is StageState.QUEUED


async def test_runs_stop_before_leases_that_cannot_be_renewed_expire(store: Store) -> None:
    gated = GatedDispatcher()
    manager = await manager_of(store, gated, lease_seconds=0.4)
    run_id = (await manager.start_run("one")).run_id
    await eventually(lambda: gated.open == {"a_out"})

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise OSError("database unreachable")

    store.renew_leases = unreachable  # type: ignore[method-assign]
    started = time.monotonic()
    await eventually(lambda: "a_out" in gated.closed, within=2)
    assert time.monotonic() - started < 0.6
    await manager.wait_idle()
    assert (await store.get_run(run_id)).state is RunState.RUNNING  # left for an adopter


async def test_leases_are_renewed_while_a_run_is_driven(store: Store) -> None:
    gated = GatedDispatcher()
    manager = await manager_of(store, gated, lease_seconds=0.3)
    run_id = (await manager.start_run("one")).run_id
    await eventually(lambda: gated.open == {"a_out"})
    await asyncio.sleep(0.8)  # well past the first lease
    assert await store.claim_runs("thief", utc_now(), utc_now(), 10) == []
    gated.finish("a_out")
    assert (await finished(manager, run_id)).state is RunState.SUCCEEDED


# --- cancellation ---------------------------------------------------------------------------------


async def test_cancelling_a_pending_run_dispatches_nothing(store: Store) -> None:
    gated = GatedDispatcher()
    manager = await manager_of(store, gated)
    run_id = (await manager.start_run("two")).run_id
    # No await in between: the driver has not dispatched anything yet.
    cancelled = await manager.cancel_run(run_id)
    assert cancelled.state is RunState.CANCELLED
    assert cancelled.error_message == "cancelled"
    assert cancelled.end_time is not None
    assert [s.state for s in cancelled.stages] == [StageState.CANCELLED] * 2
    assert all(s.end_time is not None and s.attempt == 0 for s in cancelled.stages)
    await manager.wait_idle()
    assert gated.tasks == []
    assert await store.get_run(run_id) == cancelled
    # A finished run cannot be cancelled; its state says why.
    with pytest.raises(DomainError) as raised:
        await manager.cancel_run(run_id)
    error = raised.value
    assert (error.code, error.reason) == (ErrorCode.FAILED_PRECONDITION, "RUN_ALREADY_FINISHED")
    assert error.metadata["state"] == "CANCELLED"


async def test_cancelling_a_running_stage_closes_its_attempt(store: Store) -> None:
    gated = GatedDispatcher()
    manager = await manager_of(store, gated)
    run_id = (await manager.start_run("diamond")).run_id
    gated.finish("a")
    gated.finish("e")
    gated.queue("b").put_nowait(TaskStarted())
    await until(manager, run_id, lambda r: states(r)["b"] is StageState.RUNNING)
    watcher = asyncio.create_task(until(manager, run_id, lambda r: r.state.is_terminal))
    started = time.monotonic()
    first, second = await asyncio.gather(
        manager.cancel_run(run_id, request_id="c-1"), manager.cancel_run(run_id)
    )
    assert time.monotonic() - started < 1.0
    assert first == second  # a cancel in progress is joined, not refused
    assert first.state is RunState.CANCELLED
    assert states(first) == {
        "a": StageState.SUCCEEDED,
        "b": StageState.CANCELLED,
        "c": StageState.CANCELLED,
        "d": StageState.CANCELLED,
        "e": StageState.SUCCEEDED,
    }
    assert {"b", "c"} <= set(gated.closed)  # the running attempts were cancelled
    assert (await watcher) == first
    assert await store.get_run(run_id) == first
    # A retry of the same cancel request returns the run instead of an error.
    assert await manager.cancel_run(run_id, request_id="c-1") == first


async def test_a_run_no_manager_drives_is_cancelled_in_the_store(store: Store) -> None:
    stages = [
        StageRun("a_out", ("a_src", "a_big", "a_out")),
        StageRun("b_out", ("b_src", "b_big", "b_out")),
    ]
    run = Run(new_run_id(), "two", 1, RunState.QUEUED, utc_now(), stages)
    await store.create_run(run, owner="gone", lease_until=utc_now() + timedelta(seconds=60))
    manager = RunManager(store, GatedDispatcher(), instance_id="here")  # not started
    managers.append(manager)
    cancelled = await manager.cancel_run(run.run_id)
    assert cancelled.state is RunState.CANCELLED
    assert [s.state for s in cancelled.stages] == [StageState.CANCELLED] * 2
    assert await store.get_run(run.run_id) == cancelled
    with pytest.raises(DomainError) as raised:
        await manager.cancel_run("nope")
    assert raised.value.reason == "RUN_NOT_FOUND"


# --- RetryRun -------------------------------------------------------------------------------------


async def test_retry_reruns_only_the_failed_stages(store: Store) -> None:
    broken = {"a"}

    def script(task: StageTask) -> list[TaskEvent]:
        if task.stage_id in broken:
            return [TaskStarted(), TaskFailed("SOURCE_NOT_FOUND", "a.csv does not exist", "a_src")]
        return success(task.stage_id)

    dispatcher = ScriptedDispatcher(script)
    manager = await manager_of(store, dispatcher)
    first = await finished(manager, (await manager.start_run("diamond")).run_id)
    assert first.state is RunState.FAILED
    kept = {s.stage_id: s for s in first.stages}["e"]

    broken.clear()  # the missing input appeared
    retried = await manager.retry_run(first.run_id, request_id="r-1")
    assert (retried.run_id, retried.pipeline_version) == (first.run_id, 1)
    assert (retried.state, retried.error_message, retried.end_time) == (RunState.RUNNING, "", None)
    assert {s.stage_id: s for s in retried.stages}["e"] == kept  # untouched, outputs kept
    assert states(retried)["a"] is StageState.PENDING

    run = await finished(manager, first.run_id)
    assert (run.state, run.error_message) == (RunState.SUCCEEDED, "")
    assert run.end_time is not None
    assert run.start_time is not None
    assert first.start_time is not None
    assert run.start_time > first.start_time
    assert {s.stage_id: s.attempt for s in run.stages} == {"a": 2, "b": 1, "c": 1, "d": 1, "e": 1}
    assert [t.stage_id for t in dispatcher.tasks].count("e") == 1
    assert await store.get_run(first.run_id) == run
    # The same request_id returns the first result and starts nothing.
    assert await manager.retry_run(first.run_id, request_id="r-1") == retried
    await manager.wait_idle()
    assert len(dispatcher.tasks) == 6
    # Now the run succeeded: nothing to retry.
    with pytest.raises(DomainError) as raised:
        await manager.retry_run(first.run_id)
    assert (raised.value.code, raised.value.reason) == (
        ErrorCode.FAILED_PRECONDITION,
        "RUN_ALREADY_SUCCEEDED",
    )


async def test_retry_applies_the_policy_afresh_across_a_restart(store: Store) -> None:
    name = await retrying_pipeline(store, "afresh", maxAttempts=3)
    manager = await manager_of(store, ScriptedDispatcher(lambda task: unavailable()))
    run = await finished(manager, (await manager.start_run(name)).run_id)
    assert (run.state, run.stages[0].attempt) == (RunState.FAILED, 3)
    await manager.close()

    hanging = Hanging(lambda task: True)
    manager = await manager_of(store, hanging)
    await manager.retry_run(run.run_id)
    await eventually(lambda: len(hanging.tasks) == 1)
    assert hanging.tasks[0].attempt == 4
    assert (await store.get_run(run.run_id)).stages[0].attempt_base == 3
    await manager.close()  # the scheduler stops during attempt 4

    # Attempt 5 is the policy's second: it fails retryably and attempt 6 follows.
    dispatcher = ScriptedDispatcher(failing(5, unavailable))
    manager = await manager_of(store, dispatcher)
    run = await finished(manager, run.run_id)
    assert (run.state, run.stages[0].attempt) == (RunState.SUCCEEDED, 6)
    assert [t.attempt for t in dispatcher.tasks] == [5, 6]


async def test_retry_errors(store: Store) -> None:
    gated = GatedDispatcher()
    manager = await manager_of(store, gated)
    run_id = (await manager.start_run("one")).run_id
    with pytest.raises(DomainError) as raised:
        await manager.retry_run(run_id)
    assert (raised.value.code, raised.value.reason) == (
        ErrorCode.FAILED_PRECONDITION,
        "RUN_NOT_FINISHED",
    )
    with pytest.raises(DomainError) as raised:
        await manager.retry_run("0" * 32)
    assert (raised.value.code, raised.value.reason) == (ErrorCode.NOT_FOUND, "RUN_NOT_FOUND")
    with pytest.raises(DomainError) as raised:
        await manager.retry_run("")
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT
    await manager.cancel_run(run_id)
    await manager.wait_idle()

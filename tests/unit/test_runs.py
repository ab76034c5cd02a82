"""Run manager: run and stage state machines, watching, persistence and resume.

The executor is replaced by in-test implementations of the domain ``Dispatcher``
protocol (this is a unit test of the domain, not of the services).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import ParseDict

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.scheduler.domain import (
    DispatchError,
    Run,
    RunState,
    StageOutput,
    StageRun,
    StageState,
    StageTask,
    TaskEvent,
    TaskFailed,
    TaskMetrics,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
    new_run_id,
    utc_now,
)
from datadog_platform.scheduler.runs import RunManager
from datadog_platform.scheduler.store import Store

pytestmark = pytest.mark.timeout(20)


def chain(prefix: str) -> list[dict[str, Any]]:
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
        },
    ]


ONE_STAGE = ParseDict({"name": "one", "steps": chain("a")}, pipeline_pb2.Pipeline())
TWO_STAGES = ParseDict({"name": "two", "steps": chain("a") + chain("b")}, pipeline_pb2.Pipeline())

METRICS = TaskMetrics(rows_read=50, bytes_read=5000, rows_written=35, bytes_written=3500)


def success(stage_id: str) -> list[TaskEvent]:
    return [
        TaskStarted("exec-1"),
        TaskProgress(TaskMetrics(rows_read=10)),
        TaskSucceeded(METRICS, (StageOutput(stage_id, f"file:///out/{stage_id}", 35),)),
    ]


class ScriptedDispatcher:
    """Plays a fixed script of events (or raises) for each stage."""

    def __init__(self, script: Callable[[StageTask], list[TaskEvent] | Exception]) -> None:
        self.script = script
        self.tasks: list[StageTask] = []

    async def execute(self, task: StageTask) -> AsyncIterator[TaskEvent]:
        self.tasks.append(task)
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
        self.closed: list[str] = []

    def queue(self, stage_id: str) -> asyncio.Queue[TaskEvent | None]:
        return self.queues.setdefault(stage_id, asyncio.Queue())

    async def execute(self, task: StageTask) -> AsyncIterator[TaskEvent]:
        self.tasks.append(task)
        queue = self.queue(task.stage_id)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self.closed.append(task.stage_id)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "s.db")
    for spec in (ONE_STAGE, TWO_STAGES):
        await opened.create_pipeline(spec, utc_now())
    yield opened
    await opened.close()


async def until(manager: RunManager, run_id: str, predicate: Callable[[Run], bool]) -> Run:
    async for run in manager.watch(run_id):
        if predicate(run):
            return run
    raise AssertionError("the run ended before the condition held")


async def finished(manager: RunManager, run_id: str) -> Run:
    await manager.wait_idle()
    return await manager.get_run(run_id)


async def test_a_successful_run(store: Store) -> None:
    dispatcher = ScriptedDispatcher(lambda task: success(task.stage_id))
    manager = RunManager(store, dispatcher)
    created = await manager.start_run("one")
    assert created.state is RunState.QUEUED
    assert created.pipeline_version == 1
    assert [(s.stage_id, s.steps, s.state) for s in created.stages] == [
        ("a_out", ("a_src", "a_big", "a_out"), StageState.PENDING)
    ]
    assert len(created.run_id) == 32

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
    assert (task.run_id, task.stage_id, task.attempt) == (run.run_id, "a_out", 1)
    assert [s.name for s in task.steps] == ["a_src", "a_big", "a_out"]
    assert task.steps[1].transform.filter.predicate == "amount > 100"


async def test_a_failed_stage_fails_the_run(store: Store) -> None:
    def script(task: StageTask) -> list[TaskEvent]:
        if task.stage_id == "b_out":
            return [TaskStarted(), TaskFailed("SOURCE_NOT_FOUND", "b.csv does not exist", "b_src")]
        return success(task.stage_id)

    manager = RunManager(store, ScriptedDispatcher(script))
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
    manager = RunManager(store, ScriptedDispatcher(lambda task: outcome))
    run = await finished(manager, (await manager.start_run("one")).run_id)
    assert run.state is RunState.FAILED
    (stage,) = run.stages
    assert stage.state is StageState.FAILED
    assert stage.error_reason == reason
    assert words in stage.error_message
    assert run.error_message.startswith('stage "a_out" failed: ')


async def test_independent_stages_run_concurrently(store: Store) -> None:
    dispatcher = GatedDispatcher()
    manager = RunManager(store, dispatcher)
    run_id = (await manager.start_run("two")).run_id
    # Both stages are dispatched before either is told anything.
    run = await until(
        manager, run_id, lambda r: all(s.state is StageState.QUEUED for s in r.stages)
    )
    assert run.state is RunState.RUNNING
    assert run.start_time is not None
    assert sorted(t.stage_id for t in dispatcher.tasks) == ["a_out", "b_out"]
    for stage_id in ("a_out", "b_out"):
        for event in success(stage_id):
            dispatcher.queue(stage_id).put_nowait(event)
    assert (await finished(manager, run_id)).state is RunState.SUCCEEDED


async def test_watch_yields_every_change_and_ends_after_the_terminal_state(
    store: Store,
) -> None:
    dispatcher = GatedDispatcher()
    manager = RunManager(store, dispatcher)
    run_id = (await manager.start_run("one")).run_id
    watch = manager.watch(run_id)
    first = await anext(watch)
    assert first.run_id == run_id
    assert first.state in (RunState.QUEUED, RunState.RUNNING)

    snapshot = first
    while snapshot.stages[0].state is not StageState.QUEUED:
        snapshot = await anext(watch)
    assert snapshot.state is RunState.RUNNING

    queue = dispatcher.queue("a_out")
    queue.put_nowait(TaskStarted())
    snapshot = await anext(watch)
    assert snapshot.stages[0].state is StageState.RUNNING
    assert snapshot.stages[0].start_time is not None

    for rows in (10, 20, 30):
        queue.put_nowait(TaskProgress(TaskMetrics(rows_read=rows)))
        snapshot = await anext(watch)
        assert snapshot.stages[0].metrics.rows_read == rows

    queue.put_nowait(success("a_out")[-1])
    rest = [snapshot async for snapshot in watch]
    assert rest[-1].state is RunState.SUCCEEDED
    assert all(not s.state.is_terminal for s in rest[:-1])
    # Watching a finished run yields it once and ends.
    assert [r.state async for r in manager.watch(run_id)] == [RunState.SUCCEEDED]


async def test_progress_is_persisted_throttled_but_shown_live(store: Store) -> None:
    dispatcher = GatedDispatcher()
    manager = RunManager(store, dispatcher, progress_persist_interval=3600)
    run_id = (await manager.start_run("one")).run_id
    queue = dispatcher.queue("a_out")
    queue.put_nowait(TaskStarted())
    queue.put_nowait(TaskProgress(TaskMetrics(rows_read=42)))
    live = await until(manager, run_id, lambda r: r.stages[0].metrics.rows_read == 42)
    assert (await manager.get_run(run_id)).stages[0].metrics.rows_read == 42
    stored = await store.get_run(run_id)
    assert stored.stages[0].state is StageState.RUNNING  # state changes are saved at once
    assert stored.stages[0].metrics.rows_read == 0  # progress within the interval is not
    assert live.stages[0].state is StageState.RUNNING
    queue.put_nowait(success("a_out")[-1])
    run = await finished(manager, run_id)
    assert (await store.get_run(run_id)).stages[0].metrics == run.stages[0].metrics == METRICS


async def test_progress_is_persisted_once_the_interval_has_passed(store: Store) -> None:
    dispatcher = GatedDispatcher()
    manager = RunManager(store, dispatcher, progress_persist_interval=0)
    run_id = (await manager.start_run("one")).run_id
    dispatcher.queue("a_out").put_nowait(TaskProgress(TaskMetrics(rows_read=7)))
    await until(manager, run_id, lambda r: r.stages[0].metrics.rows_read == 7)
    assert (await store.get_run(run_id)).stages[0].metrics.rows_read == 7
    dispatcher.queue("a_out").put_nowait(None)
    await manager.wait_idle()


async def test_a_restarted_manager_resumes_unfinished_runs(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    await store.create_pipeline(TWO_STAGES, utc_now())
    gated = GatedDispatcher()
    manager = RunManager(store, gated)
    run_id = (await manager.start_run("two")).run_id
    # Stage a_out finishes; b_out is running when the process "dies".
    for event in success("a_out"):
        gated.queue("a_out").put_nowait(event)
    gated.queue("b_out").put_nowait(TaskStarted())
    await until(
        manager,
        run_id,
        lambda r: [s.state for s in r.stages] == [StageState.SUCCEEDED, StageState.RUNNING],
    )
    await manager.close()
    assert "b_out" in gated.closed  # the interrupted attempt was cancelled
    await store.close()

    store = await Store.open(path)
    try:
        left = await store.get_run(run_id)
        assert left.state is RunState.RUNNING
        assert [(s.state, s.attempt) for s in left.stages] == [
            (StageState.SUCCEEDED, 1),
            (StageState.RUNNING, 1),
        ]
        dispatcher = ScriptedDispatcher(lambda task: success(task.stage_id))
        manager = RunManager(store, dispatcher)
        assert await manager.resume() == 1
        run = await finished(manager, run_id)
        assert run.state is RunState.SUCCEEDED
        # Only the unfinished stage runs again, as a new attempt.
        assert [(t.stage_id, t.attempt) for t in dispatcher.tasks] == [("b_out", 2)]
        assert [s.attempt for s in run.stages] == [1, 2]
        assert await store.get_run(run_id) == run
        assert await manager.resume() == 0
    finally:
        await store.close()


async def test_a_run_interrupted_before_dispatch_is_resumed_from_the_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    await store.create_pipeline(ONE_STAGE, utc_now())
    manager = RunManager(store, GatedDispatcher())
    run_id = (await manager.start_run("one")).run_id
    await manager.close()  # before the driver got to run at all
    assert (await store.get_run(run_id)).state is RunState.QUEUED
    await store.close()

    store = await Store.open(path)
    try:
        dispatcher = ScriptedDispatcher(lambda task: success(task.stage_id))
        manager = RunManager(store, dispatcher)
        assert await manager.resume() == 1
        assert (await finished(manager, run_id)).state is RunState.SUCCEEDED
        assert [t.attempt for t in dispatcher.tasks] == [1]
    finally:
        await store.close()


async def test_request_id_returns_the_first_run_and_dispatches_once(store: Store) -> None:
    dispatcher = ScriptedDispatcher(lambda task: success(task.stage_id))
    manager = RunManager(store, dispatcher)
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
    manager = RunManager(store, ScriptedDispatcher(lambda task: []))
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


async def test_cancelling_a_pending_run_dispatches_nothing(store: Store) -> None:
    gated = GatedDispatcher()
    manager = RunManager(store, gated)
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
    manager = RunManager(store, gated)
    run_id = (await manager.start_run("two")).run_id
    for event in success("a_out"):
        gated.queue("a_out").put_nowait(event)
    gated.queue("b_out").put_nowait(TaskStarted())
    await until(
        manager,
        run_id,
        lambda r: [s.state for s in r.stages] == [StageState.SUCCEEDED, StageState.RUNNING],
    )
    watcher = asyncio.create_task(until(manager, run_id, lambda r: r.state.is_terminal))
    first, second = await asyncio.gather(
        manager.cancel_run(run_id, request_id="c-1"), manager.cancel_run(run_id)
    )
    assert first == second  # a cancel in progress is joined, not refused
    assert first.state is RunState.CANCELLED
    assert [s.state for s in first.stages] == [StageState.SUCCEEDED, StageState.CANCELLED]
    assert "b_out" in gated.closed  # the running attempt was cancelled
    assert (await watcher) == first
    assert await store.get_run(run_id) == first
    # A retry of the same cancel request returns the run instead of an error.
    assert await manager.cancel_run(run_id, request_id="c-1") == first


async def test_a_run_no_manager_drives_is_cancelled_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    try:
        await store.create_pipeline(ONE_STAGE, utc_now())
        manager = RunManager(store, GatedDispatcher())
        run_id = (await manager.start_run("one")).run_id
        await manager.close()  # left QUEUED, as by a process that died
        other = RunManager(store, GatedDispatcher())
        cancelled = await other.cancel_run(run_id)
        assert cancelled.state is RunState.CANCELLED
        assert [s.state for s in cancelled.stages] == [StageState.CANCELLED]
        assert await store.get_run(run_id) == cancelled
        assert await other.resume() == 0
        with pytest.raises(DomainError) as raised:
            await other.cancel_run("nope")
        assert raised.value.reason == "RUN_NOT_FOUND"
    finally:
        await store.close()


async def test_list_runs_pages_newest_first_and_filters(store: Store) -> None:
    manager = RunManager(store, ScriptedDispatcher(lambda task: success(task.stage_id)))
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
    with pytest.raises(DomainError) as raised:
        await manager.list_runs(page_token="garbage")
    assert raised.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(DomainError) as raised:
        await manager.list_runs(page_size=-1)
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT


# --- retries ---------------------------------------------------------------------------


async def retrying_pipeline(store: Store, name: str, **policy: Any) -> str:
    """A one-stage pipeline whose sink step carries ``policy`` (tiny backoffs)."""
    steps = chain("a")
    steps[-1]["retry"] = {"initialBackoff": "0.001s", "maxBackoff": "0.005s", **policy}
    await store.create_pipeline(
        ParseDict({"name": name, "steps": steps}, pipeline_pb2.Pipeline()), utc_now()
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
    manager = RunManager(store, dispatcher, uniform=uniform)
    run_id = (await manager.start_run(name)).run_id
    seen: list[tuple[StageState, int, str]] = []
    async for snapshot in manager.watch(run_id):
        stage = snapshot.stages[0]
        seen.append((stage.state, stage.attempt, stage.error_reason))
    run = await finished(manager, run_id)
    assert run.state is RunState.SUCCEEDED
    (stage,) = run.stages
    assert (stage.state, stage.attempt, stage.error_reason) == (StageState.SUCCEEDED, 3, "")
    assert stage.metrics == METRICS
    assert [t.attempt for t in dispatcher.tasks] == [1, 2, 3]
    # Between attempts the stage is QUEUED and shows the failed attempt's error.
    assert (StageState.QUEUED, 1, "SOURCE_UNAVAILABLE") in seen
    assert (StageState.QUEUED, 2, "SOURCE_UNAVAILABLE") in seen
    assert delays == [0.001, 0.002]  # initial, then doubled (default multiplier)
    assert await store.get_run(run_id) == run


async def test_a_lost_executor_is_retried(store: Store) -> None:
    name = await retrying_pipeline(store, "lost", maxAttempts=2)
    outcomes = iter([DispatchError("EXECUTOR_UNAVAILABLE", "stream broke")])
    dispatcher = ScriptedDispatcher(failing(1, lambda: next(outcomes)))
    manager = RunManager(store, dispatcher)
    run = await finished(manager, (await manager.start_run(name)).run_id)
    assert run.state is RunState.SUCCEEDED
    assert run.stages[0].attempt == 2


async def test_a_non_retryable_failure_fails_after_one_attempt(store: Store) -> None:
    name = await retrying_pipeline(store, "fatal", maxAttempts=5)
    dispatcher = ScriptedDispatcher(failing(5, not_found))
    manager = RunManager(store, dispatcher)
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
    manager = RunManager(store, dispatcher)
    run = await finished(manager, (await manager.start_run(name)).run_id)
    assert run.state is RunState.SUCCEEDED
    assert run.stages[0].attempt == 2


async def test_exhausted_attempts_fail_with_the_last_error(store: Store) -> None:
    name = await retrying_pipeline(store, "exhausted", maxAttempts=3)
    count = iter(range(1, 100))

    def numbered() -> list[TaskEvent]:
        return [TaskFailed("SOURCE_UNAVAILABLE", f"refused #{next(count)}", "a_src", True)]

    dispatcher = ScriptedDispatcher(failing(99, numbered))
    manager = RunManager(store, dispatcher)
    run = await finished(manager, (await manager.start_run(name)).run_id)
    assert run.state is RunState.FAILED
    (stage,) = run.stages
    assert (stage.state, stage.attempt) == (StageState.FAILED, 3)
    assert (stage.error_reason, stage.error_message) == ("SOURCE_UNAVAILABLE", "refused #3")
    assert run.error_message == 'stage "a_out" failed: refused #3'
    assert len(dispatcher.tasks) == 3


async def test_the_pipeline_default_policy_applies(store: Store) -> None:
    spec = ParseDict(
        {
            "name": "defaulted",
            "steps": chain("a"),
            "defaultRetry": {"maxAttempts": 2, "initialBackoff": "0s"},
        },
        pipeline_pb2.Pipeline(),
    )
    await store.create_pipeline(spec, utc_now())
    dispatcher = ScriptedDispatcher(failing(1, unavailable))
    manager = RunManager(store, dispatcher)
    run = await finished(manager, (await manager.start_run("defaulted")).run_id)
    assert run.state is RunState.SUCCEEDED
    assert run.stages[0].attempt == 2
    # Without any policy, a retryable failure still fails after one attempt.
    dispatcher = ScriptedDispatcher(failing(1, unavailable))
    manager = RunManager(store, dispatcher)
    run = await finished(manager, (await manager.start_run("one")).run_id)
    assert (run.state, run.stages[0].attempt) == (RunState.FAILED, 1)


async def test_cancelling_during_the_backoff_is_prompt(store: Store) -> None:
    name = await retrying_pipeline(
        store, "slow", maxAttempts=3, initialBackoff="60s", maxBackoff="60s"
    )
    dispatcher = ScriptedDispatcher(failing(99, unavailable))
    manager = RunManager(store, dispatcher, uniform=lambda low, high: high)
    run_id = (await manager.start_run(name)).run_id
    await until(
        manager,
        run_id,
        lambda r: r.stages[0].state is StageState.QUEUED and r.stages[0].error_reason != "",
    )
    started = asyncio.get_running_loop().time()
    cancelled = await manager.cancel_run(run_id)
    assert asyncio.get_running_loop().time() - started < 1.0
    assert cancelled.state is RunState.CANCELLED
    assert [(s.state, s.attempt) for s in cancelled.stages] == [(StageState.CANCELLED, 1)]
    await manager.wait_idle()
    assert len(dispatcher.tasks) == 1
    assert await store.get_run(run_id) == cancelled


# --- RetryRun --------------------------------------------------------------------------


async def test_retry_reruns_only_the_failed_stage(store: Store) -> None:
    broken = {"b_out"}

    def script(task: StageTask) -> list[TaskEvent]:
        if task.stage_id in broken:
            return [TaskStarted(), TaskFailed("SOURCE_NOT_FOUND", "b.csv does not exist", "b_src")]
        return success(task.stage_id)

    dispatcher = ScriptedDispatcher(script)
    manager = RunManager(store, dispatcher)
    first = await finished(manager, (await manager.start_run("two")).run_id)
    assert first.state is RunState.FAILED
    kept = first.stages[0]

    broken.clear()  # the missing input appeared
    retried = await manager.retry_run(first.run_id, request_id="r-1")
    assert (retried.run_id, retried.pipeline_version) == (first.run_id, 1)
    assert (retried.state, retried.error_message, retried.end_time) == (RunState.RUNNING, "", None)
    assert retried.stages[0] == kept  # untouched, outputs kept
    b = retried.stages[1]
    assert (b.state, b.attempt, b.error_reason, b.end_time) == (StageState.PENDING, 1, "", None)
    assert await store.get_run(first.run_id) == retried  # committed before driving

    run = await finished(manager, first.run_id)
    assert (run.state, run.error_message) == (RunState.SUCCEEDED, "")
    assert run.end_time is not None
    assert run.stages[0] == kept
    assert (run.stages[1].state, run.stages[1].attempt) == (StageState.SUCCEEDED, 2)
    assert [(t.stage_id, t.attempt) for t in dispatcher.tasks] == [
        ("a_out", 1),
        ("b_out", 1),
        ("b_out", 2),
    ]
    assert await store.get_run(first.run_id) == run
    # The same request_id returns the first result and starts nothing.
    assert await manager.retry_run(first.run_id, request_id="r-1") == retried
    await manager.wait_idle()
    assert len(dispatcher.tasks) == 3
    # Now the run succeeded: nothing to retry.
    with pytest.raises(DomainError) as raised:
        await manager.retry_run(first.run_id)
    assert raised.value.code is ErrorCode.FAILED_PRECONDITION
    assert raised.value.reason == "RUN_ALREADY_SUCCEEDED"


async def test_retry_applies_the_retry_policy_afresh(store: Store) -> None:
    name = await retrying_pipeline(store, "afresh", maxAttempts=2)
    fail = True

    def script(task: StageTask) -> list[TaskEvent]:
        return unavailable() if fail or task.attempt < 4 else success(task.stage_id)

    dispatcher = ScriptedDispatcher(script)
    manager = RunManager(store, dispatcher)
    run = await finished(manager, (await manager.start_run(name)).run_id)
    assert (run.state, run.stages[0].attempt) == (RunState.FAILED, 2)
    fail = False
    await manager.retry_run(run.run_id)
    # Attempt 3 fails retryably, and the policy (2 attempts) allows attempt 4.
    run = await finished(manager, run.run_id)
    assert (run.state, run.stages[0].attempt) == (RunState.SUCCEEDED, 4)
    assert [t.attempt for t in dispatcher.tasks] == [1, 2, 3, 4]


async def test_retry_of_cancelled_run_reruns_never_run_stages(store: Store) -> None:
    dispatcher = ScriptedDispatcher(lambda task: success(task.stage_id))
    manager = RunManager(store, dispatcher)
    run_id = (await store.create_run(_queued_run("two"))).run_id
    cancelled = await manager.cancel_run(run_id)
    assert [s.attempt for s in cancelled.stages] == [0, 0]
    await manager.retry_run(run_id)
    states = [r.state async for r in manager.watch(run_id)]
    assert states[-1] is RunState.SUCCEEDED
    run = await finished(manager, run_id)
    assert [(s.state, s.attempt) for s in run.stages] == [(StageState.SUCCEEDED, 1)] * 2


async def test_retry_errors(store: Store) -> None:
    gated = GatedDispatcher()
    manager = RunManager(store, gated)
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


def _queued_run(pipeline: str) -> Run:
    stages = [
        StageRun("a_out", ("a_src", "a_big", "a_out")),
        StageRun("b_out", ("b_src", "b_big", "b_out")),
    ]
    return Run(new_run_id(), pipeline, 1, RunState.QUEUED, utc_now(), stages)

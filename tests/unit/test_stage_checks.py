"""Check results and per-step counters on the scheduler side: the executor's events
mapped to domain events, copied onto the stage by the run engine, stored, and shown
by the API.

The run engine is driven by an in-test ``Dispatcher`` (a unit test of the engine; the
integration tests use the real executor) over a real SQLite store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from google.protobuf.json_format import ParseDict

from datadog_platform.api.common.v1 import task_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2 as epb
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.scheduler.domain import (
    CheckResult,
    RunState,
    StageRun,
    StageState,
    StageTask,
    TaskEvent,
    TaskFailed,
    TaskMetrics,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
    utc_now,
)
from datadog_platform.scheduler.executor_client import _event_of
from datadog_platform.scheduler.runs import RunManager
from datadog_platform.scheduler.servicer import stage_pb, transform_type_pb
from datadog_platform.scheduler.store import Store, open_store

pytestmark = pytest.mark.timeout(30)

CHECKS = (
    CheckResult("quality", "ids", False, 2, "2 NULLs in id", "WARN"),
    CheckResult("quality", "enough", True, 0, "", "FAIL"),
)
CHECKS_PB = [
    task_pb2.CheckResult(
        step="quality",
        check="ids",
        passed=False,
        failing_rows=2,
        message="2 NULLs in id",
        action="WARN",
    ),
    task_pb2.CheckResult(step="quality", check="enough", passed=True, action="FAIL"),
]


# --- the executor's events ---------------------------------------------------------------


def test_succeeded_carries_checks_and_step_counters() -> None:
    response = epb.ExecuteTaskResponse(
        succeeded=epb.TaskSucceeded(
            metrics=task_pb2.TaskMetrics(rows_read=3, rows_written=3),
            checks=CHECKS_PB,
            steps=[
                task_pb2.StepMetrics(step="rows", rows=3, bytes=30),
                task_pb2.StepMetrics(step="out", rows=3, bytes=24),
            ],
        )
    )
    event = _event_of(response)
    assert isinstance(event, TaskSucceeded)
    assert event.checks == CHECKS
    assert [(s.step, s.rows, s.bytes) for s in event.steps] == [("rows", 3, 30), ("out", 3, 24)]


def test_failed_carries_the_checks_evaluated_before_the_failure() -> None:
    response = epb.ExecuteTaskResponse(
        failed=epb.TaskFailed(reason="CHECK_FAILED", message="ids failed", checks=CHECKS_PB[:1])
    )
    event = _event_of(response)
    assert isinstance(event, TaskFailed)
    assert event.checks == CHECKS[:1]


def test_progress_carries_step_counters_and_an_empty_action_means_fail() -> None:
    progress = _event_of(
        epb.ExecuteTaskResponse(
            progress=epb.TaskProgress(steps=[task_pb2.StepMetrics(step="rows", rows=7)])
        )
    )
    assert isinstance(progress, TaskProgress)
    assert [(s.step, s.rows) for s in progress.steps] == [("rows", 7)]
    failed = _event_of(
        epb.ExecuteTaskResponse(
            failed=epb.TaskFailed(checks=[task_pb2.CheckResult(step="q", check="c")])
        )
    )
    assert isinstance(failed, TaskFailed)
    assert failed.checks[0].action == "FAIL"


# --- the API's forms ---------------------------------------------------------------------


def test_stage_pb_shows_the_checks() -> None:
    message = stage_pb(StageRun("out", ("rows", "quality", "out"), checks=CHECKS))
    assert list(message.checks) == CHECKS_PB


def test_transform_types_are_translated_field_by_field() -> None:
    kind = epb.TransformType(
        name="join",
        description="Join two inputs.",
        parameters=[epb.TransformParameter(name="on", type="repeated JoinKey", required=True)],
        min_inputs=2,
        max_inputs=2,
        streaming=False,
    )
    info = transform_type_pb(kind)
    assert (info.name, info.description, info.min_inputs, info.max_inputs, info.streaming) == (
        "join",
        "Join two inputs.",
        2,
        2,
        False,
    )
    assert [(p.name, p.type, p.required) for p in info.parameters] == [
        ("on", "repeated JoinKey", True)
    ]


# --- the run engine ----------------------------------------------------------------------

PIPELINE = ParseDict(
    {
        "name": "checked",
        "steps": [
            {"name": "rows", "source": {"inline": {"rows": [{"id": 1}]}}},
            {
                "name": "quality",
                "inputs": ["rows"],
                "transform": {
                    "check": {"checks": [{"name": "ids", "notNull": {"columns": ["id"]}}]}
                },
            },
            {"name": "out", "inputs": ["quality"], "sink": {"discard": {}}},
        ],
        "defaultRetry": {"maxAttempts": 2, "initialBackoff": "0.001s"},
    },
    pipeline_pb2.Pipeline(),
)


class Scripted:
    """A dispatcher playing one script per attempt."""

    def __init__(self, script: Callable[[StageTask], list[TaskEvent]]) -> None:
        self.script = script

    async def execute(self, task: StageTask) -> AsyncIterator[TaskEvent]:
        for event in self.script(task):
            await asyncio.sleep(0)
            yield event


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(tmp_path / "s.db")
    await opened.create_pipeline(PIPELINE, utc_now())
    yield opened
    await opened.close()


async def run_with(store: Store, script: Callable[[StageTask], list[TaskEvent]]) -> RunManager:
    manager = RunManager(store, Scripted(script), instance_id="checks-test")
    await manager.start()
    return manager


async def test_a_successful_stage_keeps_its_checks_in_the_store(store: Store) -> None:
    manager = await run_with(
        store, lambda task: [TaskStarted(), TaskSucceeded(TaskMetrics(), (), checks=CHECKS)]
    )
    try:
        run_id = (await manager.start_run("checked")).run_id
        await manager.wait_idle()
        run = await manager.get_run(run_id)
    finally:
        await manager.close()
    assert run.state is RunState.SUCCEEDED
    assert run.stages[0].checks == CHECKS
    assert (await store.get_run(run_id)).stages[0].checks == CHECKS


async def test_a_failed_stage_keeps_the_checks_of_its_last_attempt(store: Store) -> None:
    def script(task: StageTask) -> list[TaskEvent]:
        # Attempt 1 fails with one result, attempt 2 (the last) with the other.
        return [
            TaskStarted(),
            TaskFailed(
                "CHECK_FAILED",
                "check failed",
                "quality",
                retryable=True,
                checks=(CHECKS[task.attempt - 1],),
            ),
        ]

    manager = await run_with(store, script)
    try:
        run_id = (await manager.start_run("checked")).run_id
        await manager.wait_idle()
        run = await manager.get_run(run_id)
    finally:
        await manager.close()
    (stage,) = run.stages
    assert (stage.state, stage.attempt, stage.error_reason) == (
        StageState.FAILED,
        2,
        "CHECK_FAILED",
    )
    assert stage.checks == (CHECKS[1],)
    assert (await store.get_run(run_id)).stages[0].checks == (CHECKS[1],)

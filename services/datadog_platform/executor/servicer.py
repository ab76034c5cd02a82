"""The ExecutorService servicer: protobuf in and out, one call to the stage runner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime

import grpc
from google.protobuf import timestamp_pb2

from datadog_platform.api.common.v1 import task_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2 as pb
from datadog_platform.api.executor.v1 import executor_service_pb2_grpc
from datadog_platform.core.tasks import CheckResult, LogLevel, LogLine, StepMetrics, TaskLog
from datadog_platform.executor.stage import (
    StageRunner,
    StageTask,
    TaskEvent,
    TaskFailed,
    TaskMetrics,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)
from datadog_platform.executor.transforms.registry import TRANSFORM_KINDS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LEVELS = {
    LogLevel.DEBUG: task_pb2.LOG_LEVEL_DEBUG,
    LogLevel.INFO: task_pb2.LOG_LEVEL_INFO,
    LogLevel.WARNING: task_pb2.LOG_LEVEL_WARNING,
    LogLevel.ERROR: task_pb2.LOG_LEVEL_ERROR,
}


class ExecutorServicer(executor_service_pb2_grpc.ExecutorServiceServicer):
    """Runs one stage attempt per ``ExecuteTask`` call and streams its events."""

    def __init__(self, runner: StageRunner) -> None:
        self._runner = runner

    async def ExecuteTask(
        self, request: pb.ExecuteTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecuteTaskResponse]:
        """Stream the attempt's events; a malformed stage fails the call (INVALID_ARGUMENT),
        a full executor too (RESOURCE_EXHAUSTED, EXECUTOR_BUSY)."""
        task = StageTask(
            run_id=request.run_id,
            stage_id=request.stage_id,
            attempt=request.attempt,
            steps=request.steps,
        )
        # aclosing: the attempt's slot is freed as soon as the call ends, however it ends.
        async with aclosing(self._runner.execute(task)) as events:
            async for event in events:
                yield event_to_pb(event)

    async def ListTransformTypes(
        self, request: pb.ListTransformTypesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTransformTypesResponse:
        """The transform catalogue, from the registry."""
        return pb.ListTransformTypesResponse(
            transform_types=[
                pb.TransformType(
                    name=kind.name,
                    description=kind.description,
                    parameters=[
                        pb.TransformParameter(
                            name=p.name, type=p.type, description=p.description, required=p.required
                        )
                        for p in kind.parameters
                    ],
                    min_inputs=kind.min_inputs,
                    max_inputs=kind.max_inputs,
                    streaming=kind.streaming,
                )
                for kind in TRANSFORM_KINDS.values()
            ]
        )


def event_to_pb(event: TaskEvent) -> pb.ExecuteTaskResponse:
    """The protobuf form of a stage event."""
    match event:
        case TaskStarted():
            return pb.ExecuteTaskResponse(started=pb.TaskStarted(executor_id=event.executor_id))
        case TaskProgress():
            return pb.ExecuteTaskResponse(
                progress=pb.TaskProgress(
                    metrics=_metrics(event.metrics), steps=[_step(s) for s in event.steps]
                )
            )
        case TaskLog():
            return pb.ExecuteTaskResponse(log=pb.TaskLog(lines=[_line(x) for x in event.lines]))
        case TaskSucceeded():
            return pb.ExecuteTaskResponse(
                succeeded=pb.TaskSucceeded(
                    metrics=_metrics(event.metrics),
                    outputs=[
                        task_pb2.StageOutput(
                            step=o.step, location=o.location, rows_written=o.rows_written
                        )
                        for o in event.outputs
                    ],
                    watermarks=event.watermarks,
                    checks=[_check(c) for c in event.checks],
                    steps=[_step(s) for s in event.steps],
                )
            )
        case TaskFailed():
            return pb.ExecuteTaskResponse(
                failed=pb.TaskFailed(
                    reason=event.reason,
                    message=event.message,
                    step=event.step,
                    retryable=event.retryable,
                    metrics=_metrics(event.metrics),
                    checks=[_check(c) for c in event.checks],
                )
            )
    raise TypeError(f"unknown stage event {event!r}")


def _step(step: StepMetrics) -> task_pb2.StepMetrics:
    return task_pb2.StepMetrics(step=step.step, rows=step.rows, bytes=step.bytes)


def _check(check: CheckResult) -> task_pb2.CheckResult:
    return task_pb2.CheckResult(
        step=check.step,
        check=check.check,
        passed=check.passed,
        failing_rows=check.failing_rows,
        message=check.message,
        action=check.action,
    )


def _line(line: LogLine) -> task_pb2.LogLine:
    # By hand: a third of the cost of Timestamp.FromDatetime (lines are aware UTC times).
    since = line.time - _EPOCH
    time = timestamp_pb2.Timestamp(
        seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1_000
    )
    return task_pb2.LogLine(
        time=time, level=_LEVELS[line.level], step=line.step, message=line.message
    )


def _metrics(metrics: TaskMetrics) -> task_pb2.TaskMetrics:
    return task_pb2.TaskMetrics(
        rows_read=metrics.rows_read,
        bytes_read=metrics.bytes_read,
        rows_written=metrics.rows_written,
        bytes_written=metrics.bytes_written,
    )

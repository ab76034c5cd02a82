"""The ExecutorService servicer: protobuf in and out, one call to the stage runner."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from datadog_platform.api.common.v1 import task_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2 as pb
from datadog_platform.api.executor.v1 import executor_service_pb2_grpc
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


class ExecutorServicer(executor_service_pb2_grpc.ExecutorServiceServicer):
    """Runs one stage attempt per ``ExecuteTask`` call and streams its events."""

    def __init__(self, runner: StageRunner) -> None:
        self._runner = runner

    async def ExecuteTask(
        self, request: pb.ExecuteTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecuteTaskResponse]:
        """Stream the attempt's events; a malformed stage fails the call (INVALID_ARGUMENT)."""
        task = StageTask(
            run_id=request.run_id,
            stage_id=request.stage_id,
            attempt=request.attempt,
            steps=list(request.steps),
        )
        async for event in self._runner.execute(task):
            yield event_to_pb(event)


def event_to_pb(event: TaskEvent) -> pb.ExecuteTaskResponse:
    """The protobuf form of a stage event."""
    match event:
        case TaskStarted():
            return pb.ExecuteTaskResponse(started=pb.TaskStarted(executor_id=event.executor_id))
        case TaskProgress():
            return pb.ExecuteTaskResponse(progress=pb.TaskProgress(metrics=_metrics(event.metrics)))
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
                )
            )
    raise TypeError(f"unknown stage event {event!r}")


def _metrics(metrics: TaskMetrics) -> task_pb2.TaskMetrics:
    return task_pb2.TaskMetrics(
        rows_read=metrics.rows_read,
        bytes_read=metrics.bytes_read,
        rows_written=metrics.rows_written,
        bytes_written=metrics.bytes_written,
    )

"""Dispatch over gRPC: the :class:`~datadog_platform.scheduler.domain.Dispatcher`
protocol implemented with the executor service's ``ExecuteTask`` stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from datadog_platform.api.common.v1 import task_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2, executor_service_pb2_grpc
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.interceptors import REQUEST_ID_HEADER
from datadog_platform.core.status import domain_error_of
from datadog_platform.scheduler.domain import (
    EXECUTOR_ERROR,
    EXECUTOR_UNAVAILABLE,
    STAGE_TIMEOUT,
    DispatchError,
    StageOutput,
    StageTask,
    TaskEvent,
    TaskFailed,
    TaskMetrics,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)

#: Deadline of one stage attempt; the stage fails with STAGE_TIMEOUT past it.
DEFAULT_TASK_TIMEOUT_SECONDS = 24 * 3600.0


class ExecutorDispatcher:
    """Runs stage attempts on the executor service at ``address``."""

    def __init__(self, address: str, *, timeout: float = DEFAULT_TASK_TIMEOUT_SECONDS) -> None:
        self._address = address
        self._timeout = timeout
        self._channel = insecure_channel(address)
        self._stub = executor_service_pb2_grpc.ExecutorServiceStub(self._channel)

    async def close(self) -> None:
        """Close the channel (cancelling any attempt still running)."""
        await self._channel.close()

    async def execute(self, task: StageTask) -> AsyncIterator[TaskEvent]:
        """Start ``task`` on the executor and yield its events as domain events."""
        request = executor_service_pb2.ExecuteTaskRequest(
            run_id=task.run_id, stage_id=task.stage_id, attempt=task.attempt, steps=task.steps
        )
        call = self._stub.ExecuteTask(
            request,
            timeout=self._timeout,
            metadata=((REQUEST_ID_HEADER, f"{task.run_id}/{task.stage_id}/{task.attempt}"),),
        )
        try:
            async for response in call:
                event = _event_of(response)
                if event is not None:
                    yield event
        except grpc.aio.AioRpcError as exc:
            raise self._dispatch_error(exc) from None
        finally:
            call.cancel()  # a no-op once the call is done; stops the executor otherwise

    def _dispatch_error(self, exc: grpc.aio.AioRpcError) -> DispatchError:
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            return DispatchError(
                EXECUTOR_UNAVAILABLE,
                f"the executor service at {self._address} is unavailable: {exc.details()}",
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DispatchError(
                STAGE_TIMEOUT, f"the stage did not finish within {self._timeout:g} seconds"
            )
        error = domain_error_of(exc)
        reason = error.reason if error.reason != code.name else EXECUTOR_ERROR
        return DispatchError(reason, f"the executor rejected the task: {error.message}")


def _metrics_of(metrics: task_pb2.TaskMetrics) -> TaskMetrics:
    return TaskMetrics(
        rows_read=metrics.rows_read,
        bytes_read=metrics.bytes_read,
        rows_written=metrics.rows_written,
        bytes_written=metrics.bytes_written,
    )


def _event_of(response: executor_service_pb2.ExecuteTaskResponse) -> TaskEvent | None:
    kind = response.WhichOneof("event")
    if kind == "started":
        return TaskStarted(executor_id=response.started.executor_id)
    if kind == "progress":
        return TaskProgress(metrics=_metrics_of(response.progress.metrics))
    if kind == "succeeded":
        return TaskSucceeded(
            metrics=_metrics_of(response.succeeded.metrics),
            outputs=tuple(
                StageOutput(step=o.step, location=o.location, rows_written=o.rows_written)
                for o in response.succeeded.outputs
            ),
        )
    if kind == "failed":
        failed = response.failed
        return TaskFailed(
            reason=failed.reason,
            message=failed.message,
            step=failed.step,
            retryable=failed.retryable,
            metrics=_metrics_of(failed.metrics),
        )
    return None  # an event kind newer than this scheduler: nothing to apply

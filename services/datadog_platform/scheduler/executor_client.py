"""Dispatch over gRPC: the :class:`~datadog_platform.scheduler.domain.Dispatcher`
protocol implemented with the executor service's ``ExecuteTask`` stream.

One channel per executor address, opened once and shared by every attempt (gRPC
multiplexes the calls over one HTTP/2 connection). How failures map:

- RESOURCE_EXHAUSTED with reason ``EXECUTOR_BUSY`` (every slot taken; always before
  any event) → ``DispatchError(EXECUTOR_BUSY)``: the attempt never started; the
  run engine backs off and dispatches the same attempt again.
- UNAVAILABLE → ``DispatchError(EXECUTOR_UNAVAILABLE)``; DEADLINE_EXCEEDED (the
  attempt's deadline: ``task.timeout`` when set, else the dispatcher's default) →
  ``DispatchError(STAGE_TIMEOUT)``. Both are retryable: they are in
  ``scheduler.retry.RETRYABLE_DISPATCH_REASONS``, which the retry policy consults
  for failures that carry no retryable flag of their own.
- Any other status → ``DispatchError`` with the executor's reason (``EXECUTOR_ERROR``
  if it gave none).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc

from datadog_platform.api.common.v1 import task_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2, executor_service_pb2_grpc
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.interceptors import REQUEST_ID_HEADER
from datadog_platform.core.status import details_of
from datadog_platform.scheduler.domain import (
    EXECUTOR_BUSY,
    EXECUTOR_ERROR,
    EXECUTOR_UNAVAILABLE,
    STAGE_TIMEOUT,
    DispatchError,
    LogLevel,
    LogLine,
    StageOutput,
    StageTask,
    TaskEvent,
    TaskFailed,
    TaskLog,
    TaskMetrics,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)

#: Deadline of one stage attempt whose task sets none; past it the stage fails with STAGE_TIMEOUT.
DEFAULT_TASK_TIMEOUT_SECONDS = 24 * 3600.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LEVELS = {
    task_pb2.LOG_LEVEL_DEBUG: LogLevel.DEBUG,
    task_pb2.LOG_LEVEL_INFO: LogLevel.INFO,
    task_pb2.LOG_LEVEL_WARNING: LogLevel.WARNING,
    task_pb2.LOG_LEVEL_ERROR: LogLevel.ERROR,
}


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
        timeout = task.timeout if task.timeout is not None and task.timeout > 0 else self._timeout
        request = executor_service_pb2.ExecuteTaskRequest(
            run_id=task.run_id, stage_id=task.stage_id, attempt=task.attempt, steps=task.steps
        )
        call = self._stub.ExecuteTask(
            request,
            timeout=timeout,
            metadata=((REQUEST_ID_HEADER, f"{task.run_id}/{task.stage_id}/{task.attempt}"),),
        )
        try:
            async for response in call:
                event = _event_of(response)
                if event is not None:
                    yield event
        except grpc.aio.AioRpcError as exc:
            raise self._dispatch_error(exc, timeout) from None
        finally:
            call.cancel()  # a no-op once the call is done; stops the executor otherwise

    def _dispatch_error(self, exc: grpc.aio.AioRpcError, timeout: float) -> DispatchError:
        details = details_of(exc)
        code = details.code
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.reason == EXECUTOR_BUSY:
            return DispatchError(
                EXECUTOR_BUSY, f"the executor service at {self._address} is busy: {details.message}"
            )
        if code == grpc.StatusCode.UNAVAILABLE:
            return DispatchError(
                EXECUTOR_UNAVAILABLE,
                f"the executor service at {self._address} is unavailable: {details.message}",
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DispatchError(
                STAGE_TIMEOUT, f"the stage did not finish within its timeout of {timeout:g} seconds"
            )
        return DispatchError(
            details.reason or EXECUTOR_ERROR, f"the executor rejected the task: {details.message}"
        )


def _metrics_of(metrics: task_pb2.TaskMetrics) -> TaskMetrics:
    return TaskMetrics(
        rows_read=metrics.rows_read,
        bytes_read=metrics.bytes_read,
        rows_written=metrics.rows_written,
        bytes_written=metrics.bytes_written,
    )


def _line_of(line: task_pb2.LogLine) -> LogLine:
    return LogLine(
        time=_EPOCH + timedelta(seconds=line.time.seconds, microseconds=line.time.nanos // 1_000),
        level=_LEVELS.get(line.level, LogLevel.INFO),
        message=line.message,
        step=line.step,
    )


def _event_of(response: executor_service_pb2.ExecuteTaskResponse) -> TaskEvent | None:
    kind = response.WhichOneof("event")
    if kind == "started":
        return TaskStarted(executor_id=response.started.executor_id)
    if kind == "progress":
        return TaskProgress(metrics=_metrics_of(response.progress.metrics))
    if kind == "log":
        return TaskLog(lines=tuple(_line_of(line) for line in response.log.lines))
    if kind == "succeeded":
        succeeded = response.succeeded
        return TaskSucceeded(
            metrics=_metrics_of(succeeded.metrics),
            outputs=tuple(
                StageOutput(step=o.step, location=o.location, rows_written=o.rows_written)
                for o in succeeded.outputs
            ),
            watermarks=dict(succeeded.watermarks),
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

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

Check results (``TaskSucceeded.checks``, ``TaskFailed.checks``) and per-step counters
(``TaskProgress.steps``, ``TaskSucceeded.steps``) map to their domain types.

:meth:`ExecutorDispatcher.list_transform_types` asks the executor for its transform
catalogue (UNAVAILABLE/DEADLINE_EXCEEDED → UNAVAILABLE ``EXECUTOR_UNAVAILABLE``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta

import grpc

from datadog_platform.api.common.v1 import task_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2, executor_service_pb2_grpc
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.errors import unavailable
from datadog_platform.core.interceptors import REQUEST_ID_HEADER, correlation_metadata
from datadog_platform.core.status import details_of, domain_error_of
from datadog_platform.core.tasks import CheckResult, StepMetrics
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
#: Deadline of a catalogue request (ListTransformTypes).
DEFAULT_CALL_TIMEOUT_SECONDS = 10.0

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
            # The executor binds these into its logs and forwards them to the connector.
            metadata=(
                (REQUEST_ID_HEADER, f"{task.run_id}/{task.stage_id}/{task.attempt}"),
                *correlation_metadata(task.run_id, task.stage_id, task.attempt),
            ),
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

    async def list_transform_types(
        self, *, time_left: float | None = None
    ) -> list[executor_service_pb2.TransformType]:
        """The executor's transform catalogue, by name (``time_left``: the caller's
        remaining time, which caps the call's deadline)."""
        deadline = DEFAULT_CALL_TIMEOUT_SECONDS
        if time_left is not None:
            deadline = max(0.0, min(time_left, deadline))
        try:
            response = await self._stub.ListTransformTypes(
                executor_service_pb2.ListTransformTypesRequest(), timeout=deadline
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise unavailable(
                    EXECUTOR_UNAVAILABLE,
                    f"the executor service at {self._address} is unavailable: {exc.details()}",
                ) from None
            raise domain_error_of(exc) from None
        return list(response.transform_types)

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


def _checks_of(checks: Iterable[task_pb2.CheckResult]) -> tuple[CheckResult, ...]:
    return tuple(
        CheckResult(
            step=c.step,
            check=c.check,
            passed=c.passed,
            failing_rows=c.failing_rows,
            message=c.message,
            action=c.action or "FAIL",
        )
        for c in checks
    )


def _steps_of(steps: Iterable[task_pb2.StepMetrics]) -> tuple[StepMetrics, ...]:
    return tuple(StepMetrics(step=s.step, rows=s.rows, bytes=s.bytes) for s in steps)


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
        progress = response.progress
        return TaskProgress(metrics=_metrics_of(progress.metrics), steps=_steps_of(progress.steps))
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
            checks=_checks_of(succeeded.checks),
            steps=_steps_of(succeeded.steps),
        )
    if kind == "failed":
        failed = response.failed
        return TaskFailed(
            reason=failed.reason,
            message=failed.message,
            step=failed.step,
            retryable=failed.retryable,
            metrics=_metrics_of(failed.metrics),
            checks=_checks_of(failed.checks),
        )
    return None  # an event kind newer than this scheduler: nothing to apply

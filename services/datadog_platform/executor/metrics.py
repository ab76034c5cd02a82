"""The executor's Prometheus metrics.

Taken at the edge, from the events each ``ExecuteTask`` call streams back
(:class:`MeteredExecutorServicer`), so the stage engine knows nothing of metrics:
a slot is in use from the ``started`` event to the end of the call, the outcome is
the final event (or the refusal: busy, invalid), rows and bytes are the final
event's totals. Per event the cost is one ``WhichOneof``; per call a few
increments of plain numbers bound at import.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from datadog_platform.api.executor.v1 import executor_service_pb2 as pb
from datadog_platform.core.errors import DomainError
from datadog_platform.core.metrics import LoopCounter, LoopGauge, LoopHistogram
from datadog_platform.executor.servicer import ExecutorServicer
from datadog_platform.executor.stage import EXECUTOR_BUSY

SLOTS_IN_USE = LoopGauge(
    "datadog_executor_slots_in_use", "Stage attempts running on this executor right now."
).labels()
SLOTS = LoopGauge(
    "datadog_executor_slots", "Stage attempts this executor runs at once, at most."
).labels()
TASKS = LoopCounter(
    "datadog_executor_tasks_total",
    "Stage attempts by outcome: succeeded, failed, busy (refused: every slot taken), "
    "rejected (refused: a malformed stage), cancelled (the caller went away), error "
    "(an unexpected failure of the call).",
    ("outcome",),
)
TASK_DURATION = LoopHistogram(
    "datadog_executor_task_duration_seconds",
    "Duration of stage attempts that ran to an outcome.",
    ("outcome",),
)
ROWS = LoopCounter(
    "datadog_executor_rows_total",
    "Rows stage attempts read (in) and wrote (out), counted when an attempt ends.",
    ("direction",),
)
BYTES = LoopCounter(
    "datadog_executor_bytes_total",
    "Arrow bytes stage attempts read (in) and wrote (out), counted when an attempt ends.",
    ("direction",),
)

_SUCCEEDED = TASKS.labels("succeeded")
_FAILED = TASKS.labels("failed")
_BUSY = TASKS.labels("busy")
_REJECTED = TASKS.labels("rejected")
_CANCELLED = TASKS.labels("cancelled")
_ERROR = TASKS.labels("error")
_SECONDS = {
    "succeeded": TASK_DURATION.labels("succeeded"),
    "failed": TASK_DURATION.labels("failed"),
}
_ROWS_IN, _ROWS_OUT = ROWS.labels("in"), ROWS.labels("out")
_BYTES_IN, _BYTES_OUT = BYTES.labels("in"), BYTES.labels("out")


class MeteredExecutorServicer(ExecutorServicer):
    """The executor servicer, with every ``ExecuteTask`` call counted."""

    async def ExecuteTask(
        self, request: pb.ExecuteTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecuteTaskResponse]:
        """The attempt's events, as the plain servicer streams them."""
        started = time.perf_counter()
        outcome = _CANCELLED
        holding = False
        try:
            # aclosing: when the call ends, the attempt (and its slot) must end now.
            async with aclosing(super().ExecuteTask(request, context)) as responses:
                async for response in responses:
                    kind = response.WhichOneof("event")
                    if kind == "started":
                        holding = True
                        SLOTS_IN_USE.inc()
                    elif kind == "succeeded" or kind == "failed":
                        outcome = _SUCCEEDED if kind == "succeeded" else _FAILED
                        _SECONDS[kind].observe(time.perf_counter() - started)
                        metrics = getattr(response, kind).metrics
                        _ROWS_IN.inc(metrics.rows_read)
                        _BYTES_IN.inc(metrics.bytes_read)
                        _ROWS_OUT.inc(metrics.rows_written)
                        _BYTES_OUT.inc(metrics.bytes_written)
                    yield response
        except DomainError as exc:
            outcome = _BUSY if exc.reason == EXECUTOR_BUSY else _REJECTED
            raise
        except Exception:
            outcome = _ERROR
            raise
        finally:
            if holding:
                SLOTS_IN_USE.dec()
            outcome.inc()

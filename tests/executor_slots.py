"""Waiting for a cancelled stage to give its executor slot back (one-slot executors)."""

from __future__ import annotations

import asyncio

import grpc

from datadog_platform.api.executor.v1 import executor_service_pb2 as pb
from datadog_platform.api.executor.v1 import executor_service_pb2_grpc
from datadog_platform.core.status import details_of

#: A no-op stage that needs the executor's only slot.
PROBE = pb.ExecuteTaskRequest(run_id="probe", stage_id="probe", attempt=1)
_source = PROBE.steps.add(name="x")
_source.source.inline.rows.add().update({"a": 1})
_sink = PROBE.steps.add(name="y", inputs=["x"])
_sink.sink.discard.SetInParent()


async def wait_for_free_slot(
    stub: executor_service_pb2_grpc.ExecutorServiceStub, started: float, within: float = 1.0
) -> None:
    """Until the probe stage runs (the slot is free), failing if that takes longer than
    ``within`` seconds after ``started`` (a loop.time())."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            events = [event async for event in stub.ExecuteTask(PROBE, timeout=10)]
        except grpc.aio.AioRpcError as exc:
            reason = details_of(exc).reason
        else:
            assert events[-1].WhichOneof("event") == "succeeded"
            return
        assert reason == "EXECUTOR_BUSY"
        assert loop.time() - started < within, "the stage did not stop within a second"
        await asyncio.sleep(0.01)

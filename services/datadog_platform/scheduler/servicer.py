"""SchedulerService servicer: protobuf ↔ domain, one domain call per RPC.

Errors are raised as ``DomainError`` and mapped to rich statuses by the shared
interceptor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from datadog_platform.api.common.v1 import task_pb2
from datadog_platform.api.scheduler.v1 import (
    pipeline_pb2,
    run_pb2,
    scheduler_service_pb2,
    scheduler_service_pb2_grpc,
)
from datadog_platform.core.errors import FieldViolation, invalid_argument
from datadog_platform.scheduler.connector_client import ConnectorClient
from datadog_platform.scheduler.domain import INVALID_REQUEST, PlannedStage, Run, RunState, StageRun
from datadog_platform.scheduler.pipelines import PipelineRegistry
from datadog_platform.scheduler.runs import RunManager

pb = scheduler_service_pb2


class SchedulerServicer(scheduler_service_pb2_grpc.SchedulerServiceServicer):
    """The public API: pipelines, runs and the connection catalog."""

    def __init__(
        self, registry: PipelineRegistry, runs: RunManager, connector: ConnectorClient
    ) -> None:
        self._registry = registry
        self._runs = runs
        self._connector = connector

    async def CreatePipeline(
        self, request: pb.CreatePipelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePipelineResponse:
        registered = await self._registry.create(request.pipeline, request.request_id)
        return pb.CreatePipelineResponse(pipeline=registered.spec, plan=_plan_pb(registered.plan))

    async def GetPipeline(
        self, request: pb.GetPipelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPipelineResponse:
        registered = await self._registry.get(request.name, request.version)
        return pb.GetPipelineResponse(pipeline=registered.spec, plan=_plan_pb(registered.plan))

    async def ListPipelines(
        self, request: pb.ListPipelinesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPipelinesResponse:
        pipelines, next_token = await self._registry.list(request.page_size, request.page_token)
        return pb.ListPipelinesResponse(pipelines=pipelines, next_page_token=next_token)

    async def RunPipeline(
        self, request: pb.RunPipelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunPipelineResponse:
        run = await self._runs.start_run(request.pipeline, request.request_id)
        return pb.RunPipelineResponse(run=run_pb(run))

    async def GetRun(
        self, request: pb.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRunResponse:
        return pb.GetRunResponse(run=run_pb(await self._runs.get_run(request.run_id)))

    async def WatchRun(
        self, request: pb.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchRunResponse]:
        async for run in self._runs.watch(request.run_id):
            yield pb.WatchRunResponse(run=run_pb(run))

    async def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRunsResponse:
        runs, next_token = await self._runs.list_runs(
            pipeline=request.pipeline,
            states=tuple(_run_state(s) for s in request.states),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListRunsResponse(runs=[run_pb(r) for r in runs], next_page_token=next_token)

    async def CancelRun(
        self, request: pb.CancelRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelRunResponse:
        run = await self._runs.cancel_run(request.run_id, request.request_id)
        return pb.CancelRunResponse(run=run_pb(run))

    async def RetryRun(
        self, request: pb.RetryRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetryRunResponse:
        run = await self._runs.retry_run(request.run_id, request.request_id)
        return pb.RetryRunResponse(run=run_pb(run))

    async def ListConnections(
        self, request: pb.ListConnectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConnectionsResponse:
        connections, next_token = await self._connector.list_connections(
            request.page_size, request.page_token
        )
        return pb.ListConnectionsResponse(connections=connections, next_page_token=next_token)


def _run_state(value: int) -> RunState:
    name = run_pb2.RunState.Name(value) if value in run_pb2.RunState.values() else ""
    if not name.startswith("RUN_STATE_") or name == "RUN_STATE_UNSPECIFIED":
        raise invalid_argument(
            INVALID_REQUEST,
            f"states: {value} is not a run state",
            [FieldViolation("states", "must be run states other than UNSPECIFIED")],
        )
    return RunState(name.removeprefix("RUN_STATE_"))


def _plan_pb(plan: Iterable[PlannedStage]) -> list[pipeline_pb2.PlannedStage]:
    return [pipeline_pb2.PlannedStage(stage_id=s.stage_id, steps=s.steps) for s in plan]


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def run_pb(run: Run) -> run_pb2.Run:
    """The protobuf form of a domain run."""
    return run_pb2.Run(
        run_id=run.run_id,
        pipeline=run.pipeline,
        pipeline_version=run.pipeline_version,
        state=run_pb2.RunState.Value(f"RUN_STATE_{run.state.value}"),
        create_time=_timestamp(run.create_time),
        start_time=_timestamp(run.start_time),
        end_time=_timestamp(run.end_time),
        stages=[_stage_pb(s) for s in run.stages],
        error_message=run.error_message,
        request_id=run.request_id,
    )


def _stage_pb(stage: StageRun) -> run_pb2.StageRun:
    return run_pb2.StageRun(
        stage_id=stage.stage_id,
        steps=stage.steps,
        state=run_pb2.StageState.Value(f"STAGE_STATE_{stage.state.value}"),
        attempt=stage.attempt,
        start_time=_timestamp(stage.start_time),
        end_time=_timestamp(stage.end_time),
        metrics=task_pb2.TaskMetrics(
            rows_read=stage.metrics.rows_read,
            bytes_read=stage.metrics.bytes_read,
            rows_written=stage.metrics.rows_written,
            bytes_written=stage.metrics.bytes_written,
        ),
        outputs=[
            task_pb2.StageOutput(step=o.step, location=o.location, rows_written=o.rows_written)
            for o in stage.outputs
        ],
        error_reason=stage.error_reason,
        error_message=stage.error_message,
    )

"""SchedulerService servicer: protobuf ↔ domain, one domain call per RPC.

Errors are raised as ``DomainError`` and mapped to rich statuses by the shared
interceptor. Params travel as ``google.protobuf.Value`` maps and are plain JSON
values (dict, list, str, int/float, bool, None) in the domain.

TestConnection and DescribeSource are forwarded to the connector service,
ListTransformTypes to the executor service; an unreachable one answers UNAVAILABLE
(CONNECTOR_UNAVAILABLE, EXECUTOR_UNAVAILABLE), other failures keep the service's own
code and reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from google.protobuf import json_format, struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from datadog_platform.api.common.v1 import task_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2
from datadog_platform.api.scheduler.v1 import (
    pipeline_pb2,
    run_pb2,
    scheduler_service_pb2,
    scheduler_service_pb2_grpc,
)
from datadog_platform.core.arrow_frames import decode_schema
from datadog_platform.core.errors import FieldViolation, invalid_argument, unavailable
from datadog_platform.scheduler.backfills import BackfillManager
from datadog_platform.scheduler.connector_client import ConnectorClient
from datadog_platform.scheduler.domain import (
    EXECUTOR_UNAVAILABLE,
    INVALID_REQUEST,
    Backfill,
    CheckResult,
    JsonValue,
    LogLine,
    PlannedStage,
    Run,
    RunState,
    StageRun,
)
from datadog_platform.scheduler.pipelines import PipelineRegistry
from datadog_platform.scheduler.runs import RunManager
from datadog_platform.scheduler.templating import json_value
from datadog_platform.scheduler.validation import connection_name_violations, source_violations

pb = scheduler_service_pb2


class TransformCatalog(Protocol):
    """Where the transform catalogue comes from (the executor service's client)."""

    async def list_transform_types(
        self, *, time_left: float | None = None
    ) -> list[executor_service_pb2.TransformType]: ...


class SchedulerServicer(scheduler_service_pb2_grpc.SchedulerServiceServicer):
    """The public API: pipelines, runs, backfills and the connection catalog."""

    def __init__(
        self,
        registry: PipelineRegistry,
        runs: RunManager,
        backfills: BackfillManager,
        connector: ConnectorClient,
        *,
        executor: TransformCatalog | None = None,
    ) -> None:
        """``executor``: where the transform catalogue comes from (the executor client);
        without it ListTransformTypes answers UNAVAILABLE."""
        self._registry = registry
        self._runs = runs
        self._backfills = backfills
        self._connector = connector
        self._executor = executor

    # --- pipelines ------------------------------------------------------------------------

    async def CreatePipeline(
        self, request: pb.CreatePipelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePipelineResponse:
        registered = await self._registry.create(request.pipeline, request.request_id)
        return pb.CreatePipelineResponse(pipeline=registered.spec, plan=plan_pb(registered.plan))

    async def UpdatePipeline(
        self, request: pb.UpdatePipelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdatePipelineResponse:
        registered = await self._registry.update(request.pipeline, request.request_id)
        return pb.UpdatePipelineResponse(pipeline=registered.spec, plan=plan_pb(registered.plan))

    async def ValidatePipeline(
        self, request: pb.ValidatePipelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidatePipelineResponse:
        verdict = await self._registry.validate(request.pipeline)
        return pb.ValidatePipelineResponse(
            valid=verdict.valid,
            violations=[
                pb.SpecViolation(field=v.field, description=v.description)
                for v in verdict.violations
            ],
            plan=plan_pb(verdict.plan),
        )

    async def DeletePipeline(
        self, request: pb.DeletePipelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletePipelineResponse:
        result = await self._registry.delete(request.name)
        return pb.DeletePipelineResponse(
            name=request.name, versions_deleted=result.versions, runs_deleted=result.runs
        )

    async def PausePipeline(
        self, request: pb.PausePipelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.PausePipelineResponse:
        pipeline = await self._registry.set_paused(request.name, True)
        return pb.PausePipelineResponse(pipeline=pipeline)

    async def UnpausePipeline(
        self, request: pb.UnpausePipelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnpausePipelineResponse:
        pipeline = await self._registry.set_paused(request.name, False)
        return pb.UnpausePipelineResponse(pipeline=pipeline)

    async def GetPipeline(
        self, request: pb.GetPipelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPipelineResponse:
        registered = await self._registry.get(request.name, request.version)
        return pb.GetPipelineResponse(pipeline=registered.spec, plan=plan_pb(registered.plan))

    async def ListPipelines(
        self, request: pb.ListPipelinesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPipelinesResponse:
        pipelines, next_token = await self._registry.list(
            request.page_size,
            request.page_token,
            tags=tuple(request.tags),
            labels=dict(request.labels),
        )
        return pb.ListPipelinesResponse(pipelines=pipelines, next_page_token=next_token)

    # --- runs -------------------------------------------------------------------------------

    async def RunPipeline(
        self, request: pb.RunPipelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunPipelineResponse:
        run = await self._runs.start_run(
            request.pipeline, request.request_id, params_of(request.params)
        )
        return pb.RunPipelineResponse(run=run_pb(run))

    async def GetRun(
        self, request: pb.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRunResponse:
        return pb.GetRunResponse(run=run_pb(await self._runs.get_run(request.run_id)))

    async def WatchRun(
        self, request: pb.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchRunResponse]:
        # Between snapshots of a large run few stages change: convert only those.
        converted: dict[str, tuple[StageRun, run_pb2.StageRun]] = {}
        async for run in self._runs.watch(request.run_id):
            yield pb.WatchRunResponse(run=run_pb(run, converted))

    async def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRunsResponse:
        runs, next_token = await self._runs.list_runs(
            pipeline=request.pipeline,
            states=tuple(_run_state(s) for s in request.states),
            page_size=request.page_size,
            page_token=request.page_token,
            backfill_id=request.backfill_id,
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

    async def ListStageLogs(
        self, request: pb.ListStageLogsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStageLogsResponse:
        attempt, lines, next_token = await self._runs.stage_logs(
            request.run_id,
            request.stage_id,
            request.attempt,
            request.page_size,
            request.page_token,
        )
        return pb.ListStageLogsResponse(
            attempt=attempt, lines=[log_line_pb(line) for line in lines], next_page_token=next_token
        )

    # --- backfills --------------------------------------------------------------------------

    async def BackfillPipeline(
        self, request: pb.BackfillPipelineRequest, context: grpc.aio.ServicerContext
    ) -> pb.BackfillPipelineResponse:
        backfill = await self._backfills.create(
            request.pipeline,
            _optional_time(request, "start_date"),
            _optional_time(request, "end_date"),
            max_active_runs=request.max_active_runs,
            only_failed=request.only_failed,
            params=params_of(request.params),
            request_id=request.request_id,
        )
        return pb.BackfillPipelineResponse(backfill=backfill_pb(backfill))

    async def GetBackfill(
        self, request: pb.GetBackfillRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBackfillResponse:
        backfill = await self._backfills.get(request.backfill_id)
        return pb.GetBackfillResponse(backfill=backfill_pb(backfill))

    async def ListBackfills(
        self, request: pb.ListBackfillsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBackfillsResponse:
        backfills, next_token = await self._backfills.list(
            pipeline=request.pipeline, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListBackfillsResponse(
            backfills=[backfill_pb(b) for b in backfills], next_page_token=next_token
        )

    async def CancelBackfill(
        self, request: pb.CancelBackfillRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelBackfillResponse:
        backfill = await self._backfills.cancel(request.backfill_id)
        return pb.CancelBackfillResponse(backfill=backfill_pb(backfill))

    # --- connections ------------------------------------------------------------------------

    async def ListConnections(
        self, request: pb.ListConnectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConnectionsResponse:
        connections, next_token = await self._connector.list_connections(
            request.page_size, request.page_token
        )
        return pb.ListConnectionsResponse(connections=connections, next_page_token=next_token)

    async def TestConnection(
        self, request: pb.TestConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.TestConnectionResponse:
        _check_request(connection_name_violations("name", request.name))
        tested = await self._connector.test_connection(
            request.name, time_left=context.time_remaining()
        )
        return pb.TestConnectionResponse(
            ok=tested.ok, message=tested.message, reason=tested.reason, latency_ms=tested.latency_ms
        )

    async def DescribeSource(
        self, request: pb.DescribeSourceRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeSourceResponse:
        if not request.HasField("source"):
            _check_request([FieldViolation("source", "is required")])
        _check_request(source_violations("source", request.source))
        described = await self._connector.describe_source(
            request.source, time_left=context.time_remaining()
        )
        schema = decode_schema(described.schema)
        response = pb.DescribeSourceResponse(
            schema=described.schema,
            columns=[
                pb.SourceColumn(name=f.name, type=str(f.type), nullable=f.nullable) for f in schema
            ],
        )
        if described.HasField("estimated_rows"):
            response.estimated_rows = described.estimated_rows
        return response

    # --- transforms -------------------------------------------------------------------------

    async def ListTransformTypes(
        self, request: pb.ListTransformTypesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTransformTypesResponse:
        if self._executor is None:
            raise unavailable(EXECUTOR_UNAVAILABLE, "this scheduler has no executor service to ask")
        types = await self._executor.list_transform_types(time_left=context.time_remaining())
        return pb.ListTransformTypesResponse(transform_types=[transform_type_pb(t) for t in types])

    # --- metrics ----------------------------------------------------------------------------

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricsResponse:
        counts = await self._runs.platform_counts()
        return pb.GetMetricsResponse(
            pipelines=counts.pipelines,
            runs=[pb.StateCount(state=s, count=n) for s, n in sorted(counts.runs.items())],
            stages=[pb.StateCount(state=s, count=n) for s, n in sorted(counts.stages.items())],
            rows_written=counts.rows_written,
            bytes_written=counts.bytes_written,
            stages_in_flight=counts.stages_in_flight,
        )


# --- protobuf → domain ------------------------------------------------------------------------


def _check_request(violations: list[FieldViolation]) -> None:
    """Raise INVALID_ARGUMENT (INVALID_REQUEST) listing ``violations``, if any."""
    if violations:
        raise invalid_argument(
            INVALID_REQUEST,
            "; ".join(f"{v.field}: {v.description}" for v in violations),
            violations,
        )


def _run_state(value: int) -> RunState:
    name = run_pb2.RunState.Name(value) if value in run_pb2.RunState.values() else ""
    if not name.startswith("RUN_STATE_") or name == "RUN_STATE_UNSPECIFIED":
        raise invalid_argument(
            INVALID_REQUEST,
            f"states: {value} is not a run state",
            [FieldViolation("states", "must be run states other than UNSPECIFIED")],
        )
    return RunState(name.removeprefix("RUN_STATE_"))


def _optional_time(request: Any, name: str) -> datetime | None:
    """A Timestamp field of ``request`` as an aware UTC datetime; None when unset."""
    return time_of(getattr(request, name)) if request.HasField(name) else None


def time_of(stamp: Timestamp) -> datetime:
    """A Timestamp as an aware UTC datetime."""
    return stamp.ToDatetime(tzinfo=UTC)


def json_of_value(value: struct_pb2.Value) -> JsonValue:
    """A ``google.protobuf.Value`` as a plain JSON value.

    Numbers are doubles on the wire; an integral one comes back as an ``int`` so that
    ``{{ params.day }}`` renders ``7``, not ``7.0``.
    """
    return json_value(json_format.MessageToDict(value))


def params_of(values: Mapping[str, struct_pb2.Value]) -> dict[str, JsonValue]:
    """A ``map<string, Value>`` as a dict of JSON values."""
    return {name: json_of_value(value) for name, value in values.items()}


# --- domain → protobuf ------------------------------------------------------------------------


def value_of_json(value: JsonValue) -> struct_pb2.Value:
    """A JSON value as a ``google.protobuf.Value``."""
    return json_format.ParseDict(value, struct_pb2.Value())


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def plan_pb(plan: Iterable[PlannedStage]) -> list[pipeline_pb2.PlannedStage]:
    """The protobuf form of a plan."""
    return [
        pipeline_pb2.PlannedStage(stage_id=s.stage_id, steps=s.steps, upstream=s.upstream)
        for s in plan
    ]


def run_pb(
    run: Run, converted: dict[str, tuple[StageRun, run_pb2.StageRun]] | None = None
) -> run_pb2.Run:
    """The protobuf form of a domain run.

    ``converted`` (stage id → the stage as last converted, and its message) lets
    successive snapshots of one run reuse the messages of stages that did not change;
    the snapshots are copies, so an unchanged stage compares equal.
    """
    message = run_pb2.Run(
        run_id=run.run_id,
        pipeline=run.pipeline,
        pipeline_version=run.pipeline_version,
        state=run_pb2.RunState.Value(f"RUN_STATE_{run.state.value}"),
        create_time=_timestamp(run.create_time),
        start_time=_timestamp(run.start_time),
        end_time=_timestamp(run.end_time),
        stages=[_stage_message(s, converted) for s in run.stages],
        error_message=run.error_message,
        request_id=run.request_id,
        trigger=run_pb2.RunTrigger.Value(f"RUN_TRIGGER_{run.trigger.value}"),
        logical_date=_timestamp(run.logical_date),
        data_interval_start=_timestamp(run.data_interval_start),
        data_interval_end=_timestamp(run.data_interval_end),
        backfill_id=run.backfill_id,
    )
    for name, value in run.params.items():
        message.params[name].CopyFrom(value_of_json(value))
    return message


def _stage_message(
    stage: StageRun, converted: dict[str, tuple[StageRun, run_pb2.StageRun]] | None
) -> run_pb2.StageRun:
    if converted is None:
        return stage_pb(stage)
    previous = converted.get(stage.stage_id)
    if previous is not None and previous[0] == stage:
        return previous[1]
    message = stage_pb(stage)
    converted[stage.stage_id] = (stage, message)
    return message


def stage_pb(stage: StageRun) -> run_pb2.StageRun:
    """The protobuf form of a stage of a run."""
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
        upstream=stage.upstream,
        next_attempt_time=_timestamp(stage.next_attempt_time),
        checks=[check_result_pb(c) for c in stage.checks],
    )


def check_result_pb(check: CheckResult) -> task_pb2.CheckResult:
    """The protobuf form of a data-quality check result."""
    return task_pb2.CheckResult(
        step=check.step,
        check=check.check,
        passed=check.passed,
        failing_rows=check.failing_rows,
        message=check.message,
        action=check.action,
    )


def transform_type_pb(kind: executor_service_pb2.TransformType) -> pb.TransformTypeInfo:
    """The scheduler's form of the executor's description of a transform kind."""
    return pb.TransformTypeInfo(
        name=kind.name,
        description=kind.description,
        parameters=[
            pb.TransformParameterInfo(
                name=p.name, type=p.type, description=p.description, required=p.required
            )
            for p in kind.parameters
        ],
        min_inputs=kind.min_inputs,
        max_inputs=kind.max_inputs,
        streaming=kind.streaming,
    )


def backfill_pb(backfill: Backfill) -> run_pb2.Backfill:
    """The protobuf form of a backfill, with its progress counters."""
    message = run_pb2.Backfill(
        backfill_id=backfill.backfill_id,
        pipeline=backfill.pipeline,
        start_date=_timestamp(backfill.start_date),
        end_date=_timestamp(backfill.end_date),
        max_active_runs=backfill.max_active_runs,
        only_failed=backfill.only_failed,
        state=run_pb2.BackfillState.Value(f"BACKFILL_STATE_{backfill.state.value}"),
        create_time=_timestamp(backfill.create_time),
        end_time=_timestamp(backfill.end_time),
        total_runs=len(backfill.logical_dates),
        created_runs=backfill.created_runs,
        succeeded_runs=backfill.succeeded_runs,
        failed_runs=backfill.failed_runs,
        request_id=backfill.request_id,
    )
    for name, value in backfill.params.items():
        message.params[name].CopyFrom(value_of_json(value))
    return message


def log_line_pb(line: LogLine) -> task_pb2.LogLine:
    """The protobuf form of a stage log line."""
    return task_pb2.LogLine(
        time=_timestamp(line.time),
        level=task_pb2.LogLevel.Value(f"LOG_LEVEL_{line.level.value}"),
        step=line.step,
        message=line.message,
    )

"""A thin synchronous client of ``SchedulerService``: one channel, a deadline on every call."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format, struct_pb2

from datadog_platform.api.common.v1 import connection_pb2
from datadog_platform.api.scheduler.v1 import (
    pipeline_pb2,
    run_pb2,
    scheduler_service_pb2,
    scheduler_service_pb2_grpc,
)
from datadog_platform.core.server import CHANNEL_OPTIONS

# Larger pages mean fewer round trips for listings; the server caps them anyway.
_PAGE_SIZE = 1000
_LOG_PAGE_SIZE = 1000
T = TypeVar("T")


class SchedulerClient:
    """The scheduler's public API as plain blocking methods.

    Unary calls fail with ``grpc.RpcError`` after ``timeout`` seconds; ``watch_run``
    takes its own, long deadline. Use as a context manager to close the channel.
    """

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = scheduler_service_pb2_grpc.SchedulerServiceStub(self._channel)

    def __enter__(self) -> SchedulerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def create_pipeline(
        self, pipeline: pipeline_pb2.Pipeline, request_id: str = ""
    ) -> scheduler_service_pb2.CreatePipelineResponse:
        """Register a new pipeline; returns it as stored with its plan."""
        request = scheduler_service_pb2.CreatePipelineRequest(
            pipeline=pipeline, request_id=request_id
        )
        return self._stub.CreatePipeline(request, timeout=self.timeout)

    def get_pipeline(
        self, name: str, version: int = 0
    ) -> scheduler_service_pb2.GetPipelineResponse:
        """A pipeline version (0 = latest) and its plan."""
        request = scheduler_service_pb2.GetPipelineRequest(name=name, version=version)
        return self._stub.GetPipeline(request, timeout=self.timeout)

    def update_pipeline(
        self, pipeline: pipeline_pb2.Pipeline, request_id: str = ""
    ) -> scheduler_service_pb2.UpdatePipelineResponse:
        """Store a new version of an existing pipeline; returns it with its plan."""
        request = scheduler_service_pb2.UpdatePipelineRequest(
            pipeline=pipeline, request_id=request_id
        )
        return self._stub.UpdatePipeline(request, timeout=self.timeout)

    def validate_pipeline(
        self, pipeline: pipeline_pb2.Pipeline
    ) -> scheduler_service_pb2.ValidatePipelineResponse:
        """Check a spec without storing it: its plan, or its problems."""
        request = scheduler_service_pb2.ValidatePipelineRequest(pipeline=pipeline)
        return self._stub.ValidatePipeline(request, timeout=self.timeout)

    def delete_pipeline(self, name: str) -> scheduler_service_pb2.DeletePipelineResponse:
        """Delete a pipeline with its versions, runs and backfills."""
        request = scheduler_service_pb2.DeletePipelineRequest(name=name)
        return self._stub.DeletePipeline(request, timeout=self.timeout)

    def pause_pipeline(self, name: str) -> pipeline_pb2.Pipeline:
        """Stop the pipeline's schedule from creating runs."""
        request = scheduler_service_pb2.PausePipelineRequest(name=name)
        return self._stub.PausePipeline(request, timeout=self.timeout).pipeline

    def unpause_pipeline(self, name: str) -> pipeline_pb2.Pipeline:
        """Let the pipeline's schedule create runs again."""
        request = scheduler_service_pb2.UnpausePipelineRequest(name=name)
        return self._stub.UnpausePipeline(request, timeout=self.timeout).pipeline

    def list_pipelines(
        self, tags: Sequence[str] = (), labels: Mapping[str, str] | None = None
    ) -> list[pipeline_pb2.Pipeline]:
        """The latest version of every pipeline (with all ``tags`` and ``labels``), by name."""

        def page(token: str, size: int) -> tuple[Sequence[pipeline_pb2.Pipeline], str]:
            request = scheduler_service_pb2.ListPipelinesRequest(
                page_size=size, page_token=token, tags=tags, labels=dict(labels or {})
            )
            response = self._stub.ListPipelines(request, timeout=self.timeout)
            return response.pipelines, response.next_page_token

        return _collect(page)

    def run_pipeline(
        self, name: str, request_id: str = "", params: Mapping[str, Any] | None = None
    ) -> run_pb2.Run:
        """Start a run of the latest version of a pipeline, with param overrides."""
        request = scheduler_service_pb2.RunPipelineRequest(pipeline=name, request_id=request_id)
        _set_params(request.params, params)
        return self._stub.RunPipeline(request, timeout=self.timeout).run

    def get_run(self, run_id: str) -> run_pb2.Run:
        """A run with the state of each stage."""
        request = scheduler_service_pb2.GetRunRequest(run_id=run_id)
        return self._stub.GetRun(request, timeout=self.timeout).run

    def watch_run(self, run_id: str, timeout: float) -> Iterator[run_pb2.Run]:
        """Snapshots of a run as it changes, until it reaches a final state.

        ``timeout`` bounds the whole watch. Leaving the iteration early cancels the call.
        """
        request = scheduler_service_pb2.WatchRunRequest(run_id=run_id)
        call = self._stub.WatchRun(request, timeout=timeout)
        try:
            for response in call:
                yield response.run
        finally:
            call.cancel()

    def list_runs(
        self,
        pipeline: str = "",
        states: Sequence[int] = (),
        limit: int = 0,
        backfill_id: str = "",
    ) -> list[run_pb2.Run]:
        """Runs, newest first, filtered by pipeline, states and backfill; all pages unless
        ``limit``."""

        def page(token: str, size: int) -> tuple[Sequence[run_pb2.Run], str]:
            request = scheduler_service_pb2.ListRunsRequest(
                pipeline=pipeline,
                states=states,
                page_size=size,
                page_token=token,
                backfill_id=backfill_id,
            )
            response = self._stub.ListRuns(request, timeout=self.timeout)
            return response.runs, response.next_page_token

        return _collect(page, limit)

    def cancel_run(self, run_id: str, request_id: str = "") -> run_pb2.Run:
        """Cancel a run; returns it in its final state."""
        request = scheduler_service_pb2.CancelRunRequest(run_id=run_id, request_id=request_id)
        return self._stub.CancelRun(request, timeout=self.timeout).run

    def retry_run(self, run_id: str, request_id: str = "") -> run_pb2.Run:
        """Re-run a finished run's failed and never-run stages; returns it RUNNING."""
        request = scheduler_service_pb2.RetryRunRequest(run_id=run_id, request_id=request_id)
        return self._stub.RetryRun(request, timeout=self.timeout).run

    def list_connections(self) -> list[connection_pb2.Connection]:
        """The connections configured on the connector service (all pages)."""

        def page(token: str, size: int) -> tuple[Sequence[connection_pb2.Connection], str]:
            request = scheduler_service_pb2.ListConnectionsRequest(page_size=size, page_token=token)
            response = self._stub.ListConnections(request, timeout=self.timeout)
            return response.connections, response.next_page_token

        return _collect(page)

    def list_stage_logs(
        self, run_id: str, stage_id: str, attempt: int = 0, page_token: str = ""
    ) -> scheduler_service_pb2.ListStageLogsResponse:
        """One page of a stage attempt's log lines (attempt 0: the latest)."""
        request = scheduler_service_pb2.ListStageLogsRequest(
            run_id=run_id,
            stage_id=stage_id,
            attempt=attempt,
            page_size=_LOG_PAGE_SIZE,
            page_token=page_token,
        )
        return self._stub.ListStageLogs(request, timeout=self.timeout)

    def backfill_pipeline(
        self,
        name: str,
        start: datetime,
        end: datetime,
        *,
        max_active_runs: int = 0,
        only_failed: bool = False,
        params: Mapping[str, Any] | None = None,
        request_id: str = "",
    ) -> run_pb2.Backfill:
        """Start a backfill of ``name`` over [start, end)."""
        request = scheduler_service_pb2.BackfillPipelineRequest(
            pipeline=name,
            max_active_runs=max_active_runs,
            only_failed=only_failed,
            request_id=request_id,
        )
        request.start_date.FromDatetime(start)
        request.end_date.FromDatetime(end)
        _set_params(request.params, params)
        return self._stub.BackfillPipeline(request, timeout=self.timeout).backfill

    def get_backfill(self, backfill_id: str) -> run_pb2.Backfill:
        """A backfill and the progress of its runs."""
        request = scheduler_service_pb2.GetBackfillRequest(backfill_id=backfill_id)
        return self._stub.GetBackfill(request, timeout=self.timeout).backfill

    def list_backfills(self, pipeline: str = "", limit: int = 0) -> list[run_pb2.Backfill]:
        """Backfills, newest first; all pages unless ``limit``."""

        def page(token: str, size: int) -> tuple[Sequence[run_pb2.Backfill], str]:
            request = scheduler_service_pb2.ListBackfillsRequest(
                pipeline=pipeline, page_size=size, page_token=token
            )
            response = self._stub.ListBackfills(request, timeout=self.timeout)
            return response.backfills, response.next_page_token

        return _collect(page, limit)

    def cancel_backfill(self, backfill_id: str) -> run_pb2.Backfill:
        """Cancel a backfill and its unfinished runs; returns it in its final state."""
        request = scheduler_service_pb2.CancelBackfillRequest(backfill_id=backfill_id)
        return self._stub.CancelBackfill(request, timeout=self.timeout).backfill


def _set_params(target: Any, params: Mapping[str, Any] | None) -> None:
    """Fill a ``map<string, Value>`` field from JSON values."""
    for name, value in (params or {}).items():
        target[name].CopyFrom(json_format.ParseDict(value, struct_pb2.Value()))


def _collect(fetch: Callable[[str, int], tuple[Sequence[T], str]], limit: int = 0) -> list[T]:
    """Every item of a paged list RPC (at most ``limit`` when set), page by page."""
    items: list[T] = []
    token = ""
    while True:
        size = min(limit - len(items), _PAGE_SIZE) if limit else _PAGE_SIZE
        page, next_token = fetch(token, size)
        items.extend(page)
        # A server that repeats a token would otherwise loop forever.
        if (limit and len(items) >= limit) or not next_token or next_token == token:
            return items
        token = next_token

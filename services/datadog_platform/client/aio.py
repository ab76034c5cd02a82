"""``AsyncClient``: the scheduler's public API as coroutines over one ``grpc.aio`` channel."""

# ``timeout`` is the gRPC deadline sent with each call (the server sees it too), the
# same parameter as the blocking Client's; asyncio.timeout could not propagate it.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc

from datadog_platform.api.common.v1 import connection_pb2, step_pb2, task_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.client import _requests as req
from datadog_platform.client._base import REWATCH_SECONDS, BaseClient
from datadog_platform.client.connection import DEFAULT_WATCH_TIMEOUT, ConnectionSettings
from datadog_platform.client.errors import ApiError

T = TypeVar("T")
R = TypeVar("R")


class AsyncClient(BaseClient[grpc.aio.Channel]):
    """An asyncio client of ``SchedulerService``, with the same methods as
    :class:`~datadog_platform.client.Client` as coroutines (``list_*`` and
    ``watch_run`` are async iterators). Create it inside the event loop that uses it.

    Example::

        async with AsyncClient("127.0.0.1:50051") as client:
            run = await client.run_pipeline("csv_to_parquet")
            final = await client.wait_for_run(run.run_id)
    """

    @staticmethod
    def _open_channel(settings: ConnectionSettings) -> grpc.aio.Channel:
        return settings.aio_channel()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    # -- plumbing ---------------------------------------------------------------

    async def _call(
        self, method: Callable[..., Awaitable[R]], request: Any, timeout: float | None
    ) -> R:
        try:
            return await method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise ApiError.from_rpc_error(exc) from None

    async def _paged(
        self,
        fetch: Callable[[int, str], Awaitable[tuple[Sequence[T], str]]],
        limit: int,
        page_size: int,
    ) -> AsyncIterator[T]:
        token, fetched = "", 0
        while True:
            items, next_token = await fetch(req.page_size(limit, fetched, page_size), token)
            for item in items:
                yield item
                fetched += 1
                if limit and fetched >= limit:
                    return
            # A server that repeated a token would otherwise loop forever.
            if not next_token or next_token == token:
                return
            token = next_token

    # -- pipelines --------------------------------------------------------------

    async def create_pipeline(
        self, pipeline: req.PipelineLike, *, request_id: str = "", timeout: float | None = None
    ) -> pb.CreatePipelineResponse:
        """Register a new pipeline: it as stored and its plan."""
        request = req.create_pipeline(pipeline, request_id)
        return await self._call(self.stub.CreatePipeline, request, timeout)

    async def update_pipeline(
        self, pipeline: req.PipelineLike, *, request_id: str = "", timeout: float | None = None
    ) -> pb.UpdatePipelineResponse:
        """Store the next version of an existing pipeline: it as stored and its plan."""
        request = req.update_pipeline(pipeline, request_id)
        return await self._call(self.stub.UpdatePipeline, request, timeout)

    async def get_pipeline(
        self, name: str, *, version: int = 0, timeout: float | None = None
    ) -> pb.GetPipelineResponse:
        """A pipeline version (0: the latest) and its plan."""
        request = pb.GetPipelineRequest(name=name, version=version)
        return await self._call(self.stub.GetPipeline, request, timeout)

    def list_pipelines(
        self,
        *,
        tags: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        limit: int = 0,
        page_size: int = req.DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> AsyncIterator[pipeline_pb2.Pipeline]:
        """The latest version of every pipeline carrying all ``tags`` and ``labels``."""
        tags = list(tags)

        async def fetch(size: int, token: str) -> tuple[Sequence[pipeline_pb2.Pipeline], str]:
            request = req.list_pipelines(tags, labels, size, token)
            response = await self._call(self.stub.ListPipelines, request, timeout)
            return response.pipelines, response.next_page_token

        return self._paged(fetch, limit, page_size)

    async def delete_pipeline(
        self, name: str, *, timeout: float | None = None
    ) -> pb.DeletePipelineResponse:
        """Delete a pipeline with its versions, runs, backfills and watermarks."""
        request = pb.DeletePipelineRequest(name=name)
        return await self._call(self.stub.DeletePipeline, request, timeout)

    async def validate_pipeline(
        self, pipeline: req.PipelineLike, *, timeout: float | None = None
    ) -> pb.ValidatePipelineResponse:
        """Check a spec without storing it: its plan, or every problem."""
        request = req.validate_pipeline(pipeline)
        return await self._call(self.stub.ValidatePipeline, request, timeout)

    async def pause_pipeline(
        self, name: str, *, timeout: float | None = None
    ) -> pipeline_pb2.Pipeline:
        """Stop the pipeline's schedule creating runs."""
        request = pb.PausePipelineRequest(name=name)
        return (await self._call(self.stub.PausePipeline, request, timeout)).pipeline

    async def unpause_pipeline(
        self, name: str, *, timeout: float | None = None
    ) -> pipeline_pb2.Pipeline:
        """Let the pipeline's schedule create runs again."""
        request = pb.UnpausePipelineRequest(name=name)
        return (await self._call(self.stub.UnpausePipeline, request, timeout)).pipeline

    # -- runs -------------------------------------------------------------------

    async def run_pipeline(
        self,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        request_id: str = "",
        timeout: float | None = None,
    ) -> run_pb2.Run:
        """Start a run of the pipeline's latest version, with param overrides."""
        request = req.run_pipeline(name, request_id, params)
        return (await self._call(self.stub.RunPipeline, request, timeout)).run

    async def get_run(self, run_id: str, *, timeout: float | None = None) -> run_pb2.Run:
        """A run with the state of each stage."""
        request = pb.GetRunRequest(run_id=run_id)
        return (await self._call(self.stub.GetRun, request, timeout)).run

    async def watch_run(
        self, run_id: str, *, timeout: float | None = None
    ) -> AsyncIterator[run_pb2.Run]:
        """Snapshots of a run as it changes, until it is final (or the stream ends)."""
        call = self.stub.WatchRun(
            pb.WatchRunRequest(run_id=run_id),
            timeout=timeout or DEFAULT_WATCH_TIMEOUT,
            metadata=self._metadata,
        )
        try:
            async for response in call:
                yield response.run
        except grpc.RpcError as exc:
            raise ApiError.from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def wait_for_run(self, run_id: str, *, timeout: float | None = None) -> run_pb2.Run:
        """The run once final; DEADLINE_EXCEEDED after ``timeout`` (default 24 hours)."""
        deadline = time.monotonic() + (timeout or DEFAULT_WATCH_TIMEOUT)
        while True:
            last: run_pb2.Run | None = None
            async for last in self.watch_run(run_id, timeout=req.remaining(deadline, run_id)):  # noqa: B007
                pass
            if last is not None and req.is_final(last):
                return last
            run = await self.get_run(run_id)
            if req.is_final(run):
                return run
            await asyncio.sleep(REWATCH_SECONDS)

    def list_runs(
        self,
        *,
        pipeline: str = "",
        states: Iterable[req.RunStateLike] = (),
        backfill_id: str = "",
        limit: int = 0,
        page_size: int = req.DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> AsyncIterator[run_pb2.Run]:
        """Runs, newest first, filtered by pipeline, states and backfill."""
        states = list(states)

        async def fetch(size: int, token: str) -> tuple[Sequence[run_pb2.Run], str]:
            request = req.list_runs(pipeline, states, backfill_id, size, token)
            response = await self._call(self.stub.ListRuns, request, timeout)
            return response.runs, response.next_page_token

        return self._paged(fetch, limit, page_size)

    async def cancel_run(
        self, run_id: str, *, request_id: str = "", timeout: float | None = None
    ) -> run_pb2.Run:
        """Cancel an unfinished run; the run in its final state."""
        request = pb.CancelRunRequest(run_id=run_id, request_id=request_id)
        return (await self._call(self.stub.CancelRun, request, timeout)).run

    async def retry_run(
        self, run_id: str, *, request_id: str = "", timeout: float | None = None
    ) -> run_pb2.Run:
        """Re-run a finished run's failed and never-run stages."""
        request = pb.RetryRunRequest(run_id=run_id, request_id=request_id)
        return (await self._call(self.stub.RetryRun, request, timeout)).run

    async def stage_logs_page(
        self,
        run_id: str,
        stage_id: str,
        *,
        attempt: int = 0,
        page_token: str = "",
        page_size: int = req.DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> pb.ListStageLogsResponse:
        """One page of a stage attempt's log lines (attempt 0: the latest)."""
        request = pb.ListStageLogsRequest(
            run_id=run_id,
            stage_id=stage_id,
            attempt=attempt,
            page_size=page_size,
            page_token=page_token,
        )
        return await self._call(self.stub.ListStageLogs, request, timeout)

    def list_stage_logs(
        self,
        run_id: str,
        stage_id: str,
        *,
        attempt: int = 0,
        limit: int = 0,
        page_size: int = req.DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> AsyncIterator[task_pb2.LogLine]:
        """Every log line written so far by a stage attempt, oldest first."""

        async def fetch(size: int, token: str) -> tuple[Sequence[task_pb2.LogLine], str]:
            response = await self.stage_logs_page(
                run_id,
                stage_id,
                attempt=attempt,
                page_token=token,
                page_size=size,
                timeout=timeout,
            )
            return response.lines, response.next_page_token

        return self._paged(fetch, limit, page_size)

    # -- backfills --------------------------------------------------------------

    async def backfill_pipeline(
        self,
        name: str,
        start: datetime,
        end: datetime,
        *,
        max_active_runs: int = 0,
        only_failed: bool = False,
        params: Mapping[str, Any] | None = None,
        request_id: str = "",
        timeout: float | None = None,
    ) -> run_pb2.Backfill:
        """Run a scheduled pipeline once per interval of [start, end) (aware datetimes)."""
        request = req.backfill_pipeline(
            name, start, end, max_active_runs, only_failed, params, request_id
        )
        return (await self._call(self.stub.BackfillPipeline, request, timeout)).backfill

    async def get_backfill(
        self, backfill_id: str, *, timeout: float | None = None
    ) -> run_pb2.Backfill:
        """A backfill and the progress of its runs."""
        request = pb.GetBackfillRequest(backfill_id=backfill_id)
        return (await self._call(self.stub.GetBackfill, request, timeout)).backfill

    def list_backfills(
        self,
        *,
        pipeline: str = "",
        limit: int = 0,
        page_size: int = req.DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> AsyncIterator[run_pb2.Backfill]:
        """Backfills, newest first, optionally of one pipeline."""

        async def fetch(size: int, token: str) -> tuple[Sequence[run_pb2.Backfill], str]:
            request = pb.ListBackfillsRequest(pipeline=pipeline, page_size=size, page_token=token)
            response = await self._call(self.stub.ListBackfills, request, timeout)
            return response.backfills, response.next_page_token

        return self._paged(fetch, limit, page_size)

    async def cancel_backfill(
        self, backfill_id: str, *, timeout: float | None = None
    ) -> run_pb2.Backfill:
        """Stop a backfill and cancel its unfinished runs."""
        request = pb.CancelBackfillRequest(backfill_id=backfill_id)
        return (await self._call(self.stub.CancelBackfill, request, timeout)).backfill

    # -- connections and catalogue ----------------------------------------------

    def list_connections(
        self,
        *,
        limit: int = 0,
        page_size: int = req.DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> AsyncIterator[connection_pb2.Connection]:
        """The connections configured on the connector service, without secrets."""

        async def fetch(size: int, token: str) -> tuple[Sequence[connection_pb2.Connection], str]:
            request = pb.ListConnectionsRequest(page_size=size, page_token=token)
            response = await self._call(self.stub.ListConnections, request, timeout)
            return response.connections, response.next_page_token

        return self._paged(fetch, limit, page_size)

    async def test_connection(
        self, name: str, *, timeout: float | None = None
    ) -> pb.TestConnectionResponse:
        """Check a configured connection."""
        request = pb.TestConnectionRequest(name=name)
        return await self._call(self.stub.TestConnection, request, timeout)

    async def describe_source(
        self, source: step_pb2.SourceSpec | Mapping[str, Any], *, timeout: float | None = None
    ) -> pb.DescribeSourceResponse:
        """The schema a source would produce."""
        request = req.describe_source(source)
        return await self._call(self.stub.DescribeSource, request, timeout)

    async def list_transform_types(
        self, *, timeout: float | None = None
    ) -> list[pb.TransformTypeInfo]:
        """Every transform kind the executors run."""
        request = pb.ListTransformTypesRequest()
        response = await self._call(self.stub.ListTransformTypes, request, timeout)
        return list(response.transform_types)

    async def get_metrics(self, *, timeout: float | None = None) -> pb.GetMetricsResponse:
        """Platform counters."""
        return await self._call(self.stub.GetMetrics, pb.GetMetricsRequest(), timeout)

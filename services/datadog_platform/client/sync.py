"""``Client``: the scheduler's public API as blocking methods over one gRPC channel."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


class Client(BaseClient[grpc.Channel]):
    """A blocking client of ``SchedulerService``.

    Every call has a deadline: ``timeout`` seconds unless the call's own ``timeout``
    says otherwise (watching a run defaults to 24 hours). Failures raise
    :class:`ApiError`. ``list_*`` methods return lazy iterators over every page (the
    calls happen while iterating); ``limit`` stops after that many items. Use as a
    context manager, or call :meth:`close`.

    Example::

        with Client("127.0.0.1:50051", token="s3cret") as client:
            for pipeline in client.list_pipelines():
                print(pipeline.name, pipeline.version)
    """

    @staticmethod
    def _open_channel(settings: ConnectionSettings) -> grpc.Channel:
        return settings.channel()

    def __enter__(self) -> Client:
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

    # -- plumbing ---------------------------------------------------------------

    def _call(self, method: Callable[..., R], request: Any, timeout: float | None) -> R:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise ApiError.from_rpc_error(exc) from None

    def _paged(
        self,
        fetch: Callable[[int, str], tuple[Sequence[T], str]],
        limit: int,
        page_size: int,
    ) -> Iterator[T]:
        token, fetched = "", 0
        while True:
            items, next_token = fetch(req.page_size(limit, fetched, page_size), token)
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

    def create_pipeline(
        self, pipeline: req.PipelineLike, *, request_id: str = "", timeout: float | None = None
    ) -> pb.CreatePipelineResponse:
        """Register a new pipeline (a message, a builder or a JSON mapping): it as stored
        and its plan."""
        request = req.create_pipeline(pipeline, request_id)
        return self._call(self.stub.CreatePipeline, request, timeout)

    def update_pipeline(
        self, pipeline: req.PipelineLike, *, request_id: str = "", timeout: float | None = None
    ) -> pb.UpdatePipelineResponse:
        """Store the next version of an existing pipeline: it as stored and its plan."""
        request = req.update_pipeline(pipeline, request_id)
        return self._call(self.stub.UpdatePipeline, request, timeout)

    def get_pipeline(
        self, name: str, *, version: int = 0, timeout: float | None = None
    ) -> pb.GetPipelineResponse:
        """A pipeline version (0: the latest) and its plan."""
        request = pb.GetPipelineRequest(name=name, version=version)
        return self._call(self.stub.GetPipeline, request, timeout)

    def list_pipelines(
        self,
        *,
        tags: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        limit: int = 0,
        page_size: int = req.DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> Iterator[pipeline_pb2.Pipeline]:
        """The latest version of every pipeline carrying all ``tags`` and ``labels``,
        by name."""
        tags = list(tags)

        def fetch(size: int, token: str) -> tuple[Sequence[pipeline_pb2.Pipeline], str]:
            request = req.list_pipelines(tags, labels, size, token)
            response = self._call(self.stub.ListPipelines, request, timeout)
            return response.pipelines, response.next_page_token

        return self._paged(fetch, limit, page_size)

    def delete_pipeline(
        self, name: str, *, timeout: float | None = None
    ) -> pb.DeletePipelineResponse:
        """Delete a pipeline with its versions, runs, backfills and watermarks."""
        request = pb.DeletePipelineRequest(name=name)
        return self._call(self.stub.DeletePipeline, request, timeout)

    def validate_pipeline(
        self, pipeline: req.PipelineLike, *, timeout: float | None = None
    ) -> pb.ValidatePipelineResponse:
        """Check a spec without storing it: its plan, or every problem."""
        return self._call(self.stub.ValidatePipeline, req.validate_pipeline(pipeline), timeout)

    def pause_pipeline(self, name: str, *, timeout: float | None = None) -> pipeline_pb2.Pipeline:
        """Stop the pipeline's schedule creating runs; the pipeline as it is now."""
        request = pb.PausePipelineRequest(name=name)
        return self._call(self.stub.PausePipeline, request, timeout).pipeline

    def unpause_pipeline(self, name: str, *, timeout: float | None = None) -> pipeline_pb2.Pipeline:
        """Let the pipeline's schedule create runs again; the pipeline as it is now."""
        request = pb.UnpausePipelineRequest(name=name)
        return self._call(self.stub.UnpausePipeline, request, timeout).pipeline

    # -- runs -------------------------------------------------------------------

    def run_pipeline(
        self,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        request_id: str = "",
        timeout: float | None = None,
    ) -> run_pb2.Run:
        """Start a run of the pipeline's latest version, with param overrides."""
        request = req.run_pipeline(name, request_id, params)
        return self._call(self.stub.RunPipeline, request, timeout).run

    def get_run(self, run_id: str, *, timeout: float | None = None) -> run_pb2.Run:
        """A run with the state of each stage."""
        return self._call(self.stub.GetRun, pb.GetRunRequest(run_id=run_id), timeout).run

    def watch_run(self, run_id: str, *, timeout: float | None = None) -> Iterator[run_pb2.Run]:
        """Snapshots of a run as it changes, until it is final (or the stream ends).

        ``timeout`` (default 24 hours) bounds the whole watch; leaving the iteration
        early cancels the call.
        """
        call = self.stub.WatchRun(
            pb.WatchRunRequest(run_id=run_id),
            timeout=timeout or DEFAULT_WATCH_TIMEOUT,
            metadata=self._metadata,
        )
        try:
            for response in call:
                yield response.run
        except grpc.RpcError as exc:
            raise ApiError.from_rpc_error(exc) from None
        finally:
            call.cancel()

    def wait_for_run(self, run_id: str, *, timeout: float | None = None) -> run_pb2.Run:
        """Block until the run is final and return it; DEADLINE_EXCEEDED after ``timeout``
        (default 24 hours)."""
        deadline = time.monotonic() + (timeout or DEFAULT_WATCH_TIMEOUT)
        while True:
            last: run_pb2.Run | None = None
            for last in self.watch_run(run_id, timeout=req.remaining(deadline, run_id)):  # noqa: B007
                pass
            if last is not None and req.is_final(last):
                return last
            # The stream ended early (e.g. the scheduler is shutting down): look again.
            run = self.get_run(run_id)
            if req.is_final(run):
                return run
            time.sleep(REWATCH_SECONDS)

    def list_runs(
        self,
        *,
        pipeline: str = "",
        states: Iterable[req.RunStateLike] = (),
        backfill_id: str = "",
        limit: int = 0,
        page_size: int = req.DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> Iterator[run_pb2.Run]:
        """Runs, newest first, filtered by pipeline, states (numbers or names such as
        "FAILED") and backfill."""
        states = list(states)

        def fetch(size: int, token: str) -> tuple[Sequence[run_pb2.Run], str]:
            request = req.list_runs(pipeline, states, backfill_id, size, token)
            response = self._call(self.stub.ListRuns, request, timeout)
            return response.runs, response.next_page_token

        return self._paged(fetch, limit, page_size)

    def cancel_run(
        self, run_id: str, *, request_id: str = "", timeout: float | None = None
    ) -> run_pb2.Run:
        """Cancel an unfinished run; the run in its final state."""
        request = pb.CancelRunRequest(run_id=run_id, request_id=request_id)
        return self._call(self.stub.CancelRun, request, timeout).run

    def retry_run(
        self, run_id: str, *, request_id: str = "", timeout: float | None = None
    ) -> run_pb2.Run:
        """Re-run a finished run's failed and never-run stages; the run, RUNNING again."""
        request = pb.RetryRunRequest(run_id=run_id, request_id=request_id)
        return self._call(self.stub.RetryRun, request, timeout).run

    def stage_logs_page(
        self,
        run_id: str,
        stage_id: str,
        *,
        attempt: int = 0,
        page_token: str = "",
        page_size: int = req.DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> pb.ListStageLogsResponse:
        """One page of a stage attempt's log lines (attempt 0: the latest), for following
        a running attempt with ``next_page_token``."""
        request = pb.ListStageLogsRequest(
            run_id=run_id,
            stage_id=stage_id,
            attempt=attempt,
            page_size=page_size,
            page_token=page_token,
        )
        return self._call(self.stub.ListStageLogs, request, timeout)

    def list_stage_logs(
        self,
        run_id: str,
        stage_id: str,
        *,
        attempt: int = 0,
        limit: int = 0,
        page_size: int = req.DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> Iterator[task_pb2.LogLine]:
        """Every log line written so far by a stage attempt (0: the latest), oldest first."""

        def fetch(size: int, token: str) -> tuple[Sequence[task_pb2.LogLine], str]:
            response = self.stage_logs_page(
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
        timeout: float | None = None,
    ) -> run_pb2.Backfill:
        """Run a scheduled pipeline once per interval of [start, end) (aware datetimes)."""
        request = req.backfill_pipeline(
            name, start, end, max_active_runs, only_failed, params, request_id
        )
        return self._call(self.stub.BackfillPipeline, request, timeout).backfill

    def get_backfill(self, backfill_id: str, *, timeout: float | None = None) -> run_pb2.Backfill:
        """A backfill and the progress of its runs."""
        request = pb.GetBackfillRequest(backfill_id=backfill_id)
        return self._call(self.stub.GetBackfill, request, timeout).backfill

    def list_backfills(
        self,
        *,
        pipeline: str = "",
        limit: int = 0,
        page_size: int = req.DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> Iterator[run_pb2.Backfill]:
        """Backfills, newest first, optionally of one pipeline."""

        def fetch(size: int, token: str) -> tuple[Sequence[run_pb2.Backfill], str]:
            request = pb.ListBackfillsRequest(pipeline=pipeline, page_size=size, page_token=token)
            response = self._call(self.stub.ListBackfills, request, timeout)
            return response.backfills, response.next_page_token

        return self._paged(fetch, limit, page_size)

    def cancel_backfill(
        self, backfill_id: str, *, timeout: float | None = None
    ) -> run_pb2.Backfill:
        """Stop a backfill and cancel its unfinished runs; it in its final state."""
        request = pb.CancelBackfillRequest(backfill_id=backfill_id)
        return self._call(self.stub.CancelBackfill, request, timeout).backfill

    # -- connections and catalogue ----------------------------------------------

    def list_connections(
        self,
        *,
        limit: int = 0,
        page_size: int = req.DEFAULT_PAGE_SIZE,
        timeout: float | None = None,
    ) -> Iterator[connection_pb2.Connection]:
        """The connections configured on the connector service, without secrets."""

        def fetch(size: int, token: str) -> tuple[Sequence[connection_pb2.Connection], str]:
            request = pb.ListConnectionsRequest(page_size=size, page_token=token)
            response = self._call(self.stub.ListConnections, request, timeout)
            return response.connections, response.next_page_token

        return self._paged(fetch, limit, page_size)

    def test_connection(
        self, name: str, *, timeout: float | None = None
    ) -> pb.TestConnectionResponse:
        """Check a configured connection: ok, message, reason and latency."""
        request = pb.TestConnectionRequest(name=name)
        return self._call(self.stub.TestConnection, request, timeout)

    def describe_source(
        self, source: step_pb2.SourceSpec | Mapping[str, Any], *, timeout: float | None = None
    ) -> pb.DescribeSourceResponse:
        """The schema a source (a ``SourceSpec`` or its JSON mapping) would produce."""
        return self._call(self.stub.DescribeSource, req.describe_source(source), timeout)

    def list_transform_types(self, *, timeout: float | None = None) -> list[pb.TransformTypeInfo]:
        """Every transform kind the executors run, by name."""
        request = pb.ListTransformTypesRequest()
        return list(self._call(self.stub.ListTransformTypes, request, timeout).transform_types)

    def get_metrics(self, *, timeout: float | None = None) -> pb.GetMetricsResponse:
        """Platform counters: pipelines, runs and stages by state, data moved."""
        return self._call(self.stub.GetMetrics, pb.GetMetricsRequest(), timeout)

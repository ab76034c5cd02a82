"""A thin synchronous client of ``SchedulerService``: one channel, a deadline on every call."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TypeVar

import grpc

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

    def list_pipelines(self) -> list[pipeline_pb2.Pipeline]:
        """The latest version of every pipeline, by name (all pages)."""

        def page(token: str, size: int) -> tuple[Sequence[pipeline_pb2.Pipeline], str]:
            request = scheduler_service_pb2.ListPipelinesRequest(page_size=size, page_token=token)
            response = self._stub.ListPipelines(request, timeout=self.timeout)
            return response.pipelines, response.next_page_token

        return _collect(page)

    def run_pipeline(self, name: str, request_id: str = "") -> run_pb2.Run:
        """Start a run of the latest version of a pipeline."""
        request = scheduler_service_pb2.RunPipelineRequest(pipeline=name, request_id=request_id)
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
        self, pipeline: str = "", states: Sequence[int] = (), limit: int = 0
    ) -> list[run_pb2.Run]:
        """Runs, newest first, filtered by pipeline and states; all pages unless ``limit``."""

        def page(token: str, size: int) -> tuple[Sequence[run_pb2.Run], str]:
            request = scheduler_service_pb2.ListRunsRequest(
                pipeline=pipeline, states=states, page_size=size, page_token=token
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

"""The connector service's Prometheus metrics: rows and bytes read and written, by
connection type.

Taken at the edge (:class:`MeteredConnectorServicer`) from the streams' own
completion frames, whose totals the protocol already checks: a read counts once
its completion frame is sent, a write once it committed. Per frame the cost is
one ``WhichOneof``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from datadog_platform.api.common.v1 import arrow_pb2, step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.connector.servicer import ConnectorServicer
from datadog_platform.core.arrow_frames import frame_kind
from datadog_platform.core.metrics import CounterChild, LoopCounter

ROWS = LoopCounter(
    "datadog_connector_rows_total",
    "Rows streamed by completed reads and committed writes, by operation and connection type.",
    ("operation", "type"),
)
BYTES = LoopCounter(
    "datadog_connector_bytes_total",
    "Arrow IPC bytes streamed by completed reads and committed writes, by operation and "
    "connection type.",
    ("operation", "type"),
)

# (operation, type) -> (rows child, bytes child); types are the registered ones.
_CHILDREN: dict[tuple[str, str], tuple[CounterChild, CounterChild]] = {}


def _count(operation: str, type_name: str, rows: int, nbytes: int) -> None:
    children = _CHILDREN.get((operation, type_name))
    if children is None:
        children = (ROWS.labels(operation, type_name), BYTES.labels(operation, type_name))
        _CHILDREN[(operation, type_name)] = children
    rows_child, bytes_child = children
    rows_child.inc(rows)
    bytes_child.inc(nbytes)


class MeteredConnectorServicer(ConnectorServicer):
    """The connector servicer, with the data of every read and write counted."""

    async def Read(
        self, request: pb.ReadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReadResponse | bytes]:
        """The read stream, as the plain servicer sends it."""
        async with aclosing(super().Read(request, context)) as responses:
            async for response in responses:
                # bytes are pre-encoded record batches; totals come with "complete".
                if type(response) is not bytes and response.WhichOneof("frame") == "complete":
                    done = response.complete
                    _count("read", self._type_of_source(request), done.total_rows, done.total_bytes)
                yield response

    async def Write(
        self, request_iterator: AsyncIterator[pb.WriteRequest], context: grpc.aio.ServicerContext
    ) -> pb.WriteResponse:
        """The write, as the plain servicer commits it."""
        seen = _WriteFrames(request_iterator)
        response = await super().Write(seen.frames(), context)
        if seen.complete is not None and seen.sink is not None:
            _count(
                "write",
                self._type_of_sink(seen.sink),
                seen.complete.total_rows,
                seen.complete.total_bytes,
            )
        return response

    def _type_of_source(self, request: pb.ReadRequest) -> str:
        try:
            connection, _ = self.live.current.source_connection(request.source)
        except Exception:
            return "unknown"  # e.g. the config changed under the stream
        return connection.type

    def _type_of_sink(self, sink: step_pb2.SinkSpec) -> str:
        try:
            connection, _ = self.live.current.sink_connection(sink)
        except Exception:
            return "unknown"
        return connection.type


class _WriteFrames:
    """Passes a write's frames through, noting its sink and its completion frame."""

    def __init__(self, frames: AsyncIterator[pb.WriteRequest]) -> None:
        self._frames = frames
        self.sink: step_pb2.SinkSpec | None = None
        self.complete: arrow_pb2.StreamComplete | None = None

    async def frames(self) -> AsyncIterator[pb.WriteRequest]:
        async for frame in self._frames:
            kind = frame_kind(frame)
            if kind == "header":
                self.sink = frame.header.sink
            elif kind == "complete":
                self.complete = frame.complete
            yield frame

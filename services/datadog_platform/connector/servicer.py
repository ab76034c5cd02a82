"""ConnectorService over gRPC: translates protobuf frames to and from the file connector.

Blocking work (path resolution, parsing, encoding, writing) runs off the event loop,
one ``asyncio.to_thread`` per batch; cancellation lands between batches. Errors are
raised as :class:`DomainError` and mapped to statuses by the shared interceptor, also
after a stream has started.

Error reasons raised here (besides those of ``files`` and ``config``):

- ``REQUIRED_FIELD_MISSING`` (INVALID_ARGUMENT): no ``source.file`` / ``header.sink.file``,
  or an empty ``header.idempotency_key``.
- ``UNKNOWN_FILE_FORMAT`` (INVALID_ARGUMENT): a format enum value this server does not know.
- ``UNSUPPORTED_WRITE_MODE`` (INVALID_ARGUMENT): a write mode this server does not know.
- ``ARROW_STREAM_PROTOCOL`` (INVALID_ARGUMENT): write frames out of order, or undecodable.
- ``ARROW_STREAM_INCOMPLETE`` / ``ARROW_STREAM_MISMATCH`` (UNAVAILABLE): a write stream
  that ended without its completion frame, or whose totals disagree; nothing is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc
import pyarrow as pa

from datadog_platform.api.common.v1 import arrow_pb2, connection_pb2, step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.connector.config import ConnectorConfig
from datadog_platform.connector.files import (
    AtomicFileWriter,
    FileConnection,
    FileFormat,
    FileReader,
    FileRef,
    infer_format,
)
from datadog_platform.core.arrow_frames import (
    StreamCounter,
    decode_batch,
    decode_schema,
    encode_batch,
    encode_schema,
    incomplete_stream_error,
    protocol_error,
)
from datadog_platform.core.errors import DomainError, FieldViolation, invalid_argument
from datadog_platform.core.logging import get_logger

SERVICE_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["ConnectorService"]

_FORMATS: dict[int, FileFormat | None] = {
    step_pb2.FILE_FORMAT_UNSPECIFIED: None,
    step_pb2.FILE_FORMAT_CSV: FileFormat.CSV,
    step_pb2.FILE_FORMAT_PARQUET: FileFormat.PARQUET,
}
# UNSPECIFIED means the default, OVERWRITE; it is the only mode so far.
_WRITE_MODES = {step_pb2.WRITE_MODE_UNSPECIFIED, step_pb2.WRITE_MODE_OVERWRITE}

log = get_logger(__name__)

T = TypeVar("T")


class ConnectorServicer(pb_grpc.ConnectorServiceServicer):
    """The ConnectorService RPCs over the configured connections."""

    def __init__(self, config: ConnectorConfig) -> None:
        self._config = config

    async def ListConnections(
        self, request: pb.ListConnectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConnectionsResponse:
        page = self._config.list_page(request.page_size, request.page_token)
        return pb.ListConnectionsResponse(
            connections=[_connection_message(c) for c in page.connections],
            next_page_token=page.next_page_token,
        )

    async def Read(
        self, request: pb.ReadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReadResponse]:
        if request.source.WhichOneof("kind") != "file":
            raise _required("source.file", "a source with a file")
        source = request.source.file
        connection = self._config.file_connection(source.connection)
        ref = FileRef(source.path, _file_format(source.format, "source.file"), "source.file")
        reader = await _acquire(lambda: connection.open_reader(ref), FileReader.close)
        try:
            yield pb.ReadResponse(schema=encode_schema(reader.schema))
            counter = StreamCounter()
            while (response := await asyncio.to_thread(_next_frame, reader, counter)) is not None:
                yield response
            yield pb.ReadResponse(complete=counter.complete())
        finally:
            await _cleanup(reader.close)

    async def Write(
        self, request_iterator: AsyncIterator[pb.WriteRequest], context: grpc.aio.ServicerContext
    ) -> pb.WriteResponse:
        frames = aiter(request_iterator)
        first = await anext(frames, None)
        if first is None or first.WhichOneof("frame") != "header":
            raise protocol_error("the first frame of a write stream must be the header")
        header = first.header
        connection, ref = self._sink_of(header)
        # Refuse a bad sink before any data is sent.
        await asyncio.to_thread(connection.resolve, ref)
        infer_format(ref)

        second = await anext(frames, None)
        if second is None or second.WhichOneof("frame") != "schema":
            raise protocol_error("the second frame of a write stream must be the schema")
        schema = decode_schema(second.schema)
        writer = await _acquire(lambda: connection.open_writer(ref, schema), AtomicFileWriter.abort)
        try:
            counter = StreamCounter()
            async for frame in frames:
                kind = frame.WhichOneof("frame")
                if kind == "record_batch":
                    await asyncio.to_thread(
                        _write_frame, writer, frame.record_batch, schema, counter
                    )
                elif kind == "complete":
                    counter.check(frame.complete)
                    target = await asyncio.to_thread(writer.commit)
                    log.info(
                        "write.committed",
                        connection=connection.name,
                        path=ref.path,
                        rows=writer.rows_written,
                        idempotency_key=header.idempotency_key,
                    )
                    return pb.WriteResponse(
                        rows_written=writer.rows_written, location=f"file://{target}"
                    )
                else:
                    raise protocol_error(
                        f"unexpected {kind or 'empty'} frame after the schema; "
                        "expected record_batch or complete"
                    )
            raise incomplete_stream_error(counter)
        finally:
            if writer.state == "open":
                await _cleanup(writer.abort)

    def _sink_of(self, header: pb.WriteHeader) -> tuple[FileConnection, FileRef]:
        """The connection and file a write header names, validated."""
        if not header.idempotency_key:
            raise _required("header.idempotency_key", "an idempotency key")
        if header.sink.WhichOneof("kind") != "file":
            raise _required("header.sink.file", "a sink with a file")
        sink = header.sink.file
        if sink.mode not in _WRITE_MODES:
            raise invalid_argument(
                "UNSUPPORTED_WRITE_MODE",
                f"write mode {sink.mode} is not supported; use WRITE_MODE_OVERWRITE",
                [FieldViolation("header.sink.file.mode", "unsupported value")],
            )
        field = "header.sink.file"
        connection = self._config.file_connection(sink.connection)
        return connection, FileRef(sink.path, _file_format(sink.format, field), field)


def _connection_message(connection: FileConnection) -> connection_pb2.Connection:
    return connection_pb2.Connection(
        name=connection.name,
        type=connection.type,
        description=connection.description,
        options=connection.options(),
    )


def _required(field: str, what: str) -> DomainError:
    return invalid_argument(
        "REQUIRED_FIELD_MISSING",
        f"{field} is required: give {what}",
        [FieldViolation(field, "required")],
    )


def _file_format(value: int, field: str) -> FileFormat | None:
    try:
        return _FORMATS[value]
    except KeyError:
        raise invalid_argument(
            "UNKNOWN_FILE_FORMAT",
            f"{field}.format has unknown value {value}",
            [FieldViolation(f"{field}.format", "unknown value")],
        ) from None


def _next_frame(reader: FileReader, counter: StreamCounter) -> pb.ReadResponse | None:
    """Read, encode and count the next batch (blocking; runs in a worker thread)."""
    batch = reader.read_next()
    if batch is None:
        return None
    response = pb.ReadResponse()
    encode_batch(batch, counter, into=response.record_batch)
    return response


def _write_frame(
    writer: AtomicFileWriter,
    frame: arrow_pb2.ArrowRecordBatch,
    schema: pa.Schema,
    counter: StreamCounter,
) -> None:
    """Decode one frame and append it (blocking; runs in a worker thread)."""
    writer.write(decode_batch(frame, schema, counter))


async def _acquire(open_: Callable[[], T], release: Callable[[T], None]) -> T:
    """Open a resource in a worker thread; if the call is cancelled meanwhile, release it.

    A cancelled ``to_thread`` leaves its thread running; without this, a file opened
    (or a temporary file created) just as the client cancels would leak.
    """
    future = asyncio.ensure_future(asyncio.to_thread(open_))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        loop = asyncio.get_running_loop()

        def release_when_opened(done: asyncio.Future[T]) -> None:
            if not done.cancelled() and done.exception() is None:
                loop.run_in_executor(None, release, done.result())

        future.add_done_callback(release_when_opened)
        raise


async def _cleanup(release: Callable[[], None]) -> None:
    """Run a blocking cleanup off the loop, to its end even if the call is cancelled."""
    await asyncio.shield(asyncio.to_thread(release))

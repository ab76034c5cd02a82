"""The stage's data plane over gRPC: ``Read`` and ``Write`` streams of the connector service.

Frames follow DESIGN.md §3: schema once, record batches, then a completion frame
whose totals are checked, so a cut stream is never taken for the whole data. A
write only sends its completion frame once every batch went through; any failure
or cancellation before that cancels the call, and the connector commits nothing.
Connector errors keep their ``ErrorInfo`` reason; errors gRPC raises by itself
get one of this module's reasons.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager

import grpc
import pyarrow as pa
import structlog

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc
from datadog_platform.core.arrow_frames import (
    TARGET_BATCH_BYTES,
    StreamCounter,
    decode_batch,
    decode_schema,
    encode_batch,
    encode_schema,
    incomplete_stream_error,
    protocol_error,
    split_by_bytes,
)
from datadog_platform.core.errors import DomainError, ErrorCode, unavailable
from datadog_platform.core.interceptors import forwarded_metadata
from datadog_platform.core.status import details_of, domain_error_of
from datadog_platform.executor.stage import SourceStream, WriteResult

# Reasons for failures gRPC reports without an ErrorInfo from the connector.
CONNECTOR_UNAVAILABLE = "CONNECTOR_UNAVAILABLE"
CONNECTOR_DEADLINE_EXCEEDED = "CONNECTOR_DEADLINE_EXCEEDED"


class GrpcDataPlane:
    """Implements ``stage.DataPlane`` with the connector service's streams."""

    def __init__(self, channel: grpc.aio.Channel, address: str, timeout: float) -> None:
        self._stub = connector_service_pb2_grpc.ConnectorServiceStub(channel)
        self._address = address
        self._timeout = timeout

    async def describe(self, source: step_pb2.SourceSpec) -> pa.Schema:
        """The schema a full ``Read`` of ``source`` streams (``DescribeSource``)."""
        try:
            response = await self._stub.DescribeSource(
                pb.DescribeSourceRequest(source=source),
                timeout=self._timeout,
                metadata=_correlation(),
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        return decode_schema(response.schema)

    @asynccontextmanager
    async def read(
        self, source: step_pb2.SourceSpec, columns: Sequence[str] = ()
    ) -> AsyncIterator[SourceStream]:
        """Open a ``Read`` stream (of ``columns`` only, in that order; all when empty) and
        decode its schema; leaving cancels the call."""
        call = self._stub.Read(
            pb.ReadRequest(source=source, columns=list(columns)),
            timeout=self._timeout,
            metadata=_correlation(),
        )
        try:
            first = await self._next(call)
            if first is grpc.aio.EOF:
                raise protocol_error("the connector's read stream ended before its schema frame")
            if first.WhichOneof("frame") != "schema":
                raise protocol_error(
                    f"the connector's read stream began with a {first.WhichOneof('frame')} "
                    "frame instead of its schema"
                )
            schema = decode_schema(first.schema)
            yield SourceStream(schema, self._batches(call, schema))
        finally:
            call.cancel()  # a no-op once the stream has ended

    async def write(
        self,
        sink: step_pb2.SinkSpec,
        idempotency_key: str,
        schema: pa.Schema,
        batches: AsyncIterator[pa.RecordBatch],
    ) -> WriteResult:
        """Stream ``batches`` to a ``Write`` call; commit by completing it once they end."""
        call = self._stub.Write(timeout=self._timeout, metadata=_correlation())
        ended = _EndStatus(call)
        try:
            header = pb.WriteHeader(sink=sink, idempotency_key=idempotency_key)
            await self._send(call, pb.WriteRequest(header=header))
            await self._send(call, pb.WriteRequest(schema=encode_schema(schema)))
            counter = StreamCounter()
            # Exceptions of ``batches`` (a failed transform, a broken read) propagate
            # as they are; the ``finally`` cancels the call so nothing is committed.
            async with aclosing(_rebatch(batches)) as sized:
                async for batch in sized:
                    request = pb.WriteRequest()
                    encode_batch(batch, counter, into=request.record_batch)
                    await self._send(call, request)
            await self._send(call, pb.WriteRequest(complete=counter.complete()))
            await self._send(call, None)
            response: pb.WriteResponse = await call
        except grpc.aio.AioRpcError as exc:
            raise self._error(ended.real_error(exc)) from None
        finally:
            if not call.done():
                call.cancel()
        return WriteResult(rows_written=response.rows_written, location=response.location)

    async def _batches(
        self, call: grpc.aio.UnaryStreamCall, schema: pa.Schema
    ) -> AsyncIterator[pa.RecordBatch]:
        counter = StreamCounter()
        while True:
            frame = await self._next(call)
            if frame is grpc.aio.EOF:
                raise incomplete_stream_error(counter)
            kind = frame.WhichOneof("frame")
            if kind == "record_batch":
                yield decode_batch(frame.record_batch, schema, counter)
            elif kind == "complete":
                counter.check(frame.complete)
                if await self._next(call) is not grpc.aio.EOF:
                    raise protocol_error("the connector sent frames after the completion frame")
                return
            else:
                raise protocol_error(f"unexpected {kind} frame in the connector's read stream")

    async def _next(self, call: grpc.aio.UnaryStreamCall) -> pb.ReadResponse:
        try:
            return await call.read()
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None

    async def _send(self, call: grpc.aio.StreamUnaryCall, request: pb.WriteRequest | None) -> None:
        """Send one frame, or half-close the stream when ``request`` is None."""
        try:
            if request is None:
                await call.done_writing()
            else:
                await call.write(request)
        except Exception:
            # A failed send tells little: when the connector has already ended the
            # call (e.g. it refused the header), gRPC reports "Internal error from
            # Core" or an invalid state. The call's own status says why; awaiting
            # the call waits for it and raises it.
            await call
            raise protocol_error(
                "the connector ended the write before its completion frame"
            ) from None

    def _error(self, exc: grpc.aio.AioRpcError) -> DomainError:
        """The connector's error, or a reason of ours when gRPC itself failed the call."""
        details = details_of(exc)
        if details.reason:
            return domain_error_of(exc)
        if details.code == grpc.StatusCode.UNAVAILABLE:
            return unavailable(
                CONNECTOR_UNAVAILABLE,
                f"the connector service at {self._address} is unavailable: {details.message}",
            )
        if details.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DomainError(
                ErrorCode.DEADLINE_EXCEEDED,
                CONNECTOR_DEADLINE_EXCEEDED,
                f"the connector call did not finish within the stage timeout of {self._timeout:g}s",
            )
        return domain_error_of(exc)


def _correlation() -> tuple[tuple[str, str], ...]:
    """The stage attempt's request id and run/stage/attempt ids (bound in the log context
    by the incoming ExecuteTask call) as headers, so the connector's logs carry them."""
    return forwarded_metadata(structlog.contextvars.get_contextvars())


# What gRPC reports when a send fails on a call that has already ended.
_SYNTHETIC_DETAILS = "Internal error from Core"
_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


class _EndStatus:
    """Keeps the first status a call ends with, to undo grpc/grpc#36066.

    When the connector ends a ``Write`` early (it refused the header, or the sink
    failed) while a frame is in flight, grpc.aio overwrites the connector's status
    with a synthetic INTERNAL "Internal error from Core" if it processes the failed
    send after the status. The done callback runs on the first status set, so it
    sees the connector's. Reading it needs grpc's private ``_cython_call._status``;
    without it (another grpc version) this degrades to the reported error.
    """

    def __init__(self, call: grpc.aio.StreamUnaryCall) -> None:
        self._first: grpc.aio.AioRpcError | None = None
        call.add_done_callback(self._on_done)

    def _on_done(self, call: grpc.aio.Call) -> None:
        status = getattr(getattr(call, "_cython_call", None), "_status", None)
        if status is None:
            return
        code = _STATUS_CODES.get(status.code(), grpc.StatusCode.UNKNOWN)
        if code == grpc.StatusCode.OK:
            return
        self._first = grpc.aio.AioRpcError(
            code=code,
            initial_metadata=grpc.aio.Metadata(),
            trailing_metadata=grpc.aio.Metadata(*(status.trailing_metadata() or ())),
            details=status.details(),
            debug_error_string=status.debug_error_string(),
        )

    def real_error(self, reported: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
        """``reported``, unless it is the synthetic error hiding the connector's."""
        if self._first is not None and _is_synthetic(reported) and not _is_synthetic(self._first):
            return self._first
        return reported


def _is_synthetic(error: grpc.aio.AioRpcError) -> bool:
    return error.code() == grpc.StatusCode.INTERNAL and error.details() == _SYNTHETIC_DETAILS


async def _rebatch(
    batches: AsyncIterator[pa.RecordBatch], target_bytes: int = TARGET_BATCH_BYTES
) -> AsyncIterator[pa.RecordBatch]:
    """Batches near ``target_bytes``: small ones (a selective filter) coalesced, big ones split.

    Keeps messages in the measured sweet spot and spares the sink tiny row groups;
    at most about ``target_bytes`` are held back.
    """
    pending: list[pa.RecordBatch] = []
    pending_bytes = 0
    async for batch in batches:
        if batch.num_rows == 0:
            continue
        if batch.nbytes >= target_bytes:
            if pending:
                yield _concat(pending)
                pending, pending_bytes = [], 0
            for piece in split_by_bytes([batch], target_bytes):
                yield piece
            continue
        pending.append(batch)
        pending_bytes += batch.nbytes
        if pending_bytes >= target_bytes:
            yield _concat(pending)
            pending, pending_bytes = [], 0
    if pending:
        yield _concat(pending)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)

"""The stage's data plane over gRPC: ``Read`` and ``Write`` streams of the connector service.

Frames follow DESIGN.md §3: schema once, record batches, then a completion frame
whose totals are checked, so a cut stream is never taken for the whole data. A
write only sends its completion frame once every batch went through; any failure
or cancellation before that cancels the call, and the connector commits nothing.
Connector errors keep their ``ErrorInfo`` reason; errors gRPC raises by itself
get one of this module's reasons.

A read is planned (``PlanRead``) into up to ``read_splits`` tickets, whose ``Read``
streams run concurrently over the one channel and are handed on in ticket order,
each read ahead by a bounded number of batches: the connector decodes splits in
parallel while the order (which limit and dedupe by input order rely on) and the
memory stay as with one stream. One ticket (a source that cannot be split) is read
with one plain ``Read``.

With ``parquet_passthrough`` the reads accept Parquet frames: the connector may send
a Parquet file's stored column chunks, which are decoded here, on one thread per
stream (``executor.stored_parquet``). For TPC-H Q1 that is 64 MB on the wire instead
of 470 MB, and the connector's decoding and encoding CPU gone.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    BatchFrame,
    StreamCounter,
    batch_frames,
    decode_batch,
    decode_schema,
    encode_schema,
    frame_kind,
    incomplete_stream_error,
    pass_encoded,
    protocol_error,
    split_by_bytes,
)
from datadog_platform.core.connector_frames import (
    WRITE_BATCH_FIELD,
    RowGroupFrame,
    parse_read_response,
)
from datadog_platform.core.errors import DomainError, ErrorCode, unavailable
from datadog_platform.core.interceptors import forwarded_metadata
from datadog_platform.core.status import details_of, domain_error_of
from datadog_platform.executor.parquet_spool import ParquetSpool
from datadog_platform.executor.stage import SourceStream, WriteResult
from datadog_platform.executor.stored_parquet import StoredParquetStream

#: Tickets a read is split into at most (``--read-splits``); 1 reads every source whole.
DEFAULT_READ_SPLITS = 2
#: Batches (~2 MiB each) decoded ahead per split while an earlier split is consumed.
DEFAULT_READ_AHEAD = 4

# Reasons for failures gRPC reports without an ErrorInfo from the connector.
CONNECTOR_UNAVAILABLE = "CONNECTOR_UNAVAILABLE"
CONNECTOR_DEADLINE_EXCEEDED = "CONNECTOR_DEADLINE_EXCEEDED"


class GrpcDataPlane:
    """Implements ``stage.DataPlane`` with the connector service's streams."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        address: str,
        timeout: float,
        read_splits: int = DEFAULT_READ_SPLITS,
        read_ahead: int = DEFAULT_READ_AHEAD,
        parquet_passthrough: bool = True,
    ) -> None:
        if read_splits < 1 or read_ahead < 1:
            raise ValueError(
                f"read_splits and read_ahead must be >= 1: {read_splits}, {read_ahead}"
            )
        self._stub = connector_service_pb2_grpc.ConnectorServiceStub(channel)
        # Record batches skip protobuf's copies: read with our own frame parser,
        # written as frames encoded off the loop (arrow_frames).
        self._read = channel.unary_stream(
            f"/{_SERVICE}/Read",
            request_serializer=pb.ReadRequest.SerializeToString,
            response_deserializer=parse_read_response,
        )
        self._write = channel.stream_unary(
            f"/{_SERVICE}/Write",
            request_serializer=pass_encoded(pb.WriteRequest.SerializeToString),
            response_deserializer=pb.WriteResponse.FromString,
        )
        self._address = address
        self._timeout = timeout
        self._read_splits = read_splits
        self._read_ahead = read_ahead
        self._accept_parquet = parquet_passthrough

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
        self,
        source: step_pb2.SourceSpec,
        columns: Sequence[str] = (),
        *,
        dictionary_strings: bool = False,
        spool: ParquetSpool | None = None,
    ) -> AsyncIterator[SourceStream]:
        """Read ``source`` (``columns`` only, in that order; all when empty): its schema,
        then its batches in source order; leaving cancels every call.

        With ``dictionary_strings``, string columns may come as Arrow dictionaries of
        strings (Parquet stored with a dictionary and sent as stored). With ``spool``,
        Parquet sent as stored goes to the spool, not to the batches, as long as the
        spool takes it (``parquet_spool``); the read is then one stream, unsplit.
        """
        tickets: Sequence[bytes] = ()
        if self._read_splits > 1 and spool is None:
            tickets = await self._plan(source, columns)
        if len(tickets) <= 1:
            # Unsplit: the plain Read (a single ticket reads the same rows).
            async with self._open(source, columns, b"") as (schema, call):
                batches = self._batches(call, schema, dictionary_strings, spool)
                yield SourceStream(schema, batches)
            return
        async with contextlib.AsyncExitStack() as stack:
            opened = await asyncio.gather(
                *(stack.enter_async_context(self._open(source, columns, t)) for t in tickets),
                return_exceptions=True,
            )
            failed = [r for r in opened if isinstance(r, BaseException)]
            if failed:
                raise failed[0]  # the stack cancels the calls that did open
            schema = opened[0][0]
            for other, _ in opened[1:]:
                if not other.equals(schema):
                    raise protocol_error(
                        "the connector's split read streams disagree on the schema: "
                        f"{schema} vs {other}"
                    )
            calls = [call for _, call in opened]
            splits = _OrderedSplits(self, calls, schema, self._read_ahead, dictionary_strings)
            async with splits as batches:
                yield SourceStream(schema, batches)

    async def _plan(self, source: step_pb2.SourceSpec, columns: Sequence[str]) -> list[bytes]:
        """The tickets of a split read; none when the connector cannot plan this source."""
        try:
            plan = await self._stub.PlanRead(
                pb.PlanReadRequest(
                    source=source,
                    max_splits=self._read_splits,
                    columns=list(columns),
                    accept_parquet=self._accept_parquet,
                ),
                timeout=self._timeout,
                metadata=_correlation(),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return []  # an older connector: read the source whole
            raise self._error(exc) from None
        return [ticket.ticket for ticket in plan.tickets]

    @asynccontextmanager
    async def _open(
        self, source: step_pb2.SourceSpec, columns: Sequence[str], ticket: bytes
    ) -> AsyncIterator[tuple[pa.Schema, grpc.aio.UnaryStreamCall]]:
        """A ``Read`` call (of one ticket, or the whole source when empty) past its
        schema frame; leaving cancels it."""
        call = self._read(
            pb.ReadRequest(
                source=source,
                columns=list(columns),
                ticket=ticket,
                accept_parquet=self._accept_parquet,
            ),
            timeout=self._timeout,
            metadata=_correlation(),
        )
        try:
            first = await self._next(call)
            if first is grpc.aio.EOF:
                raise protocol_error("the connector's read stream ended before its schema frame")
            if (kind := frame_kind(first)) != "schema":
                raise protocol_error(
                    f"the connector's read stream began with a {kind} frame instead of its schema"
                )
            yield decode_schema(first.schema), call
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
        call = self._write(timeout=self._timeout, metadata=_correlation())
        ended = _EndStatus(call)
        try:
            header = pb.WriteHeader(sink=sink, idempotency_key=idempotency_key)
            await self._send(call, pb.WriteRequest(header=header))
            await self._send(call, pb.WriteRequest(schema=encode_schema(schema)))
            counter = StreamCounter()
            # Exceptions of ``batches`` (a failed transform, a broken read) propagate
            # as they are; the ``finally`` cancels the call so nothing is committed.
            frames = batch_frames(_rebatch(batches), counter, WRITE_BATCH_FIELD)
            async with aclosing(frames):
                async for frame in frames:
                    await self._send(call, frame)
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
        self,
        call: grpc.aio.UnaryStreamCall,
        schema: pa.Schema,
        dictionary_strings: bool,
        spool: ParquetSpool | None = None,
    ) -> AsyncIterator[pa.RecordBatch]:
        counter = StreamCounter()
        stored = StoredParquetStream(schema, dictionaries=dictionary_strings)
        if spool is not None and not spool.accepts(schema):
            spool = None
        try:
            while True:
                frame = await self._next(call)
                if frame is grpc.aio.EOF:
                    raise incomplete_stream_error(counter)
                row_group: RowGroupFrame | None = None
                if type(frame) is RowGroupFrame:
                    row_group = frame
                elif type(frame) is not BatchFrame:
                    kind = frame.WhichOneof("frame")
                    if kind == "parquet_row_group":
                        group = frame.parquet_row_group
                        row_group = RowGroupFrame(group, memoryview(group.data))
                    elif kind == "parquet_file":
                        opener = stored if spool is None else spool
                        await opener.open_file(frame.parquet_file)
                        continue
                    elif kind == "complete":
                        counter.check(frame.complete)
                        if await self._next(call) is not grpc.aio.EOF:
                            raise protocol_error(
                                "the connector sent frames after the completion frame"
                            )
                        if spool is not None and not spool.seal():
                            async for batch in spool.drain(stored):
                                yield batch
                        return
                    elif kind != "record_batch":
                        raise protocol_error(
                            f"unexpected {kind} frame in the connector's read stream"
                        )
                if spool is not None:
                    if row_group is not None and await spool.write(
                        row_group.header, row_group.data
                    ):
                        counter.add(row_group.header.num_rows, len(row_group.data))
                        continue
                    # Not a row group the spool takes: what it holds comes first, as batches.
                    async for batch in spool.drain(stored):
                        yield batch
                    spool = None
                if row_group is not None:
                    async for batch in stored.batches(row_group, counter):
                        yield batch
                    continue
                record = frame if type(frame) is BatchFrame else frame.record_batch
                yield decode_batch(record, schema, counter)
        finally:
            stored.close()

    async def _next(
        self, call: grpc.aio.UnaryStreamCall
    ) -> pb.ReadResponse | BatchFrame | RowGroupFrame:
        try:
            return await call.read()
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None

    async def _send(
        self, call: grpc.aio.StreamUnaryCall, request: pb.WriteRequest | bytes | None
    ) -> None:
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


_SERVICE = pb.DESCRIPTOR.services_by_name["ConnectorService"].full_name


class _OrderedSplits:
    """The batches of several ``Read`` streams, stream after stream, each read ahead.

    One task per stream decodes into a queue of at most ``read_ahead`` batches, so
    later splits arrive while earlier ones are consumed and memory stays bounded.
    A stream's failure surfaces when the consumer reaches that stream, as it would
    reading the splits one after the other. Leaving cancels every task and call.
    """

    def __init__(
        self,
        plane: GrpcDataPlane,
        calls: Sequence[grpc.aio.UnaryStreamCall],
        schema: pa.Schema,
        read_ahead: int,
        dictionary_strings: bool,
    ) -> None:
        self._plane = plane
        self._calls = calls
        self._schema = schema
        self._dictionary_strings = dictionary_strings
        self._queues: list[asyncio.Queue[pa.RecordBatch | BaseException | None]] = [
            asyncio.Queue(read_ahead) for _ in calls
        ]
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> AsyncIterator[pa.RecordBatch]:
        self._tasks = [
            asyncio.create_task(self._fill(call, queue))
            for call, queue in zip(self._calls, self._queues, strict=True)
        ]
        return self._batches()

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        for call in self._calls:
            call.cancel()
        # Wait for the tasks so none outlives the read (they end at once when cancelled).
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _fill(
        self,
        call: grpc.aio.UnaryStreamCall,
        queue: asyncio.Queue[pa.RecordBatch | BaseException | None],
    ) -> None:
        try:
            batches = self._plane._batches(call, self._schema, self._dictionary_strings)
            async for batch in batches:
                await queue.put(batch)
        except Exception as exc:  # handed to the consumer, in order
            await queue.put(exc)
            return
        await queue.put(None)

    async def _batches(self) -> AsyncIterator[pa.RecordBatch]:
        for queue in self._queues:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item


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

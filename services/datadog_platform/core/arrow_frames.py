"""Arrow record batches as stream frames (DESIGN.md §3).

A stream is: one schema frame, any number of record-batch frames, one completion
frame carrying totals. The schema goes once per stream; each batch is an
encapsulated IPC message decoded against it without copying the body again.
A stream that ends without its completion frame, or whose totals disagree, is
rejected, so a dropped stream is never taken for the end of the data.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import pyarrow as pa

from datadog_platform.api.common.v1 import arrow_pb2
from datadog_platform.core.errors import DomainError, ErrorCode, invalid_argument

M = TypeVar("M")

# Bytes per batch and per stream message. ~1 MiB was the sweet spot while protobuf
# copied every body and glibc mapped every message (DESIGN.md §3). With frames encoded
# and parsed in place and the allocator tuned (core.allocator), TPC-H Q1 SF1 end to end
# measured 1.8-2.0 s at 1 MiB, 1.6-1.8 s at 2 MiB, 1.4-1.5 s at 4 and 8 MiB and 2.3 s
# at 16 MiB; but from 4 MiB on, the executor's RSS while streaming grew ~50 MiB more
# than at 1-2 MiB (107-151 vs 59-83 MiB over its baseline), too close to the memory
# bound the tests hold it to. 2 MiB keeps the memory of 1 MiB and part of the speed.
TARGET_BATCH_BYTES = 2 << 20


def encode_schema(schema: pa.Schema) -> arrow_pb2.ArrowSchema:
    """The schema frame of a stream."""
    return arrow_pb2.ArrowSchema(ipc_message=schema.serialize().to_pybytes())


def decode_schema(frame: arrow_pb2.ArrowSchema) -> pa.Schema:
    """The schema carried by a schema frame; a protocol error if it does not decode."""
    try:
        return pa.ipc.read_schema(pa.py_buffer(frame.ipc_message))
    except (pa.ArrowException, EOFError, OSError, ValueError) as exc:
        raise protocol_error(f"the schema frame cannot be decoded: {exc}") from None


def encode_batch(
    batch: pa.RecordBatch,
    counter: StreamCounter | None = None,
    into: arrow_pb2.ArrowRecordBatch | None = None,
) -> arrow_pb2.ArrowRecordBatch:
    """One record-batch frame, counted in ``counter``.

    Pass ``into`` (e.g. ``response.record_batch``) to fill the frame in place:
    building it apart and nesting it would copy the body once more.
    """
    frame = into if into is not None else arrow_pb2.ArrowRecordBatch()
    body = batch.serialize().to_pybytes()
    frame.num_rows = batch.num_rows
    frame.ipc_message = body
    if counter is not None:
        counter.add(batch.num_rows, len(body))
    return frame


def encode_batch_frame(batch: pa.RecordBatch, field_number: int) -> tuple[bytes, int]:
    """The wire bytes of a stream message whose field ``field_number`` is the
    ``ArrowRecordBatch`` frame of ``batch``: what ``SerializeToString`` of that message
    gives, byte for byte, built with one copy of the body instead of four (to bytes,
    into the message, out of it, into gRPC's buffer); at MiB-sized messages those
    copies held a connector's event loop busy for most of a large read.

    Servers send it as is: their interceptor passes ``bytes`` responses through.
    Returns the frame and the size of its IPC body.
    """
    body = batch.serialize()
    inner = bytearray()
    if batch.num_rows:
        inner += _NUM_ROWS_KEY
        _put_varint(inner, batch.num_rows)
    if body.size:
        inner += _IPC_MESSAGE_KEY
        _put_varint(inner, body.size)
    head = bytearray()
    _put_varint(head, (field_number << 3) | _LENGTH_DELIMITED)
    _put_varint(head, len(inner) + body.size)
    head += inner
    return b"".join((head, body)), body.size


class EncodedFrame(NamedTuple):
    """A pre-encoded frame; ``counted`` ones add ``rows`` and ``nbytes`` to the totals."""

    frame: bytes
    counted: bool
    rows: int = 0
    nbytes: int = 0


async def batch_frames(
    batches: AsyncIterator[Any],
    counter: StreamCounter,
    field_number: int,
    encode_other: Callable[[Any], list[EncodedFrame]] | None = None,
) -> AsyncIterator[bytes]:
    """``batches`` as pre-encoded frames of about ``TARGET_BATCH_BYTES`` each, counted.

    Slicing and encoding run in worker threads, a batch ahead of the caller, so a
    server's event loop only hands finished messages to gRPC while the next batch is
    encoded (and, upstream, the one after it decoded). Items that are not record
    batches are encoded by ``encode_other``.
    """

    def encode(item: Any) -> list[EncodedFrame]:
        if type(item) is not pa.RecordBatch and encode_other is not None:
            return encode_other(item)
        frames = []
        for piece in split_by_bytes([item]):
            frame, ipc_bytes = encode_batch_frame(piece, field_number)
            frames.append(EncodedFrame(frame, True, piece.num_rows, ipc_bytes))
        return frames

    # Counted here, on the caller's side: two batches may be encoded at once.
    async def frames(work: asyncio.Future[list[EncodedFrame]]) -> AsyncIterator[bytes]:
        for encoded in await work:
            if encoded.counted:
                counter.add(encoded.rows, encoded.nbytes)
            yield encoded.frame

    pending: asyncio.Future[list[EncodedFrame]] | None = None
    try:
        async for batch in batches:
            encoded = asyncio.ensure_future(asyncio.to_thread(encode, batch))
            if pending is not None:
                async for frame in frames(pending):
                    yield frame
            pending = encoded
        if pending is not None:
            async for frame in frames(pending):
                yield frame
    finally:
        if pending is not None and not pending.done():
            pending.cancel()


class BatchFrame(NamedTuple):
    """A received record-batch frame whose IPC body is a view into the message bytes."""

    num_rows: int
    ipc_message: memoryview


def parse_frame(data: bytes, field_number: int, message: Callable[[bytes], M]) -> M | BatchFrame:
    """A stream message whose field ``field_number`` is a record-batch frame, parsed
    without copying the body; anything else (other frames, unknown fields) is parsed
    by ``message`` (a generated class's ``FromString``).

    protobuf copies a MiB-sized body twice (parsing, then reading the field), which
    measured ~10% of the executor's event loop on a Parquet scan.
    """
    size = len(data)
    pos = embedded_start(data, field_number)
    if pos is not None:
        num_rows, body = 0, None
        while pos < size:
            tag, pos = _varint(data, pos)
            if tag == _NUM_ROWS_TAG:
                num_rows, pos = _varint(data, pos)
            elif tag == _IPC_MESSAGE_TAG and body is None:
                length, pos = _varint(data, pos)
                if pos + length > size:
                    break
                body = memoryview(data)[pos : pos + length]
                pos += length
            else:
                break
        else:  # every field parsed
            if pos == size and body is not None:
                return BatchFrame(num_rows, body)
    return message(data)


def embedded_start(data: bytes, field_number: int) -> int | None:
    """Where the embedded message begins when ``data`` is exactly one message field
    ``field_number`` (< 16), as a oneof frame is; else None."""
    if field_number < 16 and data and data[0] == (field_number << 3) | _LENGTH_DELIMITED:
        length, pos = _varint(data, 1)
        if pos + length == len(data):
            return pos
    return None


def lift_bytes_field(
    data: bytes, field_number: int, start: int = 0
) -> tuple[bytes, memoryview] | None:
    """The message encoded in ``data[start:]`` without its bytes field ``field_number``,
    and a view of that field's value: the rest is small enough for protobuf to parse
    and the value is kept without a copy. None if the field is missing or repeated,
    or a wire type is unknown."""
    view = memoryview(data)
    rest: list[memoryview] = []
    value: memoryview | None = None
    pos, size = start, len(data)
    while pos < size:
        field_start = pos
        tag, pos = _varint(data, pos)
        wire_type = tag & 7
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == _LENGTH_DELIMITED:
            length, pos = _varint(data, pos)
            if tag >> 3 == field_number:
                if value is not None or pos + length > size:
                    return None
                value = view[pos : pos + length]
                pos += length
                continue
            pos += length
        else:
            return None
        if pos > size:
            return None
        rest.append(view[field_start:pos])
    if value is None:
        return None
    return b"".join(rest), value


def frame_kind(frame: Any) -> str | None:
    """Which frame of its message's ``frame`` oneof ``frame`` is (``BatchFrame`` included)."""
    return "record_batch" if type(frame) is BatchFrame else frame.WhichOneof("frame")


def pass_encoded(serializer: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """``serializer``, except that a message already encoded (``bytes``, e.g. from
    :func:`batch_frames`) goes as is."""

    def serialize(message: Any) -> bytes:
        return message if type(message) is bytes else serializer(message)

    return serialize


def decode_batch(
    frame: arrow_pb2.ArrowRecordBatch | BatchFrame,
    schema: pa.Schema,
    counter: StreamCounter | None = None,
) -> pa.RecordBatch:
    """The record batch of a frame, decoded against the stream's schema and counted.

    A protocol error if it does not decode, is structurally invalid, or holds
    another number of rows than the frame claims.
    """
    # Read the bytes field once: upb copies on every access.
    body = frame.ipc_message
    try:
        batch = pa.ipc.read_record_batch(pa.py_buffer(body), schema)
        # Cheap structural check: a batch built for another schema can decode "fine".
        batch.validate()
    except (pa.ArrowException, EOFError, OSError, ValueError) as exc:
        index = counter.batches if counter is not None else "?"
        raise protocol_error(f"record batch {index} cannot be decoded: {exc}") from None
    if batch.num_rows != frame.num_rows:
        raise protocol_error(
            f"a record batch frame claims {frame.num_rows} rows but holds {batch.num_rows}"
        )
    if counter is not None:
        counter.add(batch.num_rows, len(body))
    return batch


def split_by_bytes(
    batches: Iterable[pa.RecordBatch], target_bytes: int = TARGET_BATCH_BYTES
) -> Iterator[pa.RecordBatch]:
    """Slice batches larger than ``target_bytes`` (zero-copy) so messages stay near it."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        size = batch.nbytes
        if size <= target_bytes * 2:
            yield batch
            continue
        rows_per_slice = max(1, batch.num_rows * target_bytes // size)
        for offset in range(0, batch.num_rows, rows_per_slice):
            yield batch.slice(offset, rows_per_slice)


@dataclass
class StreamCounter:
    """Running totals of a stream, sent or checked in its completion frame."""

    rows: int = 0
    batches: int = 0
    bytes: int = 0

    def add(self, rows: int, nbytes: int) -> None:
        """Count one record batch of ``rows`` rows and ``nbytes`` IPC bytes."""
        self.rows += rows
        self.batches += 1
        self.bytes += nbytes

    def complete(self) -> arrow_pb2.StreamComplete:
        """The completion frame for what was counted."""
        return arrow_pb2.StreamComplete(
            total_rows=self.rows, total_batches=self.batches, total_bytes=self.bytes
        )

    def check(self, frame: arrow_pb2.StreamComplete) -> None:
        """Raise if a completion frame disagrees with what arrived."""
        if (frame.total_rows, frame.total_batches) != (self.rows, self.batches):
            raise DomainError(
                ErrorCode.UNAVAILABLE,
                "ARROW_STREAM_MISMATCH",
                f"stream ended claiming {frame.total_rows} rows in {frame.total_batches} "
                f"batches but {self.rows} rows in {self.batches} batches arrived",
            )


_LENGTH_DELIMITED = 2
_NUM_ROWS_TAG = (1 << 3) | 0  # ArrowRecordBatch.num_rows = 1, varint
_IPC_MESSAGE_TAG = (1000 << 3) | _LENGTH_DELIMITED  # ArrowRecordBatch.ipc_message = 1000
_NUM_ROWS_KEY = bytes([_NUM_ROWS_TAG])
_IPC_MESSAGE_KEY = bytes([0xC2, 0x3E])  # _IPC_MESSAGE_TAG as a varint


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The base-128 varint at ``pos`` and the position after it (past the end if cut)."""
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return value, len(data) + 1


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def protocol_error(message: str) -> DomainError:
    """A peer broke the frame order (schema, batches, completion)."""
    return invalid_argument("ARROW_STREAM_PROTOCOL", message)


def incomplete_stream_error(counter: StreamCounter) -> DomainError:
    """A stream ended without its completion frame: the data may be cut short."""
    return DomainError(
        ErrorCode.UNAVAILABLE,
        "ARROW_STREAM_INCOMPLETE",
        f"stream ended without a completion frame after {counter.rows} rows",
    )

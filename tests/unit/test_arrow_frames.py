"""Arrow stream frames (core.arrow_frames): encoding, splitting, completion checks."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from datadog_platform.api.common.v1 import arrow_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as connector_pb
from datadog_platform.core.arrow_frames import (
    TARGET_BATCH_BYTES,
    BatchFrame,
    StreamCounter,
    batch_frames,
    decode_batch,
    decode_schema,
    encode_batch,
    encode_batch_frame,
    encode_schema,
    frame_kind,
    incomplete_stream_error,
    lift_bytes_field,
    parse_frame,
    pass_encoded,
    protocol_error,
    split_by_bytes,
)
from datadog_platform.core.connector_frames import RowGroupFrame, parse_read_response
from datadog_platform.core.errors import DomainError, ErrorCode

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("amount", pa.decimal128(10, 2)),
        ("at", pa.timestamp("us")),
        ("tags", pa.list_(pa.string())),
    ],
    metadata={b"origin": b"test"},
)


def _batch(n: int) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array(range(n), pa.int64()),
            pa.array([f"Zoë-{i}" if i % 3 else None for i in range(n)]),
            pa.array([None, *[i * 100 for i in range(1, n)]][:n], pa.decimal128(10, 2)),
            pa.array([dt.datetime(2026, 1, 1) + dt.timedelta(seconds=i) for i in range(n)]),
            pa.array([["a", "b"][: i % 3] for i in range(n)]),
        ],
        schema=SCHEMA,
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def test_schema_round_trip_keeps_types_and_metadata() -> None:
    frame = encode_schema(SCHEMA)
    wire = arrow_pb2.ArrowSchema.FromString(frame.SerializeToString())
    assert decode_schema(wire).equals(SCHEMA, check_metadata=True)


def test_batch_round_trip_through_the_wire() -> None:
    batch = _batch(100)
    frame = encode_batch(batch)
    assert frame.num_rows == 100
    wire = arrow_pb2.ArrowRecordBatch.FromString(frame.SerializeToString())
    decoded = decode_batch(wire, SCHEMA)
    assert decoded.equals(batch)
    assert decoded.to_pylist() == batch.to_pylist()


def test_empty_batch_round_trips() -> None:
    batch = _batch(0)
    assert decode_batch(encode_batch(batch), SCHEMA).num_rows == 0


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.5])
def test_truncated_batch_fails_to_decode(keep: float) -> None:
    message = encode_batch(_batch(5)).ipc_message
    frame = arrow_pb2.ArrowRecordBatch(num_rows=5, ipc_message=message[: int(len(message) * keep)])
    with pytest.raises(DomainError) as info:
        decode_batch(frame, SCHEMA)
    assert info.value.reason == "ARROW_STREAM_PROTOCOL"


def test_batch_with_more_buffers_in_schema_fails_to_decode() -> None:
    frame = encode_batch(pa.record_batch([pa.array(range(5))], names=["n"]))
    other = pa.schema([("x", pa.string()), ("y", pa.string())])
    with pytest.raises(DomainError) as info:
        decode_batch(frame, other)
    assert info.value.reason == "ARROW_STREAM_PROTOCOL"


def test_batch_claiming_other_row_count_is_refused() -> None:
    frame = encode_batch(_batch(5))
    frame.num_rows = 6
    with pytest.raises(DomainError) as info:
        decode_batch(frame, SCHEMA)
    assert "claims 6 rows but holds 5" in info.value.message


def test_encode_and_decode_count_the_same_totals() -> None:
    sent, received = StreamCounter(), StreamCounter()
    for n in (3, 4):
        decode_batch(encode_batch(_batch(n), sent), SCHEMA, received)
    assert sent == received
    assert (sent.rows, sent.batches) == (7, 2)
    received.check(sent.complete())


def test_split_by_bytes_slices_large_batches_only() -> None:
    rows = 8 * TARGET_BATCH_BYTES // 8  # eight targets of int64
    big = pa.record_batch([pa.array(range(rows), pa.int64())], names=["n"])
    small = pa.record_batch([pa.array(range(10), pa.int64())], names=["n"])
    empty = small.slice(0, 0)
    pieces = list(split_by_bytes([small, big, empty], target_bytes=TARGET_BATCH_BYTES))
    assert pieces[0] is small
    slices = pieces[1:]
    assert len(slices) >= 7
    assert all(p.nbytes <= TARGET_BATCH_BYTES + 8 for p in slices)
    # Nothing lost, nothing reordered, empty batches dropped.
    assert pa.Table.from_batches(slices).column("n").to_pylist() == list(range(rows))


def test_split_by_bytes_keeps_batches_up_to_twice_the_target() -> None:
    batch = pa.record_batch([pa.array(range(1000), pa.int64())], names=["n"])  # 8000 bytes
    assert list(split_by_bytes([batch], target_bytes=4000)) == [batch]
    assert len(list(split_by_bytes([batch], target_bytes=1000))) == 8


def test_stream_counter_counts_and_completes() -> None:
    counter = StreamCounter()
    frames = [encode_batch(_batch(n), counter) for n in (3, 4)]
    complete = counter.complete()
    assert (complete.total_rows, complete.total_batches) == (7, 2)
    assert complete.total_bytes == sum(len(f.ipc_message) for f in frames)
    counter.check(complete)  # agrees: no error


@pytest.mark.parametrize(("rows", "batches"), [(8, 2), (7, 3), (0, 0)])
def test_stream_counter_check_rejects_mismatch(rows: int, batches: int) -> None:
    counter = StreamCounter()
    encode_batch(_batch(3), counter)
    encode_batch(_batch(4), counter)
    with pytest.raises(DomainError) as info:
        counter.check(arrow_pb2.StreamComplete(total_rows=rows, total_batches=batches))
    assert (info.value.code, info.value.reason) == (ErrorCode.UNAVAILABLE, "ARROW_STREAM_MISMATCH")


def test_protocol_and_incomplete_errors() -> None:
    assert protocol_error("x").code is ErrorCode.INVALID_ARGUMENT
    counter = StreamCounter(rows=5, batches=1)
    error = incomplete_stream_error(counter)
    assert (error.code, error.reason) == (ErrorCode.UNAVAILABLE, "ARROW_STREAM_INCOMPLETE")
    assert "5 rows" in error.message


@pytest.mark.parametrize("rows", [0, 1, 100, 20_000])
@pytest.mark.parametrize(
    ("message", "field"),
    [(connector_pb.ReadResponse, "record_batch"), (connector_pb.WriteRequest, "record_batch")],
)
def test_encoded_frame_is_the_generated_message_byte_for_byte(
    rows: int, message: type, field: str
) -> None:
    batch = _batch(rows)
    number = message.DESCRIPTOR.fields_by_name[field].number
    frame, ipc_bytes = encode_batch_frame(batch, number)
    expected = message()
    encode_batch(batch, into=getattr(expected, field))
    assert frame == expected.SerializeToString()
    assert ipc_bytes == len(getattr(expected, field).ipc_message)
    parsed = message.FromString(frame)
    assert decode_batch(getattr(parsed, field), SCHEMA).equals(batch)


async def test_batch_frames_slice_encode_and_count_in_order() -> None:
    batches = [_batch(3), _batch(0), pa.concat_batches([_batch(40_000)] * 3), _batch(7)]

    async def source():
        for batch in batches:
            yield batch

    counter = StreamCounter()
    frames = [f async for f in batch_frames(source(), counter, 2)]
    decoded = [
        decode_batch(connector_pb.ReadResponse.FromString(f).record_batch, SCHEMA) for f in frames
    ]
    assert len(frames) > 4  # the big batch went out in ~1 MiB slices
    assert pa.Table.from_batches(decoded).equals(pa.Table.from_batches(batches))
    assert (counter.rows, counter.batches) == (sum(b.num_rows for b in batches), len(frames))


@pytest.mark.parametrize("message", [connector_pb.ReadResponse, connector_pb.WriteRequest])
def test_parse_frame_takes_record_batches_without_protobuf_and_the_rest_with_it(
    message: type,
) -> None:
    number = message.DESCRIPTOR.fields_by_name["record_batch"].number
    batch = _batch(50)
    frame, _ = encode_batch_frame(batch, number)
    parsed = parse_frame(frame, number, message.FromString)
    assert type(parsed) is BatchFrame
    assert frame_kind(parsed) == "record_batch"
    assert parsed.num_rows == 50
    assert decode_batch(parsed, SCHEMA).equals(batch)

    done = message(complete=arrow_pb2.StreamComplete(total_rows=3, total_batches=1))
    parsed = parse_frame(done.SerializeToString(), number, message.FromString)
    assert parsed == done
    assert frame_kind(parsed) == "complete"

    # An unknown field (2, varint) inside the batch frame: protobuf parses it.
    inner = encode_batch(_batch(2)).SerializeToString() + b"\x10\x01"
    extra = bytes([number << 3 | 2]) + _varint(len(inner)) + inner
    parsed = parse_frame(extra, number, message.FromString)
    assert type(parsed) is message
    assert decode_batch(parsed.record_batch, SCHEMA).equals(_batch(2))


def test_parse_frame_leaves_a_cut_frame_to_protobuf() -> None:
    number = connector_pb.ReadResponse.DESCRIPTOR.fields_by_name["record_batch"].number
    frame, _ = encode_batch_frame(_batch(50), number)
    with pytest.raises(Exception, match=r"(?i)error parsing|truncated|decode"):
        parse_frame(frame[:-10], number, connector_pb.ReadResponse.FromString)


def test_pass_encoded_sends_bytes_as_they_are() -> None:
    serialize = pass_encoded(connector_pb.ReadResponse.SerializeToString)
    done = connector_pb.ReadResponse(complete=arrow_pb2.StreamComplete(total_rows=1))
    assert serialize(done) == done.SerializeToString()
    assert serialize(b"\x1a\x02\x08\x01") == b"\x1a\x02\x08\x01"


def test_parquet_row_group_frames_keep_their_data_in_the_message_bytes() -> None:
    group = arrow_pb2.ParquetRowGroup(
        index=3, num_rows=10, offsets=[4, 900], lengths=[5, 6], data=b"abcdefghijk"
    )
    wire = connector_pb.ReadResponse(parquet_row_group=group).SerializeToString()

    frame = parse_read_response(wire)

    assert isinstance(frame, RowGroupFrame)
    assert frame.data.obj is wire  # a view, not a copy
    assert bytes(frame.data) == b"abcdefghijk"
    assert frame.header == arrow_pb2.ParquetRowGroup(
        index=3, num_rows=10, offsets=[4, 900], lengths=[5, 6]
    )
    # Fields in another order (protobuf allows any) parse the same.
    inner = group.SerializeToString()
    data_field = inner[inner.index(b"\xc2\x3e") :]
    reordered = data_field + inner[: inner.index(b"\xc2\x3e")]
    wire = bytes([(5 << 3) | 2, len(reordered)]) + reordered
    again = parse_read_response(wire)
    assert isinstance(again, RowGroupFrame)
    assert again.header == frame.header
    assert bytes(again.data) == b"abcdefghijk"


def test_frames_the_fast_parser_does_not_know_go_to_protobuf() -> None:
    empty = connector_pb.ReadResponse(parquet_row_group=arrow_pb2.ParquetRowGroup(index=1))
    parsed = parse_read_response(empty.SerializeToString())
    assert parsed == empty  # no data field: protobuf's message
    head = connector_pb.ReadResponse(parquet_file=arrow_pb2.ParquetFile(size=9, footer=b"PAR1"))
    assert parse_read_response(head.SerializeToString()) == head
    assert lift_bytes_field(b"\x0b", 1000) is None  # an unknown (group) wire type

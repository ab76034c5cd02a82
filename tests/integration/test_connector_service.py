"""The connector service over a real channel: listing, reading and writing files."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from datadog_platform.api.common.v1 import arrow_pb2, step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.connector.app import ConnectorConfig, build_server
from datadog_platform.connector.files import FileConnection, is_temp_name
from datadog_platform.core.arrow_frames import (
    StreamCounter,
    decode_batch,
    decode_schema,
    encode_batch,
    encode_schema,
)
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.status import RpcErrorDetails, details_of

SERVICE = pb.DESCRIPTOR.services_by_name["ConnectorService"].full_name
TIMEOUT = 20
KEY = "run-1/stage-1/out"
EXAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "data" / "orders.csv"


@pytest.fixture
async def stub(connector_address: str) -> AsyncIterator[pb_grpc.ConnectorServiceStub]:
    async with insecure_channel(connector_address) as channel:
        yield pb_grpc.ConnectorServiceStub(channel)


def _table(n: int = 10, offset: int = 0) -> pa.Table:
    ids = list(range(offset, offset + n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "customer": pa.array([f"Zoë-{i}" if i % 4 else None for i in ids]),
            "amount": pa.array([i * 1.25 for i in ids]),
        }
    )


async def _read(
    stub: pb_grpc.ConnectorServiceStub,
    path: str,
    connection: str = "",
    fmt: int = step_pb2.FILE_FORMAT_UNSPECIFIED,
) -> tuple[pa.Table, list[pb.ReadResponse]]:
    """Read a file; returns the decoded table and the frames as they arrived."""
    request = pb.ReadRequest(
        source=step_pb2.SourceSpec(
            file=step_pb2.FileSource(connection=connection, path=path, format=fmt)
        )
    )
    frames = [frame async for frame in stub.Read(request, timeout=TIMEOUT)]
    assert frames[0].WhichOneof("frame") == "schema"
    assert frames[-1].WhichOneof("frame") == "complete"
    schema = decode_schema(frames[0].schema)
    batches = [decode_batch(f.record_batch, schema) for f in frames[1:-1]]
    assert all(f.WhichOneof("frame") == "record_batch" for f in frames[1:-1])
    return pa.Table.from_batches(batches, schema=schema), frames


async def _read_error(stub: pb_grpc.ConnectorServiceStub, path: str, **kwargs) -> RpcErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _read(stub, path, **kwargs)
    return details_of(info.value)


def _header(
    path: str,
    key: str = KEY,
    fmt: int = step_pb2.FILE_FORMAT_UNSPECIFIED,
    connection: str = "",
) -> pb.WriteRequest:
    sink = step_pb2.SinkSpec(
        file=step_pb2.FileSink(
            connection=connection, path=path, format=fmt, mode=step_pb2.WRITE_MODE_OVERWRITE
        )
    )
    return pb.WriteRequest(header=pb.WriteHeader(sink=sink, idempotency_key=key))


def _data_frames(table: pa.Table, complete: bool = True) -> list[pb.WriteRequest]:
    frames = [pb.WriteRequest(schema=encode_schema(table.schema))]
    counter = StreamCounter()
    for batch in table.to_batches(max_chunksize=4):
        frame = encode_batch(batch, counter)
        frames.append(pb.WriteRequest(record_batch=frame))
    if complete:
        frames.append(pb.WriteRequest(complete=counter.complete()))
    return frames


async def _write(
    stub: pb_grpc.ConnectorServiceStub, frames: Iterable[pb.WriteRequest]
) -> pb.WriteResponse:
    async def requests() -> AsyncIterator[pb.WriteRequest]:
        for frame in frames:
            yield frame

    return await stub.Write(requests(), timeout=TIMEOUT)


async def _write_error(
    stub: pb_grpc.ConnectorServiceStub, frames: Iterable[pb.WriteRequest]
) -> RpcErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _write(stub, frames)
    return details_of(info.value)


async def _eventually(condition: Callable[[], bool], seconds: float = 5) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    assert condition()


# --------------------------------------------------------------------------- ListConnections


@pytest.fixture
def real_root(data_root: Path) -> str:
    """The absolute, symlink-free root the server reports."""
    return str(data_root.resolve())


async def test_list_connections_shows_local_root_only(
    stub: pb_grpc.ConnectorServiceStub, real_root: str
) -> None:
    reply = await stub.ListConnections(pb.ListConnectionsRequest(), timeout=TIMEOUT)
    assert [(c.name, c.type) for c in reply.connections] == [("local", "file")]
    assert dict(reply.connections[0].options) == {"root": real_root}
    assert reply.next_page_token == ""


@pytest.fixture
def many_config(tmp_path: Path) -> ConnectorConfig:
    """Five connections, to page through."""
    names = ["echo", "alpha", "delta", "charlie", "bravo"]
    return ConnectorConfig({n: FileConnection(n, tmp_path.resolve(), f"{n} files") for n in names})


@pytest.fixture
async def many_address(many_config: ConnectorConfig) -> AsyncIterator[str]:
    """A connector serving ``many_config``."""
    config = many_config
    server = await build_server(config)
    await server.start()
    yield server.address
    await server.stop(grace=1)


async def test_list_connections_pages_in_name_order(many_address: str) -> None:
    async with insecure_channel(many_address) as channel:
        stub = pb_grpc.ConnectorServiceStub(channel)
        seen, token, pages = [], "", 0
        while True:
            reply = await stub.ListConnections(
                pb.ListConnectionsRequest(page_size=2, page_token=token), timeout=TIMEOUT
            )
            pages += 1
            assert len(reply.connections) <= 2
            seen += [c.name for c in reply.connections]
            token = reply.next_page_token
            if not token:
                break
        assert seen == ["alpha", "bravo", "charlie", "delta", "echo"]
        assert pages == 3
        everything = await stub.ListConnections(pb.ListConnectionsRequest(), timeout=TIMEOUT)
        assert len(everything.connections) == 5
        assert everything.connections[0].description == "alpha files"


async def test_list_connections_rejects_bad_token_and_page_size(
    stub: pb_grpc.ConnectorServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListConnections(
            pb.ListConnectionsRequest(page_token="definitely-not-a-token"), timeout=TIMEOUT
        )
    details = details_of(info.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListConnections(pb.ListConnectionsRequest(page_size=-1), timeout=TIMEOUT)
    details = details_of(info.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details.violations] == ["page_size"]


# --------------------------------------------------------------------------- Read


async def test_read_csv_matches_pyarrow_exactly(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    path = data_root / "in" / "orders.csv"
    path.parent.mkdir()
    countries = ["FR", "DE", "ES", "JP"]
    names = ["Amélie", "Łukasz", "Zoë", "Björn", "日本語"]
    with path.open("w", encoding="utf-8") as out:
        out.write("order_id,customer,country,amount,ordered_at\n")
        for i in range(60_000):  # ~3 MB: several ~1 MiB blocks
            amount = "" if i % 97 == 0 else f"{i * 0.37:.2f}"
            out.write(
                f"{i},{names[i % 5]},{countries[i % 4]},{amount},"
                f"2026-11-01T{i % 24:02d}:{i % 60:02d}:00\n"
            )
    table, frames = await _read(stub, "in/orders.csv")
    expected = pa_csv.read_csv(path)
    assert table.schema.equals(expected.schema)
    assert table.equals(expected)
    assert len(frames) > 3  # schema, several batches, completion
    complete = frames[-1].complete
    assert complete.total_rows == 60_000
    assert complete.total_batches == len(frames) - 2
    assert complete.total_bytes == sum(len(f.record_batch.ipc_message) for f in frames[1:-1])


async def test_read_example_orders_with_explicit_format(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    (data_root / "orders.txt").write_bytes(EXAMPLE_CSV.read_bytes())
    table, _ = await _read(stub, "orders.txt", connection="local", fmt=step_pb2.FILE_FORMAT_CSV)
    assert table.equals(pa_csv.read_csv(EXAMPLE_CSV))
    assert table.num_rows == 50


async def test_read_header_only_csv(stub: pb_grpc.ConnectorServiceStub, data_root: Path) -> None:
    (data_root / "empty.csv").write_text("a,b,c\n")
    table, frames = await _read(stub, "empty.csv")
    assert len(frames) == 2
    assert table.schema.names == ["a", "b", "c"]
    assert frames[-1].complete.total_rows == 0


async def test_read_parquet(stub: pb_grpc.ConnectorServiceStub, data_root: Path) -> None:
    expected = _table(200_000)
    pq.write_table(expected, data_root / "big.pq", row_group_size=50_000)
    table, frames = await _read(stub, "big.pq")
    assert table.equals(expected)
    assert len(frames) > 3
    assert frames[-1].complete.total_rows == 200_000


async def test_read_missing_file_is_not_found(stub: pb_grpc.ConnectorServiceStub) -> None:
    details = await _read_error(stub, "in/nope.csv")
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "SOURCE_NOT_FOUND")
    assert "in/nope.csv" in details.message


@pytest.mark.parametrize("path", ["../secret.csv", "/etc/passwd.csv", "escape/secret.csv"])
async def test_read_outside_root_is_permission_denied(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path, path: str
) -> None:
    (data_root.parent / "secret.csv").write_text("password\nhunter2\n")
    (data_root / "escape").symlink_to(data_root.parent)
    details = await _read_error(stub, path)
    assert (details.code, details.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PATH_OUTSIDE_ROOT",
    )
    assert path in details.message
    assert str(data_root) not in details.message


async def test_read_unknown_connection_is_not_found(stub: pb_grpc.ConnectorServiceStub) -> None:
    details = await _read_error(stub, "a.csv", connection="warehouse")
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "CONNECTION_NOT_FOUND")
    assert "warehouse" in details.message


async def test_read_unknown_extension_and_empty_path(stub: pb_grpc.ConnectorServiceStub) -> None:
    details = await _read_error(stub, "notes.txt")
    assert (details.code, details.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_FILE_FORMAT",
    )
    details = await _read_error(stub, "")
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details.violations] == ["source.file.path"]


async def test_parse_error_after_streaming_started_is_a_proper_status(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    with (data_root / "late.csv").open("w") as out:
        out.write("n\n")
        out.writelines(f"{i}\n" for i in range(400_000))
        out.write("not-a-number\n")
    request = pb.ReadRequest(source=step_pb2.SourceSpec(file=step_pb2.FileSource(path="late.csv")))
    received: list[pb.ReadResponse] = []

    async def drain() -> None:
        async for frame in stub.Read(request, timeout=TIMEOUT):
            received.append(frame)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await drain()
    assert received[0].WhichOneof("frame") == "schema"
    assert all(f.WhichOneof("frame") != "complete" for f in received)
    details = details_of(info.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "SOURCE_PARSE_ERROR",
    )
    assert "not-a-number" in details.message


def _open_fds(path: Path) -> int:
    """How many of this process's (and so the in-process server's) descriptors open ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_read_cancelled_mid_stream_releases_the_file(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    path = data_root / "big.parquet"
    pq.write_table(_table(400_000), path)
    request = pb.ReadRequest(source=step_pb2.SourceSpec(file=step_pb2.FileSource(path=path.name)))
    call = stub.Read(request, timeout=TIMEOUT)
    assert (await call.read()).WhichOneof("frame") == "schema"
    assert (await call.read()).WhichOneof("frame") == "record_batch"
    assert _open_fds(path) >= 1  # the server is mid-read
    call.cancel()
    await _eventually(lambda: _open_fds(path) == 0)


# --------------------------------------------------------------------------- Write


async def test_write_parquet_then_read_back(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    table = _table(37)
    reply = await _write(stub, [_header("out/orders.parquet"), *_data_frames(table)])
    target = data_root / "out" / "orders.parquet"
    assert reply.rows_written == 37
    assert reply.location == f"file://{target.resolve()}"
    assert pq.read_table(target).equals(table)
    back, _ = await _read(stub, "out/orders.parquet")
    assert back.equals(table)
    assert os.listdir(target.parent) == ["orders.parquet"]


async def test_write_csv_overwrites_existing(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    (data_root / "out.csv").write_text("old\n1\n")
    table = _table(9)
    reply = await _write(
        stub, [_header("out.csv", fmt=step_pb2.FILE_FORMAT_CSV), *_data_frames(table)]
    )
    assert reply.rows_written == 9
    # CSV has no null string: pyarrow writes it empty and reads it back as "".
    expected = table.set_column(1, "customer", table["customer"].fill_null(""))
    assert pa_csv.read_csv(data_root / "out.csv").equals(expected)


async def test_write_zero_batches_makes_a_file_with_the_schema(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    table = _table(0)
    reply = await _write(stub, [_header("empty.parquet"), *_data_frames(table)])
    assert reply.rows_written == 0
    assert pq.read_table(data_root / "empty.parquet").schema.equals(table.schema)


def _leftovers(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


async def test_write_stream_that_ends_without_completion_commits_nothing(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    frames = [_header("out/cut.parquet"), *_data_frames(_table(20), complete=False)]
    details = await _write_error(stub, frames)
    assert (details.code, details.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "ARROW_STREAM_INCOMPLETE",
    )
    assert not (data_root / "out" / "cut.parquet").exists()
    assert _leftovers(data_root / "out") == []


async def test_write_cancelled_mid_stream_commits_nothing(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    target = data_root / "out" / "cancelled.parquet"
    target.parent.mkdir()
    call = stub.Write(timeout=TIMEOUT)
    await call.write(_header("out/cancelled.parquet"))
    for frame in _data_frames(_table(20), complete=False):
        await call.write(frame)
    # The server has started writing the temporary file...
    await _eventually(lambda: any(is_temp_name(n) for n in _leftovers(target.parent)))
    call.cancel()
    # ...and removes it once the cancellation reaches it; the target never appears.
    await _eventually(lambda: _leftovers(target.parent) == [])
    assert not target.exists()


async def test_write_cancelled_keeps_the_previous_target(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    old = _table(3, offset=100)
    await _write(stub, [_header("keep.parquet"), *_data_frames(old)])
    call = stub.Write(timeout=TIMEOUT)
    await call.write(_header("keep.parquet"))
    for frame in _data_frames(_table(20), complete=False):
        await call.write(frame)
    await _eventually(lambda: len(_leftovers(data_root)) == 2)
    call.cancel()
    await _eventually(lambda: _leftovers(data_root) == ["keep.parquet"])
    assert pq.read_table(data_root / "keep.parquet").equals(old)


async def test_write_with_wrong_totals_commits_nothing(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    frames = [_header("bad.parquet"), *_data_frames(_table(8), complete=False)]
    frames.append(pb.WriteRequest(complete=arrow_pb2.StreamComplete(total_rows=9, total_batches=2)))
    details = await _write_error(stub, frames)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "ARROW_STREAM_MISMATCH")
    assert _leftovers(data_root) == []


async def test_write_without_header_is_invalid(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    details = await _write_error(stub, _data_frames(_table(3)))
    assert (details.code, details.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ARROW_STREAM_PROTOCOL",
    )
    details = await _write_error(stub, [])
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert _leftovers(data_root) == []


async def test_write_without_schema_or_with_a_second_header_is_invalid(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    data = _data_frames(_table(3))
    for frames in (
        [_header("x.parquet"), *data[1:]],
        [_header("x.parquet"), data[0], _header("y")],
    ):
        details = await _write_error(stub, frames)
        assert (details.code, details.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "ARROW_STREAM_PROTOCOL",
        )
    assert _leftovers(data_root) == []


async def test_write_without_idempotency_key_names_the_field(
    stub: pb_grpc.ConnectorServiceStub,
) -> None:
    details = await _write_error(stub, [_header("x.parquet", key=""), *_data_frames(_table(3))])
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details.violations] == ["header.idempotency_key"]


async def test_write_outside_root_is_permission_denied(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    before = _leftovers(data_root.parent)
    details = await _write_error(stub, [_header("../evil.parquet"), *_data_frames(_table(3))])
    assert (details.code, details.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PATH_OUTSIDE_ROOT",
    )
    assert _leftovers(data_root.parent) == before


async def test_write_undecodable_batch_is_invalid_and_commits_nothing(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    data = _data_frames(_table(3))
    garbage = pb.WriteRequest(
        record_batch=arrow_pb2.ArrowRecordBatch(num_rows=3, ipc_message=b"\xff" * 64)
    )
    details = await _write_error(stub, [_header("g.parquet"), data[0], garbage, data[-1]])
    assert (details.code, details.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ARROW_STREAM_PROTOCOL",
    )
    assert _leftovers(data_root) == []


# --------------------------------------------------------------------------- health, reflection


async def test_health_is_serving(connector_address: str) -> None:
    async with insecure_channel(connector_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_and_describes_the_service(connector_address: str) -> None:
    async with insecure_channel(connector_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
        ]
        replies = [r async for r in stub.ServerReflectionInfo(iter(requests), timeout=TIMEOUT)]
    assert SERVICE in {s.name for s in replies[0].list_services_response.service}
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in replies[1].file_descriptor_response.file_descriptor_proto
    ]
    methods = {
        m.name
        for f in files
        if f.package == "datadog_platform.api.connector.v1"
        for s in f.service
        for m in s.method
    }
    assert methods == {"ListConnections", "Read", "Write"}

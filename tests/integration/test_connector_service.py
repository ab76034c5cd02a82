"""The connector service over real channels: every RPC, plugins, secrets, reload.

File connections exercise the data path; fake installed plugins (``plugin_fakes``:
the example ``sequence`` type, a ``leaky`` type that puts its password in every
error and log line, a ``memory`` type that records writes) exercise the
interface-level behaviour; ``main`` runs as a real process for SIGHUP and logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from arrow_streams import table_of
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from plugin_fakes import make_plugin_site

from datadog_platform.api.common.v1 import arrow_pb2, predicate_pb2, step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.connector.app import (
    ConnectorConfig,
    ConnectorServer,
    build_server,
    load_config,
    parse_config,
)
from datadog_platform.connector.files import is_temp_name
from datadog_platform.connector.registry import load_registry
from datadog_platform.core.arrow_frames import (
    StreamCounter,
    decode_batch,
    decode_schema,
    encode_batch,
    encode_schema,
)
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.redaction import redact
from datadog_platform.core.status import RpcErrorDetails, details_of
from datadog_platform.executor.stored_parquet import StoredParquetStream

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
    return table_of(frames), frames


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


async def test_list_connections_shows_local_and_artifacts_without_secrets(
    stub: pb_grpc.ConnectorServiceStub, real_root: str
) -> None:
    reply = await stub.ListConnections(pb.ListConnectionsRequest(), timeout=TIMEOUT)
    assert [(c.name, c.type) for c in reply.connections] == [
        ("artifacts", "artifact"),
        ("local", "file"),
    ]
    assert dict(reply.connections[1].options)["root"] == real_root
    assert reply.next_page_token == ""


@pytest.fixture
def many_config(tmp_path: Path) -> ConnectorConfig:
    """Five connections, to page through."""
    names = ["echo", "alpha", "delta", "charlie", "bravo"]
    document = {
        "connections": {
            n: {"type": "file", "root": str(tmp_path), "description": f"{n} files"} for n in names
        }
    }
    return parse_config(document, tmp_path)


@pytest.fixture
async def many_address(many_config: ConnectorConfig) -> AsyncIterator[str]:
    """A connector serving ``many_config``."""
    server = await build_server(many_config)
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


async def _read_accepting_parquet(
    stub: pb_grpc.ConnectorServiceStub,
    path: str,
    columns: Iterable[str] = (),
    predicate: predicate_pb2.Predicate | None = None,
) -> tuple[pa.Table, list[str]]:
    """Read with ``accept_parquet``, decoding stored chunks as the executor does; the
    table and the kinds of frames that arrived."""
    request = pb.ReadRequest(
        source=step_pb2.SourceSpec(file=step_pb2.FileSource(path=path)),
        columns=list(columns),
        predicate=predicate,
        accept_parquet=True,
    )
    frames = [frame async for frame in stub.Read(request, timeout=TIMEOUT)]
    kinds = [frame.WhichOneof("frame") for frame in frames]
    schema = decode_schema(frames[0].schema)
    counter = StreamCounter()
    stored = StoredParquetStream(schema)
    batches = []
    try:
        for frame in frames[1:-1]:
            if frame.HasField("record_batch"):
                batches.append(decode_batch(frame.record_batch, schema, counter))
            elif frame.HasField("parquet_file"):
                await stored.open_file(frame.parquet_file)
            else:
                batches += [b async for b in stored.batches(frame.parquet_row_group, counter)]
    finally:
        stored.close()
    counter.check(frames[-1].complete)
    return pa.Table.from_batches(batches, schema), kinds


async def test_read_accepting_parquet_sends_the_needed_column_chunks_as_stored(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    table = _table(200_000)
    pq.write_table(table, data_root / "groups.parquet", row_group_size=50_000)

    got, kinds = await _read_accepting_parquet(stub, "groups.parquet", ["amount", "customer"])

    assert kinds == ["schema", "parquet_file", *["parquet_row_group"] * 4, "complete"]
    assert got.equals(table.select(["amount", "customer"]))
    plain, _ = await _read(stub, "groups.parquet")
    assert plain.select(["amount", "customer"]).equals(got)


def _id_at_least(value: int) -> predicate_pb2.Predicate:
    comparison = predicate_pb2.Comparison(
        column="id",
        operator=predicate_pb2.COMPARISON_OPERATOR_GE,
        values=[predicate_pb2.Literal(int_value=value)],
    )
    return predicate_pb2.Predicate(all_of=[comparison])


async def test_a_file_sent_as_stored_is_planned_as_one_ticket(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    table = _table(200_000)
    pq.write_table(table, data_root / "groups.parquet", row_group_size=50_000)
    source = step_pb2.SourceSpec(file=step_pb2.FileSource(path="groups.parquet"))

    async def tickets(accept_parquet: bool, **scope: Any) -> int:
        request = pb.PlanReadRequest(
            source=source, max_splits=4, accept_parquet=accept_parquet, **scope
        )
        return len((await stub.PlanRead(request, timeout=TIMEOUT)).tickets)

    assert await tickets(False) == 4
    assert await tickets(True) == 1, "the client decodes it: nothing to split"
    assert await tickets(True, columns=["amount", "customer"]) == 1
    at_least = _id_at_least(0)
    assert await tickets(True, predicate=at_least) == 4, "a predicate: the connector decodes"


async def test_read_accepting_parquet_decodes_what_needs_more_than_decoding(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    table = _table(20_000)
    pq.write_table(table, data_root / "few.parquet", row_group_size=5_000)
    pa_csv.write_csv(table, data_root / "few.csv")
    at_least = _id_at_least(15_000)

    filtered, kinds = await _read_accepting_parquet(stub, "few.parquet", ["id"], at_least)
    assert set(kinds[1:-1]) == {"record_batch"}
    assert filtered.column("id").to_pylist() == list(range(15_000, 20_000))
    from_csv, kinds = await _read_accepting_parquet(stub, "few.csv")
    assert set(kinds[1:-1]) == {"record_batch"}
    assert from_csv.num_rows == 20_000


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
    # .datadog holds the default artifact store of the "local" root.
    names = os.listdir(directory) if directory.exists() else []
    return sorted(n for n in names if n != ".datadog")


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
    assert methods == {
        "ListConnections",
        "ListConnectorTypes",
        "TestConnection",
        "DescribeSource",
        "PlanRead",
        "Read",
        "Write",
    }


# --------------------------------------------------------------------------- plugins: fixtures

LEAKY_PASSWORD = f"leaky-pw-{uuid.uuid4().hex}"
PLUGIN_MODULES = ("datadog_connector_example", "fake_leaky_plugins", "fake_broken_plugin")


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Fake installed plugin distributions on sys.path (nothing is pip-installed)."""
    site = make_plugin_site(tmp_path_factory.mktemp("plugins"))
    sys.path.insert(0, str(site))
    yield site
    sys.path.remove(str(site))
    for module in PLUGIN_MODULES:
        sys.modules.pop(module, None)


@pytest.fixture
def fakes(plugin_site: Path) -> Any:
    """The fake plugins' module, its records cleared."""
    import fake_leaky_plugins  # type: ignore[import-not-found]

    for record in ("CLOSED", "ABORTED"):
        getattr(fake_leaky_plugins, record).clear()
    fake_leaky_plugins.WRITES.clear()
    fake_leaky_plugins.COMMITTED.clear()
    return fake_leaky_plugins


@pytest.fixture
async def plugin_server(
    fakes: Any, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ConnectorServer]:
    """A connector with file, sequence (example plugin), leaky and memory connections."""
    monkeypatch.setenv("LEAKY_PASSWORD", LEAKY_PASSWORD)
    document = {
        "connections": {
            "local": {"type": "file", "root": str(data_root)},
            "numbers": {
                "type": "sequence",
                "rows": 10_000,
                "batch_rows": 1000,
                "description": "Generated numbers",
            },
            "vault": {"type": "leaky", "host": "db.example", "password": "${env:LEAKY_PASSWORD}"},
            "mem": {"type": "memory", "rows": 5000},
        }
    }
    config = parse_config(document, data_root, registry=load_registry())
    server = await build_server(config)
    await server.start()
    yield server
    await server.stop(grace=1)


@pytest.fixture
async def pstub(plugin_server: ConnectorServer) -> AsyncIterator[pb_grpc.ConnectorServiceStub]:
    async with insecure_channel(plugin_server.address) as channel:
        yield pb_grpc.ConnectorServiceStub(channel)


def _db_source(connection: str, table: str = "") -> step_pb2.SourceSpec:
    return step_pb2.SourceSpec(database=step_pb2.DatabaseSource(connection=connection, table=table))


def _db_header(connection: str, table: str = "t", key: str = KEY) -> pb.WriteRequest:
    sink = step_pb2.SinkSpec(database=step_pb2.DatabaseSink(connection=connection, table=table))
    return pb.WriteRequest(header=pb.WriteHeader(sink=sink, idempotency_key=key))


async def _read_source(
    stub: pb_grpc.ConnectorServiceStub,
    source: step_pb2.SourceSpec,
    ticket: bytes = b"",
    columns: Iterable[str] = (),
) -> pa.Table:
    request = pb.ReadRequest(source=source, ticket=ticket, columns=list(columns))
    frames = [frame async for frame in stub.Read(request, timeout=TIMEOUT)]
    return table_of(frames)


async def _rpc_error(call: Awaitable[Any]) -> RpcErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return details_of(info.value)


async def _drain(call: Any) -> list[Any]:
    return [frame async for frame in call]


# --------------------------------------------------------------------------- ListConnectorTypes


async def test_list_connector_types_documents_builtins_and_plugins(
    pstub: pb_grpc.ConnectorServiceStub,
) -> None:
    reply = await pstub.ListConnectorTypes(pb.ListConnectorTypesRequest(), timeout=TIMEOUT)
    names = [t.type for t in reply.types]
    assert names == sorted(names)
    builtins = {"artifact", "file", "mysql", "postgres", "rest"}
    assert set(names) == builtins | {"leaky", "memory", "sequence"}
    types = {t.type: t for t in reply.types}
    for name in builtins:
        assert types[name].plugin == ""
        assert types[name].description
        assert pb.CAPABILITY_READ in types[name].capabilities
        assert all(o.description and o.type for o in types[name].options)
    assert pb.CAPABILITY_WRITE in types["file"].capabilities
    sequence = types["sequence"]
    assert sequence.plugin == "datadog-connector-example"
    assert pb.CAPABILITY_SPLITS in sequence.capabilities
    assert pb.CAPABILITY_WRITE not in sequence.capabilities
    rows = {o.name: o for o in sequence.options}["rows"]
    assert (rows.type, rows.required, rows.secret) == ("integer", True, False)
    start = {o.name: o for o in sequence.options}["start"]
    assert (start.required, start.default_value) == (False, "0")
    # Secret options are flagged, so a UI can mask them.
    for name in ("postgres", "mysql", "leaky"):
        assert any(o.secret for o in types[name].options), name


# --------------------------------------------------------------------------- plugin data path


async def test_plugin_connection_describes_plans_and_reads(
    pstub: pb_grpc.ConnectorServiceStub,
) -> None:
    source = _db_source("numbers", "n")
    described = await pstub.DescribeSource(pb.DescribeSourceRequest(source=source), timeout=TIMEOUT)
    assert decode_schema(described.schema).names == ["n"]
    assert described.HasField("estimated_rows")
    assert described.estimated_rows == 10_000

    plan = await pstub.PlanRead(pb.PlanReadRequest(source=source, max_splits=3), timeout=TIMEOUT)
    assert len(plan.tickets) == 3
    assert sum(t.estimated_rows for t in plan.tickets) == 10_000
    assert plan.tickets[0].description == "rows [0, 3333)"
    parts = [await _read_source(pstub, source, t.ticket) for t in plan.tickets]
    values = [v for part in parts for v in part.column("n").to_pylist()]
    assert values == list(range(10_000))
    whole = await _read_source(pstub, source)
    assert whole.column("n").to_pylist() == values


async def test_plugin_connection_shows_in_list_connections(
    pstub: pb_grpc.ConnectorServiceStub,
) -> None:
    reply = await pstub.ListConnections(pb.ListConnectionsRequest(), timeout=TIMEOUT)
    by_name = {c.name: c for c in reply.connections}
    assert list(by_name) == ["local", "mem", "numbers", "vault"]
    assert by_name["numbers"].description == "Generated numbers"
    assert dict(by_name["numbers"].options) == {"rows": "10000", "start": "0", "step": "1"}
    assert dict(by_name["vault"].options) == {"host": "db.example"}
    assert LEAKY_PASSWORD not in str(reply)


async def test_read_projection_and_bad_columns(pstub: pb_grpc.ConnectorServiceStub) -> None:
    table = await _read_source(pstub, _db_source("numbers", "n"), columns=["n"])
    assert table.schema.names == ["n"]
    details = await _rpc_error(
        _drain(pstub.Read(pb.ReadRequest(source=_db_source("numbers"), columns=["zz"])))
    )
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_COLUMN")


async def test_plan_read_rejects_negative_max_splits(pstub: pb_grpc.ConnectorServiceStub) -> None:
    request = pb.PlanReadRequest(source=_db_source("numbers"), max_splits=-1)
    details = await _rpc_error(pstub.PlanRead(request, timeout=TIMEOUT))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details.violations] == ["max_splits"]


async def test_source_kind_must_match_the_connection_type(
    pstub: pb_grpc.ConnectorServiceStub,
) -> None:
    for call in (
        pstub.DescribeSource(pb.DescribeSourceRequest(source=_db_source("local")), timeout=TIMEOUT),
        pstub.PlanRead(pb.PlanReadRequest(source=_db_source("local")), timeout=TIMEOUT),
        _drain(pstub.Read(pb.ReadRequest(source=_db_source("local")), timeout=TIMEOUT)),
    ):
        details = await _rpc_error(call)
        assert (details.code, details.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "CONNECTION_TYPE_MISMATCH",
        )
        assert [v.field for v in details.violations] == ["source.database.connection"]
    file_on_db = step_pb2.SourceSpec(file=step_pb2.FileSource(connection="numbers", path="a.csv"))
    details = await _rpc_error(
        pstub.DescribeSource(pb.DescribeSourceRequest(source=file_on_db), timeout=TIMEOUT)
    )
    assert [v.field for v in details.violations] == ["source.file.connection"]


async def test_source_without_kind_or_connection_names_the_field(
    pstub: pb_grpc.ConnectorServiceStub,
) -> None:
    details = await _rpc_error(pstub.DescribeSource(pb.DescribeSourceRequest(), timeout=TIMEOUT))
    assert (details.reason, [v.field for v in details.violations]) == (
        "REQUIRED_FIELD_MISSING",
        ["source"],
    )
    details = await _rpc_error(
        pstub.PlanRead(pb.PlanReadRequest(source=_db_source("")), timeout=TIMEOUT)
    )
    assert [v.field for v in details.violations] == ["source.database.connection"]
    details = await _rpc_error(
        pstub.DescribeSource(pb.DescribeSourceRequest(source=_db_source("nope")), timeout=TIMEOUT)
    )
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "CONNECTION_NOT_FOUND")


# ------------------------------------------------------------------ Write via the interface


def _batch_frames(n_batches: int, rows: int = 10, complete: bool = True) -> list[pb.WriteRequest]:
    schema = pa.schema([("n", pa.int64())])
    frames = [pb.WriteRequest(schema=encode_schema(schema))]
    counter = StreamCounter()
    for i in range(n_batches):
        batch = pa.record_batch([pa.array(range(i * rows, (i + 1) * rows), pa.int64())], schema)
        frames.append(pb.WriteRequest(record_batch=encode_batch(batch, counter)))
    if complete:
        frames.append(pb.WriteRequest(complete=counter.complete()))
    return frames


async def test_write_commits_once_and_replays_the_key(
    pstub: pb_grpc.ConnectorServiceStub, fakes: Any
) -> None:
    reply = await _write(pstub, [_db_header("mem", "orders", "k1"), *_batch_frames(3)])
    assert (reply.rows_written, reply.location, reply.replayed) == (
        30,
        "memory://mem/orders",
        False,
    )
    assert fakes.WRITES["memory://mem/orders"].column("n").to_pylist() == list(range(30))
    again = await _write(pstub, [_db_header("mem", "orders", "k1"), *_batch_frames(5)])
    assert (again.rows_written, again.replayed) == (30, True)
    assert fakes.WRITES["memory://mem/orders"].num_rows == 30


async def test_write_batches_iterator_fails_when_the_stream_is_cut_or_garbled(
    pstub: pb_grpc.ConnectorServiceStub, fakes: Any
) -> None:
    details = await _write_error(
        pstub, [_db_header("mem", key="cut"), *_batch_frames(2, complete=False)]
    )
    assert (details.code, details.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "ARROW_STREAM_INCOMPLETE",
    )
    frames = _batch_frames(2)
    details = await _write_error(pstub, [_db_header("mem", key="garbled"), *frames[:2], frames[0]])
    assert (details.code, details.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ARROW_STREAM_PROTOCOL",
    )
    frames[-1].complete.total_rows += 1
    details = await _write_error(pstub, [_db_header("mem", key="mismatch"), *frames])
    assert details.reason == "ARROW_STREAM_MISMATCH"
    # The connection saw each failure through its batches iterator and committed nothing.
    assert [key for key, _, _ in fakes.ABORTED] == ["cut", "garbled", "mismatch"]
    assert fakes.WRITES == {}


async def test_bad_sink_is_refused_before_the_schema_is_sent(
    pstub: pb_grpc.ConnectorServiceStub,
) -> None:
    for header, field in (
        (_db_header("local"), "header.sink.database.connection"),
        (_header("x.parquet", connection="mem"), "header.sink.file.connection"),
    ):
        call = pstub.Write(timeout=TIMEOUT)
        await call.write(header)
        # No schema, no batches, the stream still open: the header alone is refused.
        details = await _rpc_error(call)
        assert (details.code, details.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "CONNECTION_TYPE_MISMATCH",
        )
        assert [v.field for v in details.violations] == [field]
    call = pstub.Write(timeout=TIMEOUT)
    await call.write(_db_header("missing"))
    details = await _rpc_error(call)
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "CONNECTION_NOT_FOUND")


async def test_read_only_plugin_refuses_writes(pstub: pb_grpc.ConnectorServiceStub) -> None:
    details = await _write_error(pstub, [_db_header("numbers"), *_batch_frames(1)])
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SINK_UNSUPPORTED")


# --------------------------------------------------------------------------- TestConnection


async def _test_named(stub: pb_grpc.ConnectorServiceStub, name: str) -> pb.TestConnectionResponse:
    return await stub.TestConnection(pb.TestConnectionRequest(name=name), timeout=TIMEOUT)


async def _test_inline(
    stub: pb_grpc.ConnectorServiceStub, type_name: str, **options: str
) -> pb.TestConnectionResponse:
    inline = pb.InlineConnection(type=type_name, options=options)
    return await stub.TestConnection(pb.TestConnectionRequest(inline=inline), timeout=TIMEOUT)


async def test_test_connection_named(pstub: pb_grpc.ConnectorServiceStub, data_root: Path) -> None:
    reply = await _test_named(pstub, "numbers")
    assert (reply.ok, reply.message, reply.reason) == (True, "generates 10000 rows", "")
    assert reply.latency_ms >= 0
    reply = await _test_named(pstub, "local")
    assert reply.ok, reply.message
    details = await _rpc_error(_test_named(pstub, "nope"))
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "CONNECTION_NOT_FOUND")
    details = await _rpc_error(pstub.TestConnection(pb.TestConnectionRequest(), timeout=TIMEOUT))
    assert (details.code, details.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUIRED_FIELD_MISSING",
    )


async def test_test_connection_failure_is_a_redacted_answer(
    pstub: pb_grpc.ConnectorServiceStub,
) -> None:
    reply = await _test_named(pstub, "vault")
    assert (reply.ok, reply.reason) == (False, "AUTHENTICATION_FAILED")
    assert LEAKY_PASSWORD not in reply.message
    assert reply.message == "password '***' rejected by db.example"


async def test_test_connection_inline(pstub: pb_grpc.ConnectorServiceStub, data_root: Path) -> None:
    reply = await _test_inline(pstub, "file", root=str(data_root))
    assert reply.ok, reply.message
    reply = await _test_inline(pstub, "sequence", rows="5")
    assert (reply.ok, reply.message) == (True, "generates 5 rows")
    reply = await _test_inline(pstub, "file", root=str(data_root / "missing"))
    assert (reply.ok, reply.reason) == (False, "CONFIG_INVALID")
    reply = await _test_inline(pstub, "s3", bucket="b")
    assert (reply.ok, reply.reason) == (False, "CONFIG_INVALID")
    assert "'s3' is not a known connector type" in reply.message
    reply = await _test_inline(pstub, "sequence", rows="5", colour="red")
    assert (reply.ok, reply.reason) == (False, "CONFIG_INVALID")
    assert "unknown option(s) colour; allowed: batch_rows, rows, start, step" in reply.message
    reply = await _test_inline(pstub, "sequence")
    assert (reply.ok, reply.reason) == (False, "CONFIG_INVALID")
    assert "needs option(s) rows" in reply.message


async def test_test_connection_inline_secrets_are_masked_and_not_kept(
    pstub: pb_grpc.ConnectorServiceStub,
) -> None:
    bad, good = f"bad-{uuid.uuid4().hex}", f"good-{uuid.uuid4().hex}"
    reply = await _test_inline(pstub, "leaky", host="h", password=bad)
    assert (reply.ok, reply.reason, reply.message) == (
        False,
        "AUTHENTICATION_FAILED",
        "password '***' rejected by h",
    )
    reply = await _test_inline(pstub, "leaky", host="h", password=good)
    assert (reply.ok, reply.message) == (True, "logged in to h with ***")
    # Client-given secrets are masked during the call only, not registered for good.
    assert redact(good) == good
    # The server's environment and files are not the client's to read.
    reply = await _test_inline(pstub, "leaky", host="h", password="${env:LEAKY_PASSWORD}")
    assert (reply.ok, reply.reason) == (False, "CONFIG_INVALID")
    assert "only allowed in the file" in reply.message
    assert LEAKY_PASSWORD not in reply.message


async def test_test_connection_inline_against_the_real_databases(
    stub: pb_grpc.ConnectorServiceStub,
) -> None:
    reply = await _test_inline(stub, "postgres", dsn="postgresql://postgres@127.0.0.1:5432/test")
    assert reply.ok, reply.message
    reply = await _test_inline(
        stub, "mysql", host="127.0.0.1", user="root", password="", database="test"
    )
    assert reply.ok, reply.message
    secret = f"pw-{uuid.uuid4().hex}"
    reply = await _test_inline(
        stub, "mysql", host="127.0.0.1", user="root", password=secret, database="test"
    )
    assert (reply.ok, reply.reason) == (False, "AUTHENTICATION_FAILED"), reply.message
    assert secret not in reply.message
    reply = await _test_inline(
        stub,
        "postgres",
        dsn=f"postgresql://postgres:{secret}@127.0.0.1:1/test",
        connect_timeout="2",
    )
    assert (reply.ok, reply.reason) == (False, "SOURCE_UNAVAILABLE"), reply.message
    assert secret not in reply.message


async def test_errors_from_connections_never_carry_secrets(
    pstub: pb_grpc.ConnectorServiceStub,
) -> None:
    read = _drain(pstub.Read(pb.ReadRequest(source=_db_source("vault", "t")), timeout=TIMEOUT))
    write = _write(pstub, [_db_header("vault"), *_batch_frames(1)])
    describe = pstub.DescribeSource(
        pb.DescribeSourceRequest(source=_db_source("vault", "t")), timeout=TIMEOUT
    )
    for call in (read, write, describe):
        details = await _rpc_error(call)
        assert (details.code, details.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "AUTHENTICATION_FAILED",
        )
        assert details.message == "password '***' rejected by db.example"
        assert details.metadata == {"password": "***"}


# ------------------------------------------------------------- DescribeSource/PlanRead on files


async def test_describe_plan_and_read_a_file_by_tickets(
    stub: pb_grpc.ConnectorServiceStub, data_root: Path
) -> None:
    expected = _table(120_000)
    (data_root / "parts").mkdir()
    pq.write_table(expected.slice(0, 70_000), data_root / "parts" / "a.parquet")
    pq.write_table(expected.slice(70_000), data_root / "parts" / "b.parquet")
    source = step_pb2.SourceSpec(file=step_pb2.FileSource(path="parts/a.parquet"))
    described = await stub.DescribeSource(pb.DescribeSourceRequest(source=source), timeout=TIMEOUT)
    assert decode_schema(described.schema).equals(expected.schema)

    source = step_pb2.SourceSpec(file=step_pb2.FileSource(path="parts"))
    plan = await stub.PlanRead(
        pb.PlanReadRequest(source=source, columns=["amount", "id"]), timeout=TIMEOUT
    )
    assert decode_schema(plan.schema).names == ["amount", "id"]
    assert len(plan.tickets) >= 2
    parts = [
        await _read_source(stub, source, t.ticket, columns=["amount", "id"]) for t in plan.tickets
    ]
    got = pa.concat_tables(parts).sort_by("id")
    assert got.equals(expected.select(["amount", "id"]))


async def test_describe_missing_file_is_not_found(stub: pb_grpc.ConnectorServiceStub) -> None:
    source = step_pb2.SourceSpec(file=step_pb2.FileSource(path="nope.parquet"))
    details = await _rpc_error(
        stub.DescribeSource(pb.DescribeSourceRequest(source=source), timeout=TIMEOUT)
    )
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "SOURCE_NOT_FOUND")


# --------------------------------------------------------------------------- reload


async def _until(condition: Callable[[], Awaitable[bool]], seconds: float = 8) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _names(stub: pb_grpc.ConnectorServiceStub) -> list[str]:
    reply = await stub.ListConnections(pb.ListConnectionsRequest(), timeout=TIMEOUT)
    return [c.name for c in reply.connections]


async def test_reload_on_file_change_keeps_inflight_streams_on_the_old_connection(
    fakes: Any, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    path = tmp_path / "connectors.yaml"
    path.write_text(
        "connections:\n"
        "  local: {type: file, root: data}\n"
        "  mem: {type: memory, rows: 300000, batch_rows: 1000}\n"
    )
    config = load_config(path, tmp_path, registry=load_registry())
    server = await build_server(config, reload_interval=0.05)
    await server.start()
    try:
        async with insecure_channel(server.address) as channel:
            stub = pb_grpc.ConnectorServiceStub(channel)
            call = stub.Read(pb.ReadRequest(source=_db_source("mem", "t")), timeout=TIMEOUT)
            schema = decode_schema((await call.read()).schema)
            first = await call.read()
            assert first.WhichOneof("frame") == "record_batch"

            path.write_text(
                "connections:\n"
                "  local: {type: file, root: data}\n"
                "  mem: {type: memory, rows: 10}\n"
                "  extra: {type: sequence, rows: 3}\n"
            )

            async def reloaded() -> bool:
                return "extra" in await _names(stub)

            await _until(reloaded)
            # New calls see the new connection...
            assert (await _read_source(stub, _db_source("mem", "t"))).num_rows == 10
            # ...while the stream that started before goes on with the old one.
            assert "mem" not in fakes.CLOSED
            rest = []  # read() as above: a call is either read() or iterated, never both
            while (frame := await call.read()) is not grpc.aio.EOF:
                rest.append(frame)
            batches = [first, *rest[:-1]]
            rows = sum(decode_batch(f.record_batch, schema).num_rows for f in batches)
            assert rows == 300_000
            assert rest[-1].complete.total_rows == 300_000

            async def closed() -> bool:
                return fakes.CLOSED == ["mem"]

            await _until(closed)

            # A broken file is logged and ignored: the running config stays.
            path.write_text("connections:\n  mem: {type: memory, rowz: 1}\n")

            async def failed() -> bool:
                return server.live.reloads["failed"] >= 1

            await _until(failed)
            assert await _names(stub) == ["extra", "local", "mem"]
    finally:
        await server.stop(grace=1)
    assert sorted(fakes.CLOSED) == ["mem", "mem"]  # the new one closed on stop


def _start_main(config: Path, log: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    popen = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "datadog_platform.connector.main",
            "--listen",
            "127.0.0.1:0",
            "--config",
            str(config),
            "--log-level",
            "INFO",
        ],
        cwd=config.parent,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env=env,
    )
    assert popen.stdout is not None
    line = popen.stdout.readline()
    match = re.search(r"listening on (\S+)", line)
    if not match:
        popen.kill()
        raise AssertionError(f"the connector did not start: {line!r}\n{log.read_text()}")
    return popen, match.group(1)


async def test_main_reloads_on_sighup_and_its_logs_never_hold_a_secret(
    plugin_site: Path, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    path = tmp_path / "connectors.yaml"
    template = (
        "connections:\n"
        "  local: {{type: file, root: data}}\n"
        "  vault: {{type: leaky, host: db.example, password: '${{env:LEAKY_PASSWORD}}'}}\n"
        # Real drivers: a refused PostgreSQL port and a wrong MariaDB password.
        "  warehouse: {{type: postgres, dsn: 'postgresql://postgres:${{env:PG_BAD}}@127.0.0.1:1/x'}}\n"
        "  shop: {{type: mysql, host: 127.0.0.1, user: root, password: '${{env:MY_BAD}}', "
        "database: test}}\n"
        "  {name}: {{type: sequence, rows: 5}}\n"
    )
    path.write_text(template.format(name="alpha"))
    log = tmp_path / "connector.log"
    pg_bad, my_bad = f"pg-{uuid.uuid4().hex}", f"my-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "LEAKY_PASSWORD": LEAKY_PASSWORD,
        "PG_BAD": pg_bad,
        "MY_BAD": my_bad,
        "PYTHONPATH": os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")]),
    }
    popen, address = _start_main(path, log, env)
    try:
        async with insecure_channel(address) as channel:
            stub = pb_grpc.ConnectorServiceStub(channel)
            assert await _names(stub) == ["alpha", "local", "shop", "vault", "warehouse"]
            reply = await _test_named(stub, "vault")
            assert (reply.ok, reply.reason) == (False, "AUTHENTICATION_FAILED")
            assert LEAKY_PASSWORD not in reply.message
            reply = await _test_named(stub, "warehouse")
            assert (reply.ok, reply.reason) == (False, "SOURCE_UNAVAILABLE"), reply.message
            assert pg_bad not in reply.message
            reply = await _test_named(stub, "shop")
            assert (reply.ok, reply.reason) == (False, "AUTHENTICATION_FAILED"), reply.message
            assert my_bad not in reply.message
            for name in ("warehouse", "shop"):
                details = await _rpc_error(
                    _drain(stub.Read(pb.ReadRequest(source=_db_source(name, "t")), timeout=TIMEOUT))
                )
                assert details.code in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.UNAUTHENTICATED,
                ), details
                assert pg_bad not in details.message
                assert my_bad not in details.message
            details = await _rpc_error(
                _drain(stub.Read(pb.ReadRequest(source=_db_source("vault")), timeout=TIMEOUT))
            )
            assert LEAKY_PASSWORD not in details.message

            # Same size, same mtime, same inode: only SIGHUP can make it re-read the file.
            before = path.stat()
            with path.open("r+") as out:
                out.write(template.format(name="omega"))
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
            popen.send_signal(signal.SIGHUP)

            async def renamed() -> bool:
                return await _names(stub) == ["local", "omega", "shop", "vault", "warehouse"]

            await _until(renamed)

            # An ordinary edit is picked up by the watcher, no signal needed.
            path.write_text(path.read_text() + "  beta: {type: sequence, rows: 1}\n")

            async def added() -> bool:
                return "beta" in await _names(stub)

            await _until(added)
            reply = await _test_named(stub, "beta")
            assert reply.ok
    finally:
        popen.send_signal(signal.SIGTERM)
        assert popen.wait(timeout=20) == 0
    text = log.read_text()
    for secret in (LEAKY_PASSWORD, pg_bad, my_bad):
        assert secret not in text
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    reloads = [e for e in events if e["event"] == "config.reloaded"]
    assert [e["trigger"] for e in reloads] == ["SIGHUP", "file changed"]
    leaks = [e for e in events if e["event"] == "leaky.login_failed"]
    assert leaks
    assert all(e["password"] == "***" for e in leaks)
    assert "login with *** failed" in text  # the driver's stdlib log line, redacted

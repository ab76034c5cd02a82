"""Exactly-once file writes across a connector process killed mid-write (DESIGN.md §5).

The connector runs as a real process (``python -m datadog_platform.connector.main``).
A large write is streamed to it and the process is SIGKILLed while it is writing:
the target must be exactly as before (old content intact; whatever the dead writer
left is hidden and never read as data). A new process then receives the replay of
the same write (same idempotency key): the target holds the new rows exactly once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from arrow_streams import table_of
from service_process import ServiceProcess, connector_process

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.connector.files import is_temp_name
from datadog_platform.core.arrow_frames import (
    StreamCounter,
    encode_batch,
    encode_schema,
)
from datadog_platform.core.channels import insecure_channel

TIMEOUT = 60
BATCH_ROWS = 20_000
BATCHES = 48  # ~60 MiB: the kill comes half-way, while the file is being written


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def connectors(root: Path, tmp_path: Path) -> Iterator[Callable[[], ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start() -> ServiceProcess:
        connector = connector_process("--root", str(root), log=tmp_path / "connector.log")
        started.append(connector)
        return connector

    yield start
    for connector in started:
        connector.stop()


_PAYLOAD = pa.array(["payload-" + "x" * 40] * BATCH_ROWS)
_REGIONS = [pa.array([r] * BATCH_ROWS) for r in ("north", "south", "east", "west")]


def _batch(index: int, offset: int) -> pa.RecordBatch:
    """Rows ``offset + index * BATCH_ROWS ...`` (~1 MiB), all of one region."""
    start = offset + index * BATCH_ROWS
    ids = pa.array(range(start, start + BATCH_ROWS), pa.int64())
    return pa.record_batch({"id": ids, "region": _REGIONS[index % 4], "payload": _PAYLOAD})


def _new_rows(offset: int) -> Iterator[pa.RecordBatch]:
    return (_batch(i, offset) for i in range(BATCHES))


def _frames(
    sink: step_pb2.FileSink, key: str, batches: Iterator[pa.RecordBatch]
) -> Iterator[pb.WriteRequest]:
    counter = StreamCounter()
    first = next(batches)
    yield pb.WriteRequest(
        header=pb.WriteHeader(sink=step_pb2.SinkSpec(file=sink), idempotency_key=key)
    )
    yield pb.WriteRequest(schema=encode_schema(first.schema))
    yield pb.WriteRequest(record_batch=encode_batch(first, counter))
    for batch in batches:
        yield pb.WriteRequest(record_batch=encode_batch(batch, counter))
    yield pb.WriteRequest(complete=counter.complete())


async def _write(address: str, sink: step_pb2.FileSink, key: str, offset: int) -> pb.WriteResponse:
    async with insecure_channel(address) as channel:
        stub = pb_grpc.ConnectorServiceStub(channel)
        return await stub.Write(_frames(sink, key, _new_rows(offset)), timeout=TIMEOUT)


async def _write_and_kill(
    connector: ServiceProcess,
    sink: step_pb2.FileSink,
    key: str,
    offset: int,
    writing: Callable[[], bool],
) -> None:
    """Stream the write; once the server is writing (``writing()``) and half sent, SIGKILL it."""
    async with insecure_channel(connector.address) as channel:
        stub = pb_grpc.ConnectorServiceStub(channel)
        call = stub.Write(timeout=TIMEOUT)

        async def stream() -> None:
            for sent, frame in enumerate(_frames(sink, key, _new_rows(offset)), start=1):
                await call.write(frame)
                if sent == BATCHES // 2:
                    for _ in range(200):
                        if writing():
                            break
                        await asyncio.sleep(0.05)
                    assert writing(), "the server never started writing"
                    connector.kill()
            await call

        # The client sees a broken stream (UNAVAILABLE, or INTERNAL from a failed send).
        with pytest.raises(grpc.aio.AioRpcError):
            await stream()


async def _read(address: str, path: str) -> pa.Table:
    request = pb.ReadRequest(source=step_pb2.SourceSpec(file=step_pb2.FileSource(path=path)))
    async with insecure_channel(address) as channel:
        stub = pb_grpc.ConnectorServiceStub(channel)
        frames = [frame async for frame in stub.Read(request, timeout=TIMEOUT)]
    return table_of(frames)


def _names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def _files(directory: Path) -> list[str]:
    return [str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()]


def _tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def _hidden(directory: Path) -> list[str]:
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if any(part.startswith((".", "_")) for part in p.relative_to(directory).parts)
    )


def _new_ids(offset: int) -> list[int]:
    return list(range(offset, offset + BATCHES * BATCH_ROWS))


async def test_single_file_survives_a_killed_writer_and_the_replay_lands_once(
    root: Path, connectors: Callable[[], ServiceProcess]
) -> None:
    out = root / "out"
    out.mkdir()
    old = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "region": ["a", "b", "c"]})
    pq.write_table(old, out / "big.parquet")
    before = (out / "big.parquet").read_bytes()
    sink = step_pb2.FileSink(path="out/big.parquet")
    key = "run-7/stage-1/big"

    def temp_has_data() -> bool:
        return any(is_temp_name(n) and (out / n).stat().st_size > 0 for n in _names(out))

    await _write_and_kill(connectors(), sink, key, 0, temp_has_data)
    assert (out / "big.parquet").read_bytes() == before  # untouched
    leftovers = [n for n in _names(out) if n != "big.parquet"]
    assert leftovers  # the killed writer's temporary...
    assert all(is_temp_name(n) for n in leftovers)  # ...is hidden, never data

    second = connectors()
    assert (await _read(second.address, "out")).equals(old)  # a directory read skips it
    reply = await _write(second.address, sink, key, 0)
    assert (reply.rows_written, reply.replayed) == (BATCHES * BATCH_ROWS, False)
    table = pq.read_table(out / "big.parquet")
    assert table.column("id").to_pylist() == _new_ids(0)
    assert sorted(p.name for p in out.iterdir()) == [
        "big.parquet"
    ]  # the dead writer's temp is gone


async def test_partitioned_append_survives_a_killed_writer_and_the_replay_lands_once(
    root: Path, connectors: Callable[[], ServiceProcess]
) -> None:
    sink = step_pb2.FileSink(
        path="sales",
        format=step_pb2.FILE_FORMAT_PARQUET,
        partition_by=["region"],
        mode=step_pb2.WRITE_MODE_APPEND,
    )
    first = connectors()
    committed = await _write(first.address, sink, "run-1/stage-1/sales", 0)
    assert committed.rows_written == BATCHES * BATCH_ROWS
    files_before = _tree(root / "sales")

    def staging_has_data() -> bool:
        return any(
            is_temp_name(n) and any((root / n / f).stat().st_size > 0 for f in _files(root / n))
            for n in _names(root)
        )

    offset = 10_000_000
    await _write_and_kill(first, sink, "run-2/stage-1/sales", offset, staging_has_data)
    assert _tree(root / "sales") == files_before
    assert all(is_temp_name(n) for n in _names(root) if n != "sales")

    second = connectors()
    ids = (await _read(second.address, "sales")).column("id").to_pylist()
    assert sorted(ids) == _new_ids(0)
    reply = await _write(second.address, sink, "run-2/stage-1/sales", offset)
    assert (reply.rows_written, reply.replayed) == (BATCHES * BATCH_ROWS, False)
    again = await _write(second.address, sink, "run-2/stage-1/sales", offset)
    assert (again.rows_written, again.replayed) == (BATCHES * BATCH_ROWS, True)
    ids = (await _read(second.address, "sales")).column("id").to_pylist()
    assert sorted(ids) == _new_ids(0) + _new_ids(offset)  # each row exactly once
    assert _names(root) == ["sales"]  # the dead writer's staging directory is gone
    ledger = [f"_datadog/appends/{n}" for n in _names(root / "sales" / "_datadog" / "appends")]
    assert _hidden(root / "sales") == ["_datadog", "_datadog/appends", *ledger]

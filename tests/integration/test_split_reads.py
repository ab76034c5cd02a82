"""Split reads: the executor plans a source into tickets and reads them concurrently,
in ticket order, through real connector and executor services over gRPC."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from executor_slots import wait_for_free_slot
from google.protobuf import json_format

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as cpb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc
from datadog_platform.api.executor.v1 import executor_service_pb2 as pb
from datadog_platform.api.executor.v1 import executor_service_pb2_grpc
from datadog_platform.connector.app import build_server as build_connector
from datadog_platform.connector.config import parse_config
from datadog_platform.core.channels import insecure_channel
from datadog_platform.executor.app import ExecutorConfig
from datadog_platform.executor.app import build_server as build_executor
from datadog_platform.executor.data_plane import GrpcDataPlane

PG_DSN = os.environ.get("DATADOG_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SPLITS = 3


def task_request(*steps: dict[str, Any], stage: str = "out") -> pb.ExecuteTaskRequest:
    return pb.ExecuteTaskRequest(
        run_id="run-1",
        stage_id=stage,
        attempt=1,
        steps=[json_format.ParseDict(s, step_pb2.Step()) for s in steps],
    )


def file_source(path: str) -> step_pb2.SourceSpec:
    return step_pb2.SourceSpec(file=step_pb2.FileSource(connection="local", path=path))


def write_numbered(path: Path, rows: int, row_group_rows: int) -> None:
    """``id`` 0..rows-1 in order and a padding column, in row groups of ``row_group_rows``."""
    table = pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "note": pa.array([f"row {i:08d} " + "x" * 40 for i in range(rows)]),
        }
    )
    pq.write_table(table, path, row_group_size=row_group_rows)


def open_fds(path: Path) -> int:
    """File descriptors of this process (the in-process connector's) open on ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            continue  # closed meanwhile
    return count


@pytest.fixture
async def pg_table() -> AsyncIterator[str]:
    """A uniquely named PostgreSQL table in the test database, dropped afterwards."""
    name = f"dd_split_{uuid.uuid4().hex[:10]}"
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=10)
    except Exception as exc:  # the server is part of the test environment: never skip
        pytest.fail(f"PostgreSQL must run at {PG_DSN}: {exc}")
    try:
        yield name
    finally:
        await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        await conn.close()


@pytest.fixture
async def connector(data_root: Path) -> AsyncIterator[str]:
    """A connector with the file connection ``local`` and the PostgreSQL connection ``pg``."""
    document = {
        "connections": {
            "local": {"type": "file", "root": str(data_root)},
            "pg": {"type": "postgres", "dsn": PG_DSN, "connect_timeout": 5},
        }
    }
    server = await build_connector(parse_config(document, data_root))
    await server.start()
    yield server.address
    await server.stop(grace=1)


@pytest.fixture(params=[True, False], ids=["parquet-passthrough", "arrow-batches"])
async def executor(
    connector: str, request: pytest.FixtureRequest
) -> AsyncIterator[executor_service_pb2_grpc.ExecutorServiceStub]:
    """An executor with one slot (a new stage is accepted only once the last one unwound)
    splitting every read into up to SPLITS tickets; reading Parquet as stored column
    chunks or as batches the connector decoded."""
    config = ExecutorConfig(
        connector_address=connector,
        slots=1,
        read_splits=SPLITS,
        parquet_passthrough=request.param,
    )
    server = await build_executor(config)
    await server.start()
    try:
        async with insecure_channel(server.address) as channel:
            yield executor_service_pb2_grpc.ExecutorServiceStub(channel)
    finally:
        await server.stop(grace=1)


async def tickets_of(address: str, source: step_pb2.SourceSpec) -> int:
    async with insecure_channel(address) as channel:
        stub = connector_service_pb2_grpc.ConnectorServiceStub(channel)
        request = cpb.PlanReadRequest(source=source, max_splits=SPLITS)
        return len((await stub.PlanRead(request, timeout=30)).tickets)


async def run_to_file(
    stub: executor_service_pb2_grpc.ExecutorServiceStub, source: dict[str, Any], out: str
) -> pb.ExecuteTaskResponse:
    steps = (
        {"name": "src", "source": source},
        {"name": "out", "inputs": ["src"], "sink": {"file": {"path": out}}},
    )
    events = [event async for event in stub.ExecuteTask(task_request(*steps), timeout=60)]
    last = events[-1]
    assert last.WhichOneof("event") == "succeeded", last
    return last


async def test_a_split_parquet_read_returns_every_row_once_in_order(
    connector: str, executor: executor_service_pb2_grpc.ExecutorServiceStub, data_root: Path
) -> None:
    rows = 60_000
    write_numbered(data_root / "numbered.parquet", rows, row_group_rows=5_000)  # 12 groups
    assert await tickets_of(connector, file_source("numbered.parquet")) == SPLITS

    done = await run_to_file(executor, {"file": {"path": "numbered.parquet"}}, "out/n.parquet")

    assert done.succeeded.metrics.rows_read == rows
    ids = pq.read_table(data_root / "out" / "n.parquet").column("id").to_pylist()
    assert ids == list(range(rows))


async def test_the_data_plane_keeps_ticket_order_with_a_small_read_ahead(
    connector: str, data_root: Path
) -> None:
    """Later splits wait in bounded queues while the first is consumed; order holds."""
    rows = 40_000
    write_numbered(data_root / "numbered.parquet", rows, row_group_rows=2_000)
    async with insecure_channel(connector) as channel:
        plane = GrpcDataPlane(channel, connector, timeout=30, read_splits=4, read_ahead=1)
        async with plane.read(file_source("numbered.parquet"), ["id"]) as stream:
            assert stream.schema.names == ["id"]
            batches = [batch async for batch in stream.batches]
    assert [b.schema.names for b in batches] == [["id"]] * len(batches)
    assert pa.Table.from_batches(batches).column("id").to_pylist() == list(range(rows))


async def test_a_split_postgres_read_returns_every_row_once_in_order(
    connector: str,
    executor: executor_service_pb2_grpc.ExecutorServiceStub,
    data_root: Path,
    pg_table: str,
) -> None:
    rows = 30_000
    conn = await asyncpg.connect(PG_DSN, timeout=10)
    try:
        await conn.execute(f'CREATE TABLE "{pg_table}" (id int8 PRIMARY KEY, note text)')
        await conn.copy_records_to_table(
            pg_table, records=[(i, f"row {i}") for i in range(rows)], columns=["id", "note"]
        )
        await conn.execute(f'ANALYZE "{pg_table}"')
    finally:
        await conn.close()
    source = step_pb2.SourceSpec(database=step_pb2.DatabaseSource(connection="pg", table=pg_table))
    assert await tickets_of(connector, source) == SPLITS

    database = {"database": {"connection": "pg", "table": pg_table}}
    done = await run_to_file(executor, database, "out/pg.parquet")

    assert done.succeeded.metrics.rows_read == rows
    table = pq.read_table(data_root / "out" / "pg.parquet")
    assert table.column("id").to_pylist() == list(range(rows))
    assert table.column("note").to_pylist() == [f"row {i}" for i in range(rows)]


async def test_cancelling_mid_split_read_closes_every_stream_within_a_second(
    executor: executor_service_pb2_grpc.ExecutorServiceStub,
    data_root: Path,
    request: pytest.FixtureRequest,
) -> None:
    source_path = data_root / "big.parquet"
    await asyncio.to_thread(write_numbered, source_path, 2_000_000, 100_000)
    steps = (
        {"name": "src", "source": {"file": {"path": "big.parquet"}}},
        {"name": "out", "inputs": ["src"], "sink": {"file": {"path": "out/big.parquet"}}},
    )
    call = executor.ExecuteTask(task_request(*steps), timeout=60)
    loop = asyncio.get_running_loop()
    if request.node.callspec.params["executor"] is False:
        # Every split's stream opens at once at the connector (one file handle each).
        opened = loop.time()
        while open_fds(source_path) < SPLITS:
            assert loop.time() - opened < 10, f"{open_fds(source_path)} of {SPLITS} splits open"
            await asyncio.sleep(0.005)
    else:
        # Stored Parquet chunks are sent faster than the executor decodes them: a
        # split may be sent whole, its file closed, before rows are written.
        async for event in call:
            if event.WhichOneof("event") == "progress" and event.progress.metrics.rows_written:
                break

    started = loop.time()
    call.cancel()
    await wait_for_free_slot(executor, started)
    while open_fds(source_path):  # the connector closes each split's file
        assert loop.time() - started < 1.0, "a split's stream stayed open"
        await asyncio.sleep(0.01)

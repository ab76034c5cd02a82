"""Exactly-once PostgreSQL writes across a connector process killed mid-write (DESIGN.md §5).

The connector runs as a real process (``python -m datadog_platform.connector.main``)
with a config file naming the real PostgreSQL on 127.0.0.1:5432. A large OVERWRITE is
streamed to it and the process is SIGKILLed while the server is inside its COPY: the
target keeps its old rows and the idempotency key is not recorded. A new process
then receives the replay of the same write (same key): the target holds the new rows
exactly once, and a second replay is answered from the ledger without writing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pyarrow as pa
import pytest
import yaml
from service_process import connector_process

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.core.arrow_frames import StreamCounter, encode_batch, encode_schema
from datadog_platform.core.channels import insecure_channel

DSN = "postgresql://postgres@127.0.0.1:5432/test"
TIMEOUT = 60
BATCH_ROWS = 20_000
BATCHES = 50  # one million rows
KEY = "run-1/stage-1/sink"


def _batch(index: int) -> pa.RecordBatch:
    ids = range(index * BATCH_ROWS, (index + 1) * BATCH_ROWS)
    payload = pa.array([f"row {i:>40}" for i in ids])
    return pa.record_batch({"id": pa.array(ids, pa.int64()), "payload": payload})


async def _frames(
    table: str, halfway: asyncio.Event | None = None, resume: asyncio.Event | None = None
) -> AsyncIterator[pb.WriteRequest]:
    """A write of BATCHES batches; pauses halfway (signalling it) until ``resume``."""
    sink = step_pb2.SinkSpec(
        database=step_pb2.DatabaseSink(
            connection="pg", table=table, mode=step_pb2.WRITE_MODE_OVERWRITE
        )
    )
    yield pb.WriteRequest(header=pb.WriteHeader(sink=sink, idempotency_key=KEY))
    yield pb.WriteRequest(schema=encode_schema(_batch(0).schema))
    counter = StreamCounter()
    for index in range(BATCHES):
        if index == BATCHES // 2 and halfway is not None and resume is not None:
            halfway.set()
            await resume.wait()
        yield pb.WriteRequest(record_batch=encode_batch(_batch(index), counter))
    yield pb.WriteRequest(complete=counter.complete())


async def _copy_running(db: asyncpg.Connection, table: str) -> bool:
    """Whether a backend is inside the connector's COPY into ``table``."""
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND query ILIKE 'COPY%' AND position($1 in query) > 0",
            table,
        )
    )


async def test_killed_connector_leaves_postgres_target_unchanged_then_replay_is_exactly_once(
    tmp_path: Path,
) -> None:
    try:
        db = await asyncpg.connect(DSN, timeout=10)
    except Exception as exc:  # the server is part of the test environment: never skip
        pytest.fail(f"PostgreSQL must run on 127.0.0.1:5432 (user postgres, db test): {exc}")
    suffix = uuid.uuid4().hex[:10]
    table, ledger = f"dd_exactly_once_{suffix}", f"dd_ledger_{suffix}"
    config = tmp_path / "connector.yaml"
    config.write_text(
        yaml.safe_dump(
            {"connections": {"pg": {"type": "postgres", "dsn": DSN, "ledger_table": ledger}}}
        )
    )
    log = tmp_path / "connector.log"
    try:
        await db.execute(f'CREATE TABLE "{table}" (id bigint, payload text)')
        await db.execute(f"INSERT INTO \"{table}\" VALUES (-1, 'old'), (-2, 'old'), (-3, 'old')")

        # 1. Kill the connector while PostgreSQL is receiving the COPY.
        connector = connector_process("--config", str(config), log=log)
        try:
            halfway, resume = asyncio.Event(), asyncio.Event()
            async with insecure_channel(connector.address) as channel:
                stub = pb_grpc.ConnectorServiceStub(channel)
                call = asyncio.ensure_future(
                    stub.Write(_frames(table, halfway, resume), timeout=TIMEOUT)
                )
                await asyncio.wait_for(halfway.wait(), TIMEOUT)
                deadline = time.monotonic() + TIMEOUT
                while not await _copy_running(db, table):
                    assert time.monotonic() < deadline, "the COPY never started"
                    await asyncio.sleep(0.02)
                connector.kill()
                # The call ends on its own once the connection drops. Resuming the
                # frames first would race a send into the dead connection, which grpc
                # may report as INTERNAL "Internal error from Core" (grpc/grpc#36066).
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await asyncio.wait_for(call, TIMEOUT)
                resume.set()
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            connector.stop()

        # PostgreSQL rolls the dead session's transaction back once it sees the socket close.
        deadline = time.monotonic() + TIMEOUT
        while await _copy_running(db, table):
            assert time.monotonic() < deadline, "the dead connector's COPY is still running"
            await asyncio.sleep(0.05)
        rows = await db.fetch(f'SELECT id, payload FROM "{table}" ORDER BY id')
        assert rows == [(-3, "old"), (-2, "old"), (-1, "old")]
        assert not await db.fetchval(
            f'SELECT count(*) FROM "{ledger}" WHERE idempotency_key = $1', KEY
        )

        # 2. A new process gets the replay: every row exactly once; then a no-op replay.
        connector = connector_process("--config", str(config), log=log)
        try:
            async with insecure_channel(connector.address) as channel:
                stub = pb_grpc.ConnectorServiceStub(channel)
                first = await stub.Write(_frames(table), timeout=TIMEOUT)
                assert (first.rows_written, first.replayed) == (BATCHES * BATCH_ROWS, False)
                again = await stub.Write(_frames(table), timeout=TIMEOUT)
                assert (again.rows_written, again.replayed) == (BATCHES * BATCH_ROWS, True)
        finally:
            connector.stop()
        count, distinct, low, high = await db.fetchrow(
            f'SELECT count(*), count(DISTINCT id), min(id), max(id) FROM "{table}"'
        )
        assert (count, distinct, low, high) == (
            BATCHES * BATCH_ROWS,
            BATCHES * BATCH_ROWS,
            0,
            BATCHES * BATCH_ROWS - 1,
        )
        recorded = await db.fetchrow(
            f'SELECT target, rows_written FROM "{ledger}" WHERE idempotency_key = $1', KEY
        )
        assert tuple(recorded) == (f"public.{table}", BATCHES * BATCH_ROWS)
    finally:
        await db.execute(f'DROP TABLE IF EXISTS "{table}"')
        await db.execute(f'DROP TABLE IF EXISTS "{ledger}"')
        await db.close()

"""Exactly-once MySQL/MariaDB writes across a connector process killed mid-write (DESIGN.md §5).

The connector runs as a real process with a config naming the real MariaDB on
127.0.0.1:3306. A large OVERWRITE is streamed to it and the process is SIGKILLed
while its transaction holds modified rows: MariaDB rolls it back, so the target keeps
its old rows and the idempotency key is not recorded. A new process then receives
the replay of the same write: the target holds the new rows exactly once, and a
second replay is answered from the ledger without writing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncmy
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

TIMEOUT = 60
BATCH_ROWS = 20_000
BATCHES = 20
KEY = "run-1/stage-1/sink"


def _batch(index: int) -> pa.RecordBatch:
    ids = range(index * BATCH_ROWS, (index + 1) * BATCH_ROWS)
    return pa.record_batch(
        {"id": pa.array(ids, pa.int64()), "payload": pa.array([f"row {i}" for i in ids])}
    )


async def _frames(
    table: str, halfway: asyncio.Event | None = None, resume: asyncio.Event | None = None
) -> AsyncIterator[pb.WriteRequest]:
    """A write of BATCHES batches; pauses halfway (signalling it) until ``resume``."""
    sink = step_pb2.SinkSpec(
        database=step_pb2.DatabaseSink(
            connection="my", table=table, mode=step_pb2.WRITE_MODE_OVERWRITE
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


async def _query(db: Any, sql: str) -> list[tuple[Any, ...]]:
    async with db.cursor() as cursor:
        await cursor.execute(sql)
        return list(await cursor.fetchall())


async def _write_transaction_threads(db: Any) -> list[int]:
    """Sessions other than ours whose transaction has modified rows (the connector's write)."""
    rows = await _query(
        db,
        "SELECT trx_mysql_thread_id FROM information_schema.innodb_trx "
        "WHERE trx_rows_modified > 0 AND trx_mysql_thread_id <> CONNECTION_ID()",
    )
    return [int(row[0]) for row in rows]


async def test_killed_connector_leaves_mysql_target_unchanged_then_replay_is_exactly_once(
    tmp_path: Path,
) -> None:
    try:
        db = await asyncmy.connect(
            host="127.0.0.1", port=3306, user="root", password="", database="test",
            autocommit=True, connect_timeout=10,
        )  # fmt: skip
    except Exception as exc:  # the server is part of the test environment: never skip
        pytest.fail(f"MariaDB must run on 127.0.0.1:3306 (root, db test): {exc}")
    suffix = uuid.uuid4().hex[:10]
    table, ledger = f"dd_exactly_once_{suffix}", f"dd_ledger_{suffix}"
    config = tmp_path / "connector.yaml"
    connection = {
        "type": "mysql", "host": "127.0.0.1", "port": 3306, "user": "root",
        "password": "", "database": "test", "ledger_table": ledger,
    }  # fmt: skip
    config.write_text(yaml.safe_dump({"connections": {"my": connection}}))
    log = tmp_path / "connector.log"
    try:
        await _query(db, f"CREATE TABLE `{table}` (id BIGINT PRIMARY KEY, payload TEXT)")
        await _query(db, f"INSERT INTO `{table}` VALUES (-1, 'old'), (-2, 'old'), (-3, 'old')")

        # 1. Kill the connector while its transaction holds modified rows.
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
                while not await _write_transaction_threads(db):
                    assert time.monotonic() < deadline, "the write never reached the server"
                    await asyncio.sleep(0.1)
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

        # MariaDB rolls the dead session's transaction back once it sees the socket close.
        # Poll gently: querying innodb_trx in a tight loop starves that rollback here.
        deadline = time.monotonic() + TIMEOUT
        while await _write_transaction_threads(db):
            assert time.monotonic() < deadline, "the dead connector's transaction is still open"
            await asyncio.sleep(0.5)
        rows = await _query(db, f"SELECT id, payload FROM `{table}` ORDER BY id")
        assert rows == [(-3, "old"), (-2, "old"), (-1, "old")]
        ledger_rows = await _query(db, f"SHOW TABLES LIKE '{ledger}'")
        if ledger_rows:
            assert await _query(db, f"SELECT * FROM `{ledger}`") == []

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
        total = BATCHES * BATCH_ROWS
        counts = await _query(
            db, f"SELECT count(*), count(DISTINCT id), min(id), max(id) FROM `{table}`"
        )
        assert tuple(int(v) for v in counts[0]) == (total, total, 0, total - 1)
    finally:
        await _query(db, f"DROP TABLE IF EXISTS `{table}`")
        await _query(db, f"DROP TABLE IF EXISTS `{ledger}`")
        await db.ensure_closed()

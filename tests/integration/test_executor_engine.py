"""The executor's engine end to end: real connector and executor services over gRPC."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from executor_slots import wait_for_free_slot
from google.protobuf import json_format
from service_process import ServiceProcess

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2 as pb
from datadog_platform.api.executor.v1 import executor_service_pb2_grpc
from datadog_platform.core.channels import insecure_channel
from datadog_platform.executor.app import ExecutorConfig, build_server


def request(*steps: dict[str, Any], stage: str = "out") -> pb.ExecuteTaskRequest:
    return pb.ExecuteTaskRequest(
        run_id="run-1",
        stage_id=stage,
        attempt=1,
        steps=[json_format.ParseDict(s, step_pb2.Step()) for s in steps],
    )


def parquet_source(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "source": {"file": {"path": path}}}


def parquet_sink(path: str, after: str) -> dict[str, Any]:
    return {"name": "out", "inputs": [after], "sink": {"file": {"path": path}}}


FILTER_DERIVE = (
    {"name": "keep", "transform": {"filter": {"predicate": "amount > 10"}}},
    {
        "name": "big",
        "transform": {"derive": {"columns": [{"name": "gross", "expr": "amount * 1.2"}]}},
    },
)


async def events_of(
    stub: executor_service_pb2_grpc.ExecutorServiceStub, req: pb.ExecuteTaskRequest
) -> list[pb.ExecuteTaskResponse]:
    return [event async for event in stub.ExecuteTask(req, timeout=120)]


def write_orders(path: Path, rows: int, chunk: int = 500_000) -> int:
    """Generated orders as Parquet (id, amount, country, note); their in-memory bytes."""
    rng = np.random.default_rng(7)
    size = 0
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("amount", pa.float64()),
            ("country", pa.string()),
            ("note", pa.string()),
        ]
    )
    countries = pa.array(rng.choice(np.array(["FR", "DE", "IT", "ES"]), chunk))
    notes = pa.array([f"note {i % 1000:04d} " + "x" * 40 for i in range(chunk)])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, chunk):
            count = min(chunk, rows - start)
            table = pa.table(
                [
                    pa.array(np.arange(start, start + count, dtype=np.int64)),
                    pa.array(rng.uniform(0, 100, count)),
                    countries.slice(0, count),
                    notes.slice(0, count),
                ],
                schema=schema,
            )
            size += table.nbytes
            writer.write_table(table)
    return size


async def test_two_sources_into_one_query_and_a_file(
    executor: executor_service_pb2_grpc.ExecutorServiceStub, data_root: Path
) -> None:
    pq.write_table(pa.table({"id": [1, 2], "amount": [5.0, 50.0]}), data_root / "a.parquet")
    pq.write_table(pa.table({"id": [3], "amount": [500.0]}), data_root / "b.parquet")
    inline = json_format.ParseDict({"rows": [{"id": 4, "amount": 0.5}]}, step_pb2.InlineSource())
    union = (
        "SELECT id, amount, 'a' AS origin FROM a UNION ALL SELECT id, amount, 'b' FROM b "
        "UNION ALL SELECT id, amount, 'c' FROM c"
    )
    events = await events_of(
        executor,
        request(
            parquet_source("a", "a.parquet"),
            parquet_source("b", "b.parquet"),
            {"name": "c", "source": json_format.MessageToDict(step_pb2.SourceSpec(inline=inline))},
            {"name": "u", "inputs": ["a", "b", "c"], "transform": {"sql": {"query": union}}},
            parquet_sink("out/all.parquet", "u"),
        ),
    )
    done = events[-1]
    assert done.WhichOneof("event") == "succeeded", done
    table = pq.read_table(data_root / "out" / "all.parquet").sort_by("id")
    assert table.to_pydict() == {
        "id": [1, 2, 3, 4],
        "amount": [5.0, 50.0, 500.0, 0.5],
        "origin": ["a", "a", "b", "c"],
    }
    assert done.succeeded.metrics.rows_read == 4
    assert done.succeeded.outputs[0].rows_written == 4


async def test_a_binder_error_fails_before_anything_is_written(
    executor: executor_service_pb2_grpc.ExecutorServiceStub, data_root: Path
) -> None:
    pq.write_table(pa.table({"id": [1], "amount": [5.0]}), data_root / "a.parquet")
    events = await events_of(
        executor,
        request(
            parquet_source("a", "a.parquet"),
            {
                "name": "big",
                "transform": {"derive": {"columns": [{"name": "x", "expr": "amount * rate"}]}},
            },
            parquet_sink("out/x.parquet", "big"),
        ),
    )
    failed = events[-1].failed
    assert events[-1].WhichOneof("event") == "failed"
    assert (failed.reason, failed.step, failed.retryable) == ("TRANSFORM_ERROR", "big", False)
    for part in ("'big'", "'x'", "'amount * rate'", '"rate"'):
        assert part in failed.message
    assert failed.metrics.rows_written == 0
    assert not (data_root / "out").exists()


async def test_a_query_reading_few_columns_asks_the_connector_for_those_only(
    executor: executor_service_pb2_grpc.ExecutorServiceStub, data_root: Path
) -> None:
    rows = 20_000
    wide = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "group": pa.array([f"g{i % 3}" for i in range(rows)]),
            "amount": pa.array([float(i % 100) for i in range(rows)]),
            **{
                f"pad{n}": pa.array([f"{n}-{i}-" + "x" * 30 for i in range(rows)]) for n in range(7)
            },
        }
    )
    pq.write_table(wide, data_root / "wide.parquet")
    events = await events_of(
        executor,
        request(
            parquet_source("wide", "wide.parquet"),
            {"name": "keep", "transform": {"filter": {"predicate": "amount >= 50"}}},
            {
                "name": "totals",
                "transform": {
                    "aggregate": {
                        "group_by": ["group"],
                        "aggregates": [{"name": "total", "expr": "sum(amount)"}],
                    }
                },
            },
            parquet_sink("out/totals.parquet", "totals"),
        ),
    )
    done = events[-1]
    assert done.WhichOneof("event") == "succeeded", done
    totals = pq.read_table(data_root / "out" / "totals.parquet").sort_by("group")
    expected = (
        wide.filter(pc.greater_equal(wide["amount"], 50.0))
        .group_by("group")
        .aggregate([("amount", "sum")])
        .sort_by("group")
    )
    assert totals.to_pydict() == {
        "group": expected["group"].to_pylist(),
        "total": expected["amount_sum"].to_pylist(),
    }
    # Every row was read, but only the 2 columns the query uses: far fewer bytes than
    # the 10-column table (the padding columns are most of it).
    metrics = done.succeeded.metrics
    assert metrics.rows_read == rows
    needed = wide.select(["group", "amount"]).nbytes
    assert metrics.bytes_read <= needed * 1.2 < wide.nbytes / 3
    lines = [line.message for event in events for line in event.log.lines]
    assert "reading 2 of 10 columns: group, amount" in lines


@pytest.fixture
async def one_slot(
    connector_address: str,
) -> AsyncIterator[executor_service_pb2_grpc.ExecutorServiceStub]:
    """An executor with one slot: a new stage is accepted only once the last one unwound."""
    server = await build_server(ExecutorConfig(connector_address=connector_address, slots=1))
    await server.start()
    try:
        async with insecure_channel(server.address) as channel:
            yield executor_service_pb2_grpc.ExecutorServiceStub(channel)
    finally:
        await server.stop(grace=1)


async def test_cancelling_mid_stream_stops_within_a_second(
    one_slot: executor_service_pb2_grpc.ExecutorServiceStub, data_root: Path
) -> None:
    await asyncio.to_thread(write_orders, data_root / "orders.parquet", 3_000_000)
    call = one_slot.ExecuteTask(
        request(
            parquet_source("orders", "orders.parquet"),
            *FILTER_DERIVE,
            parquet_sink("out/big.parquet", "big"),
        ),
        timeout=60,
    )
    async for event in call:
        if event.WhichOneof("event") == "progress" and event.progress.metrics.rows_written:
            break
    loop = asyncio.get_running_loop()
    started = loop.time()
    call.cancel()
    await wait_for_free_slot(one_slot, started)
    assert loop.time() - started < 1.0
    await asyncio.sleep(0.5)  # the connector drops a cancelled write's temp file
    assert not await asyncio.to_thread(lambda: list(data_root.rglob("big.parquet")))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


ROWS = 9_000_000  # ~680 MB in memory: over ten times the 64 MB limit


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    "row_group_rows",
    [
        # ~14 MB of stored chunks per row group: the connector decodes them.
        1_000_000,
        # ~7 MB and ~1.4 MB: sent as stored, decoded by the executor (core.parquet_frames),
        # read as one stream.
        500_000,
        100_000,
    ],
)
async def test_memory_stays_bounded_streaming_ten_times_the_memory_limit(
    connector_address: str, data_root: Path, tmp_path: Path, row_group_rows: int
) -> None:
    limit = 64 * 1024 * 1024
    size = await asyncio.to_thread(write_orders, data_root / "orders.parquet", ROWS, row_group_rows)
    assert size > 10 * limit
    pq.write_table(
        pq.read_table(data_root / "orders.parquet").slice(0, 100_000), data_root / "small.parquet"
    )
    process = ServiceProcess(
        "datadog_platform.executor.main",
        "--connector",
        connector_address,
        "--memory-limit",
        "64MB",
        "--metrics-listen",
        "",
        log=tmp_path / "executor.log",
    )
    try:
        async with insecure_channel(process.address) as channel:
            stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)

            def stage(path: str) -> pb.ExecuteTaskRequest:
                return request(
                    parquet_source("orders", path),
                    *FILTER_DERIVE,
                    {"name": "out", "inputs": ["big"], "sink": {"discard": {}}},
                )

            # Warm up: DuckDB, its threads and gRPC's buffers are there before measuring.
            warm = await events_of(stub, stage("small.parquet"))
            assert warm[-1].WhichOneof("event") == "succeeded", warm[-1]
            baseline = rss_bytes(process.process.pid)
            sampler = PeakRss(process.process.pid)
            events = await events_of(stub, stage("orders.parquet"))
            peak = sampler.stop()
        done = events[-1]
        assert done.WhichOneof("event") == "succeeded", done
        assert done.succeeded.metrics.rows_read == ROWS
        # Read as stored, the repeated strings arrive as dictionaries (engine.bridge): the
        # input's bytes are fewer than its decoded size; the query's output is decoded.
        assert done.succeeded.metrics.bytes_written > 10 * limit
        growth = peak - baseline
        print(f"baseline {baseline / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB")
        assert growth < 2 * limit, f"RSS grew by {growth / 2**20:.0f} MiB"
    finally:
        process.stop()

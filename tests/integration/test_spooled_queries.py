"""A query that waits for its whole input reads stored Parquet itself, from a spool
(executor.parquet_spool): real connector and executor services over gRPC."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from google.protobuf import json_format

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2 as pb
from datadog_platform.api.executor.v1 import executor_service_pb2_grpc

ROWS = 30_000
SPOOLED = "the query read the stored Parquet of 'src' itself"


def table(rows: int = ROWS, start: int = 0, ids: Any = None) -> pa.Table:
    ids = range(start, start + rows) if ids is None else [int(i) for i in ids]
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "flag": pa.array([("A", "N", None, "é")[i % 4] for i in ids], pa.string_view()),
            "price": pa.array([Decimal(i) / 100 for i in ids], pa.decimal128(15, 2)),
            "day": pa.array([dt.date(2026, 1, 1) + dt.timedelta(days=i % 700) for i in ids]),
            "at": pa.array([i * 1_000_003 for i in ids], pa.timestamp("us", tz="Europe/Paris")),
            "ok": pa.array([None if i % 5 == 0 else i % 2 == 0 for i in ids]),
            "ratio": pa.array([i / 3 for i in ids], pa.float32()),
        }
    )


async def run(
    stub: executor_service_pb2_grpc.ExecutorServiceStub, path: str, *transforms: dict[str, Any]
) -> tuple[pb.ExecuteTaskResponse, list[str]]:
    steps = [
        {"name": "src", "source": {"file": {"path": path}}},
        *transforms,
        {"name": "out", "sink": {"file": {"path": "out/result.parquet"}}},
    ]
    request = pb.ExecuteTaskRequest(
        run_id="run-1",
        stage_id="out",
        attempt=1,
        steps=[json_format.ParseDict(s, step_pb2.Step()) for s in steps],
    )
    events = [event async for event in stub.ExecuteTask(request, timeout=120)]
    lines = [line.message for event in events for line in event.log.lines]
    return events[-1], lines


SORT = {"name": "ordered", "transform": {"sort": {"keys": [{"column": "id"}]}}}


async def test_a_sort_reads_the_spooled_file_and_keeps_every_value_and_type(
    executor: executor_service_pb2_grpc.ExecutorServiceStub, data_root: Path
) -> None:
    expected = table()
    shuffled = table(ids=np.random.default_rng(3).permutation(ROWS))
    pq.write_table(shuffled, data_root / "in.parquet", row_group_size=4_000)

    done, lines = await run(executor, "in.parquet", SORT)

    assert done.WhichOneof("event") == "succeeded", done
    assert any(line.startswith(SPOOLED) for line in lines), lines
    assert done.succeeded.metrics.rows_read == ROWS
    got = pq.read_table(data_root / "out" / "result.parquet")
    assert got.schema.equals(expected.schema)
    assert got.equals(expected)


async def test_an_aggregate_over_several_files_reads_them_all_once(
    executor: executor_service_pb2_grpc.ExecutorServiceStub, data_root: Path
) -> None:
    (data_root / "parts").mkdir()
    parts = [table(10_000, start) for start in (0, 10_000, 20_000)]
    for n, part in enumerate(parts):
        pq.write_table(part, data_root / "parts" / f"{n}.parquet", row_group_size=3_000)
    aggregate = {
        "name": "totals",
        "transform": {
            "aggregate": {
                "group_by": ["flag"],
                "aggregates": [
                    {"name": "rows", "expr": "count(*)"},
                    {"name": "total", "expr": "sum(price)"},
                    {"name": "last", "expr": 'max("at")'},
                ],
            }
        },
    }

    done, lines = await run(
        executor,
        "parts/*.parquet",
        aggregate,
        {**SORT, "transform": {"sort": {"keys": [{"column": "flag"}]}}},
    )

    assert done.WhichOneof("event") == "succeeded", done
    assert f"{SPOOLED}, from 3 spooled file(s)" in lines
    records = [r for part in parts for r in part.to_pylist()]
    got = {r["flag"]: r for r in pq.read_table(data_root / "out" / "result.parquet").to_pylist()}
    assert set(got) == {"A", "N", None, "é"}
    for flag, totals in got.items():
        rows = [r for r in records if r["flag"] == flag]
        assert totals["rows"] == len(rows)
        assert totals["total"] == sum(r["price"] for r in rows)
        assert totals["last"] == max(r["at"] for r in rows)


async def test_row_groups_sent_as_batches_turn_the_spool_back_into_a_stream(
    executor: executor_service_pb2_grpc.ExecutorServiceStub, data_root: Path
) -> None:
    # File 0 has small row groups (sent as stored); file 1 one row group too big for
    # that (the connector decodes it and sends batches): the spool gives back what it
    # holds, in order, and the query reads a stream.
    (data_root / "mixed").mkdir()
    rng = np.random.default_rng(5)

    def random_rows(rows: int) -> pa.Table:  # incompressible: ~16 bytes a row as stored
        values = rng.integers(10**6, 2 * 10**9, (2, rows))
        return pa.table({"id": pa.array(values[0]), "pad": pa.array(values[1])})

    small, big = random_rows(6_000), random_rows(700_000)
    pq.write_table(small, data_root / "mixed" / "0.parquet", row_group_size=2_000)
    pq.write_table(big, data_root / "mixed" / "1.parquet", row_group_size=700_000)
    assert (
        pq.ParquetFile(data_root / "mixed" / "1.parquet").metadata.row_group(0).total_byte_size
        > 10e6
    )

    done, lines = await run(executor, "mixed/*.parquet", SORT)

    assert done.WhichOneof("event") == "succeeded", done
    assert not any(line.startswith(SPOOLED) for line in lines), lines
    assert done.succeeded.metrics.rows_read == 706_000
    got = pq.read_table(data_root / "out" / "result.parquet")["id"].to_numpy()
    expected = np.sort(np.concatenate([small["id"].to_numpy(), big["id"].to_numpy()]))
    assert np.array_equal(got, expected)


async def test_a_streaming_query_is_not_spooled(
    executor: executor_service_pb2_grpc.ExecutorServiceStub, data_root: Path
) -> None:
    pq.write_table(table(), data_root / "in.parquet", row_group_size=4_000)
    keep = {"name": "keep", "transform": {"filter": {"predicate": "id % 2 = 0"}}}

    done, lines = await run(executor, "in.parquet", keep)

    assert done.WhichOneof("event") == "succeeded", done
    assert not any(line.startswith(SPOOLED) for line in lines), lines
    assert pq.read_table(data_root / "out" / "result.parquet").num_rows == ROWS // 2

"""Stored Parquet row groups spooled to sparse files that DuckDB reads (executor.parquet_spool)."""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datadog_platform.api.common.v1 import arrow_pb2
from datadog_platform.core.parquet_frames import (
    ParquetChunk,
    passthrough_leaves,
    read_chunks,
    read_head,
)
from datadog_platform.executor.parquet_spool import ParquetSpool
from datadog_platform.executor.stored_parquet import StoredParquetStream

ROWS = 20_000
DAY = dt.date(2026, 1, 1)
TOKYO = pa.timestamp("us", tz="Asia/Tokyo")


class Moved:
    rows = 0
    bytes = 0


def orders(rows: int = ROWS) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "flag": pa.array([("A", "N", None)[i % 3] for i in range(rows)], pa.string_view()),
            "note": pa.array([f"note {i} Zoë" for i in range(rows)]),
            "price": pa.array([Decimal(i) / 100 for i in range(rows)], pa.decimal128(15, 2)),
            "day": pa.array(
                [dt.date(2026, 1, 1) + dt.timedelta(days=i % 500) for i in range(rows)]
            ),
            "at": pa.array(
                [i * 1_000_003 for i in range(rows)], pa.timestamp("us", tz="Asia/Tokyo")
            ),
            "ok": pa.array([i % 2 == 0 for i in range(rows)]),
            "ratio": pa.array([i / 7 for i in range(rows)], pa.float32()),
        }
    )


def sent(path: Path, schema: pa.Schema) -> tuple[arrow_pb2.ParquetFile, list[ParquetChunk]]:
    """What a connector sends of ``path`` for ``schema``: the file frame and the chunks."""
    with pa.OSFile(str(path)) as handle:
        parquet = pq.ParquetFile(handle)
        groups = list(range(parquet.num_row_groups))
        leaves = passthrough_leaves(parquet, schema, groups)
        assert leaves is not None
        head = read_head(handle)
        chunks = list(read_chunks(handle, parquet.metadata, leaves, groups))
    return arrow_pb2.ParquetFile(size=head.size, footer=head.footer), chunks


def header(chunk: ParquetChunk) -> arrow_pb2.ParquetRowGroup:
    return arrow_pb2.ParquetRowGroup(
        index=chunk.index, num_rows=chunk.num_rows, offsets=chunk.offsets, lengths=chunk.lengths
    )


async def spool_file(spool: ParquetSpool, path: Path, schema: pa.Schema, skip: int = -1) -> None:
    frame, chunks = sent(path, schema)
    await spool.open_file(frame)
    for chunk in chunks:
        if chunk.index != skip:
            assert await spool.write(header(chunk), memoryview(chunk.data))


def duckdb_types(schema: pa.Schema) -> list[tuple[str, str]]:
    with duckdb.connect() as con:
        con.register("t", schema.empty_table())
        return [(row[0], row[1]) for row in con.sql("DESCRIBE SELECT * FROM t").fetchall()]


def read_spooled(spool: ParquetSpool, schema: pa.Schema) -> pa.Table:
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(spool.relation_sql(duckdb_types(schema))).to_arrow_table()


async def test_whole_files_read_by_duckdb_equal_what_pyarrow_reads(tmp_path: Path) -> None:
    table = orders()
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(table, first, row_group_size=3_000)
    pq.write_table(table.slice(5, 700), second, row_group_size=300)
    columns = ["note", "at", "price", "flag", "day", "id", "ok", "ratio"]
    schema = pa.schema([table.schema.field(c) for c in columns])
    moved = Moved()
    spool = ParquetSpool(str(tmp_path), moved)
    try:
        assert spool.accepts(schema)
        await spool_file(spool, first, schema)
        await spool_file(spool, second, schema)
        assert spool.seal()
        assert spool.files == 2
        assert (moved.rows, moved.bytes > 0) == (ROWS + 700, True)

        got = read_spooled(spool, schema)

        expected = pa.concat_tables(
            [pq.read_table(first, columns=columns), pq.read_table(second, columns=columns)]
        )
        assert got.num_rows == expected.num_rows
        for name in columns:  # DuckDB gives back UTC instants and plain strings
            want = expected.column(name)
            if pa.types.is_string_view(want.type):
                want = want.cast(pa.string())
            assert got.column(name).cast(want.type).to_pylist() == want.to_pylist(), name
    finally:
        spool.close()
    assert not [name for name in os.listdir(tmp_path) if name.startswith("spool-")]


async def test_only_the_chunks_sent_take_disk(tmp_path: Path) -> None:
    table = orders(200_000)
    path = tmp_path / "a.parquet"
    pq.write_table(table, path, row_group_size=50_000)
    schema = pa.schema([table.schema.field("ok")])
    spool = ParquetSpool(str(tmp_path), Moved())
    try:
        await spool_file(spool, path, schema)
        assert spool.seal()
        spooled = [
            os.path.join(root, name)
            for root, _, names in os.walk(tmp_path)
            for name in names
            if root != str(tmp_path)
        ]
        assert len(spooled) == 1
        assert os.stat(spooled[0]).st_size == os.stat(path).st_size
        assert os.stat(spooled[0]).st_blocks * 512 < os.stat(path).st_size / 4
        assert read_spooled(spool, schema).column("ok").to_pylist() == table["ok"].to_pylist()
    finally:
        spool.close()


async def test_a_file_missing_a_row_group_is_given_back_as_batches(tmp_path: Path) -> None:
    table = orders()
    path = tmp_path / "a.parquet"
    pq.write_table(table, path, row_group_size=3_000)
    schema = pa.schema([table.schema.field("id"), table.schema.field("note")])
    moved = Moved()
    spool = ParquetSpool(str(tmp_path), moved)
    stored = StoredParquetStream(schema)
    try:
        await spool_file(spool, path, schema, skip=2)  # e.g. an empty row group, not sent
        assert not spool.seal()
        batches = [batch async for batch in spool.drain(stored)]
    finally:
        stored.close()
        spool.close()
    got = pa.Table.from_batches(batches)
    expected = pq.read_table(path, columns=["id", "note"])
    keep = [i for i in range(ROWS) if not 6_000 <= i < 9_000]
    assert got.to_pylist() == expected.take(keep).to_pylist()
    assert (moved.rows, moved.bytes) == (0, 0), "the stage counts the drained batches"
    assert not spool.active


async def test_the_spool_refuses_what_would_go_over_its_limit(tmp_path: Path) -> None:
    table = orders()
    path = tmp_path / "a.parquet"
    pq.write_table(table, path, row_group_size=3_000)
    frame, chunks = sent(path, table.schema)
    spool = ParquetSpool(str(tmp_path), Moved(), limit_bytes=len(chunks[0].data) + 1)
    try:
        assert not await spool.write(header(chunks[0]), memoryview(chunks[0].data)), "no file"
        await spool.open_file(frame)
        assert await spool.write(header(chunks[0]), memoryview(chunks[0].data))
        assert not await spool.write(header(chunks[1]), memoryview(chunks[1].data))
    finally:
        spool.close()


@pytest.mark.parametrize(
    "kind",
    [
        pa.timestamp("ns"),
        pa.float16(),
        pa.list_(pa.int64()),
        pa.binary(),
        pa.dictionary(pa.int32(), pa.string()),
        pa.decimal256(40, 2),
    ],
    ids=str,
)
def test_types_duckdb_reads_otherwise_are_not_spooled(tmp_path: Path, kind: pa.DataType) -> None:
    spool = ParquetSpool(str(tmp_path), Moved())
    try:
        assert not spool.accepts(pa.schema([("id", pa.int64()), ("x", kind)]))
        assert not spool.active
    finally:
        spool.close()


async def test_a_malformed_footer_is_a_protocol_error(tmp_path: Path) -> None:
    spool = ParquetSpool(str(tmp_path), Moved())
    try:
        with pytest.raises(Exception, match="Parquet footer"):
            await spool.open_file(arrow_pb2.ParquetFile(size=100, footer=b"nonsense"))
    finally:
        spool.close()

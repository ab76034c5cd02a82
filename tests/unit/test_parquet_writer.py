"""The connector's Parquet writer (connector.parquet_writer): encodings chosen per column."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datadog_platform.connector.parquet_writer import (
    MAX_DISTINCT_RATIO,
    SMALL_DICTIONARY,
    ParquetFileWriter,
    dictionary_columns,
)

ROWS = 60_000


def _table(rows: int = ROWS) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "flag": pa.array([("A", "N", "R")[i % 3] if i % 7 else None for i in range(rows)]),
            "price": pa.array([Decimal(i) / 100 for i in range(rows)], pa.decimal128(15, 2)),
            "rate": pa.array([Decimal(i % 5) / 10 for i in range(rows)], pa.decimal128(4, 1)),
            "wide": pa.array([Decimal(i) for i in range(rows)], pa.decimal128(30, 0)),
            "comment": pa.array([f"row {i} Zoë" for i in range(rows)]),
            "day": pa.array(
                [dt.date(2026, 1, 1) + dt.timedelta(days=i % 3_000) for i in range(rows)]
            ),
            "tags": pa.array([["x", "y"][: i % 3] for i in range(rows)]),
            "kind": pa.array([("a", "b")[i % 2] for i in range(rows)]).dictionary_encode(),
        }
    )


def _write(table: pa.Table, row_group: int | None = None) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    writer = ParquetFileWriter(sink, table.schema, "snappy")
    size = row_group or max(table.num_rows, 1)
    for offset in range(0, table.num_rows, size):
        part = table.slice(offset, size)
        writer.write_table(part, row_group_size=part.num_rows)
    writer.close()
    return sink.getvalue()


def _encodings(data: pa.Buffer) -> dict[str, set[str]]:
    metadata = pq.read_metadata(pa.BufferReader(data))
    out: dict[str, set[str]] = {}
    for group in range(metadata.num_row_groups):
        for index in range(metadata.num_columns):
            chunk = metadata.row_group(group).column(index)
            out.setdefault(chunk.path_in_schema, set()).update(chunk.encodings)
    return out


def test_round_trip_keeps_values_and_types() -> None:
    table = _table()
    data = _write(table, row_group=25_000)
    assert pq.read_table(pa.BufferReader(data)).equals(table)


def test_only_repeating_columns_are_dictionary_encoded() -> None:
    encodings = _encodings(_write(_table()))
    dictionary = {path for path, used in encodings.items() if "RLE_DICTIONARY" in used}
    # id/price/wide/comment: all values differ; day: 3,000 in 60,000 rows (a small
    # dictionary); nested keeps pyarrow's default; dictionary-typed stays so.
    assert dictionary == {"flag", "rate", "day", "tags.list.element", "kind"}


def test_small_decimals_are_stored_as_integers() -> None:
    metadata = pq.read_metadata(pa.BufferReader(_write(_table())))
    physical = {
        metadata.schema.column(i).path: metadata.schema.column(i).physical_type
        for i in range(metadata.num_columns)
    }
    assert physical["price"] == "INT64"
    assert physical["rate"] == "INT32"
    assert physical["wide"] == "FIXED_LEN_BYTE_ARRAY"  # 30 digits do not fit in 64 bits


def test_an_empty_file_is_valid() -> None:
    table = _table(10).schema.empty_table()
    data = _write(table)
    assert pq.read_table(pa.BufferReader(data)).equals(table)


def test_small_dictionaries_count_however_small_the_sample() -> None:
    few = pa.table({"v": pa.array(range(SMALL_DICTIONARY), pa.int32())})
    assert dictionary_columns(few) == ["v"]  # all distinct, but a small dictionary
    assert dictionary_columns(pa.table({"v": pa.array(range(SMALL_DICTIONARY + 1))})) == []


def test_dotted_names_or_no_rows_keep_pyarrow_default() -> None:
    assert dictionary_columns(pa.table({"a.b": [1, 1, 1]})) is True
    assert dictionary_columns(_table(10).schema.empty_table()) is True


@pytest.mark.parametrize(
    ("distinct", "expected"), [(10, ["v"]), (5_000, ["v"]), (6_001, []), (30_000, [])]
)
def test_the_choice_follows_the_distinct_ratio(distinct: int, expected: list[str]) -> None:
    assert MAX_DISTINCT_RATIO * ROWS == 6_000
    assert SMALL_DICTIONARY < 6_000
    table = pa.table({"v": pa.array([i % distinct for i in range(ROWS)], pa.int32())})
    assert dictionary_columns(table) == expected

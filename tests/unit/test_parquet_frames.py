"""Parquet column chunks sent as stored and decoded by the reader (core.parquet_frames)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datadog_platform.core import parquet_frames
from datadog_platform.core.parquet_frames import (
    ParquetChunk,
    ParquetDecoder,
    ParquetFileHead,
    passthrough_leaves,
    read_chunks,
    read_head,
)

ROWS = 30_000


def _table(rows: int = ROWS) -> pa.Table:
    utc = pa.timestamp("us", tz="Europe/Paris")
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "flag": pa.array([("A", "N", "R")[i % 3] if i % 7 else None for i in range(rows)]),
            "comment": pa.array([f"row {i} Zoë ✓" for i in range(rows)]),
            "price": pa.array([Decimal(i) / 100 for i in range(rows)], pa.decimal128(15, 2)),
            "day": pa.array(
                [dt.date(2026, 1, 1) + dt.timedelta(days=i % 900) for i in range(rows)]
            ),
            "at": pa.array([i * 1_000_003 for i in range(rows)], utc),
            "tags": pa.array([["x", "y", None][: i % 4] for i in range(rows)]),
            "point": pa.array([{"x": i, "y": None if i % 5 else -i} for i in range(rows)]),
            "view": pa.array([f"v{i % 50}" for i in range(rows)], pa.string_view()),
        }
    )


def _write(path: Path, table: pa.Table, row_group_size: int = 7_000) -> Path:
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def _send(path: Path, schema: pa.Schema, row_groups: list[int] | None = None) -> list[object]:
    """What a connector sends for ``schema``'s columns: the head, then the chunks."""
    with pa.OSFile(str(path)) as handle:
        parquet = pq.ParquetFile(handle)
        groups = row_groups if row_groups is not None else list(range(parquet.num_row_groups))
        leaves = passthrough_leaves(parquet, schema, groups)
        assert leaves is not None
        return [read_head(handle), *read_chunks(handle, parquet.metadata, leaves, groups)]


def _decode(sent: list[object], schema: pa.Schema, dictionaries: bool) -> list[pa.RecordBatch]:
    head, *chunks = sent
    assert isinstance(head, ParquetFileHead)
    decoder = ParquetDecoder(head, schema, dictionaries=dictionaries)
    return [batch for chunk in chunks for batch in decoder.batches(chunk)]  # type: ignore[arg-type]


def _receive(sent: list[object], schema: pa.Schema) -> pa.Table:
    batches = _decode(sent, schema, dictionaries=False)
    assert all(batch.schema.equals(schema) for batch in batches)
    return pa.Table.from_batches(batches, schema)


def _stream_schema(table: pa.Table, names: list[str]) -> pa.Schema:
    """The connector's stream schema: the columns asked for, views read as plain strings."""
    fields = []
    for name in names:
        kind = table.schema.field(name).type
        fields.append(pa.field(name, pa.string() if kind == pa.string_view() else kind))
    return pa.schema(fields)


def test_decoded_chunks_equal_the_columns_read_and_cast(tmp_path: Path) -> None:
    table = _table()
    path = _write(tmp_path / "t.parquet", table)
    names = ["view", "at", "flag", "tags", "price", "point", "comment", "day", "id"]
    schema = _stream_schema(table, names)

    got = _receive(_send(path, schema), schema)

    assert got.equals(pq.read_table(path, columns=names).cast(schema))
    assert got.column("comment").to_pylist()[:2] == ["row 0 Zoë ✓", "row 1 Zoë ✓"]


def test_only_the_needed_column_chunks_are_sent(tmp_path: Path) -> None:
    table = _table()
    path = _write(tmp_path / "t.parquet", table)
    schema = _stream_schema(table, ["flag", "day"])

    head, *chunks = _send(path, schema)

    metadata = pq.read_metadata(path)
    needed = sum(
        metadata.row_group(g).column(c).total_compressed_size
        for g in range(metadata.num_row_groups)
        for c in (1, 4)  # flag, day
    )
    assert sum(len(c.data) for c in chunks) == needed  # type: ignore[attr-defined]
    assert len(chunks) == metadata.num_row_groups == 5
    assert head.size == path.stat().st_size  # type: ignore[attr-defined]


def test_a_subset_of_row_groups_reads_only_their_rows(tmp_path: Path) -> None:
    table = _table()
    path = _write(tmp_path / "t.parquet", table)
    schema = _stream_schema(table, ["id"])

    got = _receive(_send(path, schema, [1, 3]), schema)

    assert got.column("id").to_pylist() == [*range(7_000, 14_000), *range(21_000, 28_000)]


def test_row_groups_decode_batch_by_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet_frames, "TARGET_BATCH_BYTES", 64 << 10)
    table = _table()
    path = _write(tmp_path / "t.parquet", table, row_group_size=ROWS)
    schema = _stream_schema(table, ["id", "comment"])

    head, chunk = _send(path, schema)
    batches = list(ParquetDecoder(head, schema).batches(chunk))  # type: ignore[arg-type]

    assert len(batches) > 1
    assert pa.Table.from_batches(batches).equals(table.select(["id", "comment"]))


def test_empty_row_groups_send_no_chunk(tmp_path: Path) -> None:
    table = _table(0)
    path = _write(tmp_path / "empty.parquet", table)
    schema = _stream_schema(table, ["id"])
    head, *chunks = _send(path, schema)
    assert chunks == []
    assert isinstance(head, ParquetFileHead)


@pytest.mark.parametrize(
    ("names", "override"),
    [
        (["id", "missing"], None),  # a column the file lacks
        (["id"], pa.schema([pa.field("id", pa.string())])),  # a type needing a real cast
        (["flag"], pa.schema([pa.field("flag", pa.binary())])),  # string to binary
    ],
)
def test_files_needing_more_than_decoding_are_not_sent_as_stored(
    tmp_path: Path, names: list[str], override: pa.Schema | None
) -> None:
    table = _table(100)
    path = _write(tmp_path / "t.parquet", table)
    schema = override or pa.schema([pa.field(n, pa.int64()) for n in names])
    assert passthrough_leaves(pq.ParquetFile(path), schema, [0]) is None


def test_row_groups_too_big_for_a_frame_are_not_sent_as_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = _table()
    path = _write(tmp_path / "t.parquet", table)
    schema = _stream_schema(table, ["comment"])
    assert passthrough_leaves(pq.ParquetFile(path), schema, [0]) is not None
    monkeypatch.setattr(parquet_frames, "MAX_CHUNK_BYTES", 1_000)
    assert passthrough_leaves(pq.ParquetFile(path), schema, [0]) is None


def test_large_strings_and_string_views_stored_read_as_the_stream_type(tmp_path: Path) -> None:
    table = pa.table({"s": pa.array(["a", None, "ccc"] * 1000, pa.large_string())})
    path = _write(tmp_path / "t.parquet", table)
    schema = pa.schema([pa.field("s", pa.string())])
    got = _receive(_send(path, schema), schema)
    assert got.column("s").type == pa.string()
    assert got.column("s").to_pylist() == ["a", None, "ccc"] * 1000


def test_strings_stored_with_a_dictionary_can_stay_dictionaries(tmp_path: Path) -> None:
    table = pa.table(
        {
            "flag": pa.array(["A", None, "R", "é"] * 3000, pa.string_view()),
            "comment": pa.array([f"unique {i}" for i in range(12_000)]),
            "id": pa.array(range(12_000), pa.int64()),
        }
    )
    path = tmp_path / "t.parquet"
    # "comment" is stored with a dictionary as big as its values (or without one):
    # it decodes to its stream type.
    pq.write_table(table, path, row_group_size=5_000, use_dictionary=["flag", "comment"])
    pq.write_table(table, tmp_path / "plain.parquet", row_group_size=5_000, use_dictionary=False)
    schema = table.schema
    for dictionaries in (True, False):
        batches = _decode(_send(path, schema), schema, dictionaries)
        plain = _decode(_send(tmp_path / "plain.parquet", schema), schema, dictionaries)
        assert all(batch.schema.equals(schema) for batch in plain)
        flag = pa.dictionary(pa.int32(), pa.string()) if dictionaries else pa.string_view()
        expected = pa.schema([("flag", flag), ("comment", pa.string()), ("id", pa.int64())])
        assert all(batch.schema.equals(expected) for batch in batches)
        got = pa.Table.from_batches(batches)
        assert got.column("flag").to_pylist() == table.column("flag").to_pylist()
        assert got.column("comment").to_pylist() == table.column("comment").to_pylist()


def test_a_dictionary_typed_stream_column_stays_a_dictionary(tmp_path: Path) -> None:
    table = pa.table({"c": pa.array(["x", "y", None, "x"] * 500).dictionary_encode()})
    path = _write(tmp_path / "t.parquet", table)  # as pandas writes a categorical
    for dictionaries in (True, False):
        batches = _decode(_send(path, table.schema), table.schema, dictionaries)
        assert all(batch.schema.equals(table.schema) for batch in batches)
        assert pa.Table.from_batches(batches).equals(table.combine_chunks())


def test_missing_pieces_wrong_counts_and_bad_footers_are_errors(tmp_path: Path) -> None:
    table = _table()
    path = _write(tmp_path / "t.parquet", table)
    schema = _stream_schema(table, ["id", "comment"])
    head, chunk, *_ = _send(path, schema)
    assert isinstance(head, ParquetFileHead)
    assert isinstance(chunk, ParquetChunk)
    decoder = ParquetDecoder(head, schema)

    cut = ParquetChunk(chunk.index, chunk.num_rows, chunk.offsets[:1], chunk.lengths[:1], b"")
    with pytest.raises(ValueError, match="do not add up"):
        list(decoder.batches(cut))
    short = chunk.lengths[0] // 2
    partial = ParquetChunk(
        chunk.index, chunk.num_rows, chunk.offsets[:1], (short,), chunk.data[:short]
    )
    with pytest.raises(OSError, match="did not send the bytes at offsets"):
        list(decoder.batches(partial))
    miscounted = ParquetChunk(
        chunk.index, chunk.num_rows + 1, chunk.offsets, chunk.lengths, chunk.data
    )
    with pytest.raises(ValueError, match="held 7000 rows, not 7001"):
        list(decoder.batches(miscounted))
    elsewhere = ParquetChunk(99, chunk.num_rows, chunk.offsets, chunk.lengths, chunk.data)
    with pytest.raises(ValueError, match="no row group 99"):
        list(decoder.batches(elsewhere))
    with pytest.raises(ValueError, match="footer is malformed"):
        ParquetDecoder(ParquetFileHead(head.size, head.footer[:-1]), schema)
    with pytest.raises(ValueError, match="no column 'nope'"):
        ParquetDecoder(head, pa.schema([pa.field("nope", pa.int64())]))


@pytest.mark.parametrize("content", [b"", b"PAR1", b"not a parquet file at all"])
def test_a_file_without_a_parquet_footer_is_invalid(content: bytes) -> None:
    with pytest.raises(pa.ArrowInvalid, match="not a Parquet file"):
        read_head(pa.BufferReader(content))

"""The file and artifact connectors on a local root, through the ``base.Connection`` interface."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import gzip
import json
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from datadog_platform.api.common.v1 import predicate_pb2, step_pb2
from datadog_platform.connector.base import Capability, ReadScope, WriteOutcome
from datadog_platform.connector.file_formats import Compression, FileFormat, split_extension
from datadog_platform.connector.file_paths import FileRoot, glob_regex, temp_name
from datadog_platform.connector.file_writers import _exchange, key_token, split_by_partition
from datadog_platform.connector.files import (
    ARTIFACT_CONNECTOR_TYPE,
    FILE_CONNECTOR_TYPE,
    ArtifactConnection,
    FileConnection,
    is_temp_name,
)
from datadog_platform.core.arrow_frames import TARGET_BATCH_BYTES
from datadog_platform.core.errors import DomainError, ErrorCode

P = predicate_pb2
CSV, PARQUET, JSON, NDJSON = (
    step_pb2.FILE_FORMAT_CSV,
    step_pb2.FILE_FORMAT_PARQUET,
    step_pb2.FILE_FORMAT_JSON,
    step_pb2.FILE_FORMAT_NDJSON,
)
APPEND = step_pb2.WRITE_MODE_APPEND


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root.resolve()


@pytest.fixture
def conn(root: Path) -> FileConnection:
    return FILE_CONNECTOR_TYPE.create("local", {"root": str(root)}, root)


def _error(info: pytest.ExceptionInfo[DomainError]) -> tuple[ErrorCode, str]:
    return info.value.code, info.value.reason


def _sample(n: int = 6) -> pa.Table:
    """Unicode, empty strings, NULLs in every column type that round-trips through every format."""
    names = ["Amélie", "", None, "Zoë 日本", "Łukasz", 'quote " and, comma']
    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "name": pa.array([names[i % len(names)] for i in range(n)], pa.string()),
            "amount": pa.array([None if i % 4 == 1 else i * 1.25 for i in range(n)], pa.float64()),
            "ok": pa.array([None if i % 5 == 2 else i % 2 == 0 for i in range(n)], pa.bool_()),
        }
    )


async def _aiter(batches: Iterable[pa.RecordBatch]) -> AsyncIterator[pa.RecordBatch]:
    for batch in batches:
        yield batch


async def _broken(batches: Iterable[pa.RecordBatch]) -> AsyncIterator[pa.RecordBatch]:
    for batch in batches:
        yield batch
    raise ConnectionError("the stream broke")


async def _write(
    conn: FileConnection, table: pa.Table, path: str, key: str = "run/stage/out", **sink: Any
) -> WriteOutcome:
    spec = step_pb2.FileSink(path=path, **sink)
    return await conn.write(spec, key, table.schema, _aiter(table.to_batches(max_chunksize=4)))


async def _read(
    conn: FileConnection,
    path: str,
    columns: Iterable[str] = (),
    predicate: predicate_pb2.Predicate | None = None,
    ticket: bytes = b"",
    fmt: int = 0,
) -> pa.Table:
    scope = ReadScope(tuple(columns), predicate or predicate_pb2.Predicate())
    source = step_pb2.FileSource(path=path, format=fmt)
    async with conn.read(source, scope, ticket) as stream:
        batches = [b async for b in stream.batches]
    for batch in batches:
        assert batch.schema.equals(stream.schema)
    return pa.Table.from_batches(batches, schema=stream.schema)


def _cmp(column: str, op: int, *values: Any) -> predicate_pb2.Comparison:
    literals = []
    for value in values:
        if isinstance(value, bool):
            literals.append(P.Literal(bool_value=value))
        elif isinstance(value, int):
            literals.append(P.Literal(int_value=value))
        elif isinstance(value, float):
            literals.append(P.Literal(double_value=value))
        elif isinstance(value, decimal.Decimal):
            literals.append(P.Literal(decimal_value=str(value)))
        elif isinstance(value, dt.datetime):
            literals.append(P.Literal(timestamp_value=value.isoformat()))
        elif isinstance(value, dt.date):
            literals.append(P.Literal(date_value=value.isoformat()))
        else:
            literals.append(P.Literal(string_value=value))
    return P.Comparison(column=column, operator=op, values=literals)


def _pred(*comparisons: predicate_pb2.Comparison) -> predicate_pb2.Predicate:
    return P.Predicate(all_of=list(comparisons))


def _entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


def _tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- type and config


def test_type_info_documents_options_and_capabilities() -> None:
    info = FILE_CONNECTOR_TYPE.info
    assert (info.type, FILE_CONNECTOR_TYPE.spec_kind) == ("file", "file")
    options = {o.name: o for o in info.options}
    assert options["root"].required
    assert options["secret_access_key"].secret
    assert {"endpoint_url", "region", "access_key_id"} <= set(options)
    assert {Capability.PREDICATE_PUSHDOWN, Capability.SPLITS} <= info.capabilities
    assert (ARTIFACT_CONNECTOR_TYPE.info.type, ARTIFACT_CONNECTOR_TYPE.spec_kind) == (
        "artifact",
        "artifact",
    )


def test_create_resolves_relative_roots_and_shows_no_secrets(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    conn = FILE_CONNECTOR_TYPE.create("local", {"root": "data"}, tmp_path)
    assert conn.public_options() == {"root": str((tmp_path / "data").resolve())}
    s3 = FILE_CONNECTOR_TYPE.create(
        "lake",
        {
            "root": "s3://bucket/x",
            "endpoint_url": "http://127.0.0.1:9",
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": "very-secret-value",
        },
        tmp_path,
    )
    shown = json.dumps(s3.public_options())
    assert "s3://bucket/x" in shown
    assert "very-secret-value" not in shown
    assert "AKIDEXAMPLE" not in shown


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({}, "'root' is required"),
        ({"root": "missing"}, "does not exist"),
        ({"root": "ftp://host/x"}, "not supported"),
        ({"root": ".", "endpoint_url": "http://x"}, "only applies to an s3:// root"),
        ({"root": "s3://"}, "s3://bucket/prefix"),
        ({"root": "s3://b/x", "endpoint_url": "gopher://x"}, "not an http(s) URL"),
        ({"root": "s3://b/x", "access_key_id": "AKID"}, "secret_access_key"),
    ],
)
def test_bad_options_are_config_invalid(
    tmp_path: Path, options: dict[str, str], fragment: str
) -> None:
    with pytest.raises(DomainError) as info:
        FILE_CONNECTOR_TYPE.create("x", options, tmp_path)
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert fragment in info.value.message


async def test_test_checks_the_root_is_listable_and_writable(
    conn: FileConnection, root: Path
) -> None:
    message = await conn.test()
    assert "probe" in message
    assert _entries(root) == []
    await asyncio.to_thread(root.chmod, 0o500)
    try:
        if os.geteuid() != 0:  # root ignores permissions
            with pytest.raises(DomainError) as info:
                await conn.test()
            assert info.value.code == ErrorCode.PERMISSION_DENIED
    finally:
        await asyncio.to_thread(root.chmod, 0o700)


# --------------------------------------------------------------------------- paths


def test_resolve_stays_inside_the_root(root: Path) -> None:
    file_root = FileRoot.local_dir(root)
    assert file_root.resolve("a/b.csv", "source.file", "local") == str(root / "a" / "b.csv")
    assert file_root.resolve("a/../b.csv", "source.file", "local") == str(root / "b.csv")


@pytest.mark.parametrize("path", ["../x.csv", "a/../../x.csv", "..", "/etc/passwd"])
async def test_escapes_are_refused_for_reads_and_writes(
    conn: FileConnection, root: Path, path: str
) -> None:
    with pytest.raises(DomainError) as info:
        await _read(conn, path, fmt=CSV)
    assert _error(info) == (ErrorCode.PERMISSION_DENIED, "PATH_OUTSIDE_ROOT")
    assert repr(path) in info.value.message
    assert str(root.parent) not in info.value.message
    before = _entries(root.parent)
    with pytest.raises(DomainError) as info:
        await _write(conn, _sample(), path, format=CSV)
    assert _error(info) == (ErrorCode.PERMISSION_DENIED, "PATH_OUTSIDE_ROOT")
    assert _entries(root.parent) == before


def test_s3_paths_are_confined_too() -> None:
    s3 = FILE_CONNECTOR_TYPE.create(
        "lake", {"root": "s3://bucket/x", "endpoint_url": "http://127.0.0.1:9"}, Path(".")
    )
    assert s3.root.resolve("a/../b.csv", "source.file", "lake") == "bucket/x/b.csv"
    for path in ("../y/secret.csv", "a/../../y", "/bucket/y"):
        with pytest.raises(DomainError) as info:
            s3.root.resolve(path, "source.file", "lake")
        assert _error(info) == (ErrorCode.PERMISSION_DENIED, "PATH_OUTSIDE_ROOT")


async def test_symlinks_escaping_the_root_are_refused(
    conn: FileConnection, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    (root / "link.csv").symlink_to(outside)
    (root / "dir").symlink_to(tmp_path)
    (root / "sub").mkdir()
    (root / "sub" / "ok.csv").write_text("a\n2\n")
    (root / "sub" / "leak.csv").symlink_to(outside)
    for path in ("link.csv", "dir/secret.csv", "sub", "sub/*.csv"):
        with pytest.raises(DomainError) as info:
            await _read(conn, path, fmt=CSV)
        assert _error(info) == (ErrorCode.PERMISSION_DENIED, "PATH_OUTSIDE_ROOT")
        assert str(outside) not in info.value.message


async def test_symlink_inside_the_root_is_followed(conn: FileConnection, root: Path) -> None:
    (root / "real.csv").write_text("a\n1\n")
    (root / "alias.csv").symlink_to(root / "real.csv")
    assert (await _read(conn, "alias.csv")).to_pylist() == [{"a": 1}]
    # In a directory read too, once, even through a symlink loop.
    (root / "d").mkdir()
    (root / "d" / "x.csv").write_text("a\n2\n")
    (root / "d" / "up").symlink_to(root / "d")
    assert (await _read(conn, "d")).to_pylist() == [{"a": 2}]


async def test_empty_path_names_the_field(conn: FileConnection) -> None:
    with pytest.raises(DomainError) as info:
        await _read(conn, "")
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "REQUIRED_FIELD_MISSING")
    assert [v.field for v in info.value.violations] == ["source.file.path"]


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("*.csv", ["a.csv"], ["d/a.csv", "a.csvx"]),
        ("**/*.csv", ["a.csv", "d/a.csv", "d/e/a.csv"], ["a.json"]),
        ("d/**", ["d/a", "d/e/f"], ["x/d/a"]),
        ("part-?.parquet", ["part-1.parquet"], ["part-10.parquet"]),
        ("[ab]*.json", ["a1.json", "b.json"], ["c.json"]),
        ("[!ab]*.json", ["c.json"], ["a.json"]),
    ],
)
def test_glob_patterns(pattern: str, matches: list[str], misses: list[str]) -> None:
    regex = glob_regex(pattern)
    assert all(regex.match(m) for m in matches)
    assert not any(regex.match(m) for m in misses)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.csv", (FileFormat.CSV, None)),
        ("dir/A.CSV", (FileFormat.CSV, None)),
        ("a.pq", (FileFormat.PARQUET, None)),
        ("a.json.gz", (FileFormat.JSON, Compression.GZIP)),
        ("a.jsonl", (FileFormat.NDJSON, None)),
        ("a.ndjson.zst", (FileFormat.NDJSON, Compression.ZSTD)),
        ("a.txt", (None, None)),
    ],
)
def test_format_and_compression_from_extension(
    path: str, expected: tuple[FileFormat | None, Compression | None]
) -> None:
    assert split_extension(path) == expected


async def test_unknown_extension_is_invalid(conn: FileConnection, root: Path) -> None:
    (root / "notes.txt").write_text("a\n1\n")
    with pytest.raises(DomainError) as info:
        await _read(conn, "notes.txt")
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "UNKNOWN_FILE_FORMAT")
    assert [v.field for v in info.value.violations] == ["source.file.format"]
    assert (await _read(conn, "notes.txt", fmt=CSV)).num_rows == 1  # a declared format wins
    with pytest.raises(DomainError) as info:
        await _write(conn, _sample(), "out.txt")
    assert [v.field for v in info.value.violations] == ["header.sink.file.format"]


@pytest.mark.parametrize(
    "path",
    [
        "t.csv",
        "t.parquet",
        "t.json",
        "t.ndjson",
        "t.csv.gz",
        "t.csv.zst",
        "t.json.gz",
        "t.ndjson.zst",
        "t.arrow",
    ],
)
async def test_round_trip_with_unicode_empty_strings_and_nulls(
    conn: FileConnection, root: Path, path: str
) -> None:
    table = _sample(50)
    outcome = await _write(conn, table, f"out/{path}")
    assert outcome == WriteOutcome(50, f"file://{root}/out/{path}")
    assert _entries(root / "out") == [path]  # no temporary file left behind
    back = await _read(conn, f"out/{path}")
    assert back.equals(table), back.to_pylist()[:3]


@pytest.mark.parametrize("path", ["e.csv", "e.parquet", "e.json", "e.ndjson", "e.ndjson.gz"])
async def test_round_trip_of_no_rows(conn: FileConnection, path: str) -> None:
    schema = _sample().schema
    outcome = await conn.write(step_pb2.FileSink(path=path), "k", schema, _aiter([]))
    assert outcome.rows_written == 0
    back = await _read(conn, path)
    assert back.num_rows == 0
    if path.endswith((".csv", ".parquet")):
        assert back.schema.names == schema.names  # JSON has no rows to carry names


async def test_parquet_keeps_every_type(conn: FileConnection) -> None:
    table = pa.table(
        {
            "dec": pa.array([decimal.Decimal("12.50"), None], pa.decimal128(10, 2)),
            "day": pa.array([dt.date(2026, 11, 26), None], pa.date32()),
            "at": pa.array([dt.datetime(2026, 1, 2, 3, 4, 5), None], pa.timestamp("us", "UTC")),
            "raw": pa.array([b"\x00\xff", None], pa.binary()),
            "tags": pa.array([["a", "b"], None], pa.list_(pa.string())),
        }
    )
    await _write(conn, table, "types.parquet", compression=step_pb2.FILE_COMPRESSION_ZSTD)
    assert (await _read(conn, "types.parquet")).equals(table)


@pytest.mark.parametrize("path", ["odd.json", "odd.ndjson"])
async def test_json_column_names_are_escaped(conn: FileConnection, path: str) -> None:
    table = pa.table({'we"ird {name}': [1, None], "back\\slash\n": ["x\ty", 'q"']})
    await _write(conn, table, path)
    assert (await _read(conn, path)).equals(table)


async def test_json_writes_text_for_values_json_cannot_hold(
    conn: FileConnection, root: Path
) -> None:
    table = pa.table(
        {
            "dec": pa.array([decimal.Decimal("12.50")], pa.decimal128(10, 2)),
            "raw": pa.array([b"\x00\xff"], pa.binary()),
            "nan": pa.array([float("nan")], pa.float64()),
            "day": pa.array([dt.date(2026, 11, 26)], pa.date32()),
        }
    )
    await _write(conn, table, "odd.ndjson")
    row = json.loads((root / "odd.ndjson").read_text())
    assert row == {"dec": "12.50", "raw": "AP8=", "nan": None, "day": "2026-11-26"}


async def test_csv_reads_like_pyarrow_in_batches_of_about_the_target_size(
    conn: FileConnection, root: Path
) -> None:
    path = root / "big.csv"
    rows = 100_000 * TARGET_BATCH_BYTES // (1 << 20)
    pa_csv.write_csv(
        pa.table({"id": pa.array(range(rows)), "text": pa.array(["x" * 20] * rows)}), path
    )
    source = step_pb2.FileSource(path="big.csv")
    async with conn.read(source, ReadScope(), b"") as stream:
        batches = [b async for b in stream.batches]
    assert len(batches) > 1
    assert sum(b.num_rows for b in batches) == rows
    assert max(b.nbytes for b in batches) <= 2 * TARGET_BATCH_BYTES + 4096
    assert pa.Table.from_batches(batches).equals(pa_csv.read_csv(path))


async def test_missing_file_is_not_found_naming_the_given_path(
    conn: FileConnection, root: Path
) -> None:
    for path in ("in/nope.csv", "nodir", "nodir/*.csv"):
        with pytest.raises(DomainError) as info:
            await _read(conn, path, fmt=CSV)
        assert _error(info) == (ErrorCode.NOT_FOUND, "SOURCE_NOT_FOUND")
        assert repr(path) in info.value.message
        assert str(root) not in info.value.message


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bad.csv", "a,b\n1,2\n3\n"),
        ("empty.csv", ""),
        ("bad.parquet", "not parquet at all"),
        ("bad.json", '{"not": "an array"}'),
        ("broken.json", "[{"),
        ("bad.ndjson", "{oops\n"),
    ],
)
async def test_unparseable_file_is_a_parse_error(
    conn: FileConnection, root: Path, name: str, content: str
) -> None:
    (root / name).write_text(content)
    with pytest.raises(DomainError) as info:
        await _read(conn, name)
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "SOURCE_PARSE_ERROR")
    assert repr(name) in info.value.message
    assert str(root) not in info.value.message


async def test_parse_error_after_the_first_block_is_a_domain_error(
    conn: FileConnection, root: Path
) -> None:
    with (root / "late.csv").open("w") as out:
        out.write("n\n")
        out.writelines(f"{i}\n" for i in range(400_000))
        out.write("not-a-number\n")
    with pytest.raises(DomainError) as info:
        await _read(conn, "late.csv")
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "SOURCE_PARSE_ERROR")
    assert "not-a-number" in info.value.message


# --------------------------------------------------------------------------- several files


async def test_directory_read_is_recursive_sorted_and_skips_hidden_files(
    conn: FileConnection, root: Path
) -> None:
    (root / "in" / "b").mkdir(parents=True)
    (root / "in" / "a.csv").write_text("id,name\n1,x\n")
    (root / "in" / "b" / "c.csv").write_text("name,id\ny,2\n")  # other column order is fine
    (root / "in" / ".a.csv.123-4-5.tmp").write_text("id,name\n99,tmp\n")
    (root / "in" / "_SUCCESS").write_text("")
    (root / "in" / "_datadog").mkdir()
    (root / "in" / "_datadog" / "x.csv").write_text("id,name\n98,ledger\n")
    table = await _read(conn, "in")
    assert table.to_pylist() == [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}]
    description = await conn.describe(step_pb2.FileSource(path="in"))
    assert description.schema.names == ["id", "name"]
    assert description.estimated_rows is None  # CSV: unknown without reading


async def test_glob_reads_matching_files_only(conn: FileConnection, root: Path) -> None:
    for day in (1, 2, 3):
        (root / "events" / f"d{day}").mkdir(parents=True)
        (root / "events" / f"d{day}" / "e.ndjson").write_text(f'{{"day": {day}}}\n')
    (root / "events" / "notes.txt").write_text("ignored")
    table = await _read(conn, "events/**/*.ndjson")
    assert table.column("day").to_pylist() == [1, 2, 3]
    table = await _read(conn, "events/d[12]/*.ndjson")
    assert table.column("day").to_pylist() == [1, 2]


async def test_files_with_other_columns_are_a_schema_mismatch(
    conn: FileConnection, root: Path
) -> None:
    (root / "in").mkdir()
    (root / "in" / "a.csv").write_text("id,name\n1,x\n")
    (root / "in" / "b.csv").write_text("id,label\n2,y\n")
    with pytest.raises(DomainError) as info:
        await _read(conn, "in")
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "SCHEMA_MISMATCH")
    assert "'in/a.csv'" in info.value.message
    assert "'in/b.csv'" in info.value.message
    assert "label" in info.value.message


async def test_column_types_are_widened_across_files(conn: FileConnection, root: Path) -> None:
    (root / "in").mkdir()
    (root / "in" / "a.csv").write_text("v,w\n1,\n")
    (root / "in" / "b.csv").write_text("v,w\n2.5,z\n")
    table = await _read(conn, "in")
    assert table.schema == pa.schema([("v", pa.float64()), ("w", pa.string())])
    assert table.to_pylist() == [{"v": 1.0, "w": None}, {"v": 2.5, "w": "z"}]


async def test_compressed_files_written_by_other_tools_are_read(
    conn: FileConnection, root: Path
) -> None:
    with gzip.open(root / "a.csv.gz", "wt", encoding="utf-8") as out:
        out.write("id,name\n1,Zoë\n")
    assert (await _read(conn, "a.csv.gz")).to_pylist() == [{"id": 1, "name": "Zoë"}]


async def test_hive_partitions_become_columns(conn: FileConnection, root: Path) -> None:
    for country, year, ids in (("FR", 2025, [1, 2]), ("DE", 2026, [3]), ("FR", 2026, [4])):
        directory = root / "sales" / f"country={country}" / f"year={year}"
        directory.mkdir(parents=True)
        pq.write_table(pa.table({"id": ids}), directory / "part.parquet")
    table = await _read(conn, "sales")
    assert table.schema == pa.schema(
        [("id", pa.int64()), ("country", pa.string()), ("year", pa.int64())]
    )
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert rows[0] == {"id": 1, "country": "FR", "year": 2025}
    assert rows[2] == {"id": 3, "country": "DE", "year": 2026}
    # A predicate on a partition column prunes whole files.
    equals_de = _pred(_cmp("country", P.COMPARISON_OPERATOR_EQ, "DE"))
    assert (await _read(conn, "sales", predicate=equals_de)).column("id").to_pylist() == [3]
    plan = await conn.plan_read(step_pb2.FileSource(path="sales"), ReadScope((), equals_de), 0)
    assert [t.estimated_rows for t in plan.tickets] == [1]


# --------------------------------------------------------------------------- pushdown


@pytest.fixture
def row_groups(root: Path) -> pa.Table:
    """10 row groups of 1000 rows: id 0..9999, group g holds ids [1000g, 1000g + 1000)."""
    table = pa.table(
        {
            "id": pa.array(range(10_000), pa.int64()),
            "name": pa.array([f"n{i}" for i in range(10_000)]),
            "amount": pa.array(
                [decimal.Decimal(i) / 4 for i in range(10_000)], pa.decimal128(12, 2)
            ),
            "day": pa.array(
                [dt.date(2026, 1, 1) + dt.timedelta(days=i // 1000) for i in range(10_000)]
            ),
            "maybe": pa.array([None if i % 3 == 0 else i for i in range(10_000)], pa.int64()),
        }
    )
    pq.write_table(table, root / "groups.parquet", row_group_size=1000)
    return table


async def test_projection_reads_only_the_columns_in_order(
    conn: FileConnection, row_groups: pa.Table
) -> None:
    table = await _read(conn, "groups.parquet", columns=["name", "id"])
    assert table.schema.names == ["name", "id"]
    assert table.equals(row_groups.select(["name", "id"]))
    with pytest.raises(DomainError) as info:
        await _read(conn, "groups.parquet", columns=["id", "nope"])
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "UNKNOWN_COLUMN")


async def test_projection_on_text_formats(conn: FileConnection, root: Path) -> None:
    (root / "t.csv").write_text("a,b,c\n1,x,2.5\n")
    assert (await _read(conn, "t.csv", columns=["c", "a"])).to_pylist() == [{"c": 2.5, "a": 1}]


async def test_predicate_prunes_parquet_row_groups(
    conn: FileConnection, row_groups: pa.Table
) -> None:
    predicate = _pred(
        _cmp("id", P.COMPARISON_OPERATOR_GE, 5000), _cmp("id", P.COMPARISON_OPERATOR_LT, 5200)
    )
    source = step_pb2.FileSource(path="groups.parquet")
    plan = await conn.plan_read(source, ReadScope(("id",), predicate), 0)
    # Only row group 5 can match: one ticket of 1000 rows instead of 10000.
    assert [(t.description, t.estimated_rows) for t in plan.tickets] == [
        ("groups.parquet row group 5", 1000)
    ]
    assert plan.schema.names == ["id"]
    table = await _read(conn, "groups.parquet", ["id"], predicate, plan.tickets[0].data)
    assert table.column("id").to_pylist() == list(range(5000, 5200))
    # Without a ticket the scanner prunes the same way and returns the same rows.
    assert (await _read(conn, "groups.parquet", ["id"], predicate)).equals(table)


@pytest.mark.parametrize(
    ("comparison", "expected"),
    [
        (_cmp("name", P.COMPARISON_OPERATOR_EQ, "n42"), [42]),
        (_cmp("id", P.COMPARISON_OPERATOR_IN, 3, 7, 9999), [3, 7, 9999]),
        (_cmp("amount", P.COMPARISON_OPERATOR_LE, decimal.Decimal("0.50")), [0, 1, 2]),
        (_cmp("day", P.COMPARISON_OPERATOR_GE, dt.date(2026, 1, 10)), list(range(9000, 10_000))),
        (_cmp("id", P.COMPARISON_OPERATOR_LT, 2.5), [0, 1, 2]),
        (P.Comparison(column="maybe", operator=P.COMPARISON_OPERATOR_IS_NULL), None),
    ],
)
async def test_predicate_operators_and_literal_types(
    conn: FileConnection, row_groups: pa.Table, comparison: Any, expected: list[int] | None
) -> None:
    ids = (await _read(conn, "groups.parquet", ["id"], _pred(comparison))).column("id")
    if expected is None:
        expected = [i for i in range(10_000) if i % 3 == 0]
    assert ids.to_pylist() == expected


async def test_predicate_that_cannot_apply_is_left_to_the_executor(
    conn: FileConnection, row_groups: pa.Table
) -> None:
    # A string literal against an integer column: not evaluable here, so not filtered.
    odd = _pred(_cmp("id", P.COMPARISON_OPERATOR_EQ, "seven"))
    assert (await _read(conn, "groups.parquet", ["id"], odd)).num_rows == 10_000
    with pytest.raises(DomainError) as info:
        await _read(conn, "groups.parquet", predicate=_pred(_cmp("nope", 1, 1)))
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "UNKNOWN_COLUMN")
    assert info.value.violations[0].field == "predicate.all_of[0].column"
    with pytest.raises(DomainError) as info:
        await _read(conn, "groups.parquet", predicate=_pred(_cmp("id", P.COMPARISON_OPERATOR_EQ)))
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "INVALID_PREDICATE")


async def test_predicate_on_text_formats_filters_after_parsing(
    conn: FileConnection, root: Path
) -> None:
    (root / "t.ndjson").write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": null}\n{"a": 3, "b": "y"}\n')
    predicate = _pred(P.Comparison(column="b", operator=P.COMPARISON_OPERATOR_IS_NOT_NULL))
    assert (await _read(conn, "t.ndjson", ["a"], predicate)).column("a").to_pylist() == [1, 3]


# --------------------------------------------------------------------------- plan_read


async def _read_tickets(conn: FileConnection, path: str, max_splits: int) -> list[pa.Table]:
    source = step_pb2.FileSource(path=path)
    plan = await conn.plan_read(source, ReadScope(), max_splits)
    return [await _read(conn, path, ticket=t.data) for t in plan.tickets]


async def test_tickets_of_a_directory_cover_every_file_exactly_once(
    conn: FileConnection, root: Path
) -> None:
    (root / "in").mkdir()
    expected = []
    for i in range(7):
        rows = [{"id": i * 10 + j, "name": f"f{i}"} for j in range(i + 1)]
        expected += rows
        with (root / "in" / f"f{i}.ndjson").open("w") as out:
            out.writelines(json.dumps(r) + "\n" for r in rows)
    for max_splits, count in ((0, 7), (3, 3), (1, 1), (100, 7)):
        tables = await _read_tickets(conn, "in", max_splits)
        assert len(tables) == count
        assert pa.concat_tables(tables).to_pylist() == expected


async def test_a_big_parquet_file_splits_by_row_groups(
    conn: FileConnection, row_groups: pa.Table
) -> None:
    source = step_pb2.FileSource(path="groups.parquet")
    plan = await conn.plan_read(source, ReadScope(), 3)
    assert [t.estimated_rows for t in plan.tickets] == [4000, 3000, 3000]
    tables = [await _read(conn, "groups.parquet", ticket=t.data) for t in plan.tickets]
    assert pa.concat_tables(tables).equals(row_groups)
    description = await conn.describe(source)
    assert description.estimated_rows == 10_000
    # Left to the connector, a small file is not worth splitting.
    assert len((await conn.plan_read(source, ReadScope(), 0)).tickets) == 1


async def test_tickets_are_checked_when_read(
    conn: FileConnection, root: Path, row_groups: pa.Table
) -> None:
    source = step_pb2.FileSource(path="groups.parquet")
    ticket = (await conn.plan_read(source, ReadScope(), 2)).tickets[0].data
    with pytest.raises(DomainError) as info:
        await _read(conn, "groups.parquet", ticket=b"garbage")
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "INVALID_TICKET")
    with pytest.raises(DomainError) as info:
        await _read(conn, "other.parquet", ticket=ticket)
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "INVALID_TICKET")
    forged = json.loads(ticket)
    forged["parts"][0]["path"] = "../../etc/passwd"
    with pytest.raises(DomainError) as info:
        await _read(conn, "groups.parquet", ticket=json.dumps(forged).encode())
    assert _error(info) == (ErrorCode.PERMISSION_DENIED, "PATH_OUTSIDE_ROOT")


async def test_cancelled_read_releases_the_reader(
    conn: FileConnection, root: Path, row_groups: pa.Table
) -> None:
    source = step_pb2.FileSource(path="groups.parquet")

    async def read_one() -> None:
        async with conn.read(source, ReadScope(), b"") as stream:
            await anext(stream.batches)
            await asyncio.sleep(10)

    task = asyncio.create_task(read_one())
    await asyncio.sleep(0.2)
    assert _open_fds(root / "groups.parquet") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _open_fds(root / "groups.parquet") == 0


def _open_fds(path: Path) -> int:
    """How many of this process's descriptors are open on ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


# --------------------------------------------------------------------------- writes


async def test_overwrite_replaces_atomically_and_a_replay_is_the_same(
    conn: FileConnection, root: Path
) -> None:
    (root / "out.parquet").write_text("old content")
    first = await _write(conn, _sample(10), "out.parquet", key="r1/s/out")
    again = await _write(conn, _sample(10), "out.parquet", key="r1/s/out")
    assert first == again == WriteOutcome(10, f"file://{root}/out.parquet")
    assert (await _read(conn, "out.parquet")).equals(_sample(10))
    assert _entries(root) == ["out.parquet"]


@pytest.mark.parametrize("path", ["keep.csv", "keep.parquet"])
async def test_a_broken_stream_leaves_the_target_as_it_was(
    conn: FileConnection, root: Path, path: str
) -> None:
    await _write(conn, _sample(3), path)
    before = (root / path).read_bytes()
    with pytest.raises(ConnectionError):
        await conn.write(
            step_pb2.FileSink(path=path), "k2", _sample().schema, _broken(_sample(50).to_batches())
        )
    assert (root / path).read_bytes() == before
    assert _entries(root) == [path]


async def test_a_cancelled_write_leaves_nothing(conn: FileConnection, root: Path) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[pa.RecordBatch]:
        for batch in _sample(20).to_batches(max_chunksize=2):
            yield batch
            started.set()
            await asyncio.sleep(0.05)

    task = asyncio.create_task(
        conn.write(step_pb2.FileSink(path="c/x.parquet"), "k", _sample().schema, slow())
    )
    await started.wait()
    assert any(is_temp_name(n) for n in _entries(root / "c"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _entries(root / "c") == []


async def test_write_mode_and_option_errors(conn: FileConnection, root: Path) -> None:
    cases = [
        ({"mode": APPEND}, "t.parquet", "UNSUPPORTED_WRITE_MODE", "header.sink.file.mode"),
        ({"mode": step_pb2.WRITE_MODE_UPSERT}, "t.parquet", "UNSUPPORTED_WRITE_MODE", None),
        ({"compression": step_pb2.FILE_COMPRESSION_GZIP}, "t.csv", "INVALID_OPTION", None),
        ({"compression": step_pb2.FILE_COMPRESSION_SNAPPY}, "t.csv", "INVALID_OPTION", None),
        ({}, "t.parquet.gz", "INVALID_OPTION", "header.sink.file.path"),
        (
            {"partition_by": ["nope"], "format": PARQUET},
            "p",
            "UNKNOWN_COLUMN",
            "header.sink.file.partition_by[0]",
        ),
        ({"partition_by": ["id", "name", "amount", "ok"], "format": PARQUET}, "p", None, None),
    ]
    for sink, path, reason, field in cases:
        with pytest.raises(DomainError) as info:
            await _write(conn, _sample(), path, **sink)
        assert info.value.code == ErrorCode.INVALID_ARGUMENT
        assert reason is None or info.value.reason == reason, info.value
        assert field is None or info.value.violations[0].field == field
    assert _entries(root) == []
    (root / "dir.parquet").mkdir()
    with pytest.raises(DomainError) as info:
        await _write(conn, _sample(), "dir.parquet")
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "INVALID_PATH")


async def test_unwritable_data_is_a_sink_write_error(conn: FileConnection, root: Path) -> None:
    table = pa.table({"l": pa.array([[1, 2]], pa.list_(pa.int64()))})
    with pytest.raises(DomainError) as info:
        await _write(conn, table, "l.csv")
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "SINK_WRITE_ERROR")
    assert _entries(root) == []


async def test_temporaries_of_dead_writers_are_swept(conn: FileConnection, root: Path) -> None:
    dead = temp_name("x.parquet").replace(f"-{os.getpid()}-", "-999999999-")
    (root / dead).write_text("left by a killed writer")
    alive = temp_name("x.parquet")  # this process: still writing
    (root / alive).write_text("in progress")
    await _write(conn, _sample(), "x.parquet")
    assert _entries(root) == sorted([alive, "x.parquet"])


# --------------------------------------------------------------------------- partitioned


def test_split_by_partition_groups_rows_and_keeps_their_order() -> None:
    batch = pa.record_batch(
        {"k": ["b", "a", "b", None, "a"], "n": [1, 2, 3, 4, 5], "v": [0, 0, 1, 1, 0]}
    )
    groups = {
        values: part.column("n").to_pylist()
        for values, part in split_by_partition(batch, ["k", "v"])
    }
    assert groups == {("b", 0): [1], ("a", 0): [2, 5], ("b", 1): [3], (None, 1): [4]}
    assert [v for v, _ in split_by_partition(batch.slice(1, 1), ["k"])] == [("a",)]


async def test_partitioned_write_reads_back_with_its_partition_columns(
    conn: FileConnection, root: Path
) -> None:
    table = pa.table(
        {
            "id": pa.array(range(8), pa.int64()),
            "country": pa.array(["FR", "DE", "FR", None, "Zoë/..", "DE", "FR", "FR"]),
            "amount": pa.array([i * 0.5 for i in range(8)]),
        }
    )
    outcome = await _write(conn, table, "out/sales", format=PARQUET, partition_by=["country"])
    assert outcome == WriteOutcome(8, f"file://{root}/out/sales")
    dirs = sorted(p.name for p in (root / "out" / "sales").iterdir())
    assert dirs == [
        "country=DE",
        "country=FR",
        "country=Zo%C3%AB%2F..",
        "country=__HIVE_DEFAULT_PARTITION__",
    ]
    assert _entries(root / "out") == ["sales"]  # the staging directory is gone
    back = await _read(conn, "out/sales")
    assert back.schema.names == ["id", "amount", "country"]
    assert (
        sorted(back.to_pylist(), key=lambda r: r["id"])
        == table.select(["id", "amount", "country"]).to_pylist()
    )


def test_directories_are_swapped_atomically(tmp_path: Path) -> None:
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "n").write_text("new")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "o").write_text("old")
    assert _exchange(str(tmp_path / "new"), str(tmp_path / "old"))  # renameat2 on this machine
    assert _entries(tmp_path / "old") == ["n"]
    assert _entries(tmp_path / "new") == ["o"]


async def test_partitioned_overwrite_swaps_the_whole_tree(conn: FileConnection, root: Path) -> None:
    old = pa.table({"k": ["a", "b"], "v": [1, 2]})
    new = pa.table({"k": ["c"], "v": [3]})
    await _write(conn, old, "p", format=NDJSON, partition_by=["k"])
    await _write(conn, new, "p", format=NDJSON, partition_by=["k"], key="second")
    assert [p.name for p in (root / "p").iterdir()] == ["k=c"]
    assert (await _read(conn, "p")).to_pylist() == [{"v": 3, "k": "c"}]
    assert _entries(root) == ["p"]


async def test_append_adds_files_and_a_replayed_key_is_a_no_op(
    conn: FileConnection, root: Path
) -> None:
    first = pa.table({"k": ["a", "b"], "v": [1, 2]})
    second = pa.table({"k": ["a", "c"], "v": [3, 4]})
    sink = {"format": CSV, "partition_by": ["k"], "mode": APPEND, "compression": 2}
    assert (await _write(conn, first, "p", key="run1", **sink)).rows_written == 2
    outcome = await _write(conn, second, "p", key="run2", **sink)
    assert (outcome.rows_written, outcome.replayed) == (2, False)
    files = _tree(root / "p")
    # A replay (even with other data, e.g. a re-run that saw new rows) writes nothing.
    replay = await _write(conn, pa.table({"k": ["z"], "v": [9]}), "p", key="run2", **sink)
    assert replay == WriteOutcome(2, f"file://{root}/p", replayed=True)
    assert _tree(root / "p") == files
    rows = sorted((await _read(conn, "p")).to_pylist(), key=lambda r: r["v"])
    assert rows == [
        {"v": 1, "k": "a"},
        {"v": 2, "k": "b"},
        {"v": 3, "k": "a"},
        {"v": 4, "k": "c"},
    ]
    assert all(f.endswith(".csv.gz") for f in files if not f.startswith("_datadog"))


async def test_append_replaces_files_of_an_attempt_that_died(
    conn: FileConnection, root: Path
) -> None:
    sink = {"format": PARQUET, "partition_by": ["k"], "mode": APPEND}
    await _write(conn, pa.table({"k": ["a"], "v": [1]}), "p", key="run1", **sink)
    # A killed attempt of run2 got a file in but never recorded the key.
    leftover = root / "p" / "k=b" / f"part-{key_token('run2')}-00007.parquet"
    leftover.parent.mkdir()
    pq.write_table(pa.table({"v": [666]}), leftover)
    await _write(conn, pa.table({"k": ["b"], "v": [2]}), "p", key="run2", **sink)
    assert not leftover.exists()
    assert sorted((await _read(conn, "p")).column("v").to_pylist()) == [1, 2]


async def test_a_broken_partitioned_write_leaves_the_target_as_it_was(
    conn: FileConnection, root: Path
) -> None:
    await _write(conn, pa.table({"k": ["a"], "v": [1]}), "p", format=PARQUET, partition_by=["k"])
    before = _tree(root / "p")
    for mode in (step_pb2.WRITE_MODE_OVERWRITE, APPEND):
        sink = step_pb2.FileSink(path="p", format=PARQUET, partition_by=["k"], mode=mode)
        data = pa.table({"k": ["b", "c"] * 10, "v": list(range(20))})
        with pytest.raises(ConnectionError):
            await conn.write(sink, f"k-{mode}", data.schema, _broken(data.to_batches(4)))
        assert _tree(root / "p") == before
        assert _entries(root) == ["p"]


# --------------------------------------------------------------------------- artifacts


@pytest.fixture
def store(root: Path) -> ArtifactConnection:
    return ARTIFACT_CONNECTOR_TYPE.create("artifacts", {"root": ".datadog/artifacts"}, root)


async def test_artifact_round_trip(store: ArtifactConnection, root: Path) -> None:
    table = pa.concat_tables([_sample(3000)] * 3)
    key = "runs/r-1/stage_2/join"
    sink = step_pb2.ArtifactSink(key=key)
    outcome = await store.write(
        sink, "r-1/stage_2/join", table.schema, _aiter(table.to_batches(500))
    )
    path = root / ".datadog" / "artifacts" / "runs" / "r-1" / "stage_2" / "join.arrow"
    assert outcome == WriteOutcome(9000, f"file://{path}")
    assert _entries(path.parent) == ["join.arrow"]
    source = step_pb2.ArtifactSource(key=key)
    description = await store.describe(source)
    assert (description.schema, description.estimated_rows) == (table.schema, 9000)
    async with store.read(source, ReadScope(), b"") as stream:
        back = pa.Table.from_batches([b async for b in stream.batches], schema=stream.schema)
    assert back.equals(table)
    scope = ReadScope(("name", "id"), _pred(_cmp("id", P.COMPARISON_OPERATOR_LT, 2)))
    async with store.read(source, scope, b"") as stream:
        rows = [r for b in [b async for b in stream.batches] for r in b.to_pylist()]
    assert rows == [{"name": "Amélie", "id": 0}, {"name": "", "id": 1}] * 3


async def test_artifact_tickets_split_the_batches(store: ArtifactConnection) -> None:
    table = pa.table({"id": pa.array(range(100_000), pa.int64())})
    key = "runs/r/s/big"
    sink = step_pb2.ArtifactSink(key=key)
    # Batches are coalesced on write; small writer buffers would give many batches.
    await store.write(sink, "k", table.schema, _aiter(table.to_batches(10_000)))
    source = step_pb2.ArtifactSource(key=key)
    plan = await store.plan_read(source, ReadScope(), 4)
    seen = []
    for ticket in plan.tickets:
        async with store.read(source, ReadScope(), ticket.data) as stream:
            seen += [b async for b in stream.batches]
    assert pa.Table.from_batches(seen).equals(table)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("../escape", "PATH_OUTSIDE_ROOT"),
        ("runs/../../x", "PATH_OUTSIDE_ROOT"),
        ("/etc/x", "PATH_OUTSIDE_ROOT"),
        ("runs//x", "INVALID_KEY"),
        ("runs/.hidden", "INVALID_KEY"),
        ("runs/a b", "INVALID_KEY"),
        ("", "REQUIRED_FIELD_MISSING"),
    ],
)
async def test_artifact_keys_are_validated(
    store: ArtifactConnection, root: Path, key: str, reason: str
) -> None:
    with pytest.raises(DomainError) as info:
        await store.write(step_pb2.ArtifactSink(key=key), "k", SCHEMA_ONE, _aiter([]))
    assert info.value.reason == reason
    with pytest.raises(DomainError) as info:
        await store.describe(step_pb2.ArtifactSource(key=key))
    assert info.value.reason == reason
    assert _entries(root) == []


SCHEMA_ONE = pa.schema([("id", pa.int64())])


async def test_missing_artifact_is_not_found(store: ArtifactConnection) -> None:
    with pytest.raises(DomainError) as info:
        await store.describe(step_pb2.ArtifactSource(key="runs/r/s/nope"))
    assert _error(info) == (ErrorCode.NOT_FOUND, "SOURCE_NOT_FOUND")


async def test_artifact_write_is_atomic_and_the_store_is_created_on_demand(
    store: ArtifactConnection, root: Path
) -> None:
    assert "probe" in await store.test()
    key = "runs/r/s/x"
    await store.write(step_pb2.ArtifactSink(key=key), "k", SCHEMA_ONE, _aiter([]))
    table = pa.table({"id": [1, 2]})
    with pytest.raises(ConnectionError):
        await store.write(
            step_pb2.ArtifactSink(key=key), "k", table.schema, _broken(table.to_batches())
        )
    assert (await store.describe(step_pb2.ArtifactSource(key=key))).estimated_rows == 0
    assert _entries(root / ".datadog" / "artifacts" / "runs" / "r" / "s") == ["x.arrow"]

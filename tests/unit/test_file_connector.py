"""The file connector's domain code: paths, formats, reading, atomic writing, config."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from datadog_platform.connector.config import (
    ConnectorConfig,
    decode_page_token,
    encode_page_token,
    load_config,
)
from datadog_platform.connector.files import (
    AtomicFileWriter,
    FileConnection,
    FileFormat,
    FileRef,
    infer_format,
    is_temp_name,
    open_reader,
    resolve_path,
)
from datadog_platform.core.errors import DomainError, ErrorCode

REPO = Path(__file__).resolve().parents[2]
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


def _batch(ids: list[int]) -> pa.RecordBatch:
    return pa.record_batch([pa.array(ids), pa.array([f"n{i}" for i in ids])], schema=SCHEMA)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root.resolve()


def _error(excinfo: pytest.ExceptionInfo[DomainError]) -> tuple[ErrorCode, str]:
    return excinfo.value.code, excinfo.value.reason


# --------------------------------------------------------------------------- paths


def test_resolve_path_inside_root(root: Path) -> None:
    assert resolve_path(root, FileRef("a/b.csv"), "local") == root / "a" / "b.csv"
    # ".." that stays inside the root is fine.
    assert resolve_path(root, FileRef("a/../b.csv"), "local") == root / "b.csv"


@pytest.mark.parametrize("path", ["../x.csv", "a/../../x.csv", "..", "/etc/passwd"])
def test_resolve_path_refuses_escapes(root: Path, path: str) -> None:
    with pytest.raises(DomainError) as info:
        resolve_path(root, FileRef(path), "local")
    assert _error(info) == (ErrorCode.PERMISSION_DENIED, "PATH_OUTSIDE_ROOT")
    assert repr(path) in info.value.message
    assert str(root.parent) not in info.value.message
    assert info.value.metadata == {"path": path, "connection": "local"}


def test_resolve_path_refuses_symlink_escape(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    (root / "link.csv").symlink_to(outside)
    (root / "dir").symlink_to(tmp_path)
    for path in ("link.csv", "dir/secret.csv"):
        with pytest.raises(DomainError) as info:
            resolve_path(root, FileRef(path), "local")
        assert _error(info) == (ErrorCode.PERMISSION_DENIED, "PATH_OUTSIDE_ROOT")
        assert str(outside) not in info.value.message


def test_resolve_path_follows_symlink_inside_root(root: Path) -> None:
    (root / "real.csv").write_text("a\n1\n")
    (root / "alias.csv").symlink_to(root / "real.csv")
    assert resolve_path(root, FileRef("alias.csv"), "local") == root / "real.csv"


def test_resolve_path_empty_names_the_field(root: Path) -> None:
    with pytest.raises(DomainError) as info:
        resolve_path(root, FileRef("", field="source.file"), "local")
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "REQUIRED_FIELD_MISSING")
    assert [v.field for v in info.value.violations] == ["source.file.path"]


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.csv", FileFormat.CSV),
        ("dir/A.CSV", FileFormat.CSV),
        ("a.parquet", FileFormat.PARQUET),
        ("a.pq", FileFormat.PARQUET),
    ],
)
def test_infer_format_from_extension(path: str, expected: FileFormat) -> None:
    assert infer_format(FileRef(path)) is expected


def test_declared_format_wins_over_extension() -> None:
    assert infer_format(FileRef("data.txt", FileFormat.CSV)) is FileFormat.CSV


@pytest.mark.parametrize("path", ["data.txt", "data", "csv"])
def test_unknown_extension_is_invalid(path: str) -> None:
    with pytest.raises(DomainError) as info:
        infer_format(FileRef(path, field="header.sink.file"))
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "UNKNOWN_FILE_FORMAT")
    assert [v.field for v in info.value.violations] == ["header.sink.file.format"]


# --------------------------------------------------------------------------- reading


def _read_all(path: Path, fmt: FileFormat) -> pa.Table:
    with open_reader(path, fmt, path.name) as reader:
        return pa.Table.from_batches(list(reader), schema=reader.schema)


def test_read_csv_with_unicode_matches_pyarrow(root: Path) -> None:
    path = root / "orders.csv"
    path.write_text(
        "id,customer,amount\n1,Amélie,10.5\n2,Łukasz,20\n3,Zoë 日本,\n", encoding="utf-8"
    )
    table = _read_all(path, FileFormat.CSV)
    assert table.equals(pa_csv.read_csv(path))
    assert table.column("customer").to_pylist() == ["Amélie", "Łukasz", "Zoë 日本"]
    assert table.column("amount").to_pylist() == [10.5, 20.0, None]


def test_read_header_only_csv_has_schema_and_no_rows(root: Path) -> None:
    path = root / "empty.csv"
    path.write_text("a,b\n")
    with open_reader(path, FileFormat.CSV, "empty.csv") as reader:
        assert reader.schema.names == ["a", "b"]
        assert reader.read_next() is None


def test_read_large_csv_in_about_one_mib_batches(root: Path) -> None:
    path = root / "big.csv"
    rows = 200_000
    pa_csv.write_csv(
        pa.table({"id": pa.array(range(rows)), "text": pa.array(["x" * 20] * rows)}), path
    )
    with open_reader(path, FileFormat.CSV, "big.csv") as reader:
        batches = list(reader)
    assert len(batches) > 1
    assert sum(b.num_rows for b in batches) == rows
    assert max(b.nbytes for b in batches) <= 2 * (1 << 20) + 4096


def test_read_parquet_round_trips(root: Path) -> None:
    path = root / "data.parquet"
    table = pa.Table.from_batches([_batch([1, 2, 3]), _batch([4])])
    pq.write_table(table, path)
    assert _read_all(path, FileFormat.PARQUET).equals(table)


def test_read_large_parquet_in_several_batches(root: Path) -> None:
    path = root / "big.parquet"
    rows = 300_000
    pq.write_table(pa.table({"id": pa.array(range(rows)), "v": pa.array([1.5] * rows)}), path)
    with open_reader(path, FileFormat.PARQUET, "big.parquet") as reader:
        batches = list(reader)
    assert len(batches) > 1
    assert sum(b.num_rows for b in batches) == rows


def test_read_missing_file_is_not_found_naming_the_given_path(root: Path) -> None:
    connection = FileConnection("local", root)
    with pytest.raises(DomainError) as info:
        connection.open_reader(FileRef("in/nope.csv"))
    assert _error(info) == (ErrorCode.NOT_FOUND, "SOURCE_NOT_FOUND")
    assert "'in/nope.csv'" in info.value.message
    assert str(root) not in info.value.message


@pytest.mark.parametrize(
    ("name", "content"),
    [("bad.csv", "a,b\n1,2\n3\n"), ("empty.csv", ""), ("bad.parquet", "not parquet at all")],
)
def test_unparseable_file_is_parse_error(root: Path, name: str, content: str) -> None:
    (root / name).write_text(content)
    connection = FileConnection("local", root)

    def read_all() -> None:
        with connection.open_reader(FileRef(name)) as reader:
            list(reader)

    with pytest.raises(DomainError) as info:
        read_all()
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "SOURCE_PARSE_ERROR")
    assert str(root) not in info.value.message


def test_parse_error_after_the_first_block_is_a_domain_error(root: Path) -> None:
    # Types come from the first ~1 MiB block; a bad value later fails mid-stream.
    path = root / "late.csv"
    with path.open("w") as out:
        out.write("n\n")
        out.writelines(f"{i}\n" for i in range(400_000))
        out.write("not-a-number\n")
    with pytest.raises(DomainError) as info, open_reader(path, FileFormat.CSV, "late.csv") as r:
        list(r)
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "SOURCE_PARSE_ERROR")


def test_reading_a_directory_is_invalid(root: Path) -> None:
    (root / "dir.csv").mkdir()
    with pytest.raises(DomainError) as info:
        FileConnection("local", root).open_reader(FileRef("dir.csv"))
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "INVALID_PATH")


# --------------------------------------------------------------------------- writing


def _entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("fmt", [FileFormat.PARQUET, FileFormat.CSV])
def test_atomic_writer_commit(root: Path, fmt: FileFormat) -> None:
    target = root / "out" / f"data.{fmt.value}"
    writer = AtomicFileWriter(target, fmt, SCHEMA, "out/data")
    writer.write(_batch([1, 2]))
    writer.write(_batch([3]))
    assert not target.exists()  # nothing visible before commit
    assert len(_entries(target.parent)) == 1
    assert is_temp_name(_entries(target.parent)[0])
    assert writer.commit() == target
    assert writer.rows_written == 3
    assert _entries(target.parent) == [target.name]
    got = pq.read_table(target) if fmt is FileFormat.PARQUET else pa_csv.read_csv(target)
    assert got.equals(pa.Table.from_batches([_batch([1, 2, 3])]))


def test_atomic_writer_abort_leaves_no_temp_and_no_target(root: Path) -> None:
    target = root / "data.parquet"
    with AtomicFileWriter(target, FileFormat.PARQUET, SCHEMA, "data.parquet") as writer:
        writer.write(_batch([1]))
    assert writer.state == "aborted"
    assert _entries(root) == []
    writer.abort()  # idempotent


def test_atomic_writer_abort_keeps_existing_target(root: Path) -> None:
    target = root / "data.parquet"
    pq.write_table(pa.Table.from_batches([_batch([9])]), target)
    writer = AtomicFileWriter(target, FileFormat.PARQUET, SCHEMA, "data.parquet")
    writer.write(_batch([1, 2]))
    writer.abort()
    assert pq.read_table(target).column("id").to_pylist() == [9]
    assert _entries(root) == ["data.parquet"]


def test_atomic_writer_overwrite_replaces(root: Path) -> None:
    target = root / "data.csv"
    target.write_text("old,columns\nx,y\n")
    writer = AtomicFileWriter(target, FileFormat.CSV, SCHEMA, "data.csv")
    writer.write(_batch([5]))
    writer.commit()
    assert pa_csv.read_csv(target).to_pylist() == [{"id": 5, "name": "n5"}]
    assert _entries(root) == ["data.csv"]


@pytest.mark.parametrize("fmt", [FileFormat.PARQUET, FileFormat.CSV])
def test_zero_batches_still_write_a_file_with_the_schema(root: Path, fmt: FileFormat) -> None:
    target = root / f"empty.{fmt.value}"
    AtomicFileWriter(target, fmt, SCHEMA, target.name).commit()
    if fmt is FileFormat.PARQUET:
        assert pq.read_schema(target).names == ["id", "name"]
        assert pq.read_metadata(target).num_rows == 0
    else:
        assert target.read_text().splitlines() == ['"id","name"']


def test_unwritable_schema_is_invalid_and_leaves_nothing(root: Path) -> None:
    schema = pa.schema([("l", pa.list_(pa.int64()))])

    def write() -> None:
        with AtomicFileWriter(root / "l.csv", FileFormat.CSV, schema, "l.csv") as writer:
            writer.write(pa.record_batch([pa.array([[1, 2]])], schema=schema))

    with pytest.raises(DomainError) as info:
        write()
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "SINK_WRITE_ERROR")
    assert _entries(root) == []


def test_writing_over_a_directory_is_invalid(root: Path) -> None:
    (root / "d.parquet").mkdir()
    with pytest.raises(DomainError) as info:
        FileConnection("local", root).open_writer(FileRef("d.parquet"), SCHEMA)
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "INVALID_PATH")


def test_connection_open_writer_refuses_escape(root: Path) -> None:
    with pytest.raises(DomainError) as info:
        FileConnection("local", root).open_writer(FileRef("../x.parquet"), SCHEMA)
    assert _error(info) == (ErrorCode.PERMISSION_DENIED, "PATH_OUTSIDE_ROOT")
    assert _entries(root.parent) == ["root"]


# --------------------------------------------------------------------------- config


def test_local_config_has_one_connection(root: Path) -> None:
    config = ConnectorConfig.local(root)
    connection = config.file_connection("")
    assert (connection.name, connection.root, connection.type) == ("local", root, "file")
    assert connection.options() == {"root": str(root)}


def test_load_config_resolves_relative_roots_against_its_directory(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "exports").mkdir()
    path = tmp_path / "conf" / "connectors.yaml"
    path.write_text(
        "connections:\n"
        "  local: {type: file, root: ., description: Project directory}\n"
        f"  exports: {{type: file, root: {tmp_path / 'exports'}}}\n"
        "  up: {type: file, root: ../exports}\n"
    )
    config = load_config(path, default_root=Path("/nonexistent"))
    assert list(config.connections) == ["exports", "local", "up"]
    assert config.file_connection("local").root == (tmp_path / "conf").resolve()
    assert config.file_connection("local").description == "Project directory"
    assert config.file_connection("up").root == (tmp_path / "exports").resolve()


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "examples" / "connectors.yaml", default_root=Path("/nonexistent"))
    local = config.file_connection("local")
    assert (local.root / "examples" / "data" / "orders.csv").is_file()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("connections:\n  x: {type: s3, root: .}\n", "unknown type 's3'"),
        ("connections:\n  x: {type: file}\n", "needs a 'root'"),
        ("connections:\n  x: {type: file, root: ./missing}\n", "does not exist"),
        ("connections:\n  x: {type: file, root: ., password: x}\n", "unknown keys: password"),
        ("connections: {}\n", "empty"),
        ("connections: [\n", "not valid YAML"),
        ("other: 1\n", "'connections' mapping"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(DomainError) as info:
        load_config(path, default_root=tmp_path)
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert fragment in info.value.message


def test_unknown_connection_is_not_found(root: Path) -> None:
    with pytest.raises(DomainError) as info:
        ConnectorConfig.local(root).file_connection("warehouse")
    assert _error(info) == (ErrorCode.NOT_FOUND, "CONNECTION_NOT_FOUND")
    assert info.value.metadata == {"connection": "warehouse"}


def test_paging_walks_all_connections_in_name_order(tmp_path: Path) -> None:
    connections = {n: FileConnection(n, tmp_path) for n in ["c", "a", "e", "b", "d"]}
    config = ConnectorConfig(connections)
    seen: list[str] = []
    token = ""
    while True:
        page = config.list_page(2, token)
        seen += [c.name for c in page.connections]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["a", "b", "c", "d", "e"]
    assert config.list_page(0, "").next_page_token == ""
    assert len(config.list_page(0, "").connections) == 5


def test_page_token_round_trip_and_garbage() -> None:
    assert decode_page_token(encode_page_token("local")) == "local"
    for garbage in ["garbage!", "bG9jYWw=", "%%%", encode_page_token("")]:
        with pytest.raises(DomainError) as info:
            decode_page_token(garbage)
        assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


def test_negative_page_size_names_the_field(root: Path) -> None:
    with pytest.raises(DomainError) as info:
        ConnectorConfig.local(root).list_page(-1, "")
    assert _error(info) == (ErrorCode.INVALID_ARGUMENT, "INVALID_PAGE_SIZE")
    assert [v.field for v in info.value.violations] == ["page_size"]

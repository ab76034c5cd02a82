"""File formats: which one a path is, reading one file as Arrow, writing Arrow as one file.

Formats: CSV (header row), Parquet, JSON (one array of objects), NDJSON (one
object per line) and Arrow IPC files (``.arrow``, what the artifact store keeps).
CSV, JSON and NDJSON may be compressed (``.gz``, ``.zst``), the codec taken from
the extension on read; Parquet compresses internally, Arrow files not at all.

Reading streams, except a JSON array, which is parsed whole (a JSON array has no
record boundaries to resume from): use NDJSON for large data. CSV column types
come from the first block (``TARGET_BATCH_BYTES``); an unquoted empty field is NULL
and a quoted one (``""``) an empty string, so what the CSV writer writes reads back
the same.

Writers stream batches to an output stream. JSON has no NaN/Infinity: such floats
are written as null. Values JSON cannot hold are written as text: dates, times and
timestamps in ISO 8601, decimals as strings, binary as base64.

Everything here blocks: callers run it off the event loop.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import json
import json.encoder
import math
from collections.abc import Collection, Iterator, Sequence
from pathlib import PurePosixPath
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.connector.parquet_writer import ParquetFileWriter
from datadog_platform.core.arrow_frames import TARGET_BATCH_BYTES
from datadog_platform.core.errors import DomainError, FieldViolation, invalid_argument
from datadog_platform.core.file_extensions import COMPRESSION_BY_EXTENSION, FORMAT_BY_EXTENSION
from datadog_platform.core.parquet_frames import (
    ParquetChunk,
    ParquetFileHead,
    batch_rows,
    passthrough_leaves,
    read_chunks,
    read_head,
)


class FileFormat(enum.Enum):
    """Encodings the file connector reads and writes."""

    CSV = "csv"
    PARQUET = "parquet"
    JSON = "json"
    NDJSON = "ndjson"
    ARROW = "arrow"  # Arrow IPC file format (artifacts; ".arrow" files)


class Compression(enum.Enum):
    """Codecs: external (whole file) for text formats, internal for Parquet."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"
    SNAPPY = "snappy"


FORMAT_OF_PROTO: dict[int, FileFormat | None] = {
    step_pb2.FILE_FORMAT_UNSPECIFIED: None,
    step_pb2.FILE_FORMAT_CSV: FileFormat.CSV,
    step_pb2.FILE_FORMAT_PARQUET: FileFormat.PARQUET,
    step_pb2.FILE_FORMAT_JSON: FileFormat.JSON,
    step_pb2.FILE_FORMAT_NDJSON: FileFormat.NDJSON,
}
COMPRESSION_OF_PROTO: dict[int, Compression | None] = {
    step_pb2.FILE_COMPRESSION_UNSPECIFIED: None,
    step_pb2.FILE_COMPRESSION_NONE: Compression.NONE,
    step_pb2.FILE_COMPRESSION_GZIP: Compression.GZIP,
    step_pb2.FILE_COMPRESSION_ZSTD: Compression.ZSTD,
    step_pb2.FILE_COMPRESSION_SNAPPY: Compression.SNAPPY,
}
FORMAT_EXTENSIONS: dict[str, FileFormat] = {
    **{ext: FORMAT_OF_PROTO[fmt] for ext, fmt in FORMAT_BY_EXTENSION.items()},
    ".arrow": FileFormat.ARROW,  # the artifact store's own format; not a pipeline format
}
COMPRESSION_EXTENSIONS: dict[str, Compression] = {
    ext: COMPRESSION_OF_PROTO[codec] for ext, codec in COMPRESSION_BY_EXTENSION.items()
}
EXTENSION_OF_FORMAT = {
    FileFormat.CSV: ".csv",
    FileFormat.PARQUET: ".parquet",
    FileFormat.JSON: ".json",
    FileFormat.NDJSON: ".ndjson",
    FileFormat.ARROW: ".arrow",
}
EXTENSION_OF_COMPRESSION = {Compression.GZIP: ".gz", Compression.ZSTD: ".zst"}
_ARROW_CODEC = {Compression.GZIP: "gzip", Compression.ZSTD: "zstd"}
# The C string encoder behind json.dumps(ensure_ascii=False).
_encode_string = json.encoder.encode_basestring


def split_extension(path: str) -> tuple[FileFormat | None, Compression | None]:
    """The format and external compression a path's extensions imply (``.csv.gz``)."""
    suffixes = [s.lower() for s in PurePosixPath(path).suffixes]
    compression = COMPRESSION_EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if compression is not None:
        suffixes = suffixes[:-1]
    fmt = FORMAT_EXTENSIONS.get(suffixes[-1]) if suffixes else None
    return fmt, compression


def file_format_of(path: str, declared: FileFormat | None, shown: str, field: str) -> FileFormat:
    """The declared format, else the one ``path``'s extension implies; else an error."""
    if declared is not None:
        return declared
    fmt, _ = split_extension(path)
    if fmt is None:
        known = ", ".join(sorted(FORMAT_EXTENSIONS))
        raise invalid_argument(
            "UNKNOWN_FILE_FORMAT",
            f"cannot infer the format of {shown!r} from its extension; "
            f"set {field}.format or use one of {known} (optionally + .gz or .zst)",
            [
                FieldViolation(
                    f"{field}.format", f"unspecified and {shown!r} has no known extension"
                )
            ],
            path=shown,
        )
    return fmt


def proto_format(value: int, field: str) -> FileFormat | None:
    """A ``FileFormat`` enum value from a request; INVALID_ARGUMENT if unknown."""
    try:
        return FORMAT_OF_PROTO[value]
    except KeyError:
        raise invalid_argument(
            "UNKNOWN_FILE_FORMAT",
            f"{field}.format has unknown value {value}",
            [FieldViolation(f"{field}.format", "unknown value")],
        ) from None


# --------------------------------------------------------------------------- reading


def dataset_format(fmt: FileFormat) -> ds.FileFormat:
    """The ``pyarrow.dataset`` format of a binary format (Parquet, Arrow)."""
    if fmt is FileFormat.PARQUET:
        return ds.ParquetFileFormat()
    if fmt is FileFormat.ARROW:
        return ds.IpcFileFormat()
    raise ValueError(f"{fmt} is read with a streaming reader")


def open_text_reader(
    filesystem: pafs.FileSystem, path: str, fmt: FileFormat, types: pa.Schema | None = None
) -> tuple[Any, pa.NativeFile]:
    """A streaming CSV or NDJSON reader of one file (decompressed by extension).

    With ``types``, only those columns are parsed, in those types (missing ones read
    as NULLs); without, every column with types inferred from the first block.
    Returns the reader and the stream to close after it.
    """
    stream = filesystem.open_input_stream(path, compression="detect")
    try:
        if fmt is FileFormat.CSV:
            convert = pa_csv.ConvertOptions(
                strings_can_be_null=True, quoted_strings_can_be_null=False
            )
            if types is not None:
                convert.column_types = {f.name: f.type for f in types}
                convert.include_columns = types.names
                convert.include_missing_columns = True
            reader = pa_csv.open_csv(
                stream,
                read_options=pa_csv.ReadOptions(block_size=TARGET_BATCH_BYTES),
                convert_options=convert,
            )
        else:
            parse = pa_json.ParseOptions(
                explicit_schema=types, unexpected_field_behavior="ignore" if types else "infer"
            )
            reader = pa_json.open_json(
                stream,
                read_options=pa_json.ReadOptions(block_size=TARGET_BATCH_BYTES),
                parse_options=parse,
            )
    except BaseException:
        stream.close()
        raise
    return reader, stream


def make_fragment(
    filesystem: pafs.FileSystem,
    path: str,
    fmt: FileFormat,
    partition: ds.Expression | None = None,
    row_groups: Sequence[int] | None = None,
) -> ds.Fragment:
    """A dataset fragment of a Parquet or Arrow file (some row groups for Parquet)."""
    file_format = dataset_format(fmt)
    if row_groups is not None and isinstance(file_format, ds.ParquetFileFormat):
        return file_format.make_fragment(
            path, filesystem=filesystem, partition_expression=partition, row_groups=row_groups
        )
    return file_format.make_fragment(path, filesystem=filesystem, partition_expression=partition)


def read_json_array(filesystem: pafs.FileSystem, path: str, shown: str) -> pa.Table:
    """A JSON array of objects as a table (loaded whole; see the module doc).

    Objects are re-encoded as NDJSON for Arrow's JSON reader, so that column types
    are inferred exactly as for NDJSON files (e.g. ISO timestamps).
    """
    with filesystem.open_input_stream(path, compression="detect") as stream:
        raw = stream.read()
    try:
        rows = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _parse_error(shown, f"not valid JSON: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise _parse_error(shown, "a JSON file must hold one array of objects")
    if not rows:
        return pa.table({})
    lines = "\n".join(json.dumps(r, ensure_ascii=False, allow_nan=True) for r in rows)
    del rows
    return pa_json.read_json(
        pa.BufferReader(lines.encode("utf-8")),
        read_options=pa_json.ReadOptions(block_size=max(TARGET_BATCH_BYTES, 1 << 20)),
    )


def file_schema(filesystem: pafs.FileSystem, path: str, fmt: FileFormat, shown: str) -> pa.Schema:
    """The schema of one file as it would be read alone (no partition columns)."""
    if fmt is FileFormat.JSON:
        return read_json_array(filesystem, path, shown).schema
    if fmt in (FileFormat.CSV, FileFormat.NDJSON):
        if fmt is FileFormat.NDJSON and _is_empty(filesystem, path):
            return pa.schema([])
        reader, stream = open_text_reader(filesystem, path, fmt)
        try:
            return reader.schema
        finally:
            stream.close()
    return make_fragment(filesystem, path, fmt).physical_schema


def _is_empty(filesystem: pafs.FileSystem, path: str) -> bool:
    info = filesystem.get_file_info(path)
    if info.size == 0:
        return True
    _, compression = split_extension(path)
    if compression is None:
        return False
    with filesystem.open_input_stream(path, compression="detect") as stream:
        return not stream.read(1)


def scan_file(
    filesystem: pafs.FileSystem,
    path: str,
    fmt: FileFormat,
    shown: str,
    schema: pa.Schema,
    columns: Sequence[str],
    predicate: ds.Expression | None,
    filter_columns: Collection[str],
    partition: dict[str, Any],
    row_groups: Sequence[int] | None = None,
    accept_parquet: bool = False,
) -> Iterator[pa.RecordBatch | ParquetFileHead | ParquetChunk]:
    """Batches of one file in file order: conformed to ``schema``, filtered, projected.

    ``schema`` is the read's unified schema (partition columns included);
    ``partition`` holds this file's partition values, filled in as constants;
    ``filter_columns`` are the columns ``predicate`` reads. Only the projected and
    filtered columns are decoded (Parquet, Arrow, CSV and NDJSON alike); Parquet row
    groups whose statistics exclude ``predicate`` are skipped. Columns a file lacks
    read as NULLs.

    With ``accept_parquet``, a Parquet file that needs no more than decoding and
    casting (``core.parquet_frames``) yields its head and stored column chunks
    instead of batches.
    """
    out_names = list(columns) if columns else schema.names
    targets = None
    if accept_parquet:
        targets = _stored_targets(fmt, schema, columns, predicate, partition)
    if targets is not None:
        stored_chunks = _parquet_stored(filesystem, path, targets, row_groups)
        if stored_chunks is not None:
            yield from stored_chunks
            return
    needed = set(out_names) | set(filter_columns)
    work = pa.schema([f for f in schema if f.name in needed])
    stored = pa.schema([f for f in work if f.name not in partition])
    if fmt is FileFormat.PARQUET:
        source = _parquet_batches(
            filesystem, path, schema, stored, predicate, partition, row_groups
        )
    elif fmt is FileFormat.ARROW:
        source = _arrow_batches(filesystem, path, stored)
    elif fmt is FileFormat.JSON:
        table = read_json_array(filesystem, path, shown)
        source = iter(table.to_batches(max_chunksize=_rows_per_mib(table)))
    elif fmt is FileFormat.NDJSON and _is_empty(filesystem, path):
        source = iter(())
    else:
        source = _text_batches(filesystem, path, fmt, stored)
    try:
        for batch in source:
            batch = conform_batch(batch, work, partition)
            if predicate is not None:
                batch = batch.filter(predicate)
            if batch.num_rows:
                yield batch.select(out_names)
    finally:
        _close(source)  # release the file now, also when the read is abandoned


def _close(iterator: Iterator[Any]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def _parquet_batches(
    filesystem: pafs.FileSystem,
    path: str,
    schema: pa.Schema,
    stored: pa.Schema,
    predicate: ds.Expression | None,
    partition: dict[str, Any],
    row_groups: Sequence[int] | None,
) -> Iterator[pa.RecordBatch]:
    groups = list(row_groups) if row_groups is not None else None
    if predicate is not None:
        fragment = make_fragment(
            filesystem, path, FileFormat.PARQUET, partition_expression(partition, schema), groups
        )
        groups = [g.id for g in fragment.subset(filter=predicate, schema=schema).row_groups]
    if groups == []:
        return
    with filesystem.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle)
        present = set(parquet.schema_arrow.names)
        yield from parquet.iter_batches(
            batch_size=batch_rows(parquet.metadata),
            row_groups=groups,
            columns=[n for n in stored.names if n in present],
            use_threads=True,
        )


def _stored_targets(
    fmt: FileFormat,
    schema: pa.Schema,
    columns: Sequence[str],
    predicate: ds.Expression | None,
    partition: dict[str, Any],
) -> pa.Schema | None:
    """The columns a read of a file may send as stored column chunks (a Parquet file,
    no predicate, no partition column read), or None when it must decode them."""
    names = list(columns) if columns else schema.names
    if fmt is not FileFormat.PARQUET or predicate is not None or partition.keys() & set(names):
        return None
    return pa.schema([schema.field(name) for name in names])


def stored_whole(
    filesystem: pafs.FileSystem,
    path: str,
    fmt: FileFormat,
    schema: pa.Schema,
    columns: Sequence[str],
    predicate: ds.Expression | None,
    partition: dict[str, Any],
) -> bool:
    """Whether a read of the file at ``path`` (as :func:`scan_file` takes it, every row
    group) is sent as stored column chunks, whole."""
    targets = _stored_targets(fmt, schema, columns, predicate, partition)
    if targets is None:
        return False
    with filesystem.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle)
        groups = list(range(parquet.num_row_groups))
        return passthrough_leaves(parquet, targets, groups) is not None


def _parquet_stored(
    filesystem: pafs.FileSystem,
    path: str,
    targets: pa.Schema,
    row_groups: Sequence[int] | None,
) -> Iterator[ParquetFileHead | ParquetChunk] | None:
    """The file's head and stored chunks of ``targets``, or None when it must be decoded."""
    handle = filesystem.open_input_file(path)
    try:
        head = read_head(handle)  # the footer is read once, and parsed from these bytes
        parquet = pq.ParquetFile(handle, metadata=head.metadata())
        groups = list(row_groups) if row_groups is not None else list(range(parquet.num_row_groups))
        leaves = passthrough_leaves(parquet, targets, groups)
    except BaseException:
        handle.close()
        raise
    if leaves is None:
        handle.close()
        return None
    return _stored_chunks(handle, head, parquet.metadata, leaves, groups)


def _stored_chunks(
    handle: pa.NativeFile,
    head: ParquetFileHead,
    metadata: pq.FileMetaData,
    leaves: list[int],
    groups: list[int],
) -> Iterator[ParquetFileHead | ParquetChunk]:
    with handle:
        yield head
        yield from read_chunks(handle, metadata, leaves, groups)


def _arrow_batches(
    filesystem: pafs.FileSystem, path: str, stored: pa.Schema
) -> Iterator[pa.RecordBatch]:
    with filesystem.open_input_file(path) as handle:
        reader = pa.ipc.open_file(handle)
        present = [n for n in stored.names if n in reader.schema.names]
        for index in range(reader.num_record_batches):
            yield reader.get_batch(index).select(present)


def _text_batches(
    filesystem: pafs.FileSystem, path: str, fmt: FileFormat, stored: pa.Schema
) -> Iterator[pa.RecordBatch]:
    reader, stream = open_text_reader(filesystem, path, fmt, stored)
    try:
        yield from reader
    finally:
        stream.close()


def partition_expression(partition: dict[str, Any], schema: pa.Schema) -> ds.Expression | None:
    """``k1 == v1 and k2 == v2 ...`` for a file's hive partition values."""
    expression: ds.Expression | None = None
    for key, value in partition.items():
        field_type = schema.field(key).type
        term = (
            pc.field(key).is_null()
            if value is None
            else pc.field(key) == pa.scalar(value, type=field_type)
        )
        expression = term if expression is None else expression & term
    return expression


def conform_batch(
    batch: pa.RecordBatch, schema: pa.Schema, partition: dict[str, Any]
) -> pa.RecordBatch:
    """``batch`` with ``schema``'s columns in its order: cast, NULL-filled, partitions added."""
    if batch.schema.equals(schema):
        return batch
    arrays = []
    names = batch.schema.names
    for field in schema:
        if field.name in partition:
            arrays.append(pa.array([partition[field.name]] * batch.num_rows, type=field.type))
        elif field.name in names:
            arrays.append(batch.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(batch.num_rows, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _rows_per_mib(table: pa.Table) -> int:
    if table.num_rows == 0 or table.nbytes == 0:
        return 65_536
    return max(1, table.num_rows * TARGET_BATCH_BYTES // table.nbytes)


def _parse_error(shown: str, problem: str) -> DomainError:
    return invalid_argument("SOURCE_PARSE_ERROR", f"cannot parse {shown!r}: {problem}", path=shown)


# --------------------------------------------------------------------------- writing


class FormatWriter(Protocol):
    """Writes batches of one schema to one output stream."""

    def write_batch(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None: ...


#: Parquet row groups and Arrow record batches are coalesced to about this size:
#: writing each incoming batch as its own row group makes files slow to scan.
#: Bigger row groups are also cheaper to encode (dictionary attempts and their fallback
#: happen per column chunk): on TPC-H lineitem, 64 MiB (~400k rows) takes 25% less CPU
#: than 16 MiB and gives a 8% smaller file; beyond it the gain flattens.
WRITE_BUFFER_BYTES = 64 << 20


def open_format_writer(
    fmt: FileFormat,
    compression: Compression,
    sink: pa.NativeFile,
    schema: pa.Schema,
    buffer_bytes: int = WRITE_BUFFER_BYTES,
) -> FormatWriter:
    """A writer of ``fmt`` on ``sink``; ``close()`` finishes the format and closes ``sink``."""
    if fmt is FileFormat.PARQUET:
        codec = "snappy" if compression is Compression.SNAPPY else compression.value
        writer = ParquetFileWriter(sink, schema, codec)
        return _Coalescing(writer, schema, buffer_bytes, sink)
    if fmt is FileFormat.ARROW:
        return _Coalescing(pa.ipc.new_file(sink, schema), schema, buffer_bytes, sink)
    stream: pa.NativeFile = sink
    if compression in _ARROW_CODEC:
        stream = pa.CompressedOutputStream(sink, _ARROW_CODEC[compression])
    if fmt is FileFormat.CSV:
        return _Closing(pa_csv.CSVWriter(stream, schema), stream, sink)
    return _JsonWriter(stream, sink, schema, array=fmt is FileFormat.JSON)


class _Closing:
    """A format writer that also closes the streams under it, innermost first."""

    def __init__(self, writer: Any, *streams: pa.NativeFile) -> None:
        self._writer = writer
        self._streams = streams

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()
        for stream in self._streams:
            if not stream.closed:
                stream.close()


class _Coalescing(_Closing):
    """Buffers small batches and writes them as one row group / record batch."""

    def __init__(
        self, writer: Any, schema: pa.Schema, buffer_bytes: int, *streams: pa.NativeFile
    ) -> None:
        super().__init__(writer, *streams)
        self._schema = schema
        self._limit = buffer_bytes
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if not batch.schema.equals(self._schema):
            raise pa.ArrowInvalid(f"batch schema {batch.schema} differs from {self._schema}")
        if isinstance(self._writer, ParquetFileWriter):
            self._writer.start(batch)  # the header goes out now; the encodings are chosen
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        if self._pending_bytes >= self._limit:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if len(pending) == 1:
            self._writer.write_batch(pending[0])
            return
        if isinstance(self._writer, ParquetFileWriter):
            # One row group straight from the chunks: the Parquet encoder walks
            # chunked columns itself, so combining them first is only a copy.
            table = pa.Table.from_batches(pending, schema=self._schema)
            self._writer.write_table(table, row_group_size=table.num_rows)
            return
        combined = pa.Table.from_batches(pending, schema=self._schema).combine_chunks()
        for batch in combined.to_batches():
            self._writer.write_batch(batch)

    def close(self) -> None:
        self._flush()
        super().close()


class _JsonWriter:
    """NDJSON (one object per line) or a JSON array of objects."""

    def __init__(
        self, stream: pa.NativeFile, sink: pa.NativeFile, schema: pa.Schema, *, array: bool
    ) -> None:
        self._stream = stream
        self._sink = sink
        self._schema = schema
        self._array = array
        self._first = True
        if array:
            stream.write(b"[")

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if not batch.schema.equals(self._schema):
            raise pa.ArrowInvalid(f"batch schema {batch.schema} differs from {self._schema}")
        if batch.num_rows == 0:
            return
        # Each column is encoded to JSON texts at once, then rows are assembled with one
        # str.format per row: an order of magnitude faster than json.dumps per row.
        columns = [_json_texts(column) for column in batch.columns]
        template = _row_template(batch.schema.names)
        rows = map(template.format, *columns) if columns else ["{}"] * batch.num_rows
        if self._array:
            text = ("\n" if self._first else ",\n") + ",\n".join(rows)
        else:
            text = "\n".join(rows) + "\n"
        self._first = False
        self._stream.write(text.encode("utf-8"))

    def close(self) -> None:
        if self._array:
            self._stream.write(b"]\n" if self._first else b"\n]\n")
        self._stream.close()
        if not self._sink.closed:
            self._sink.close()


def _row_template(names: Sequence[str]) -> str:
    """``{"a":{},"b":{}}`` as a ``str.format`` template (braces in names escaped)."""
    fields = ",".join(
        _encode_string(name).replace("{", "{{").replace("}", "}}") + ":{}" for name in names
    )
    return "{{" + fields + "}}"


def _json_texts(column: pa.Array) -> list[str]:
    """A column as JSON value texts (see the module doc for the mapping)."""
    kind = column.type
    values = column.to_pylist()
    if pa.types.is_integer(kind):
        return ["null" if v is None else str(v) for v in values]
    if pa.types.is_floating(kind):
        # repr keeps 1.0 a float on read; JSON has no NaN or Infinity.
        return ["null" if v is None or not math.isfinite(v) else repr(v) for v in values]
    if pa.types.is_boolean(kind):
        return ["null" if v is None else ("true" if v else "false") for v in values]
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return ["null" if v is None else _encode_string(v) for v in values]
    return [json.dumps(_json_value(v), ensure_ascii=False) for v in values]


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        # Arrow maps come back as lists of (key, value) pairs.
        return [_json_value(v) for v in value]
    return str(value)

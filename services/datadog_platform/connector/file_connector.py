"""The ``file`` connector type: CSV, JSON, NDJSON, Parquet (and Arrow) under a local or S3 root.

A source path names one file, a directory (every non-hidden file in it,
recursively) or a glob (``events/**/*.parquet``); several files are read as one
source: they must have the same columns (types are widened where Arrow can, e.g.
int64 and double to double; NULL-only columns take the other files' type), else
INVALID_ARGUMENT / SCHEMA_MISMATCH naming the files. Hive-style directories
(``country=FR/...``) add their keys as columns (int64 when every value is an
integer, else string).

Projection is pushed into every format (only those columns are decoded); the
predicate becomes an Arrow filter expression (Parquet row groups whose statistics
exclude it are skipped, and never planned; text formats filter after parsing).
``plan_read`` makes one ticket per file (contiguous groups of files beyond
``max_splits``), or for a single Parquet file one per contiguous run of row groups,
at most ``max_splits`` (when 0: runs of at least :data:`SPLIT_BYTES`, at most
:data:`DEFAULT_MAX_SPLITS`). A ticket carries the schema and the file paths
relative to the root, which are confined again when read.

Writes: see :mod:`~datadog_platform.connector.file_writers`. OVERWRITE (default)
replaces a file or a partitioned directory atomically; APPEND needs
``partition_by`` and is idempotent per key.

Error reasons raised here (besides those of ``file_paths`` and ``file_formats``):
``SCHEMA_MISMATCH``, ``INVALID_TICKET``, ``UNSUPPORTED_WRITE_MODE``,
``INVALID_OPTION`` (compression), ``UNKNOWN_COLUMN`` (projection, predicate or
``partition_by``), ``INVALID_PREDICATE``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as ds

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.connector.base import (
    Capability,
    Connection,
    ConnectorType,
    OptionSpec,
    ReadPlan,
    ReadScope,
    RecordStream,
    SourceDescription,
    StreamItem,
    Ticket,
    TypeInfo,
    WriteOutcome,
    project_schema,
)
from datadog_platform.connector.file_formats import (
    COMPRESSION_OF_PROTO,
    Compression,
    FileFormat,
    file_format_of,
    file_schema,
    make_fragment,
    partition_expression,
    proto_format,
    scan_file,
    split_extension,
    stored_whole,
)
from datadog_platform.connector.file_io import BlockingBatches, drive_write, open_stream
from datadog_platform.connector.file_paths import (
    FileEntry,
    FileRoot,
    io_error,
    probe_root,
)
from datadog_platform.connector.file_predicates import predicate_columns, predicate_expression
from datadog_platform.connector.file_writers import (
    HIVE_NULL,
    PartitionedWriter,
    SingleFileWriter,
    appended_rows,
)
from datadog_platform.core.errors import DomainError, FieldViolation, invalid_argument

#: Tickets a plan makes at most when the caller leaves ``max_splits`` at 0.
DEFAULT_MAX_SPLITS = 64
#: With ``max_splits`` 0, a single Parquet file splits into runs of at least this
#: many uncompressed bytes (smaller splits cost more in calls than they save).
SPLIT_BYTES = 32 << 20
_TICKET_VERSION = 1
_INTEGER = re.compile(r"^-?\d{1,18}$")
_SOURCE = "source.file"
_SINK = "header.sink.file"

FILE_TYPE_INFO = TypeInfo(
    type="file",
    description=(
        "Files under a root directory or S3-compatible bucket prefix: CSV, JSON (array), "
        "NDJSON and Parquet; a file, a directory or a glob; .gz/.zst compression; "
        "hive-partitioned writes"
    ),
    capabilities=frozenset(
        {
            Capability.READ,
            Capability.WRITE,
            Capability.DESCRIBE,
            Capability.PROJECTION_PUSHDOWN,
            Capability.PREDICATE_PUSHDOWN,
            Capability.SPLITS,
        }
    ),
    options=(
        OptionSpec(
            "root",
            "string",
            "Directory every path is relative to and confined in: a local directory (relative "
            "to the config file's directory) or s3://bucket/prefix",
            required=True,
        ),
        OptionSpec(
            "endpoint_url",
            "string",
            "S3 endpoint of an S3-compatible store, e.g. http://127.0.0.1:9000 (s3:// roots)",
        ),
        OptionSpec("region", "string", "S3 region (s3:// roots)"),
        OptionSpec(
            "access_key_id",
            "string",
            "S3 access key id; without it the AWS default credential chain is used",
        ),
        OptionSpec("secret_access_key", "string", "S3 secret access key", secret=True),
    ),
)


class FileConnectorType(ConnectorType):
    """Makes file connections from config entries."""

    spec_kind = "file"
    info = FILE_TYPE_INFO

    def create(self, name: str, options: Mapping[str, Any], base_dir: Path) -> FileConnection:
        """A connection rooted at ``options['root']`` (an existing directory, or s3://)."""
        root = FileRoot.from_options(options, base_dir)
        shown = {"root": root.base if root.local else root.uri}
        for option in ("endpoint_url", "region"):
            if options.get(option):
                shown[option] = str(options[option])
        return FileConnection(name, root, str(options.get("description") or ""), shown)


@dataclass(frozen=True)
class _Part:
    """One file of a read (some of its row groups, for Parquet)."""

    rel: str  # relative to the connection's root; what tickets carry
    fmt: FileFormat
    partition: dict[str, Any] = field(default_factory=dict)
    row_groups: tuple[int, ...] | None = None
    rows: int | None = None
    size: int = 0


@dataclass(frozen=True)
class _Source:
    schema: pa.Schema
    parts: list[_Part]

    @property
    def rows(self) -> int | None:
        counts = [p.rows for p in self.parts]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)


class FileConnection(Connection):
    """A named file connection: a root every path stays inside."""

    def __init__(
        self,
        name: str,
        root: FileRoot | Path,
        description: str = "",
        shown_options: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name, "file", description)
        self.root = root if isinstance(root, FileRoot) else FileRoot.local_dir(Path(root))
        self._shown = dict(shown_options or {"root": self.root.base})

    def public_options(self) -> dict[str, str]:
        """Root, endpoint and region; never the credentials."""
        return dict(self._shown)

    # ------------------------------------------------------------------ test

    async def test(self) -> str:
        """The root exists, can be listed, and a probe file can be created and deleted."""
        return await asyncio.to_thread(probe_root, self.root)

    # ------------------------------------------------------------------ reads

    async def describe(self, source: step_pb2.FileSource) -> SourceDescription:
        """The unified schema; rows from Parquet footers when every file is Parquet."""
        resolved = await asyncio.to_thread(self._resolve_source, source)
        return SourceDescription(resolved.schema, resolved.rows)

    async def plan_read(
        self, source: step_pb2.FileSource, scope: ReadScope, max_splits: int
    ) -> ReadPlan:
        """One ticket per file, or per group of row groups of a single Parquet file."""
        return await asyncio.to_thread(self._plan, source, scope, max_splits)

    def read(
        self, source: step_pb2.FileSource, scope: ReadScope, ticket: bytes
    ) -> AbstractAsyncContextManager[RecordStream]:
        """Stream ``source`` (or one ticket of it), projected and filtered."""
        return open_stream(lambda: self._open_read(source, scope, ticket))

    def _resolve_source(self, source: step_pb2.FileSource) -> _Source:
        declared = proto_format(source.format, _SOURCE)
        try:
            entries = self.root.expand(source.path, _SOURCE, self.name)
        except DomainError as exc:
            if exc.reason == "SOURCE_NOT_FOUND" and declared is None:
                # A missing "notes.txt" is first of all a path no format fits.
                name = PurePosixPath(source.path).name
                if "." in name.strip(".") and not any(c in name for c in "*?["):
                    file_format_of(source.path, None, source.path, _SOURCE)
            raise
        except Exception as exc:
            raise _mapped(io_error(exc, source.path, writing=False), exc) from exc
        keys, values = _discover_partitions(entries)
        parts: list[_Part] = []
        schemas: list[tuple[str, pa.Schema]] = []
        for entry, partition in zip(entries, values, strict=True):
            rel = self.root.relative(entry.path)
            fmt = _read_format(entry.path, declared, rel)
            try:
                rows = None
                if fmt is FileFormat.PARQUET:
                    fragment = make_fragment(self.root.fs, entry.path, fmt)
                    schema = fragment.physical_schema
                    rows = fragment.metadata.num_rows
                else:
                    schema = file_schema(self.root.fs, entry.path, fmt, rel)
            except Exception as exc:
                raise _read_failure(exc, rel, entry.path) from exc
            schemas.append((rel, schema))
            parts.append(_Part(rel, fmt, partition, None, rows, entry.size))
        unified = _unify(schemas)
        keys = [k for k in keys if unified.get_field_index(k) < 0]
        partition_fields = [_partition_field(k, [v[k] for v in values]) for k in keys]
        schema = pa.schema([*unified, *partition_fields])
        typed = [
            _Part(p.rel, p.fmt, _typed(p.partition, schema, keys), None, p.rows, p.size)
            for p in parts
        ]
        return _Source(schema, typed)

    def _plan(self, source: step_pb2.FileSource, scope: ReadScope, max_splits: int) -> ReadPlan:
        resolved = self._resolve_source(source)
        schema = project_schema(resolved.schema, scope.columns)
        predicate = predicate_expression(scope.predicate, resolved.schema)
        limit = max_splits or DEFAULT_MAX_SPLITS
        parts: list[_Part] = []
        group_rows: dict[str, dict[int, tuple[int, int]]] = {}
        for part in resolved.parts:
            if part.fmt is FileFormat.PARQUET and (
                predicate is not None or len(resolved.parts) == 1
            ):
                part, rows_by_group = self._prune(part, resolved.schema, predicate)
                group_rows[part.rel] = rows_by_group
                if not part.row_groups and len(resolved.parts) > 1:
                    continue  # no row group can match: nothing to read in this file
            parts.append(part)
        if not parts:
            # Every row group is excluded: one empty ticket, so the schema still flows.
            parts = [dataclasses.replace(resolved.parts[0], row_groups=(), rows=0)]
        chunks: list[list[_Part]]
        if len(parts) == 1 and parts[0].row_groups and limit > 1:
            only = parts[0]
            if scope.accept_parquet and self._stored_whole(only, resolved.schema, scope, predicate):
                limit = 1  # the client decodes it: one stream holds the least memory
            sizes = group_rows.get(only.rel, {})
            if not max_splits:  # the connector's choice: splits of at least ~SPLIT_BYTES
                total = sum(size for _, size in sizes.values())
                limit = min(limit, max(1, total // SPLIT_BYTES))
            chunks = [
                [_Part(only.rel, only.fmt, only.partition, run, sum(sizes[i][0] for i in run))]
                for run in _split_row_groups(only.row_groups, limit)
            ]
        else:
            chunks = _chunks(parts, limit)
        tickets = tuple(
            Ticket(
                _encode_ticket(source, resolved.schema, chunk),
                _describe_chunk(chunk),
                None if any(p.rows is None for p in chunk) else sum(p.rows or 0 for p in chunk),
            )
            for chunk in chunks
        )
        return ReadPlan(schema, tickets)

    def _stored_whole(
        self,
        part: _Part,
        schema: pa.Schema,
        scope: ReadScope,
        predicate: ds.Expression | None,
    ) -> bool:
        """Whether a read of ``part`` would be sent as its stored column chunks."""
        path = self.root.resolve(part.rel, _SOURCE, self.name)
        try:
            return stored_whole(
                self.root.fs, path, part.fmt, schema, scope.columns, predicate, part.partition
            )
        except Exception as exc:
            raise _read_failure(exc, part.rel, path) from exc

    def _prune(
        self, part: _Part, schema: pa.Schema, predicate: ds.Expression | None
    ) -> tuple[_Part, dict[int, tuple[int, int]]]:
        """``part`` with the row groups ``predicate`` may match (all when none).

        Also returns each such row group's rows and uncompressed bytes by id.
        """
        path = self.root.resolve(part.rel, _SOURCE, self.name)
        try:
            fragment = make_fragment(
                self.root.fs, path, part.fmt, partition_expression(part.partition, schema)
            )
            if predicate is not None:
                fragment = fragment.subset(filter=predicate, schema=schema)
            groups = [(g.id, (g.num_rows, g.total_byte_size)) for g in fragment.row_groups]
        except Exception as exc:
            raise _read_failure(exc, part.rel, path) from exc
        ids = tuple(i for i, _ in groups)
        rows = sum(n for _, (n, _) in groups)
        pruned = _Part(part.rel, part.fmt, part.partition, ids, rows, part.size)
        return pruned, dict(groups)

    def _open_read(
        self, source: step_pb2.FileSource, scope: ReadScope, ticket: bytes
    ) -> BlockingBatches:
        if ticket:
            schema, parts = _decode_ticket(ticket, source)
        else:
            resolved = self._resolve_source(source)
            schema, parts = resolved.schema, resolved.parts
        out_schema = project_schema(schema, scope.columns)
        predicate = predicate_expression(scope.predicate, schema)
        paths = [
            self.root.resolve(p.rel, "ticket" if ticket else _SOURCE, self.name) for p in parts
        ]
        if ticket:
            for part, path in zip(parts, paths, strict=True):
                self.root.check_inside(path, part.rel, self.name)
        return BlockingBatches(
            out_schema,
            self._batches(
                parts,
                paths,
                schema,
                out_schema,
                scope.columns,
                predicate,
                predicate_columns(scope.predicate) if predicate is not None else [],
                scope.accept_parquet,
            ),
            lambda exc: None,
        )

    def _batches(
        self,
        parts: Sequence[_Part],
        paths: Sequence[str],
        schema: pa.Schema,
        out_schema: pa.Schema,
        columns: Sequence[str],
        predicate: ds.Expression | None,
        filter_columns: Sequence[str],
        accept_parquet: bool,
    ) -> Iterator[StreamItem]:
        for part, path in zip(parts, paths, strict=True):
            batches = scan_file(
                self.root.fs,
                path,
                part.fmt,
                part.rel,
                schema,
                columns,
                predicate,
                filter_columns,
                part.partition,
                part.row_groups,
                accept_parquet,
            )
            try:
                for batch in batches:
                    if type(batch) is pa.RecordBatch and not batch.schema.equals(out_schema):
                        batch = pa.RecordBatch.from_arrays(batch.columns, schema=out_schema)
                    yield batch
            except Exception as exc:
                raise _read_failure(exc, part.rel, path) from exc
            finally:
                batches.close()

    # ------------------------------------------------------------------ writes

    async def write(
        self,
        sink: step_pb2.FileSink,
        idempotency_key: str,
        schema: pa.Schema,
        batches: AsyncIterator[pa.RecordBatch],
    ) -> WriteOutcome:
        """Write a file or a partitioned directory; commit atomically after the last batch."""
        plan = await asyncio.to_thread(self._write_plan, sink, schema)
        if plan.append:
            try:
                rows = await asyncio.to_thread(
                    appended_rows, self.root, plan.target, idempotency_key
                )
            except Exception as exc:
                raise _mapped(io_error(exc, sink.path, writing=True), exc) from exc
            if rows is not None:
                async for _ in batches:  # the stream must still be complete
                    pass
                return WriteOutcome(rows, self.root.location(plan.target), replayed=True)

        def open_writer() -> SingleFileWriter | PartitionedWriter:
            if plan.partition_by:
                return PartitionedWriter(
                    self.root,
                    plan.target,
                    sink.path,
                    plan.format,
                    plan.compression,
                    schema,
                    plan.partition_by,
                    plan.append,
                    idempotency_key,
                )
            return SingleFileWriter(
                self.root, plan.target, sink.path, plan.format, plan.compression, schema
            )

        rows, location = await drive_write(open_writer, batches)
        return WriteOutcome(rows, location)

    def _write_plan(self, sink: step_pb2.FileSink, schema: pa.Schema) -> _WritePlan:
        target = self.root.resolve(sink.path, _SINK, self.name)
        declared = proto_format(sink.format, _SINK)
        fmt = file_format_of(sink.path, declared, sink.path, _SINK)
        partition_by = _check_partition_by(list(sink.partition_by), schema)
        mode = sink.mode
        if mode not in (
            step_pb2.WRITE_MODE_UNSPECIFIED,
            step_pb2.WRITE_MODE_OVERWRITE,
            step_pb2.WRITE_MODE_APPEND,
        ):
            name = step_pb2.WriteMode.Name(mode) if mode in step_pb2.WriteMode.values() else mode
            raise _mode_error(f"write mode {name} is not supported by file sinks")
        append = mode == step_pb2.WRITE_MODE_APPEND
        if append and not partition_by:
            raise _mode_error(
                "WRITE_MODE_APPEND needs partition_by: a single file can only be overwritten "
                "(APPEND adds files to a partitioned directory)"
            )
        compression = _write_compression(sink, fmt, bool(partition_by))
        return _WritePlan(target, fmt, compression, partition_by, append)


@dataclass(frozen=True)
class _WritePlan:
    target: str
    format: FileFormat
    compression: Compression
    partition_by: list[str]
    append: bool


FILE_CONNECTOR_TYPE = FileConnectorType()


# --------------------------------------------------------------------------- helpers


def _mapped(error: DomainError | None, exc: Exception) -> Exception:
    return error if error is not None else exc


def _read_failure(exc: Exception, rel: str, path: str) -> Exception:
    """A failure reading one file as a domain error naming it as relative to the root."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)) or (
        isinstance(exc, pa.ArrowException) and not isinstance(exc, OSError)
    ):
        message = str(exc).replace(path, rel)
        return invalid_argument("SOURCE_PARSE_ERROR", f"cannot parse {rel!r}: {message}", path=rel)
    if isinstance(exc, OSError) and "Parquet magic bytes not found" in str(exc):
        return invalid_argument("SOURCE_PARSE_ERROR", f"cannot parse {rel!r}: not a Parquet file")
    return _mapped(io_error(exc, rel, writing=False), exc)


def _read_format(path: str, declared: FileFormat | None, rel: str) -> FileFormat:
    fmt = file_format_of(path, declared, rel, _SOURCE)
    _, compression = split_extension(path)
    if fmt in (FileFormat.PARQUET, FileFormat.ARROW) and compression is not None:
        raise invalid_argument(
            "UNKNOWN_FILE_FORMAT",
            f"{rel!r}: a compressed {fmt.value} file is not supported",
            [FieldViolation(f"{_SOURCE}.path", "compressed Parquet")],
            path=rel,
        )
    return fmt


def _unify(schemas: Sequence[tuple[str, pa.Schema]]) -> pa.Schema:
    """One schema for files with the same columns (order of the first), types widened."""
    with_columns = [(rel, s) for rel, s in schemas if len(s)]
    if not with_columns:
        return pa.schema([])
    first_rel, first = with_columns[0]
    for rel, schema in with_columns[1:]:
        if set(schema.names) != set(first.names):
            missing = sorted(set(first.names) - set(schema.names))
            extra = sorted(set(schema.names) - set(first.names))
            detail = "; ".join(
                text
                for text in (
                    f"it lacks {', '.join(missing)}" if missing else "",
                    f"it has {', '.join(extra)} in addition" if extra else "",
                )
                if text
            )
            raise _mismatch(
                first_rel, rel, f"{rel!r} has other columns than {first_rel!r}: {detail}"
            )
    try:
        unified = pa.unify_schemas([s for _, s in with_columns], promote_options="permissive")
    except (pa.ArrowException, TypeError) as exc:
        raise _mismatch(first_rel, "", f"column types differ between the files: {exc}") from None
    return pa.schema([unified.field(n) for n in first.names])


def _mismatch(first: str, other: str, message: str) -> DomainError:
    return invalid_argument(
        "SCHEMA_MISMATCH",
        f"the files of this source cannot be read as one: {message}",
        [FieldViolation(f"{_SOURCE}.path", message)],
        first=first,
        other=other,
    )


def _discover_partitions(entries: Sequence[FileEntry]) -> tuple[list[str], list[dict[str, Any]]]:
    """Hive keys shared by every file (``k=v`` directories), and each file's raw values."""
    keys: list[str] | None = None
    values: list[dict[str, Any]] = []
    for entry in entries:
        parts = entry.rel.split("/")[:-1]
        pairs = [p.split("=", 1) for p in parts]
        if not parts or any(len(p) != 2 or not p[0] for p in pairs):
            return [], [{} for _ in entries]
        these = [unquote(k) for k, _ in pairs]
        if keys is None:
            keys = these
        elif these != keys:
            return [], [{} for _ in entries]
        values.append({unquote(k): (None if v == HIVE_NULL else unquote(v)) for k, v in pairs})
    return keys or [], values


def _partition_field(key: str, raw: Sequence[str | None]) -> pa.Field:
    present = [v for v in raw if v is not None]
    if present and all(_INTEGER.match(v) for v in present):
        return pa.field(key, pa.int64())
    return pa.field(key, pa.string())


def _typed(raw: Mapping[str, Any], schema: pa.Schema, keys: Sequence[str]) -> dict[str, Any]:
    typed: dict[str, Any] = {}
    for key in keys:
        value = raw.get(key)
        if value is not None and pa.types.is_integer(schema.field(key).type):
            value = int(value)
        typed[key] = value
    return typed


def _split_row_groups(ids: Sequence[int], limit: int) -> list[tuple[int, ...]]:
    """Row group ids in at most ``limit`` contiguous runs of about equal count."""
    count = min(limit, len(ids))
    size, extra = divmod(len(ids), count)
    runs, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        runs.append(tuple(ids[start:end]))
        start = end
    return runs


def _chunks(parts: Sequence[_Part], limit: int) -> list[list[_Part]]:
    """One part per chunk, or (more parts than ``limit``) contiguous chunks of ~equal bytes."""
    if len(parts) <= limit:
        return [[p] for p in parts]
    total = sum(max(p.size, 1) for p in parts)
    target = total / limit
    chunks: list[list[_Part]] = [[]]
    filled = 0.0
    for index, part in enumerate(parts):
        must_split = len(parts) - index <= limit - len(chunks)
        if chunks[-1] and len(chunks) < limit and (filled >= target or must_split):
            chunks.append([])
            filled = 0.0
        chunks[-1].append(part)
        filled += max(part.size, 1)
    return chunks


def _describe_chunk(chunk: Sequence[_Part]) -> str:
    def one(part: _Part) -> str:
        groups = part.row_groups
        if groups is None:
            return part.rel
        if not groups:
            return f"{part.rel} (no row group can match)"
        if len(groups) == 1:
            return f"{part.rel} row group {groups[0]}"
        return f"{part.rel} row groups {groups[0]}..{groups[-1]}"

    text = ", ".join(one(p) for p in chunk[:3])
    return text if len(chunk) <= 3 else f"{text} and {len(chunk) - 3} more files"


# --------------------------------------------------------------------------- tickets


def _encode_ticket(source: step_pb2.FileSource, schema: pa.Schema, parts: Sequence[_Part]) -> bytes:
    document = {
        "v": _TICKET_VERSION,
        "path": source.path,
        "format": int(source.format),
        "schema": base64.b64encode(schema.serialize().to_pybytes()).decode("ascii"),
        "parts": [
            {
                "path": p.rel,
                "format": p.fmt.value,
                "partition": p.partition,
                "row_groups": list(p.row_groups) if p.row_groups is not None else None,
            }
            for p in parts
        ],
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _decode_ticket(ticket: bytes, source: step_pb2.FileSource) -> tuple[pa.Schema, list[_Part]]:
    try:
        document = json.loads(ticket)
        if document.get("v") != _TICKET_VERSION:
            raise ValueError("unknown ticket version")
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(document["schema"])))
        parts = []
        for item in document["parts"]:
            row_groups = item.get("row_groups")
            parts.append(
                _Part(
                    str(item["path"]),
                    FileFormat(item["format"]),
                    dict(item.get("partition") or {}),
                    tuple(int(i) for i in row_groups) if row_groups is not None else None,
                )
            )
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, pa.ArrowException):
        raise _ticket_error("it is not a ticket from PlanRead of this connector") from None
    if document["path"] != source.path or document["format"] != int(source.format):
        raise _ticket_error("it was planned for another source; plan the read again")
    return schema, parts


def _ticket_error(problem: str) -> DomainError:
    return invalid_argument(
        "INVALID_TICKET", f"ticket cannot be read: {problem}", [FieldViolation("ticket", problem)]
    )


# --------------------------------------------------------------------------- write options


def _check_partition_by(columns: list[str], schema: pa.Schema) -> list[str]:
    violations = []
    for index, column in enumerate(columns):
        where = f"{_SINK}.partition_by[{index}]"
        if schema.get_field_index(column) < 0:
            violations.append(FieldViolation(where, f"unknown column {column!r}"))
        elif columns.index(column) != index:
            violations.append(FieldViolation(where, f"{column!r} is listed twice"))
        elif pa.types.is_nested(schema.field(column).type):
            violations.append(
                FieldViolation(where, f"{column!r} is nested; cannot partition by it")
            )
    if violations:
        raise invalid_argument(
            "UNKNOWN_COLUMN" if "unknown" in violations[0].description else "INVALID_OPTION",
            f"{_SINK}.partition_by: {'; '.join(v.description for v in violations)}; "
            f"the data has {', '.join(schema.names)}",
            violations,
        )
    if columns and len(columns) == len(schema):
        raise invalid_argument(
            "INVALID_OPTION",
            f"{_SINK}.partition_by names every column; at least one must remain in the files",
            [FieldViolation(f"{_SINK}.partition_by", "every column is a partition column")],
        )
    return columns


def _write_compression(sink: step_pb2.FileSink, fmt: FileFormat, partitioned: bool) -> Compression:
    where = f"{_SINK}.compression"
    if sink.compression not in COMPRESSION_OF_PROTO:
        raise _option_error(where, f"unknown compression value {sink.compression}")
    requested = COMPRESSION_OF_PROTO[sink.compression]
    _, from_path = split_extension(sink.path)
    if fmt in (FileFormat.PARQUET, FileFormat.ARROW) and from_path is not None:
        raise _option_error(
            f"{_SINK}.path",
            f"{sink.path!r}: a {fmt.value} file cannot be compressed as a whole; drop the "
            f"{from_path.value} extension (Parquet takes compression instead)",
        )
    if fmt is FileFormat.PARQUET:
        return requested or Compression.SNAPPY
    if fmt is FileFormat.ARROW:
        if requested not in (None, Compression.NONE):
            raise _option_error(where, "Arrow files are written uncompressed")
        return Compression.NONE
    if requested is Compression.SNAPPY:
        raise _option_error(where, f"SNAPPY is for Parquet only; {fmt.value} takes GZIP or ZSTD")
    if partitioned:
        return requested or from_path or Compression.NONE
    actual = from_path or Compression.NONE
    if requested is not None and requested is not actual:
        extension = {Compression.GZIP: ".gz", Compression.ZSTD: ".zst"}.get(requested)
        problem = (
            f"compression {requested.name} needs a path ending in {extension} "
            "(reads take the codec from the extension)"
            if extension
            else f"the path's extension says {actual.name}"
        )
        raise _option_error(where, f"{sink.path!r}: {problem}")
    return actual


def _option_error(where: str, problem: str) -> DomainError:
    return invalid_argument(
        "INVALID_OPTION", f"{where}: {problem}", [FieldViolation(where, problem)]
    )


def _mode_error(problem: str) -> DomainError:
    return invalid_argument(
        "UNSUPPORTED_WRITE_MODE",
        problem,
        [FieldViolation(f"{_SINK}.mode", problem)],
    )


__all__ = [
    "DEFAULT_MAX_SPLITS",
    "FILE_CONNECTOR_TYPE",
    "FILE_TYPE_INFO",
    "FileConnection",
    "FileConnectorType",
]

"""The ``artifact`` connector type: stage outputs as Arrow IPC files (DESIGN.md §3).

An artifact is ``<root>/<key>.arrow``, ``key`` like ``runs/<run>/<stage>/<step>``;
the root is a local directory (created on first write) or ``s3://bucket/prefix``.
Writes are atomic like any file write (temporary name + rename; one upload on S3),
so a retried stage simply replaces its output. Reads stream the file's record
batches (memory-mapped locally); ``plan_read`` splits them into contiguous runs.

Error reasons: ``INVALID_KEY`` (INVALID_ARGUMENT), ``PATH_OUTSIDE_ROOT``
(PERMISSION_DENIED) for a key with ``..`` or a leading ``/``, ``SOURCE_NOT_FOUND``
(NOT_FOUND), ``INVALID_TICKET``, and the I/O reasons of ``file_paths``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

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
    Ticket,
    TypeInfo,
    WriteOutcome,
    project_schema,
)
from datadog_platform.connector.file_formats import Compression, FileFormat
from datadog_platform.connector.file_io import BlockingBatches, drive_write, open_stream
from datadog_platform.connector.file_paths import FileRoot, io_error, probe_root
from datadog_platform.connector.file_predicates import predicate_expression
from datadog_platform.connector.file_writers import SingleFileWriter
from datadog_platform.core.errors import (
    DomainError,
    FieldViolation,
    invalid_argument,
    not_found,
    permission_denied,
)

EXTENSION = ".arrow"
MAX_KEY_LENGTH = 1024
#: Record batches per ticket when the caller leaves ``max_splits`` at 0.
DEFAULT_BATCHES_PER_TICKET = 128
_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._=@+:-]*$")

ARTIFACT_TYPE_INFO = TypeInfo(
    type="artifact",
    description="Stage outputs as Arrow IPC files under a run/stage key, locally or on S3",
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
            "Where artifacts are kept: a local directory (created when missing; relative to "
            "the config file's directory) or s3://bucket/prefix",
            required=True,
        ),
        OptionSpec("endpoint_url", "string", "S3 endpoint of an S3-compatible store"),
        OptionSpec("region", "string", "S3 region"),
        OptionSpec("access_key_id", "string", "S3 access key id"),
        OptionSpec("secret_access_key", "string", "S3 secret access key", secret=True),
    ),
)


class ArtifactConnectorType(ConnectorType):
    """Makes artifact-store connections."""

    spec_kind = "artifact"
    info = ARTIFACT_TYPE_INFO

    def create(self, name: str, options: Mapping[str, Any], base_dir: Path) -> ArtifactConnection:
        """A store rooted at ``options['root']`` (a local one need not exist yet)."""
        root = FileRoot.from_options(options, base_dir, must_exist=False)
        return ArtifactConnection(name, root, str(options.get("description") or ""))


class ArtifactConnection(Connection):
    """The artifact store: Arrow IPC files by key."""

    def __init__(self, name: str, root: FileRoot | Path, description: str = "") -> None:
        super().__init__(name, "artifact", description)
        self.root = (
            root if isinstance(root, FileRoot) else FileRoot.local_dir(Path(root), must_exist=False)
        )

    def public_options(self) -> dict[str, str]:
        """The root; never credentials."""
        return {"root": self.root.base if self.root.local else self.root.uri}

    async def test(self) -> str:
        """The root exists (created locally), lists, and takes a probe file."""

        def check() -> str:
            if self.root.local:
                os.makedirs(self.root.base, exist_ok=True)
            return probe_root(self.root)

        return await asyncio.to_thread(check)

    def path_of(self, key: str, field: str) -> str:
        """The file of artifact ``key`` (validated; see the module doc)."""
        where = f"{field}.key"
        if not key:
            raise invalid_argument(
                "REQUIRED_FIELD_MISSING",
                f"{where} is required",
                [FieldViolation(where, "must not be empty")],
            )
        components = key.split("/")
        if key.startswith("/") or ".." in components:
            raise permission_denied(
                "PATH_OUTSIDE_ROOT",
                f"artifact key {key!r} leaves the artifact store: keys are relative "
                "(no leading '/') and may not contain '..'",
                key=key,
                connection=self.name,
            )
        bad = [c for c in components if not _COMPONENT.match(c)]
        if bad or len(key) > MAX_KEY_LENGTH:
            problem = (
                f"component {bad[0]!r} is not allowed (letters, digits and ._=@+:- , not "
                "starting with '.')"
                if bad
                else f"longer than {MAX_KEY_LENGTH} characters"
            )
            raise invalid_argument(
                "INVALID_KEY", f"artifact key {key!r}: {problem}", [FieldViolation(where, problem)]
            )
        return f"{self.root.base}/{key}{EXTENSION}"

    # ------------------------------------------------------------------ reads

    async def describe(self, source: step_pb2.ArtifactSource) -> SourceDescription:
        """The artifact's schema and row count."""

        def describe() -> SourceDescription:
            with self._open(source.key) as reader:
                return SourceDescription(reader.schema, reader.count_rows())

        return await asyncio.to_thread(describe)

    async def plan_read(
        self, source: step_pb2.ArtifactSource, scope: ReadScope, max_splits: int
    ) -> ReadPlan:
        """Contiguous runs of record batches, at most ``max_splits``."""

        def plan() -> ReadPlan:
            with self._open(source.key) as reader:
                schema = project_schema(reader.schema, scope.columns)
                predicate_expression(scope.predicate, reader.schema)  # validate it now
                count = reader.num_record_batches
            limit = max_splits or max(1, -(-count // DEFAULT_BATCHES_PER_TICKET))
            runs = min(limit, max(count, 1))
            size, extra = divmod(count, runs)
            tickets, start = [], 0
            for index in range(runs):
                end = start + size + (1 if index < extra else 0)
                data = json.dumps({"key": source.key, "batches": [start, end]}).encode()
                tickets.append(Ticket(data, f"{source.key} record batches [{start}, {end})"))
                start = end
            return ReadPlan(schema, tuple(tickets))

        return await asyncio.to_thread(plan)

    def read(
        self, source: step_pb2.ArtifactSource, scope: ReadScope, ticket: bytes
    ) -> AbstractAsyncContextManager[RecordStream]:
        """Stream the artifact (or a ticket's batches), projected and filtered."""
        return open_stream(lambda: self._open_read(source.key, scope, ticket))

    def _open_read(self, key: str, scope: ReadScope, ticket: bytes) -> BlockingBatches:
        reader = self._open(key)
        try:
            count = reader.num_record_batches
            start, end = _ticket_range(ticket, key, count) if ticket else (0, count)
            schema = reader.schema
            out_schema = project_schema(schema, scope.columns)
            predicate = predicate_expression(scope.predicate, schema)
        except BaseException:
            reader.close()
            raise

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for index in range(start, end):
                    yield reader.get_batch(index)
            except Exception as exc:
                raise _failure(exc, key) from exc

        if scope.columns or predicate is not None:
            scanner = ds.Scanner.from_batches(
                batches(), schema=schema, columns=list(scope.columns) or None, filter=predicate
            )
            stream: Iterator[pa.RecordBatch] = iter(scanner.to_batches())
        else:
            stream = batches()
        return BlockingBatches(out_schema, stream, lambda exc: _failure(exc, key), reader.close)

    def _open(self, key: str) -> _Reader:
        path = self.path_of(key, "source.artifact")
        try:
            handle = pa.memory_map(path) if self.root.local else self.root.fs.open_input_file(path)
        except Exception as exc:
            if isinstance(exc, FileNotFoundError) or "NO_SUCH_KEY" in str(exc):
                raise not_found(
                    "SOURCE_NOT_FOUND", f"artifact {key!r} does not exist", key=key
                ) from None
            raise _failure(exc, key) from exc
        try:
            return _Reader(pa.ipc.open_file(handle), handle)
        except Exception as exc:
            handle.close()
            raise _failure(exc, key) from exc

    # ------------------------------------------------------------------ writes

    async def write(
        self,
        sink: step_pb2.ArtifactSink,
        idempotency_key: str,
        schema: pa.Schema,
        batches: AsyncIterator[pa.RecordBatch],
    ) -> WriteOutcome:
        """Write the artifact atomically once every batch has arrived (replaces it)."""
        path = self.path_of(sink.key, "header.sink.artifact")
        rows, location = await drive_write(
            lambda: SingleFileWriter(
                self.root, path, sink.key, FileFormat.ARROW, Compression.NONE, schema
            ),
            batches,
        )
        return WriteOutcome(rows, location)


class _Reader:
    """An open IPC file and the handle under it."""

    def __init__(self, reader: pa.ipc.RecordBatchFileReader, handle: pa.NativeFile) -> None:
        self._reader = reader
        self._handle = handle
        self.schema = reader.schema
        self.num_record_batches = reader.num_record_batches

    def count_rows(self) -> int:
        return int(self._reader.count_rows())

    def get_batch(self, index: int) -> pa.RecordBatch:
        return self._reader.get_batch(index)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _ticket_range(ticket: bytes, key: str, count: int) -> tuple[int, int]:
    try:
        document = json.loads(ticket)
        start, end = (int(v) for v in document["batches"])
        same = document["key"] == key
    except (ValueError, KeyError, TypeError):
        same, start, end = False, 0, -1
    if not same or not 0 <= start <= end <= count:
        problem = "it is not a ticket from PlanRead of this artifact"
        raise invalid_argument(
            "INVALID_TICKET",
            f"ticket cannot be read: {problem}",
            [FieldViolation("ticket", problem)],
        )
    return start, end


def _failure(exc: Exception, key: str) -> Exception:
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, pa.ArrowException) and not isinstance(exc, OSError):
        return invalid_argument(
            "SOURCE_PARSE_ERROR", f"artifact {key!r} is not a readable Arrow file: {exc}", key=key
        )
    error = io_error(exc, key, writing=False)
    return error if error is not None else exc


ARTIFACT_CONNECTOR_TYPE = ArtifactConnectorType()

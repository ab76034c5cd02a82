"""What every connector implements: a connector *type* that makes *connections*.

A :class:`ConnectorType` (file, postgres, mysql, rest, or a plugin) documents its
options and capabilities and builds a :class:`Connection` from one entry of the
connector configuration. A connection reads and writes Arrow record batches; the
servicer turns them into stream frames. Nothing here imports grpc; pipeline
source/sink specs stay protobuf messages (they are the spec format).

Delivery contract of :meth:`Connection.write`: consume ``batches`` to the end and
commit only then, atomically, recording ``idempotency_key`` with the data where the
target can (a ledger table in the same transaction); a key already committed
writes nothing and returns the original count with ``replayed=True``. If
``batches`` raises (the stream broke, was cancelled, or did not complete) the
target must be exactly as it was.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from datadog_platform.api.common.v1 import predicate_pb2
from datadog_platform.core.errors import DomainError, FieldViolation, invalid_argument
from datadog_platform.core.parquet_frames import ParquetChunk, ParquetFileHead


class Capability(enum.Enum):
    """What a connector type can do (mirrors the proto enum ``Capability``)."""

    READ = "READ"
    WRITE = "WRITE"
    DESCRIBE = "DESCRIBE"
    PROJECTION_PUSHDOWN = "PROJECTION_PUSHDOWN"
    PREDICATE_PUSHDOWN = "PREDICATE_PUSHDOWN"
    SPLITS = "SPLITS"
    UPSERT = "UPSERT"


@dataclass(frozen=True)
class OptionSpec:
    """One setting of a connection, as documented by ``ListConnectorTypes``."""

    name: str
    type: str  # "string", "integer", "boolean", "number", "list" or "map"
    description: str
    required: bool = False
    default: str = ""
    secret: bool = False


@dataclass(frozen=True)
class TypeInfo:
    """Description of a connector type."""

    type: str
    description: str
    capabilities: frozenset[Capability]
    options: tuple[OptionSpec, ...]
    plugin: str = ""  # distribution name for plugins


@dataclass(frozen=True)
class ReadScope:
    """Which columns and rows a read wants (pushed down where the source can).

    A connector that cannot evaluate part of the predicate may ignore it: the
    executor applies its own filters anyway. Projection must be honoured (the
    stream's schema is the projected one, columns in the requested order).
    ``accept_parquet``: the reader decodes Parquet, so a connection may stream a
    file's stored column chunks (``core.parquet_frames``) instead of batches.
    """

    columns: tuple[str, ...] = ()
    predicate: predicate_pb2.Predicate = field(default_factory=predicate_pb2.Predicate)
    accept_parquet: bool = False


@dataclass(frozen=True)
class SourceDescription:
    """Result of :meth:`Connection.describe`."""

    schema: pa.Schema
    estimated_rows: int | None = None


@dataclass(frozen=True)
class Ticket:
    """One independent split of a read; ``data`` is opaque to clients."""

    data: bytes
    description: str
    estimated_rows: int | None = None


@dataclass(frozen=True)
class ReadPlan:
    """Result of :meth:`Connection.plan_read`: reading every ticket reads the source once."""

    schema: pa.Schema
    tickets: tuple[Ticket, ...]


#: What a read streams: record batches, or with ``ReadScope.accept_parquet`` also
#: Parquet files' heads and stored column chunks.
StreamItem = pa.RecordBatch | ParquetFileHead | ParquetChunk


@dataclass(frozen=True)
class RecordStream:
    """An open read: its schema, then its record batches (or Parquet chunks)."""

    schema: pa.Schema
    batches: AsyncIterator[StreamItem]


@dataclass(frozen=True)
class WriteOutcome:
    """Result of :meth:`Connection.write`."""

    rows_written: int
    location: str  # never with credentials
    replayed: bool = False


# A source or sink spec of one kind, e.g. step_pb2.FileSource or step_pb2.DatabaseSink.
SourceKind = Any
SinkKind = Any


class Connection(abc.ABC):
    """One named, configured connection. Methods raise ``DomainError`` on failure.

    Blocking work (drivers without asyncio, file I/O, Arrow conversion) must run
    off the event loop (``asyncio.to_thread``); cancellation must be honoured
    between batches.
    """

    def __init__(self, name: str, type_name: str, description: str = "") -> None:
        self.name = name
        self.type = type_name
        self.description = description

    @abc.abstractmethod
    def public_options(self) -> dict[str, str]:
        """Settings safe to show (never a secret), for ``ListConnections``."""

    @abc.abstractmethod
    async def test(self) -> str:
        """Check the connection works; returns what was checked (e.g. server version)."""

    async def describe(self, source: SourceKind) -> SourceDescription:
        """Schema (and row estimate) of ``source``; default: open a read and take its schema."""
        async with self.read(source, ReadScope(), b"") as stream:
            return SourceDescription(stream.schema)

    async def plan_read(self, source: SourceKind, scope: ReadScope, max_splits: int) -> ReadPlan:
        """Split a read; default: one ticket for the whole source."""
        description = await self.describe(source)
        schema = project_schema(description.schema, scope.columns)
        return ReadPlan(schema, (Ticket(b"", "the whole source", description.estimated_rows),))

    @abc.abstractmethod
    def read(
        self, source: SourceKind, scope: ReadScope, ticket: bytes
    ) -> AbstractAsyncContextManager[RecordStream]:
        """Open a read of ``source`` (one ticket of it, or all when ``ticket`` is empty)."""

    @abc.abstractmethod
    async def write(
        self,
        sink: SinkKind,
        idempotency_key: str,
        schema: pa.Schema,
        batches: AsyncIterator[pa.RecordBatch],
    ) -> WriteOutcome:
        """Write every batch and commit atomically once they are exhausted (see module doc)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release pools and sessions (on shutdown or config reload)."""


class ConnectorType(abc.ABC):
    """A kind of connector: documents its options and builds connections."""

    #: Which ``SourceSpec``/``SinkSpec`` oneof field this type serves ("file", "database", ...).
    spec_kind: str
    info: TypeInfo

    @abc.abstractmethod
    def create(self, name: str, options: Mapping[str, Any], base_dir: Path) -> Connection:
        """A connection from its config entry (secrets already resolved).

        ``base_dir`` is the config file's directory, for relative paths. Raise
        ``DomainError`` (INVALID_ARGUMENT, reason CONFIG_INVALID) naming the option
        for a bad entry.
        """


def option_error(option: str, problem: str) -> DomainError:
    """A bad connection option: INVALID_ARGUMENT ``CONFIG_INVALID`` naming it (never its value)."""
    return invalid_argument(
        "CONFIG_INVALID", f"option {option!r} {problem}", [FieldViolation(option, problem)]
    )


def project_schema(schema: pa.Schema, columns: tuple[str, ...]) -> pa.Schema:
    """``schema`` restricted to ``columns`` in that order (all when empty).

    Unknown columns raise INVALID_ARGUMENT (reason UNKNOWN_COLUMN) naming them.
    """
    if not columns:
        return schema
    missing = [c for c in columns if schema.get_field_index(c) < 0]
    if missing:
        raise invalid_argument(
            "UNKNOWN_COLUMN",
            f"unknown column(s) {', '.join(missing)}; the source has {', '.join(schema.names)}",
            [FieldViolation("columns", f"unknown column {c!r}") for c in missing],
        )
    return pa.schema([schema.field(c) for c in columns])

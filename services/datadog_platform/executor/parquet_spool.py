"""Stored Parquet row groups of a source spooled to local disk, for DuckDB to read.

A query that aggregates, sorts or deduplicates its only input emits nothing before
that input ends; for such a query, decoding the input's Parquet row groups in Python
and handing them over as Arrow batches is work DuckDB does better itself (TPC-H Q1
over ``lineitem`` SF1: decoding plus query ~0.34 CPU-s; DuckDB on the Parquet
0.19). So the column chunks a connector sends as stored (``core.parquet_frames``) are
written at their own offsets into a sparse copy of each file, with its footer, and
the query reads those copies with ``read_parquet`` once the read has ended.

Only whole files are read that way: when anything else arrives (a record batch, a
row group over the spool's byte limit) or a file lacks row groups at the end, the
spool gives back what it holds as decoded batches, in order, and the read goes on
as a stream (:meth:`ParquetSpool.drain`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from datadog_platform.api.common.v1 import arrow_pb2
from datadog_platform.core.arrow_frames import StreamCounter, protocol_error
from datadog_platform.core.arrow_types import is_string_kind
from datadog_platform.core.connector_frames import RowGroupFrame
from datadog_platform.core.parquet_frames import ParquetFileHead
from datadog_platform.executor.stored_parquet import StoredParquetStream
from datadog_platform.executor.transforms.sql import quote, string_literal

#: Stored bytes a spool takes before it gives its data back as a stream.
DEFAULT_LIMIT_BYTES = 1 << 30


class Progress(Protocol):
    """Rows and bytes read from a source (the stage's counter for it)."""

    rows: int
    bytes: int


@dataclass
class _File:
    path: str
    size: int
    footer: bytes
    row_groups: int
    #: The row groups written, in arrival order (headers without data).
    received: list[arrow_pb2.ParquetRowGroup] = field(default_factory=list)


class ParquetSpool:
    """The stored row groups of one read stream, written to sparse files under ``root``.

    ``active`` until it gives its data back (:meth:`drain`); ``sealed`` once the read
    ended with every file whole: then :meth:`relation_sql` reads them. ``close()``
    removes the files.
    """

    def __init__(
        self, root: str, progress: Progress, limit_bytes: int = DEFAULT_LIMIT_BYTES
    ) -> None:
        self._directory = tempfile.mkdtemp(prefix="spool-", dir=root)
        self._progress = progress
        self._limit = limit_bytes
        self._files: list[_File] = []
        self._rows = 0
        self._bytes = 0
        self.active = True
        self.sealed = False

    def accepts(self, schema: pa.Schema) -> bool:
        """Whether DuckDB reads ``schema``'s columns from Parquet as their Arrow types
        (a plain type each); when not, the spool is not used."""
        self.active = self.active and all(_plain(f.type) for f in schema)
        return self.active

    async def open_file(self, frame: arrow_pb2.ParquetFile) -> None:
        """Start the sparse copy of the next file: its size and footer."""
        path = os.path.join(self._directory, f"{len(self._files)}.parquet")
        footer = bytes(frame.footer)
        try:
            row_groups = await asyncio.to_thread(_create, path, frame.size, footer)
        except (ValueError, OSError) as exc:  # pyarrow's errors derive from these
            raise protocol_error(
                f"cannot read the Parquet footer the connector sent: {exc}"
            ) from None
        self._files.append(_File(path, frame.size, footer, row_groups))

    async def write(self, header: arrow_pb2.ParquetRowGroup, data: memoryview) -> bool:
        """Write one row group's pieces at their offsets; False (nothing written) when
        they would take the spool over its limit or no file was announced."""
        if not self._files or self._bytes + len(data) > self._limit:
            return False
        target = self._files[-1]
        await asyncio.to_thread(_write_pieces, target.path, header, data)
        target.received.append(header)
        self._rows += header.num_rows
        self._bytes += len(data)
        self._progress.rows += header.num_rows
        self._progress.bytes += len(data)
        return True

    def seal(self) -> bool:
        """At the end of the read: whether every file arrived whole (then ``sealed``)."""
        self.sealed = self.active and all(
            sorted(h.index for h in f.received) == list(range(f.row_groups)) for f in self._files
        )
        return self.sealed

    def relation_sql(self, columns: list[tuple[str, str]]) -> str:
        """A SELECT of ``columns`` (name, DuckDB type) from the spooled files, in order."""
        paths = ", ".join(string_literal(f.path) for f in self._files)
        select = ", ".join(f"CAST({quote(n)} AS {t}) AS {quote(n)}" for n, t in columns)
        return f"SELECT {select} FROM read_parquet([{paths}], union_by_name = true)"

    @property
    def files(self) -> int:
        """The files spooled."""
        return len(self._files)

    async def drain(self, stored: StoredParquetStream) -> AsyncIterator[pa.RecordBatch]:
        """Give the spooled row groups back as batches, in order (decoded by ``stored``,
        which then goes on with the current file); the spool is no longer used."""
        self.active = False
        # The stage counts these rows again as they come out as batches.
        self._progress.rows -= self._rows
        self._progress.bytes -= self._bytes
        self._rows = self._bytes = 0
        uncounted = StreamCounter()  # the read stream counted them on arrival
        files, self._files = self._files, []
        for spooled in files:
            head = arrow_pb2.ParquetFile(size=spooled.size, footer=spooled.footer)
            await stored.open_file(head)
            for header in spooled.received:
                data = await asyncio.to_thread(_read_pieces, spooled.path, header)
                async for batch in stored.batches(
                    RowGroupFrame(header, memoryview(data)), uncounted
                ):
                    yield batch
            os.unlink(spooled.path)

    def close(self) -> None:
        """Remove the spooled files."""
        shutil.rmtree(self._directory, ignore_errors=True)


def _plain(kind: pa.DataType) -> bool:
    """A type DuckDB reads from Parquet to the same values as pyarrow. Not: nanosecond
    timestamps (INT96 ones lose their nanoseconds in DuckDB), half floats, decimals
    wider than DuckDB's 38 digits, nested, binary and dictionary types."""
    return (
        pa.types.is_integer(kind)
        or pa.types.is_float32(kind)
        or pa.types.is_float64(kind)
        or (pa.types.is_decimal(kind) and kind.precision <= 38)
        or pa.types.is_boolean(kind)
        or pa.types.is_date32(kind)
        or (pa.types.is_timestamp(kind) and kind.unit != "ns")
        or is_string_kind(kind)
    )


def _create(path: str, size: int, footer: bytes) -> int:
    """Create the sparse copy; its row groups."""
    row_groups = ParquetFileHead(size, footer).metadata().num_row_groups
    with open(path, "wb") as out:
        out.truncate(size)  # sparse: only the pieces written take disk
        out.seek(size - len(footer))
        out.write(footer)
    return row_groups


def _write_pieces(path: str, header: arrow_pb2.ParquetRowGroup, data: memoryview) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        position = 0
        for offset, length in zip(header.offsets, header.lengths, strict=True):
            os.pwrite(fd, data[position : position + length], offset)
            position += length
    finally:
        os.close(fd)


def _read_pieces(path: str, header: arrow_pb2.ParquetRowGroup) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return b"".join(
            os.pread(fd, length, offset)
            for offset, length in zip(header.offsets, header.lengths, strict=True)
        )
    finally:
        os.close(fd)

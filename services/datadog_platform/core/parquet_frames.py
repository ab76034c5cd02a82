"""Parquet column chunks as stream frames: sent as stored, decoded by the reader.

A file read needs only a few of a Parquet file's columns, compressed several times
smaller than the Arrow they decode to (TPC-H Q1 over ``lineitem``: 64 MB of column
chunks against 470 MB of Arrow). When the client can decode Parquet, the connector
sends the file's footer once (:class:`ParquetFileHead`) and then, per row group,
the byte ranges of the needed column chunks (:class:`ParquetChunk`) instead of
decoding them; the client decodes them with the footer (:class:`ParquetDecoder`)
and casts each column to the stream's schema, which is exactly what the
connector's own decoding would have produced. Only files that need nothing else
(no predicate, no partition or missing columns, stored types that cast to the
stream's types as strings do) are sent this way; :func:`passthrough_leaves` decides.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from datadog_platform.core.arrow_frames import TARGET_BATCH_BYTES, split_by_bytes
from datadog_platform.core.arrow_types import is_string_kind

#: Rows per decoded batch when a file gives no size to estimate from.
DEFAULT_BATCH_ROWS = 65_536
#: A row group whose needed chunks are larger than this is decoded by the sender.
#: At 8 MiB every column of TPC-H ``lineitem`` (4.4 MB row groups) passes, and the
#: streaming benchmark ran 3.6-4.0 s instead of 4.8-5.0 s. The receiver's memory grows
#: with the frames it holds: over a 9M-row read, 7 MB frames grew its RSS 119-135 MiB
#: when read as two concurrent splits, 89-100 MiB as one stream, 70-87 MiB for 1.4 MB
#: frames; so a file sent as stored is planned as one stream (``accept_parquet`` in
#: PlanRead), the client decoding it is what there is to do.
MAX_CHUNK_BYTES = 4 * TARGET_BATCH_BYTES
#: Column chunks this close are sent as one piece, the bytes between them included.
MERGE_HOLE_BYTES = 8 << 10

_MAGIC = b"PAR1"


@dataclass(frozen=True)
class ParquetFileHead:
    """A Parquet file whose row groups follow: its size and its footer bytes."""

    size: int
    footer: bytes

    def metadata(self) -> pq.FileMetaData:
        """The footer, parsed; ValueError when it cannot be this file's footer."""
        if len(self.footer) < 12 or self.footer[-4:] != _MAGIC or self.size < len(self.footer):
            raise ValueError("the Parquet footer is malformed")
        return pq.read_metadata(pa.BufferReader(self.footer))


@dataclass(frozen=True)
class ParquetChunk:
    """The stored bytes of one row group's needed column chunks."""

    index: int
    num_rows: int
    #: File offset and length of each piece of ``data``, ascending.
    offsets: tuple[int, ...]
    lengths: tuple[int, ...]
    data: bytes | memoryview


def batch_rows(metadata: pq.FileMetaData) -> int:
    """Rows per batch for batches of ~TARGET_BATCH_BYTES, estimated from the file's
    uncompressed size."""
    total_bytes = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if metadata.num_rows == 0 or total_bytes <= 0:
        return DEFAULT_BATCH_ROWS
    return max(
        1, min(DEFAULT_BATCH_ROWS * 16, metadata.num_rows * TARGET_BATCH_BYTES // total_bytes)
    )


# --- sending ----------------------------------------------------------------------------


def passthrough_leaves(
    parquet: pq.ParquetFile, schema: pa.Schema, row_groups: Sequence[int]
) -> list[int] | None:
    """The leaf columns to send for ``schema``'s columns, or None when this file must be
    decoded by the sender.

    ``schema`` holds the stream's columns, all stored in the file (no partition
    column, none missing). Each must be a top-level column whose decoded type is the
    stream's type, or a string or binary type of the same kind, and every row group's
    needed chunks must fit in one frame.
    """
    stored = parquet.schema_arrow
    for target in schema:
        index = stored.get_field_index(target.name)
        if index < 0 or not _same_kind(stored.field(index).type, target.type):
            return None
    leaves = leaf_columns(parquet.metadata, schema.names)
    for group in row_groups:
        row_group = parquet.metadata.row_group(group)
        size = sum(row_group.column(i).total_compressed_size for i in leaves)
        if size > MAX_CHUNK_BYTES:
            return None
    return leaves


def leaf_columns(metadata: pq.FileMetaData, names: Sequence[str]) -> list[int]:
    """The indices of the leaf (stored) columns under the top-level columns ``names``."""
    wanted = set(names)
    return [
        i
        for i in range(metadata.num_columns)
        if metadata.schema.column(i).path.split(".")[0] in wanted
    ]


def _same_kind(stored: pa.DataType, target: pa.DataType) -> bool:
    if stored.equals(target):
        return True
    binaries = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view)
    return (is_string_kind(stored) and is_string_kind(target)) or (
        any(test(stored) for test in binaries) and any(test(target) for test in binaries)
    )


def read_head(handle: pa.NativeFile) -> ParquetFileHead:
    """The size and footer of the Parquet file open as ``handle``."""
    size = handle.size()
    tail = handle.read_at(8, size - 8) if size >= 8 else b""
    length = int.from_bytes(tail[:4], "little")
    if tail[4:] != _MAGIC or length + 8 > size:
        raise pa.ArrowInvalid("not a Parquet file (no footer)")
    return ParquetFileHead(size, handle.read_at(length + 8, size - length - 8))


def read_chunks(
    handle: pa.NativeFile,
    metadata: pq.FileMetaData,
    leaves: Sequence[int],
    row_groups: Sequence[int],
) -> Iterator[ParquetChunk]:
    """The stored bytes of ``leaves`` in each non-empty row group of ``row_groups``."""
    for group in row_groups:
        row_group = metadata.row_group(group)
        if row_group.num_rows == 0:
            continue
        ranges: list[tuple[int, int]] = []
        for leaf in sorted(leaves, key=lambda i: _chunk_start(row_group.column(i))):
            column = row_group.column(leaf)
            start = _chunk_start(column)
            end = start + column.total_compressed_size
            if ranges and start <= ranges[-1][1] + MERGE_HOLE_BYTES:
                ranges[-1] = (ranges[-1][0], max(end, ranges[-1][1]))
            else:
                ranges.append((start, end))
        pieces = [handle.read_at(end - start, start) for start, end in ranges]
        yield ParquetChunk(
            index=group,
            num_rows=row_group.num_rows,
            offsets=tuple(start for start, _ in ranges),
            lengths=tuple(end - start for start, end in ranges),
            data=b"".join(pieces),
        )


def _chunk_start(column: pq.ColumnChunkMetaData) -> int:
    """Where a column chunk's pages begin: its dictionary page when it has one."""
    starts = [column.data_page_offset]
    if column.has_dictionary_page and column.dictionary_page_offset:
        starts.append(column.dictionary_page_offset)
    return min(starts)


# --- receiving --------------------------------------------------------------------------


class ParquetDecoder:
    """Decodes the row groups of one file into batches of a stream's ``schema``."""

    def __init__(
        self, head: ParquetFileHead, schema: pa.Schema, *, dictionaries: bool = False
    ) -> None:
        """With ``dictionaries``, string columns stored with a small dictionary in every row
        group come out as Arrow dictionaries of strings instead of ``schema``'s type:
        for a reader that takes them as they are (a DuckDB query: see
        ``executor.engine.bridge``), which spares both the decoding of each value and
        the query's hashing of it."""
        self._head = head
        self._schema = schema
        self._keep_dictionaries = dictionaries
        self.metadata = head.metadata()
        stored = self.metadata.schema.to_arrow_schema()
        for target in schema:
            if stored.get_field_index(target.name) < 0:
                raise ValueError(f"the Parquet file has no column {target.name!r}")
        self._batch_rows = batch_rows(self.metadata)
        # Strings stored with a small dictionary decode far faster as Arrow
        # dictionaries (indices, no per-value copy), even when they are then decoded
        # to plain strings: TPC-H Q1's two flags, 0.20 instead of 0.25 CPU-s as
        # string_view.
        self._dictionary = [
            f.name for f in schema if is_string_kind(f.type) and self._small_dictionary(f.name)
        ]

    def _small_dictionary(self, name: str) -> bool:
        """Whether ``name`` is stored with a dictionary of at most half a byte per value
        in every row group.

        A big dictionary (values that barely repeat, or a writer that fell back to
        plain pages once its dictionary reached its size limit) decodes several times
        slower as an Arrow dictionary than value by value: 200K strings of 40 bytes,
        50K of them distinct, 15 against 5 ms; TPC-H's ``l_comment`` 1.5 against 0.8
        CPU-s. The size of the dictionary page is what the footer tells of it.
        """
        leaves = leaf_columns(self.metadata, [name])
        if len(leaves) != 1:
            return False
        for group in range(self.metadata.num_row_groups):
            chunk = self.metadata.row_group(group).column(leaves[0])
            start = chunk.dictionary_page_offset
            if not chunk.has_dictionary_page or not start or start >= chunk.data_page_offset:
                return False
            if 2 * (chunk.data_page_offset - start) > chunk.num_values:
                return False
        return True

    def batches(self, chunk: ParquetChunk) -> Iterator[pa.RecordBatch]:
        """The rows of ``chunk``'s row group, in batches of ``schema`` (blocking)."""
        if not 0 <= chunk.index < self.metadata.num_row_groups:
            raise ValueError(f"the file has no row group {chunk.index}")
        source = _Pieces(self._head, chunk)
        parquet = pq.ParquetFile(
            pa.PythonFile(source, mode="r"),
            metadata=self.metadata,
            read_dictionary=self._dictionary,
            # Each column chunk read as sent (pre-buffering coalesces reads across holes).
            pre_buffer=False,
        )
        # One thread per stream decodes (executor.stored_parquet): with pyarrow's own
        # threads on top, TPC-H Q1 was no faster and memory grew more.
        decoded = parquet.iter_batches(
            batch_size=self._batch_rows,
            row_groups=[chunk.index],
            columns=self._schema.names,
            use_threads=False,
        )
        rows = 0
        for batch in decoded:
            rows += batch.num_rows
            batch = self._conform(batch)
            if batch.nbytes > 2 * TARGET_BATCH_BYTES:
                # The file's sizes only estimate the decoded ones (dictionaries, decimals
                # widen): a batch too big is sliced below, and each slice pins all of
                # it. Size the next row group's batches from this one.
                self._batch_rows = max(1, batch.num_rows * TARGET_BATCH_BYTES // batch.nbytes)
            yield from split_by_bytes([batch])
        if rows != chunk.num_rows:
            raise ValueError(f"row group {chunk.index} held {rows} rows, not {chunk.num_rows}")

    def _conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        fields, arrays = [], []
        for field in self._schema:
            column = batch.column(field.name)
            if not column.type.equals(field.type) and not (
                self._keep_dictionaries and field.name in self._dictionary
            ):
                if pa.types.is_dictionary(column.type):
                    column = column.dictionary_decode()
                if not column.type.equals(field.type):
                    column = column.cast(field.type)
            fields.append(field.with_type(column.type))
            arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


class _Pieces(io.RawIOBase):
    """A read-only file of the head's size holding only the chunk's pieces and the footer."""

    def __init__(self, head: ParquetFileHead, chunk: ParquetChunk) -> None:
        if len(chunk.offsets) != len(chunk.lengths) or sum(chunk.lengths) != len(chunk.data):
            raise ValueError("the Parquet row group's pieces do not add up to its data")
        view = memoryview(chunk.data)
        pieces: list[tuple[int, memoryview]] = []
        at = 0
        for offset, length in zip(chunk.offsets, chunk.lengths, strict=True):
            pieces.append((offset, view[at : at + length]))
            at += length
        pieces.append((head.size - len(head.footer), memoryview(head.footer)))
        pieces.sort(key=lambda piece: piece[0])
        self._starts = [offset for offset, _ in pieces]
        self._pieces = pieces
        self._size = head.size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def read_buffer(self, size: int) -> memoryview:
        """Up to ``size`` bytes from the position, without a copy (``pa.PythonFile`` calls
        this instead of ``read`` and wraps the view)."""
        position = self._position
        if position >= self._size:
            return memoryview(b"")
        index = bisect.bisect_right(self._starts, position) - 1
        if index >= 0:
            start, piece = self._pieces[index]
            end = start + len(piece)
            if position < end:
                if position + size > end and end < self._size:
                    raise OSError(
                        f"the sender did not send the bytes at offsets {end}-{position + size}"
                    )
                count = min(size, end - position)
                self._position += count
                return piece[position - start : position - start + count]
        raise OSError(f"the sender did not send the bytes at offset {position}")

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = self.read_buffer(len(buffer))
        buffer[: len(view)] = view
        return len(view)

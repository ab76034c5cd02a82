"""Writing Arrow batches as one file or as a hive-partitioned directory, atomically.

One file: an :class:`~datadog_platform.connector.file_io.AtomicFile` (temporary
name + rename locally; a single upload after completion on S3).

A partitioned directory (``partition_by``): rows are routed to one file per
partition in ``col=value/`` subdirectories (the partition columns are not stored
in the files; reads put them back). Nothing is written under the target before
the stream is complete:

- OVERWRITE stages the whole dataset in a hidden directory beside the target, then
  swaps it in. Locally that is one ``renameat2(RENAME_EXCHANGE)`` (atomic; two
  renames where the filesystem lacks it) and the old tree is deleted. On S3 the
  staged files are uploaded under names derived from the idempotency key, then
  every other object under the target is deleted: readers may see old and new
  files together during the swap, and a crash mid-swap is repaired by the retry,
  which uploads the same names and deletes the rest.
- APPEND adds files named after the idempotency key (``part-<key hash>-N``) to the
  existing partitions, then records the key, its row count and its files in
  ``_datadog/appends/<key hash>.json``. A key already recorded writes nothing
  (``replayed``); files of an attempt that died before recording are replaced.

Everything here blocks: callers run it off the event loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from datadog_platform.connector.file_formats import (
    EXTENSION_OF_COMPRESSION,
    EXTENSION_OF_FORMAT,
    Compression,
    FileFormat,
    FormatWriter,
    open_format_writer,
)
from datadog_platform.connector.file_io import AtomicFile, fsync_path, fsync_tree, upload
from datadog_platform.connector.file_paths import FileRoot, io_error, temp_name
from datadog_platform.core.errors import DomainError, invalid_argument

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
LEDGER_DIR = "_datadog/appends"
#: Partition files open at once; past it the least recently used is closed and that
#: partition's next rows start a new file.
MAX_OPEN_FILES = 64
#: Per open partition file (Parquet/Arrow coalescing), bounding memory to ~256 MiB.
PARTITION_BUFFER_BYTES = 4 << 20


def key_token(idempotency_key: str) -> str:
    """A short, filename-safe token for an idempotency key."""
    return hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:20]


def write_error(exc: Exception, shown: str, fmt: FileFormat, *paths: str) -> DomainError | None:
    """A write failure as a domain error naming ``shown``; None if unexpected."""
    if isinstance(exc, (pa.ArrowException, ValueError, TypeError)) and not isinstance(exc, OSError):
        message = str(exc)
        for path in paths:
            message = message.replace(path, shown)
        return invalid_argument(
            "SINK_WRITE_ERROR",
            f"cannot write {shown!r} as {fmt.value}: {message}",
            path=shown,
        )
    return io_error(exc, shown, writing=True)


class _Guarded:
    """Serialises a writer's methods (worker threads) and maps errors to domain errors."""

    def __init__(self, shown: str, fmt: FileFormat) -> None:
        self.shown = shown
        self.format = fmt
        self.rows_written = 0
        self.state = "open"
        self._lock = threading.Lock()
        self._paths: tuple[str, ...] = ()

    def _fail(self, exc: Exception) -> DomainError | Exception:
        error = write_error(exc, self.shown, self.format, *self._paths)
        return error if error is not None else exc


class SingleFileWriter(_Guarded):
    """One file, replaced atomically on commit."""

    def __init__(
        self,
        root: FileRoot,
        target: str,
        shown: str,
        fmt: FileFormat,
        compression: Compression,
        schema: pa.Schema,
    ) -> None:
        super().__init__(shown, fmt)
        self._root = root
        self._target = target
        try:
            if root.info(target).type == pafs.FileType.Directory:
                raise IsADirectoryError(21, "Is a directory")
            self._file = AtomicFile(root, target)
        except Exception as exc:
            raise self._fail(exc) from exc
        self._paths = (self._file.temp_path, target)
        try:
            self._writer: FormatWriter = open_format_writer(
                fmt, compression, self._file.stream, schema
            )
        except Exception as exc:
            self._file.abort()
            raise self._fail(exc) from exc

    def write(self, batch: pa.RecordBatch) -> None:
        """Append one batch."""
        with self._lock:
            _require_open(self.state)
            try:
                self._writer.write_batch(batch)
            except Exception as exc:
                raise self._fail(exc) from exc
            self.rows_written += batch.num_rows

    def commit(self) -> str:
        """Finish the file and make it the target; returns its location."""
        with self._lock:
            _require_open(self.state)
            try:
                self._writer.close()
                self._file.commit()
            except Exception as exc:
                self.state = "aborted"
                self._file.abort()
                raise self._fail(exc) from exc
            self.state = "committed"
            return self._root.location(self._target)

    def abort(self) -> None:
        """Drop everything written. Safe to call twice."""
        with self._lock:
            if self.state != "open":
                return
            self.state = "aborted"
            with contextlib.suppress(Exception):
                self._writer.close()
            self._file.abort()

    @property
    def temp_path(self) -> str:
        """Where the data goes until commit."""
        return self._file.temp_path


@dataclass
class _OpenPart:
    writer: FormatWriter
    stream: pa.NativeFile


class PartitionedWriter(_Guarded):
    """A hive-partitioned directory, OVERWRITE or APPEND (see the module doc)."""

    def __init__(
        self,
        root: FileRoot,
        target: str,
        shown: str,
        fmt: FileFormat,
        compression: Compression,
        schema: pa.Schema,
        partition_by: Sequence[str],
        append: bool,
        idempotency_key: str,
    ) -> None:
        super().__init__(shown, fmt)
        self._root = root
        self._target = target
        self._format = fmt
        self._compression = compression
        self._keys = list(partition_by)
        self._append = append
        self._key = idempotency_key
        self._token = key_token(idempotency_key)
        self._data_schema = pa.schema([f for f in schema if f.name not in self._keys])
        self._extension = EXTENSION_OF_FORMAT[fmt] + EXTENSION_OF_COMPRESSION.get(compression, "")
        self._open: OrderedDict[str, _OpenPart] = OrderedDict()
        self._files: list[str] = []  # relative to the target: "k=v/part-....parquet"
        try:
            info = root.info(target)
            if info.type == pafs.FileType.File:
                raise invalid_argument(
                    "INVALID_PATH",
                    f"{shown!r} is a file; a partitioned write needs a directory path",
                    path=shown,
                )
            if root.local:
                parent, name = os.path.split(target)
                os.makedirs(parent, exist_ok=True)
                root.sweep_stale_temps(parent, name)
                self._staging = os.path.join(parent, temp_name(name))
                os.mkdir(self._staging)
            else:
                self._staging = tempfile.mkdtemp(prefix="datadog-partitions-")
        except Exception as exc:
            raise self._fail(exc) from exc
        self._paths = (self._staging, target)

    # ------------------------------------------------------------------ writing

    def write(self, batch: pa.RecordBatch) -> None:
        """Route one batch's rows to their partitions' files."""
        with self._lock:
            _require_open(self.state)
            try:
                for values, rows in split_by_partition(batch, self._keys):
                    part = self._part(partition_dir(self._keys, values))
                    part.writer.write_batch(rows.select(self._data_schema.names))
            except Exception as exc:
                raise self._fail(exc) from exc
            self.rows_written += batch.num_rows

    def _part(self, directory: str) -> _OpenPart:
        part = self._open.get(directory)
        if part is not None:
            self._open.move_to_end(directory)
            return part
        if len(self._open) >= MAX_OPEN_FILES:
            _, oldest = self._open.popitem(last=False)
            oldest.writer.close()
        rel = f"{directory}/part-{self._token}-{len(self._files):05d}{self._extension}"
        path = os.path.join(self._staging, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        stream = pa.OSFile(path, "wb")
        try:
            writer = open_format_writer(
                self._format, self._compression, stream, self._data_schema, PARTITION_BUFFER_BYTES
            )
        except BaseException:
            stream.close()
            raise
        self._files.append(rel)
        part = _OpenPart(writer, stream)
        self._open[directory] = part
        return part

    # ------------------------------------------------------------------ commit

    def commit(self) -> str:
        """Make the written partitions visible (see the module doc); returns the location."""
        with self._lock:
            _require_open(self.state)
            try:
                while self._open:
                    _, part = self._open.popitem(last=False)
                    part.writer.close()
                if self._append:
                    self._commit_append()
                elif self._root.local:
                    self._commit_overwrite_local()
                else:
                    self._commit_overwrite_remote()
            except Exception as exc:
                self.state = "aborted"
                self._discard()
                raise self._fail(exc) from exc
            self.state = "committed"
            self._discard()
            return self._root.location(self._target)

    def _commit_overwrite_local(self) -> None:
        fsync_tree(self._staging)
        target, staging = self._target, self._staging
        parent = os.path.dirname(target)
        if not os.path.lexists(target):
            os.rename(staging, target)
        elif _exchange(staging, target):
            pass  # the old tree is now at the staging path; _discard removes it
        else:
            old = os.path.join(parent, temp_name(os.path.basename(target)))
            os.rename(target, old)
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        fsync_path(parent)

    def _commit_overwrite_remote(self) -> None:
        fs, target = self._root.fs, self._target
        written = {f"{target}/{rel}" for rel in self._files}
        for rel in self._files:
            upload(fs, os.path.join(self._staging, rel), f"{target}/{rel}")
        selector = pafs.FileSelector(target, recursive=True, allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.type == pafs.FileType.File and info.path not in written:
                fs.delete_file(info.path)

    def _commit_append(self) -> None:
        fs, target, root = self._root.fs, self._target, self._root
        prefix = f"part-{self._token}-"
        # Files of an earlier attempt with this key that died before recording it.
        if root.info(target).type == pafs.FileType.Directory:
            selector = pafs.FileSelector(target, recursive=True, allow_not_found=True)
            for info in fs.get_file_info(selector):
                if info.type == pafs.FileType.File and info.base_name.startswith(prefix):
                    fs.delete_file(info.path)
        for rel in self._files:
            source = os.path.join(self._staging, rel)
            if root.local:
                destination = os.path.join(target, rel)
                os.makedirs(os.path.dirname(destination), exist_ok=True)
                fsync_path(source)
                os.replace(source, destination)
                fsync_path(os.path.dirname(destination))
            else:
                upload(fs, source, f"{target}/{rel}")
        record = {"idempotency_key": self._key, "rows": self.rows_written, "files": self._files}
        ledger = AtomicFile(root, f"{target}/{LEDGER_DIR}/{self._token}.json")
        try:
            ledger.stream.write(json.dumps(record, ensure_ascii=False).encode("utf-8"))
            ledger.commit()
        except BaseException:
            ledger.abort()
            raise

    # ------------------------------------------------------------------ abort

    def abort(self) -> None:
        """Drop everything staged; the target stays as it was. Safe to call twice."""
        with self._lock:
            if self.state != "open":
                return
            self.state = "aborted"
            while self._open:
                _, part = self._open.popitem(last=False)
                with contextlib.suppress(Exception):
                    part.writer.close()
            self._discard()

    def _discard(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)


def appended_rows(root: FileRoot, target: str, idempotency_key: str) -> int | None:
    """Rows an APPEND with ``idempotency_key`` committed to ``target``, or None if none."""
    path = f"{target}/{LEDGER_DIR}/{key_token(idempotency_key)}.json"
    try:
        with root.fs.open_input_stream(path) as stream:
            record = json.loads(stream.read())
    except (FileNotFoundError, ValueError):
        return None
    except OSError as exc:
        if "NO_SUCH_KEY" in str(exc) or "not found" in str(exc).lower():
            return None
        raise
    if not isinstance(record, dict) or record.get("idempotency_key") != idempotency_key:
        return None
    return int(record.get("rows", 0))


# --------------------------------------------------------------------------- partitions


def split_by_partition(
    batch: pa.RecordBatch, keys: Sequence[str]
) -> Iterator[tuple[tuple[Any, ...], pa.RecordBatch]]:
    """``batch``'s rows grouped by the values of ``keys`` (row order kept within a group)."""
    if batch.num_rows == 0:
        return
    codes: pa.Array | None = None
    for key in keys:
        encoded = pc.dictionary_encode(batch.column(key), null_encoding="encode")
        indices = encoded.indices.cast(pa.int64())
        codes = (
            indices
            if codes is None
            else pc.add(pc.multiply(codes, len(encoded.dictionary)), indices)
        )
    assert codes is not None
    low, high = pc.min_max(codes).values()
    if low == high:
        yield tuple(batch.column(k)[0].as_py() for k in keys), batch
        return
    order = pc.sort_indices(codes)  # stable
    ends = pc.run_end_encode(codes.take(order)).run_ends.to_pylist()
    ordered = batch.take(order)
    start = 0
    for end in ends:
        rows = ordered.slice(start, end - start)
        yield tuple(rows.column(k)[0].as_py() for k in keys), rows
        start = end


def partition_dir(keys: Sequence[str], values: Sequence[Any]) -> str:
    """``k1=v1/k2=v2`` with values URI-escaped and NULL as Hive's default partition."""
    return "/".join(
        f"{quote(k, safe='')}={_partition_text(v)}" for k, v in zip(keys, values, strict=True)
    )


def _partition_text(value: Any) -> str:
    if value is None:
        return HIVE_NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    is_temporal = isinstance(value, (dt.date, dt.datetime, dt.time))
    text = value.isoformat() if is_temporal else str(value)
    return quote(text, safe="") if text else HIVE_NULL


def _require_open(state: str) -> None:
    if state != "open":
        raise RuntimeError(f"writer is {state}")


# --------------------------------------------------------------------------- renameat2

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc: Any = None


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where unsupported."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        except OSError:
            _libc = False
    function = getattr(_libc, "renameat2", None) if _libc else None
    if function is None:
        return False
    result = function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: not on this filesystem
        return False
    raise OSError(errno, os.strerror(errno))

"""The file connector: CSV and Parquet files under a connection's root directory.

Every path a client gives is relative to the root of a named connection and must stay
inside it once symlinks are resolved. Reads stream record batches of about 1 MiB;
writes go to a temporary file beside the target that replaces it atomically only on
commit, so a broken or cancelled write leaves the target as it was.

Error messages name paths as the client gave them, never the resolved server path.
Everything here is blocking: callers run it off the event loop. No grpc here.

Error reasons raised by this module:

- ``REQUIRED_FIELD_MISSING`` (INVALID_ARGUMENT): an empty path.
- ``INVALID_PATH`` (INVALID_ARGUMENT): a path that cannot name a file (NUL byte,
  symlink loop, a directory, a file used as a directory).
- ``PATH_OUTSIDE_ROOT`` (PERMISSION_DENIED): an absolute path, a ``..`` escape, or a
  symlink that resolves outside the connection's root.
- ``UNKNOWN_FILE_FORMAT`` (INVALID_ARGUMENT): no format given and none inferable from
  the extension.
- ``SOURCE_NOT_FOUND`` (NOT_FOUND): the file to read does not exist.
- ``SOURCE_PARSE_ERROR`` (INVALID_ARGUMENT): the file cannot be parsed as its format.
- ``SOURCE_ACCESS_DENIED`` / ``SINK_ACCESS_DENIED`` (PERMISSION_DENIED): the operating
  system refused access.
- ``SOURCE_IO_ERROR`` / ``SINK_IO_ERROR`` (UNAVAILABLE): another I/O failure.
- ``SINK_WRITE_ERROR`` (INVALID_ARGUMENT): the data cannot be encoded in the sink's
  format (e.g. a nested column into CSV).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from datadog_platform.core.arrow_frames import TARGET_BATCH_BYTES, split_by_bytes
from datadog_platform.core.errors import (
    DomainError,
    FieldViolation,
    invalid_argument,
    not_found,
    permission_denied,
    unavailable,
)

CONNECTION_TYPE = "file"
TEMP_SUFFIX = ".tmp"
_DEFAULT_PARQUET_BATCH_ROWS = 65_536


class FileFormat(enum.Enum):
    """Encodings the file connector reads and writes."""

    CSV = "csv"
    PARQUET = "parquet"


_EXTENSIONS: dict[str, FileFormat] = {
    ".csv": FileFormat.CSV,
    ".parquet": FileFormat.PARQUET,
    ".pq": FileFormat.PARQUET,
}


@dataclass(frozen=True)
class FileRef:
    """A file as a request names it.

    ``field`` is the request field holding it (e.g. ``source.file``), so that errors can
    name ``source.file.path`` or ``source.file.format``.
    """

    path: str
    format: FileFormat | None = None
    field: str = "file"


def infer_format(ref: FileRef) -> FileFormat:
    """The declared format, else the one the extension implies."""
    if ref.format is not None:
        return ref.format
    suffix = PurePosixPath(ref.path).suffix.lower()
    try:
        return _EXTENSIONS[suffix]
    except KeyError:
        known = ", ".join(sorted(_EXTENSIONS))
        raise invalid_argument(
            "UNKNOWN_FILE_FORMAT",
            f"cannot infer the format of {ref.path!r} from its extension; "
            f"set {ref.field}.format or use one of {known}",
            [
                FieldViolation(
                    f"{ref.field}.format", f"unspecified and {ref.path!r} has no known extension"
                )
            ],
            path=ref.path,
        ) from None


@dataclass(frozen=True)
class FileConnection:
    """A named file connection: a root directory that every path stays inside."""

    name: str
    root: Path
    description: str = ""
    type: str = field(default=CONNECTION_TYPE, init=False)

    def options(self) -> dict[str, str]:
        """Non-secret settings, for display."""
        return {"root": str(self.root)}

    def resolve(self, ref: FileRef) -> Path:
        """The absolute path ``ref`` names, or an error if it leaves the root."""
        return resolve_path(self.root, ref, self.name)

    def open_reader(self, ref: FileRef) -> FileReader:
        """Open ``ref`` for a streaming read."""
        path = self.resolve(ref)
        return open_reader(path, infer_format(ref), ref.path)

    def open_writer(self, ref: FileRef, schema: pa.Schema) -> AtomicFileWriter:
        """Start an atomic write of ``ref`` with ``schema``; nothing is visible before commit."""
        path = self.resolve(ref)
        return AtomicFileWriter(path, infer_format(ref), schema, ref.path)


def resolve_path(root: Path, ref: FileRef, connection: str) -> Path:
    """Resolve ``ref.path`` against ``root`` (absolute, symlinks resolved) or refuse it.

    ``root`` must itself be absolute and resolved. The check is on the fully resolved
    path, so ``..`` components and symlinks that end up inside the root are fine.
    """
    given = ref.path
    if not given:
        raise invalid_argument(
            "REQUIRED_FIELD_MISSING",
            f"{ref.field}.path is required",
            [FieldViolation(f"{ref.field}.path", "must not be empty")],
        )
    if "\x00" in given:
        raise invalid_argument(
            "INVALID_PATH",
            f"path {given!r} contains a NUL byte",
            [FieldViolation(f"{ref.field}.path", "must not contain NUL bytes")],
        )
    outside = permission_denied(
        "PATH_OUTSIDE_ROOT",
        f"path {given!r} is outside the root of connection {connection!r}; "
        "paths are relative to the connection's root and may not leave it",
        path=given,
        connection=connection,
    )
    if PurePosixPath(given).is_absolute():
        raise outside
    try:
        resolved = (root / given).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop (Python 3.11/3.12)
        raise invalid_argument(
            "INVALID_PATH",
            f"path {given!r} cannot be resolved: {_reason_of(exc)}",
            [FieldViolation(f"{ref.field}.path", "cannot be resolved")],
        ) from None
    if not resolved.is_relative_to(root):
        raise outside
    return resolved


def _reason_of(exc: BaseException) -> str:
    """An exception's message without any server path in it."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _arrow_message(exc: BaseException, given: str, *paths: Path) -> str:
    """Arrow's message with server paths replaced by the path as the client gave it."""
    message = str(exc)
    for path in paths:
        message = message.replace(str(path), given)
    return message


# --------------------------------------------------------------------------- reading


class _Closable(Protocol):
    def close(self) -> None: ...


class FileReader:
    """A streaming read of one file: its schema, then batches of about 1 MiB.

    :meth:`close` waits for a batch being read on another thread, so a cancelled stream
    never frees a reader that is still in use.
    """

    def __init__(
        self,
        schema: pa.Schema,
        batches: Iterator[pa.RecordBatch],
        resource: _Closable,
        path: Path,
        given: str,
    ) -> None:
        self.schema = schema
        self._batches = split_by_bytes(batches)
        self._resource = resource
        self._path = path
        self._given = given
        self._lock = threading.Lock()
        self._closed = False

    def read_next(self) -> pa.RecordBatch | None:
        """The next batch, or ``None`` at the end of the file."""
        with self._lock:
            if self._closed:
                return None
            try:
                return next(self._batches, None)
            except Exception as exc:
                error = _read_error(exc, self._path, self._given)
                if error is None:
                    raise
                raise error from exc

    def close(self) -> None:
        """Release the file; safe to call twice."""
        with self._lock:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(Exception):
                    self._resource.close()

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while (batch := self.read_next()) is not None:
            yield batch


def open_reader(path: Path, fmt: FileFormat, given: str) -> FileReader:
    """Open ``path`` (resolved) as ``fmt``; ``given`` is the path as the client named it."""
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if fmt is FileFormat.CSV:
            # Column types are inferred from the first block, as pyarrow's own reader does.
            reader = pa_csv.open_csv(
                str(path), read_options=pa_csv.ReadOptions(block_size=TARGET_BATCH_BYTES)
            )
            return FileReader(reader.schema, iter(reader), reader, path, given)
        parquet = pq.ParquetFile(str(path))
        batches = parquet.iter_batches(batch_size=_parquet_batch_rows(parquet.metadata))
        return FileReader(parquet.schema_arrow, batches, parquet, path, given)
    except Exception as exc:
        error = _read_error(exc, path, given)
        if error is None:
            raise
        raise error from exc


def _parquet_batch_rows(metadata: pq.FileMetaData) -> int:
    """Rows per batch for ~1 MiB batches, estimated from the file's uncompressed size."""
    total_bytes = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if metadata.num_rows == 0 or total_bytes <= 0:
        return _DEFAULT_PARQUET_BATCH_ROWS
    return max(1, metadata.num_rows * TARGET_BATCH_BYTES // total_bytes)


def _read_error(exc: Exception, path: Path, given: str) -> DomainError | None:
    """A read failure as a domain error naming the path as given; None if unexpected."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return not_found("SOURCE_NOT_FOUND", f"file {given!r} does not exist", path=given)
    if isinstance(exc, (IsADirectoryError, NotADirectoryError)):
        return invalid_argument("INVALID_PATH", f"{given!r} is not a file", path=given)
    if isinstance(exc, PermissionError):
        return permission_denied(
            "SOURCE_ACCESS_DENIED", f"cannot read {given!r}: permission denied", path=given
        )
    if isinstance(exc, OSError):
        return unavailable(
            "SOURCE_IO_ERROR", f"cannot read {given!r}: {_reason_of(exc)}", path=given
        )
    if isinstance(exc, pa.ArrowException):
        return invalid_argument(
            "SOURCE_PARSE_ERROR",
            f"cannot parse {given!r}: {_arrow_message(exc, given, path)}",
            path=given,
        )
    return None


# --------------------------------------------------------------------------- writing


class _Sink(Protocol):
    def write_batch(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None: ...


class AtomicFileWriter:
    """Writes a file under a temporary name beside the target; commit renames it.

    Until :meth:`commit` the target is untouched; :meth:`abort` (or leaving a ``with``
    block without committing) removes the temporary file. Methods may be called from
    different threads; they serialise on a lock, so an abort waits for a batch being
    written rather than closing the file under it.
    """

    def __init__(self, target: Path, fmt: FileFormat, schema: pa.Schema, given: str) -> None:
        self.target = target
        self.format = fmt
        self.rows_written = 0
        self._given = given
        self._lock = threading.Lock()
        self._state = "open"
        try:
            if target.is_dir():
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            target.parent.mkdir(parents=True, exist_ok=True)
            self.temp_path = _create_temp(target)
        except Exception as exc:
            error = self._error(exc)
            if error is None:
                raise
            raise error from exc
        try:
            self._sink: _Sink = _open_sink(fmt, self.temp_path, schema)
        except Exception as exc:
            self.temp_path.unlink(missing_ok=True)
            error = self._error(exc)
            if error is None:
                raise
            raise error from exc

    def write(self, batch: pa.RecordBatch) -> None:
        """Append one batch to the temporary file."""
        with self._lock:
            self._require_open()
            try:
                self._sink.write_batch(batch)
            except Exception as exc:
                error = self._error(exc)
                if error is None:
                    raise
                raise error from exc
            self.rows_written += batch.num_rows

    def commit(self) -> Path:
        """Flush, fsync and atomically replace the target; returns the target path."""
        with self._lock:
            self._require_open()
            try:
                self._sink.close()
                _fsync_path(self.temp_path)
                os.replace(self.temp_path, self.target)
                # Make the rename itself durable.
                _fsync_path(self.target.parent)
            except Exception as exc:
                self._discard()
                error = self._error(exc)
                if error is None:
                    raise
                raise error from exc
            self._state = "committed"
            return self.target

    def abort(self) -> None:
        """Drop everything written; the target stays as it was. Safe to call twice."""
        with self._lock:
            if self._state == "open":
                with contextlib.suppress(Exception):
                    self._sink.close()
                self._discard()

    @property
    def state(self) -> str:
        """``open``, ``committed`` or ``aborted``."""
        return self._state

    def _discard(self) -> None:
        self._state = "aborted"
        with contextlib.suppress(OSError):
            self.temp_path.unlink(missing_ok=True)

    def _require_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"writer is {self._state}")

    def _error(self, exc: Exception) -> DomainError | None:
        """A write failure as a domain error naming the path as given; None if unexpected."""
        given = self._given
        if isinstance(exc, DomainError):
            return exc
        if isinstance(exc, (IsADirectoryError, NotADirectoryError, FileExistsError)):
            return invalid_argument(
                "INVALID_PATH",
                f"cannot write {given!r}: it is a directory, or one of its parents is a file",
                path=given,
            )
        if isinstance(exc, PermissionError):
            return permission_denied(
                "SINK_ACCESS_DENIED", f"cannot write {given!r}: permission denied", path=given
            )
        if isinstance(exc, OSError):
            return unavailable(
                "SINK_IO_ERROR", f"cannot write {given!r}: {_reason_of(exc)}", path=given
            )
        if isinstance(exc, pa.ArrowException):
            message = _arrow_message(exc, given, self.temp_path, self.target)
            return invalid_argument(
                "SINK_WRITE_ERROR",
                f"cannot write {given!r} as {self.format.value}: {message}",
                path=given,
            )
        return None

    def __enter__(self) -> AtomicFileWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()


def is_temp_name(name: str) -> bool:
    """Whether a directory entry is a write's temporary file (in progress or abandoned)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _create_temp(target: Path) -> Path:
    """A new, empty file beside ``target`` with a unique hidden name (the umask applies)."""
    while True:
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate


def _open_sink(fmt: FileFormat, path: Path, schema: pa.Schema) -> _Sink:
    if fmt is FileFormat.CSV:
        return pa_csv.CSVWriter(str(path), schema)
    return pq.ParquetWriter(str(path), schema)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

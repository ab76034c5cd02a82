"""Blocking file work driven from asyncio, and atomic single-file writes.

Reads: a blocking batch iterator is pulled one batch per worker-thread call, one
batch ahead of the consumer, so cancellation lands between batches; closing waits
for a batch being read rather than freeing the reader under it.

Writes: :class:`AtomicFile` makes a file appear whole or not at all. Locally it is
written under a hidden temporary name beside the target, fsynced and renamed over
it (``os.replace``), and the directory fsynced. On S3 it is written to a local
temporary file first and uploaded to the final key only once complete: S3 makes
an object visible only when its upload (single or multipart) completes, so
readers never see a partial object and a killed process leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

from datadog_platform.connector.base import RecordStream, StreamItem
from datadog_platform.connector.file_paths import TEMP_SUFFIX, FileRoot, temp_name

T = TypeVar("T")

ErrorMapper = Callable[[Exception], Exception | None]


# --------------------------------------------------------------------------- reading


class BlockingBatches:
    """A blocking batch iterator that worker threads may pull from one at a time."""

    def __init__(
        self,
        schema: pa.Schema,
        batches: Iterator[StreamItem],
        map_error: ErrorMapper,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.schema = schema
        self._batches = batches
        self._map_error = map_error
        self._on_close = on_close
        self._lock = threading.Lock()
        self._closed = False

    def read_next(self) -> StreamItem | None:
        """The next non-empty batch, or ``None`` at the end."""
        with self._lock:
            while not self._closed:
                try:
                    batch = next(self._batches, None)
                except Exception as exc:
                    error = self._map_error(exc)
                    if error is None:
                        raise
                    raise error from exc
                if batch is None:
                    return None
                if type(batch) is not pa.RecordBatch or batch.num_rows:
                    return batch
            return None

    def close(self) -> None:
        """Stop the iterator and release what it holds; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            close = getattr(self._batches, "close", None)
            with contextlib.suppress(Exception):
                if close is not None:
                    close()
            if self._on_close is not None:
                with contextlib.suppress(Exception):
                    self._on_close()

    def __iter__(self) -> Iterator[StreamItem]:
        while (batch := self.read_next()) is not None:
            yield batch


@asynccontextmanager
async def open_stream(open_: Callable[[], BlockingBatches]) -> AsyncIterator[RecordStream]:
    """A :class:`RecordStream` over batches opened (and later closed) in worker threads."""
    reader = await acquire(open_, BlockingBatches.close)
    try:
        yield RecordStream(reader.schema, _pull(reader))
    finally:
        await cleanup(reader.close)


async def _pull(reader: BlockingBatches) -> AsyncIterator[StreamItem]:
    """The reader's batches; from the second on, one is read ahead: the next batch is
    decoded in a worker thread while the caller encodes and sends the current one
    (measured: otherwise the read waits for the send and the send for the read). The
    first is not, so a consumer taking one batch (a peek, a small limit) reads no more.
    """
    first = await asyncio.to_thread(reader.read_next)
    if first is None:
        return
    yield first
    ahead = asyncio.ensure_future(asyncio.to_thread(reader.read_next))
    try:
        while (batch := await ahead) is not None:
            ahead = asyncio.ensure_future(asyncio.to_thread(reader.read_next))
            yield batch
    finally:
        # A read in flight keeps running in its thread; ``close`` takes the reader's
        # lock, so it waits for that read instead of freeing the file under it.
        if not ahead.done():
            ahead.cancel()
        elif not ahead.cancelled():
            ahead.exception()  # retrieved, so asyncio does not log it as never retrieved


async def acquire(open_: Callable[[], T], release: Callable[[T], None]) -> T:
    """Open a resource in a worker thread; if the call is cancelled meanwhile, release it.

    A cancelled ``to_thread`` leaves its thread running; without this, a file opened
    (or a temporary file created) just as the client cancels would leak.
    """
    future = asyncio.ensure_future(asyncio.to_thread(open_))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        loop = asyncio.get_running_loop()

        def release_when_opened(done: asyncio.Future[T]) -> None:
            if not done.cancelled() and done.exception() is None:
                loop.run_in_executor(None, release, done.result())

        future.add_done_callback(release_when_opened)
        raise


async def cleanup(release: Callable[[], None]) -> None:
    """Run a blocking cleanup off the loop, to its end even if the call is cancelled."""
    await asyncio.shield(asyncio.to_thread(release))


# --------------------------------------------------------------------------- writing


class BatchWriter(Protocol):
    """A write in progress: batches in, then one commit or abort."""

    rows_written: int

    def write(self, batch: pa.RecordBatch) -> None: ...

    def commit(self) -> str: ...

    def abort(self) -> None: ...


#: Decoded batches (~2 MiB each) that may wait for the writer thread. Receiving (gRPC,
#: decoding on the event loop) then overlaps with encoding in the thread instead of
#: alternating with it: a 64 MiB Parquet row-group flush takes a few hundred
#: milliseconds, during which about as many batches keep arriving.
WRITE_QUEUE_BATCHES = 32


async def drive_write(
    open_: Callable[[], BatchWriter], batches: AsyncIterator[pa.RecordBatch]
) -> tuple[int, str]:
    """Write every batch, then commit; any failure (or cancellation) aborts.

    Batches are handed to one writer task (in order, one worker-thread call at a
    time) through a bounded queue, so the next batches are received while one is
    written. Returns the rows written and the committed location. The commit is
    shielded: once the stream is complete it runs to its end, so a cancellation
    that arrives then cannot leave a half-done commit.
    """
    writer = await acquire(open_, lambda w: w.abort())
    queue: asyncio.Queue[pa.RecordBatch | None] = asyncio.Queue(WRITE_QUEUE_BATCHES)
    consumer = asyncio.ensure_future(_write_queued(writer, queue))
    try:
        async for batch in batches:
            await _put(queue, batch, consumer)
        await _put(queue, None, consumer)
        await consumer
        location = await asyncio.shield(asyncio.to_thread(writer.commit))
    except BaseException:
        consumer.cancel()
        with contextlib.suppress(BaseException):
            await consumer
        # ``abort`` takes the writer's lock, so it waits for a write still running
        # in a thread whose task was cancelled above.
        await cleanup(writer.abort)
        raise
    return writer.rows_written, location


async def _write_queued(writer: BatchWriter, queue: asyncio.Queue[pa.RecordBatch | None]) -> None:
    while (batch := await queue.get()) is not None:
        await asyncio.to_thread(writer.write, batch)


async def _put(
    queue: asyncio.Queue[pa.RecordBatch | None],
    item: pa.RecordBatch | None,
    consumer: asyncio.Future[None],
) -> None:
    """Queue ``item``; raise the writer's error instead of waiting on a dead writer."""
    if consumer.done():
        consumer.result()  # raises the writer's error
        raise RuntimeError("the writer ended before the stream")
    if not queue.full():
        queue.put_nowait(item)
        return
    put = asyncio.ensure_future(queue.put(item))
    try:
        await asyncio.wait({put, consumer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not put.done():
            put.cancel()
    if not put.done() or put.cancelled():
        consumer.result()
        raise RuntimeError("the writer ended before the stream")


class AtomicFile:
    """One file written whole or not at all (see the module doc).

    Write to :attr:`stream`, then :meth:`commit` (closes the stream first if still
    open) or :meth:`abort`. Not thread-safe by itself: callers serialise.
    """

    def __init__(self, root: FileRoot, target: str) -> None:
        self.root = root
        self.target = target
        name = target.rsplit("/", 1)[-1]
        if root.local:
            parent = os.path.dirname(target)
            os.makedirs(parent, exist_ok=True)
            root.sweep_stale_temps(parent, name)
            self.temp_path = os.path.join(parent, temp_name(name))
            fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            os.close(fd)
        else:
            fd, self.temp_path = tempfile.mkstemp(prefix="datadog-upload-", suffix=TEMP_SUFFIX)
            os.close(fd)
        try:
            self.stream: pa.NativeFile = pa.OSFile(self.temp_path, "wb")
        except BaseException:
            self._remove_temp()
            raise
        self.state = "open"

    def commit(self) -> None:
        """Make the written bytes the target's content, atomically."""
        if self.state != "open":
            raise RuntimeError(f"file is {self.state}")
        try:
            if not self.stream.closed:
                self.stream.close()
            if self.root.local:
                fsync_path(self.temp_path)
                os.replace(self.temp_path, self.target)
                fsync_path(os.path.dirname(self.target))  # make the rename itself durable
            else:
                upload(self.root.fs, self.temp_path, self.target)
        except BaseException:
            self.abort()
            raise
        finally:
            if not self.root.local:
                self._remove_temp()
        self.state = "committed"

    def abort(self) -> None:
        """Drop what was written; the target stays as it was. Safe to call twice."""
        if self.state == "committed":
            return
        self.state = "aborted"
        with contextlib.suppress(Exception):
            if not self.stream.closed:
                self.stream.close()
        self._remove_temp()

    def _remove_temp(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.temp_path)


def upload(filesystem: pafs.FileSystem, local_path: str, key: str) -> None:
    """Copy a complete local file to ``key`` (one object upload; atomic on S3)."""
    pafs.copy_files(
        local_path,
        key,
        source_filesystem=pafs.LocalFileSystem(),
        destination_filesystem=filesystem,
    )


def fsync_tree(path: str) -> None:
    """fsync every file and directory under ``path`` (and ``path`` itself)."""
    for directory, _, files in os.walk(path):
        for name in files:
            fsync_path(os.path.join(directory, name))
        fsync_path(directory)


def fsync_path(path: str | Path) -> None:
    """fsync one file or directory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Bridges between the event loop and DuckDB's threads, bounded both ways.

- :class:`BatchFeed`: an async producer puts record batches; DuckDB pulls them from
  a ``pyarrow.RecordBatchReader`` in its own threads. At most ``capacity`` batches
  wait in between, so a fast source cannot run ahead of the query. String columns
  may arrive as Arrow dictionaries of strings (Parquet decoded as stored): DuckDB
  reads them as the same ``VARCHAR``, without decoding each value and hashing
  dictionary codes instead of strings (TPC-H Q1: 0.34 instead of 0.52 CPU-s for
  decoding plus query). The reader's schema follows the first batch; later batches
  are brought to it.
- :class:`BatchDrain`: a thread pulls a DuckDB result reader (which is where the
  query actually runs) and hands batches to async code, ``capacity`` ahead at most.

Closing either side wakes the other at once: that is how a cancelled stage stops
within a second even when DuckDB is waiting on a slow source.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator

import pyarrow as pa

from datadog_platform.core.arrow_types import is_string_kind

#: Batches a bridge holds between its two sides.
DEFAULT_CAPACITY = 4


class FeedClosed(Exception):
    """The feed was closed before its producer finished (the stage is stopping)."""


class BatchFeed:
    """Async producer → blocking ``RecordBatchReader`` consumer.

    Batches have the columns of ``schema``; a string column may be a dictionary of
    strings instead (see the module doc).
    """

    def __init__(self, schema: pa.Schema, capacity: int = DEFAULT_CAPACITY) -> None:
        self.schema = schema
        self._capacity = capacity
        self._items: deque[pa.RecordBatch] = deque()
        self._cond = threading.Condition()
        self._finished = False
        self._closed = False
        #: Why the producer failed, if it did (the consumer sees a FeedClosed).
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._space: asyncio.Future[None] | None = None

    async def put(self, batch: pa.RecordBatch) -> None:
        """Queue one batch, waiting while the feed is full."""
        while True:
            with self._cond:
                if self._closed:
                    raise FeedClosed("the query stopped reading")
                if len(self._items) < self._capacity:
                    self._items.append(batch)
                    self._cond.notify_all()
                    return
                self._loop = asyncio.get_running_loop()
                self._space = self._loop.create_future()
                space = self._space
            await space

    async def feed(self, batches: AsyncIterator[pa.RecordBatch]) -> None:
        """Put every batch of ``batches``, then finish; on failure record it and close."""
        try:
            async for batch in batches:
                if batch.num_rows:
                    await self.put(batch)
        except BaseException as exc:
            if not isinstance(exc, FeedClosed):
                self.error = exc
            self.close()
            raise
        self.finish()

    def finish(self) -> None:
        """No more batches: the reader ends after the queued ones."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def close(self) -> None:
        """Stop both sides now: the reader raises, a waiting ``put`` raises FeedClosed."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()
        self._wake_producer()

    def reader(self) -> pa.RecordBatchReader:
        """The consumer side (read it from one thread).

        Blocks until the first batch, the end or a close: the reader's schema is
        ``schema`` with the first batch's dictionary-encoded string columns.
        """
        with self._cond:
            self._wait()
            first = self._items[0].schema if self._items else self.schema
        schema = reader_schema(self.schema, first)
        return pa.RecordBatchReader.from_batches(schema, self._batches(schema))

    def _batches(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        while True:
            with self._cond:
                self._wait()
                if not self._items:
                    return
                batch = self._items.popleft()
            self._wake_producer()
            yield batch if batch.schema.equals(schema) else conform(batch, schema)

    def _wait(self) -> None:
        """With the lock held: wait for a batch, the end or a close (FeedClosed)."""
        while not self._items and not self._finished and not self._closed:
            self._cond.wait()
        if self._closed:
            raise FeedClosed("the stage stopped this input")

    def _wake_producer(self) -> None:
        with self._cond:
            space, self._space = self._space, None
            loop = self._loop
        if space is not None and loop is not None:
            # RuntimeError: the loop is gone, so nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, space)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def reader_schema(schema: pa.Schema, first: pa.Schema) -> pa.Schema:
    """``schema``, with the string columns that are dictionaries of strings in ``first``."""
    fields = []
    for field, kind in zip(schema, first.types, strict=True):
        dictionary = (
            pa.types.is_dictionary(kind)
            and is_string_kind(kind.value_type)
            and is_string_kind(field.type)
        )
        fields.append(field.with_type(kind) if dictionary else field)
    return pa.schema(fields, metadata=schema.metadata)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with ``schema``'s types: string columns dictionary-encoded or decoded.

    Only a stream that changes between the two (Parquet files encoded differently)
    pays for this.
    """
    arrays = []
    for field, column in zip(schema, batch.columns, strict=True):
        if not column.type.equals(field.type):
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            if pa.types.is_dictionary(field.type):
                column = column.cast(field.type.value_type).dictionary_encode()
            column = column.cast(field.type)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


_END = object()


class BatchDrain:
    """A blocking batch source run in its own thread → async iteration.

    ``open`` runs in the thread and returns the reader (opening a DuckDB result
    starts the query); the thread then reads ahead at most ``capacity`` batches.
    """

    def __init__(
        self,
        open_reader: Callable[[], pa.RecordBatchReader],
        capacity: int = DEFAULT_CAPACITY,
        name: str = "engine-drain",
    ) -> None:
        self._open = open_reader
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._slots = threading.Semaphore(capacity)
        self._stop = threading.Event()
        self._done = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __aiter__(self) -> BatchDrain:
        return self

    async def __anext__(self) -> pa.RecordBatch:
        item = await self._queue.get()
        self._slots.release()
        if item is _END:
            self._queue.put_nowait(_END)  # later calls end too
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, pa.RecordBatch)
        return item

    async def close(self, grace: float = 1.0) -> bool:
        """Stop reading ahead and wait up to ``grace`` s for the thread; whether it ended.

        The caller interrupts whatever the thread blocks in (the DuckDB query) first.
        """
        self._stop.set()
        self._slots.release()  # unblock a thread waiting for room
        try:
            await asyncio.wait_for(asyncio.shield(self._done), grace)
        except TimeoutError:
            return False
        return True

    @property
    def finished(self) -> bool:
        """Whether the thread has ended."""
        return self._done.done()

    def _run(self) -> None:
        try:
            reader = self._open()
            while not self._stop.is_set():
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    self._send(_END)
                    return
                self._slots.acquire()
                if self._stop.is_set():
                    return
                self._send(batch)
        except BaseException as exc:
            self._send(exc)
        finally:
            self._call(_resolve, self._done)

    def _send(self, item: object) -> None:
        self._call(self._queue.put_nowait, item)

    def _call(self, function: Callable[..., object], *args: object) -> None:
        # RuntimeError: the loop is closed, so nobody is listening.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(function, *args)

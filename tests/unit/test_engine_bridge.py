"""Bounded hand-over of record batches between the event loop and threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import duckdb
import pyarrow as pa
import pytest

from datadog_platform.executor.engine.bridge import BatchDrain, BatchFeed, FeedClosed

SCHEMA = pa.schema([("n", pa.int64())])


def batch(n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"n": [n]}, schema=SCHEMA)


async def numbers(count: int) -> AsyncIterator[pa.RecordBatch]:
    for n in range(count):
        yield batch(n)


async def test_feed_delivers_every_batch_to_a_reader_in_a_thread() -> None:
    feed = BatchFeed(SCHEMA, capacity=2)
    reading = asyncio.create_task(asyncio.to_thread(lambda: feed.reader().read_all()))
    await asyncio.sleep(0.05)
    assert not reading.done(), "the reader waits for the first batch to know its schema"
    producer = asyncio.create_task(feed.feed(numbers(50)))
    table = await reading
    await producer
    assert table.column("n").to_pylist() == list(range(50))
    assert table.schema.equals(SCHEMA)


async def test_an_empty_feed_reads_as_its_schema() -> None:
    feed = BatchFeed(SCHEMA)
    await feed.feed(numbers(0))
    table = await asyncio.to_thread(lambda: feed.reader().read_all())
    assert table.num_rows == 0
    assert table.schema.equals(SCHEMA)


STRINGS = pa.schema([("s", pa.string_view()), ("n", pa.int64())])
DICTIONARY = pa.dictionary(pa.int32(), pa.string())


def strings(values: list[str | None], *, dictionary: bool) -> pa.RecordBatch:
    column = pa.array(values, pa.string())
    array = column.dictionary_encode() if dictionary else column.cast(pa.string_view())
    numbers = pa.array(range(len(values)), pa.int64())
    return pa.RecordBatch.from_arrays([array, numbers], names=STRINGS.names)


async def feed_all(*batches: pa.RecordBatch) -> pa.Table:
    feed = BatchFeed(STRINGS, capacity=len(batches) + 1)
    await feed.feed(_of(*batches))
    return await asyncio.to_thread(lambda: feed.reader().read_all())


async def test_string_columns_keep_the_dictionaries_of_the_first_batch() -> None:
    table = await feed_all(
        strings(["a", "b", None], dictionary=True),
        strings(["é", "a"], dictionary=False),  # another file, stored without one
        strings(["c"], dictionary=True),
    )
    assert table.schema.field("s").type == DICTIONARY
    assert table.column("s").to_pylist() == ["a", "b", None, "é", "a", "c"]
    assert table.column("n").to_pylist() == [0, 1, 2, 0, 1, 0]


async def test_dictionaries_after_plain_strings_are_decoded() -> None:
    table = await feed_all(
        strings(["a", None], dictionary=False), strings(["b", "a"], dictionary=True)
    )
    assert table.schema.equals(STRINGS)
    assert table.column("s").to_pylist() == ["a", None, "b", "a"]


async def test_duckdb_reads_dictionaries_as_the_strings_they_hold() -> None:
    feed = BatchFeed(STRINGS)
    await feed.feed(_of(strings(["x", "y", "x", None], dictionary=True)))

    def query() -> pa.Table:
        with duckdb.connect() as con:
            con.register("t", feed.reader())
            return con.sql("SELECT s, count(*) AS c FROM t GROUP BY s ORDER BY s").to_arrow_table()

    table = await asyncio.to_thread(query)
    assert table.schema.field("s").type == pa.string()
    assert table.to_pylist() == [{"s": "x", "c": 2}, {"s": "y", "c": 1}, {"s": None, "c": 1}]


async def _of(*batches: pa.RecordBatch) -> AsyncIterator[pa.RecordBatch]:
    for item in batches:
        yield item


async def test_feed_holds_at_most_its_capacity() -> None:
    feed = BatchFeed(SCHEMA, capacity=3)
    producer = asyncio.create_task(feed.feed(numbers(10)))
    await asyncio.sleep(0.05)
    assert not producer.done(), "the producer waits for room"
    assert len(feed._items) == 3
    feed.close()
    with pytest.raises(FeedClosed):
        await producer
    assert feed.error is None, "closing is not a failure of the producer"


async def test_closing_the_feed_wakes_a_waiting_reader() -> None:
    feed = BatchFeed(SCHEMA)
    reading = asyncio.create_task(asyncio.to_thread(lambda: feed.reader().read_next_batch()))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    feed.close()
    with pytest.raises(Exception, match="stopped"):
        await reading
    assert time.perf_counter() - started < 0.5


async def test_a_failing_producer_is_recorded_and_ends_the_reader() -> None:
    async def broken() -> AsyncIterator[pa.RecordBatch]:
        yield batch(1)
        raise ValueError("source broke")

    feed = BatchFeed(SCHEMA)
    reading = asyncio.create_task(asyncio.to_thread(lambda: feed.reader().read_all()))
    with pytest.raises(ValueError, match="source broke"):
        await feed.feed(broken())
    assert isinstance(feed.error, ValueError)
    with pytest.raises(Exception, match="stopped"):
        await reading


def reader_of(count: int, fail_at: int | None = None) -> pa.RecordBatchReader:
    def batches() -> Iterator[pa.RecordBatch]:
        for n in range(count):
            if n == fail_at:
                raise RuntimeError("query failed")
            yield batch(n)

    return pa.RecordBatchReader.from_batches(SCHEMA, batches())


async def test_drain_yields_every_batch_then_ends() -> None:
    drain = BatchDrain(lambda: reader_of(20), capacity=2)
    got = [b.column(0)[0].as_py() async for b in drain]
    assert got == list(range(20))
    assert await drain.close()


async def test_drain_raises_the_readers_error() -> None:
    drain = BatchDrain(lambda: reader_of(20, fail_at=5))
    got = [await anext(drain) for _ in range(5)]
    assert len(got) == 5
    with pytest.raises(Exception, match="query failed"):
        await anext(drain)


async def test_drain_reads_ahead_at_most_its_capacity_and_closes() -> None:
    pulled = 0
    lock = threading.Lock()

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal pulled
        for n in range(1000):
            with lock:
                pulled += 1
            yield batch(n)

    drain = BatchDrain(lambda: pa.RecordBatchReader.from_batches(SCHEMA, batches()), capacity=3)
    await anext(drain)
    await asyncio.sleep(0.05)
    assert pulled <= 5
    assert await drain.close(grace=1.0)
    assert drain.finished

"""drive_write: batches queued to one writer thread, in order; failures and cancels abort."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pyarrow as pa
import pytest

from datadog_platform.connector.file_io import WRITE_QUEUE_BATCHES, drive_write


class Recorder:
    """A BatchWriter noting what it was asked to do."""

    def __init__(self, fail_at: int | None = None, delay: float = 0.0) -> None:
        self.rows_written = 0
        self.seen: list[int] = []
        self.calls: list[str] = []
        self.fail_at = fail_at
        self.delay = delay
        self.lock = threading.Lock()

    def write(self, batch: pa.RecordBatch) -> None:
        with self.lock:
            time.sleep(self.delay)
            if self.fail_at is not None and len(self.seen) == self.fail_at:
                raise ValueError("disk says no")
            self.seen.append(batch.column(0)[0].as_py())
            self.rows_written += batch.num_rows

    def commit(self) -> str:
        with self.lock:
            self.calls.append("commit")
            return "file:///out"

    def abort(self) -> None:
        with self.lock:
            self.calls.append("abort")


async def numbered(count: int, sent: list[int]) -> AsyncIterator[pa.RecordBatch]:
    for i in range(count):
        sent.append(i)
        yield pa.record_batch({"n": [i, i]})


async def test_writes_every_batch_in_order_then_commits() -> None:
    writer, sent = Recorder(delay=0.001), []
    rows, location = await drive_write(lambda: writer, numbered(100, sent))
    assert (rows, location) == (200, "file:///out")
    assert writer.seen == list(range(100))
    assert writer.calls == ["commit"]


async def test_a_failing_write_aborts_and_stops_reading_the_stream() -> None:
    writer, sent = Recorder(fail_at=3), []
    with pytest.raises(ValueError, match="disk says no"):
        await drive_write(lambda: writer, numbered(10_000, sent))
    assert writer.calls == ["abort"]
    # The queue bounds how far the stream was read past the failure.
    assert len(sent) <= 3 + WRITE_QUEUE_BATCHES + 3


async def test_cancelling_aborts_after_the_running_write_and_never_commits() -> None:
    writer, sent = Recorder(delay=0.02), []
    task = asyncio.ensure_future(drive_write(lambda: writer, numbered(10_000, sent)))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert writer.calls == ["abort"]
    assert len(sent) < 10_000

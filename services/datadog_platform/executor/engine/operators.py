"""Python batch operators between DuckDB segments (e.g. cast, check).

An operator's input is a stream (a query's output, a source, another operator);
its output is a stream feeding the next query or the sink. ``process`` runs in a
worker thread, one batch at a time; rows it quarantines go to its quarantine
sink through their own write (see :class:`QuarantineWriter`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import pyarrow as pa

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.tasks import CheckResult

#: Name of the column quarantined rows carry: the checks they failed.
FAILED_CHECKS_COLUMN = "_failed_checks"


class BatchOperator(Protocol):
    """A transform run in Python, bound to its input schema."""

    step: str
    output_schema: pa.Schema
    #: Where quarantined rows go; None when the operator quarantines none.
    quarantine: step_pb2.SinkSpec | None

    def process(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.RecordBatch | None]:
        """Output rows and quarantined rows of one batch (blocking)."""
        ...

    def finish(self) -> None:
        """After the last batch; raise TransformError/DomainError to fail the stage."""
        ...

    def results(self) -> tuple[CheckResult, ...]:
        """Check outcomes so far."""
        ...

    def close(self) -> None:
        """Release what the operator holds."""
        ...


def quarantine_schema(operator: BatchOperator) -> pa.Schema:
    """The schema of quarantined rows: the operator's own if it says, else output + reasons."""
    declared = getattr(operator, "quarantine_schema", None)
    if isinstance(declared, pa.Schema):
        return declared
    return operator.output_schema.append(pa.field(FAILED_CHECKS_COLUMN, pa.string()))


class QuarantineWriter:
    """Feeds quarantined rows to one sink write, started on the first rows (or at the end)."""

    _END = object()

    def __init__(
        self,
        operator: BatchOperator,
        write: Callable[[pa.Schema, AsyncIterator[pa.RecordBatch]], Awaitable[object]],
    ) -> None:
        self.schema = quarantine_schema(operator)
        self._write = write
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=4)
        self.task: asyncio.Task[object] | None = None
        self.rows = 0
        self.bytes = 0

    async def put(self, batch: pa.RecordBatch) -> None:
        """Queue quarantined rows (waits while the sink is behind)."""
        self._ensure_started()
        self.rows += batch.num_rows
        self.bytes += batch.nbytes
        await self._put(batch)

    async def finish(self) -> object:
        """End the write and wait for its commit; its result."""
        self._ensure_started()
        await self._put(self._END)
        assert self.task is not None
        return await self.task

    def cancel(self) -> None:
        """Abandon the write: nothing is committed."""
        if self.task is not None:
            self.task.cancel()

    def _ensure_started(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._write(self.schema, self._batches()))

    async def _put(self, item: object) -> None:
        assert self.task is not None
        put = asyncio.ensure_future(self._queue.put(item))
        done, _ = await asyncio.wait({put, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if put not in done:
            put.cancel()
            self.task.result()  # the write failed: raise why
            raise RuntimeError("the quarantine write ended before its input")

    async def _batches(self) -> AsyncIterator[pa.RecordBatch]:
        while True:
            item = await self._queue.get()
            if item is self._END:
                return
            assert isinstance(item, pa.RecordBatch)
            yield item


async def run_operator(
    operator: BatchOperator,
    batches: AsyncIterator[pa.RecordBatch],
    quarantine: QuarantineWriter | None,
) -> AsyncIterator[pa.RecordBatch]:
    """The operator's output stream over ``batches`` (each batch processed in a thread)."""
    async for batch in batches:
        output, rejected = await asyncio.to_thread(operator.process, batch)
        if rejected is not None and rejected.num_rows:
            if quarantine is None:
                raise RuntimeError(f"step {operator.step!r} quarantined rows without a sink")
            await quarantine.put(rejected)
        if output.num_rows:
            yield output
    await asyncio.to_thread(operator.finish)

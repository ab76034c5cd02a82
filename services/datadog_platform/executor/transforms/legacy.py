"""The stage runner's filter, until the DuckDB engine (executor/engine) replaces it.

Transforms of a stage: record batch in, record batch out, schema known up front.

A transform is bound to its input schema once, before any data moves, so the
stage can announce its output schema to the sink and an expression that cannot
bind (an unknown column, a type mismatch) fails before anything is written.
``apply`` is blocking CPU work: the stage runs it off the event loop.
"""

from __future__ import annotations

import threading
from typing import Protocol

import duckdb
import pyarrow as pa

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.core.expressions import predicate_problem, sandboxed_connection
from datadog_platform.executor.transforms.errors import TRANSFORM_ERROR

# The name the batch has inside DuckDB; predicates refer to its columns only.
_INPUT_TABLE = "input"


class BatchTransform(Protocol):
    """One transform step, bound to its input schema."""

    step: str
    output_schema: pa.Schema

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Transform one batch (blocking; call it off the event loop)."""
        ...

    def close(self) -> None:
        """Release what the transform holds; safe while ``apply`` runs in a thread."""
        ...


def bind_transform(step: str, spec: step_pb2.TransformSpec, schema: pa.Schema) -> BatchTransform:
    """The transform ``spec`` of step ``step`` bound to ``schema`` (blocking: it probes it)."""
    kind = spec.WhichOneof("kind")
    if kind == "filter":
        return FilterTransform(step, spec.filter.predicate, schema)
    # Stage validation rejects unknown kinds; reaching here is a broken invariant.
    raise DomainError(ErrorCode.INTERNAL, "INTERNAL", f"step {step!r}: unsupported transform")


class FilterTransform:
    """Keeps the rows for which a SQL predicate (DuckDB dialect) is true.

    DuckDB only computes a boolean mask; Arrow applies it to the original batch, so
    the output has exactly the input's Arrow types (decimals, time zones, large
    strings...) whatever DuckDB would have converted them to, even when empty.
    NULL, like false, drops the row, as in a SQL ``WHERE``.
    """

    def __init__(self, step: str, predicate: str, schema: pa.Schema) -> None:
        self.step = step
        self.predicate = predicate
        self.output_schema = schema
        # Stage validation checked this already; check again so that nothing but a
        # single expression is ever spliced into the query below.
        problem = predicate_problem(predicate)
        if problem:
            raise self._error(problem)
        # Same implicit cast to BOOLEAN as a WHERE clause performs.
        self._query = f"SELECT CAST(({predicate}) AS BOOLEAN) FROM {_INPUT_TABLE}"
        self._con = sandboxed_connection()
        # Guards the connection: close() may come from the event loop while a
        # cancelled stage's apply() still runs in its worker thread.
        self._lock = threading.Lock()
        self._closed = False
        # Probe with an empty batch so binding errors surface before data moves.
        try:
            self.apply(_empty(schema))
        except BaseException:
            self.close()
            raise

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The rows of ``batch`` where the predicate is true."""
        with self._lock:
            if self._closed:
                raise DomainError(ErrorCode.CANCELLED, "CANCELLED", "transform closed")
            mask = self._mask(batch)
        return batch.filter(mask, null_selection_behavior="drop")

    def close(self) -> None:
        """Close the DuckDB connection, or interrupt the query running on it."""
        if self._lock.acquire(blocking=False):
            try:
                if not self._closed:
                    self._closed = True
                    self._con.close()
            finally:
                self._lock.release()
        else:
            # A worker thread is evaluating: stop it; the connection is freed with
            # this object once that thread lets go of it.
            self._closed = True
            self._con.interrupt()

    def _mask(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        self._con.register(_INPUT_TABLE, pa.Table.from_batches([batch], schema=batch.schema))
        try:
            result = self._con.sql(self._query).to_arrow_table()
        except duckdb.Error as exc:
            raise self._error(_first_line(str(exc))) from None
        finally:
            self._con.unregister(_INPUT_TABLE)
        if result.num_columns != 1 or result.num_rows != batch.num_rows:
            raise self._error(
                f"the predicate must give one boolean per row, got {result.num_columns} "
                f"column(s) and {result.num_rows} row(s) for {batch.num_rows} input rows "
                "(aggregates are not allowed)"
            )
        return result.column(0).combine_chunks()

    def _error(self, detail: str) -> DomainError:
        return DomainError(
            ErrorCode.INVALID_ARGUMENT,
            TRANSFORM_ERROR,
            f"step {self.step!r}: filter predicate {self.predicate!r} failed: {detail}",
            {"step": self.step},
        )


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else message

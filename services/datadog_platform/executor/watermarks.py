"""Watermarks of a stage's steps: the maximum of a cursor column over a step's output.

A step with ``watermark: {column}`` has the column's maximum over every batch it
outputs (a sink step: over what it received) reported when the stage succeeds,
as a string: ISO 8601 for dates and timestamps (tz-aware timestamps in UTC with
``+00:00``; fractional seconds with the unit's digits, only when non-zero),
plain text for numbers and strings. Nulls are ignored; a step that saw no
non-null value reports nothing. The column is checked against the step's
schema before any data moves (except for an output with no columns at all, e.g.
an inline source without rows: it has no data and so no watermark).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from datadog_platform.core.errors import DomainError, ErrorCode

#: A step's watermark column is missing from its output, or of a type without an order.
INVALID_WATERMARK = "INVALID_WATERMARK"

_EPOCH = datetime(1970, 1, 1)
_UNITS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_FRACTION_DIGITS = {"s": 0, "ms": 3, "us": 6, "ns": 9}


def _orderable(kind: pa.DataType) -> bool:
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_date(kind)
        or pa.types.is_timestamp(kind)
    )


class WatermarkTracker:
    """Running maxima of the watermark columns of a stage's steps.

    ``observe`` may run in a worker thread (transforms do); the stage awaits each
    batch before the next, so there is never more than one writer.
    """

    def __init__(self, columns: Mapping[str, str]) -> None:
        self._columns = dict(columns)
        self._index: dict[str, int] = {}
        self._max: dict[str, pa.Scalar] = {}

    def __bool__(self) -> bool:
        return bool(self._columns)

    def bind(self, step: str, schema: pa.Schema) -> None:
        """Check ``step``'s column in its output ``schema``; INVALID_WATERMARK if unusable."""
        column = self._columns.get(step)
        if column is None or not schema.names:
            # No columns at all (an inline source without rows): no data, no watermark.
            return
        index = schema.get_field_index(column)
        if index < 0:
            names = ", ".join(schema.names) or "none"
            raise self._error(
                step,
                column,
                f"step {step!r}: watermark column {column!r} is not in the step's output "
                f"(columns: {names})",
            )
        kind = schema.field(index).type
        if not _orderable(kind):
            raise self._error(
                step,
                column,
                f"step {step!r}: watermark column {column!r} has type {kind}; a watermark "
                "needs a number, string, date or timestamp column",
            )
        self._index[step] = index

    def observe(self, step: str, batch: pa.RecordBatch) -> None:
        """Fold one output batch of ``step`` into its maximum."""
        index = self._index.get(step)
        if index is None or batch.num_rows == 0:
            return
        top = pc.max(batch.column(index))
        if not top.is_valid:
            return
        current = self._max.get(step)
        # pc.greater, not max_element_wise: the latter has no kernel for tz-aware timestamps.
        if current is None or pc.greater(top, current).as_py():
            self._max[step] = top

    def values(self) -> dict[str, str]:
        """The watermark of each step that saw a non-null value, formatted."""
        return {step: format_watermark(value) for step, value in self._max.items()}

    @staticmethod
    def _error(step: str, column: str, message: str) -> DomainError:
        return DomainError(
            ErrorCode.INVALID_ARGUMENT,
            INVALID_WATERMARK,
            message,
            {"step": step, "column": column},
        )


def format_watermark(value: pa.Scalar) -> str:
    """A watermark value as text (see the module docstring)."""
    kind = value.type
    if pa.types.is_timestamp(kind):
        return _iso_timestamp(value.value, kind.unit, aware=kind.tz is not None)
    if pa.types.is_date(kind):
        return value.as_py().isoformat()
    return str(value.as_py())


def _iso_timestamp(ticks: int, unit: str, *, aware: bool) -> str:
    # Computed from the integer ticks: datetime cannot hold nanoseconds.
    seconds, fraction = divmod(ticks, _UNITS_PER_SECOND[unit])
    text = (_EPOCH + timedelta(seconds=seconds)).isoformat()
    if fraction:
        text += f".{fraction:0{_FRACTION_DIGITS[unit]}d}"
    return text + ("+00:00" if aware else "")

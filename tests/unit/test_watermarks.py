"""Watermarks: the running maximum of a step's cursor column, and how it is written down."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.executor.watermarks import (
    INVALID_WATERMARK,
    WatermarkTracker,
    format_watermark,
)


def scalar(value: Any, kind: pa.DataType) -> pa.Scalar:
    return pa.scalar(value, kind)


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (42, pa.int64(), "42"),
        (-7, pa.int8(), "-7"),
        (2**64 - 1, pa.uint64(), "18446744073709551615"),
        (2.5, pa.float64(), "2.5"),
        (3.0, pa.float32(), "3.0"),
        (Decimal("12.30"), pa.decimal128(5, 2), "12.30"),
        ("2026-11-01", pa.string(), "2026-11-01"),
        ("zürich", pa.large_string(), "zürich"),
        (dt.date(2026, 3, 29), pa.date32(), "2026-03-29"),
        (dt.date(1969, 12, 31), pa.date64(), "1969-12-31"),
        (dt.datetime(2026, 11, 1, 8, 37), pa.timestamp("s"), "2026-11-01T08:37:00"),
        (
            dt.datetime(2026, 11, 1, 8, 37, 0, 120_000),
            pa.timestamp("ms"),
            "2026-11-01T08:37:00.120",
        ),
        (
            dt.datetime(2026, 11, 1, 8, 37, 0, 5),
            pa.timestamp("us"),
            "2026-11-01T08:37:00.000005",
        ),
        (dt.datetime(2026, 11, 1, 8, 37), pa.timestamp("us"), "2026-11-01T08:37:00"),
        (
            dt.datetime(2026, 11, 1, 7, 37, tzinfo=dt.UTC),
            pa.timestamp("s", tz="Europe/Paris"),
            "2026-11-01T07:37:00+00:00",
        ),
        (
            dt.datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=dt.UTC),
            pa.timestamp("ms", tz="UTC"),
            "1969-12-31T23:59:59.999+00:00",
        ),
    ],
)
def test_format(value: Any, kind: pa.DataType, text: str) -> None:
    assert format_watermark(scalar(value, kind)) == text


def test_nanosecond_timestamps_keep_their_nanoseconds() -> None:
    ticks = 1_793_519_820_123_456_789  # 2026-11-01T07:57:00.123456789Z
    assert (
        format_watermark(pa.scalar(ticks, pa.timestamp("ns", tz="UTC")))
        == "2026-11-01T07:57:00.123456789+00:00"
    )
    assert format_watermark(pa.scalar(ticks, pa.timestamp("ns"))) == "2026-11-01T07:57:00.123456789"


def batch(**columns: Any) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(columns)


def test_maximum_over_batches_ignoring_nulls() -> None:
    tracker = WatermarkTracker({"src": "n"})
    tracker.bind("src", batch(n=[1]).schema)
    tracker.observe("src", batch(n=[3, None, 2]))
    tracker.observe("src", batch(n=[None, None]))
    tracker.observe("src", batch(n=[7, 1]))
    tracker.observe("src", batch(n=[5]))
    assert tracker.values() == {"src": "7"}


def test_strings_and_timestamps_compare_in_their_own_order() -> None:
    tracker = WatermarkTracker({"a": "s", "b": "t"})
    kind = pa.timestamp("us", tz="UTC")
    first = pa.RecordBatch.from_pydict(
        {"s": ["b", "ab"], "t": pa.array([dt.datetime(2026, 1, 2, tzinfo=dt.UTC)] * 2, kind)}
    )
    second = pa.RecordBatch.from_pydict(
        {"s": ["a", "c"], "t": pa.array([dt.datetime(2025, 12, 31, tzinfo=dt.UTC)] * 2, kind)}
    )
    for step in ("a", "b"):
        tracker.bind(step, first.schema)
    for data in (first, second):
        tracker.observe("a", data)
        tracker.observe("b", data)
    assert tracker.values() == {"a": "c", "b": "2026-01-02T00:00:00+00:00"}


def test_no_rows_or_only_nulls_give_no_value() -> None:
    tracker = WatermarkTracker({"a": "n", "b": "n"})
    schema = pa.schema([("n", pa.int64())])
    tracker.bind("a", schema)
    tracker.bind("b", schema)
    tracker.observe("a", pa.RecordBatch.from_pylist([], schema=schema))
    tracker.observe("b", pa.RecordBatch.from_pylist([{"n": None}], schema=schema))
    assert tracker.values() == {}


def test_steps_without_a_watermark_are_ignored() -> None:
    tracker = WatermarkTracker({})
    assert not tracker
    tracker.bind("src", batch(n=[1]).schema)
    tracker.observe("src", batch(n=[1]))
    assert tracker.values() == {}


def test_missing_column_names_the_step_and_the_column() -> None:
    tracker = WatermarkTracker({"orders": "updated_at"})
    with pytest.raises(DomainError) as info:
        tracker.bind("orders", batch(id=[1], amount=[2.0]).schema)
    error = info.value
    assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, INVALID_WATERMARK)
    assert error.message == (
        "step 'orders': watermark column 'updated_at' is not in the step's output "
        "(columns: id, amount)"
    )
    assert error.metadata == {"step": "orders", "column": "updated_at"}


@pytest.mark.parametrize("kind", [pa.bool_(), pa.binary(), pa.list_(pa.int64()), pa.null()])
def test_column_without_an_order_is_refused(kind: pa.DataType) -> None:
    tracker = WatermarkTracker({"src": "c"})
    with pytest.raises(DomainError) as info:
        tracker.bind("src", pa.schema([("c", kind)]))
    assert info.value.reason == INVALID_WATERMARK
    assert f"has type {kind}" in info.value.message


def test_an_output_without_columns_has_no_watermark_and_no_error() -> None:
    tracker = WatermarkTracker({"src": "c"})
    tracker.bind("src", pa.schema([]))
    tracker.observe("src", pa.RecordBatch.from_pydict({}))
    assert tracker.values() == {}

"""The filter transform: DuckDB predicate semantics, Arrow types kept exactly."""

from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal

import pyarrow as pa
import pytest

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.errors import DomainError
from datadog_platform.executor.transforms import (
    TRANSFORM_ERROR,
    FilterTransform,
    bind_transform,
)

PARIS = dt.timezone(dt.timedelta(hours=1))

SCHEMA = pa.schema(
    [
        ("id", pa.int32()),
        ("name", pa.large_string()),
        ("amount", pa.decimal128(12, 3)),
        ("ordered_at", pa.timestamp("us", tz="Europe/Paris")),
        ("flag", pa.bool_()),
    ]
)


def orders() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(
        [
            {
                "id": 1,
                "name": "Zoë",
                "amount": Decimal("100.001"),
                "ordered_at": dt.datetime(2026, 1, 1, 9, tzinfo=PARIS),
                "flag": True,
            },
            {"id": 2, "name": "日本語", "amount": None, "ordered_at": None, "flag": None},
            {
                "id": 3,
                "name": "Łukasz",
                "amount": Decimal("99.999"),
                "ordered_at": dt.datetime(2026, 1, 2, 9, tzinfo=PARIS),
                "flag": False,
            },
            {
                "id": 4,
                "name": None,
                "amount": Decimal("250.500"),
                "ordered_at": dt.datetime(2026, 1, 3, 23, 30, tzinfo=dt.UTC),
                "flag": True,
            },
        ],
        schema=SCHEMA,
    )


def filter_of(predicate: str, schema: pa.Schema = SCHEMA) -> FilterTransform:
    return FilterTransform("big", predicate, schema)


def test_keeps_matching_rows_in_order_with_exact_types() -> None:
    transform = filter_of("amount > 100")
    out = transform.apply(orders())
    assert out.schema == SCHEMA
    assert transform.output_schema == SCHEMA
    assert out.column("id").to_pylist() == [1, 4]
    assert out.column("amount").to_pylist() == [Decimal("100.001"), Decimal("250.500")]
    # The time zone and the instant survive (DuckDB only computed the mask).
    assert out.column("ordered_at").type == pa.timestamp("us", tz="Europe/Paris")
    assert out.column("ordered_at").to_pylist()[1] == dt.datetime(2026, 1, 3, 23, 30, tzinfo=dt.UTC)


def test_null_result_drops_the_row() -> None:
    out = filter_of("flag").apply(orders())
    assert out.column("id").to_pylist() == [1, 4]
    out = filter_of("NOT flag").apply(orders())
    assert out.column("id").to_pylist() == [3]
    out = filter_of("amount IS NULL").apply(orders())
    assert out.column("id").to_pylist() == [2]


def test_unicode_strings_compare_and_survive() -> None:
    out = filter_of("name IN ('日本語', 'Zoë')").apply(orders())
    assert out.column("name").to_pylist() == ["Zoë", "日本語"]
    assert out.schema.field("name").type == pa.large_string()


def test_timestamp_with_time_zone_predicate() -> None:
    out = filter_of("ordered_at >= TIMESTAMPTZ '2026-01-02 00:00:00+00'").apply(orders())
    assert out.column("id").to_pylist() == [3, 4]


def test_empty_batch_keeps_the_schema() -> None:
    empty = pa.RecordBatch.from_pylist([], schema=SCHEMA)
    out = filter_of("amount > 100").apply(empty)
    assert out.num_rows == 0
    assert out.schema == SCHEMA


def test_nothing_matches_gives_an_empty_batch_of_the_same_schema() -> None:
    out = filter_of("id > 1000").apply(orders())
    assert out.num_rows == 0
    assert out.schema == SCHEMA


def test_sliced_input_is_filtered_by_its_own_rows() -> None:
    out = filter_of("id >= 1").apply(orders().slice(1, 2))
    assert out.column("id").to_pylist() == [2, 3]


def test_non_boolean_predicate_is_cast_like_a_where_clause() -> None:
    out = filter_of("id - 1").apply(orders())  # 0 is false, anything else true
    assert out.column("id").to_pylist() == [2, 3, 4]


def test_unknown_column_fails_when_bound_naming_step_predicate_and_duckdb_error() -> None:
    with pytest.raises(DomainError) as info:
        filter_of("nope > 1")
    error = info.value
    assert error.reason == TRANSFORM_ERROR
    assert "'big'" in error.message
    assert "'nope > 1'" in error.message
    assert 'Binder Error: Referenced column "nope" not found' in error.message
    # Only DuckDB's first line: no caret diagram, no multi-line context.
    assert "\n" not in error.message
    assert "LINE 1" not in error.message


def test_type_mismatch_fails_on_the_data() -> None:
    transform = filter_of("CAST(name AS INTEGER) > 1")
    with pytest.raises(DomainError) as info:
        transform.apply(orders())
    assert info.value.reason == TRANSFORM_ERROR
    assert "Conversion Error" in info.value.message
    assert "CAST(name AS INTEGER) > 1" in info.value.message


def test_string_that_is_not_a_boolean_fails() -> None:
    with pytest.raises(DomainError) as info:
        filter_of("name").apply(orders())
    assert info.value.reason == TRANSFORM_ERROR


def test_aggregate_predicate_is_refused() -> None:
    with pytest.raises(DomainError) as info:
        filter_of("sum(id) > 1").apply(orders())
    assert info.value.reason == TRANSFORM_ERROR
    assert "aggregates are not allowed" in info.value.message


def test_predicate_cannot_reach_files() -> None:
    with pytest.raises(DomainError) as info:
        filter_of("id IN (SELECT 1 FROM read_csv('/etc/passwd'))").apply(orders())
    assert info.value.reason == TRANSFORM_ERROR


def test_bind_transform_dispatches_on_kind() -> None:
    spec = step_pb2.TransformSpec(filter=step_pb2.FilterTransform(predicate="id = 3"))
    transform = bind_transform("f", spec, SCHEMA)
    assert transform.step == "f"
    assert transform.apply(orders()).column("id").to_pylist() == [3]
    transform.close()


def test_closed_transform_refuses_work() -> None:
    transform = filter_of("id = 3")
    transform.close()
    transform.close()  # idempotent
    with pytest.raises(DomainError):
        transform.apply(orders())


def test_close_during_apply_interrupts_instead_of_blocking() -> None:
    big = pa.RecordBatch.from_pydict({"x": pa.array(range(3_000_000), pa.int64())})
    transform = filter_of("(x * x) % 7 = 1 AND md5(CAST(x AS VARCHAR)) > 'f'", big.schema)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            transform.apply(big)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    while not transform._lock.locked() and thread.is_alive():
        time.sleep(0.001)
    time.sleep(0.1)  # let the query get going (it takes ~0.5 s)
    started = time.perf_counter()
    transform.close()  # must return at once, not wait for the query
    assert time.perf_counter() - started < 0.05
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], DomainError)
    assert "INTERRUPT" in errors[0].message.upper()


def test_several_statements_are_refused_before_reaching_duckdb() -> None:
    with pytest.raises(DomainError) as info:
        filter_of("true); SELECT (1")
    assert info.value.reason == TRANSFORM_ERROR
    assert "one expression" in info.value.message

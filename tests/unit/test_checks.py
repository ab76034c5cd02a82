"""The check operator: row and dataset checks, actions, quarantine, messages, binding errors."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.errors import DomainError
from datadog_platform.core.tasks import CheckResult
from datadog_platform.executor.checks import (
    CHECK_FAILED,
    FAILED_CHECKS_COLUMN,
    CheckOperator,
    make_check_operator,
)
from datadog_platform.executor.transforms.errors import TRANSFORM_ERROR, TransformError

PARIS = dt.timezone(dt.timedelta(hours=1))

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.large_string()),
        ("status", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("ordered_at", pa.timestamp("us", tz="Europe/Paris")),
        ("day", pa.date32()),
        ("qty", pa.int32()),
    ]
)


def row(**values: Any) -> dict[str, Any]:
    return {name: values.get(name) for name in SCHEMA.names}


ROWS = [
    row(
        id=1,
        name="Zoë",
        status="new",
        amount=Decimal("10.50"),
        ordered_at=dt.datetime(2026, 1, 1, 9, tzinfo=PARIS),
        day=dt.date(2026, 1, 1),
        qty=1,
    ),
    row(id=2, name="日本語", status="paid", amount=None, ordered_at=None, day=None, qty=None),
    row(
        id=None,
        name="Łukasz",
        status="refunded",
        amount=Decimal("-0.01"),
        ordered_at=dt.datetime(2026, 1, 2, 23, 30, tzinfo=dt.UTC),
        day=dt.date(2026, 1, 3),
        qty=0,
    ),
    row(
        id=4,
        name=None,
        status=None,
        amount=Decimal("1000.00"),
        ordered_at=dt.datetime(2025, 12, 31, 23, 59, tzinfo=PARIS),
        day=dt.date(2025, 12, 31),
        qty=5,
    ),
]


def batch(rows: list[dict[str, Any]] = ROWS, schema: pa.Schema = SCHEMA) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def spec(*checks: dict[str, Any], **step: Any) -> step_pb2.CheckTransform:
    message = {"checks": list(checks), **step}
    return json_format.ParseDict(message, step_pb2.CheckTransform())


QUARANTINE_SINK = {"file": {"path": "quarantine.parquet"}}


def run(
    check_spec: step_pb2.CheckTransform,
    *batches: pa.RecordBatch,
    schema: pa.Schema = SCHEMA,
    **kwargs: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], tuple[CheckResult, ...]]:
    """Output rows, quarantined rows and results; fails if finish() raises."""
    op = make_check_operator("quality", check_spec, schema, **kwargs)
    try:
        out, quarantined = [], []
        for b in batches or (batch(schema=schema),):
            good, bad = op.process(b)
            assert good.schema == schema
            out += good.to_pylist()
            if bad is not None:
                assert bad.schema == op.quarantine_schema
                quarantined += bad.to_pylist()
        op.finish()
        return out, quarantined, op.results()
    finally:
        op.close()


def one(check: dict[str, Any], *batches: pa.RecordBatch, **kwargs: Any) -> CheckResult:
    """The result of one WARN check (so finish() does not raise)."""
    _, _, results = run(
        spec({"name": "c", **check}, on_failure="CHECK_ACTION_WARN"), *batches, **kwargs
    )
    (result,) = results
    assert result.action == "WARN"
    assert result.step == "quality"
    assert result.check == "c"
    if "row_count" not in check:
        assert result.passed == (result.failing_rows == 0)
    return result


def failure(
    check_spec: step_pb2.CheckTransform, *batches: pa.RecordBatch
) -> tuple[DomainError, CheckOperator]:
    op = make_check_operator("quality", check_spec, SCHEMA)
    try:
        for b in batches or (batch(),):
            op.process(b)
        with pytest.raises(DomainError) as info:
            op.finish()
        return info.value, op
    finally:
        op.close()


def bind_error(check_spec: step_pb2.CheckTransform, schema: pa.Schema = SCHEMA) -> TransformError:
    with pytest.raises(TransformError) as info:
        make_check_operator("quality", check_spec, schema)
    assert info.value.reason == TRANSFORM_ERROR
    assert info.value.message.startswith("step 'quality': ")
    return info.value


# --- row checks -----------------------------------------------------------------------------


def test_not_null_counts_rows_and_names_the_column() -> None:
    result = one({"not_null": {"columns": ["id"]}})
    assert (result.failing_rows, result.message) == (1, "1 NULL in id, e.g. row 3")
    assert one({"not_null": {"columns": ["status"]}}).passed is False
    assert one({"not_null": {"columns": ["day"]}}).message == "1 NULL in day, e.g. row 2"
    passed = one({"not_null": {"columns": ["ordered_at"]}}, batch(ROWS[:1]))
    assert (passed.passed, passed.message) == (True, "no NULLs in ordered_at")


def test_not_null_over_several_columns_counts_rows_once() -> None:
    result = one({"not_null": {"columns": ["id", "name", "amount"]}})
    # Rows 2 (amount), 3 (id), 4 (name): three rows, three NULLs.
    assert result.failing_rows == 3
    assert result.message == "3 rows with NULLs (id: 1, name: 1, amount: 1), e.g. row 2 (amount)"
    both = one({"not_null": {"columns": ["amount", "qty"]}})
    assert both.failing_rows == 1
    assert both.message.startswith("1 row with NULLs (amount: 1, qty: 1)")


def test_accepted_values_unicode_and_null_passes() -> None:
    result = one({"accepted_values": {"column": "name", "values": ["Zoë", "日本語", "Łukasz"]}})
    assert result.passed  # the NULL name passes
    result = one({"accepted_values": {"column": "status", "values": ["new", "paid", None]}})
    assert result.failing_rows == 1
    assert (
        result.message == "1 value of status not in ['new', 'paid', NULL], e.g. 'refunded' (row 3)"
    )


def test_accepted_values_of_numbers_decimals_dates_and_booleans() -> None:
    assert one({"accepted_values": {"column": "id", "values": [1, 2, 4]}}).passed
    assert one({"accepted_values": {"column": "qty", "values": [0, 1]}}).failing_rows == 1
    decimals = one({"accepted_values": {"column": "amount", "values": [10.5, "-0.01"]}})
    assert (decimals.failing_rows, decimals.message.split(", e.g. ")[1]) == (1, "1000.00 (row 4)")
    days = one({"accepted_values": {"column": "day", "values": ["2026-01-01", "2026-01-03"]}})
    assert days.failing_rows == 1
    assert "2025-12-31 (row 4)" in days.message
    flags = pa.schema([("flag", pa.bool_())])
    flag_batch = pa.RecordBatch.from_pylist(
        [{"flag": True}, {"flag": None}, {"flag": False}], schema=flags
    )
    flag = one({"accepted_values": {"column": "flag", "values": [True]}}, flag_batch, schema=flags)
    assert flag.failing_rows == 1


def test_accepted_values_that_cannot_be_in_the_column_are_bind_errors() -> None:
    error = bind_error(spec({"name": "c", "accepted_values": {"column": "id", "values": [1.5]}}))
    assert "check 'c' (accepted_values)" in error.message
    assert "not an integer" in error.message
    assert error.metadata["field"] == "check.checks[0].accepted_values.values[0]"
    error = bind_error(
        spec({"name": "c", "accepted_values": {"column": "amount", "values": [0.001]}})
    )
    assert "decimal128(12, 2)" in error.message
    error = bind_error(spec({"name": "c", "accepted_values": {"column": "status", "values": [1]}}))
    assert "cannot be compared with a string column" in error.message
    bind_error(spec({"name": "c", "accepted_values": {"column": "day", "values": ["soon"]}}))


def test_range_on_decimals_with_number_and_string_bounds() -> None:
    result = one({"range": {"column": "amount", "min": 0, "max": "999.99"}})
    assert result.failing_rows == 2  # -0.01 and 1000.00; NULL passes
    assert result.message == "2 values of amount not in [0, 999.99], e.g. -0.01 (row 3)"
    assert one({"range": {"column": "amount", "min": -0.01}}).passed
    only_max = one({"range": {"column": "amount", "max": 0.005}})
    assert only_max.message.startswith("2 values of amount not <= 0.005")
    # Integers against a fractional bound compare as numbers.
    assert one({"range": {"column": "qty", "min": 0.5}}).failing_rows == 1


def test_range_on_timestamps_with_time_zones_and_dates() -> None:
    # With an offset, an instant; without, a local time in the column's zone (Paris).
    instant = one({"range": {"column": "ordered_at", "min": "2026-01-01T00:00:00+01:00"}})
    assert instant.failing_rows == 1
    assert "2025-12-31T23:59:00+01:00 (row 4)" in instant.message
    local = one({"range": {"column": "ordered_at", "max": "2026-01-03 00:30"}})
    assert local.failing_rows == 0  # 23:30 UTC on the 2nd is 00:30 in Paris
    local = one({"range": {"column": "ordered_at", "max": "2026-01-03 00:29"}})
    assert local.failing_rows == 1
    days = one({"range": {"column": "day", "min": "2026-01-01", "max": "2026-01-02"}})
    assert days.failing_rows == 2


def test_range_bounds_that_do_not_fit_the_column_are_bind_errors() -> None:
    error = bind_error(spec({"name": "r", "range": {"column": "name", "min": 3}}))
    assert "column 'name'" in error.message
    assert "large_string" in error.message
    assert error.metadata["field"] == "check.checks[0].range.min"
    error = bind_error(spec({"name": "r", "range": {"column": "day", "max": "yesterday"}}))
    assert "'yesterday'" in error.message


def test_regex_is_re2_over_unicode_and_null_passes() -> None:
    letters = one({"regex": {"column": "name", "pattern": r"^\p{L}+$"}})
    assert letters.passed
    ascii_only = one({"regex": {"column": "name", "pattern": "^[A-Za-z]+$"}})
    assert ascii_only.failing_rows == 3
    assert ascii_only.message == "3 values of name not matching '^[A-Za-z]+$', e.g. 'Zoë' (row 1)"
    views = pa.schema([("s", pa.string_view())])
    view_batch = pa.RecordBatch.from_pylist([{"s": "ab"}, {"s": "a1"}], schema=views)
    assert (
        one({"regex": {"column": "s", "pattern": r"\d"}}, view_batch, schema=views).failing_rows
        == 1
    )


def test_regex_errors_at_bind_time() -> None:
    error = bind_error(spec({"name": "re", "regex": {"column": "qty", "pattern": "x"}}))
    assert "column 'qty' is int32, not a string" in error.message
    # Lookahead: valid for Python's re, not for RE2.
    error = bind_error(spec({"name": "re", "regex": {"column": "name", "pattern": "a(?=b)"}}))
    assert "not valid RE2" in error.message
    assert error.metadata["field"] == "check.checks[0].regex.pattern"


def test_expression_false_fails_and_null_passes() -> None:
    result = one({"expression": {"predicate": "qty > 0"}})
    assert result.failing_rows == 1  # qty NULL passes, 0 fails
    assert result.message == "1 row where 'qty > 0' is false, e.g. row 3 (qty=0)"
    decimals = one({"expression": {"predicate": "amount BETWEEN 0 AND 999.99"}})
    assert decimals.failing_rows == 2
    assert "(amount=-0.01)" in decimals.message
    zone = one({"expression": {"predicate": "ordered_at >= TIMESTAMPTZ '2026-01-01 00:00:00+01'"}})
    assert zone.failing_rows == 1
    unicode = one({"expression": {"predicate": "length(name) <= 3"}})
    assert unicode.failing_rows == 1
    assert "name='Łukasz'" in unicode.message


def test_several_expressions_are_judged_together_and_separately() -> None:
    _, _, results = run(
        spec(
            {"name": "a", "expression": {"predicate": "id < 4"}},
            {"name": "b", "not_null": {"columns": ["name"]}},
            {"name": "c", "expression": {"predicate": "status <> 'paid'"}},
            on_failure="CHECK_ACTION_WARN",
        )
    )
    assert [(r.check, r.failing_rows) for r in results] == [("a", 1), ("b", 1), ("c", 1)]


def test_expression_errors_name_the_step_check_and_column() -> None:
    error = bind_error(spec({"name": "pos", "expression": {"predicate": "quantity > 0"}}))
    assert "check 'pos' (expression)" in error.message
    assert "quantity" in error.message
    assert error.metadata["field"] == "check.checks[0].expression"
    error = bind_error(spec({"name": "agg", "expression": {"predicate": "count(*) > 0"}}))
    assert "aggregate" in error.message.lower()
    error = bind_error(spec({"name": "two", "expression": {"predicate": "true; SELECT 1"}}))
    assert "check 'two'" in error.message


def test_expression_failing_on_the_data_names_its_check() -> None:
    op = make_check_operator(
        "quality",
        spec(
            {"name": "fine", "expression": {"predicate": "id > 0"}},
            {"name": "boom", "expression": {"predicate": "CAST(status AS INTEGER) > 0"}},
        ),
        SCHEMA,
    )
    try:
        with pytest.raises(TransformError) as info:
            op.process(batch())
    finally:
        op.close()
    assert "check 'boom' (expression) failed" in info.value.message
    assert "Conversion Error" in info.value.message


# --- actions and quarantine -------------------------------------------------------------------


def test_quarantined_rows_carry_every_check_they_failed() -> None:
    out, quarantined, results = run(
        spec(
            {"name": "id_present", "not_null": {"columns": ["id"]}},
            {"name": "known_status", "accepted_values": {"column": "status", "values": ["new"]}},
            {"name": "positive", "range": {"column": "amount", "min": 0}},
            {
                "name": "letters",
                "regex": {"column": "name", "pattern": "^[A-Z]"},
                "on_failure": "CHECK_ACTION_WARN",
            },
            {"name": "qty", "expression": {"predicate": "qty > 0"}},
            on_failure="CHECK_ACTION_QUARANTINE",
            quarantine=QUARANTINE_SINK,
        )
    )
    assert [r["id"] for r in out] == [1, 4]
    assert [r[FAILED_CHECKS_COLUMN] for r in quarantined] == [
        ["known_status", "letters"],
        ["id_present", "known_status", "positive", "letters", "qty"],
    ]
    assert [r["name"] for r in quarantined] == ["日本語", "Łukasz"]
    assert quarantined[1]["amount"] == Decimal("-0.01")
    # Row 1 ('Zoë') failed the WARN check only: it went on.
    assert {r.check: (r.action, r.failing_rows) for r in results} == {
        "id_present": ("QUARANTINE", 1),
        "known_status": ("QUARANTINE", 2),
        "positive": ("QUARANTINE", 1),
        "letters": ("WARN", 2),
        "qty": ("QUARANTINE", 1),
    }


def test_operator_declares_its_quarantine_sink_and_schema() -> None:
    op = make_check_operator(
        "quality",
        spec(
            {"name": "a", "not_null": {"columns": ["id"]}, "on_failure": "CHECK_ACTION_QUARANTINE"},
            quarantine=QUARANTINE_SINK,
        ),
        SCHEMA,
    )
    try:
        assert op.quarantine is not None
        assert op.quarantine.file.path == "quarantine.parquet"
        assert op.output_schema == SCHEMA
        assert op.quarantine_schema is not None
        assert op.quarantine_schema.names == [*SCHEMA.names, FAILED_CHECKS_COLUMN]
        assert op.quarantine_schema.field(FAILED_CHECKS_COLUMN).type == pa.list_(pa.string())
        clean = batch(ROWS[:2])
        out, bad = op.process(clean)
        assert out is clean
        assert bad is None
    finally:
        op.close()
    warn_only = make_check_operator(
        "quality", spec({"name": "a", "not_null": {"columns": ["id"]}}), SCHEMA
    )
    try:
        assert warn_only.quarantine is None
        assert warn_only.quarantine_schema is None
    finally:
        warn_only.close()


def test_warn_counts_and_goes_on() -> None:
    out, quarantined, results = run(
        spec(
            {"name": "id_present", "not_null": {"columns": ["id"]}}, on_failure="CHECK_ACTION_WARN"
        )
    )
    assert len(out) == 4
    assert quarantined == []
    assert results == (
        CheckResult("quality", "id_present", False, 1, "1 NULL in id, e.g. row 3", "WARN"),
    )


def test_fail_raises_at_finish_with_counts_and_samples_and_keeps_results() -> None:
    check_spec = spec(
        {"name": "id_present", "not_null": {"columns": ["id"]}},
        {"name": "positive", "range": {"column": "amount", "min": 0}},
        {
            "name": "status_ok",
            "accepted_values": {"column": "status", "values": ["new"]},
            "on_failure": "CHECK_ACTION_WARN",
        },
        {"name": "enough", "row_count": {"min": 1}},
    )
    op = make_check_operator("quality", check_spec, SCHEMA)
    try:
        out, bad = op.process(batch())
        assert out.num_rows == 4
        assert bad is None
        # Before finish: the row checks so far.
        assert [r.check for r in op.results()] == ["id_present", "positive", "status_ok"]
        with pytest.raises(DomainError) as info:
            op.finish()
        results = op.results()
    finally:
        op.close()
    error = info.value
    assert error.reason == CHECK_FAILED
    assert error.code.name == "FAILED_PRECONDITION"
    assert error.metadata == {"step": "quality", "checks": "id_present,positive"}
    assert error.message == (
        "step 'quality': 2 checks failed: 'id_present': 1 NULL in id, e.g. row 3; "
        "'positive': 1 value of amount not >= 0, e.g. -0.01 (row 3)"
    )
    assert [(r.check, r.passed, r.action) for r in results] == [
        ("id_present", False, "FAIL"),
        ("positive", False, "FAIL"),
        ("status_ok", False, "WARN"),
        ("enough", True, "FAIL"),
    ]


def test_a_check_action_overrides_the_steps() -> None:
    out, quarantined, results = run(
        spec(
            {"name": "w", "not_null": {"columns": ["id"]}, "on_failure": "CHECK_ACTION_WARN"},
            {"name": "q", "not_null": {"columns": ["name"]}},
            {"name": "f", "not_null": {"columns": ["day"]}, "on_failure": "CHECK_ACTION_WARN"},
            on_failure="CHECK_ACTION_QUARANTINE",
            quarantine=QUARANTINE_SINK,
        )
    )
    assert [r.action for r in results] == ["WARN", "QUARANTINE", "WARN"]
    assert [r["id"] for r in quarantined] == [4]
    assert quarantined[0][FAILED_CHECKS_COLUMN] == ["q"]
    assert len(out) == 3
    # Unset everywhere: FAIL.
    error, _ = failure(spec({"name": "x", "not_null": {"columns": ["id"]}}))
    assert error.reason == CHECK_FAILED


def test_failed_quarantine_and_fail_together_still_fail() -> None:
    error, _ = failure(
        spec(
            {"name": "q", "not_null": {"columns": ["id"]}, "on_failure": "CHECK_ACTION_QUARANTINE"},
            {"name": "f", "expression": {"predicate": "qty > 0"}},
            quarantine=QUARANTINE_SINK,
        )
    )
    assert error.metadata["checks"] == "f"


# --- dataset checks ---------------------------------------------------------------------------


def test_unique_across_batches_exact_and_null_keys_ignored(tmp_path: Path) -> None:
    first = batch([row(id=1, name="a"), row(id=2, name="b"), row(id=None, name="c")])
    second = batch([row(id=2, name="b"), row(id=None, name="c"), row(id=3, name="Zoë")])
    third = batch([row(id=2, name="b"), row(id=1, name="z")])
    result = one({"unique": {"columns": ["id"]}}, first, second, third, spill_dir=str(tmp_path))
    # id 2 three times, id 1 twice: 3 rows beyond the first of their key.
    assert result.failing_rows == 3
    assert result.message == "3 duplicate rows of (id) over 2 keys, e.g. 2 appears 3 times"
    pairs = one({"unique": {"columns": ["id", "name"]}}, first, second, third)
    assert pairs.failing_rows == 2
    assert (
        pairs.message == "2 duplicate rows of (id, name) over 1 key, e.g. (2, 'b') appears 3 times"
    )
    assert one({"unique": {"columns": ["name"]}}, first, third).passed is False
    # The spill directory of the operator is gone once it is closed.
    assert os.listdir(tmp_path) == []


def test_unique_over_decimals_timestamps_and_unicode() -> None:
    rows = [
        row(
            id=1,
            amount=Decimal("1.10"),
            ordered_at=dt.datetime(2026, 1, 1, 10, tzinfo=PARIS),
            name="Zoë",
        ),
        row(
            id=2,
            amount=Decimal("1.1"),
            ordered_at=dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC),
            name="Zoe",
        ),
    ]
    assert one({"unique": {"columns": ["amount"]}}, batch(rows)).failing_rows == 1
    # The same instant written in two zones.
    instant = one({"unique": {"columns": ["ordered_at"]}}, batch(rows))
    assert instant.failing_rows == 1
    assert one({"unique": {"columns": ["name"]}}, batch(rows)).passed
    passed = one({"unique": {"columns": ["id"]}}, batch(rows))
    assert passed.message == "(id) unique"


def test_row_count_bounds() -> None:
    two = batch(ROWS[:2])
    assert one({"row_count": {"min": 2, "max": 2}}, two, two).message == (
        "4 rows, more than the maximum 2"
    )
    assert one({"row_count": {"min": 5}}, two, two).message == "4 rows, fewer than the minimum 5"
    passed = one({"row_count": {"min": 1, "max": 4}}, two, two)
    assert (passed.passed, passed.failing_rows, passed.message) == (
        True,
        0,
        "4 rows (min 1, max 4)",
    )
    assert one({"row_count": {"max": 0}}, batch([])).passed


def test_empty_input_passes_row_checks_and_fails_a_minimum() -> None:
    empty = batch([])
    _, _, results = run(
        spec(
            {"name": "nn", "not_null": {"columns": ["id"]}},
            {"name": "av", "accepted_values": {"column": "status", "values": ["x"]}},
            {"name": "rg", "range": {"column": "amount", "min": 0}},
            {"name": "re", "regex": {"column": "name", "pattern": "x"}},
            {"name": "ex", "expression": {"predicate": "qty > 0"}},
            {"name": "un", "unique": {"columns": ["id"]}},
            {"name": "rc", "row_count": {"min": 1}, "on_failure": "CHECK_ACTION_WARN"},
        ),
        empty,
        empty,
    )
    assert [(r.check, r.passed) for r in results] == [
        ("nn", True),
        ("av", True),
        ("rg", True),
        ("re", True),
        ("ex", True),
        ("un", True),
        ("rc", False),
    ]
    assert results[-1].message == "0 rows, fewer than the minimum 1"


# --- binding ----------------------------------------------------------------------------------


def test_unknown_columns_name_the_step_check_and_column() -> None:
    error = bind_error(spec({"name": "ids", "not_null": {"columns": ["id", "customer_id"]}}))
    assert error.message.startswith(
        "step 'quality': check 'ids' (not_null): column 'customer_id' not found"
    )
    assert "the input has: id, name, status" in error.message
    assert error.metadata == {"step": "quality", "field": "check.checks[0].not_null.columns[1]"}
    for check in (
        {"unique": {"columns": ["nope"]}},
        {"accepted_values": {"column": "nope", "values": [1]}},
        {"range": {"column": "nope", "min": 1}},
        {"regex": {"column": "nope", "pattern": "x"}},
    ):
        assert "column 'nope' not found" in bind_error(spec({"name": "c", **check})).message


def test_rules_the_scheduler_also_checks_are_enforced() -> None:
    assert (
        "no quarantine sink"
        in bind_error(
            spec(
                {"name": "a", "not_null": {"columns": ["id"]}}, on_failure="CHECK_ACTION_QUARANTINE"
            )
        ).message
    )
    error = bind_error(
        spec(
            {"name": "u", "unique": {"columns": ["id"]}},
            on_failure="CHECK_ACTION_QUARANTINE",
            quarantine=QUARANTINE_SINK,
        )
    )
    assert "check 'u' (unique) judges the rows as a whole and cannot QUARANTINE" in error.message
    assert (
        "duplicate check name 'a'"
        in bind_error(
            spec(
                {"name": "a", "not_null": {"columns": ["id"]}},
                {"name": "a", "row_count": {"min": 1}},
            )
        ).message
    )
    assert "at least one check" in bind_error(spec()).message
    clash = SCHEMA.append(pa.field(FAILED_CHECKS_COLUMN, pa.string()))
    error = bind_error(
        spec(
            {"name": "a", "not_null": {"columns": ["id"]}, "on_failure": "CHECK_ACTION_QUARANTINE"},
            quarantine=QUARANTINE_SINK,
        ),
        clash,
    )
    assert FAILED_CHECKS_COLUMN in error.message


# --- cancellation -----------------------------------------------------------------------------


def test_close_interrupts_an_expression_in_progress(tmp_path: Path) -> None:
    schema = pa.schema([("n", pa.int64())])
    slow = "(SELECT count(*) FROM range(n) r(x) WHERE x % 7 = 3) >= 0"
    op = make_check_operator(
        "quality",
        spec({"name": "slow", "expression": {"predicate": slow}}),
        schema,
        spill_dir=str(tmp_path),
    )
    errors: list[BaseException] = []

    def work() -> None:
        try:
            op.process(pa.RecordBatch.from_pylist([{"n": 10**11}], schema=schema))
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    time.sleep(0.3)
    started = time.monotonic()
    op.close()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert time.monotonic() - started < 1
    (error,) = errors
    assert isinstance(error, DomainError)
    assert error.reason == "CANCELLED"
    assert os.listdir(tmp_path) == []  # the worker released the spill directory
    with pytest.raises(DomainError, match="cancelled"):
        op.process(pa.RecordBatch.from_pylist([{"n": 1}], schema=schema))


# --- streaming equals whole ---------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(
    values=st.lists(
        st.tuples(st.none() | st.integers(-3, 3), st.sampled_from([None, "a", "é", "b"])),
        max_size=40,
    ),
    cuts=st.lists(st.integers(0, 40), max_size=4),
)
def test_results_do_not_depend_on_batch_boundaries(
    values: list[tuple[int | None, str | None]], cuts: list[int]
) -> None:
    schema = pa.schema([("k", pa.int64()), ("s", pa.string())])
    table = pa.RecordBatch.from_pylist([{"k": k, "s": s} for k, s in values], schema=schema)
    check_spec = spec(
        {"name": "nn", "not_null": {"columns": ["k", "s"]}, "on_failure": "CHECK_ACTION_WARN"},
        {"name": "rg", "range": {"column": "k", "min": -2, "max": 2}},
        {
            "name": "av",
            "accepted_values": {"column": "s", "values": ["a", "é"]},
            "on_failure": "CHECK_ACTION_WARN",
        },
        {"name": "ex", "expression": {"predicate": "k <> 0"}},
        {"name": "un", "unique": {"columns": ["k", "s"]}, "on_failure": "CHECK_ACTION_WARN"},
        on_failure="CHECK_ACTION_QUARANTINE",
        quarantine=QUARANTINE_SINK,
    )
    bounds = sorted({0, table.num_rows, *(min(c, table.num_rows) for c in cuts)})
    pieces = [table.slice(a, b - a) for a, b in itertools.pairwise(bounds)] or [table]
    whole = run(check_spec, table, schema=schema)
    streamed = run(check_spec, *pieces, schema=schema)
    assert [r.failing_rows for r in streamed[2]] == [r.failing_rows for r in whole[2]]
    assert streamed[:2] == whole[:2]
    # Reference: the quarantined rows are those failing rg or ex.
    failing = [
        r for r in whole[0] + whole[1] if r["k"] is not None and (abs(r["k"]) > 2 or r["k"] == 0)
    ]
    assert len(whole[1]) == len(failing)

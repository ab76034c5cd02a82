"""The inline source's rows → Arrow: column order, type inference, nulls, nesting, unicode."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest
from google.protobuf import json_format, struct_pb2

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.executor.builtins import (
    INVALID_INLINE_ROWS,
    check_inline,
    inline_batch,
    is_discard,
    is_inline,
)


def inline(rows: list[dict[str, Any]]) -> step_pb2.InlineSource:
    """Rows as a pipeline file gives them (the JSON mapping of the spec)."""
    return json_format.ParseDict({"rows": rows}, step_pb2.InlineSource())


def batch_of(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return inline_batch(inline(rows))


def test_one_row_of_each_scalar_kind() -> None:
    batch = batch_of([{"id": 1, "price": 2.5, "name": "a", "ok": True}])
    assert batch.schema == pa.schema(
        [("id", pa.int64()), ("name", pa.string()), ("ok", pa.bool_()), ("price", pa.float64())]
    )
    assert batch.to_pylist() == [{"id": 1, "name": "a", "ok": True, "price": 2.5}]


def test_columns_are_the_union_of_keys_in_name_order_and_missing_keys_are_null() -> None:
    # A protobuf Struct is a map: the spec's key order is gone, name order is stable.
    batch = batch_of([{"b": 1, "a": "x"}, {"c": True}, {"a": "y", "b": 3}])
    assert batch.schema.names == ["a", "b", "c"]
    assert batch.to_pylist() == [
        {"a": "x", "b": 1, "c": None},
        {"a": None, "b": None, "c": True},
        {"a": "y", "b": 3, "c": None},
    ]


def test_same_columns_whatever_the_key_order_of_each_row() -> None:
    first = batch_of([{"z": 1, "m": 2, "a": 3}])
    again = inline_batch(
        step_pb2.InlineSource.FromString(inline([{"a": 3, "m": 2, "z": 1}]).SerializeToString())
    )
    assert first.schema.names == again.schema.names == ["a", "m", "z"]
    assert first.equals(again)


@pytest.mark.parametrize(
    ("values", "kind", "expected"),
    [
        ([1, 2, -3], pa.int64(), [1, 2, -3]),
        ([1, 2.0], pa.int64(), [1, 2]),  # JSON has one number type: 2.0 is integral
        ([1, 2.5], pa.float64(), [1.0, 2.5]),
        ([2**62, -(2**63)], pa.int64(), [2**62, -(2**63)]),
        ([2.0**63], pa.float64(), [2.0**63]),  # beyond int64
        ([1e300, 1], pa.float64(), [1e300, 1.0]),
        ([True, False], pa.bool_(), [True, False]),
        (["a", ""], pa.string(), ["a", ""]),
    ],
)
def test_type_of_a_column(values: list[Any], kind: pa.DataType, expected: list[Any]) -> None:
    batch = batch_of([{"v": v} for v in values])
    assert batch.schema.field("v").type == kind
    assert batch.column(0).to_pylist() == expected


def test_nulls_do_not_change_the_type() -> None:
    batch = batch_of([{"n": None, "s": "a"}, {"n": 4, "s": None}, {"n": None}])
    assert batch.schema.field("n").type == pa.int64()
    assert batch.schema.field("s").type == pa.string()
    assert batch.column("n").to_pylist() == [None, 4, None]
    assert batch.column("s").to_pylist() == ["a", None, None]


def test_a_column_of_only_nulls_has_the_null_type() -> None:
    batch = batch_of([{"id": 1, "x": None}, {"id": 2}])
    assert batch.schema.field("x").type == pa.null()
    assert batch.column("x").null_count == 2


def test_objects_and_lists_become_compact_json_strings() -> None:
    batch = batch_of(
        [
            {"meta": {"rank": 1, "tags": ["a", 2.5, None, True], "b": {"c": "é"}}},
            {"meta": [1, 2]},
            {"meta": None},
        ]
    )
    assert batch.schema.field("meta").type == pa.string()
    texts = batch.column("meta").to_pylist()
    assert texts[0] == '{"b":{"c":"é"},"rank":1,"tags":["a",2.5,null,true]}'
    assert texts[1] == "[1,2]"
    assert texts[2] is None
    assert json.loads(texts[0])["tags"] == ["a", 2.5, None, True]


def test_unicode_survives_as_is() -> None:
    rows = [{"city": "Zürich", "greeting": "こんにちは 👋", "nested": {"naïve": "café"}}]
    batch = batch_of(rows)
    assert batch.column("city").to_pylist() == ["Zürich"]
    assert batch.column("greeting").to_pylist() == ["こんにちは 👋"]
    assert batch.column("nested").to_pylist() == ['{"naïve":"café"}']


def test_no_rows_is_an_empty_batch_without_columns() -> None:
    batch = inline_batch(step_pb2.InlineSource())
    assert batch.num_rows == 0
    assert batch.num_columns == 0


def test_rows_without_keys_count_as_rows() -> None:
    batch = batch_of([{}, {}])
    assert (batch.num_rows, batch.num_columns) == (2, 0)


def test_empty_object_rows_next_to_full_ones_are_all_nulls() -> None:
    batch = batch_of([{}, {"a": 1}])
    assert batch.to_pylist() == [{"a": None}, {"a": 1}]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"v": 1}, {"v": None}, {"v": "one"}],
            "column 'v' mixes number (row 0) and string (row 2) values",
        ),
        ([{"v": True}, {"v": 0}], "column 'v' mixes boolean (row 0) and number (row 1) values"),
        ([{"v": "x"}, {"v": {"a": 1}}], "column 'v' mixes string (row 0) and object/list (row 1)"),
        (
            [{"v": {"a": 1}}, {"v": [1]}, {"v": 2}],
            "column 'v' mixes object/list (row 0) and number (row 2) values",
        ),
    ],
)
def test_a_column_mixing_kinds_is_refused(rows: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(DomainError) as info:
        batch_of(rows)
    assert info.value.code == ErrorCode.INVALID_ARGUMENT
    assert info.value.reason == INVALID_INLINE_ROWS
    assert message in info.value.message
    assert info.value.metadata == {"column": "v"}
    assert message in check_inline(inline(rows))


def test_objects_and_lists_may_share_a_column() -> None:
    batch = batch_of([{"v": {"a": 1}}, {"v": [1]}])
    assert batch.column("v").to_pylist() == ['{"a":1}', "[1]"]


def test_check_inline_is_empty_for_good_rows() -> None:
    assert check_inline(inline([{"a": 1}])) == ""


def test_rows_built_in_python_with_struct_update() -> None:
    row = struct_pb2.Struct()
    row.update({"id": 7, "name": "Ada"})
    batch = inline_batch(step_pb2.InlineSource(rows=[row]))
    assert batch.to_pylist() == [{"id": 7, "name": "Ada"}]


def test_builtin_kinds_are_recognised() -> None:
    assert is_inline(step_pb2.SourceSpec(inline=step_pb2.InlineSource()))
    assert not is_inline(step_pb2.SourceSpec(file=step_pb2.FileSource(path="a.csv")))
    assert is_discard(step_pb2.SinkSpec(discard=step_pb2.DiscardSink()))
    assert not is_discard(step_pb2.SinkSpec(file=step_pb2.FileSink(path="a.csv")))

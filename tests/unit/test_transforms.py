"""The transform catalogue: semantics of every kind over Arrow tables in a sandboxed
DuckDB, bind-time errors naming step/column/expression, the registry and its docs."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2 as pb
from datadog_platform.api.executor.v1 import executor_service_pb2_grpc
from datadog_platform.core.arrow_types import parse_arrow_type
from datadog_platform.core.expressions import sandboxed_connection
from datadog_platform.executor.transforms import TRANSFORM_ERROR, TransformError
from datadog_platform.executor.transforms.registry import (
    TRANSFORM_KINDS,
    SqlContext,
    transforms_markdown,
)
from datadog_platform.executor.transforms.rowwise import CastOperator
from datadog_platform.executor.transforms.sql import quote

UTC = dt.UTC
PARIS = dt.timezone(dt.timedelta(hours=1))


def spec(kind: str, params: dict[str, Any]) -> Any:
    """The typed message of ``kind`` from its JSON form (as in a pipeline file)."""
    message = json_format.ParseDict({kind: params}, step_pb2.TransformSpec())
    return getattr(message, kind)


def compile_sql(kind: str, params: dict[str, Any], *tables: pa.Table, step: str = "t") -> str:
    names = tuple(quote(f"in{i}") for i in range(len(tables)))
    ctx = SqlContext(step, spec(kind, params), names, tuple(t.schema for t in tables))
    compiler = TRANSFORM_KINDS[kind].compile_sql
    assert compiler is not None
    return compiler(ctx)


def run(
    kind: str, params: dict[str, Any], *tables: pa.Table, names: tuple[str, ...] = ()
) -> pa.Table:
    """Compile ``kind`` and run it over ``tables`` in a sandboxed DuckDB connection."""
    names = names or tuple(f"in{i}" for i in range(len(tables)))
    ctx = SqlContext(
        "t", spec(kind, params), tuple(map(quote, names)), tuple(t.schema for t in tables)
    )
    compiler = TRANSFORM_KINDS[kind].compile_sql
    assert compiler is not None
    sql = compiler(ctx)
    con = sandboxed_connection()
    try:
        for name, table in zip(names, tables, strict=True):
            con.register(name, table)
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


def error(kind: str, params: dict[str, Any], *tables: pa.Table, step: str = "t") -> TransformError:
    with pytest.raises(TransformError) as info:
        compile_sql(kind, params, *tables, step=step)
    assert info.value.reason == TRANSFORM_ERROR
    assert info.value.message.startswith(f"step {step!r}: ")
    return info.value


ORDERS = pa.table(
    {
        "id": pa.array([1, 2, 3, 4], pa.int32()),
        "name": pa.array(["Zoë", None, "東京", "O'Brien"], pa.large_string()),
        "amount": pa.array(
            [Decimal("100.001"), Decimal("-5.500"), None, Decimal("0.000")], pa.decimal128(12, 3)
        ),
        "ordered_at": pa.array(
            [
                dt.datetime(2024, 1, 1, 0, 30, tzinfo=PARIS),
                dt.datetime(2024, 1, 1, 0, 30, tzinfo=UTC),
                None,
                dt.datetime(2023, 12, 31, 23, 0, tzinfo=UTC),
            ],
            pa.timestamp("us", tz="Europe/Paris"),
        ),
        "flag": pa.array([True, None, False, True]),
    }
)
EMPTY = ORDERS.schema.empty_table()


# --- registry, docs, RPC ----------------------------------------------------------------------


def test_every_transform_spec_kind_is_registered_with_its_real_fields() -> None:
    oneof = step_pb2.TransformSpec.DESCRIPTOR.oneofs_by_name["kind"]
    assert sorted(TRANSFORM_KINDS) == sorted(f.name for f in oneof.fields)
    assert len(TRANSFORM_KINDS) == 16
    for field in oneof.fields:
        kind = TRANSFORM_KINDS[field.name]
        real = [f.name for f in field.message_type.fields]
        assert [p.name for p in kind.parameters] == real, kind.name
        for param in kind.parameters:
            assert param.description, f"{kind.name}.{param.name} has no description"
        assert (kind.compile_sql is None) != (kind.make_operator is None), kind.name
        assert kind.min_inputs >= 1
        assert kind.max_inputs == 0 or kind.max_inputs >= kind.min_inputs


def test_parameter_types_are_spelled_from_the_descriptors() -> None:
    params = {p.name: p for p in TRANSFORM_KINDS["rename"].parameters}
    assert params["columns"].type == "map<string, string>"
    join = {p.name: p for p in TRANSFORM_KINDS["join"].parameters}
    assert join["on"].type == "repeated JoinKey"
    assert join["on"].required
    assert join["type"].type == "JoinType"
    assert "`JOIN_TYPE_ANTI`" in join["type"].description
    assert {p.name: p.type for p in TRANSFORM_KINDS["fill_null"].parameters} == {
        "values": "map<string, Value>"
    }
    assert not TRANSFORM_KINDS["filter"].parameters[0].type.startswith("repeated")


def test_streaming_flags_follow_the_engine_design() -> None:
    streaming = {name for name, kind in TRANSFORM_KINDS.items() if kind.streaming}
    assert {"select", "drop", "rename", "cast", "filter", "derive", "fill_null", "drop_null"} <= (
        streaming
    )
    assert {"limit", "check"} <= streaming
    assert not {"sort", "dedupe", "aggregate", "join", "sql"} & streaming


def test_every_documented_example_is_a_valid_step_of_its_kind() -> None:
    for name, kind in TRANSFORM_KINDS.items():
        document = yaml.safe_load(f"name: s\n{kind.example}")
        step = json_format.ParseDict(document, step_pb2.Step())
        assert step.transform.WhichOneof("kind") == name


def test_docs_transforms_md_is_up_to_date() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "transforms.md"
    assert docs.read_text() == transforms_markdown(), (
        "docs/transforms.md is out of date: run `make docs` (scripts/gen-docs)"
    )


def test_the_check_kind_is_imported_lazily() -> None:
    assert TRANSFORM_KINDS["check"].make_operator is not None
    # Importing the catalogue does not import executor/checks.py (written separately).
    code = (
        "import sys; import datadog_platform.executor.transforms.registry; "
        "print('datadog_platform.executor.checks' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_list_transform_types_rpc_describes_the_registry(executor_address: str) -> None:
    async with grpc.aio.insecure_channel(executor_address) as channel:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
        response = await stub.ListTransformTypes(pb.ListTransformTypesRequest(), timeout=5)
    types = {t.name: t for t in response.transform_types}
    assert sorted(types) == sorted(TRANSFORM_KINDS)
    join = types["join"]
    assert (join.min_inputs, join.max_inputs, join.streaming) == (2, 2, False)
    assert [p.name for p in join.parameters] == ["type", "on", "left_suffix", "right_suffix"]
    assert types["union"].max_inputs == 0
    assert types["filter"].parameters[0].required


# --- select, drop, rename ---------------------------------------------------------------------


def test_select_keeps_columns_in_the_given_order() -> None:
    out = run("select", {"columns": ["name", "id"]}, ORDERS)
    assert out.column_names == ["name", "id"]
    assert out.column("name").to_pylist() == ["Zoë", None, "東京", "O'Brien"]
    assert run("select", {"columns": ["id"]}, EMPTY).num_rows == 0


def test_select_quotes_identifiers() -> None:
    table = pa.table({'we"ird; DROP': [1], "é t": [2]})
    out = run("select", {"columns": ["é t", 'we"ird; DROP']}, table)
    assert rows(out) == [{"é t": 2, 'we"ird; DROP': 1}]


def test_select_errors_name_step_and_column() -> None:
    e = error("select", {"columns": ["id", "nope"]}, ORDERS, step="pick")
    assert e.field == "select.columns[1]"
    assert e.step == "pick"
    assert "select column 'nope' does not exist" in e.message
    assert "'amount'" in e.message
    assert "appears twice" in error("select", {"columns": ["id", "id"]}, ORDERS).message
    assert "at least one" in error("select", {}, ORDERS).message


def test_drop_removes_columns_and_can_ignore_missing_ones() -> None:
    out = run("drop", {"columns": ["amount", "flag"]}, ORDERS)
    assert out.column_names == ["id", "name", "ordered_at"]
    assert "does not exist" in error("drop", {"columns": ["zz"]}, ORDERS).message
    out = run("drop", {"columns": ["zz", "flag"], "ignoreMissing": True}, ORDERS)
    assert out.column_names == ["id", "name", "amount", "ordered_at"]
    assert "every column" in error("drop", {"columns": ORDERS.column_names}, ORDERS).message


def test_rename_keeps_order_and_refuses_clashes() -> None:
    out = run("rename", {"columns": {"id": "name", "name": "id"}}, ORDERS)
    assert out.column_names == ["name", "id", "amount", "ordered_at", "flag"]
    assert out.column("id").to_pylist()[0] == "Zoë"
    assert "appears twice" in error("rename", {"columns": {"id": "name"}}, ORDERS).message
    e = error("rename", {"columns": {"nope": "x"}}, ORDERS)
    assert e.field == "rename.columns['nope']"
    assert "'nope'" in e.message


# --- filter -----------------------------------------------------------------------------------


def test_filter_drops_false_and_null_rows_with_exact_decimals_and_unicode() -> None:
    out = run("filter", {"predicate": "amount >= 0"}, ORDERS)
    assert out.column("id").to_pylist() == [1, 4]
    assert out.schema.field("amount").type == pa.decimal128(12, 3)
    assert out.column("amount").to_pylist() == [Decimal("100.001"), Decimal("0.000")]
    assert run("filter", {"predicate": "name = '東京'"}, ORDERS).column("id").to_pylist() == [3]
    assert run("filter", {"predicate": "name = 'O''Brien'"}, ORDERS).num_rows == 1
    assert run("filter", {"predicate": "flag"}, ORDERS).column("id").to_pylist() == [1, 4]
    assert run("filter", {"predicate": "flag"}, EMPTY).num_rows == 0


def test_filter_compares_instants_across_time_zones() -> None:
    # 00:30 in Paris is 23:30 UTC the day before: only the UTC 00:30 row is in 2024 UTC.
    out = run("filter", {"predicate": "ordered_at >= TIMESTAMPTZ '2024-01-01 00:00:00+00'"}, ORDERS)
    assert out.column("id").to_pylist() == [2]
    instants = out.column("ordered_at").to_pylist()
    assert instants == [dt.datetime(2024, 1, 1, 0, 30, tzinfo=UTC)]


def test_filter_errors_name_step_column_and_predicate() -> None:
    e = error("filter", {"predicate": "rate > 1"}, ORDERS, step="big")
    assert e.field == "filter.predicate"
    assert e.message.startswith("step 'big': filter predicate 'rate > 1' failed: ")
    assert '"rate"' in e.message
    e = error("filter", {"predicate": "name"}, ORDERS)
    assert "must be a boolean expression, not VARCHAR" in e.message
    assert "failed" in error("filter", {"predicate": "name + 1 > 0"}, ORDERS).message
    assert "empty" in error("filter", {"predicate": " "}, ORDERS).message


@pytest.mark.parametrize(
    "predicate",
    [
        "true) UNION ALL SELECT * FROM in0 WHERE (true",
        "true; DROP TABLE in0",
        "id IN (SELECT id FROM in0)",
        "true -- ) OR (false",
        "count(*) > 0",
        "row_number() OVER () < 3",
        "id > $1",
        "true FROM read_csv('/etc/passwd')",
    ],
)
def test_filter_refuses_anything_but_one_row_wise_expression(predicate: str) -> None:
    if predicate == "true -- ) OR (false":
        # A comment is harmless: it cannot swallow the closing parenthesis.
        assert run("filter", {"predicate": predicate}, ORDERS).num_rows == 4
        return
    e = error("filter", {"predicate": predicate}, ORDERS)
    assert "filter predicate" in e.message


# --- derive -----------------------------------------------------------------------------------


def test_derive_replaces_in_place_and_appends_evaluating_against_the_input() -> None:
    out = run(
        "derive",
        {
            "columns": [
                {"name": "id", "expr": "id * 10"},
                {"name": "double", "expr": "amount * 2"},
                {"name": "label", "expr": "coalesce(name, '∅') || '!'"},
                # Sees the input's id, not the derived one.
                {"name": "id_again", "expr": "id"},
            ]
        },
        ORDERS,
    )
    assert out.column_names == [*ORDERS.column_names, "double", "label", "id_again"]
    assert out.column("id").to_pylist() == [10, 20, 30, 40]
    assert out.column("id_again").to_pylist() == [1, 2, 3, 4]
    assert out.column("double").to_pylist()[:3] == [Decimal("200.002"), Decimal("-11.000"), None]
    assert out.column("label").to_pylist() == ["Zoë!", "∅!", "東京!", "O'Brien!"]
    assert run("derive", {"columns": [{"name": "x", "expr": "id + 1"}]}, EMPTY).num_rows == 0


def test_derive_errors_name_step_column_and_expression() -> None:
    e = error("derive", {"columns": [{"name": "x", "expr": "amount * rate"}]}, ORDERS, step="big")
    assert e.field == "derive.columns[0].expr"
    assert e.message.startswith("step 'big': derive column 'x' expression 'amount * rate' failed: ")
    assert '"rate"' in e.message
    e = error("derive", {"columns": [{"name": "x", "expr": "flag + ordered_at"}]}, ORDERS)
    assert "derive column 'x'" in e.message
    e = error("derive", {"columns": [{"name": "x", "expr": "sum(id)"}]}, ORDERS)
    assert "sum(id)" in e.message
    assert (
        "window"
        in error("derive", {"columns": [{"name": "x", "expr": "lag(id) OVER ()"}]}, ORDERS).message
    )
    assert (
        "twice"
        in error(
            "derive", {"columns": [{"name": "x", "expr": "1"}, {"name": "x", "expr": "2"}]}, ORDERS
        ).message
    )


# --- fill_null, drop_null, limit --------------------------------------------------------------


def test_fill_null_casts_values_to_the_column_types() -> None:
    out = run(
        "fill_null",
        {
            "values": {
                "name": "l'inconnu",
                "amount": 1.5,
                "ordered_at": "2024-06-01 12:00:00+02",
                "flag": False,
            }
        },
        ORDERS,
    )
    assert out.column("name").to_pylist() == ["Zoë", "l'inconnu", "東京", "O'Brien"]
    assert out.column("amount").to_pylist()[2] == Decimal("1.500")
    assert out.schema.field("amount").type == pa.decimal128(12, 3)
    assert out.column("ordered_at").to_pylist()[2] == dt.datetime(2024, 6, 1, 10, tzinfo=UTC)
    assert out.column("flag").to_pylist() == [True, False, False, True]
    assert out.column("id").to_pylist() == [1, 2, 3, 4]


def test_fill_null_rejects_values_that_do_not_fit() -> None:
    e = error("fill_null", {"values": {"id": "abc"}}, ORDERS)
    assert e.field == "fill_null.values['id']"
    assert "'abc' is not a INTEGER" in e.message
    assert "null" in error("fill_null", {"values": {"id": None}}, ORDERS).message
    assert "not a list" in error("fill_null", {"values": {"id": [1]}}, ORDERS).message
    assert "'zz'" in error("fill_null", {"values": {"zz": 1}}, ORDERS).message
    # A quote in a value is data, not SQL.
    out = run("fill_null", {"values": {"name": "'); DROP TABLE in0; --"}}, ORDERS)
    assert out.column("name").to_pylist()[1] == "'); DROP TABLE in0; --"


def test_drop_null_any_all_and_every_column() -> None:
    assert run("drop_null", {}, ORDERS).column("id").to_pylist() == [1, 4]
    assert run("drop_null", {"columns": ["name"]}, ORDERS).column("id").to_pylist() == [1, 3, 4]
    out = run("drop_null", {"columns": ["name", "amount"], "all": True}, ORDERS)
    assert out.column("id").to_pylist() == [1, 2, 3, 4]
    table = pa.table({"a": [1, None, None], "b": [None, 2, None]})
    assert run("drop_null", {"all": True}, table).num_rows == 2
    assert "'c'" in error("drop_null", {"columns": ["c"]}, table).message


def test_limit_with_offset() -> None:
    assert run("limit", {"count": 2}, ORDERS).column("id").to_pylist() == [1, 2]
    assert run("limit", {"count": 2, "offset": 3}, ORDERS).column("id").to_pylist() == [4]
    assert run("limit", {"count": 0}, ORDERS).num_rows == 0
    assert run("limit", {"count": 5}, EMPTY).num_rows == 0
    assert "negative" in error("limit", {"count": -1}, ORDERS).message


# --- cast -------------------------------------------------------------------------------------


def cast(params: dict[str, Any], table: pa.Table, step: str = "t") -> pa.Table:
    operator = CastOperator(step, spec("cast", params), table.schema)
    batches = []
    for batch in table.to_batches(max_chunksize=2):
        out, quarantined = operator.process(batch)
        assert quarantined is None
        assert out.schema == operator.output_schema
        batches.append(out)
    operator.finish()
    assert operator.results() == ()
    operator.close()
    return pa.Table.from_batches(batches, schema=operator.output_schema)


def test_arrow_type_spellings_parse_back() -> None:
    for t in [
        pa.int8(),
        pa.uint64(),
        pa.float32(),
        pa.float64(),
        pa.string(),
        pa.large_string(),
        pa.bool_(),
        pa.binary(),
        pa.date32(),
        pa.date64(),
        pa.timestamp("ns"),
        pa.timestamp("us", tz="Europe/Paris"),
        pa.timestamp("s", tz="+01:00"),
        pa.time32("ms"),
        pa.time64("us"),
        pa.decimal128(12, 2),
        pa.decimal256(40, 2),
        pa.duration("ms"),
    ]:
        assert parse_arrow_type(str(t)) == t
    assert parse_arrow_type("timestamp[us, tz=UTC]") == pa.timestamp("us", tz="UTC")
    assert parse_arrow_type("decimal128(12,2)") == pa.decimal128(12, 2)
    assert parse_arrow_type("time") == pa.time64("us")
    for bad in ["int", "decimal128(99, 2)", "timestamp[us, tz=Mars/Olympus]", "list<int64>"]:
        with pytest.raises(ValueError, match=r"Arrow type|time zone"):
            parse_arrow_type(bad)


def test_cast_converts_types_and_keeps_nulls() -> None:
    table = pa.table(
        {
            "n": pa.array(["1.25", None, "-3.5"], pa.string()),
            "ts": pa.array(["2024-01-01T00:30:00+01:00", "2024-06-01T00:00:00Z", None]),
            "i": pa.array([1, 2, None], pa.int64()),
            "keep": ["a", "b", "c"],
        }
    )
    out = cast(
        {
            "columns": [
                {"column": "n", "type": "decimal128(12, 2)"},
                {"column": "ts", "type": "timestamp[us, tz=UTC]"},
                {"column": "i", "type": "int8"},
            ]
        },
        table,
    )
    assert out.schema.types == [
        pa.decimal128(12, 2),
        pa.timestamp("us", tz="UTC"),
        pa.int8(),
        pa.string(),
    ]
    assert out.column("n").to_pylist() == [Decimal("1.25"), None, Decimal("-3.50")]
    assert out.column("ts").to_pylist()[0] == dt.datetime(2023, 12, 31, 23, 30, tzinfo=UTC)
    assert out.column("i").to_pylist() == [1, 2, None]


def test_safe_cast_fails_naming_step_and_column_unsafe_lets_it_through() -> None:
    table = pa.table({"big": pa.array([1, 300], pa.int64()), "f": [1.0, 2.5]})
    with pytest.raises(TransformError) as info:
        cast({"columns": [{"column": "big", "type": "int8"}]}, table, step="narrow")
    assert info.value.field == "cast.columns[0].type"
    assert info.value.message.startswith(
        "step 'narrow': cast column 'big' from int64 to int8 failed: "
    )
    assert "allow_unsafe" in info.value.message
    out = cast({"columns": [{"column": "big", "type": "int8"}], "allowUnsafe": True}, table)
    assert out.column("big").to_pylist() == [1, 44]
    with pytest.raises(TransformError, match="cast column 'f' from double to int32"):
        cast({"columns": [{"column": "f", "type": "int32"}]}, table)
    out = cast({"columns": [{"column": "f", "type": "int32"}], "allowUnsafe": True}, table)
    assert out.column("f").to_pylist() == [1, 2]
    # Unparsable strings fail even when unsafe.
    with pytest.raises(TransformError, match="cast column 's'"):
        cast(
            {"columns": [{"column": "s", "type": "int64"}], "allowUnsafe": True},
            pa.table({"s": ["x"]}),
        )


def test_cast_errors_at_bind_time() -> None:
    schema = ORDERS.schema
    with pytest.raises(TransformError, match="cast column 'nope' does not exist"):
        CastOperator("t", spec("cast", {"columns": [{"column": "nope", "type": "int8"}]}), schema)
    with pytest.raises(TransformError, match="unknown Arrow type 'int'") as info:
        CastOperator("t", spec("cast", {"columns": [{"column": "id", "type": "int"}]}), schema)
    assert info.value.field == "cast.columns[0].type"
    with pytest.raises(TransformError, match="Arrow cannot cast"):
        CastOperator("t", spec("cast", {"columns": [{"column": "flag", "type": "date32"}]}), schema)


# --- sort, dedupe, aggregate ------------------------------------------------------------------


def test_sort_places_nulls_by_direction_unless_told() -> None:
    table = pa.table({"k": [2, None, 1, 3], "s": ["é", "b", "a", "é"]})
    assert run("sort", {"keys": [{"column": "k"}]}, table).column("k").to_pylist() == [
        1,
        2,
        3,
        None,
    ]
    desc = run("sort", {"keys": [{"column": "k", "descending": True}]}, table)
    assert desc.column("k").to_pylist() == [None, 3, 2, 1]
    first = run("sort", {"keys": [{"column": "k", "nulls": "NULLS_ORDER_FIRST"}]}, table)
    assert first.column("k").to_pylist() == [None, 1, 2, 3]
    multi = run("sort", {"keys": [{"column": "s", "descending": True}, {"column": "k"}]}, table)
    assert multi.column("k").to_pylist() == [2, 3, None, 1]
    assert "sort column 'x'" in error("sort", {"keys": [{"column": "x"}]}, table).message


DUPES = pa.table(
    {
        "k": pa.array([1, 2, 1, None, 2, None, 1], pa.int64()),
        "v": pa.array([10, 20, 30, 40, None, 60, 5], pa.int64()),
        "pos": list(range(7)),
    }
)


def test_dedupe_keeps_first_or_last_in_input_order_by_default() -> None:
    first = run("dedupe", {"keys": ["k"]}, DUPES)
    assert first.column("pos").to_pylist() == [0, 1, 3]
    last = run("dedupe", {"keys": ["k"], "keep": "DEDUPE_KEEP_LAST"}, DUPES)
    assert last.column("pos").to_pylist() == [4, 5, 6]
    assert last.column_names == DUPES.column_names


def test_dedupe_by_an_order_with_nulls() -> None:
    by_v = {"keys": ["k"], "orderBy": [{"column": "v"}]}
    assert run("dedupe", by_v, DUPES).column("pos").to_pylist() == [1, 3, 6]
    # Last in ascending order with NULLs last: the NULL v of k=2 is the last.
    last = run("dedupe", {**by_v, "keep": "DEDUPE_KEEP_LAST"}, DUPES)
    assert last.column("pos").to_pylist() == [2, 4, 5]
    desc = {"keys": ["k"], "orderBy": [{"column": "v", "descending": True}]}
    assert run("dedupe", desc, DUPES).column("pos").to_pylist() == [2, 4, 5]


def test_dedupe_on_every_column_removes_exact_duplicates() -> None:
    table = pa.table({"a": [1, 1, None, None, 2], "b": ["x", "x", None, None, "x"]})
    assert rows(run("dedupe", {}, table)) == [
        {"a": 1, "b": "x"},
        {"a": None, "b": None},
        {"a": 2, "b": "x"},
    ]
    assert run("dedupe", {}, table.schema.empty_table()).num_rows == 0
    assert "'zz'" in error("dedupe", {"keys": ["zz"]}, table).message


def test_aggregate_groups_with_null_keys_and_exact_decimals() -> None:
    table = pa.table(
        {
            "country": pa.array(["FR", "DE", "FR", None, None], pa.string()),
            "amount": pa.array(
                [Decimal("0.10"), Decimal("1.00"), Decimal("0.20"), None, Decimal("5.55")],
                pa.decimal128(10, 2),
            ),
            "customer": [1, 2, 1, 3, 4],
            "seen_at": pa.array(
                [dt.datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2, 3, 4, 5)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    out = run(
        "aggregate",
        {
            "groupBy": ["country"],
            "aggregates": [
                {"name": "n", "expr": "count(*)"},
                {"name": "buyers", "expr": "count(DISTINCT customer)"},
                {"name": "total", "expr": "sum(amount)"},
                {"name": "mean", "expr": "avg(amount)"},
                {"name": "last", "expr": "max(seen_at)"},
                {"name": "median", "expr": "quantile_cont(customer, 0.5)"},
                {"name": "net", "expr": "sum(amount * (1 - 0.5))"},
            ],
        },
        table,
    )
    by = {r["country"]: r for r in rows(out)}
    assert set(by) == {"FR", "DE", None}
    assert by["FR"]["n"] == 2
    assert by["FR"]["buyers"] == 1
    assert by["FR"]["total"] == Decimal("0.30")
    assert by[None]["total"] == Decimal("5.55")
    assert by[None]["n"] == 2
    assert by["FR"]["last"] == dt.datetime(2024, 1, 3, tzinfo=UTC)
    assert by[None]["median"] == 3.5
    assert by["FR"]["net"] == Decimal("0.150")


def test_aggregate_over_everything_and_empty_inputs() -> None:
    params = {"aggregates": [{"name": "n", "expr": "count(*)"}, {"name": "s", "expr": "sum(id)"}]}
    assert rows(run("aggregate", params, ORDERS)) == [{"n": 4, "s": 10}]
    assert rows(run("aggregate", params, EMPTY)) == [{"n": 0, "s": None}]
    assert run("aggregate", {**params, "groupBy": ["name"]}, EMPTY).num_rows == 0
    distinct = run("aggregate", {"groupBy": ["flag"]}, ORDERS)
    assert sorted(distinct.column("flag").to_pylist(), key=str) == [False, None, True]
    std = run("aggregate", {"aggregates": [{"name": "sd", "expr": "stddev(id)"}]}, ORDERS)
    assert std.column("sd").to_pylist()[0] == pytest.approx(1.2909944)


def test_aggregate_errors_name_step_aggregate_and_expression() -> None:
    e = error("aggregate", {"aggregates": [{"name": "x", "expr": "sum(rate)"}]}, ORDERS, step="agg")
    assert e.field == "aggregate.aggregates[0].expr"
    assert e.message.startswith("step 'agg': aggregate 'x' expression 'sum(rate)' failed: ")
    e = error(
        "aggregate", {"groupBy": ["flag"], "aggregates": [{"name": "x", "expr": "id"}]}, ORDERS
    )
    assert "GROUP BY" in e.message
    e = error("aggregate", {"aggregates": [{"name": "x", "expr": "sum(id)) FROM in0; --"}]}, ORDERS)
    assert "aggregate 'x'" in e.message
    assert (
        "twice"
        in error(
            "aggregate",
            {"groupBy": ["id"], "aggregates": [{"name": "id", "expr": "count(*)"}]},
            ORDERS,
        ).message
    )


# --- join -------------------------------------------------------------------------------------

LEFT = pa.table({"k": pa.array([1, 2, None, 4], pa.int64()), "v": ["a", "b", "c", "d"]})
RIGHT = pa.table({"k": pa.array([1, None, 4, 4, 5], pa.int64()), "v": ["x", "y", "z", "w", "u"]})


def join(join_type: str, **extra: Any) -> list[tuple[Any, ...]]:
    params = {"type": join_type, "on": [{"left": "k", "right": "k"}], **extra}
    out = run("join", params, LEFT, RIGHT)
    return sorted((tuple(r.values()) for r in rows(out)), key=repr)


def test_inner_left_right_full_joins_never_match_null_keys() -> None:
    assert join("JOIN_TYPE_INNER") == [(1, "a", "x"), (4, "d", "w"), (4, "d", "z")]
    assert join("JOIN_TYPE_LEFT") == [
        (1, "a", "x"),
        (2, "b", None),
        (4, "d", "w"),
        (4, "d", "z"),
        (None, "c", None),
    ]
    assert join("JOIN_TYPE_RIGHT") == [
        (1, "a", "x"),
        (4, "d", "w"),
        (4, "d", "z"),
        (5, None, "u"),
        (None, None, "y"),
    ]
    full = join("JOIN_TYPE_FULL")
    assert len(full) == 7
    assert (5, None, "u") in full
    assert (2, "b", None) in full
    assert (None, "c", None) in full
    assert (None, None, "y") in full
    out = run("join", {"on": [{"left": "k", "right": "k"}]}, LEFT, RIGHT)
    assert out.column_names == ["k", "v", "v_right"]


def test_semi_and_anti_joins_output_left_columns_only() -> None:
    assert join("JOIN_TYPE_SEMI") == [(1, "a"), (4, "d")]
    # A NULL key has no match, so the anti join keeps it (NOT EXISTS, not NOT IN).
    assert join("JOIN_TYPE_ANTI") == [(2, "b"), (None, "c")]
    out = run("join", {"type": "JOIN_TYPE_SEMI", "on": [{"left": "k", "right": "k"}]}, LEFT, RIGHT)
    assert out.column_names == ["k", "v"]


def test_join_suffixes_and_differently_named_keys() -> None:
    right = RIGHT.rename_columns(["id", "v"])
    out = run(
        "join",
        {"on": [{"left": "k", "right": "id"}], "leftSuffix": "_l", "rightSuffix": "_r"},
        LEFT,
        right,
    )
    assert out.column_names == ["k", "v_l", "id", "v_r"]
    e = error("join", {"on": [{"left": "k", "right": "k"}], "leftSuffix": "_right"}, LEFT, RIGHT)
    assert "suffixes are equal" in e.message
    clash = pa.table({"k": [1], "v": ["x"], "v_right": ["y"]})
    assert "twice" in error("join", {"on": [{"left": "k", "right": "k"}]}, clash, RIGHT).message


def test_join_errors() -> None:
    assert "at least one key" in error("join", {}, LEFT, RIGHT).message
    e = error("join", {"on": [{"left": "k", "right": "nope"}]}, LEFT, RIGHT, step="j")
    assert e.field == "join.on[0].right"
    assert "join right key column 'nope'" in e.message
    lists = pa.table({"k": pa.array([[1]])})
    e = error("join", {"on": [{"left": "k", "right": "k"}]}, LEFT, lists)
    assert "join on 'k' = 'k' failed" in e.message


# --- union ------------------------------------------------------------------------------------

A = pa.table({"id": [1, 2], "name": ["é", "b"]})
B = pa.table({"name": ["c", "é"], "id": [3, 1], "extra": [True, False]})


def test_union_matches_by_name_and_fills_missing_columns_with_null() -> None:
    out = run("union", {}, A, B)
    assert out.column_names == ["id", "name", "extra"]
    assert rows(out) == [
        {"id": 1, "name": "é", "extra": None},
        {"id": 2, "name": "b", "extra": None},
        {"id": 3, "name": "c", "extra": True},
        {"id": 1, "name": "é", "extra": False},
    ]
    assert run("union", {}, A, A.schema.empty_table(), A).num_rows == 4


def test_union_policies_and_distinct() -> None:
    dropped = run("union", {"missingColumns": "MISSING_COLUMNS_DROP"}, A, B)
    assert dropped.column_names == ["id", "name"]
    assert dropped.num_rows == 4
    distinct = run("union", {"missingColumns": "MISSING_COLUMNS_DROP", "distinct": True}, A, B)
    assert sorted(r["id"] for r in rows(distinct)) == [1, 2, 3]
    e = error("union", {"missingColumns": "MISSING_COLUMNS_ERROR"}, A, B)
    assert "'in0' lacks column(s) 'extra'" in e.message
    assert "two inputs" in error("union", {}, A).message
    none = pa.table({"other": [1]})
    assert (
        "no column in common"
        in error("union", {"missingColumns": "MISSING_COLUMNS_DROP"}, A, none).message
    )


# --- sql --------------------------------------------------------------------------------------


def test_sql_runs_one_select_over_inputs_named_after_their_steps() -> None:
    query = "SELECT o.v, r.v AS rv FROM orders o JOIN rates r USING (k) ORDER BY 2; -- done"
    out = run("sql", {"query": query}, LEFT, RIGHT, names=("orders", "rates"))
    assert rows(out) == [{"v": "d", "rv": "w"}, {"v": "a", "rv": "x"}, {"v": "d", "rv": "z"}]


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("SELECT 1; SELECT 2", "not 2 statements"),
        ("DROP TABLE orders", "must be a SELECT statement"),
        ("COPY orders TO 'x.csv'", "must be a SELECT statement"),
        ("SELECT * FROM nowhere", "nowhere"),
        ("SELECT * FROM read_csv('/etc/passwd')", "failed"),
        ("", "empty"),
    ],
)
def test_sql_refuses_anything_but_one_select_that_binds(query: str, problem: str) -> None:
    compiler = TRANSFORM_KINDS["sql"].compile_sql
    assert compiler is not None
    ctx = SqlContext("q", spec("sql", {"query": query}), ('"orders"',), (LEFT.schema,))
    with pytest.raises(TransformError) as info:
        compiler(ctx)
    assert info.value.field == "sql.query"
    assert info.value.message.startswith("step 'q': sql query failed: ")
    assert problem in info.value.message


# --- streaming versus the whole table (hypothesis) -------------------------------------------

ROW = st.fixed_dictionaries(
    {
        "id": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
        "name": st.one_of(st.none(), st.text(max_size=6)),
    }
)
STREAM_SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])

# Row-wise transforms and their reference on one row (None drops the row).
REFERENCES: dict[str, tuple[str, dict[str, Any], Any]] = {
    "filter": ("filter", {"predicate": "id > 0"}, lambda r: r if (r["id"] or 0) > 0 else None),
    "derive": (
        "derive",
        {"columns": [{"name": "id", "expr": "id * 2"}, {"name": "tag", "expr": "name || '!'"}]},
        lambda r: {
            "id": None if r["id"] is None else r["id"] * 2,
            "name": r["name"],
            "tag": None if r["name"] is None else r["name"] + "!",
        },
    ),
    "select": ("select", {"columns": ["name"]}, lambda r: {"name": r["name"]}),
    "drop": ("drop", {"columns": ["name"]}, lambda r: {"id": r["id"]}),
    "rename": (
        "rename",
        {"columns": {"id": "ident"}},
        lambda r: {"ident": r["id"], "name": r["name"]},
    ),
    "fill_null": (
        "fill_null",
        {"values": {"id": 0, "name": "∅"}},
        lambda r: {
            "id": 0 if r["id"] is None else r["id"],
            "name": "∅" if r["name"] is None else r["name"],
        },
    ),
    "drop_null": ("drop_null", {}, lambda r: r if None not in r.values() else None),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(ROW, max_size=40),
    chunk=st.integers(1, 7),
    kind=st.sampled_from(sorted(REFERENCES)),
)
def test_row_wise_transforms_batch_by_batch_equal_the_whole_table_reference(
    data: list[dict[str, Any]], chunk: int, kind: str
) -> None:
    name, params, reference = REFERENCES[kind]
    table = pa.Table.from_pylist(data, schema=STREAM_SCHEMA)
    sql = compile_sql(name, params, table)
    con = sandboxed_connection()
    streamed: list[dict[str, Any]] = []
    try:
        for batch in table.to_batches(max_chunksize=chunk):
            con.register("in0", pa.Table.from_batches([batch]))
            streamed += con.sql(sql).to_arrow_table().to_pylist()
            con.unregister("in0")
    finally:
        con.close()
    expected = [out for r in data if (out := reference(dict(r))) is not None]
    assert streamed == expected


@settings(max_examples=30, deadline=None)
@given(
    data=st.lists(ROW, max_size=40),
    chunk=st.integers(1, 7),
    count=st.integers(0, 45),
    offset=st.integers(0, 10),
)
def test_limit_over_a_stream_of_batches_equals_a_slice(
    data: list[dict[str, Any]], chunk: int, count: int, offset: int
) -> None:
    table = pa.Table.from_pylist(data, schema=STREAM_SCHEMA)
    sql = compile_sql("limit", {"count": count, "offset": offset}, table)
    reader = pa.RecordBatchReader.from_batches(STREAM_SCHEMA, table.to_batches(max_chunksize=chunk))
    con = sandboxed_connection()
    try:
        con.register("in0", reader)
        streamed = con.sql(sql).to_arrow_table().to_pylist()
    finally:
        con.close()
    assert streamed == data[offset : offset + count]


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.integers(-(2**40), 2**40)), max_size=30),
    chunk=st.integers(1, 7),
    unsafe=st.booleans(),
)
def test_cast_batch_by_batch_equals_casting_the_whole_column(
    values: list[int | None], chunk: int, unsafe: bool
) -> None:
    table = pa.table({"v": pa.array(values, pa.int64())})
    params = {"columns": [{"column": "v", "type": "int32"}], "allowUnsafe": unsafe}
    try:
        expected: pa.ChunkedArray | None = pc.cast(table.column("v"), pa.int32(), safe=not unsafe)
    except pa.ArrowInvalid:
        expected = None
    if expected is None:
        with pytest.raises(TransformError, match="cast column 'v' from int64 to int32 failed"):
            cast(params, table)
        return
    operator = CastOperator("t", spec("cast", params), table.schema)
    out = [operator.process(b)[0] for b in table.to_batches(max_chunksize=chunk)]
    streamed = pa.Table.from_batches(out, schema=operator.output_schema).column("v")
    assert streamed.to_pylist() == expected.to_pylist()

"""Pushed-down predicates (``predicate.proto``) as ``pyarrow.dataset`` filter expressions.

The expression is evaluated by the dataset scanner: on Parquet it also prunes row
groups by their statistics, so unneeded data is never decoded. A comparison that
cannot be evaluated against the column (a literal of an incompatible type) is left
out: the executor applies its own filter anyway, so leaving one out only means
more rows cross the wire, never wrong results. A comparison naming an unknown
column, or malformed (wrong number of values, no operator), is INVALID_ARGUMENT.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from datadog_platform.api.common.v1 import predicate_pb2
from datadog_platform.core.errors import FieldViolation, invalid_argument

_OPS = predicate_pb2.ComparisonOperator
_BINARY = {
    _OPS.COMPARISON_OPERATOR_EQ: lambda f, v: f == v,
    _OPS.COMPARISON_OPERATOR_NE: lambda f, v: f != v,
    _OPS.COMPARISON_OPERATOR_LT: lambda f, v: f < v,
    _OPS.COMPARISON_OPERATOR_LE: lambda f, v: f <= v,
    _OPS.COMPARISON_OPERATOR_GT: lambda f, v: f > v,
    _OPS.COMPARISON_OPERATOR_GE: lambda f, v: f >= v,
}


def predicate_expression(
    predicate: predicate_pb2.Predicate, schema: pa.Schema, field: str = "predicate"
) -> ds.Expression | None:
    """The AND of the comparisons that apply to ``schema``; None when there are none."""
    expression: ds.Expression | None = None
    for index, comparison in enumerate(predicate.all_of):
        where = f"{field}.all_of[{index}]"
        term = _comparison(comparison, schema, where)
        if term is None or not _binds(term, schema):
            continue
        expression = term if expression is None else expression & term
    return expression


def _comparison(
    comparison: predicate_pb2.Comparison, schema: pa.Schema, where: str
) -> ds.Expression | None:
    column = comparison.column
    if schema.get_field_index(column) < 0:
        raise invalid_argument(
            "UNKNOWN_COLUMN",
            f"{where}.column: unknown column {column!r}; the source has {', '.join(schema.names)}",
            [FieldViolation(f"{where}.column", f"unknown column {column!r}")],
        )
    column_type = schema.field(column).type
    operator = comparison.operator
    values = [_literal(v, f"{where}.values[{i}]") for i, v in enumerate(comparison.values)]
    target = pc.field(column)
    if operator in (_OPS.COMPARISON_OPERATOR_IS_NULL, _OPS.COMPARISON_OPERATOR_IS_NOT_NULL):
        _arity(not values, where, "takes no values")
        return (
            target.is_null() if operator == _OPS.COMPARISON_OPERATOR_IS_NULL else target.is_valid()
        )
    if operator == _OPS.COMPARISON_OPERATOR_IN:
        _arity(bool(values), where, "needs at least one value")
        try:
            value_set = pa.array(values).cast(column_type)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return None
        return target.isin(value_set)
    if operator in _BINARY:
        _arity(len(values) == 1, where, "needs exactly one value")
        return _BINARY[operator](target, _scalar(values[0], column_type))
    raise invalid_argument(
        "INVALID_PREDICATE",
        f"{where}.operator: unsupported operator {operator}",
        [FieldViolation(f"{where}.operator", "unspecified or unknown operator")],
    )


def _arity(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise invalid_argument(
            "INVALID_PREDICATE",
            f"{where}: this operator {problem}",
            [FieldViolation(f"{where}.values", problem)],
        )


def _literal(literal: predicate_pb2.Literal, where: str) -> Any:
    kind = literal.WhichOneof("value")
    try:
        if kind == "decimal_value":
            return decimal.Decimal(literal.decimal_value)
        if kind == "date_value":
            return dt.date.fromisoformat(literal.date_value)
        if kind == "timestamp_value":
            return dt.datetime.fromisoformat(literal.timestamp_value)
    except (ValueError, decimal.InvalidOperation) as exc:
        raise invalid_argument(
            "INVALID_PREDICATE",
            f"{where}: {exc}",
            [FieldViolation(f"{where}.{kind}", "not a valid value")],
        ) from None
    if kind is None:
        raise invalid_argument(
            "INVALID_PREDICATE",
            f"{where}: a literal needs a value",
            [FieldViolation(where, "no value set")],
        )
    return getattr(literal, kind)


def _scalar(value: Any, column_type: pa.DataType) -> pa.Scalar:
    """The literal in the column's type when it converts exactly, else as it is."""
    try:
        # A safe cast: 2.5 against an integer column must not become 2.
        return pa.scalar(value).cast(column_type)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return pa.scalar(value)


def predicate_columns(predicate: predicate_pb2.Predicate) -> list[str]:
    """The columns a predicate reads."""
    return list(dict.fromkeys(c.column for c in predicate.all_of))


def _binds(expression: ds.Expression, schema: pa.Schema) -> bool:
    """Whether Arrow can evaluate ``expression`` over ``schema`` (checked on no rows)."""
    try:
        ds.dataset(schema.empty_table()).to_table(filter=expression)
    except (pa.ArrowException, TypeError, ValueError):
        return False
    return True

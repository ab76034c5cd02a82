"""Transforms over several inputs: join (two), union (two or more), sql (one or more)."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.executor.transforms.base import SqlContext
from datadog_platform.executor.transforms.errors import TransformError
from datadog_platform.executor.transforms.rowwise import require_column
from datadog_platform.executor.transforms.sql import (
    bind_problem,
    quote,
    select_problem,
    sql_types,
    unquote,
)

_JOINS = {
    step_pb2.JOIN_TYPE_UNSPECIFIED: "INNER JOIN",
    step_pb2.JOIN_TYPE_INNER: "INNER JOIN",
    step_pb2.JOIN_TYPE_LEFT: "LEFT JOIN",
    step_pb2.JOIN_TYPE_RIGHT: "RIGHT JOIN",
    step_pb2.JOIN_TYPE_FULL: "FULL JOIN",
    step_pb2.JOIN_TYPE_SEMI: "SEMI JOIN",
    step_pb2.JOIN_TYPE_ANTI: "ANTI JOIN",
}
_LEFT, _RIGHT = '"__datadog_left"', '"__datadog_right"'


def compile_join(ctx: SqlContext) -> str:
    """Join inputs[0] (left) and inputs[1] (right) on equal key pairs.

    NULL keys never match. A key pair with the same name on both sides gives one
    output column (the non-NULL side's value for right and full joins); other
    names present on both sides get ``left_suffix`` / ``right_suffix``. Semi and
    anti joins output the left columns only.
    """
    spec: step_pb2.JoinTransform = ctx.spec
    (left, right), (lschema, rschema) = ctx.inputs, ctx.schemas
    kind = _JOINS.get(spec.type)
    if kind is None:
        raise TransformError(ctx.step, "join.type", f"unknown join type {spec.type}")
    if not spec.on:
        raise TransformError(ctx.step, "join.on", "join needs at least one key pair")
    for i, key in enumerate(spec.on):
        require_column(ctx.step, f"join.on[{i}].left", lschema, key.left, "join left key")
        require_column(ctx.step, f"join.on[{i}].right", rschema, key.right, "join right key")
        ltype, rtype = lschema.field(key.left).type, rschema.field(key.right).type
        if "null" not in (_family(ltype), _family(rtype)) and _family(ltype) != _family(rtype):
            raise TransformError(
                ctx.step,
                f"join.on[{i}]",
                f"join on {key.left!r} = {key.right!r} failed: cannot compare {ltype} with "
                f"{rtype} (cast one side first)",
            )
    condition = " AND ".join(
        f"{_LEFT}.{quote(k.left)} = {_RIGHT}.{quote(k.right)}" for k in spec.on
    )
    if spec.type in (step_pb2.JOIN_TYPE_SEMI, step_pb2.JOIN_TYPE_ANTI):
        items = [f"{_LEFT}.{quote(n)}" for n in lschema.names]
    else:
        items = _join_columns(ctx, spec)
    problem = bind_problem(
        f"SELECT 1 FROM {quote('__l')} AS {_LEFT} {kind} {quote('__r')} AS {_RIGHT} ON {condition}",
        {"__l": lschema, "__r": rschema},
    )
    if problem:
        raise TransformError(
            ctx.step, "join.on", f"join on {_describe_keys(spec)} failed: {problem}"
        )
    return (
        f"SELECT {', '.join(items)} FROM {left} AS {_LEFT} {kind} {right} AS {_RIGHT}"
        f" ON {condition}"
    )


def compile_union(ctx: SqlContext) -> str:
    """The rows of every input, columns matched by name, in the first input's order
    then new columns by first appearance; a column some inputs lack is filled with
    NULL, dropped or an error by ``missing_columns``."""
    spec: step_pb2.UnionTransform = ctx.spec
    if len(ctx.inputs) < 2:
        raise TransformError(ctx.step, "inputs", "union needs at least two inputs")
    columns: list[str] = []
    types: dict[str, str] = {}
    for schema in ctx.schemas:
        for name, sql_type in zip(schema.names, sql_types(schema), strict=True):
            if name not in types:
                columns.append(name)
                types[name] = sql_type
    present = [set(s.names) for s in ctx.schemas]
    policy = spec.missing_columns
    if policy == step_pb2.MISSING_COLUMNS_DROP:
        columns = [c for c in columns if all(c in names for names in present)]
        if not columns:
            raise TransformError(
                ctx.step, "union.missing_columns", "union inputs have no column in common"
            )
    elif policy == step_pb2.MISSING_COLUMNS_ERROR:
        for relation, names in zip(ctx.inputs, present, strict=True):
            missing = [c for c in columns if c not in names]
            if missing:
                raise TransformError(
                    ctx.step,
                    "union.missing_columns",
                    f"union input {unquote(relation)!r} lacks column(s) "
                    f"{', '.join(repr(c) for c in missing)} (missing_columns is ERROR)",
                )
    selects = []
    for relation, names in zip(ctx.inputs, present, strict=True):
        items = [
            quote(c) if c in names else f"CAST(NULL AS {types[c]}) AS {quote(c)}" for c in columns
        ]
        selects.append(f"SELECT {', '.join(items)} FROM {relation}")
    operator = "\nUNION\n" if spec.distinct else "\nUNION ALL\n"
    return operator.join(selects)


def compile_sql(ctx: SqlContext) -> str:
    """The user's SELECT, checked to be exactly one SELECT that binds over the inputs
    (each visible as a table named after its step)."""
    spec: step_pb2.SqlTransform = ctx.spec
    problem, query = select_problem(spec.query)
    if not problem:
        tables = {unquote(r): s for r, s in zip(ctx.inputs, ctx.schemas, strict=True)}
        problem = bind_problem(query, tables)
    if problem:
        raise TransformError(ctx.step, "sql.query", f"sql query failed: {problem}")
    return query


def _join_columns(ctx: SqlContext, spec: step_pb2.JoinTransform) -> list[str]:
    lschema, rschema = ctx.schemas
    merged = {k.left for k in spec.on if k.left == k.right}
    right_names = [n for n in rschema.names if n not in merged]
    clashing = (set(lschema.names) - merged) & set(right_names)
    left_suffix, right_suffix = spec.left_suffix, spec.right_suffix or "_right"
    if clashing and left_suffix == right_suffix:
        raise TransformError(
            ctx.step,
            "join.right_suffix",
            f"join: columns {sorted(clashing)} are on both sides and the suffixes are equal",
        )
    outputs: list[tuple[str, str]] = []
    for name in lschema.names:
        if name in merged:
            if spec.type == step_pb2.JOIN_TYPE_RIGHT:
                value = f"{_RIGHT}.{quote(name)}"
            elif spec.type == step_pb2.JOIN_TYPE_FULL:
                value = f"coalesce({_LEFT}.{quote(name)}, {_RIGHT}.{quote(name)})"
            else:
                value = f"{_LEFT}.{quote(name)}"
            outputs.append((value, name))
        else:
            alias = name + left_suffix if name in clashing else name
            outputs.append((f"{_LEFT}.{quote(name)}", alias))
    for name in right_names:
        alias = name + right_suffix if name in clashing else name
        outputs.append((f"{_RIGHT}.{quote(name)}", alias))
    duplicates = [n for n, count in Counter(a for _, a in outputs).items() if count > 1]
    if duplicates:
        raise TransformError(
            ctx.step,
            "join.right_suffix",
            f"join: output column(s) {sorted(duplicates)} would appear twice; change the suffixes",
        )
    return [f"{value} AS {quote(alias)}" for value, alias in outputs]


def _family(arrow_type: pa.DataType) -> str:
    # Key types that compare without surprises: DuckDB would otherwise cast a
    # string key to a number and fail at run time on the first non-numeric value.
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        return "number"
    if pa.types.is_decimal(arrow_type):
        return "number"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_string_view(arrow_type):
        return "string"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "binary"
    if pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None:
        return "instant"
    if pa.types.is_date(arrow_type) or pa.types.is_timestamp(arrow_type):
        return "datetime"
    if pa.types.is_null(arrow_type):
        return "null"
    return str(arrow_type)


def _describe_keys(spec: step_pb2.JoinTransform) -> str:
    return ", ".join(f"{k.left!r} = {k.right!r}" for k in spec.on)

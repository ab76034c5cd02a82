"""Blocking transforms: sort, dedupe and aggregate need all their input before
their first output row; DuckDB spills them to disk under its memory limit."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.executor.transforms.base import SqlContext
from datadog_platform.executor.transforms.errors import TransformError
from datadog_platform.executor.transforms.rowwise import require_column
from datadog_platform.executor.transforms.sql import (
    bind_problem,
    expression_problem,
    paren,
    quote,
)

_PROBE = "__datadog_input"


def compile_sort(ctx: SqlContext) -> str:
    """The rows ordered by ``keys``; NULLs last ascending, first descending by default."""
    spec: step_pb2.SortTransform = ctx.spec
    if not spec.keys:
        raise TransformError(ctx.step, "sort.keys", "sort needs at least one key")
    for i, key in enumerate(spec.keys):
        require_column(ctx.step, f"sort.keys[{i}].column", ctx.schemas[0], key.column, "sort")
    return f"SELECT * FROM {ctx.inputs[0]} ORDER BY {order_by(spec.keys)}"


def compile_dedupe(ctx: SqlContext) -> str:
    """One row per distinct ``keys`` (NULLs equal each other), the first or last by
    ``order_by`` (input order when empty); rows come out in input order."""
    spec: step_pb2.DedupeTransform = ctx.spec
    relation, schema = ctx.inputs[0], ctx.schemas[0]
    for i, column in enumerate(spec.keys):
        require_column(ctx.step, f"dedupe.keys[{i}]", schema, column, "dedupe key")
    for i, key in enumerate(spec.order_by):
        require_column(
            ctx.step, f"dedupe.order_by[{i}].column", schema, key.column, "dedupe order_by"
        )
    keys = list(dict.fromkeys(spec.keys)) or schema.names
    position, rank = _fresh(schema, "__datadog_position"), _fresh(schema, "__datadog_rank")
    last = spec.keep == step_pb2.DEDUPE_KEEP_LAST
    # The input position breaks ties, so the kept row is deterministic; keeping the
    # last row is keeping the first in the reversed order.
    ordering = order_items(spec.order_by, reverse=last)
    ordering.append(f"{quote(position)} {'DESC' if last else 'ASC'}")
    partition = ", ".join(quote(k) for k in keys)
    columns = ", ".join(quote(n) for n in schema.names)
    return (
        f"SELECT {columns} FROM ("
        f"SELECT *, row_number() OVER (PARTITION BY {partition} ORDER BY {', '.join(ordering)})"
        f" AS {quote(rank)} FROM ("
        f"SELECT *, row_number() OVER () AS {quote(position)} FROM {relation}"
        f")) WHERE {quote(rank)} = 1 ORDER BY {quote(position)}"
    )


def compile_aggregate(ctx: SqlContext) -> str:
    """One row per distinct ``group_by`` (one row in all without it) with ``aggregates``."""
    spec: step_pb2.AggregateTransform = ctx.spec
    relation, schema = ctx.inputs[0], ctx.schemas[0]
    if not spec.group_by and not spec.aggregates:
        raise TransformError(
            ctx.step, "aggregate.aggregates", "aggregate needs group_by or at least one aggregate"
        )
    for i, column in enumerate(spec.group_by):
        require_column(ctx.step, f"aggregate.group_by[{i}]", schema, column, "aggregate group_by")
    keys = list(dict.fromkeys(spec.group_by))
    group = f"GROUP BY {', '.join(quote(k) for k in keys)}" if keys else "GROUP BY ()"
    names = set(keys)
    items = [quote(k) for k in keys]
    for i, aggregate in enumerate(spec.aggregates):
        field = f"aggregate.aggregates[{i}]"
        if not aggregate.name:
            raise TransformError(ctx.step, f"{field}.name", "aggregate name is empty")
        if aggregate.name in names:
            raise TransformError(
                ctx.step,
                f"{field}.name",
                f"aggregate output column {aggregate.name!r} appears twice",
            )
        names.add(aggregate.name)
        problem = expression_problem(aggregate.expr, aggregates=True)
        if not problem:
            problem = bind_problem(
                f"SELECT {paren(aggregate.expr)} FROM {quote(_PROBE)} {group}", {_PROBE: schema}
            )
        if problem:
            raise TransformError(
                ctx.step,
                f"{field}.expr",
                f"aggregate {aggregate.name!r} expression {aggregate.expr!r} failed: {problem}",
            )
        items.append(f"{paren(aggregate.expr)} AS {quote(aggregate.name)}")
    return f"SELECT {', '.join(items)} FROM {relation} {group}"


def order_by(keys: Sequence[step_pb2.SortKey]) -> str:
    """The ORDER BY list of ``keys``."""
    return ", ".join(order_items(keys))


def order_items(keys: Sequence[step_pb2.SortKey], *, reverse: bool = False) -> list[str]:
    """The ORDER BY items of ``keys``; ``reverse`` flips every key, NULL placement included."""
    items = []
    for key in keys:
        descending = key.descending
        if key.nulls == step_pb2.NULLS_ORDER_UNSPECIFIED:
            nulls_first = descending
        else:
            nulls_first = key.nulls == step_pb2.NULLS_ORDER_FIRST
        if reverse:
            descending, nulls_first = not descending, not nulls_first
        items.append(
            f"{quote(key.column)} {'DESC' if descending else 'ASC'}"
            f" NULLS {'FIRST' if nulls_first else 'LAST'}"
        )
    return items


def _fresh(schema: pa.Schema, base: str) -> str:
    # A helper column name the input does not use.
    name, n = base, 0
    while name in schema.names:
        n += 1
        name = f"{base}_{n}"
    return name

"""Projection pushdown: the columns of each source a stage's queries actually read.

A source feeding a DuckDB segment only needs the columns the segment's query
reads; asking the connector for those alone spares decoding, framing and copying
the others (TPC-H Q1 reads 7 of ``lineitem``'s 16 columns).

The columns come from DuckDB's own optimised plan, not from our reading of the
SQL: the bound query is ``EXPLAIN``-ed over empty Arrow tables registered as its
leaves, and every ``PYTHON_ARROW_SCAN`` lists in ``Projections`` the columns the
query will really read after DuckDB's unused-column removal (``SELECT *``,
``COLUMNS(...)``, ``EXCLUDE``, joins and CTEs resolved exactly as at run time).
Walking ``json_serialize_sql`` instead would mean redoing star expansion, scoping
and CTE resolution ourselves. Empty Arrow tables carry no statistics, so the plan
is not pruned on the (absent) data: only data-independent simplifications, which
happen at run time too, remove scans.

Being wrong must only cost speed, so the analysis falls back to every column
(``None``) whenever it is unsure: a scan the plan does not show, a scan whose
columns several leaves have (which leaf it reads is unknown), filters pushed into
a scan (their columns are not in its projections), an unknown column name. The
caller also re-binds the stage on the narrowed schemas and keeps the narrowing
only if every query and operator output is unchanged (``same_outputs``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from datadog_platform.executor.engine.graph import StageGraph
from datadog_platform.executor.engine.query import BoundQuery, Engine, stream_view

#: Transform kinds after which a query may read fewer columns than its inputs have;
#: a segment made only of other kinds (filter, derive, sort...) passes every column
#: on, so asking the connector for the schema first would be a wasted call.
NARROWING_KINDS = frozenset({"select", "drop", "aggregate", "join", "sql"})

_ARROW_SCAN = "ARROW_SCAN"


def narrowable_sources(graph: StageGraph) -> tuple[str, ...]:
    """Source steps read by a query that may not need all their columns (stage order).

    Sources read by a Python operator or the sink keep every column.
    """
    leaves: set[str] = set()
    for segment in graph.segments:
        if any(graph.node(step).kind in NARROWING_KINDS for step in segment.steps):
            leaves.update(segment.leaves)
    return tuple(node.name for node in graph.sources if node.name in leaves)


def used_columns(engine: Engine, bound: BoundQuery) -> dict[str, tuple[str, ...] | None]:
    """Leaf step → the columns ``bound``'s query reads from it (in the leaf's schema order),
    or None when it reads them all or the plan does not say for sure. Blocking;
    remembered by the engine."""
    key = ("columns", bound.sql, tuple(s.serialize().to_pybytes() for s in bound.inputs.values()))
    return engine.memoized(key, lambda: _used_columns(engine, bound))


def _used_columns(engine: Engine, bound: BoundQuery) -> dict[str, tuple[str, ...] | None]:
    cursor = engine.cursor()
    try:
        for leaf, schema in bound.inputs.items():
            cursor.register(stream_view(leaf), schema.empty_table())
        rows = cursor.sql(f"EXPLAIN (FORMAT JSON) {bound.sql}").fetchall()
    finally:
        cursor.close()
    plan = json.loads(rows[0][1])
    return columns_from_plan(plan, bound.inputs)


def columns_from_plan(
    plan: Any, inputs: Mapping[str, pa.Schema]
) -> dict[str, tuple[str, ...] | None]:
    """Leaf → columns read, from a JSON physical plan (see :func:`used_columns`)."""
    wanted: dict[str, set[str] | None] = {leaf: set() for leaf in inputs}
    seen: set[str] = set()
    for info in _scans(plan):
        projected = _names(info.get("Projections"))
        owners = [
            leaf for leaf, schema in inputs.items() if all(c in schema.names for c in projected)
        ]
        if len(owners) != 1 or info.get("Filters"):
            # Unknown owner, or filter columns missing from the projections: read it all.
            for leaf in owners or inputs:
                wanted[leaf] = None
                seen.add(leaf)
            continue
        leaf = owners[0]
        seen.add(leaf)
        columns = wanted[leaf]
        if columns is not None:
            columns.update(projected)
    result: dict[str, tuple[str, ...] | None] = {}
    for leaf, schema in inputs.items():
        columns = wanted[leaf]
        if leaf not in seen or columns is None or len(schema) == 0:
            result[leaf] = None
            continue
        if not columns:  # e.g. count(*): a row count still needs one column to carry it
            columns = {schema.names[0]}
        ordered = tuple(name for name in schema.names if name in columns)
        result[leaf] = None if len(ordered) == len(schema) else ordered
    return result


def with_required(
    columns: Sequence[str] | None, schema: pa.Schema, required: Iterable[str]
) -> tuple[str, ...] | None:
    """``columns`` plus ``required`` ones (e.g. a watermark column), in ``schema`` order."""
    if columns is None:
        return None
    keep = set(columns) | {name for name in required if name in schema.names}
    ordered = tuple(name for name in schema.names if name in keep)
    return None if len(ordered) == len(schema) else ordered


def project(schema: pa.Schema, columns: Sequence[str] | None) -> pa.Schema:
    """``schema`` restricted to ``columns`` (all when None), as a connector projects it."""
    if columns is None:
        return schema
    return pa.schema([schema.field(name) for name in columns], metadata=schema.metadata)


def same_outputs(
    graph: StageGraph, before: Mapping[str, pa.Schema], after: Mapping[str, pa.Schema]
) -> bool:
    """Whether every query and operator output has the same schema in both bindings."""
    streams = [segment.output for segment in graph.segments] + sorted(graph.operators)
    return all(
        name in before and name in after and before[name].equals(after[name]) for name in streams
    )


def _scans(plan: Any) -> list[dict[str, Any]]:
    """The ``extra_info`` of every Arrow scan of the plan."""
    found: list[dict[str, Any]] = []
    pending = list(plan) if isinstance(plan, list) else [plan]
    while pending:
        node = pending.pop()
        if not isinstance(node, dict):
            continue
        if _ARROW_SCAN in str(node.get("name", "")):
            found.append(node.get("extra_info") or {})
        pending.extend(node.get("children") or ())
    return found


def _names(projections: Any) -> list[str]:
    # One projection is a plain string, several a list, none an empty string.
    if projections is None or projections == "":
        return []
    if isinstance(projections, str):
        return [projections]
    return [str(name) for name in projections]

"""The transform catalogue: every ``TransformSpec`` kind, its parameters and how it runs.

Parameters come from the protobuf descriptors (names, types, which are
repeated); their descriptions and whether they are required are written here.
``python -m datadog_platform.executor.transforms.registry`` prints
docs/transforms.md (scripts/gen-docs writes it).
"""

from __future__ import annotations

import importlib
from typing import Any

import pyarrow as pa
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.executor.transforms import blocking, multi, rowwise
from datadog_platform.executor.transforms.base import (
    CompileSql,
    MakeOperator,
    Param,
    SqlContext,
    TransformKind,
)

__all__ = ["TRANSFORM_KINDS", "Param", "SqlContext", "TransformKind", "transforms_markdown"]


def _make_check_operator(step: str, spec: Any, schema: pa.Schema) -> Any:
    # Imported on first use: executor/checks.py is written separately and must not
    # be able to break the import of the catalogue.
    module = importlib.import_module("datadog_platform.executor.checks")
    return module.make_check_operator(step, spec, schema)


# (field → (description, required)) per kind; a test keeps it in step with the protos.
_PARAMETERS: dict[str, dict[str, tuple[str, bool]]] = {
    "filter": {
        "predicate": (
            "SQL boolean expression over the input's columns; rows where it is false or "
            "NULL are dropped.",
            True,
        ),
    },
    "select": {"columns": ("Columns to keep, in output order.", True)},
    "drop": {
        "columns": ("Columns to remove.", True),
        "ignore_missing": ("Ignore listed columns the input does not have.", False),
    },
    "rename": {"columns": ("Old name → new name; other columns pass through.", True)},
    "cast": {
        "columns": (
            "`{column, type}` pairs; `type` is an Arrow type in pyarrow's spelling "
            "(`int64`, `string`, `timestamp[us, tz=UTC]`, `decimal128(12, 2)`...).",
            True,
        ),
        "allow_unsafe": (
            "Let overflows and truncations through (wrapping/truncating as Arrow does) "
            "instead of failing the stage; unparsable strings fail either way.",
            False,
        ),
    },
    "derive": {
        "columns": (
            "`{name, expr}` pairs: each SQL expression is evaluated against the input; "
            "an existing column of that name is replaced in place, new ones are appended.",
            True,
        ),
    },
    "fill_null": {
        "values": (
            "Column → replacement for its NULLs (a number, string or boolean, cast to "
            "the column's type).",
            True,
        ),
    },
    "drop_null": {
        "columns": ("Columns to look at; empty means every column.", False),
        "all": ("Drop a row only when all those columns are NULL (default: any).", False),
    },
    "dedupe": {
        "keys": ("Key columns; empty means every column (exact duplicates).", False),
        "order_by": (
            "`{column, descending, nulls}` keys deciding which row of a group comes "
            "first; empty means input order.",
            False,
        ),
        "keep": ("Keep the first or the last row of each group (default first).", False),
    },
    "sort": {
        "keys": (
            "`{column, descending, nulls}` keys, most significant first; NULLs sort last "
            "ascending and first descending unless `nulls` says otherwise.",
            True,
        ),
    },
    "limit": {
        "count": ("Maximum number of rows to keep (0 keeps none).", True),
        "offset": ("Rows to skip first.", False),
    },
    "aggregate": {
        "group_by": ("Grouping columns; empty means one group over all rows.", False),
        "aggregates": (
            "`{name, expr}` output columns, each a SQL aggregate expression: `count(*)`, "
            "`count(DISTINCT c)`, `sum(c)`, `avg(c)`, `min(c)`, `max(c)`, `stddev(c)`, "
            "`quantile_cont(c, 0.5)`, `sum(c * (1 - d))`...",
            False,
        ),
    },
    "join": {
        "type": ("Kind of join (default inner).", False),
        "on": (
            "`{left, right}` equality key pairs (at least one); NULL keys never match. "
            'In YAML write the key as `"on"` (a bare `on` is the boolean true).',
            True,
        ),
        "left_suffix": (
            "Appended to a left column whose name is also a right column (default none).",
            False,
        ),
        "right_suffix": (
            "Appended to a right column whose name is also a left column (default `_right`).",
            False,
        ),
    },
    "union": {
        "missing_columns": (
            "What to do with a column some inputs lack: fill it with NULL (default), "
            "fail, or drop it.",
            False,
        ),
        "distinct": ("Remove duplicate rows (UNION instead of UNION ALL).", False),
    },
    "sql": {
        "query": (
            "A single SELECT statement; each input is a table named after its step.",
            True,
        ),
    },
    "check": {
        "checks": (
            "`{name, <rule>, on_failure}` data-quality rules; a rule is one of `not_null`, "
            "`unique`, `accepted_values`, `range`, `regex`, `row_count`, `expression`.",
            True,
        ),
        "on_failure": ("Default action of the checks: fail (default), warn or quarantine.", False),
        "quarantine": (
            "Sink receiving the rows failing QUARANTINE checks, with a `_failed_checks` column.",
            False,
        ),
    },
}

# name: (description, min_inputs, max_inputs, streaming, compile_sql, make_operator, example)
_KINDS: dict[str, tuple[str, int, int, bool, CompileSql | None, MakeOperator | None, str]] = {
    "select": (
        "Keep some columns, in the given order.",
        1,
        1,
        True,
        rowwise.compile_select,
        None,
        "transform: {select: {columns: [id, country, amount]}}",
    ),
    "drop": (
        "Remove columns.",
        1,
        1,
        True,
        rowwise.compile_drop,
        None,
        "transform: {drop: {columns: [internal_note], ignore_missing: true}}",
    ),
    "rename": (
        "Rename columns; the others pass through, the order is kept.",
        1,
        1,
        True,
        rowwise.compile_rename,
        None,
        "transform: {rename: {columns: {amt: amount, ctry: country}}}",
    ),
    "cast": (
        "Convert columns to Arrow types with Arrow's cast semantics (safe by default).",
        1,
        1,
        True,
        None,
        rowwise.make_cast_operator,
        'transform: {cast: {columns: [{column: amount, type: "decimal128(12, 2)"},'
        ' {column: ts, type: "timestamp[us, tz=UTC]"}]}}',
    ),
    "filter": (
        "Keep the rows for which a SQL boolean expression is true.",
        1,
        1,
        True,
        rowwise.compile_filter,
        None,
        "transform: {filter: {predicate: \"amount > 100 AND country = 'FR'\"}}",
    ),
    "derive": (
        "Add or replace columns computed from SQL expressions.",
        1,
        1,
        True,
        rowwise.compile_derive,
        None,
        'transform: {derive: {columns: [{name: total, expr: "amount * (1 + vat)"},'
        ' {name: country, expr: "upper(country)"}]}}',
    ),
    "fill_null": (
        "Replace the NULLs of columns with values.",
        1,
        1,
        True,
        rowwise.compile_fill_null,
        None,
        'transform: {fill_null: {values: {amount: 0, country: "unknown"}}}',
    ),
    "drop_null": (
        "Remove the rows with NULLs in some (or all) columns.",
        1,
        1,
        True,
        rowwise.compile_drop_null,
        None,
        "transform: {drop_null: {columns: [id, amount]}}",
    ),
    "limit": (
        "Keep at most `count` rows after skipping `offset` rows, in input order.",
        1,
        1,
        True,
        rowwise.compile_limit,
        None,
        "transform: {limit: {count: 1000}}",
    ),
    "sort": (
        "Order the rows.",
        1,
        1,
        False,
        blocking.compile_sort,
        None,
        "transform: {sort: {keys: [{column: country}, {column: amount, descending: true}]}}",
    ),
    "dedupe": (
        "Keep one row per distinct key: the first or the last by an order; kept rows "
        "stay in input order.",
        1,
        1,
        False,
        blocking.compile_dedupe,
        None,
        "transform: {dedupe: {keys: [id], order_by: [{column: updated_at}],"
        " keep: DEDUPE_KEEP_LAST}}",
    ),
    "aggregate": (
        "Group rows by key columns and compute named aggregate expressions.",
        1,
        1,
        False,
        blocking.compile_aggregate,
        None,
        "transform: {aggregate: {group_by: [country], aggregates: ["
        '{name: total, expr: "sum(amount)"},'
        ' {name: buyers, expr: "count(DISTINCT customer_id)"}]}}',
    ),
    "join": (
        "Join two inputs (inputs[0] left, inputs[1] right) on key pairs: inner, left, "
        "right, full, semi or anti.",
        2,
        2,
        False,
        multi.compile_join,
        None,
        "inputs: [orders, customers]\n"
        'transform: {join: {type: JOIN_TYPE_LEFT, "on": [{left: customer_id, right: id}]}}',
    ),
    "union": (
        "Concatenate inputs, matching columns by name (blocking with `distinct`).",
        2,
        0,
        True,
        multi.compile_union,
        None,
        "inputs: [orders_2024, orders_2025]\n"
        "transform: {union: {missing_columns: MISSING_COLUMNS_FILL_NULL}}",
    ),
    "sql": (
        "Run a SELECT over the inputs, each a table named after its step, for what the "
        "typed transforms do not cover.",
        1,
        0,
        False,
        multi.compile_sql,
        None,
        "inputs: [orders, rates]\n"
        'transform: {sql: {query: "SELECT o.*, o.amount * r.rate AS amount_eur'
        ' FROM orders o JOIN rates r USING (currency)"}}',
    ),
    "check": (
        "Data-quality checks (not null, unique, accepted values, range, regex, row count, "
        "a SQL predicate): fail the stage, warn, or quarantine the failing rows.",
        1,
        1,
        True,
        None,
        _make_check_operator,
        "transform: {check: {on_failure: CHECK_ACTION_FAIL, checks: [{name: id_present,"
        " not_null: {columns: [id]}}, {name: positive, range: {column: amount, min: 0}}]}}",
    ),
}


def _type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        return f"map<{_type_name(key)}, {_type_name(value)}>"
    if field.message_type is not None:
        name = field.message_type.name
    elif field.enum_type is not None:
        name = field.enum_type.name
    else:
        name = _SCALARS.get(field.type, "unknown")
    repeated = field.is_repeated
    return f"repeated {name}" if repeated else name


_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_BYTES: "bytes",
}


def _parameters(kind: str, message: Descriptor) -> tuple[Param, ...]:
    written = _PARAMETERS.get(kind, {})
    params = []
    for field in message.fields:
        description, required = written.get(field.name, ("", False))
        if field.enum_type is not None:
            values = [v.name for v in field.enum_type.values if v.number != 0]
            description += " One of " + ", ".join(f"`{v}`" for v in values) + "."
        params.append(Param(field.name, _type_name(field), description.strip(), required))
    return tuple(params)


def _build() -> dict[str, TransformKind]:
    kinds: dict[str, TransformKind] = {}
    oneof = step_pb2.TransformSpec.DESCRIPTOR.oneofs_by_name["kind"]
    for field in oneof.fields:
        if field.name not in _KINDS:
            continue
        description, low, high, streaming, compile_sql, make_operator, example = _KINDS[field.name]
        kinds[field.name] = TransformKind(
            name=field.name,
            description=description,
            parameters=_parameters(field.name, field.message_type),
            min_inputs=low,
            max_inputs=high,
            streaming=streaming,
            compile_sql=compile_sql,
            make_operator=make_operator,
            example=example,
        )
    return kinds


TRANSFORM_KINDS: dict[str, TransformKind] = _build()


def transforms_markdown(kinds: dict[str, TransformKind] | None = None) -> str:
    """The whole of docs/transforms.md."""
    kinds = TRANSFORM_KINDS if kinds is None else kinds
    lines = [
        "# Transforms",
        "",
        "<!-- Generated by scripts/gen-docs from "
        "services/datadog_platform/executor/transforms/registry.py; do not edit. -->",
        "",
        "A transform step sets exactly one kind under `transform:`; its parameters are the",
        "fields of that kind's message in `protos/datadog_platform/api/common/v1/step.proto`",
        "(YAML/JSON pipeline files are the protobuf JSON mapping, so `lowerCamelCase` names",
        "are accepted too). The executor's `ListTransformTypes` RPC (and the scheduler's,",
        "which relays it) describes the same catalogue.",
        "",
        "## SQL dialect",
        "",
        "Expressions (`filter`, `derive`, `aggregate`, `check` predicates) and `sql` queries",
        "are [DuckDB SQL](https://duckdb.org/docs/sql/introduction). An expression is exactly",
        "one expression: no subqueries, no `*`, and no window functions outside `sql`. Quote",
        'identifiers with double quotes (`"order date"`), strings with single quotes. Queries',
        "run in a sandbox that cannot read files, reach the network or load extensions.",
        "",
        "## Streaming and blocking",
        "",
        "Streaming transforms handle one batch at a time in bounded memory. Blocking ones",
        "(sort, dedupe, aggregate, join, `sql`, a `distinct` union) need their whole input",
        "before their first output row and spill to the executor's disk beyond its memory",
        "limit (`--memory-limit`, `--spill-dir`). Unless it is sorted, the order of a",
        "blocking transform's output is unspecified.",
        "",
        "| transform | inputs | streaming | description |",
        "|---|---|---|---|",
    ]
    for kind in kinds.values():
        lines.append(
            f"| [`{kind.name}`](#{kind.name}) | {_inputs(kind)} | "
            f"{'yes' if kind.streaming else 'no'} | {kind.description} |"
        )
    for kind in kinds.values():
        lines += [
            "",
            f"## `{kind.name}`",
            "",
            f"{kind.description} Inputs: {_inputs(kind)}; "
            f"{'streaming' if kind.streaming else 'blocking'}.",
            "",
            "| parameter | type | required | description |",
            "|---|---|---|---|",
        ]
        for param in kind.parameters:
            description = param.description.replace("|", r"\|")
            lines.append(
                f"| `{param.name}` | `{param.type}` | {'yes' if param.required else 'no'} | "
                f"{description} |"
            )
        lines += ["", "```yaml", f"- name: {kind.name}_step"]
        lines += ["  " + line for line in kind.example.splitlines()]
        lines.append("```")
    return "\n".join(lines) + "\n"


def _inputs(kind: TransformKind) -> str:
    if kind.max_inputs == kind.min_inputs:
        return str(kind.min_inputs)
    if kind.max_inputs == 0:
        return f"{kind.min_inputs}+"
    return f"{kind.min_inputs} to {kind.max_inputs}"


def main() -> None:
    """Print docs/transforms.md (``python -m datadog_platform.executor.transforms.registry``)."""
    print(transforms_markdown(), end="")


if __name__ == "__main__":
    main()

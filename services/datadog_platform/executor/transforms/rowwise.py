"""Row-wise transforms: each output row depends on one input row, so they stream.

All compile to a SELECT over their input except cast, a Python operator so that
its semantics are exactly Arrow's (safe casts fail on overflow and truncation).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.arrow_types import parse_arrow_type
from datadog_platform.core.tasks import CheckResult
from datadog_platform.executor.transforms.base import SqlContext
from datadog_platform.executor.transforms.errors import TransformError
from datadog_platform.executor.transforms.sql import (
    cast_problem,
    expression_problem,
    expression_type,
    paren,
    quote,
    sql_types,
    typed_literal,
    value_text,
)


def compile_select(ctx: SqlContext) -> str:
    """Keep ``columns``, in their order."""
    spec: step_pb2.SelectTransform = ctx.spec
    relation, schema = ctx.inputs[0], ctx.schemas[0]
    columns = list(spec.columns)
    if not columns:
        raise TransformError(ctx.step, "select.columns", "select needs at least one column")
    for i, column in enumerate(columns):
        require_column(ctx.step, f"select.columns[{i}]", schema, column, "select")
    _refuse_duplicates(ctx.step, "select.columns", "select", columns)
    return f"SELECT {_list(columns)} FROM {relation}"


def compile_drop(ctx: SqlContext) -> str:
    """Everything but ``columns``."""
    spec: step_pb2.DropTransform = ctx.spec
    relation, schema = ctx.inputs[0], ctx.schemas[0]
    if not spec.columns:
        raise TransformError(ctx.step, "drop.columns", "drop needs at least one column")
    if not spec.ignore_missing:
        for i, column in enumerate(spec.columns):
            require_column(ctx.step, f"drop.columns[{i}]", schema, column, "drop")
    dropped = set(spec.columns)
    kept = [name for name in schema.names if name not in dropped]
    if not kept:
        raise TransformError(ctx.step, "drop.columns", "drop would remove every column")
    return f"SELECT {_list(kept)} FROM {relation}"


def compile_rename(ctx: SqlContext) -> str:
    """Rename ``columns`` (old → new); the order of the columns is kept."""
    spec: step_pb2.RenameTransform = ctx.spec
    relation, schema = ctx.inputs[0], ctx.schemas[0]
    if not spec.columns:
        raise TransformError(ctx.step, "rename.columns", "rename needs at least one column")
    for old, new in sorted(spec.columns.items()):
        require_column(ctx.step, f"rename.columns[{old!r}]", schema, old, "rename")
        if not new:
            raise TransformError(
                ctx.step, f"rename.columns[{old!r}]", f"rename column {old!r}: new name is empty"
            )
    names = [spec.columns.get(name, name) for name in schema.names]
    _refuse_duplicates(ctx.step, "rename.columns", "rename: output", names)
    items = [
        f"{quote(name)} AS {quote(spec.columns[name])}" if name in spec.columns else quote(name)
        for name in schema.names
    ]
    return f"SELECT {', '.join(items)} FROM {relation}"


def compile_filter(ctx: SqlContext) -> str:
    """The rows where ``predicate`` is true (false and NULL drop the row, as in WHERE)."""
    spec: step_pb2.FilterTransform = ctx.spec
    relation, schema = ctx.inputs[0], ctx.schemas[0]
    predicate = spec.predicate

    def fail(problem: str) -> TransformError:
        return TransformError(
            ctx.step, "filter.predicate", f"filter predicate {predicate!r} failed: {problem}"
        )

    problem = expression_problem(predicate)
    if problem:
        raise fail(problem)
    sql_type, problem = expression_type(predicate, schema)
    if problem:
        raise fail(problem)
    if sql_type not in ("BOOLEAN", '"NULL"', "NULL"):
        raise fail(f"must be a boolean expression, not {sql_type}")
    return f"SELECT * FROM {relation} WHERE {paren(predicate)}"


def compile_derive(ctx: SqlContext) -> str:
    """Add or replace ``columns``, each computed from the input's columns."""
    spec: step_pb2.DeriveTransform = ctx.spec
    relation, schema = ctx.inputs[0], ctx.schemas[0]
    if not spec.columns:
        raise TransformError(ctx.step, "derive.columns", "derive needs at least one column")
    derived: dict[str, str] = {}
    for i, column in enumerate(spec.columns):
        field = f"derive.columns[{i}]"
        if not column.name:
            raise TransformError(ctx.step, f"{field}.name", "derive column name is empty")
        if column.name in derived:
            raise TransformError(
                ctx.step, f"{field}.name", f"derive column {column.name!r} is derived twice"
            )
        problem = expression_problem(column.expr)
        if not problem:
            _, problem = expression_type(column.expr, schema)
        if problem:
            raise TransformError(
                ctx.step,
                f"{field}.expr",
                f"derive column {column.name!r} expression {column.expr!r} failed: {problem}",
            )
        derived[column.name] = column.expr
    items = [
        f"{paren(derived[name])} AS {quote(name)}" if name in derived else quote(name)
        for name in schema.names
    ]
    items += [f"{paren(e)} AS {quote(n)}" for n, e in derived.items() if n not in schema.names]
    return f"SELECT {', '.join(items)} FROM {relation}"


def compile_fill_null(ctx: SqlContext) -> str:
    """Replace the NULLs of each column of ``values`` with its value, cast to the column's type."""
    spec: step_pb2.FillNullTransform = ctx.spec
    relation, schema = ctx.inputs[0], ctx.schemas[0]
    if not spec.values:
        raise TransformError(ctx.step, "fill_null.values", "fill_null needs at least one column")
    types = dict(zip(schema.names, sql_types(schema), strict=True))
    fills: dict[str, str] = {}
    for column, value in sorted(spec.values.items()):
        field = f"fill_null.values[{column!r}]"
        require_column(ctx.step, field, schema, column, "fill_null")
        try:
            text = value_text(value)
            if text is None:
                raise ValueError("must not be null")
            literal = typed_literal(value, types[column])
        except ValueError as exc:
            raise TransformError(
                ctx.step, field, f"fill_null column {column!r}: value {exc}"
            ) from None
        problem = cast_problem(literal)
        if problem:
            raise TransformError(
                ctx.step,
                field,
                f"fill_null column {column!r}: value {text!r} is not a {types[column]}: {problem}",
            )
        fills[column] = literal
    items = [
        f"coalesce({quote(n)}, {fills[n]}) AS {quote(n)}" if n in fills else quote(n)
        for n in schema.names
    ]
    return f"SELECT {', '.join(items)} FROM {relation}"


def compile_drop_null(ctx: SqlContext) -> str:
    """Remove rows with a NULL in ``columns`` (any of them, or all of them with ``all``)."""
    spec: step_pb2.DropNullTransform = ctx.spec
    relation, schema = ctx.inputs[0], ctx.schemas[0]
    for i, column in enumerate(spec.columns):
        require_column(ctx.step, f"drop_null.columns[{i}]", schema, column, "drop_null")
    columns = list(dict.fromkeys(spec.columns)) or schema.names
    joiner = " OR " if spec.all else " AND "
    return (
        f"SELECT * FROM {relation} WHERE {joiner.join(f'{quote(c)} IS NOT NULL' for c in columns)}"
    )


def compile_limit(ctx: SqlContext) -> str:
    """At most ``count`` rows after skipping ``offset`` rows, in input order."""
    spec: step_pb2.LimitTransform = ctx.spec
    if spec.count < 0:
        raise TransformError(ctx.step, "limit.count", f"limit count {spec.count} is negative")
    if spec.offset < 0:
        raise TransformError(ctx.step, "limit.offset", f"limit offset {spec.offset} is negative")
    return f"SELECT * FROM {ctx.inputs[0]} LIMIT {int(spec.count)} OFFSET {int(spec.offset)}"


class CastOperator:
    """Casts columns with Arrow's own kernels: safe casts fail on overflow, truncation
    and unparsable strings; unsafe ones truncate or wrap as Arrow does."""

    quarantine: step_pb2.SinkSpec | None = None

    def __init__(self, step: str, spec: step_pb2.CastTransform, schema: pa.Schema) -> None:
        self.step = step
        self._safe = not spec.allow_unsafe
        if not spec.columns:
            raise TransformError(step, "cast.columns", "cast needs at least one column")
        self._casts: dict[str, tuple[pa.DataType, str]] = {}
        fields = list(schema)
        for i, cast in enumerate(spec.columns):
            field = f"cast.columns[{i}]"
            require_column(step, f"{field}.column", schema, cast.column, "cast")
            if cast.column in self._casts:
                raise TransformError(
                    step, f"{field}.column", f"cast column {cast.column!r} is cast twice"
                )
            try:
                target = parse_arrow_type(cast.type)
            except ValueError as exc:
                raise TransformError(
                    step, f"{field}.type", f"cast column {cast.column!r}: {exc}"
                ) from None
            index = schema.get_field_index(cast.column)
            source = schema.field(index).type
            try:
                # Kernels are chosen by type, so an empty array tells whether Arrow can
                # cast at all before any data moves.
                pc.cast(pa.array([], type=source), target, safe=self._safe)
            except pa.ArrowNotImplementedError:
                raise TransformError(
                    step,
                    f"{field}.type",
                    f"cast column {cast.column!r}: Arrow cannot cast {source} to {target}",
                ) from None
            self._casts[cast.column] = (target, f"{field}.type")
            fields[index] = fields[index].with_type(target)
        self.output_schema = pa.schema(fields, metadata=schema.metadata)

    def process(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.RecordBatch | None]:
        """``batch`` with the columns cast (blocking CPU work)."""
        arrays = list(batch.columns)
        for column, (target, field) in self._casts.items():
            index = batch.schema.get_field_index(column)
            source = arrays[index].type
            try:
                arrays[index] = pc.cast(arrays[index], target, safe=self._safe)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                hint = (
                    " (allow_unsafe lets overflows and truncations through)" if self._safe else ""
                )
                raise TransformError(
                    self.step,
                    field,
                    f"cast column {column!r} from {source} to {target} failed: {exc}{hint}",
                ) from None
        return pa.RecordBatch.from_arrays(arrays, schema=self.output_schema), None

    def finish(self) -> None:
        """Nothing is held back between batches."""

    def results(self) -> tuple[CheckResult, ...]:
        """A cast records no check results."""
        return ()

    def close(self) -> None:
        """Nothing to release."""


def make_cast_operator(step: str, spec: step_pb2.CastTransform, schema: pa.Schema) -> CastOperator:
    """The cast operator of step ``step`` bound to its input ``schema``."""
    return CastOperator(step, spec, schema)


def require_column(step: str, field: str, schema: pa.Schema, column: str, what: str) -> None:
    """Raise a TransformError naming ``column`` when ``schema`` lacks it."""
    if column not in schema.names:
        raise TransformError(
            step,
            field,
            f"{what} column {column!r} does not exist (input columns: {_names(schema.names)})",
        )


def _refuse_duplicates(step: str, field: str, what: str, names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise TransformError(step, field, f"{what} column {name!r} appears twice")
        seen.add(name)


def _list(columns: Iterable[str]) -> str:
    return ", ".join(quote(c) for c in columns)


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:20])
    return shown + (f" and {len(names) - 20} more" if len(names) > 20 else "")

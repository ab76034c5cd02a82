"""Create-time validation of every transform kind: one field violation per problem.

Paths extend the step's, e.g. ``pipeline.steps[3].transform.join.on``. What needs the
data (an unknown column, a type mismatch) is the executor's to report when the stage
binds its inputs; here: required fields, lists that must not be empty or repeat
themselves, SQL that must parse (:mod:`sql_checks`), Arrow type strings (the
executor's own parser, :mod:`datadog_platform.core.arrow_types`), bounds, and the rules
of checks (QUARANTINE only on row checks and only with a quarantine sink).

Regular expressions of regex checks are compiled with Python's ``re``, close enough to
RE2 (the executor's) to catch a malformed pattern; RE2 refuses a few constructs that
``re`` accepts (backreferences, lookarounds), which then fail the stage at run time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from google.protobuf import struct_pb2

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.arrow_types import parse_arrow_type
from datadog_platform.core.errors import FieldViolation
from datadog_platform.scheduler.sql_checks import (
    ExpressionKind,
    expression_problem,
    prefetch,
    query_problem,
)

SinkValidator = Callable[[str, step_pb2.SinkSpec], list[FieldViolation]]

#: Inputs each transform kind takes: (fewest, most; None: no limit).
INPUT_ARITY: dict[str, tuple[int, int | None]] = {
    "join": (2, 2),
    "union": (2, None),
    "sql": (1, None),
}
_ONE_INPUT = (1, 1)

_KINDS = ", ".join(f.name for f in step_pb2.TransformSpec.DESCRIPTOR.oneofs_by_name["kind"].fields)
_JOIN_TYPES = frozenset(step_pb2.JoinType.values())
_MISSING_COLUMNS = frozenset(step_pb2.MissingColumns.values())
_NULLS_ORDERS = frozenset(step_pb2.NullsOrder.values())
_DEDUPE_KEEPS = frozenset(step_pb2.DedupeKeep.values())
_CHECK_ACTIONS = frozenset(step_pb2.CheckAction.values())
#: Checks judged row by row, whose failing rows can be quarantined.
_ROW_CHECKS = frozenset({"not_null", "accepted_values", "range", "regex", "expression"})
_CHECK_KINDS = "not_null, unique, accepted_values, range, regex, row_count or expression"
_DEFAULT_RIGHT_SUFFIX = "_right"


def prefetch_sql(steps: Iterable[step_pb2.Step]) -> None:
    """Parse every SQL text of ``steps`` in one go (see :func:`sql_checks.prefetch`)."""
    expressions: list[str] = []
    queries: list[str] = []
    for step in steps:
        if step.WhichOneof("kind") != "transform":
            continue
        transform = step.transform
        kind = transform.WhichOneof("kind")
        if kind == "filter":
            expressions.append(transform.filter.predicate)
        elif kind == "derive":
            expressions += [c.expr for c in transform.derive.columns]
        elif kind == "aggregate":
            expressions += [a.expr for a in transform.aggregate.aggregates]
        elif kind == "check":
            expressions += [
                c.expression.predicate for c in transform.check.checks if c.HasField("expression")
            ]
        elif kind == "sql":
            queries.append(transform.sql.query)
    prefetch(expressions, queries)


def input_arity(transform: step_pb2.TransformSpec) -> tuple[int, int | None]:
    """How many inputs a transform step takes: (fewest, most; None: no limit)."""
    return INPUT_ARITY.get(transform.WhichOneof("kind") or "", _ONE_INPUT)


def transform_violations(
    path: str,
    transform: step_pb2.TransformSpec,
    inputs: Sequence[str],
    sink_violations: SinkValidator,
) -> list[FieldViolation]:
    """The problems of one transform's options (``path`` ends in ``.transform``).

    ``inputs``: the step's inputs (the sql transform's tables); ``sink_violations``
    validates a check's quarantine sink like any sink spec.
    """
    kind = transform.WhichOneof("kind")
    if kind is None:
        return [FieldViolation(path, f"must set a kind of transform ({_KINDS})")]
    sub = f"{path}.{kind}"
    if kind == "filter":
        return _predicate_violations(f"{sub}.predicate", transform.filter.predicate)
    if kind == "select":
        return _columns(f"{sub}.columns", transform.select.columns, "keep", required=True)
    if kind == "drop":
        return _columns(f"{sub}.columns", transform.drop.columns, "drop", required=True)
    if kind == "rename":
        return _rename_violations(f"{sub}.columns", transform.rename.columns)
    if kind == "cast":
        return _cast_violations(sub, transform.cast)
    if kind == "derive":
        return _derive_violations(f"{sub}.columns", transform.derive)
    if kind == "fill_null":
        return _fill_null_violations(f"{sub}.values", transform.fill_null.values)
    if kind == "drop_null":
        return _columns(f"{sub}.columns", transform.drop_null.columns, "look at")
    if kind == "dedupe":
        return _dedupe_violations(sub, transform.dedupe)
    if kind == "sort":
        return _sort_key_violations(f"{sub}.keys", transform.sort.keys, required=True)
    if kind == "limit":
        return _limit_violations(sub, transform.limit)
    if kind == "aggregate":
        return _aggregate_violations(sub, transform.aggregate)
    if kind == "join":
        return _join_violations(sub, transform.join)
    if kind == "union":
        if transform.union.missing_columns not in _MISSING_COLUMNS:
            return [FieldViolation(f"{sub}.missing_columns", "unknown missing-columns policy")]
        return []
    if kind == "sql":
        problem = query_problem(transform.sql.query, inputs)
        return [FieldViolation(f"{sub}.query", problem)] if problem else []
    return _check_violations(sub, transform.check, sink_violations)


# --- columns and expressions -----------------------------------------------------------


def _columns(
    path: str, columns: Sequence[str], verb: str, *, required: bool = False
) -> list[FieldViolation]:
    """Column names: none empty, none twice; at least one if ``required``."""
    if required and not columns:
        return [FieldViolation(path, f"must name at least one column to {verb}")]
    violations: list[FieldViolation] = []
    seen: dict[str, int] = {}
    for i, column in enumerate(columns):
        if not column.strip():
            violations.append(FieldViolation(f"{path}[{i}]", "must not be empty"))
        elif column in seen:
            violations.append(
                FieldViolation(
                    f"{path}[{i}]", f'duplicate column "{column}" (also [{seen[column]}])'
                )
            )
        else:
            seen[column] = i
    return violations


def _column(path: str, column: str) -> list[FieldViolation]:
    return [FieldViolation(path, "is required")] if not column.strip() else []


def _predicate_violations(path: str, predicate: str) -> list[FieldViolation]:
    # One parse covers what core.expressions.predicate_problem checks (syntax, a single
    # statement) and the shape of the expression, at half the cost.
    problem = expression_problem(predicate)
    return [FieldViolation(path, problem)] if problem else []


def _expression_violations(path: str, expr: str, kind: ExpressionKind) -> list[FieldViolation]:
    problem = expression_problem(expr, kind)
    return [FieldViolation(path, problem)] if problem else []


def _names(path: str, names: Sequence[str], what: str) -> list[FieldViolation]:
    """Output column names at ``path[i].name``: required and distinct."""
    violations: list[FieldViolation] = []
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        field = f"{path}[{i}].name"
        if not name.strip():
            violations.append(FieldViolation(field, "is required"))
        elif name in seen:
            violations.append(
                FieldViolation(field, f'duplicate {what} "{name}" (also [{seen[name]}])')
            )
        else:
            seen[name] = i
    return violations


# --- one-input transforms -----------------------------------------------------------------


def _rename_violations(path: str, columns: Mapping[str, str]) -> list[FieldViolation]:
    if not columns:
        return [FieldViolation(path, "must rename at least one column (old name → new name)")]
    violations: list[FieldViolation] = []
    targets: dict[str, str] = {}
    for old in sorted(columns):
        field = f"{path}[{json.dumps(old)}]"
        new = columns[old]
        if not old.strip():
            violations.append(FieldViolation(field, "the column to rename must not be empty"))
        if not new.strip():
            violations.append(FieldViolation(field, "the new name must not be empty"))
        elif new in targets:
            violations.append(FieldViolation(field, f'"{targets[new]}" is renamed to "{new}" too'))
        else:
            targets[new] = old
    return violations


def _cast_violations(path: str, cast: step_pb2.CastTransform) -> list[FieldViolation]:
    if not cast.columns:
        return [FieldViolation(f"{path}.columns", "must cast at least one column")]
    violations: list[FieldViolation] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(cast.columns):
        sub = f"{path}.columns[{i}]"
        if not item.column.strip():
            violations.append(FieldViolation(f"{sub}.column", "is required"))
        elif item.column in seen:
            violations.append(
                FieldViolation(
                    f"{sub}.column",
                    f'column "{item.column}" is cast twice (also [{seen[item.column]}])',
                )
            )
        else:
            seen[item.column] = i
        try:
            parse_arrow_type(item.type)
        except ValueError as exc:
            violations.append(FieldViolation(f"{sub}.type", str(exc)))
    return violations


def _derive_violations(path: str, derive: step_pb2.DeriveTransform) -> list[FieldViolation]:
    if not derive.columns:
        return [FieldViolation(path, "must derive at least one column")]
    violations = _names(path, [c.name for c in derive.columns], "derived column")
    for i, column in enumerate(derive.columns):
        violations += _expression_violations(
            f"{path}[{i}].expr", column.expr, ExpressionKind.SCALAR
        )
    return violations


def _fill_null_violations(
    path: str, values: Mapping[str, struct_pb2.Value]
) -> list[FieldViolation]:
    if not values:
        return [FieldViolation(path, "must give at least one column's replacement value")]
    violations: list[FieldViolation] = []
    for column in sorted(values):
        field = f"{path}[{json.dumps(column)}]"
        if not column.strip():
            violations.append(FieldViolation(field, "the column name must not be empty"))
        problem = _scalar_problem(values[column], allow_null=False)
        if problem:
            violations.append(FieldViolation(field, problem))
    return violations


def _scalar_problem(value: struct_pb2.Value, *, allow_null: bool) -> str | None:
    kind = value.WhichOneof("kind")
    if kind is None or (kind == "null_value" and not allow_null):
        return "must be a number, a string or a boolean, not null"
    if kind in ("struct_value", "list_value"):
        return "must be a number, a string or a boolean, not an object or a list"
    return None


def _sort_key_violations(
    path: str, keys: Sequence[step_pb2.SortKey], *, required: bool = False
) -> list[FieldViolation]:
    if required and not keys:
        return [FieldViolation(path, "must have at least one sort key")]
    violations: list[FieldViolation] = []
    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        sub = f"{path}[{i}]"
        if not key.column.strip():
            violations.append(FieldViolation(f"{sub}.column", "is required"))
        elif key.column in seen:
            violations.append(
                FieldViolation(
                    f"{sub}.column",
                    f'duplicate sort column "{key.column}" (also [{seen[key.column]}])',
                )
            )
        else:
            seen[key.column] = i
        if key.nulls not in _NULLS_ORDERS:
            violations.append(FieldViolation(f"{sub}.nulls", "unknown NULLs order"))
    return violations


def _dedupe_violations(path: str, dedupe: step_pb2.DedupeTransform) -> list[FieldViolation]:
    violations = _columns(f"{path}.keys", dedupe.keys, "deduplicate on")
    violations += _sort_key_violations(f"{path}.order_by", dedupe.order_by)
    if dedupe.keep not in _DEDUPE_KEEPS:
        violations.append(FieldViolation(f"{path}.keep", "unknown keep policy"))
    return violations


def _limit_violations(path: str, limit: step_pb2.LimitTransform) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if limit.count < 0:
        violations.append(FieldViolation(f"{path}.count", "must not be negative"))
    if limit.offset < 0:
        violations.append(FieldViolation(f"{path}.offset", "must not be negative"))
    return violations


def _aggregate_violations(
    path: str, aggregate: step_pb2.AggregateTransform
) -> list[FieldViolation]:
    violations = _columns(f"{path}.group_by", aggregate.group_by, "group by")
    if not aggregate.aggregates and not aggregate.group_by:
        violations.append(
            FieldViolation(
                f"{path}.aggregates", "must compute at least one aggregate unless group_by is set"
            )
        )
    sub = f"{path}.aggregates"
    violations += _names(sub, [a.name for a in aggregate.aggregates], "aggregate")
    keys = set(aggregate.group_by)
    for i, item in enumerate(aggregate.aggregates):
        if item.name in keys:
            violations.append(
                FieldViolation(f"{sub}[{i}].name", f'"{item.name}" is also a group_by column')
            )
        violations += _expression_violations(
            f"{sub}[{i}].expr", item.expr, ExpressionKind.AGGREGATE
        )
    return violations


# --- multi-input transforms ---------------------------------------------------------------


def _join_violations(path: str, join: step_pb2.JoinTransform) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if join.type not in _JOIN_TYPES:
        violations.append(FieldViolation(f"{path}.type", "unknown join type"))
    if not join.on:
        violations.append(
            FieldViolation(
                f"{path}.on",
                "a join needs at least one key pair (left: a column of inputs[0], "
                "right: a column of inputs[1])",
            )
        )
    seen: dict[tuple[str, str], int] = {}
    for i, key in enumerate(join.on):
        sub = f"{path}.on[{i}]"
        violations += _column(f"{sub}.left", key.left)
        violations += _column(f"{sub}.right", key.right)
        pair = (key.left, key.right)
        if key.left.strip() and key.right.strip():
            if pair in seen:
                violations.append(FieldViolation(sub, f"duplicate key pair (also [{seen[pair]}])"))
            else:
                seen[pair] = i
    if join.left_suffix == (join.right_suffix or _DEFAULT_RIGHT_SUFFIX):
        violations.append(
            FieldViolation(
                f"{path}.right_suffix",
                "must differ from left_suffix, or clashing columns would keep clashing",
            )
        )
    return violations


# --- checks ---------------------------------------------------------------------------------


def _check_violations(
    path: str, check: step_pb2.CheckTransform, sink_violations: SinkValidator
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if check.on_failure not in _CHECK_ACTIONS:
        violations.append(FieldViolation(f"{path}.on_failure", "unknown check action"))
    if not check.checks:
        violations.append(FieldViolation(f"{path}.checks", "must have at least one check"))
    violations += _names(f"{path}.checks", [c.name for c in check.checks], "check name")
    quarantines = False
    for i, item in enumerate(check.checks):
        sub = f"{path}.checks[{i}]"
        kind = item.WhichOneof("kind")
        if kind is None:
            violations.append(FieldViolation(sub, f"must set a kind of check ({_CHECK_KINDS})"))
        else:
            violations += _check_kind_violations(f"{sub}.{kind}", item)
        if item.on_failure not in _CHECK_ACTIONS:
            violations.append(FieldViolation(f"{sub}.on_failure", "unknown check action"))
            continue
        action = item.on_failure or check.on_failure
        if action != step_pb2.CHECK_ACTION_QUARANTINE:
            continue
        quarantines = True
        if kind is not None and kind not in _ROW_CHECKS:
            field = f"{sub}.on_failure" if item.on_failure else f"{path}.on_failure"
            violations.append(
                FieldViolation(
                    field,
                    f"CHECK_ACTION_QUARANTINE applies to row checks only; check "
                    f'"{item.name}" ({kind}) judges the rows as a whole: use FAIL or WARN',
                )
            )
    if quarantines and not check.HasField("quarantine"):
        violations.append(
            FieldViolation(
                f"{path}.quarantine",
                "is required: a check quarantines rows (CHECK_ACTION_QUARANTINE)",
            )
        )
    elif check.HasField("quarantine"):
        if not quarantines:
            violations.append(
                FieldViolation(
                    f"{path}.quarantine",
                    "is set but no check quarantines rows (CHECK_ACTION_QUARANTINE)",
                )
            )
        violations += sink_violations(f"{path}.quarantine", check.quarantine)
    return violations


def _check_kind_violations(path: str, check: step_pb2.Check) -> list[FieldViolation]:
    kind = check.WhichOneof("kind")
    if kind == "not_null":
        return _columns(f"{path}.columns", check.not_null.columns, "check", required=True)
    if kind == "unique":
        return _columns(f"{path}.columns", check.unique.columns, "check", required=True)
    if kind == "accepted_values":
        accepted = check.accepted_values
        violations = _column(f"{path}.column", accepted.column)
        if not accepted.values:
            violations.append(FieldViolation(f"{path}.values", "must list at least one value"))
        for i, value in enumerate(accepted.values):
            problem = _scalar_problem(value, allow_null=True)
            if problem:
                violations.append(FieldViolation(f"{path}.values[{i}]", problem))
        return violations
    if kind == "range":
        return _range_violations(path, check.range)
    if kind == "regex":
        violations = _column(f"{path}.column", check.regex.column)
        if not check.regex.pattern:
            violations.append(FieldViolation(f"{path}.pattern", "is required"))
        else:
            try:
                re.compile(check.regex.pattern)
            except re.error as exc:
                violations.append(
                    FieldViolation(f"{path}.pattern", f"is not a valid regular expression: {exc}")
                )
        return violations
    if kind == "row_count":
        return _row_count_violations(path, check.row_count)
    return _predicate_violations(f"{path}.predicate", check.expression.predicate)


def _range_violations(path: str, bounds: step_pb2.RangeCheck) -> list[FieldViolation]:
    violations = _column(f"{path}.column", bounds.column)
    given = [name for name in ("min", "max") if bounds.HasField(name)]
    if not given:
        violations.append(FieldViolation(path, "needs min, max or both"))
    for name in given:
        value = getattr(bounds, name)
        if value.WhichOneof("kind") not in ("number_value", "string_value"):
            violations.append(
                FieldViolation(f"{path}.{name}", "must be a number or a string (e.g. a date)")
            )
    if len(given) == 2:
        low, high = bounds.min, bounds.max
        same = low.WhichOneof("kind") == high.WhichOneof("kind")
        if (
            same
            and low.WhichOneof("kind") == "number_value"
            and low.number_value > high.number_value
        ):
            violations.append(FieldViolation(f"{path}.max", "must not be less than min"))
    return violations


def _row_count_violations(path: str, count: step_pb2.RowCountCheck) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    given = [name for name in ("min", "max") if count.HasField(name)]
    if not given:
        violations.append(FieldViolation(path, "needs min, max or both"))
    for name in given:
        if getattr(count, name) < 0:
            violations.append(FieldViolation(f"{path}.{name}", "must not be negative"))
    if len(given) == 2 and count.min > count.max >= 0:
        violations.append(FieldViolation(f"{path}.max", "must not be less than min"))
    return violations

"""The ``check`` transform: data-quality checks as a Python batch operator.

Row checks (not_null, accepted_values, range, regex, expression) judge each row of
each batch, vectorised: pyarrow.compute for the first four (regular expressions
are RE2, as ``pc.match_substring_regex`` compiles them) and one sandboxed DuckDB
query per batch for all expression predicates together, computed as a boolean mask
the way the filter transform does, so rows keep their exact Arrow types. NULL
passes every row check except not_null, as in SQL constraints.

A row failing a QUARANTINE check goes to the quarantine output with an extra
``_failed_checks`` column (list<string>) naming *every* row check it failed, in
the step's order; the other rows go on. WARN only counts. FAIL counts too, and
``finish()`` then raises CHECK_FAILED: failing at the end rather than at the first
bad row is deliberate, since sinks commit only when the stage finishes, nothing
is committed either way and the report names every failed check with its count
and a sample.

Dataset checks judge all rows at ``finish()``: row_count compares a counter; unique
is exact. Its key columns are appended batch by batch to a DuckDB table and
grouped once at the end. A set of 64-bit hashes would be smaller but neither
bounded (8+ bytes per distinct key in RAM, far more as a Python set) nor exact
(a collision reports a duplicate that is not there: ~3% odds at 10^9 keys);
DuckDB keeps the keys under ``memory_limit``, spills the table and the GROUP BY
to ``spill_dir``, and the answer is exact. Measured: 30 M distinct (BIGINT,
VARCHAR) keys under a 256 MB limit, 1.6 s of appends and 8 s of grouping on one
thread. Rows with a NULL key are not compared (as a SQL UNIQUE constraint does);
both dataset checks count every input row, quarantined or not.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import struct_pb2

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.core.expressions import predicate_problem
from datadog_platform.core.tasks import CheckResult
from datadog_platform.executor.transforms.errors import TRANSFORM_ERROR, TransformError

#: Reason of the stage failure when a FAIL check failed (not retryable: the data is wrong).
CHECK_FAILED = "CHECK_FAILED"
#: Column added to quarantined rows: the names of the row checks each failed.
FAILED_CHECKS_COLUMN = "_failed_checks"
FAILED_CHECKS_TYPE = pa.list_(pa.string())

DEFAULT_MEMORY_LIMIT = "256MB"

_ACTIONS = {
    step_pb2.CHECK_ACTION_FAIL: "FAIL",
    step_pb2.CHECK_ACTION_WARN: "WARN",
    step_pb2.CHECK_ACTION_QUARANTINE: "QUARANTINE",
}
_ROW_KINDS = frozenset({"not_null", "accepted_values", "range", "regex", "expression"})
# The name of the batch inside DuckDB; predicates refer to its columns only.
_INPUT_TABLE = "input"
_SAMPLE_CHARS = 80


def make_check_operator(
    step: str,
    spec: step_pb2.CheckTransform,
    schema: pa.Schema,
    *,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    spill_dir: str | None = None,
) -> CheckOperator:
    """The checks of step ``step`` bound to ``schema`` (blocking: probes the predicates).

    ``memory_limit`` and ``spill_dir`` bound the DuckDB connection that evaluates
    expression checks and keeps the keys of unique checks. Raises TRANSFORM_ERROR
    naming the step, the check and the column when a check cannot apply to ``schema``.
    """
    return CheckOperator(step, spec, schema, memory_limit=memory_limit, spill_dir=spill_dir)


class CheckOperator:
    """A BatchOperator: its output is its input minus the quarantined rows."""

    def __init__(
        self,
        step: str,
        spec: step_pb2.CheckTransform,
        schema: pa.Schema,
        *,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        spill_dir: str | None = None,
    ) -> None:
        self.step = step
        self.output_schema = schema
        self._row_checks: list[_RowCheck] = []
        self._expressions: list[_Expression] = []
        self._uniques: list[_Unique] = []
        self._row_counts: list[_RowCount] = []
        self._bind(spec, schema)
        quarantining = any(c.action == "QUARANTINE" for c in self._row_checks)
        if quarantining and not spec.HasField("quarantine"):
            raise _error(
                step, "quarantine", "a check quarantines rows but no quarantine sink is set"
            )
        if quarantining and FAILED_CHECKS_COLUMN in schema.names:
            raise _error(
                step,
                "quarantine",
                f"the input already has a column {FAILED_CHECKS_COLUMN!r}, which quarantined "
                "rows get: rename or drop it before this step",
            )
        #: Where quarantined rows go (None: no check quarantines).
        self.quarantine: step_pb2.SinkSpec | None = spec.quarantine if quarantining else None
        #: Schema of the quarantined batches: the input's plus ``_failed_checks``.
        self.quarantine_schema: pa.Schema | None = (
            schema.append(pa.field(FAILED_CHECKS_COLUMN, FAILED_CHECKS_TYPE, nullable=False))
            if quarantining
            else None
        )
        self._names = pa.array([c.name for c in self._row_checks], pa.string())
        self._rows = 0
        self._results: tuple[CheckResult, ...] | None = None
        # Guards the connection: close() may come from the event loop while a
        # cancelled stage's process() still runs in its worker thread.
        self._lock = threading.Lock()
        self._closed = False
        self._con: duckdb.DuckDBPyConnection | None = None
        self._spill: str | None = None
        if self._expressions or self._uniques:
            self._open(schema, memory_limit, spill_dir)

    # --- BatchOperator --------------------------------------------------------------------

    def process(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.RecordBatch | None]:
        """(rows that go on, quarantined rows or None); blocking, call it off the event loop."""
        with self._using():
            return self._process(batch)

    def finish(self) -> None:
        """Judge the dataset checks; raise CHECK_FAILED if a FAIL check failed."""
        with self._using():
            for unique in self._uniques:
                unique.judge(lambda sql, unique=unique: self._run(sql, unique))
            self._release()
        for count in self._row_counts:
            count.judge(self._rows)
        checks = [*self._row_checks, *self._uniques, *self._row_counts]
        by_name = {c.name: c for c in checks}
        self._results = tuple(self._result(by_name[name]) for name in self._order)
        failed = [r for r in self._results if not r.passed and r.action == "FAIL"]
        if failed:
            listed = "; ".join(f"{r.check!r}: {r.message}" for r in failed)
            raise DomainError(
                ErrorCode.FAILED_PRECONDITION,
                CHECK_FAILED,
                f"step {self.step!r}: {_count(len(failed), 'check')} failed: {listed}",
                {"step": self.step, "checks": ",".join(r.check for r in failed)},
            )

    def results(self) -> tuple[CheckResult, ...]:
        """Every check's outcome after finish(); before it, the row checks' so far."""
        if self._results is not None:
            return self._results
        return tuple(self._result(c) for c in self._row_checks)

    def close(self) -> None:
        """Free the DuckDB connection and spill files, interrupting a query in progress."""
        self._closed = True
        con = self._con
        if con is not None:
            # Harmless when idle; stops process() or finish() running in a worker.
            with contextlib.suppress(duckdb.Error):  # a worker may be closing it right now
                con.interrupt()
        self._try_release()

    # --- binding --------------------------------------------------------------------------

    def _bind(self, spec: step_pb2.CheckTransform, schema: pa.Schema) -> None:
        if not spec.checks:
            raise _error(self.step, "checks", "must have at least one check")
        default = spec.on_failure or step_pb2.CHECK_ACTION_FAIL
        self._order: list[str] = []
        for i, check in enumerate(spec.checks):
            path = f"checks[{i}]"
            kind = check.WhichOneof("kind")
            name = check.name.strip()
            if not name:
                raise _error(self.step, f"{path}.name", "a check needs a name")
            if name in self._order:
                raise _error(self.step, f"{path}.name", f"duplicate check name {name!r}")
            self._order.append(name)
            action = _ACTIONS.get(check.on_failure or default)
            if action is None or kind is None:
                raise _error(self.step, path, f"check {name!r}: no kind of check or unknown action")
            if action == "QUARANTINE" and kind not in _ROW_KINDS:
                raise _error(
                    self.step,
                    f"{path}.on_failure",
                    f"check {name!r} ({kind}) judges the rows as a whole and cannot "
                    "QUARANTINE: use FAIL or WARN",
                )
            where = _Where(self.step, f"{path}.{kind}", name, kind, schema)
            self._bind_one(where, action, getattr(check, kind))

    def _bind_one(self, where: _Where, action: str, spec: Any) -> None:
        kind = where.kind
        if kind == "not_null":
            if not spec.columns:
                raise where.error("columns", "needs at least one column")
            columns = [where.column(c, f"columns[{j}]") for j, c in enumerate(spec.columns)]
            self._row_checks.append(_NotNull(where, action, columns))
        elif kind == "accepted_values":
            self._row_checks.append(_Accepted.bind(where, action, spec))
        elif kind == "range":
            self._row_checks.append(_Range.bind(where, action, spec))
        elif kind == "regex":
            self._row_checks.append(_Regex.bind(where, action, spec))
        elif kind == "expression":
            problem = predicate_problem(spec.predicate)
            if problem:
                raise where.error("predicate", f"predicate {spec.predicate!r} {problem}")
            check = _Expression(where, action, spec.predicate)
            self._row_checks.append(check)
            self._expressions.append(check)
        elif kind == "unique":
            if not spec.columns:
                raise where.error("columns", "needs at least one column")
            columns = [where.column(c, f"columns[{j}]") for j, c in enumerate(spec.columns)]
            self._uniques.append(_Unique(where, action, columns, len(self._uniques)))
        elif kind == "row_count":
            low = spec.min if spec.HasField("min") else None
            high = spec.max if spec.HasField("max") else None
            if low is None and high is None:
                raise where.error("", "needs min, max or both")
            self._row_counts.append(_RowCount(where, action, low, high))
        else:  # pragma: no cover - the scheduler rejects unknown kinds
            raise where.error("", f"unknown kind of check {kind!r}")

    def _open(self, schema: pa.Schema, memory_limit: str, spill_dir: str | None) -> None:
        self._spill = tempfile.mkdtemp(prefix="datadog-check-", dir=spill_dir)
        try:
            self._con = _connection(memory_limit, self._spill)
            # Bind against an empty batch so that unknown columns, type mismatches
            # and aggregates surface before any data moves.
            empty = pa.Table.from_batches([], schema=schema)
            self._con.register(_INPUT_TABLE, empty)
            try:
                for unique in self._uniques:
                    self._run(unique.create_sql(), unique)
                if self._expressions:
                    self._expression_masks(empty, 0)
            finally:
                self._con.unregister(_INPUT_TABLE)
        except (_CheckError, _QueryError) as exc:
            self._closed = True
            self._try_release()
            raise _error(self.step, getattr(exc, "field", ""), str(exc)) from None
        except BaseException:
            self._closed = True
            self._try_release()
            raise

    # --- evaluation -----------------------------------------------------------------------

    def _process(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.RecordBatch | None]:
        n = batch.num_rows
        if not n:
            return batch, None
        if self._con is None and (self._expressions or self._uniques):
            raise _cancelled(self.step)  # finished or closed: the connection is gone
        masks: list[np.ndarray | None] = []
        expression_masks: Iterator[np.ndarray | None] = iter(())
        if self._con is not None:
            self._con.register(_INPUT_TABLE, pa.Table.from_batches([batch]))
            try:
                if self._expressions:
                    expression_masks = iter(self._expression_masks(batch, n))
                for unique in self._uniques:
                    self._run(unique.insert_sql(), unique)
            finally:
                self._con.unregister(_INPUT_TABLE)
        for check in self._row_checks:
            mask = next(expression_masks) if isinstance(check, _Expression) else check.mask(batch)
            masks.append(mask)
            if mask is not None:
                check.count(batch, mask, self._rows)
        self._rows += n
        quarantined = [
            m
            for c, m in zip(self._row_checks, masks, strict=True)
            if m is not None and c.action == "QUARANTINE"
        ]
        if not quarantined:
            return batch, None
        bad = np.logical_or.reduce(quarantined)
        if not bad.any():
            return batch, None
        assert self.quarantine_schema is not None
        failed = self._failed_checks(masks, bad)
        out = batch.filter(pa.array(~bad))
        rows = batch.filter(pa.array(bad))
        return out, rows.append_column(self.quarantine_schema.field(FAILED_CHECKS_COLUMN), failed)

    def _failed_checks(self, masks: Sequence[np.ndarray | None], bad: np.ndarray) -> pa.ListArray:
        """For each quarantined row, the names of every row check it failed, in step order."""
        failing = [(i, m[bad]) for i, m in enumerate(masks) if m is not None]
        matrix = np.stack([m for _, m in failing], axis=1)  # rows x failing checks
        rows, cols = np.nonzero(matrix)  # row-major: grouped by row, checks in order
        offsets = np.zeros(matrix.shape[0] + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=matrix.shape[0]), out=offsets[1:])
        which = np.array([i for i, _ in failing], dtype=np.int64)[cols]
        return pa.ListArray.from_arrays(pa.array(offsets), self._names.take(pa.array(which)))

    def _expression_masks(
        self, batch: pa.RecordBatch | pa.Table, n: int
    ) -> list[np.ndarray | None]:
        """One failing-row mask per expression check, from one query over ``input``."""
        select = ", ".join(f"CAST(({c.predicate}) AS BOOLEAN)" for c in self._expressions)
        try:
            table = self._query(f"SELECT {select} FROM {_INPUT_TABLE}")
        except _QueryError:
            # Name the culprit: run them one by one (rare, the stage fails anyway).
            for check in self._expressions:
                self._run(f"SELECT CAST(({check.predicate}) AS BOOLEAN) FROM {_INPUT_TABLE}", check)
            raise
        if table.num_rows != n:
            culprit = self._expressions[0]
            for check in self._expressions:
                one = self._run(f"SELECT ({check.predicate}) FROM {_INPUT_TABLE}", check)
                if one.num_rows != n:
                    culprit = check
                    break
            raise culprit.error(
                f"gave {_count(table.num_rows, 'row')} for {n} input rows: the predicate must give "
                "one boolean per row (aggregates are not allowed)"
            )
        masks: list[np.ndarray | None] = []
        for column in table.columns:
            # False fails; NULL passes, like a SQL CHECK constraint.
            failing = pc.fill_null(pc.invert(column.combine_chunks()), False)
            masks.append(_numpy(failing))
        return masks

    def _query(self, sql: str) -> pa.Table:
        assert self._con is not None
        try:
            return self._con.sql(sql).to_arrow_table()
        except duckdb.InterruptException:
            raise
        except duckdb.Error as exc:
            raise _QueryError(_first_line(str(exc))) from None

    def _run(self, sql: str, check: _Check) -> pa.Table:
        try:
            return self._query(sql)
        except _QueryError as exc:
            raise check.error(str(exc)) from None

    def _result(self, check: _Check) -> CheckResult:
        return CheckResult(
            step=self.step,
            check=check.name,
            passed=check.passed(),
            failing_rows=check.failing,
            message=check.message(),
            action=check.action,
        )

    # --- concurrency and resources --------------------------------------------------------

    @contextlib.contextmanager
    def _using(self) -> Iterator[None]:
        try:
            with self._lock:
                if self._closed:
                    raise _cancelled(self.step)
                try:
                    yield
                except duckdb.InterruptException:
                    raise _cancelled(self.step) from None
                except _CheckError as exc:
                    raise _error(self.step, exc.field, str(exc)) from None
                except _QueryError as exc:
                    raise _error(self.step, "", f"checks failed: {exc}") from None
        finally:
            # close() may have come while we held the lock; it then left the release to us.
            if self._closed:
                self._try_release()

    def _try_release(self) -> None:
        if self._lock.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._lock.release()

    def _release(self) -> None:
        """Close the connection and delete spill files (caller holds the lock)."""
        con, self._con = self._con, None
        if con is not None:
            con.close()
        spill, self._spill = self._spill, None
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)


# --- checks -------------------------------------------------------------------------------


class _CheckError(Exception):
    """A check cannot run on the data; the operator turns it into TRANSFORM_ERROR."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _QueryError(Exception):
    """A DuckDB error, first line only."""


class _Check:
    """State shared by every kind of check."""

    kind = ""

    def __init__(self, where: _Where, action: str) -> None:
        self.name = where.name
        self.action = action
        self.failing = 0
        #: Path of the check in the step, e.g. ``checks[2].expression``.
        self.field = where.path

    def passed(self) -> bool:
        return self.failing == 0

    def message(self) -> str:
        raise NotImplementedError

    def error(self, detail: str) -> _CheckError:
        return _CheckError(self.field, f"check {self.name!r} ({self.kind}) failed: {detail}")


class _RowCheck(_Check):
    """A check judging each row; ``mask`` gives the failing rows (None: none fail)."""

    def __init__(self, where: _Where, action: str) -> None:
        super().__init__(where, action)
        self.sample = ""

    def mask(self, batch: pa.RecordBatch) -> np.ndarray | None:
        raise NotImplementedError

    def count(self, batch: pa.RecordBatch, mask: np.ndarray, offset: int) -> None:
        failing = int(np.count_nonzero(mask))
        if failing and not self.sample:
            first = int(np.argmax(mask))
            self.sample = self.describe(batch, first, offset + first + 1)
        self.failing += failing

    def describe(self, batch: pa.RecordBatch, index: int, row: int) -> str:
        """The failing row ``index`` of ``batch`` (row ``row`` of the input, from 1)."""
        raise NotImplementedError

    def example(self) -> str:
        return f", e.g. {self.sample}" if self.sample else ""


class _NotNull(_RowCheck):
    kind = "not_null"

    def __init__(self, where: _Where, action: str, columns: Sequence[tuple[str, int]]) -> None:
        super().__init__(where, action)
        self.columns = list(columns)
        self.nulls = dict.fromkeys((c for c, _ in columns), 0)

    def mask(self, batch: pa.RecordBatch) -> np.ndarray | None:
        failing = None
        for column, i in self.columns:
            values = batch.column(i)
            if values.null_count:
                self.nulls[column] += values.null_count
                nulls = pc.is_null(values)
                failing = nulls if failing is None else pc.or_(failing, nulls)
        return None if failing is None else _numpy(failing)

    def describe(self, batch: pa.RecordBatch, index: int, row: int) -> str:
        columns = [c for c, i in self.columns if not batch.column(i)[index].is_valid]
        return f"row {row} ({', '.join(columns)})" if len(self.columns) > 1 else f"row {row}"

    def message(self) -> str:
        names = ", ".join(self.nulls)
        if not self.failing:
            return f"no NULLs in {names}"
        if len(self.nulls) == 1:
            return f"{_count(self.failing, 'NULL')} in {names}{self.example()}"
        per_column = ", ".join(f"{c}: {k}" for c, k in self.nulls.items() if k)
        return f"{_count(self.failing, 'row')} with NULLs ({per_column}){self.example()}"


class _ColumnCheck(_RowCheck):
    """A check of one column's values, NULL passing."""

    def __init__(self, where: _Where, action: str, column: tuple[str, int]) -> None:
        super().__init__(where, action)
        self.column, self.index = column

    def values(self, batch: pa.RecordBatch) -> pa.Array:
        values = batch.column(self.index)
        return values.dictionary_decode() if pa.types.is_dictionary(values.type) else values

    def describe(self, batch: pa.RecordBatch, index: int, row: int) -> str:
        return f"{_show(batch.column(self.index)[index])} (row {row})"


class _Accepted(_ColumnCheck):
    kind = "accepted_values"

    def __init__(
        self, where: _Where, action: str, column: tuple[str, int], accepted: pa.Array, shown: str
    ) -> None:
        super().__init__(where, action, column)
        self.accepted = accepted
        self.shown = shown

    @classmethod
    def bind(cls, where: _Where, action: str, spec: step_pb2.AcceptedValuesCheck) -> _Accepted:
        column = where.column(spec.column, "column")
        base = where.value_type(column)
        if not spec.values:
            raise where.error("values", "needs at least one value")
        arrays = []
        for j, value in enumerate(spec.values):
            if value.WhichOneof("kind") == "null_value":
                continue  # NULL passes anyway
            try:
                arrays.append(_value(value, base, exact=True))
            except ValueError as exc:
                raise where.error(f"values[{j}]", f"column {spec.column!r}: {exc}") from None
        accepted = pa.concat_arrays(arrays) if arrays else pa.array([], base)
        shown = ", ".join(_show_value(v) for v in spec.values[:10])
        if len(spec.values) > 10:
            shown += f", ... ({len(spec.values)} values)"
        return cls(where, action, column, accepted, f"[{shown}]")

    def mask(self, batch: pa.RecordBatch) -> np.ndarray | None:
        values = self.values(batch)
        # is_in says false for NULL: let NULLs pass explicitly.
        return _numpy(pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, self.accepted))))

    def message(self) -> str:
        if not self.failing:
            return f"every value of {self.column} in {self.shown}"
        return (
            f"{_count(self.failing, 'value')} of {self.column} not in {self.shown}{self.example()}"
        )


class _Range(_ColumnCheck):
    kind = "range"

    def __init__(
        self,
        where: _Where,
        action: str,
        column: tuple[str, int],
        low: pa.Scalar | None,
        high: pa.Scalar | None,
        shown: str,
    ) -> None:
        super().__init__(where, action, column)
        self.low, self.high, self.shown = low, high, shown

    @classmethod
    def bind(cls, where: _Where, action: str, spec: step_pb2.RangeCheck) -> _Range:
        column = where.column(spec.column, "column")
        base = where.value_type(column)
        bounds: dict[str, pa.Scalar | None] = {}
        for side in ("min", "max"):
            value = getattr(spec, side)
            if not spec.HasField(side) or value.WhichOneof("kind") == "null_value":
                bounds[side] = None
                continue
            try:
                bound = _value(value, base, exact=False)[0]
                pc.less(pa.array([], base), bound)  # comparable at all?
            except (ValueError, pa.ArrowNotImplementedError) as exc:
                detail = (
                    str(exc)
                    if isinstance(exc, ValueError)
                    else (f"{_show_value(value)} cannot be compared with a {base} column")
                )
                raise where.error(side, f"column {spec.column!r}: {detail}") from None
            bounds[side] = bound
        low, high = bounds["min"], bounds["max"]
        if low is None and high is None:
            raise where.error("", "needs min, max or both")
        shown = (
            f"[{_show_value(spec.min, quote=False)}, {_show_value(spec.max, quote=False)}]"
            if low is not None and high is not None
            else f">= {_show_value(spec.min, quote=False)}"
            if low is not None
            else f"<= {_show_value(spec.max, quote=False)}"
        )
        return cls(where, action, column, low, high, shown)

    def mask(self, batch: pa.RecordBatch) -> np.ndarray | None:
        values = self.values(batch)
        failing = None
        if self.low is not None:
            failing = pc.less(values, self.low)
        if self.high is not None:
            above = pc.greater(values, self.high)
            failing = above if failing is None else pc.or_(failing, above)
        assert failing is not None
        return _numpy(pc.fill_null(failing, False))

    def message(self) -> str:
        if not self.failing:
            return f"every value of {self.column} {self._within()}"
        return (
            f"{_count(self.failing, 'value')} of {self.column} not {self._within()}{self.example()}"
        )

    def _within(self) -> str:
        return f"in {self.shown}" if self.shown.startswith("[") else self.shown


class _Regex(_ColumnCheck):
    kind = "regex"

    def __init__(self, where: _Where, action: str, column: tuple[str, int], pattern: str) -> None:
        super().__init__(where, action, column)
        self.pattern = pattern
        self.cast = False

    @classmethod
    def bind(cls, where: _Where, action: str, spec: step_pb2.RegexCheck) -> _Regex:
        column = where.column(spec.column, "column")
        base = where.value_type(column)
        if not (
            pa.types.is_string(base)
            or pa.types.is_large_string(base)
            or pa.types.is_string_view(base)
        ):
            raise where.error("column", f"column {spec.column!r} is {base}, not a string")
        if not spec.pattern:
            raise where.error("pattern", "needs a pattern")
        try:
            # RE2 compiles on first use: one value is enough to see a bad pattern.
            pc.match_substring_regex(pa.array([""]), spec.pattern)
        except pa.ArrowInvalid as exc:
            raise where.error(
                "pattern", f"pattern {spec.pattern!r} is not valid RE2: {exc}"
            ) from None
        check = cls(where, action, column, spec.pattern)
        check.cast = pa.types.is_string_view(base)  # no regex kernel for string_view
        return check

    def mask(self, batch: pa.RecordBatch) -> np.ndarray | None:
        values = self.values(batch)
        if self.cast:
            values = values.cast(pa.large_string())
        matched = pc.match_substring_regex(values, self.pattern)
        return _numpy(pc.fill_null(pc.invert(matched), False))

    def message(self) -> str:
        if not self.failing:
            return f"every value of {self.column} matches {self.pattern!r}"
        found = f"{_count(self.failing, 'value')} of {self.column} not matching {self.pattern!r}"
        return found + self.example()


class _Expression(_RowCheck):
    """A SQL predicate; the operator evaluates all of them in one DuckDB query."""

    kind = "expression"

    def __init__(self, where: _Where, action: str, predicate: str) -> None:
        super().__init__(where, action)
        schema = where.schema
        self.predicate = predicate
        # Show the columns the predicate seems to use (all if none found).
        lowered = predicate.lower()
        shown = [i for i, n in enumerate(schema.names) if n.lower() in lowered]
        self.shown = shown or list(range(len(schema.names)))

    def mask(self, batch: pa.RecordBatch) -> np.ndarray | None:  # pragma: no cover
        raise AssertionError("expression checks are evaluated together by the operator")

    def describe(self, batch: pa.RecordBatch, index: int, row: int) -> str:
        names = batch.schema.names
        values = ", ".join(f"{names[i]}={_show(batch.column(i)[index])}" for i in self.shown)
        return f"row {row} ({_clip(values, 3 * _SAMPLE_CHARS)})"

    def message(self) -> str:
        if not self.failing:
            return f"{self.predicate!r} holds on every row"
        return f"{_count(self.failing, 'row')} where {self.predicate!r} is false{self.example()}"


class _Unique(_Check):
    """Exact uniqueness of a key over all rows, kept in a DuckDB table (see module doc)."""

    kind = "unique"

    def __init__(
        self, where: _Where, action: str, columns: Sequence[tuple[str, int]], n: int
    ) -> None:
        super().__init__(where, action)
        self.columns = [c for c, _ in columns]
        self.table = f"unique_keys_{n}"
        self.keys = 0
        self.sample = ""
        quoted = [_quote(c) for c in self.columns]
        self._select = ", ".join(quoted)
        self._not_null = " AND ".join(f"{q} IS NOT NULL" for q in quoted)

    def create_sql(self) -> str:
        return f"CREATE TABLE {self.table} AS SELECT {self._select} FROM {_INPUT_TABLE} LIMIT 0"

    def insert_sql(self) -> str:
        return (
            f"INSERT INTO {self.table} SELECT {self._select} FROM {_INPUT_TABLE} "
            f"WHERE {self._not_null}"
        )

    def judge(self, run: Callable[[str], pa.Table]) -> None:
        # GROUP BY spills under the memory limit; DISTINCT aggregates would not.
        table = run(
            "SELECT sum(n - 1)::BIGINT, count(*)::BIGINT, max(n)::BIGINT, "
            f"arg_max(row({self._select}), n) FROM ("
            f"SELECT {self._select}, count(*) AS n FROM {self.table} "
            "GROUP BY ALL HAVING count(*) > 1)"
        )
        duplicates, keys, most, sample = (table.column(i)[0] for i in range(4))
        self.failing = duplicates.as_py() or 0
        self.keys = keys.as_py() or 0
        if self.failing:
            key = [_show(sample[i]) for i in range(len(self.columns))]
            shown = key[0] if len(key) == 1 else f"({', '.join(key)})"
            self.sample = f"{shown} appears {most.as_py()} times"

    def message(self) -> str:
        columns = ", ".join(self.columns)
        if not self.failing:
            return f"({columns}) unique"
        return (
            f"{_count(self.failing, 'duplicate row')} of ({columns}) over "
            f"{_count(self.keys, 'key')}, "
            f"e.g. {self.sample}"
        )


class _RowCount(_Check):
    kind = "row_count"

    def __init__(self, where: _Where, action: str, low: int | None, high: int | None) -> None:
        super().__init__(where, action)
        self.low, self.high = low, high
        self.rows: int | None = None
        self.ok = True

    def judge(self, rows: int) -> None:
        self.rows = rows
        self.ok = (self.low is None or rows >= self.low) and (
            self.high is None or rows <= self.high
        )

    def passed(self) -> bool:
        return self.ok

    def message(self) -> str:
        if self.rows is None:
            return "not judged"
        if self.low is not None and self.rows < self.low:
            return f"{_count(self.rows, 'row')}, fewer than the minimum {self.low}"
        if self.high is not None and self.rows > self.high:
            return f"{_count(self.rows, 'row')}, more than the maximum {self.high}"
        bounds = [
            f"min {self.low}" if self.low is not None else "",
            f"max {self.high}" if self.high is not None else "",
        ]
        return f"{_count(self.rows, 'row')} ({', '.join(b for b in bounds if b)})"


# --- binding helpers ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """A check being bound: where errors point to."""

    step: str
    path: str
    name: str
    kind: str
    schema: pa.Schema

    def error(self, field: str, detail: str) -> TransformError:
        path = f"{self.path}.{field}" if field else self.path
        return _error(self.step, path, f"check {self.name!r} ({self.kind}): {detail}")

    def column(self, name: str, field: str) -> tuple[str, int]:
        found = self.schema.get_all_field_indices(name)
        if len(found) == 1:
            return name, found[0]
        if found:
            raise self.error(
                field, f"column {name!r} is ambiguous: the input has it {len(found)} times"
            )
        names = ", ".join(self.schema.names[:20]) + (", ..." if len(self.schema) > 20 else "")
        raise self.error(
            field, f"column {name!r} not found; the input has: {names or 'no columns'}"
        )

    def value_type(self, column: tuple[str, int]) -> pa.DataType:
        type_ = self.schema.field(column[1]).type
        return type_.value_type if pa.types.is_dictionary(type_) else type_


def _value(value: struct_pb2.Value, base: pa.DataType, *, exact: bool) -> pa.Array:
    """A one-element array holding ``value`` as comparable with a ``base`` column.

    ``exact`` (accepted values): of type ``base`` exactly, or ValueError when it cannot
    be one. Otherwise (range bounds): any comparable type, so 2.5 bounds an integer column.
    A string is parsed as ``base`` (dates, timestamps, decimals...); without an offset,
    a timestamp bound of a column with a time zone is read in that zone.
    """
    kind = value.WhichOneof("kind")
    try:
        if kind == "bool_value":
            if not pa.types.is_boolean(base):
                raise ValueError(f"{_show_value(value)} cannot be compared with a {base} column")
            return pa.array([value.bool_value])
        if kind == "number_value":
            return _number(value.number_value, base, exact)
        if kind == "string_value":
            return _parse(value.string_value, base)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError) as exc:
        raise ValueError(f"{_show_value(value)} does not fit a {base} column: {exc}") from None
    raise ValueError("must be a number, a string or true/false")


def _number(x: float, base: pa.DataType, exact: bool) -> pa.Array:
    if pa.types.is_integer(base):
        if x.is_integer():
            natural = pa.array([int(x)], pa.int64())
        elif exact:
            raise ValueError(f"{x!r} is not an integer, as the {base} column's values are")
        else:
            natural = pa.array([x], pa.float64())
    elif pa.types.is_floating(base):
        natural = pa.array([x], pa.float64())
    elif pa.types.is_decimal(base):
        # repr is the shortest text giving back the double: 0.1 means Decimal("0.1").
        natural = pa.array([Decimal(repr(x))])
    else:
        raise ValueError(f"the number {x!r} cannot be compared with a {base} column")
    return natural.cast(base) if exact else natural


def _parse(text: str, base: pa.DataType) -> pa.Array:
    if pa.types.is_string(base) or pa.types.is_large_string(base) or pa.types.is_string_view(base):
        return pa.array([text], base)
    try:
        return pa.array([text]).cast(base)
    except pa.ArrowInvalid:
        if not (pa.types.is_timestamp(base) and base.tz):
            raise
    local = pa.array([text]).cast(pa.timestamp(base.unit))
    return pc.assume_timezone(local, base.tz)


def _connection(memory_limit: str, spill_dir: str) -> duckdb.DuckDBPyConnection:
    """Like core.expressions.sandboxed_connection, with a memory limit and a spill directory."""
    con = duckdb.connect(":memory:")
    try:
        # The spill directory must be set before external access is disabled.
        con.execute("SET memory_limit = ?", [memory_limit])
        con.execute("SET temp_directory = ?", [spill_dir])
        con.execute("SET threads = 1")
        con.execute("SET enable_external_access = false")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        raise DomainError(
            ErrorCode.INVALID_ARGUMENT, TRANSFORM_ERROR, f"check engine: {_first_line(str(exc))}"
        ) from None
    return con


# --- small helpers ------------------------------------------------------------------------


def _error(step: str, field: str, message: str) -> TransformError:
    """``field`` is the path inside the TransformSpec, e.g. ``check.checks[1].range.min``."""
    return TransformError(step, f"check.{field}" if field else "check", message)


def _cancelled(step: str) -> DomainError:
    return DomainError(ErrorCode.CANCELLED, "CANCELLED", f"step {step!r}: checks cancelled")


def _numpy(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _show(scalar: pa.Scalar) -> str:
    """A value for a message: strings quoted, decimals and times as written."""
    if not scalar.is_valid:
        return "NULL"
    try:
        value = scalar.as_py()
    except (ValueError, TypeError, OverflowError):
        return _clip(str(scalar), _SAMPLE_CHARS)
    if isinstance(value, str | bytes):
        return _clip(repr(value), _SAMPLE_CHARS)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return _clip(str(value), _SAMPLE_CHARS)


def _show_value(value: struct_pb2.Value, *, quote: bool = True) -> str:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        x = value.number_value
        return str(int(x)) if x.is_integer() and abs(x) < 1e16 else repr(x)
    if kind == "string_value":
        text = value.string_value
        return _clip(repr(text) if quote else text, _SAMPLE_CHARS)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "null_value":
        return "NULL"
    return "?"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else message

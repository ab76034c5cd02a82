"""DuckDB queries of a stage: one per segment, bound before any data moves, streamed out.

The :class:`Engine` is the executor's one DuckDB database: sandboxed like
``core.expressions.sandboxed_connection`` (no files, network or extensions), with
``memory_limit``, a spill directory and a thread count, shared by every stage so
the memory limit holds for the whole executor. Each query runs on its own cursor.

A segment's query is one ``WITH`` of CTEs, one per step, over its input streams
registered as ``_in_<step>``; each step's CTE is named after the step. It is bound
against empty inputs first: this gives every step's output schema up front and
turns DuckDB binder errors into failures naming the step, its expression and the
column. Columns passed through unchanged keep their Arrow type (DuckDB would turn
``large_string`` into ``string`` or a time zone into UTC): the output is cast back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import duckdb
import pyarrow as pa

from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.executor.engine.bridge import BatchDrain, BatchFeed
from datadog_platform.executor.engine.graph import Segment, StageGraph
from datadog_platform.executor.engine.kinds import sql_context, transform_kinds
from datadog_platform.executor.transforms.sql import quote, string_literal

TRANSFORM_ERROR = "TRANSFORM_ERROR"
DEFAULT_MEMORY_LIMIT = "1GB"
#: Rows per batch DuckDB hands out.
OUTPUT_BATCH_ROWS = 64 * 1024
#: Bound queries and plans an engine remembers.
MEMO_ENTRIES = 256

T = TypeVar("T")


@dataclass(frozen=True)
class EngineConfig:
    """DuckDB settings of an executor."""

    memory_limit: str = DEFAULT_MEMORY_LIMIT
    #: Where blocking operators spill; None: a temporary directory removed on close.
    spill_dir: str | None = None
    #: DuckDB worker threads; None: one per CPU.
    threads: int | None = None


class Engine:
    """The executor's DuckDB database; ``cursor()`` per query. Thread-safe."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self._own_spill = self.config.spill_dir is None
        self.spill_dir = self.config.spill_dir or tempfile.mkdtemp(prefix="datadog-spill-")
        os.makedirs(self.spill_dir, exist_ok=True)
        threads = self.config.threads or os.cpu_count() or 1
        try:
            con = duckdb.connect(
                ":memory:",
                config={
                    "memory_limit": self.config.memory_limit,
                    "temp_directory": self.spill_dir,
                    "threads": str(threads),
                },
            )
        except duckdb.Error as exc:
            raise ValueError(f"invalid engine settings: {_first_line(str(exc))}") from None
        # Spooled Parquet (executor.parquet_spool) is the one place queries read files.
        self.spool_dir = os.path.join(self.spill_dir, "spool")
        os.makedirs(self.spool_dir, exist_ok=True)
        for setting in (
            "SET TimeZone = 'UTC'",
            f"SET allowed_directories = [{string_literal(self.spool_dir)}]",
            "SET enable_external_access = false",
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET lock_configuration = true",
        ):
            con.execute(setting)
        self._con = con
        self._lock = threading.Lock()
        self._memo: OrderedDict[Hashable, Any] = OrderedDict()

    def memoized(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, remembered under ``key`` for the next stages (LRU; errors are not).

        Binding a stage costs DuckDB parses, binds and plans (~0.1 s of CPU for TPC-H
        Q1), the same every time a pipeline runs again; the result depends only on
        the steps' specs and the input schemas, which ``key`` must hold.
        """
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        value = compute()
        with self._lock:
            self._memo[key] = value
            while len(self._memo) > MEMO_ENTRIES:
                self._memo.popitem(last=False)
        return value

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the database (its registrations are its own)."""
        with self._lock:
            return self._con.cursor()

    def close(self) -> None:
        """Close the database and remove a spill directory of our own."""
        self._con.close()
        if self._own_spill:
            shutil.rmtree(self.spill_dir, ignore_errors=True)


# --- binding ---------------------------------------------------------------------------


@dataclass
class BoundQuery:
    """A segment's query, bound: its SQL and the Arrow schemas it reads and produces."""

    segment: Segment
    sql: str
    #: Leaf step → its stream's schema (what is registered as ``_in_<step>``).
    inputs: Mapping[str, pa.Schema]
    #: The output's schema as DuckDB produces it, and as the stage announces it.
    duckdb_schema: pa.Schema
    schema: pa.Schema
    #: Leaf steps read at several places of the query.
    materialized: frozenset[str] = field(default_factory=frozenset)

    @property
    def needs_cast(self) -> bool:
        """Whether output batches must be cast back to ``schema``."""
        return not self.duckdb_schema.equals(self.schema)


def relation(step: str) -> str:
    """The quoted CTE name of a step's output inside a query: the step's own name, which is
    how a ``sql`` transform refers to its inputs."""
    return quote(step)


def stream_view(step: str) -> str:
    """The name a leaf stream is registered under."""
    return f"_in_{step}"


def bind_segment(
    engine: Engine, graph: StageGraph, segment: Segment, schemas: dict[str, pa.Schema]
) -> BoundQuery:
    """Compile and bind ``segment`` (blocking); adds each step's schema to ``schemas``.

    ``schemas`` must hold the leaves' schemas. Raises ``DomainError`` TRANSFORM_ERROR
    naming the step for compile and binder errors. Remembered by the engine.
    """
    key = (
        "bind",
        segment,
        tuple(
            (node.name, node.kind, node.step.SerializeToString(deterministic=True), node.inputs)
            for node in map(graph.node, segment.steps)
        ),
        tuple(schemas[leaf].serialize().to_pybytes() for leaf in segment.leaves),
    )
    bound, step_schemas = engine.memoized(key, lambda: _bind(engine, graph, segment, schemas))
    schemas.update(step_schemas)
    return bound


def _bind(
    engine: Engine, graph: StageGraph, segment: Segment, leaf_schemas: Mapping[str, pa.Schema]
) -> tuple[BoundQuery, dict[str, pa.Schema]]:
    schemas = {leaf: leaf_schemas[leaf] for leaf in segment.leaves}
    kinds = transform_kinds()
    cursor = engine.cursor()
    try:
        duck: dict[str, pa.Schema] = {}
        uses: dict[str, int] = {}
        for name in segment.steps:
            for item in graph.node(name).inputs:
                uses[item] = uses.get(item, 0) + 1
        ctes: list[str] = []
        for leaf in segment.leaves:
            cursor.register(stream_view(leaf), schemas[leaf].empty_table())
            duck[leaf] = _run_empty(cursor, f"SELECT * FROM {quote(stream_view(leaf))}")
            materialized = " MATERIALIZED" if uses.get(leaf, 0) > 1 else ""
            ctes.append(
                f"{relation(leaf)} AS{materialized} (SELECT * FROM {quote(stream_view(leaf))})"
            )
        for name in segment.steps:
            node = graph.node(name)
            kind = kinds[node.kind]
            context = sql_context(
                name,
                node.spec,
                tuple(relation(i) for i in node.inputs),
                tuple(schemas[i] for i in node.inputs),
            )
            try:
                compiled = kind.compile_sql(context)
            except DomainError:
                raise
            except Exception as exc:  # a compiler bug must still name the step
                raise transform_error(name, f"step {name!r}: {node.kind} failed: {exc}") from exc
            materialized = " MATERIALIZED" if uses.get(name, 0) > 1 else ""
            cte = f"{relation(name)} AS{materialized} ({compiled})"
            probe = _with([*ctes, cte], f"SELECT * FROM {relation(name)}")
            try:
                duck[name] = _run_empty(cursor, probe)
            except duckdb.Error as exc:
                raise _blame(cursor, name, node.kind, node.spec, node.inputs, ctes, exc) from None
            schemas[name] = restore_types(duck[name], [(duck[i], schemas[i]) for i in node.inputs])
            ctes.append(cte)
        output = segment.output
        sql = _with(ctes, f"SELECT * FROM {relation(output)}")
        bound = BoundQuery(
            segment,
            sql,
            {leaf: schemas[leaf] for leaf in segment.leaves},
            duck[output],
            schemas[output],
            frozenset(leaf for leaf in segment.leaves if uses.get(leaf, 0) > 1),
        )
        return bound, {name: schemas[name] for name in segment.steps}
    finally:
        cursor.close()


def restore_types(output: pa.Schema, inputs: Sequence[tuple[pa.Schema, pa.Schema]]) -> pa.Schema:
    """``output`` with pass-through columns given back their Arrow types.

    ``inputs`` pairs each input's schema as DuckDB sees it with its real one. A
    column keeps the real type of the inputs' column of the same name when DuckDB
    gives it the type it gave that input column (and the inputs agree).
    """
    fields = []
    for out in output:
        originals = {
            real.field(real.get_field_index(out.name)).type
            for seen, real in inputs
            if seen.get_field_index(out.name) >= 0
            and seen.field(seen.get_field_index(out.name)).type == out.type
            and real.get_field_index(out.name) >= 0
        }
        kind = originals.pop() if len(originals) == 1 else out.type
        fields.append(pa.field(out.name, kind))
    return pa.schema(fields)


def _with(ctes: Sequence[str], select: str) -> str:
    return f"WITH {', '.join(ctes)} {select}" if ctes else select


def _run_empty(cursor: duckdb.DuckDBPyConnection, sql: str) -> pa.Schema:
    return cursor.sql(sql).to_arrow_table().schema


def _blame(
    cursor: duckdb.DuckDBPyConnection,
    step: str,
    kind: str,
    spec: Any,
    inputs: Sequence[str],
    ctes: Sequence[str],
    error: duckdb.Error,
) -> DomainError:
    """A binder error as a TRANSFORM_ERROR naming the expression that failed, if one can."""
    detail = _first_line(str(error))
    source = relation(inputs[0]) if inputs else ""
    for label, expr in _expressions(kind, spec):
        try:
            _run_empty(cursor, _with(ctes, f"SELECT ({expr}) FROM {source}"))
        except duckdb.Error as exc:
            return transform_error(
                step, f"step {step!r}: {label} {expr!r} failed: {_first_line(str(exc))}"
            )
    return transform_error(step, f"step {step!r}: {kind} failed: {detail}")


def _expressions(kind: str, spec: Any) -> list[tuple[str, str]]:
    """The SQL expressions of a transform, labelled for messages."""
    if kind == "filter":
        return [("filter predicate", spec.predicate)]
    if kind == "derive":
        return [(f"derive column {c.name!r} expression", c.expr) for c in spec.columns]
    if kind == "aggregate":
        return [(f"aggregate {a.name!r} expression", a.expr) for a in spec.aggregates]
    return []


def transform_error(step: str, message: str) -> DomainError:
    """A failure of a transform step on its input (not retryable)."""
    return DomainError(ErrorCode.INVALID_ARGUMENT, TRANSFORM_ERROR, message, {"step": step})


def runtime_error(
    graph: StageGraph, bound: BoundQuery, error: BaseException
) -> tuple[str, DomainError]:
    """A query failing on the data: the step to blame and the error naming it."""
    steps = bound.segment.steps
    step = steps[-1]
    detail = _first_line(str(error))
    if len(steps) == 1:
        node = graph.node(step)
        labels = _expressions(node.kind, node.spec)
        what = f"{labels[0][0]} {labels[0][1]!r}" if len(labels) == 1 else node.kind
        return step, transform_error(step, f"step {step!r}: {what} failed: {detail}")
    fused = ", ".join(repr(s) for s in steps)
    return step, transform_error(step, f"steps {fused} (one query) failed: {detail}")


# --- running ---------------------------------------------------------------------------


class QueryRun:
    """A bound query running over its input streams; iterate its output batches.

    ``start`` opens the result in a thread, which registers a :class:`BatchFeed` per
    leaf once the leaf's first batch tells its reader's schema (or, for a leaf whose
    data was spooled to whole Parquet files, a view reading them once its read has
    ended); ``stop`` interrupts the query, closes the feeds and waits for the thread.
    """

    def __init__(
        self, engine: Engine, bound: BoundQuery, spools: Mapping[str, ParquetFiles] | None = None
    ) -> None:
        self.bound = bound
        self.feeds = {leaf: BatchFeed(schema) for leaf, schema in bound.inputs.items()}
        self._spools = spools or {}
        self._cursor = engine.cursor()
        self._drain: BatchDrain | None = None

    def start(self) -> AsyncIterator[pa.RecordBatch]:
        """Start the query (in a thread); its raw output batches."""
        self._drain = BatchDrain(self._open, name=f"query-{self.bound.segment.output}")
        return self._drain

    def _open(self) -> pa.RecordBatchReader:
        for leaf, feed in self.feeds.items():
            reader = feed.reader()
            spool = self._spools.get(leaf)
            if spool is not None and spool.sealed:
                # The source's data is in whole Parquet files, read by DuckDB itself.
                self._cursor.register("_schema", feed.schema.empty_table())
                described = self._cursor.sql("DESCRIBE SELECT * FROM _schema").fetchall()
                self._cursor.unregister("_schema")
                select = spool.relation_sql([(row[0], row[1]) for row in described])
                self._cursor.execute(f"CREATE TEMP VIEW {quote(stream_view(leaf))} AS {select}")
            else:
                self._cursor.register(stream_view(leaf), reader)
        return self._cursor.sql(self.bound.sql).to_arrow_reader(OUTPUT_BATCH_ROWS)

    def source_error(self) -> BaseException | None:
        """The first input failure, which explains a query error better than DuckDB can."""
        return next((f.error for f in self.feeds.values() if f.error is not None), None)

    async def stop(self, grace: float = 1.0) -> None:
        """Interrupt the query and free its cursor (once its thread has let go of it)."""
        stopped = True
        if self._drain is not None and not self._drain.finished:
            self._cursor.interrupt()
            for feed in self.feeds.values():
                feed.close()
            stopped = await self._drain.close(grace)
        for feed in self.feeds.values():
            feed.close()
        if stopped:
            self._cursor.close()


class ParquetFiles(Protocol):
    """A source's data as whole Parquet files, once ``sealed`` (``executor.parquet_spool``)."""

    sealed: bool

    def relation_sql(self, columns: list[tuple[str, str]]) -> str:
        """A SELECT of ``columns`` (name, DuckDB type) from the files."""
        ...


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else message

"""Projection pushdown: which source columns a stage's queries read, and what the stage asks for."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pyarrow as pa
import pytest
from google.protobuf import json_format

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.tasks import StageTask, TaskSucceeded
from datadog_platform.executor.engine.graph import StageGraph, build_graph
from datadog_platform.executor.engine.kinds import transform_kinds
from datadog_platform.executor.engine.pushdown import (
    columns_from_plan,
    narrowable_sources,
    used_columns,
)
from datadog_platform.executor.engine.query import Engine, EngineConfig, bind_segment
from datadog_platform.executor.stage import SourceStream, StageRunner, WriteResult

ORDERS = pa.schema(
    [
        ("id", pa.int64()),
        ("customer", pa.int64()),
        ("status", pa.large_string()),
        ("amount", pa.decimal128(12, 2)),
        ("tax", pa.float64()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("note", pa.string()),
    ]
)
CUSTOMERS = pa.schema([("cid", pa.int64()), ("country", pa.string()), ("vip", pa.bool_())])


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = Engine(EngineConfig(memory_limit="256MB", threads=2))
    yield engine
    engine.close()


def src(name: str) -> dict[str, Any]:
    return {"name": name, "source": {"file": {"path": f"{name}.parquet"}}}


def step(name: str, kind: str, spec: dict[str, Any], *inputs: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "transform": {kind: spec}}
    if inputs:
        out["inputs"] = list(inputs)
    return out


OUT = {"name": "out", "sink": {"discard": {}}}


def graph_of(*specs: dict[str, Any]) -> StageGraph:
    steps = [json_format.ParseDict(spec, step_pb2.Step()) for spec in specs]
    graph, violations = build_graph(steps, transform_kinds())
    assert graph is not None, violations
    return graph


def columns_of(engine: Engine, *specs: dict[str, Any]) -> dict[str, tuple[str, ...] | None]:
    """Leaf → columns read, over every segment of the stage."""
    graph = graph_of(*specs, OUT)
    schemas = {"orders": ORDERS, "customers": CUSTOMERS}
    found: dict[str, tuple[str, ...] | None] = {}
    for segment in graph.segments:
        found.update(used_columns(engine, bind_segment(engine, graph, segment, schemas)))
    return found


def test_select_reads_only_its_columns_in_source_order(engine: Engine) -> None:
    columns = columns_of(engine, src("orders"), step("s", "select", {"columns": ["tax", "id"]}))
    assert columns == {"orders": ("id", "tax")}


def test_derive_then_select_reads_the_expression_columns(engine: Engine) -> None:
    columns = columns_of(
        engine,
        src("orders"),
        step("d", "derive", {"columns": [{"name": "gross", "expr": "amount * (1 + tax)"}]}),
        step("s", "select", {"columns": ["id", "gross"]}),
    )
    assert columns == {"orders": ("id", "amount", "tax")}


def test_filter_and_aggregate_read_the_predicate_group_and_aggregate_columns(
    engine: Engine,
) -> None:
    columns = columns_of(
        engine,
        src("orders"),
        step("f", "filter", {"predicate": "\"at\" >= TIMESTAMP '2024-01-01'"}),
        step(
            "g",
            "aggregate",
            {"group_by": ["status"], "aggregates": [{"name": "total", "expr": "sum(amount)"}]},
        ),
    )
    assert columns == {"orders": ("status", "amount", "at")}


def test_count_star_still_reads_one_column(engine: Engine) -> None:
    columns = columns_of(
        engine,
        src("orders"),
        step("g", "aggregate", {"aggregates": [{"name": "n", "expr": "count(*)"}]}),
    )
    assert columns == {"orders": ("id",)}


def test_a_join_of_two_sources_reads_each_side_s_columns(engine: Engine) -> None:
    columns = columns_of(
        engine,
        src("orders"),
        src("customers"),
        step(
            "j",
            "join",
            {"type": "JOIN_TYPE_INNER", "on": [{"left": "customer", "right": "cid"}]},
            "orders",
            "customers",
        ),
        step("s", "select", {"columns": ["id", "country"]}),
    )
    assert columns == {"orders": ("id", "customer"), "customers": ("cid", "country")}


def test_a_sql_transform_reads_what_its_query_uses(engine: Engine) -> None:
    query = (
        "SELECT o.status, c.vip, sum(o.tax) AS t FROM orders o "
        "JOIN customers c ON o.customer = c.cid GROUP BY ALL"
    )
    columns = columns_of(
        engine,
        src("orders"),
        src("customers"),
        step("q", "sql", {"query": query}, "orders", "customers"),
    )
    assert columns == {"orders": ("customer", "status", "tax"), "customers": ("cid", "vip")}


def test_select_star_reaching_the_sink_reads_everything(engine: Engine) -> None:
    columns = columns_of(
        engine,
        src("orders"),
        step("q", "sql", {"query": "SELECT * FROM orders WHERE id > 1"}, "orders"),
        step("f", "filter", {"predicate": "tax > 0"}),
    )
    assert columns == {"orders": None}


def test_a_scan_several_leaves_could_own_reads_every_column() -> None:
    # Both inputs have "id": the scan's owner is unknown, so nothing is narrowed.
    inputs = {
        "a": pa.schema([("id", pa.int64()), ("x", pa.int64())]),
        "b": pa.schema([("id", pa.int64()), ("y", pa.int64())]),
    }
    plan = [
        {"name": "PYTHON_ARROW_SCAN", "children": [], "extra_info": {"Projections": "id"}},
        {"name": "PYTHON_ARROW_SCAN", "children": [], "extra_info": {"Projections": ["id", "y"]}},
    ]
    assert columns_from_plan(plan, inputs) == {"a": None, "b": None}


def test_pushed_filters_or_a_missing_scan_read_every_column() -> None:
    inputs = {"a": pa.schema([("id", pa.int64()), ("x", pa.int64())])}
    filtered = {
        "name": "PYTHON_ARROW_SCAN",
        "children": [],
        "extra_info": {"Projections": "id", "Filters": "x > 1"},
    }
    assert columns_from_plan([filtered], inputs) == {"a": None}
    assert columns_from_plan([{"name": "EMPTY_RESULT", "children": []}], inputs) == {"a": None}


def test_only_sources_of_narrowing_queries_are_candidates() -> None:
    graph = graph_of(
        src("orders"),
        step("f", "filter", {"predicate": "tax > 0"}),
        OUT,
    )
    assert narrowable_sources(graph) == ()
    graph = graph_of(src("orders"), step("s", "select", {"columns": ["id"]}), OUT)
    assert narrowable_sources(graph) == ("orders",)
    # A source straight into the sink keeps every column.
    assert narrowable_sources(graph_of(src("orders"), OUT)) == ()


# --- what the stage asks the data plane for ---------------------------------------------


class ProjectingPlane:
    """Describes and reads ``ORDERS`` data, honouring projections; records what was asked."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, ...]] = []
        #: Per read, whether string columns could be handed over as dictionaries.
        self.dictionaries: list[bool] = []
        self.table = pa.table(
            {
                "id": [1, 2, 3],
                "customer": [7, 7, 8],
                "status": pa.array(["a", "b", "a"], pa.large_string()),
                "amount": pa.array([1, 2, 3], pa.decimal128(12, 2)),
                "tax": [0.1, 0.2, 0.3],
                "at": pa.array([1, 2, 3], pa.timestamp("us", tz="UTC")),
                "note": ["x", "y", "z"],
            },
            schema=ORDERS,
        )
        self.written: pa.Table | None = None

    async def describe(self, source: step_pb2.SourceSpec) -> pa.Schema:
        return ORDERS

    @asynccontextmanager
    async def read(
        self,
        source: step_pb2.SourceSpec,
        columns: Sequence[str] = (),
        *,
        dictionary_strings: bool = False,
        spool: object = None,
    ) -> AsyncIterator[SourceStream]:
        self.reads.append(tuple(columns))
        self.dictionaries.append(dictionary_strings)
        table = self.table.select(list(columns)) if columns else self.table

        async def batches() -> AsyncIterator[pa.RecordBatch]:
            for batch in table.to_batches():
                if dictionary_strings:  # as Parquet stored with dictionaries reads
                    batch = pa.RecordBatch.from_arrays(
                        [
                            c.cast(pa.string()).dictionary_encode()
                            if pa.types.is_string(c.type) or pa.types.is_large_string(c.type)
                            else c
                            for c in batch.columns
                        ],
                        names=batch.schema.names,
                    )
                yield batch

        yield SourceStream(table.schema, batches())

    async def write(
        self,
        sink: step_pb2.SinkSpec,
        idempotency_key: str,
        schema: pa.Schema,
        batches: AsyncIterator[pa.RecordBatch],
    ) -> WriteResult:
        received = [batch async for batch in batches]
        self.written = pa.Table.from_batches(received, schema=schema)
        return WriteResult(self.written.num_rows, "memory://out")


async def run_stage(plane: ProjectingPlane, engine: Engine, *specs: dict[str, Any]) -> Any:
    steps = [json_format.ParseDict(spec, step_pb2.Step()) for spec in specs]
    steps.append(
        json_format.ParseDict({"name": "out", "sink": {"file": {"path": "o"}}}, step_pb2.Step())
    )
    runner = StageRunner(plane, executor_id="host:1", engine=engine)
    task = StageTask(run_id="r", stage_id="s", attempt=1, steps=steps)
    return [event async for event in runner.execute(task)][-1]


async def test_the_stage_reads_only_the_columns_its_query_uses(engine: Engine) -> None:
    plane = ProjectingPlane()
    outcome = await run_stage(
        plane,
        engine,
        src("orders"),
        step("f", "filter", {"predicate": "tax > 0.15"}),
        step(
            "g",
            "aggregate",
            {"group_by": ["status"], "aggregates": [{"name": "total", "expr": "sum(amount)"}]},
        ),
    )
    assert isinstance(outcome, TaskSucceeded), outcome
    assert plane.reads == [("status", "amount", "tax")]
    assert plane.dictionaries == [True], "only a query reads the source"
    assert plane.written is not None
    assert plane.written.schema.field("status").type == pa.large_string()
    assert sorted(plane.written.to_pylist(), key=lambda r: r["status"]) == [
        {"status": "a", "total": pa.scalar(3, pa.decimal128(12, 2)).as_py()},
        {"status": "b", "total": pa.scalar(2, pa.decimal128(12, 2)).as_py()},
    ]


async def test_a_source_watermark_column_is_kept(engine: Engine) -> None:
    plane = ProjectingPlane()
    source = {**src("orders"), "watermark": {"column": "at"}}
    outcome = await run_stage(plane, engine, source, step("s", "select", {"columns": ["id"]}))
    assert isinstance(outcome, TaskSucceeded), outcome
    assert plane.reads == [("id", "at")]
    assert plane.dictionaries == [False], "the watermark is taken on the source's batches"
    assert outcome.watermarks["orders"].startswith("1970-01-01")


async def test_a_stage_passing_every_column_on_reads_them_all(engine: Engine) -> None:
    plane = ProjectingPlane()
    outcome = await run_stage(
        plane, engine, src("orders"), step("q", "sql", {"query": "SELECT * FROM orders"})
    )
    assert isinstance(outcome, TaskSucceeded), outcome
    assert plane.reads == [()]
    assert plane.written is not None
    assert plane.written.schema.names == ORDERS.names
    assert plane.written.schema.types == ORDERS.types, "string columns are not dictionaries"
    assert plane.written.column("note").to_pylist() == ["x", "y", "z"]


@pytest.mark.parametrize(
    "steps",
    [
        [],  # the sink reads the source
        [step("c", "cast", {"columns": [{"column": "id", "type": "float64"}]})],  # an operator
    ],
    ids=["sink", "operator"],
)
async def test_only_queries_are_handed_strings_as_dictionaries(
    engine: Engine, steps: list[dict[str, Any]]
) -> None:
    plane = ProjectingPlane()
    outcome = await run_stage(plane, engine, src("orders"), *steps)
    assert isinstance(outcome, TaskSucceeded), outcome
    assert plane.dictionaries == [False]
    assert plane.written is not None
    assert plane.written.column("status").type == pa.large_string()

"""DuckDB segments: binding against empty inputs, type restoration, running, interrupting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pyarrow as pa
import pytest
from google.protobuf import json_format

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.errors import DomainError
from datadog_platform.executor.engine.graph import StageGraph, build_graph
from datadog_platform.executor.engine.kinds import transform_kinds
from datadog_platform.executor.engine.query import (
    Engine,
    EngineConfig,
    QueryRun,
    bind_segment,
    restore_types,
)

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.large_string()),
        ("at", pa.timestamp("ms", tz="Europe/Paris")),
        ("amount", pa.decimal128(12, 2)),
    ]
)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = Engine(EngineConfig(memory_limit="256MB", threads=2))
    yield engine
    engine.close()


def graph_of(*specs: dict[str, Any]) -> StageGraph:
    steps = [json_format.ParseDict(spec, step_pb2.Step()) for spec in specs]
    graph, violations = build_graph(steps, transform_kinds())
    assert graph is not None, violations
    return graph


SRC = {"name": "src", "source": {"file": {"path": "x.parquet"}}}
OUT = {"name": "out", "sink": {"discard": {}}}


def derive(*columns: tuple[str, str], name: str = "big") -> dict[str, Any]:
    return {
        "name": name,
        "transform": {"derive": {"columns": [{"name": n, "expr": e} for n, e in columns]}},
    }


def test_restore_types_gives_pass_through_columns_their_arrow_types() -> None:
    seen = pa.schema([("name", pa.string()), ("at", pa.timestamp("ms", tz="UTC"))])
    output = pa.schema(
        [("name", pa.string()), ("at", pa.timestamp("ms", tz="UTC")), ("n", pa.int64())]
    )
    restored = restore_types(output, [(seen, SCHEMA)])
    assert restored.field("name").type == pa.large_string()
    assert restored.field("at").type == pa.timestamp("ms", tz="Europe/Paris")
    assert restored.field("n").type == pa.int64()
    # A column of the same name but a new type is not a pass-through one.
    changed = pa.schema([("name", pa.int32())])
    assert restore_types(changed, [(seen, SCHEMA)]).field("name").type == pa.int32()


def test_bind_gives_every_schema_up_front(engine: Engine) -> None:
    graph = graph_of(
        SRC,
        {"name": "keep", "transform": {"filter": {"predicate": "id > 1"}}},
        derive(("id", "id * 2"), ("label", "upper(name)")),
        OUT,
    )
    schemas = {"src": SCHEMA}
    (segment,) = graph.segments
    bound = bind_segment(engine, graph, segment, schemas)
    assert schemas["keep"] == SCHEMA
    assert bound.schema.names == ["id", "name", "at", "amount", "label"]
    assert bound.schema.field("name").type == pa.large_string()
    assert bound.schema.field("at").type == pa.timestamp("ms", tz="Europe/Paris")
    assert bound.schema.field("label").type == pa.string()
    assert bound.needs_cast
    assert 'WITH "src" AS (SELECT * FROM "_in_src")' in bound.sql


def test_a_binding_is_remembered_for_the_same_steps_and_input_schemas() -> None:
    engine = Engine(EngineConfig(memory_limit="256MB", threads=1))
    try:
        keep = {"name": "keep", "transform": {"filter": {"predicate": "id > 1"}}}

        def bind(graph: StageGraph, schema: pa.Schema) -> tuple[Any, dict[str, pa.Schema]]:
            schemas = {"src": schema}
            return bind_segment(engine, graph, graph.segments[0], schemas), schemas

        first, schemas = bind(graph_of(SRC, keep, OUT), SCHEMA)
        # The same pipeline run again: a new graph, equal steps and schemas.
        again, again_schemas = bind(graph_of(SRC, keep, OUT), SCHEMA)
        assert again is first
        assert again_schemas == schemas
        # Another predicate, or other input types, bind anew.
        other = {"name": "keep", "transform": {"filter": {"predicate": "id > 2"}}}
        assert bind(graph_of(SRC, other, OUT), SCHEMA)[0] is not first
        narrower = pa.schema([SCHEMA.field("id"), SCHEMA.field("name")])
        bound, narrower_schemas = bind(graph_of(SRC, keep, OUT), narrower)
        assert bound is not first
        assert narrower_schemas["keep"] == narrower
        # Errors are not remembered: each bind reports them.
        broken = graph_of(SRC, derive(("x", "amount * rate")), OUT)
        for _ in range(2):
            with pytest.raises(DomainError, match="rate"):
                bind(broken, SCHEMA)
    finally:
        engine.close()


def test_a_binder_error_names_the_step_column_and_expression(engine: Engine) -> None:
    graph = graph_of(SRC, derive(("x", "amount * rate")), OUT)
    with pytest.raises(DomainError) as info:
        bind_segment(engine, graph, graph.segments[0], {"src": SCHEMA})
    error = info.value
    assert error.reason == "TRANSFORM_ERROR"
    assert error.metadata["step"] == "big"
    assert "'big'" in error.message
    assert "'x'" in error.message
    assert "'amount * rate'" in error.message
    assert '"rate"' in error.message


async def rows(count: int, delay: float = 0.0) -> AsyncIterator[pa.RecordBatch]:
    for i in range(count):
        if delay:
            await asyncio.sleep(delay)
        yield pa.RecordBatch.from_pydict(
            {
                "id": [i],
                "name": [f"n{i}"],
                "at": [1_000 * i],
                "amount": [pa.scalar(i, pa.decimal128(12, 2)).as_py()],
            },
            schema=SCHEMA,
        )


async def test_a_query_streams_its_inputs_through(engine: Engine) -> None:
    graph = graph_of(SRC, derive(("twice", "id * 2")), OUT)
    bound = bind_segment(engine, graph, graph.segments[0], {"src": SCHEMA})
    run = QueryRun(engine, bound)
    feed = asyncio.create_task(run.feeds["src"].feed(rows(100)))
    try:
        batches = [b.cast(bound.schema) async for b in run.start()]
    finally:
        await run.stop()
    await feed
    table = pa.Table.from_batches(batches, schema=bound.schema)
    assert sorted(table.column("twice").to_pylist()) == [2 * i for i in range(100)]


async def test_stopping_a_query_waiting_on_a_slow_input_takes_under_a_second(
    engine: Engine,
) -> None:
    graph = graph_of(SRC, derive(("twice", "id * 2")), OUT)
    bound = bind_segment(engine, graph, graph.segments[0], {"src": SCHEMA})
    run = QueryRun(engine, bound)
    feed = asyncio.create_task(run.feeds["src"].feed(rows(10_000, delay=0.05)))
    output = run.start()
    reading = asyncio.create_task(anext(output))
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    await run.stop(grace=1.0)
    assert time.perf_counter() - started < 1.0
    feed.cancel()
    await asyncio.gather(feed, reading, return_exceptions=True)


async def test_sorting_more_than_the_memory_limit_succeeds_by_spilling(tmp_path: Any) -> None:
    engine = Engine(EngineConfig(memory_limit="64MB", spill_dir=str(tmp_path), threads=2))
    try:
        graph = graph_of(
            SRC,
            {"name": "s", "transform": {"sql": {"query": "SELECT * FROM src ORDER BY k DESC"}}},
            OUT,
        )
        schema = pa.schema([("k", pa.int64()), ("pad", pa.string())])
        bound = bind_segment(engine, graph, graph.segments[0], {"src": schema})

        async def big() -> AsyncIterator[pa.RecordBatch]:
            for i in range(40):  # ~110 MB in all, over the limit
                keys = pa.array(range(i * 50_000, (i + 1) * 50_000), pa.int64())
                yield pa.RecordBatch.from_arrays(
                    [keys, pa.array(["x" * 40] * 50_000)], schema=schema
                )

        run = QueryRun(engine, bound)
        feed = asyncio.create_task(run.feeds["src"].feed(big()))
        first: int | None = None
        count = 0
        try:
            async for batch in run.start():
                if first is None and batch.num_rows:
                    first = batch.column(0)[0].as_py()
                count += batch.num_rows
        finally:
            await run.stop()
        await feed
        assert (count, first) == (2_000_000, 1_999_999)
    finally:
        engine.close()
    assert tmp_path.exists(), "a spill directory given by the operator is kept"

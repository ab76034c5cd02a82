"""Stage steps → DAG: shape validation and the split into DuckDB segments."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.executor.engine.graph import Segment, StageGraph, build_graph
from datadog_platform.executor.engine.kinds import transform_kinds


def steps(*specs: dict[str, Any]) -> list[step_pb2.Step]:
    return [json_format.ParseDict(spec, step_pb2.Step()) for spec in specs]


def src(name: str) -> dict[str, Any]:
    return {"name": name, "source": {"file": {"path": f"{name}.parquet"}}}


def flt(name: str, *inputs: str, watermark: str = "") -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, "transform": {"filter": {"predicate": "id > 1"}}}
    if inputs:
        step["inputs"] = list(inputs)
    if watermark:
        step["watermark"] = {"column": watermark}
    return step


def sql(name: str, *inputs: str) -> dict[str, Any]:
    return {"name": name, "inputs": list(inputs), "transform": {"sql": {"query": "SELECT 1"}}}


def out(*inputs: str) -> dict[str, Any]:
    return {"name": "out", "inputs": list(inputs), "sink": {"discard": {}}}


def graph_of(*specs: dict[str, Any]) -> StageGraph:
    graph, violations = build_graph(steps(*specs), transform_kinds())
    assert violations == []
    assert graph is not None
    return graph


def violations_of(*specs: dict[str, Any]) -> list[tuple[str, str]]:
    # An executor without "limit", to see how an unsupported transform is refused.
    kinds = {name: kind for name, kind in transform_kinds().items() if name != "limit"}
    graph, violations = build_graph(steps(*specs), kinds)
    assert graph is None
    return [(v.field, v.description) for v in violations]


def test_a_chain_with_default_inputs_is_one_fused_query() -> None:
    graph = graph_of(src("a"), flt("f1"), flt("f2"), out())
    assert [n.inputs for n in graph.nodes] == [(), ("a",), ("f1",), ("f2",)]
    assert graph.segments == (Segment("f2", ("f1", "f2"), ("a",)),)
    assert graph.operators == frozenset()
    assert [n.name for n in graph.sources] == ["a"]
    assert graph.sink.name == "out"


def test_several_sources_feed_one_query() -> None:
    graph = graph_of(src("a"), src("b"), sql("u", "a", "b"), flt("f", "u"), out("f"))
    assert graph.segments == (Segment("f", ("u", "f"), ("a", "b")),)


def test_a_source_straight_to_the_sink_needs_no_query() -> None:
    assert graph_of(src("a"), out("a")).segments == ()


def test_a_watermark_on_a_middle_step_ends_its_query() -> None:
    graph = graph_of(src("a"), flt("f1", watermark="id"), flt("f2"), out())
    assert graph.segments == (
        Segment("f1", ("f1",), ("a",)),
        Segment("f2", ("f2",), ("f1",)),
    )


def agg(name: str, *inputs: str) -> dict[str, Any]:
    spec = {"group_by": ["id"], "aggregates": [{"name": "n", "expr": "count(*)"}]}
    step: dict[str, Any] = {"name": name, "transform": {"aggregate": spec}}
    if inputs:
        step["inputs"] = list(inputs)
    return step


def test_which_streams_only_queries_read_and_which_one_query_reads_whole() -> None:
    cast = {"name": "c", "transform": {"cast": {"columns": [{"column": "id", "type": "float64"}]}}}
    limit = {"name": "l", "transform": {"limit": {"count": 5}}}
    chain = graph_of(src("a"), flt("f"), agg("g"), out())
    assert chain.read_by_queries_only("a")
    assert chain.read_whole_by_one_query("a")
    assert not graph_of(src("a"), flt("f"), out()).read_whole_by_one_query("a"), "it streams"
    assert not graph_of(src("a"), limit, agg("g"), out()).read_whole_by_one_query("a")
    joined = graph_of(src("a"), src("b"), sql("u", "a", "b"), agg("g", "u"), out("g"))
    assert joined.read_by_queries_only("a")
    assert not joined.read_whole_by_one_query("a"), "a query of two inputs"
    operated = graph_of(src("a"), cast, agg("g"), out())
    assert not operated.read_by_queries_only("a")
    assert not operated.read_whole_by_one_query("a")
    assert not graph_of(src("a"), out("a")).read_by_queries_only("a"), "the sink reads it"


def test_a_source_read_twice_in_one_query_is_allowed() -> None:
    graph = graph_of(src("a"), flt("f1", "a"), flt("f2", "a"), sql("u", "f1", "f2"), out("u"))
    assert graph.segments == (Segment("u", ("f1", "f2", "u"), ("a",)),)


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        ((src("a"), src("b"), out("b")), [("steps[0]", "consumed by no step")]),
        ((src("a"), flt("f", "a", "a"), out("f")), [("steps[1].inputs", "takes 1 input")]),
        ((src("a"), flt("f", "out"), out("f")), [("steps[1].inputs", "'out' is not an earlier")]),
        ((src("a"), src("b"), out("a", "b")), [("steps[2].inputs", "a sink takes one input")]),
        (
            (src("a"), {"name": "f", "transform": {"limit": {"count": 1}}}, out("f")),
            [("steps[1].transform.limit", "not supported")],
        ),
        # A stream is read by one query: here f is read by g's and u's.
        (
            (
                src("a"),
                flt("f", "a", watermark="id"),
                flt("g", "f", watermark="id"),
                sql("u", "f", "g"),
                out("u"),
            ),
            [("steps[1]", "step 'f' is read by 'g', 'u'")],
        ),
    ],
)
def test_malformed_dags_are_refused(
    specs: tuple[dict[str, Any], ...], expected: list[tuple[str, str]]
) -> None:
    found = violations_of(*specs)
    assert [field for field, _ in found] == [field for field, _ in expected]
    for (_, description), (_, fragment) in zip(found, expected, strict=True):
        assert fragment in description

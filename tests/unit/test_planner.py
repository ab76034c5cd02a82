"""Planner: linear chains fuse into stages; fan-out goes through the artifact store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.json_format import ParseDict

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.scheduler.domain import PlannedStage
from datadog_platform.scheduler.planner import PlanError, plan_pipeline
from datadog_platform.scheduler.validation import pipeline_violations

EXAMPLE = Path(__file__).parents[2] / "examples" / "csv_to_parquet.yaml"


def source(name: str, *, after: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"name": name, "source": {"file": {"path": f"{name}.csv"}}, "after": list(after)}


def transform(name: str, *upstream: str) -> dict[str, Any]:
    return {
        "name": name,
        "inputs": list(upstream),
        "transform": {"filter": {"predicate": "x > 1"}},
    }


def sink(name: str, upstream: str, *, after: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "name": name,
        "inputs": [upstream],
        "sink": {"file": {"path": f"{name}.parquet"}},
        "after": list(after),
    }


def spec(*steps: dict[str, Any]) -> pipeline_pb2.Pipeline:
    pipeline = ParseDict({"name": "p", "steps": list(steps)}, pipeline_pb2.Pipeline())
    assert pipeline_violations(pipeline) == []
    return pipeline


def unchecked(*steps: dict[str, Any]) -> pipeline_pb2.Pipeline:
    return ParseDict({"name": "p", "steps": list(steps)}, pipeline_pb2.Pipeline())


def assert_topological(stages: tuple[PlannedStage, ...]) -> None:
    seen: set[str] = set()
    for stage in stages:
        assert set(stage.upstream) <= seen, f"{stage.stage_id} before {stage.upstream}"
        seen.add(stage.stage_id)


def test_the_example_is_one_stage_named_after_its_sink() -> None:
    pipeline = ParseDict(yaml.safe_load(EXAMPLE.read_text()), pipeline_pb2.Pipeline())
    assert plan_pipeline(pipeline) == (
        PlannedStage(stage_id="out", steps=("orders", "big_orders", "out")),
    )


def test_source_straight_to_sink() -> None:
    assert plan_pipeline(spec(source("a"), sink("b", "a"))) == (PlannedStage("b", ("a", "b")),)


def test_steps_are_ordered_by_data_flow_whatever_the_spec_order() -> None:
    pipeline = spec(sink("out", "t2"), transform("t2", "t1"), source("src"), transform("t1", "src"))
    assert plan_pipeline(pipeline) == (PlannedStage("out", ("src", "t1", "t2", "out")),)


def test_independent_chains_are_separate_stages_in_sink_order() -> None:
    pipeline = spec(
        source("a"),
        source("b"),
        sink("b_out", "b_big"),
        transform("b_big", "b"),
        sink("a_out", "a"),
    )
    assert plan_pipeline(pipeline) == (
        PlannedStage("b_out", ("b", "b_big", "b_out")),
        PlannedStage("a_out", ("a", "a_out")),
    )


def test_a_fanned_out_source_is_materialised_once_and_read_back_by_each_consumer() -> None:
    pipeline = spec(source("src"), sink("one", "src"), transform("big", "src"), sink("two", "big"))
    assert plan_pipeline(pipeline) == (
        PlannedStage("src", ("src",), artifact_output="src"),
        PlannedStage("one", ("src", "one"), upstream=("src",), artifact_inputs=("src",)),
        PlannedStage("two", ("src", "big", "two"), upstream=("src",), artifact_inputs=("src",)),
    )


def test_a_fanned_out_transform_ends_the_chain_that_computes_it() -> None:
    pipeline = spec(
        source("src"),
        transform("clean", "src"),
        transform("shared", "clean"),
        sink("a", "shared"),
        sink("b", "shared"),
        sink("c", "shared"),
    )
    stages = plan_pipeline(pipeline)
    assert stages[0] == PlannedStage("shared", ("src", "clean", "shared"), artifact_output="shared")
    assert stages[1:] == tuple(
        PlannedStage(name, ("shared", name), upstream=("shared",), artifact_inputs=("shared",))
        for name in ("a", "b", "c")
    )


def test_a_consumer_of_a_fan_out_may_fan_out_again() -> None:
    pipeline = spec(
        source("src"),
        sink("raw", "src"),
        transform("mid", "src"),
        sink("x", "mid"),
        sink("y", "mid"),
    )
    stages = {s.stage_id: s for s in plan_pipeline(pipeline)}
    assert stages["mid"] == PlannedStage(
        "mid",
        ("src", "mid"),
        upstream=("src",),
        artifact_inputs=("src",),
        artifact_output="mid",
    )
    assert stages["x"].upstream == ("mid",)
    assert stages["x"].steps == ("mid", "x")


def test_after_adds_the_waited_steps_stage_upstream() -> None:
    pipeline = spec(
        source("dims"),
        sink("dims_out", "dims"),
        source("facts", after=("dims_out",)),
        sink("facts_out", "facts"),
    )
    assert plan_pipeline(pipeline) == (
        PlannedStage("dims_out", ("dims", "dims_out")),
        PlannedStage("facts_out", ("facts", "facts_out"), upstream=("dims_out",)),
    )


def test_after_a_step_in_the_middle_of_a_chain_waits_for_its_whole_stage() -> None:
    pipeline = spec(
        source("a"),
        transform("a2", "a"),
        sink("a_out", "a2"),
        source("b"),
        sink("b_out", "b", after=("a2",)),
    )
    stages = {s.stage_id: s for s in plan_pipeline(pipeline)}
    assert stages["b_out"].upstream == ("a_out",)


def test_after_a_step_of_the_same_stage_is_satisfied_by_the_stage_itself() -> None:
    pipeline = spec(source("a"), sink("out", "a", after=("a",)))
    assert plan_pipeline(pipeline) == (PlannedStage("out", ("a", "out")),)


def test_stages_come_in_topological_order_whatever_the_spec_order() -> None:
    pipeline = spec(
        sink("late", "src2", after=("early",)),
        source("src2", after=("t",)),
        sink("early", "t"),
        sink("other", "src"),
        transform("t", "src"),
        source("src"),
    )
    stages = plan_pipeline(pipeline)
    assert_topological(stages)
    assert [s.stage_id for s in stages] == ["src", "early", "late", "other"]
    late = next(s for s in stages if s.stage_id == "late")
    # "after" on the source of the stage ("t") and on its sink ("early").
    assert set(late.upstream) == {"early"}


def test_a_wide_fan_out_with_a_join_by_after() -> None:
    steps = [source("root"), sink("root_out", "root")]
    for i in range(200):
        steps += [source(f"s{i}", after=("root_out",)), sink(f"o{i}", f"s{i}")]
    steps += [source("join", after=tuple(f"o{i}" for i in range(200))), sink("done", "join")]
    stages = plan_pipeline(spec(*steps))
    assert len(stages) == 202
    assert_topological(stages)
    assert stages[0].stage_id == "root_out"
    assert stages[-1].stage_id == "done"
    assert len(stages[-1].upstream) == 200


def join(name: str, left: str, right: str) -> dict[str, Any]:
    return {
        "name": name,
        "inputs": [left, right],
        "transform": {"join": {"on": [{"left": "id", "right": "id"}]}},
    }


def union(name: str, *upstream: str) -> dict[str, Any]:
    return {"name": name, "inputs": list(upstream), "transform": {"union": {}}}


def test_a_join_of_two_sources_reads_both_back_from_artifacts() -> None:
    pipeline = spec(source("a"), source("b"), join("joined", "a", "b"), sink("out", "joined"))
    assert plan_pipeline(pipeline) == (
        PlannedStage("a", ("a",), artifact_output="a"),
        PlannedStage("b", ("b",), artifact_output="b"),
        PlannedStage(
            "out",
            ("a", "b", "joined", "out"),
            upstream=("a", "b"),
            artifact_inputs=("a", "b"),
        ),
    )


def test_the_inputs_of_a_join_keep_their_chains_and_its_output_streams_on() -> None:
    pipeline = spec(
        source("orders"),
        transform("big", "orders"),
        source("customers"),
        transform("active", "customers"),
        join("joined", "big", "active"),
        transform("late", "joined"),
        sink("out", "late"),
    )
    assert plan_pipeline(pipeline) == (
        PlannedStage("big", ("orders", "big"), artifact_output="big"),
        PlannedStage("active", ("customers", "active"), artifact_output="active"),
        PlannedStage(
            "out",
            ("big", "active", "joined", "late", "out"),
            upstream=("big", "active"),
            artifact_inputs=("big", "active"),
        ),
    )


def test_a_union_of_three_and_a_fanned_out_input() -> None:
    pipeline = spec(
        source("a"),
        source("b"),
        source("c"),
        union("all", "a", "b", "c"),
        sink("out", "all"),
        sink("raw_a", "a"),
    )
    stages = plan_pipeline(pipeline)
    assert_topological(stages)
    by_id = {stage.stage_id: stage for stage in stages}
    assert set(by_id) == {"a", "b", "c", "out", "raw_a"}
    # "a" is materialised once and read back by both of its consumers.
    assert by_id["a"] == PlannedStage("a", ("a",), artifact_output="a")
    assert by_id["raw_a"] == PlannedStage(
        "raw_a", ("a", "raw_a"), upstream=("a",), artifact_inputs=("a",)
    )
    assert by_id["out"].artifact_inputs == ("a", "b", "c")
    assert by_id["out"].steps == ("a", "b", "c", "all", "out")


def test_a_sql_step_with_one_input_fuses_like_any_one_input_transform() -> None:
    step = {
        "name": "q",
        "inputs": ["a"],
        "transform": {"sql": {"query": "SELECT * FROM a"}},
    }
    pipeline = spec(source("a"), step, sink("out", "q"))
    assert plan_pipeline(pipeline) == (PlannedStage("out", ("a", "q", "out")),)


def test_a_join_consuming_another_join() -> None:
    pipeline = spec(
        source("a"),
        source("b"),
        source("c"),
        join("ab", "a", "b"),
        join("abc", "ab", "c"),
        sink("out", "abc"),
    )
    stages = plan_pipeline(pipeline)
    assert_topological(stages)
    assert [s.stage_id for s in stages] == ["a", "b", "c", "ab", "out"]
    assert stages[3] == PlannedStage(
        "ab",
        ("a", "b", "ab"),
        upstream=("a", "b"),
        artifact_inputs=("a", "b"),
        artifact_output="ab",
    )
    assert stages[4].artifact_inputs == ("ab", "c")


def test_a_cycle_of_stages_through_after_names_the_after_entry() -> None:
    # Steps are acyclic (a -> b, a -> c, c -> b) but stages are not: "b" (stage of
    # a and b) waits for c's stage, which waits for a's stage.
    pipeline = unchecked(
        source("a"),
        sink("b", "a", after=("c_out",)),
        source("c", after=("a",)),
        sink("c_out", "c"),
    )
    with pytest.raises(PlanError) as raised:
        plan_pipeline(pipeline)
    assert raised.value.step in ("b", "c")
    assert raised.value.after in ("c_out", "a")
    assert "cycle" in str(raised.value)


@pytest.mark.parametrize(
    "steps",
    [
        [source("a")],
        [transform("t", "t"), sink("out", "t")],
        [sink("out", "missing")],
        [source("a"), sink("out", "a"), sink("again", "out")],
        [source("a"), sink("out", "a", after=("ghost",))],
        [source("a"), source("a"), sink("out", "a")],
        [{"name": "a"}, sink("out", "a")],
    ],
)
def test_unplannable_pipelines_raise(steps: list[dict[str, Any]]) -> None:
    with pytest.raises(PlanError):
        plan_pipeline(unchecked(*steps))

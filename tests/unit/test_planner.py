"""Planner: linear chains source → transforms → sink become one stage each."""

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


def source(name: str) -> dict[str, Any]:
    return {"name": name, "source": {"file": {"path": f"{name}.csv"}}}


def transform(name: str, upstream: str) -> dict[str, Any]:
    return {"name": name, "inputs": [upstream], "transform": {"filter": {"predicate": "x > 1"}}}


def sink(name: str, upstream: str) -> dict[str, Any]:
    return {"name": name, "inputs": [upstream], "sink": {"file": {"path": f"{name}.parquet"}}}


def spec(*steps: dict[str, Any]) -> pipeline_pb2.Pipeline:
    pipeline = ParseDict({"name": "p", "steps": list(steps)}, pipeline_pb2.Pipeline())
    assert pipeline_violations(pipeline) == []
    return pipeline


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


@pytest.mark.parametrize(
    "steps",
    [
        [source("a")],
        [transform("t", "t"), sink("out", "t")],
        [sink("out", "missing")],
    ],
)
def test_unplannable_pipelines_raise(steps: list[dict[str, Any]]) -> None:
    pipeline = ParseDict({"name": "p", "steps": steps}, pipeline_pb2.Pipeline())
    with pytest.raises(PlanError):
        plan_pipeline(pipeline)

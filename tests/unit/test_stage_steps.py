"""The steps of a stage as the executor gets them: artifacts inserted, templates rendered."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict, ParseDict

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.scheduler.domain import Run, RunState
from datadog_platform.scheduler.planner import plan_pipeline
from datadog_platform.scheduler.stage_steps import (
    artifact_key,
    build_stage_steps,
)
from datadog_platform.scheduler.templating import TemplateError
from datadog_platform.scheduler.validation import pipeline_violations

START = datetime(2024, 5, 1, tzinfo=UTC)
RUN = Run(
    run_id="r1",
    pipeline="p",
    pipeline_version=1,
    state=RunState.RUNNING,
    create_time=START,
    stages=[],
    params={"min": 10, "target": "out/big.parquet"},
    logical_date=START,
    data_interval_start=START,
    data_interval_end=START + timedelta(days=1),
)


def spec(*steps: dict[str, Any], params: dict[str, Any] | None = None) -> pipeline_pb2.Pipeline:
    pipeline = ParseDict(
        {"name": "p", "steps": list(steps), "params": params or {}}, pipeline_pb2.Pipeline()
    )
    assert pipeline_violations(pipeline) == []
    return pipeline


def as_dicts(steps: list[step_pb2.Step]) -> list[dict[str, Any]]:
    return [MessageToDict(s) for s in steps]


SRC = {"name": "src", "source": {"file": {"path": "in.csv"}}}


def test_a_fused_chain_is_the_specs_own_steps() -> None:
    pipeline = spec(
        SRC,
        {"name": "big", "inputs": ["src"], "transform": {"filter": {"predicate": "x > 1"}}},
        {"name": "out", "inputs": ["big"], "sink": {"discard": {}}},
    )
    (stage,) = plan_pipeline(pipeline)
    steps = build_stage_steps(pipeline, stage, RUN, {})
    assert steps == list(pipeline.steps)


def test_fan_out_inserts_an_artifact_sink_and_artifact_sources() -> None:
    pipeline = spec(
        SRC,
        {"name": "a", "inputs": ["src"], "sink": {"discard": {}}},
        {"name": "f", "inputs": ["src"], "transform": {"filter": {"predicate": "x > 1"}}},
        {"name": "b", "inputs": ["f"], "sink": {"file": {"path": "b.csv"}}},
    )
    stages = {s.stage_id: s for s in plan_pipeline(pipeline)}
    assert artifact_key("r1", "src") == "runs/r1/src"
    assert as_dicts(build_stage_steps(pipeline, stages["src"], RUN, {})) == [
        {"name": "src", "source": {"file": {"path": "in.csv"}}},
        {"name": "src__artifact", "inputs": ["src"], "sink": {"artifact": {"key": "runs/r1/src"}}},
    ]
    assert as_dicts(build_stage_steps(pipeline, stages["a"], RUN, {})) == [
        {"name": "src", "source": {"artifact": {"key": "runs/r1/src"}}},
        {"name": "a", "inputs": ["src"], "sink": {"discard": {}}},
    ]
    assert as_dicts(build_stage_steps(pipeline, stages["b"], RUN, {})) == [
        {"name": "src", "source": {"artifact": {"key": "runs/r1/src"}}},
        {"name": "f", "inputs": ["src"], "transform": {"filter": {"predicate": "x > 1"}}},
        {"name": "b", "inputs": ["f"], "sink": {"file": {"path": "b.csv"}}},
    ]


def test_a_stage_reading_and_writing_artifacts_gets_both() -> None:
    pipeline = spec(
        SRC,
        {"name": "raw", "inputs": ["src"], "sink": {"discard": {}}},
        {"name": "mid", "inputs": ["src"], "transform": {"filter": {"predicate": "x > 1"}}},
        {"name": "x", "inputs": ["mid"], "sink": {"discard": {}}},
        {"name": "y", "inputs": ["mid"], "sink": {"discard": {}}},
    )
    stage = next(s for s in plan_pipeline(pipeline) if s.stage_id == "mid")
    steps = build_stage_steps(pipeline, stage, RUN, {})
    assert [s.name for s in steps] == ["src", "mid", "mid__artifact"]
    assert steps[0].source.artifact.key == "runs/r1/src"
    assert steps[2].sink.artifact.key == "runs/r1/mid"
    assert list(steps[2].inputs) == ["mid"]


def test_templates_are_rendered_with_the_run_and_watermarks() -> None:
    pipeline = spec(
        {
            "name": "src",
            "watermark": {"column": "ts", "initial": "1970-01-01"},
            "source": {
                "database": {
                    "connection": "w",
                    "query": "SELECT * FROM t WHERE ts > '{{ watermark }}' AND d = '{{ ds }}'",
                }
            },
        },
        {
            "name": "big",
            "inputs": ["src"],
            "transform": {"filter": {"predicate": "x > {{ params.min }}"}},
        },
        {"name": "out", "inputs": ["big"], "sink": {"file": {"path": "{{ params.target }}"}}},
        params={"min": 0, "target": "x.csv"},
    )
    (stage,) = plan_pipeline(pipeline)
    steps = build_stage_steps(pipeline, stage, RUN, {"src": "2024-04-30T10:00:00"})
    assert steps[0].source.database.query == (
        "SELECT * FROM t WHERE ts > '2024-04-30T10:00:00' AND d = '2024-05-01'"
    )
    assert steps[1].transform.filter.predicate == "x > 10"
    assert steps[2].sink.file.path == "out/big.parquet"
    # The spec keeps its templates.
    assert pipeline.steps[1].transform.filter.predicate == "x > {{ params.min }}"
    steps = build_stage_steps(pipeline, stage, RUN, {})
    assert "ts > '1970-01-01'" in steps[0].source.database.query


def test_a_template_that_fails_at_run_time_names_step_and_field() -> None:
    pipeline = spec(
        SRC,
        {"name": "out", "inputs": ["src"], "sink": {"file": {"path": "{{ params.target }}"}}},
        params={"target": "x.csv"},
    )
    (stage,) = plan_pipeline(pipeline)
    run = Run("r2", "p", 1, RunState.RUNNING, START, [], params={})
    with pytest.raises(TemplateError) as raised:
        build_stage_steps(pipeline, stage, run, {})
    assert raised.value.step == "out"
    assert raised.value.field == "sink.file.path"


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("../../etc/passwd.csv", "must not leave the connection's root"),
        ("out/no_extension", "format"),
    ],
)
def test_a_rendered_value_is_validated_like_a_literal_one(target: str, words: str) -> None:
    pipeline = spec(
        SRC,
        {"name": "out", "inputs": ["src"], "sink": {"file": {"path": "{{ params.target }}"}}},
        params={"target": "x.csv"},
    )
    (stage,) = plan_pipeline(pipeline)
    run = Run("r3", "p", 1, RunState.RUNNING, START, [], params={"target": target})
    with pytest.raises(TemplateError, match="the rendered value is invalid") as raised:
        build_stage_steps(pipeline, stage, run, {})
    assert words in str(raised.value)
    assert raised.value.field.startswith("sink.file.")


def test_no_op_stages_build_fast() -> None:
    steps: list[dict[str, Any]] = [
        {"name": "root", "source": {"inline": {"rows": [{"x": 1}]}}},
        {"name": "root_out", "inputs": ["root"], "sink": {"discard": {}}},
    ]
    for i in range(1000):
        steps += [
            {"name": f"s{i}", "after": ["root_out"], "source": {"inline": {"rows": [{"x": i}]}}},
            {"name": f"o{i}", "inputs": [f"s{i}"], "sink": {"discard": {}}},
        ]
    pipeline = spec(*steps)
    stages = plan_pipeline(pipeline)
    started = time.perf_counter()
    for stage in stages:
        built = build_stage_steps(pipeline, stage, RUN, {})
        assert len(built) == 2
    elapsed = time.perf_counter() - started
    # Generous bound: a no-op stage must cost microseconds, not milliseconds.
    assert elapsed < 0.5, elapsed

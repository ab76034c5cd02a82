"""Pipeline spec validation: each problem yields its own field violation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.json_format import ParseDict

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import DomainError, ErrorCode, FieldViolation
from datadog_platform.scheduler.validation import (
    check_pipeline,
    check_request_id,
    pipeline_violations,
)

EXAMPLE = Path(__file__).parents[2] / "examples" / "csv_to_parquet.yaml"

SOURCE = {"name": "orders", "source": {"file": {"path": "in/orders.csv"}}}
FILTER = {
    "name": "big",
    "inputs": ["orders"],
    "transform": {"filter": {"predicate": "amount > 100"}},
}
SINK = {"name": "out", "inputs": ["big"], "sink": {"file": {"path": "out/big.parquet"}}}


def spec(*steps: dict[str, Any], name: str = "p") -> pipeline_pb2.Pipeline:
    return ParseDict({"name": name, "steps": list(steps)}, pipeline_pb2.Pipeline())


def with_(step: dict[str, Any], **changes: Any) -> dict[str, Any]:
    changed = copy.deepcopy(step)
    changed.update(changes)
    return changed


def fields(violations: list[FieldViolation]) -> list[str]:
    return [v.field for v in violations]


def test_the_example_pipeline_is_valid() -> None:
    pipeline = ParseDict(yaml.safe_load(EXAMPLE.read_text()), pipeline_pb2.Pipeline())
    assert pipeline_violations(pipeline) == []
    check_pipeline(pipeline)  # does not raise


def test_a_minimal_linear_pipeline_is_valid() -> None:
    assert pipeline_violations(spec(SOURCE, FILTER, SINK)) == []
    # Order of steps is free.
    assert pipeline_violations(spec(SINK, FILTER, SOURCE)) == []


@pytest.mark.parametrize(
    ("pipeline", "field", "words"),
    [
        (spec(SOURCE, FILTER, SINK, name=""), "pipeline.name", "required"),
        (spec(SOURCE, FILTER, SINK, name="9lives"), "pipeline.name", "not a valid name"),
        (spec(SOURCE, FILTER, SINK, name="a" * 129), "pipeline.name", "not a valid name"),
        (spec(SOURCE, FILTER, SINK, name="has space"), "pipeline.name", "not a valid name"),
        (spec(), "pipeline.steps", "at least one step"),
        (spec(with_(SOURCE, name=""), FILTER, SINK), "pipeline.steps[0].name", "required"),
        (spec(SOURCE, with_(FILTER, name="b@d"), SINK), "pipeline.steps[1].name", "valid name"),
        (
            spec(SOURCE, FILTER, SINK, with_(SINK, inputs=["orders"])),
            "pipeline.steps[3].name",
            'duplicate step name "out"',
        ),
        (
            spec(SOURCE, FILTER, with_(SINK, inputs=["nope"])),
            "pipeline.steps[2].inputs[0]",
            '"nope" names no step',
        ),
        (spec(SOURCE, FILTER, {"name": "out", "inputs": ["big"]}), "pipeline.steps[2]", "one of"),
        (
            spec(SOURCE, FILTER, with_(SINK, sink={})),
            "pipeline.steps[2].sink",
            "kind of sink",
        ),
        (spec(with_(SOURCE, source={}), FILTER, SINK), "pipeline.steps[0].source", "kind"),
        (
            spec(SOURCE, with_(FILTER, transform={}), SINK),
            "pipeline.steps[1].transform",
            "kind of transform",
        ),
        (
            spec(with_(SOURCE, inputs=["big"]), FILTER, SINK),
            "pipeline.steps[0].inputs",
            "a source takes no inputs",
        ),
        (
            spec(SOURCE, with_(FILTER, inputs=[]), SINK),
            "pipeline.steps[1].inputs",
            "exactly one input",
        ),
        (spec(SOURCE, FILTER, with_(SINK, inputs=[])), "pipeline.steps[2].inputs", "exactly one"),
        (
            spec(SOURCE, with_(FILTER, transform={"filter": {"predicate": ""}}), SINK),
            "pipeline.steps[1].transform.filter.predicate",
            "empty",
        ),
        (
            spec(SOURCE, with_(FILTER, transform={"filter": {"predicate": "amount >"}}), SINK),
            "pipeline.steps[1].transform.filter.predicate",
            "error",
        ),
        (
            spec(with_(SOURCE, source={"file": {"path": ""}}), FILTER, SINK),
            "pipeline.steps[0].source.file.path",
            "required",
        ),
        (
            spec(SOURCE, FILTER, with_(SINK, sink={"file": {"path": ""}})),
            "pipeline.steps[2].sink.file.path",
            "required",
        ),
        (
            spec(with_(SOURCE, source={"file": {"path": "/etc/passwd"}}), FILTER, SINK),
            "pipeline.steps[0].source.file.path",
            "relative",
        ),
        (
            spec(SOURCE, FILTER, with_(SINK, sink={"file": {"path": "../up.csv"}})),
            "pipeline.steps[2].sink.file.path",
            "'..'",
        ),
        (
            spec(with_(SOURCE, source={"file": {"path": "in/orders.txt"}}), FILTER, SINK),
            "pipeline.steps[0].source.file.format",
            "cannot be inferred",
        ),
        (
            spec(SOURCE, FILTER, with_(SINK, sink={"file": {"path": "out/big"}})),
            "pipeline.steps[2].sink.file.format",
            "cannot be inferred",
        ),
        (
            spec(SOURCE, FILTER, SINK, with_(SINK, name="out2")),
            "pipeline.steps[1]",
            "fan-out is not supported yet",
        ),
        (
            spec(SOURCE, with_(SOURCE, name="more"), with_(SINK, inputs=["orders", "more"])),
            "pipeline.steps[2].inputs",
            "fan-in) are not supported yet",
        ),
        (spec(SOURCE, FILTER), "pipeline.steps[1]", "reaches no sink"),
        (
            spec(SOURCE, with_(SINK, inputs=["orders"]), with_(SOURCE, name="lonely")),
            "pipeline.steps[2]",
            "reaches no sink",
        ),
        (
            spec(SOURCE, FILTER, SINK, with_(SINK, name="after_sink", inputs=["out"])),
            "pipeline.steps[3].inputs[0]",
            "is a sink",
        ),
    ],
)
def test_each_problem_yields_its_violation(
    pipeline: pipeline_pb2.Pipeline, field: str, words: str
) -> None:
    violations = pipeline_violations(pipeline)
    matching = [v for v in violations if v.field == field]
    assert matching, f"no violation for {field}; got {violations}"
    assert any(words in v.description for v in matching), matching


def test_a_cycle_names_its_steps() -> None:
    pipeline = spec(
        with_(FILTER, name="a", inputs=["c"]),
        with_(FILTER, name="b", inputs=["a"]),
        with_(FILTER, name="c", inputs=["b"]),
        SOURCE,
        with_(SINK, inputs=["orders"]),
    )
    violations = pipeline_violations(pipeline)
    cycles = [v for v in violations if "cycle" in v.description]
    assert len(cycles) == 1
    assert cycles[0].field == "pipeline.steps[0].inputs[0]"
    assert "a -> b -> c -> a" in cycles[0].description


def test_a_step_consuming_itself_is_a_cycle() -> None:
    violations = pipeline_violations(spec(SOURCE, with_(FILTER, inputs=["big"]), SINK))
    assert FieldViolation("pipeline.steps[1].inputs[0]", "steps form a cycle: big -> big") in (
        violations
    )


def test_two_separate_cycles_yield_two_violations() -> None:
    pipeline = spec(
        with_(FILTER, name="a", inputs=["b"]),
        with_(FILTER, name="b", inputs=["a"]),
        with_(FILTER, name="c", inputs=["d"]),
        with_(FILTER, name="d", inputs=["c"]),
    )
    cycles = [v for v in pipeline_violations(pipeline) if "cycle" in v.description]
    assert [c.field for c in cycles] == [
        "pipeline.steps[0].inputs[0]",
        "pipeline.steps[2].inputs[0]",
    ]


def test_several_problems_yield_several_violations() -> None:
    pipeline = spec(
        with_(SOURCE, source={"file": {"path": ""}}),
        with_(FILTER, inputs=["missing"], transform={"filter": {"predicate": "amount >"}}),
        with_(SINK, name="big"),
        name="",
    )
    assert set(fields(pipeline_violations(pipeline))) >= {
        "pipeline.name",
        "pipeline.steps[0].source.file.path",
        "pipeline.steps[1].inputs[0]",
        "pipeline.steps[1].transform.filter.predicate",
        "pipeline.steps[2].name",
    }


def test_check_pipeline_raises_invalid_argument_with_every_violation() -> None:
    pipeline = spec(with_(SOURCE, name="x y"), FILTER, with_(SINK, inputs=["nope"]))
    with pytest.raises(DomainError) as raised:
        check_pipeline(pipeline)
    error = raised.value
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_PIPELINE_SPEC"
    assert list(error.violations) == pipeline_violations(pipeline)
    assert len(error.violations) >= 3
    assert "pipeline.steps[2].inputs[0]" in error.message


def test_tags_and_labels_get_sanity_checks() -> None:
    pipeline = spec(SOURCE, FILTER, SINK)
    pipeline.tags.extend(["ok", "", "ok", "has space"])
    pipeline.labels["team"] = "data"
    pipeline.labels["9bad"] = "x"
    pipeline.labels["long"] = "v" * 300
    assert fields(pipeline_violations(pipeline)) == [
        "pipeline.tags[1]",
        "pipeline.tags[2]",
        "pipeline.tags[3]",
        'pipeline.labels["9bad"]',
        'pipeline.labels["long"]',
    ]


def test_format_is_inferred_from_known_extensions() -> None:
    for path in ("a.csv", "a.CSV", "a.parquet", "a.pq"):
        source = with_(SOURCE, source={"file": {"path": path}})
        sink = with_(SINK, sink={"file": {"path": path}})
        assert pipeline_violations(spec(source, FILTER, sink)) == []


def test_request_ids_are_bounded() -> None:
    check_request_id("")
    check_request_id("r" * 128)
    with pytest.raises(DomainError) as raised:
        check_request_id("r" * 129)
    assert raised.value.violations[0].field == "request_id"

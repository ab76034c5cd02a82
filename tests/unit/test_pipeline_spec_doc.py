"""docs/pipeline-spec.md: it names every field a pipeline file can hold, and its
example pipelines parse, validate, plan and render as the page says."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.scheduler.planner import plan_pipeline
from datadog_platform.scheduler.templating import TemplateContext, render_step
from datadog_platform.scheduler.validation import pipeline_violations

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "pipeline-spec.md"
DOC = DOC_PATH.read_text(encoding="utf-8")

#: Transform messages are documented in docs/transforms.md: the walk lists the kinds of
#: TransformSpec but does not descend into them.
TRANSFORM_SPEC = step_pb2.TransformSpec.DESCRIPTOR.full_name

_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _reachable_messages() -> list[Descriptor]:
    """Messages a pipeline file can contain, from Pipeline down (well-known types and map
    entries excluded: their fields are not keys of the file)."""
    seen: dict[str, Descriptor] = {}
    pending = [pipeline_pb2.Pipeline.DESCRIPTOR]
    while pending:
        message = pending.pop()
        if message.full_name in seen:
            continue
        seen[message.full_name] = message
        if message.full_name == TRANSFORM_SPEC:
            continue
        for field in message.fields:
            target = field.message_type
            if target is None:
                continue
            if target.GetOptions().map_entry:
                target = target.fields_by_name["value"].message_type
                if target is None:
                    continue
            if not target.full_name.startswith("google.protobuf."):
                pending.append(target)
    return sorted(seen.values(), key=lambda d: d.full_name)


def _enum_values() -> Iterator[tuple[str, str]]:
    for message in _reachable_messages():
        if message.full_name == TRANSFORM_SPEC:
            continue
        for field in message.fields:
            if field.type == FieldDescriptor.TYPE_ENUM:
                for value in field.enum_type.values:
                    yield field.enum_type.full_name, value.name


def _blocks(language: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(DOC) if lang == language]


def _example_pipelines() -> list[tuple[str, dict[str, object]]]:
    """Every ```yaml / ```json block of the page that is a whole pipeline."""
    examples: list[tuple[str, dict[str, object]]] = []
    for body in _blocks("yaml"):
        if re.search(r"^name:", body, re.MULTILINE):
            document = yaml.safe_load(body)
            examples.append((f"yaml:{document['name']}", document))
    for body in _blocks("json"):
        document = json.loads(body)
        if isinstance(document, dict) and "name" in document:
            examples.append((f"json:{document['name']}", document))
    return examples


EXAMPLES = _example_pipelines()


def _parse(document: dict[str, object]) -> pipeline_pb2.Pipeline:
    return json_format.ParseDict(document, pipeline_pb2.Pipeline())


def test_every_field_reachable_from_pipeline_is_documented() -> None:
    messages = _reachable_messages()
    # The walk reaches the whole file format, not only the top level.
    names = {m.name for m in messages}
    assert {"Step", "RetryPolicy", "Watermark", "Schedule", "CursorPagination"} <= names
    assert "FilterTransform" not in names
    missing = [
        f"{message.name}.{field.name}"
        for message in messages
        for field in message.fields
        if f"`{field.name}`" not in DOC
    ]
    assert not missing, f"fields not mentioned as `name` in {DOC_PATH.name}: {missing}"


def test_every_enum_value_of_a_source_or_sink_is_documented() -> None:
    missing = sorted(
        {
            f"{enum}.{value}"
            for enum, value in _enum_values()
            if not value.endswith("_UNSPECIFIED") and value not in DOC
        }
    )
    assert not missing, f"enum values not mentioned in {DOC_PATH.name}: {missing}"


def test_the_page_has_the_promised_examples() -> None:
    names = {label.split(":", 1)[1] for label, _ in EXAMPLES}
    assert len([label for label, _ in EXAMPLES if label.startswith("yaml:")]) >= 4
    assert {
        "csv_to_parquet",
        "orders_incremental",
        "customers_fan_out",
        "noop",
        "api_events",
    } <= names


@pytest.mark.parametrize(("label", "document"), EXAMPLES, ids=[label for label, _ in EXAMPLES])
def test_example_parses_and_validates(label: str, document: dict[str, object]) -> None:
    pipeline = _parse(document)
    violations = pipeline_violations(pipeline)
    assert not violations, [f"{v.field}: {v.description}" for v in violations]


@pytest.mark.parametrize(("label", "document"), EXAMPLES, ids=[label for label, _ in EXAMPLES])
def test_example_templates_render(label: str, document: dict[str, object]) -> None:
    pipeline = _parse(document)
    defaults = {name: json_format.MessageToDict(value) for name, value in pipeline.params.items()}
    when = datetime(2024, 6, 1, 2, 0, tzinfo=UTC)
    context = TemplateContext(
        params=defaults,
        logical_date=when,
        data_interval_start=when,
        data_interval_end=datetime(2024, 6, 1, 3, 0, tzinfo=UTC),
        run_id="0190f0c1a2b3",
        watermarks={s.name: s.watermark.initial for s in pipeline.steps if s.HasField("watermark")},
    )
    for step in pipeline.steps:
        rendered = render_step(step, context)
        text = json_format.MessageToJson(rendered)
        assert "{{" not in text
        assert "{%" not in text


def test_the_json_example_is_the_yaml_one() -> None:
    by_label = dict(EXAMPLES)
    yaml_noop = _parse(by_label["yaml:noop"])
    json_noop = _parse(by_label["json:noop"])
    assert json_noop.max_active_runs == 1
    json_noop.ClearField("max_active_runs")
    assert json_noop == yaml_noop


def test_fan_out_plan_matches_the_table() -> None:
    pipeline = _parse(dict(EXAMPLES)["yaml:customers_fan_out"])
    plan = [(s.stage_id, s.steps, s.upstream) for s in plan_pipeline(pipeline)]
    assert plan == [
        ("active", ("customers", "active"), ()),
        ("to_warehouse", ("active", "to_warehouse"), ("active",)),
        ("to_lake", ("active", "to_lake"), ("active",)),
        ("orders_out", ("orders", "orders_out"), ("to_warehouse",)),
    ]
    for stage_id, steps, upstream in plan:
        row = next(line for line in DOC.splitlines() if line.startswith(f"| `{stage_id}` |"))
        for name in (*steps, *upstream):
            assert f"`{name}`" in row


def test_incremental_example_is_one_stage_keeping_its_watermark() -> None:
    pipeline = _parse(dict(EXAMPLES)["yaml:orders_incremental"])
    (stage,) = plan_pipeline(pipeline)
    assert stage.steps == ("changed_orders", "kept", "merged")
    assert not stage.artifact_output
    assert pipeline.steps[0].watermark.column == "updated_at"
    assert pipeline.schedule.timezone == "Europe/Paris"

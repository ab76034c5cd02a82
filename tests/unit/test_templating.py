"""Templating of step options: sandboxed Jinja2, strict names, every string field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict, ParseDict

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.scheduler.domain import Run, RunState, RunTrigger
from datadog_platform.scheduler.templating import (
    MAX_RENDERED_CHARS,
    TemplateContext,
    TemplateError,
    check_templates,
    render_step,
    resolve_params,
    template_fields,
)

START = datetime(2024, 3, 10, 2, 0, tzinfo=UTC)
END = START + timedelta(days=1)


def step(settings: dict[str, Any]) -> step_pb2.Step:
    return ParseDict(settings, step_pb2.Step())


def query_step(query: str, **extra: Any) -> step_pb2.Step:
    return step(
        {"name": "orders", "source": {"database": {"connection": "w", "query": query}}, **extra}
    )


def context(params: dict[str, Any] | None = None, **watermarks: str) -> TemplateContext:
    return TemplateContext(
        params=params or {},
        logical_date=START,
        data_interval_start=START,
        data_interval_end=END,
        run_id="0123456789abcdef0123456789abcdef",
        watermarks=watermarks,
    )


def rendered_query(query: str, ctx: TemplateContext | None = None, **extra: Any) -> str:
    return render_step(query_step(query, **extra), ctx or context()).source.database.query


def pipeline(settings: dict[str, Any]) -> pipeline_pb2.Pipeline:
    return ParseDict({"name": "p", **settings}, pipeline_pb2.Pipeline())


# --- rendering -----------------------------------------------------------------------------


def test_run_variables_render_as_iso_strings_in_utc() -> None:
    query = (
        "{{ logical_date }}|{{ data_interval_start }}|{{ data_interval_end }}|{{ ds }}|{{ run_id }}"
    )
    assert rendered_query(query) == (
        "2024-03-10T02:00:00+00:00|2024-03-10T02:00:00+00:00|2024-03-11T02:00:00+00:00"
        "|2024-03-10|0123456789abcdef0123456789abcdef"
    )


def test_dates_in_another_zone_are_given_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    ctx = TemplateContext(
        params={},
        logical_date=datetime(2024, 3, 10, 0, 30, tzinfo=paris),
        data_interval_start=datetime(2024, 3, 10, 0, 30, tzinfo=paris),
        data_interval_end=datetime(2024, 3, 11, 0, 30, tzinfo=paris),
        run_id="r",
        watermarks={},
    )
    assert (
        rendered_query("{{ logical_date }} {{ ds }}", ctx) == "2024-03-09T23:30:00+00:00 2024-03-09"
    )


@pytest.mark.parametrize(
    ("value", "template", "expected"),
    [
        (100, "{{ params.v }}", "100"),
        (100.0, "{{ params.v }}", "100"),  # protobuf numbers are doubles
        (2.5, "{{ params.v + 1 }}", "3.5"),
        ("FR", "'{{ params.v }}'", "'FR'"),
        (True, "{% if params.v %}yes{% endif %}", "yes"),
        (None, "{{ params.v is none }}", "True"),
        ([1, 2], "{{ params.v | join(',') }}", "1,2"),
        ({"a": 1}, "{{ params.v.a }}", "1"),
        ({"a": [1.0, "x"]}, "{{ params.v | tojson }}", '{"a": [1, "x"]}'),
    ],
)
def test_params_keep_their_json_types(value: Any, template: str, expected: str) -> None:
    assert rendered_query(template, context({"v": value})) == expected


def test_a_param_named_like_a_dict_method_is_the_param() -> None:
    ctx = context({"items": "a", "keys": "b"}, get="wm")
    assert rendered_query("{{ params.items }}{{ params.keys }}{{ watermarks.get }}", ctx) == "abwm"


def test_watermark_is_the_saved_value_or_the_initial() -> None:
    wm = {"watermark": {"column": "ts", "initial": "1970-01-01"}}
    assert rendered_query("{{ watermark }}", context(orders="2024-01-02"), **wm) == "2024-01-02"
    assert rendered_query("{{ watermark }}", context(), **wm) == "1970-01-01"
    assert rendered_query("{{ watermarks.other }}", context(other="7")) == "7"


def test_a_step_without_templates_is_returned_as_is() -> None:
    plain = query_step("SELECT '{' || '}' AS braces", watermark={"column": "x", "initial": "{{"})
    assert render_step(plain, context()) is plain
    assert template_fields(plain) == []


def test_rendering_does_not_touch_the_original_step() -> None:
    original = query_step("SELECT {{ params.n }}")
    rendered = render_step(original, context({"n": 3}))
    assert rendered is not original
    assert original.source.database.query == "SELECT {{ params.n }}"
    assert rendered.source.database.query == "SELECT 3"


def test_every_string_field_is_rendered_maps_lists_and_struct_values_included() -> None:
    templated = step(
        {
            "name": "api",
            "source": {
                "rest": {
                    "connection": "api",
                    "path": "/v1/{{ params.kind }}",
                    "query": {"since": "{{ ds }}", "plain": "x"},
                    "headers": {"X-Run": "{{ run_id }}"},
                    "body": '{"day": "{{ ds }}"}',
                    "pagination": {"cursor": {"cursorParam": "{{ params.kind }}_cursor"}},
                }
            },
        }
    )
    rendered = render_step(templated, context({"kind": "orders"}))
    rest = rendered.source.rest
    assert rest.path == "/v1/orders"
    assert dict(rest.query) == {"since": "2024-03-10", "plain": "x"}
    assert dict(rest.headers) == {"X-Run": "0123456789abcdef0123456789abcdef"}
    assert rest.body == '{"day": "2024-03-10"}'
    assert rest.pagination.cursor.cursor_param == "orders_cursor"

    sink = step(
        {
            "name": "s",
            "inputs": ["x"],
            "sink": {"file": {"path": "o/", "partitionBy": ["{{ params.kind }}"]}},
        }
    )
    assert list(render_step(sink, context({"kind": "day"})).sink.file.partition_by) == ["day"]

    inline = step(
        {
            "name": "seed",
            "source": {
                "inline": {
                    "rows": [
                        {"day": "{{ ds }}", "n": 1, "nested": {"k": ["{{ params.kind }}", 2]}},
                        {"day": "fixed"},
                    ]
                }
            },
        }
    )
    rows = MessageToDict(render_step(inline, context({"kind": "x"})).source.inline)["rows"]
    assert rows == [{"day": "2024-03-10", "n": 1.0, "nested": {"k": ["x", 2.0]}}, {"day": "fixed"}]


def test_names_inputs_and_after_are_never_rendered() -> None:
    fields = template_fields(
        step(
            {
                "name": "s",
                "inputs": ["{{ x }}"],
                "after": ["{{ y }}"],
                "sink": {"file": {"path": "{{ ds }}.csv"}},
            }
        )
    )
    assert fields == [("sink.file.path", "{{ ds }}.csv")]


# --- errors and the sandbox ----------------------------------------------------------------


def test_an_unknown_name_is_an_error_never_an_empty_string() -> None:
    with pytest.raises(TemplateError) as raised:
        rendered_query("SELECT {{ params.missing }}", context({"n": 1}))
    error = raised.value
    assert error.step == "orders"
    assert error.field == "source.database.query"
    assert "missing" in str(error)
    assert str(error).startswith('step "orders": source.database.query: ')
    with pytest.raises(TemplateError, match="nope"):
        rendered_query("{{ nope }}")


@pytest.mark.parametrize(
    ("template", "words"),
    [
        # Refused from the syntax tree, before anything runs...
        ("{{ ''.__class__ }}", 'private attribute "__class__" is not allowed'),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "private attribute"),
        ("{{ range.__globals__ }}", "private attribute"),
        # ... and by the sandbox when the name is computed.
        ("{{ ''['__class__'] }}", "SecurityError: access to attribute '__class__'"),
        ("{{ ''|attr('__cla' ~ 'ss__') }}", "SecurityError: access to attribute '__class__'"),
        ("{{ '{0.__class__}'.format(1) }}", "SecurityError: access to attribute '__class__'"),
        ("{{ params['__class__'] }}", "SecurityError: access to attribute '__class__'"),
    ],
)
def test_the_sandbox_blocks_private_attributes(template: str, words: str) -> None:
    with pytest.raises(TemplateError) as raised:
        rendered_query(template, context({"n": 1}))
    assert words in str(raised.value)


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 100000000 }}",
        "{{ [1] * 100000000 }}",
        "{{ 10 ** 100000 }}",
        "{{ namespace() }}",
        "{% for i in range(200000) %}xxxxxxxxxx{% endfor %}",
    ],
)
def test_the_sandbox_bounds_what_a_template_may_build(template: str) -> None:
    with pytest.raises(TemplateError):
        rendered_query(template)


def test_a_rendered_field_is_bounded_in_size() -> None:
    assert MAX_RENDERED_CHARS == 1_000_000
    with pytest.raises(TemplateError, match="more than"):
        rendered_query("{% for i in range(100000) %}{{ 'x' * 11 }}{% endfor %}")


def test_a_runtime_error_of_the_template_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        rendered_query("{{ 1 / 0 }}")


# --- params --------------------------------------------------------------------------------


def test_resolve_params_applies_overrides_to_defaults() -> None:
    spec = pipeline({"params": {"n": 100, "country": "FR", "tags": ["a"], "none": None}})
    assert resolve_params(spec, {}) == {"n": 100, "country": "FR", "tags": ["a"], "none": None}
    assert resolve_params(spec, {"n": 5.0, "tags": []}) == {
        "n": 5,
        "country": "FR",
        "tags": [],
        "none": None,
    }
    assert resolve_params(pipeline({}), None) == {}


def test_unknown_overrides_are_invalid_argument_unknown_param() -> None:
    spec = pipeline({"params": {"n": 1}})
    with pytest.raises(DomainError) as raised:
        resolve_params(spec, {"n": 2, "zz": 1, "aa": 2})
    error = raised.value
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert error.reason == "UNKNOWN_PARAM"
    assert [v.field for v in error.violations] == ['params["aa"]', 'params["zz"]']
    assert "declared: n" in error.message


# --- the run's context ---------------------------------------------------------------------


def test_context_for_a_run_uses_its_dates_params_and_watermarks() -> None:
    spec = pipeline(
        {
            "steps": [
                {
                    "name": "orders",
                    "watermark": {"column": "ts", "initial": "0"},
                    "source": {"database": {"connection": "w", "query": "{{ watermark }}"}},
                },
                {
                    "name": "other",
                    "watermark": {"column": "ts", "initial": "init"},
                    "source": {"database": {"connection": "w", "query": "{{ watermarks.other }}"}},
                },
            ]
        }
    )
    run = Run(
        run_id="r1",
        pipeline="p",
        pipeline_version=1,
        state=RunState.RUNNING,
        create_time=END,
        stages=[],
        params={"n": 1},
        trigger=RunTrigger.SCHEDULE,
        logical_date=START,
        data_interval_start=START,
        data_interval_end=END,
    )
    ctx = TemplateContext.for_run(spec, run, {"orders": "42", "removed": "x"})
    assert dict(ctx.watermarks) == {"orders": "42", "other": "init"}
    assert render_step(spec.steps[0], ctx).source.database.query == "42"
    assert render_step(spec.steps[1], ctx).source.database.query == "init"
    variables = ctx.variables(spec.steps[1])
    assert variables["ds"] == "2024-03-10"
    assert variables["run_id"] == "r1"
    assert variables["params"] == {"n": 1}


def test_a_run_without_dates_uses_its_creation_time() -> None:
    run = Run("r", "p", 1, RunState.QUEUED, START, [])
    ctx = TemplateContext.for_run(pipeline({}), run, {})
    variables = ctx.variables(step_pb2.Step(name="x"))
    assert variables["logical_date"] == variables["data_interval_end"] == START.isoformat()


# --- create-time checks --------------------------------------------------------------------


def test_check_templates_reports_each_field() -> None:
    spec = pipeline(
        {
            "params": {"n": 1},
            "steps": [
                {
                    "name": "a",
                    "source": {"database": {"connection": "w", "query": "{{ params.n }} {{ x }}"}},
                },
                {"name": "b", "inputs": ["a"], "sink": {"file": {"path": "{{ ds"}}},
            ],
        }
    )
    violations = check_templates(spec)
    assert [v.field for v in violations] == [
        "pipeline.steps[0].source.database.query",
        "pipeline.steps[1].sink.file.path",
    ]
    assert 'unknown name "x"' in violations[0].description
    assert "syntax error" in violations[1].description


def test_tags_refused_at_validation_are_refused_at_run_time_too() -> None:
    with pytest.raises(TemplateError, match=r"\{% macro %\} is not allowed"):
        rendered_query("{% macro m() %}x{% endmacro %}{{ m() }}")

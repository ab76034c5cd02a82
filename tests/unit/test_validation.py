"""Pipeline spec validation: each problem yields its own field violation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.json_format import ParseDict

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import DomainError, ErrorCode, FieldViolation
from datadog_platform.core.file_extensions import infer_format
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
            spec(SOURCE, with_(SOURCE, name="more"), with_(SINK, inputs=["orders", "more"])),
            "pipeline.steps[2].inputs",
            "a sink needs exactly one input (to combine several, add a union",
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


# --- the kinds of issue 3: database, REST and artifact steps; richer files -------------------

DB_SOURCE = {"name": "orders", "source": {"database": {"connection": "warehouse", "table": "t"}}}
DB_SINK = {
    "name": "out",
    "inputs": ["big"],
    "sink": {"database": {"connection": "warehouse", "table": "sales.big"}},
}
REST_SOURCE = {
    "name": "orders",
    "source": {"rest": {"connection": "api", "path": "/v1/orders", "records_path": "data"}},
}
REST_SINK = {"name": "out", "inputs": ["big"], "sink": {"rest": {"connection": "api"}}}


def source(kind: str, settings: dict[str, Any]) -> pipeline_pb2.Pipeline:
    return spec(with_(SOURCE, source={kind: settings}), FILTER, SINK)


def sink(kind: str, settings: dict[str, Any]) -> pipeline_pb2.Pipeline:
    return spec(SOURCE, FILTER, with_(SINK, sink={kind: settings}))


def problems(pipeline: pipeline_pb2.Pipeline) -> list[tuple[str, str]]:
    return [(v.field, v.description) for v in pipeline_violations(pipeline)]


S0 = "pipeline.steps[0].source"
S2 = "pipeline.steps[2].sink"


@pytest.mark.parametrize(
    "pipeline",
    [
        spec(DB_SOURCE, FILTER, DB_SINK),
        source("database", {"connection": "warehouse", "query": "SELECT 1 AS x"}),
        source("database", {"connection": "w", "table": '"Sales 2024"."Orders"'}),
        source("database", {"connection": "w", "table": '"with ""quotes"""'}),
        source("database", {"connection": "w", "table": "_t$1"}),
        sink(
            "database",
            {"connection": "w", "table": "t", "mode": "WRITE_MODE_UPSERT", "keyColumns": ["id"]},
        ),
        sink("database", {"connection": "w", "table": "t", "mode": "WRITE_MODE_APPEND"}),
        spec(REST_SOURCE, FILTER, REST_SINK),
        source("rest", {"connection": "api"}),
        source(
            "rest",
            {
                "connection": "api",
                "path": "/search",
                "method": "HTTP_METHOD_POST",
                "body": '{"q": "x", "n": [1, 2]}',
                "query": {"lang": "fr"},
                "headers": {"X-Trace": "1", "Accept": "application/json"},
                "recordsPath": "data.items",
                "pagination": {
                    "maxPages": 5,
                    "cursor": {"cursorParam": "after", "cursorPath": "meta.next_cursor"},
                },
            },
        ),
        source("rest", {"connection": "api", "pagination": {"pageNumber": {}}}),
        source(
            "rest",
            {
                "connection": "api",
                "pagination": {"pageNumber": {"sizeParam": "per_page", "pageSize": 50}},
            },
        ),
        source("rest", {"connection": "api", "pagination": {"offset": {"limit": 500}}}),
        source("rest", {"connection": "api", "pagination": {"linkHeader": {}}}),
        source("rest", {"connection": "api", "method": "HTTP_METHOD_DELETE"}),
        sink("rest", {"connection": "api", "path": "/in", "method": "HTTP_METHOD_PUT"}),
        sink("rest", {"connection": "api", "batchSize": 1000}),
        source("artifact", {"key": "runs/r1/stage-a/out.arrow"}),
        sink("artifact", {"key": "exports/2024_01/big"}),
        source("file", {"path": "events/*.parquet", "format": "FILE_FORMAT_PARQUET"}),
        source("file", {"path": "events/", "format": "FILE_FORMAT_NDJSON"}),
        source("file", {"connection": "lake", "path": "in/orders.csv.gz"}),
        sink(
            "file",
            {
                "path": "out/by_country",
                "format": "FILE_FORMAT_PARQUET",
                "mode": "WRITE_MODE_APPEND",
                "partitionBy": ["country", "day"],
                "compression": "FILE_COMPRESSION_ZSTD",
            },
        ),
        sink("file", {"path": "out/big.parquet", "compression": "FILE_COMPRESSION_SNAPPY"}),
        sink("file", {"path": "out/big.ndjson.zst", "compression": "FILE_COMPRESSION_ZSTD"}),
        sink("file", {"path": "out/big.json.gz"}),
    ],
)
def test_valid_steps_of_every_kind(pipeline: pipeline_pb2.Pipeline) -> None:
    assert pipeline_violations(pipeline) == []


@pytest.mark.parametrize(
    ("pipeline", "field", "words"),
    [
        # database source
        (source("database", {"table": "t"}), f"{S0}.database.connection", "required"),
        (
            source("database", {"connection": "bad name", "table": "t"}),
            f"{S0}.database.connection",
            "not a valid connection name",
        ),
        (source("database", {"connection": "w"}), f"{S0}.database", "exactly one of table"),
        (
            source("database", {"connection": "w", "table": "t", "query": "SELECT 1"}),
            f"{S0}.database",
            "not both",
        ),
        (
            source("database", {"connection": "w", "query": "  \n "}),
            f"{S0}.database.query",
            "empty",
        ),
        *(
            (source("database", {"connection": "w", "table": t}), f"{S0}.database.table", "valid")
            for t in ("a.b.c", "1st", "t-1", "t;drop table x", '"unterminated', "a.", "t\n", '""')
        ),
        # database sink
        (sink("database", {"table": "t"}), f"{S2}.database.connection", "required"),
        (sink("database", {"connection": "w"}), f"{S2}.database.table", "required"),
        (
            sink("database", {"connection": "w", "table": "x y"}),
            f"{S2}.database.table",
            "not a valid table name",
        ),
        (
            sink("database", {"connection": "w", "table": "t", "mode": "WRITE_MODE_UPSERT"}),
            f"{S2}.database.key_columns",
            "needs key_columns",
        ),
        (
            sink("database", {"connection": "w", "table": "t", "keyColumns": ["id"]}),
            f"{S2}.database.key_columns",
            "only used with WRITE_MODE_UPSERT",
        ),
        (
            sink(
                "database",
                {
                    "connection": "w",
                    "table": "t",
                    "mode": "WRITE_MODE_UPSERT",
                    "keyColumns": ["id", "id"],
                },
            ),
            f"{S2}.database.key_columns[1]",
            'duplicate column "id"',
        ),
        (
            sink(
                "database",
                {"connection": "w", "table": "t", "mode": "WRITE_MODE_UPSERT", "keyColumns": [""]},
            ),
            f"{S2}.database.key_columns[0]",
            "empty",
        ),
        # REST source
        (source("rest", {"path": "/x"}), f"{S0}.rest.connection", "required"),
        (source("rest", {"connection": "api", "path": "v1/x"}), f"{S0}.rest.path", "start with"),
        (source("rest", {"connection": "api", "path": "//evil/x"}), f"{S0}.rest.path", "'//'"),
        (source("rest", {"connection": "api", "path": "/a b"}), f"{S0}.rest.path", "whitespace"),
        (
            source("rest", {"connection": "api", "recordsPath": "data..items"}),
            f"{S0}.rest.records_path",
            "dotted path",
        ),
        (
            source("rest", {"connection": "api", "recordsPath": ".data"}),
            f"{S0}.rest.records_path",
            "dotted path",
        ),
        (
            source("rest", {"connection": "api", "method": "HTTP_METHOD_POST", "body": "{x"}),
            f"{S0}.rest.body",
            "not valid JSON",
        ),
        (
            source("rest", {"connection": "api", "headers": {"Authorization": "Bearer s3cr3t"}}),
            f'{S0}.rest.headers["Authorization"]',
            "credentials belong to the connection",
        ),
        (
            source("rest", {"connection": "api", "headers": {"Bad Header": "x"}}),
            f'{S0}.rest.headers["Bad Header"]',
            "not a valid HTTP header name",
        ),
        (
            source("rest", {"connection": "api", "query": {"": "x"}}),
            f"{S0}.rest.query",
            "must not be empty",
        ),
        (
            source("rest", {"connection": "api", "pagination": {"maxPages": -1}}),
            f"{S0}.rest.pagination.max_pages",
            "negative",
        ),
        (
            source("rest", {"connection": "api", "pagination": {"cursor": {"cursorPath": "m.n"}}}),
            f"{S0}.rest.pagination.cursor.cursor_param",
            "required",
        ),
        (
            source("rest", {"connection": "api", "pagination": {"cursor": {"cursorParam": "c"}}}),
            f"{S0}.rest.pagination.cursor.cursor_path",
            "required",
        ),
        (
            source(
                "rest",
                {
                    "connection": "api",
                    "pagination": {"cursor": {"cursorParam": "c", "cursorPath": "a b"}},
                },
            ),
            f"{S0}.rest.pagination.cursor.cursor_path",
            "dotted path",
        ),
        (
            source("rest", {"connection": "api", "pagination": {"pageNumber": {"firstPage": -1}}}),
            f"{S0}.rest.pagination.page_number.first_page",
            "negative",
        ),
        (
            source("rest", {"connection": "api", "pagination": {"pageNumber": {"pageSize": -5}}}),
            f"{S0}.rest.pagination.page_number.page_size",
            "negative",
        ),
        (
            source("rest", {"connection": "api", "pagination": {"pageNumber": {"pageSize": 5}}}),
            f"{S0}.rest.pagination.page_number.size_param",
            "required to send page_size",
        ),
        (
            source("rest", {"connection": "api", "pagination": {"offset": {"limit": -1}}}),
            f"{S0}.rest.pagination.offset.limit",
            "negative",
        ),
        (
            source(
                "rest", {"connection": "api", "pagination": {"offset": {"limitParam": "offset"}}}
            ),
            f"{S0}.rest.pagination.offset.limit_param",
            "differ",
        ),
        # REST sink
        (sink("rest", {}), f"{S2}.rest.connection", "required"),
        (
            sink("rest", {"connection": "api", "method": "HTTP_METHOD_GET"}),
            f"{S2}.rest.method",
            "POST or PUT",
        ),
        (
            sink("rest", {"connection": "api", "method": "HTTP_METHOD_DELETE"}),
            f"{S2}.rest.method",
            "POST or PUT",
        ),
        (sink("rest", {"connection": "api", "batchSize": -1}), f"{S2}.rest.batch_size", "between"),
        (sink("rest", {"connection": "api", "path": "x"}), f"{S2}.rest.path", "start with"),
        # artifacts
        (source("artifact", {}), f"{S0}.artifact.key", "required"),
        (source("artifact", {"key": "/runs/x"}), f"{S0}.artifact.key", "leading '/'"),
        (source("artifact", {"key": "runs/../x"}), f"{S0}.artifact.key", "'..'"),
        (sink("artifact", {"key": "runs/a b"}), f"{S2}.artifact.key", "only letters"),
        (sink("artifact", {"key": "runs/ü"}), f"{S2}.artifact.key", "only letters"),
        # files
        (
            source("file", {"path": "events/*.parquet"}),
            f"{S0}.file.format",
            "required when the path is a glob pattern or a directory",
        ),
        (source("file", {"path": "events/"}), f"{S0}.file.format", "glob pattern or a directory"),
        (source("file", {"path": "x.parquet.gz"}), f"{S0}.file.format", "cannot be inferred"),
        (source("file", {"connection": "no way", "path": "a.csv"}), f"{S0}.file.connection", "not"),
        (sink("file", {"path": "out/*.csv"}), f"{S2}.file.path", "not a glob pattern"),
        (
            sink("file", {"path": "out/", "format": "FILE_FORMAT_CSV"}),
            f"{S2}.file.path",
            "must name a file",
        ),
        (
            sink("file", {"path": "out/big.parquet", "mode": "WRITE_MODE_APPEND"}),
            f"{S2}.file.mode",
            "needs partition_by",
        ),
        (
            sink(
                "file",
                {"path": "out/big.parquet", "mode": "WRITE_MODE_UPSERT", "partitionBy": ["k"]},
            ),
            f"{S2}.file.mode",
            "not supported by file sinks",
        ),
        (
            sink("file", {"path": "out/d.parquet", "partitionBy": ["a", "b", "a"]}),
            f"{S2}.file.partition_by[2]",
            'duplicate column "a"',
        ),
        (
            sink("file", {"path": "out/d.parquet", "partitionBy": [" "]}),
            f"{S2}.file.partition_by[0]",
            "empty",
        ),
        (
            sink("file", {"path": "out/big.csv", "compression": "FILE_COMPRESSION_SNAPPY"}),
            f"{S2}.file.compression",
            "Parquet only",
        ),
        (
            sink("file", {"path": "out/big.csv.gz", "compression": "FILE_COMPRESSION_ZSTD"}),
            f"{S2}.file.compression",
            "contradicts the path's '.gz' suffix",
        ),
    ],
)
def test_each_problem_of_the_new_kinds_yields_its_violation(
    pipeline: pipeline_pb2.Pipeline, field: str, words: str
) -> None:
    violations = pipeline_violations(pipeline)
    matching = [v for v in violations if v.field == field]
    assert matching, f"no violation for {field}; got {violations}"
    assert any(words in v.description for v in matching), matching


def test_unknown_enum_values_are_violations() -> None:
    pipeline = spec(
        with_(SOURCE, source={"rest": {"connection": "api", "method": 42}}),
        FILTER,
        with_(
            SINK,
            sink={"file": {"path": "o.parquet", "mode": 9, "compression": 9, "format": 9}},
        ),
    )
    assert fields(pipeline_violations(pipeline)) == [
        f"{S0}.rest.method",
        f"{S2}.file.format",
        f"{S2}.file.mode",
        f"{S2}.file.compression",
    ]


def test_a_step_of_each_problem_kind_reports_each_problem_once() -> None:
    pipeline = spec(
        with_(SOURCE, source={"database": {"table": "a.b.c", "query": ""}}),
        FILTER,
        with_(
            SINK,
            sink={"database": {"connection": "w", "mode": "WRITE_MODE_UPSERT"}},
        ),
    )
    assert problems(pipeline) == [
        (f"{S0}.database.connection", "is required"),
        (
            f"{S0}.database.table",
            "'a.b.c' is not a valid table name: must be 'name' or 'schema.name', each part an "
            "identifier ([A-Za-z_][A-Za-z0-9_$]*) or a double-quoted name",
        ),
        (f"{S2}.database.table", "is required"),
        (f"{S2}.database.key_columns", "WRITE_MODE_UPSERT needs key_columns to merge on"),
    ]


def test_kinds_are_named_when_none_is_set() -> None:
    pipeline = spec(with_(SOURCE, source={}), FILTER, with_(SINK, sink={}))
    assert problems(pipeline) == [
        (S0, "must set a kind of source (file, database, rest, artifact or inline)"),
        (S2, "must set a kind of sink (file, database, rest, artifact or discard)"),
    ]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.json", "FILE_FORMAT_JSON"),
        ("a.ndjson", "FILE_FORMAT_NDJSON"),
        ("a.jsonl", "FILE_FORMAT_NDJSON"),
        ("a.JSONL.GZ", "FILE_FORMAT_NDJSON"),
        ("a.json.zst", "FILE_FORMAT_JSON"),
        ("a.csv.gz", "FILE_FORMAT_CSV"),
        ("a.parquet.zst", "FILE_FORMAT_UNSPECIFIED"),
        ("a.gz", "FILE_FORMAT_UNSPECIFIED"),
        ("a.txt", "FILE_FORMAT_UNSPECIFIED"),
    ],
)
def test_format_inference_handles_json_and_compression_suffixes(path: str, expected: str) -> None:
    assert step_pb2.FileFormat.Name(infer_format(path)) == expected


def test_the_postgres_example_is_valid() -> None:
    path = EXAMPLE.parent / "postgres_to_parquet.yaml"
    pipeline = ParseDict(yaml.safe_load(path.read_text()), pipeline_pb2.Pipeline())
    assert pipeline_violations(pipeline) == []
    assert pipeline.steps[0].source.database.connection == "warehouse"


def test_valid_retry_policies() -> None:
    policy = {
        "maxAttempts": 5,
        "initialBackoff": "0.5s",
        "backoffMultiplier": 1.5,
        "maxBackoff": "30s",
        "retryAllFailures": True,
    }
    pipeline = spec(SOURCE, FILTER, with_(SINK, retry=policy))
    pipeline.default_retry.max_attempts = 3
    assert pipeline_violations(pipeline) == []
    # Zero (inherit), the bounds, and a multiplier of exactly 1 are fine.
    for fine in ({"maxAttempts": 0}, {"maxAttempts": 100}, {"backoffMultiplier": 1}):
        assert pipeline_violations(spec(SOURCE, with_(FILTER, retry=fine), SINK)) == []


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"maxAttempts": -1}, "max_attempts"),
        ({"maxAttempts": 101}, "max_attempts"),
        ({"initialBackoff": "-1s"}, "initial_backoff"),
        ({"maxBackoff": "-0.5s"}, "max_backoff"),
        ({"initialBackoff": "10s", "maxBackoff": "5s"}, "max_backoff"),
        ({"backoffMultiplier": 0.5}, "backoff_multiplier"),
        ({"backoffMultiplier": -2}, "backoff_multiplier"),
        ({"backoffMultiplier": "Infinity"}, "backoff_multiplier"),
        ({"backoffMultiplier": "NaN"}, "backoff_multiplier"),
    ],
)
def test_each_bad_retry_field_is_one_violation(policy: dict[str, Any], field: str) -> None:
    assert fields(pipeline_violations(spec(SOURCE, FILTER, with_(SINK, retry=policy)))) == [
        f"pipeline.steps[2].retry.{field}"
    ]
    pipeline = spec(SOURCE, FILTER, SINK)
    ParseDict(policy, pipeline.default_retry)
    assert fields(pipeline_violations(pipeline)) == [f"pipeline.default_retry.{field}"]


def test_several_retry_problems_yield_several_violations() -> None:
    bad = {"maxAttempts": 1000, "initialBackoff": "-1s", "backoffMultiplier": 0.1}
    pipeline = spec(with_(SOURCE, retry=bad), FILTER, SINK)
    assert fields(pipeline_violations(pipeline)) == [
        "pipeline.steps[0].retry.max_attempts",
        "pipeline.steps[0].retry.initial_backoff",
        "pipeline.steps[0].retry.backoff_multiplier",
    ]
    with pytest.raises(DomainError) as raised:
        check_pipeline(pipeline)
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT


# --- issue 4: fan-out, after, params, schedules, limits, watermarks, templates -------------

INLINE = {"name": "orders", "source": {"inline": {"rows": [{"amount": 1}, {"amount": 200}]}}}
DISCARD = {"name": "out", "inputs": ["big"], "sink": {"discard": {}}}


def test_fan_out_is_valid() -> None:
    pipeline = spec(SOURCE, FILTER, SINK, with_(SINK, name="raw", inputs=["orders"]))
    assert pipeline_violations(pipeline) == []
    pipeline = spec(SOURCE, FILTER, SINK, with_(SINK, name="out2"))
    assert pipeline_violations(pipeline) == []


def test_fan_in_into_a_sink_is_refused_with_hints_at_combining_transforms_and_after() -> None:
    pipeline = spec(SOURCE, with_(SOURCE, name="more"), with_(SINK, inputs=["orders", "more"]))
    violations = [v for v in pipeline_violations(pipeline) if v.field == "pipeline.steps[2].inputs"]
    assert len(violations) == 1
    assert "union, join or sql transform" in violations[0].description
    assert "after" in violations[0].description


def test_inline_sources_and_discard_sinks_are_valid() -> None:
    assert pipeline_violations(spec(INLINE, FILTER, DISCARD)) == []
    assert pipeline_violations(spec(with_(INLINE, source={"inline": {}}), FILTER, DISCARD)) == []


def test_after_lists_are_valid_across_and_within_stages() -> None:
    pipeline = spec(
        SOURCE,
        with_(FILTER, after=["orders"]),  # same stage: satisfied by the stage itself
        with_(SINK, after=["dims_out"]),
        with_(SOURCE, name="dims"),
        with_(SINK, name="dims_out", inputs=["dims"]),
    )
    assert pipeline_violations(pipeline) == []


@pytest.mark.parametrize(
    ("after", "words"),
    [
        (["ghost"], '"ghost" names no step'),
        (["out"], "cannot wait for itself"),
        (["orders", "ghost"], '"ghost" names no step'),
    ],
)
def test_bad_after_entries(after: list[str], words: str) -> None:
    violations = pipeline_violations(spec(SOURCE, FILTER, with_(SINK, after=after)))
    assert fields(violations) == [f"pipeline.steps[2].after[{len(after) - 1}]"]
    assert words in violations[0].description


def test_a_cycle_through_after_names_its_steps() -> None:
    pipeline = spec(
        with_(SOURCE, after=["out"]),  # the source waits for its own sink
        FILTER,
        SINK,
    )
    cycles = [v for v in pipeline_violations(pipeline) if "cycle" in v.description]
    assert cycles == [
        FieldViolation(
            "pipeline.steps[0].after[0]", "steps form a cycle: orders -> big -> out -> orders"
        )
    ]


def test_a_cycle_of_stages_through_after_is_reported_on_the_after_entry() -> None:
    # No cycle between steps, but the stage (orders, big, out) waits for the stage of
    # "late", which waits for "orders".
    pipeline = spec(
        SOURCE,
        FILTER,
        with_(SINK, after=["late_out"]),
        with_(SOURCE, name="late", after=["orders"]),
        with_(SINK, name="late_out", inputs=["late"]),
    )
    violations = pipeline_violations(pipeline)
    assert len(violations) == 1, violations
    assert violations[0].field in ("pipeline.steps[2].after[0]", "pipeline.steps[3].after[0]")
    assert "cycle" in violations[0].description


def test_param_names_must_be_identifiers() -> None:
    pipeline = spec(SOURCE, FILTER, SINK)
    for name in ("min_amount", "_x", "A1", "bad-name", "1st", "has space"):
        pipeline.params[name].number_value = 1
    assert fields(pipeline_violations(pipeline)) == [
        'pipeline.params["1st"]',
        'pipeline.params["bad-name"]',
        'pipeline.params["has space"]',
    ]


@pytest.mark.parametrize(
    ("schedule", "field", "words"),
    [
        ({"cron": ""}, "pipeline.schedule.cron", "required"),
        ({"cron": "61 * * * *"}, "pipeline.schedule.cron", ""),
        ({"cron": "@sometimes"}, "pipeline.schedule.cron", ""),
        ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "pipeline.schedule.timezone", ""),
        (
            {
                "cron": "@daily",
                "startTime": "2024-02-01T00:00:00Z",
                "endTime": "2024-01-01T00:00:00Z",
            },
            "pipeline.schedule.end_time",
            "after start_time",
        ),
        (
            {
                "cron": "@daily",
                "startTime": "2024-01-01T00:00:00Z",
                "endTime": "2024-01-01T00:00:00Z",
            },
            "pipeline.schedule.end_time",
            "after start_time",
        ),
    ],
)
def test_bad_schedules(schedule: dict[str, Any], field: str, words: str) -> None:
    pipeline = spec(SOURCE, FILTER, SINK)
    ParseDict(schedule, pipeline.schedule)
    violations = pipeline_violations(pipeline)
    assert fields(violations) == [field]
    assert words in violations[0].description


def test_good_schedules() -> None:
    for schedule in (
        {"cron": "0 2 * * *", "timezone": "Europe/Paris", "catchup": True},
        {"cron": "@hourly"},
        {"cron": "*/15 * * * 1-5", "startTime": "2024-01-01T00:00:00Z"},
    ):
        pipeline = spec(SOURCE, FILTER, SINK)
        ParseDict(schedule, pipeline.schedule)
        assert pipeline_violations(pipeline) == [], schedule


def test_limits_and_timeouts() -> None:
    pipeline = spec(SOURCE, with_(FILTER, timeout="0s"), with_(SINK, timeout="-1s"))
    pipeline.max_active_runs = -1
    pipeline.max_active_tasks = -2
    pipeline.run_timeout.seconds = 0
    assert fields(pipeline_violations(pipeline)) == [
        "pipeline.steps[1].timeout",
        "pipeline.steps[2].timeout",
        "pipeline.max_active_runs",
        "pipeline.max_active_tasks",
        "pipeline.run_timeout",
    ]
    fine = spec(SOURCE, with_(FILTER, timeout="0.5s"), SINK)
    fine.max_active_runs = 0
    fine.max_active_tasks = 4
    fine.run_timeout.seconds = 3600
    assert pipeline_violations(fine) == []


def test_a_watermark_needs_a_column() -> None:
    pipeline = spec(with_(SOURCE, watermark={"column": " ", "initial": "0"}), FILTER, SINK)
    assert fields(pipeline_violations(pipeline)) == ["pipeline.steps[0].watermark.column"]
    # On a sink it is the maximum of what the sink received.
    assert pipeline_violations(spec(SOURCE, FILTER, with_(SINK, watermark={"column": "x"}))) == []


def test_a_watermark_before_a_fan_out_is_refused() -> None:
    pipeline = spec(
        with_(SOURCE, watermark={"column": "ts"}),
        FILTER,
        SINK,
        with_(SINK, name="raw", inputs=["orders"]),
    )
    violations = pipeline_violations(pipeline)
    assert fields(violations) == ["pipeline.steps[0].watermark"]
    assert "fan-out" in violations[0].description


def db_source(query: str, **step: Any) -> dict[str, Any]:
    return with_(SOURCE, source={"database": {"connection": "w", "query": query}}, **step)


def test_templates_that_use_known_names_are_valid() -> None:
    pipeline = spec(
        db_source(
            "SELECT * FROM t WHERE ts >= '{{ data_interval_start }}' AND ts < "
            "'{{ data_interval_end }}' AND day = '{{ ds }}' AND n > {{ params.n }}"
            " AND u > '{{ watermark }}' AND run = '{{ run_id }}' -- {{ logical_date }}",
            watermark={"column": "u", "initial": "1970-01-01"},
        ),
        with_(FILTER, transform={"filter": {"predicate": "amount > {{ params['n'] }}"}}),
        with_(
            SINK,
            sink={"file": {"path": "out/{{ ds }}/{{ watermarks.orders | default('x') }}.parquet"}},
        ),
    )
    pipeline.params["n"].number_value = 100
    assert pipeline_violations(pipeline) == []


def test_templated_values_are_checked_once_rendered_not_as_text() -> None:
    # Neither the predicate nor the table nor the path is valid as text.
    pipeline = spec(
        with_(SOURCE, source={"database": {"connection": "w", "table": "{{ params.table }}"}}),
        with_(FILTER, transform={"filter": {"predicate": "{{ params.predicate }}"}}),
        with_(SINK, sink={"file": {"path": "{{ params.target }}"}}),
    )
    for name in ("table", "predicate", "target"):
        pipeline.params[name].string_value = "x"
    assert pipeline_violations(pipeline) == []


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{{ params.missing }}", 'unknown param "missing" (declared: n)'),
        ("{{ params['missing'] }}", 'unknown param "missing"'),
        ("{{ nope }}", 'unknown name "nope"'),
        ("{{ watermark }}", '"watermark" is only defined in a step that keeps a watermark'),
        ("{{ watermarks.big }}", 'step "big" keeps no watermark'),
        ("{{ ds", "template syntax error"),
        ("{% if %}", "template syntax error"),
        ("{{ ds | no_such_filter }}", "template syntax error: No filter named 'no_such_filter'"),
        ("{{ ''.__class__ }}", 'private attribute "__class__"'),
        ("{% macro m() %}x{% endmacro %}", "{% macro %} is not allowed"),
        ("{% include 'x' %}", "{% include %} is not allowed"),
    ],
)
def test_each_template_problem_is_a_violation_on_its_field(template: str, words: str) -> None:
    pipeline = spec(db_source(f"SELECT '{template}'"), FILTER, SINK)
    pipeline.params["n"].number_value = 1
    violations = pipeline_violations(pipeline)
    assert fields(violations) == ["pipeline.steps[0].source.database.query"], violations
    assert words in violations[0].description


def test_templates_in_maps_lists_and_inline_rows_are_checked() -> None:
    pipeline = spec(
        with_(
            SOURCE,
            source={
                "rest": {
                    "connection": "api",
                    "headers": {"X-Day": "{{ dayz }}"},
                    "query": {"since": "{{ ds }}"},
                }
            },
        ),
        FILTER,
        with_(
            SINK,
            sink={
                "file": {
                    "path": "o/",
                    "format": "FILE_FORMAT_PARQUET",
                    "partitionBy": ["{{ bad }}"],
                }
            },
        ),
        with_(INLINE, name="seed"),
        {"name": "seed_out", "inputs": ["seed"], "sink": {"discard": {}}},
    )
    pipeline.steps[3].source.inline.rows[0].update({"day": "{{ ds }}", "x": ["{{ oops }}"]})
    assert fields(pipeline_violations(pipeline)) == [
        'pipeline.steps[0].source.rest.headers["X-Day"]',
        "pipeline.steps[2].sink.file.partition_by[0]",
        'pipeline.steps[3].source.inline.rows[0]["x"][0]',
    ]


def test_check_pipeline_lists_template_violations() -> None:
    pipeline = spec(db_source("SELECT {{ params.x }}"), FILTER, SINK)
    with pytest.raises(DomainError) as raised:
        check_pipeline(pipeline)
    assert raised.value.violations[0].field == "pipeline.steps[0].source.database.query"
    assert 'unknown param "x"' in raised.value.message


# --- issue 5: every transform kind, fan-in, checks -------------------------------------------

T1 = "pipeline.steps[1].transform"
T2 = "pipeline.steps[2].transform"
MORE = {"name": "more", "source": {"file": {"path": "in/more.csv"}}}


def transform(settings: dict[str, Any]) -> pipeline_pb2.Pipeline:
    """A source → ``settings`` (one-input transform "big") → sink pipeline."""
    return spec(SOURCE, with_(FILTER, transform=settings), SINK)


def fan_in(settings: dict[str, Any], inputs: list[str] | None = None) -> pipeline_pb2.Pipeline:
    """Two sources → ``settings`` (transform "big" over both) → sink."""
    step = {"name": "big", "inputs": inputs or ["orders", "more"], "transform": settings}
    return spec(SOURCE, MORE, step, SINK)


JOIN = {"join": {"on": [{"left": "customer_id", "right": "id"}], "type": "JOIN_TYPE_LEFT"}}
CHECK_OK = {"name": "ids", "notNull": {"columns": ["id"]}}
QUARANTINE_SINK = {"file": {"path": "bad/orders.parquet"}}


@pytest.mark.parametrize(
    "pipeline",
    [
        transform({"select": {"columns": ["id", "amount"]}}),
        transform({"drop": {"columns": ["secret"], "ignoreMissing": True}}),
        transform({"rename": {"columns": {"amt": "amount", "cust": "customer_id"}}}),
        transform(
            {
                "cast": {
                    "columns": [
                        {"column": "a", "type": "int64"},
                        {"column": "b", "type": "decimal128(12, 2)"},
                        {"column": "c", "type": "timestamp[us, tz=Europe/Paris]"},
                        {"column": "d", "type": "timestamp[ms, tz=+02:00]"},
                        {"column": "e", "type": "date32"},
                        {"column": "f", "type": "large_string"},
                    ],
                    "allowUnsafe": True,
                }
            }
        ),
        transform(
            {
                "derive": {
                    "columns": [
                        {"name": "total", "expr": "amount * (1 + rate)"},
                        {"name": "country", "expr": "upper(country) -- normalised"},
                        {"name": "band", "expr": "CASE WHEN amount > 100 THEN 'big' END"},
                    ]
                }
            }
        ),
        transform({"fillNull": {"values": {"amount": 0, "country": "??", "vip": False}}}),
        transform({"dropNull": {}}),
        transform({"dropNull": {"columns": ["id"], "all": True}}),
        transform({"dedupe": {}}),
        transform(
            {
                "dedupe": {
                    "keys": ["id"],
                    "orderBy": [{"column": "updated_at", "descending": True}],
                    "keep": "DEDUPE_KEEP_LAST",
                }
            }
        ),
        transform(
            {"sort": {"keys": [{"column": "a"}, {"column": "b", "nulls": "NULLS_ORDER_FIRST"}]}}
        ),
        transform({"limit": {"count": 10, "offset": 5}}),
        transform({"limit": {}}),
        transform({"aggregate": {"groupBy": ["country"]}}),
        transform(
            {
                "aggregate": {
                    "groupBy": ["l_returnflag", "l_linestatus"],
                    "aggregates": [
                        {"name": "n", "expr": "count(*)"},
                        {"name": "customers", "expr": "count(DISTINCT customer_id)"},
                        {"name": "revenue", "expr": "sum(price * (1 - discount))"},
                        {"name": "p50", "expr": "quantile_cont(amount, 0.5)"},
                        {"name": "spread", "expr": "max(amount) - min(amount)"},
                    ],
                }
            }
        ),
        fan_in(JOIN),
        fan_in({"join": {"on": [{"left": "id", "right": "id"}], "rightSuffix": "_more"}}),
        fan_in({"union": {"distinct": True, "missingColumns": "MISSING_COLUMNS_DROP"}}),
        fan_in({"sql": {"query": "SELECT o.*, m.x FROM orders o JOIN more m USING (id)"}}),
        transform({"sql": {"query": "WITH t AS (SELECT * FROM orders) SELECT count(*) FROM t"}}),
        transform(
            {
                "check": {
                    "checks": [
                        CHECK_OK,
                        {"name": "one_id", "unique": {"columns": ["id"]}},
                        {
                            "name": "status",
                            "acceptedValues": {"column": "s", "values": ["a", 1, True, None]},
                        },
                        {"name": "amount", "range": {"column": "amount", "min": 0}},
                        {
                            "name": "day",
                            "range": {"column": "d", "min": "2024-01-01", "max": "2025"},
                        },
                        {"name": "email", "regex": {"column": "e", "pattern": "^[^@]+@[^@]+$"}},
                        {"name": "some", "rowCount": {"min": 1}},
                        {"name": "sane", "expression": {"predicate": "a <= b"}},
                    ],
                    "onFailure": "CHECK_ACTION_WARN",
                }
            }
        ),
        transform(
            {
                "check": {
                    "checks": [
                        {**CHECK_OK, "onFailure": "CHECK_ACTION_QUARANTINE"},
                        {"name": "n", "rowCount": {"max": 10}},
                    ],
                    "quarantine": QUARANTINE_SINK,
                }
            }
        ),
    ],
)
def test_valid_transforms_of_every_kind(pipeline: pipeline_pb2.Pipeline) -> None:
    assert pipeline_violations(pipeline) == []


@pytest.mark.parametrize(
    ("pipeline", "field", "words"),
    [
        (transform({}), T1, "must set a kind of transform (filter, select, drop"),
        (transform({"filter": {"predicate": ""}}), f"{T1}.filter.predicate", "must not be empty"),
        (transform({"filter": {"predicate": "a >"}}), f"{T1}.filter.predicate", "syntax error"),
        (
            transform({"filter": {"predicate": "a > (SELECT max(a) FROM orders)"}}),
            f"{T1}.filter.predicate",
            "must not contain a subquery",
        ),
        (
            transform({"filter": {"predicate": "sum(a) > 1"}}),
            f"{T1}.filter.predicate",
            "aggregate function sum()",
        ),
        (transform({"select": {}}), f"{T1}.select.columns", "at least one column"),
        (transform({"select": {"columns": ["a", ""]}}), f"{T1}.select.columns[1]", "empty"),
        (
            transform({"select": {"columns": ["a", "b", "a"]}}),
            f"{T1}.select.columns[2]",
            'duplicate column "a" (also [0])',
        ),
        (transform({"drop": {}}), f"{T1}.drop.columns", "at least one column"),
        (transform({"rename": {}}), f"{T1}.rename.columns", "at least one column"),
        (
            transform({"rename": {"columns": {"a": ""}}}),
            f'{T1}.rename.columns["a"]',
            "new name must not be empty",
        ),
        (
            transform({"rename": {"columns": {"a": "x", "b": "x"}}}),
            f'{T1}.rename.columns["b"]',
            '"a" is renamed to "x" too',
        ),
        (transform({"cast": {}}), f"{T1}.cast.columns", "at least one column"),
        (
            transform({"cast": {"columns": [{"type": "int64"}]}}),
            f"{T1}.cast.columns[0].column",
            "is required",
        ),
        (
            transform({"cast": {"columns": [{"column": "a"}]}}),
            f"{T1}.cast.columns[0].type",
            "is required",
        ),
        (
            transform({"cast": {"columns": [{"column": "a", "type": "integer64"}]}}),
            f"{T1}.cast.columns[0].type",
            "'integer64' is not an Arrow type",
        ),
        (
            transform({"cast": {"columns": [{"column": "a", "type": "decimal128(40, 2)"}]}}),
            f"{T1}.cast.columns[0].type",
            "precision must be between 1 and 38",
        ),
        (
            transform({"cast": {"columns": [{"column": "a", "type": "decimal128(5, 6)"}]}}),
            f"{T1}.cast.columns[0].type",
            "scale must be between 0 and the precision",
        ),
        (
            transform({"cast": {"columns": [{"column": "a", "type": "timestamp[us, tz=Mars/X]"}]}}),
            f"{T1}.cast.columns[0].type",
            "'Mars/X' is not a time zone",
        ),
        (
            transform(
                {
                    "cast": {
                        "columns": [
                            {"column": "a", "type": "int8"},
                            {"column": "a", "type": "int16"},
                        ]
                    }
                }
            ),
            f"{T1}.cast.columns[1].column",
            "cast twice",
        ),
        (transform({"derive": {}}), f"{T1}.derive.columns", "at least one column"),
        (
            transform({"derive": {"columns": [{"expr": "1"}]}}),
            f"{T1}.derive.columns[0].name",
            "is required",
        ),
        (
            transform(
                {"derive": {"columns": [{"name": "x", "expr": "1"}, {"name": "x", "expr": "2"}]}}
            ),
            f"{T1}.derive.columns[1].name",
            'duplicate derived column "x"',
        ),
        (
            transform({"derive": {"columns": [{"name": "x"}]}}),
            f"{T1}.derive.columns[0].expr",
            "must not be empty",
        ),
        (
            transform({"derive": {"columns": [{"name": "x", "expr": "a) AS y, (b"}]}}),
            f"{T1}.derive.columns[0].expr",
            "must be a single expression",
        ),
        (
            transform({"derive": {"columns": [{"name": "x", "expr": "a) FROM t WHERE (1"}]}}),
            f"{T1}.derive.columns[0].expr",
            "syntax error",
        ),
        (
            transform({"derive": {"columns": [{"name": "x", "expr": "row_number() OVER ()"}]}}),
            f"{T1}.derive.columns[0].expr",
            "window function",
        ),
        (
            transform({"derive": {"columns": [{"name": "x", "expr": "$1"}]}}),
            f"{T1}.derive.columns[0].expr",
            "parameters",
        ),
        (transform({"fillNull": {}}), f"{T1}.fill_null.values", "at least one column"),
        (
            transform({"fillNull": {"values": {"a": None}}}),
            f'{T1}.fill_null.values["a"]',
            "not null",
        ),
        (
            transform({"fillNull": {"values": {"a": [1]}}}),
            f'{T1}.fill_null.values["a"]',
            "not an object or a list",
        ),
        (transform({"dropNull": {"columns": [""]}}), f"{T1}.drop_null.columns[0]", "empty"),
        (transform({"dedupe": {"keys": ["a", "a"]}}), f"{T1}.dedupe.keys[1]", "duplicate"),
        (
            transform({"dedupe": {"orderBy": [{"descending": True}]}}),
            f"{T1}.dedupe.order_by[0].column",
            "is required",
        ),
        (transform({"dedupe": {"keep": 7}}), f"{T1}.dedupe.keep", "unknown keep policy"),
        (transform({"sort": {}}), f"{T1}.sort.keys", "at least one sort key"),
        (
            transform({"sort": {"keys": [{"column": "a"}, {"column": "a"}]}}),
            f"{T1}.sort.keys[1].column",
            'duplicate sort column "a"',
        ),
        (
            transform({"sort": {"keys": [{"column": "a", "nulls": 5}]}}),
            f"{T1}.sort.keys[0].nulls",
            "unknown NULLs order",
        ),
        (transform({"limit": {"count": -1}}), f"{T1}.limit.count", "must not be negative"),
        (transform({"limit": {"offset": -1}}), f"{T1}.limit.offset", "must not be negative"),
        (transform({"aggregate": {}}), f"{T1}.aggregate.aggregates", "unless group_by is set"),
        (
            transform({"aggregate": {"aggregates": [{"name": "n", "expr": "amount + 1"}]}}),
            f"{T1}.aggregate.aggregates[0].expr",
            "must use an aggregate function",
        ),
        (
            transform({"aggregate": {"aggregates": [{"name": "n", "expr": "sum("}]}}),
            f"{T1}.aggregate.aggregates[0].expr",
            "syntax error",
        ),
        (
            transform({"aggregate": {"aggregates": [{"expr": "count(*)"}]}}),
            f"{T1}.aggregate.aggregates[0].name",
            "is required",
        ),
        (
            transform(
                {"aggregate": {"groupBy": ["c"], "aggregates": [{"name": "c", "expr": "count(*)"}]}}
            ),
            f"{T1}.aggregate.aggregates[0].name",
            "also a group_by column",
        ),
        (fan_in({"join": {}}), f"{T2}.join.on", "a join needs at least one key pair"),
        (
            fan_in({"join": {"on": [{"left": "id"}]}}),
            f"{T2}.join.on[0].right",
            "is required",
        ),
        (
            fan_in({"join": {"on": [{"left": "a", "right": "b"}, {"left": "a", "right": "b"}]}}),
            f"{T2}.join.on[1]",
            "duplicate key pair",
        ),
        (
            fan_in({"join": {"on": [{"left": "a", "right": "b"}], "type": 9}}),
            f"{T2}.join.type",
            "unknown join type",
        ),
        (
            fan_in({"join": {"on": [{"left": "a", "right": "b"}], "leftSuffix": "_right"}}),
            f"{T2}.join.right_suffix",
            "must differ from left_suffix",
        ),
        (
            fan_in({"union": {"missingColumns": 9}}),
            f"{T2}.union.missing_columns",
            "unknown missing-columns policy",
        ),
        (fan_in({"sql": {}}), f"{T2}.sql.query", "must not be empty"),
        (
            fan_in({"sql": {"query": "SELECT 1; SELECT 2"}}),
            f"{T2}.sql.query",
            "exactly one SELECT statement, not 2",
        ),
        (
            fan_in({"sql": {"query": "DELETE FROM orders"}}),
            f"{T2}.sql.query",
            "must be a SELECT statement, not DELETE",
        ),
        (fan_in({"sql": {"query": "SELEC 1"}}), f"{T2}.sql.query", "syntax error"),
        (
            fan_in({"sql": {"query": "SELECT * FROM orders JOIN secrets USING (id)"}}),
            f"{T2}.sql.query",
            'reads table "secrets", which is not an input of this step',
        ),
    ],
)
def test_each_transform_problem_yields_its_violation(
    pipeline: pipeline_pb2.Pipeline, field: str, words: str
) -> None:
    violations = pipeline_violations(pipeline)
    matching = [v for v in violations if v.field == field]
    assert matching, f"no violation for {field}; got {violations}"
    assert any(words in v.description for v in matching), matching


@pytest.mark.parametrize(
    ("pipeline", "field", "words"),
    [
        (
            fan_in(JOIN, ["orders"]),
            "pipeline.steps[2].inputs",
            "a join transform takes exactly 2 inputs (inputs[0] is the left side",
        ),
        (
            spec(
                SOURCE,
                MORE,
                with_(SOURCE, name="third"),
                {
                    "name": "big",
                    "inputs": ["orders", "more", "third"],
                    "transform": JOIN,
                },
                SINK,
                with_(SINK, name="o2", inputs=["big"]),
            ),
            "pipeline.steps[3].inputs",
            "exactly 2 inputs",
        ),
        (
            fan_in({"union": {}}, ["orders"]),
            "pipeline.steps[2].inputs",
            "a union transform takes at least 2 inputs, not 1",
        ),
        (
            fan_in({"filter": {"predicate": "x"}}),
            "pipeline.steps[2].inputs",
            "a filter transform takes exactly one input (only join, union and sql combine",
        ),
        (
            fan_in(JOIN, ["orders", "orders"]),
            "pipeline.steps[2].inputs[1]",
            '"orders" is already inputs[0]',
        ),
    ],
)
def test_transforms_take_their_kinds_number_of_inputs(
    pipeline: pipeline_pb2.Pipeline, field: str, words: str
) -> None:
    violations = pipeline_violations(pipeline)
    matching = [v for v in violations if v.field == field]
    assert matching, f"no violation for {field}; got {violations}"
    assert any(words in v.description for v in matching), matching


def test_a_union_or_sql_of_zero_inputs_is_refused() -> None:
    for settings, words in (
        ({"union": {}}, "a union transform takes at least 2 inputs, not 0"),
        ({"sql": {"query": "SELECT 1"}}, "a sql transform takes at least 1 input"),
    ):
        pipeline = spec(SOURCE, {"name": "big", "transform": settings}, SINK)
        assert FieldViolation("pipeline.steps[1].inputs", words) in pipeline_violations(pipeline)


C = f"{T1}.check"


def check(checks: list[dict[str, Any]], **options: Any) -> pipeline_pb2.Pipeline:
    return transform({"check": {"checks": checks, **options}})


@pytest.mark.parametrize(
    ("pipeline", "field", "words"),
    [
        (check([]), f"{C}.checks", "at least one check"),
        (check([{"notNull": {"columns": ["a"]}}]), f"{C}.checks[0].name", "is required"),
        (check([CHECK_OK, CHECK_OK]), f"{C}.checks[1].name", 'duplicate check name "ids"'),
        (check([{"name": "x"}]), f"{C}.checks[0]", "must set a kind of check"),
        (check([{"name": "x", "notNull": {}}]), f"{C}.checks[0].not_null.columns", "at least one"),
        (check([{"name": "x", "unique": {}}]), f"{C}.checks[0].unique.columns", "at least one"),
        (
            check([{"name": "x", "acceptedValues": {"values": [1]}}]),
            f"{C}.checks[0].accepted_values.column",
            "is required",
        ),
        (
            check([{"name": "x", "acceptedValues": {"column": "a"}}]),
            f"{C}.checks[0].accepted_values.values",
            "at least one value",
        ),
        (
            check([{"name": "x", "acceptedValues": {"column": "a", "values": [{"k": 1}]}}]),
            f"{C}.checks[0].accepted_values.values[0]",
            "not an object or a list",
        ),
        (
            check([{"name": "x", "range": {"column": "a"}}]),
            f"{C}.checks[0].range",
            "needs min, max or both",
        ),
        (
            check([{"name": "x", "range": {"column": "a", "min": 5, "max": 1}}]),
            f"{C}.checks[0].range.max",
            "must not be less than min",
        ),
        (
            check([{"name": "x", "range": {"column": "a", "min": True}}]),
            f"{C}.checks[0].range.min",
            "must be a number or a string",
        ),
        (
            check([{"name": "x", "regex": {"column": "a", "pattern": "([a-z"}}]),
            f"{C}.checks[0].regex.pattern",
            "is not a valid regular expression",
        ),
        (
            check([{"name": "x", "regex": {"column": "a"}}]),
            f"{C}.checks[0].regex.pattern",
            "is required",
        ),
        (check([{"name": "x", "rowCount": {}}]), f"{C}.checks[0].row_count", "needs min, max"),
        (
            check([{"name": "x", "rowCount": {"min": -1}}]),
            f"{C}.checks[0].row_count.min",
            "must not be negative",
        ),
        (
            check([{"name": "x", "rowCount": {"min": 10, "max": 1}}]),
            f"{C}.checks[0].row_count.max",
            "must not be less than min",
        ),
        (
            check([{"name": "x", "expression": {"predicate": "a >"}}]),
            f"{C}.checks[0].expression.predicate",
            "syntax error",
        ),
        (
            check([{"name": "x", "expression": {"predicate": "count(*) > 1"}}]),
            f"{C}.checks[0].expression.predicate",
            "aggregate function count_star()",
        ),
        (
            check([{**CHECK_OK, "onFailure": "CHECK_ACTION_QUARANTINE"}]),
            f"{C}.quarantine",
            "is required: a check quarantines rows",
        ),
        (
            check(
                [
                    {
                        "name": "u",
                        "unique": {"columns": ["a"]},
                        "onFailure": "CHECK_ACTION_QUARANTINE",
                    }
                ],
                quarantine=QUARANTINE_SINK,
            ),
            f"{C}.checks[0].on_failure",
            'row checks only; check "u" (unique)',
        ),
        (
            check(
                [CHECK_OK, {"name": "n", "rowCount": {"min": 1}}],
                onFailure="CHECK_ACTION_QUARANTINE",
                quarantine=QUARANTINE_SINK,
            ),
            f"{C}.on_failure",
            'row checks only; check "n" (row_count)',
        ),
        (
            check([CHECK_OK], quarantine=QUARANTINE_SINK),
            f"{C}.quarantine",
            "no check quarantines rows",
        ),
        (
            check(
                [{**CHECK_OK, "onFailure": "CHECK_ACTION_QUARANTINE"}],
                quarantine={"file": {"path": "/abs/bad.parquet"}},
            ),
            f"{C}.quarantine.file.path",
            "must be relative",
        ),
        (
            check([{**CHECK_OK, "onFailure": 8}]),
            f"{C}.checks[0].on_failure",
            "unknown check action",
        ),
        (check([CHECK_OK], onFailure=8), f"{C}.on_failure", "unknown check action"),
    ],
)
def test_each_check_problem_yields_its_violation(
    pipeline: pipeline_pb2.Pipeline, field: str, words: str
) -> None:
    violations = pipeline_violations(pipeline)
    matching = [v for v in violations if v.field == field]
    assert matching, f"no violation for {field}; got {violations}"
    assert any(words in v.description for v in matching), matching


def test_a_templated_expression_is_checked_once_rendered() -> None:
    pipeline = transform({"filter": {"predicate": "amount > {{ params.floor }}"}})
    pipeline.params["floor"].number_value = 10
    assert pipeline_violations(pipeline) == []


def test_check_pipeline_names_the_step_and_field_of_a_join_without_keys() -> None:
    with pytest.raises(DomainError) as raised:
        check_pipeline(fan_in({"join": {}}))
    assert raised.value.code == ErrorCode.INVALID_ARGUMENT
    assert list(raised.value.violations) == [
        FieldViolation(
            "pipeline.steps[2].transform.join.on",
            "a join needs at least one key pair (left: a column of inputs[0], right: a column "
            "of inputs[1])",
        )
    ]


def test_a_watermark_before_a_fan_in_is_refused() -> None:
    pipeline = fan_in(JOIN)
    pipeline.steps[0].watermark.column = "ts"
    violations = pipeline_violations(pipeline)
    assert fields(violations) == ["pipeline.steps[0].watermark"]
    assert "an input of a join, union or sql step" in violations[0].description

"""Full validation of a pipeline spec: every problem becomes one field violation.

Validation collects all problems instead of stopping at the first, so a user fixes a
spec in one round trip. Field paths follow the request, e.g.
``pipeline.steps[2].inputs[0]`` or ``pipeline.steps[1].transform.filter.predicate``.

A templated string field (``{{ ... }}``, see :mod:`templating`) is checked as a
template here; its value is checked once rendered, when its stage is dispatched
(:func:`rendered_step_violations`).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath

from google.protobuf import duration_pb2

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import FieldViolation, invalid_argument
from datadog_platform.core.file_extensions import (
    COMPRESSION_BY_EXTENSION,
    FORMAT_BY_EXTENSION,
    infer_compression,
    infer_format,
)
from datadog_platform.scheduler.domain import INVALID_PIPELINE_SPEC, INVALID_REQUEST
from datadog_platform.scheduler.planner import PlanError, plan_pipeline
from datadog_platform.scheduler.retry import MAX_ATTEMPTS_LIMIT
from datadog_platform.scheduler.templating import (
    param_name_problem,
    step_template_violations,
    template_fields,
)
from datadog_platform.scheduler.transform_validation import (
    input_arity,
    prefetch_sql,
    transform_violations,
)

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,127}$")
NAME_RULE = "must start with a letter and contain only letters, digits, '_' and '-' (at most 128)"
LABEL_KEY_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
# Room for wide DAGs: 1,000 parallel two-step stages between a root and a join.
MAX_STEPS = 10_000
MAX_DESCRIPTION_CHARS = 4096
MAX_TAG_CHARS = 64
MAX_LABEL_VALUE_CHARS = 256
MAX_REQUEST_ID_CHARS = 128

_GLOB_CHARACTERS = frozenset("*?[")
_KNOWN_FORMATS = frozenset(step_pb2.FileFormat.values())
_KNOWN_COMPRESSIONS = frozenset(step_pb2.FileCompression.values())
_KNOWN_WRITE_MODES = frozenset(step_pb2.WriteMode.values())
_SOURCE_METHODS = frozenset(
    {
        step_pb2.HTTP_METHOD_UNSPECIFIED,
        step_pb2.HTTP_METHOD_GET,
        step_pb2.HTTP_METHOD_POST,
        step_pb2.HTTP_METHOD_PUT,
        step_pb2.HTTP_METHOD_DELETE,
    }
)
_SINK_METHODS = frozenset(
    {step_pb2.HTTP_METHOD_UNSPECIFIED, step_pb2.HTTP_METHOD_POST, step_pb2.HTTP_METHOD_PUT}
)

# Connection names as the connector service's config accepts them.
CONNECTION_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# A plain SQL identifier or a double-quoted one ("" escapes a quote inside).
_IDENTIFIER = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"\x00]|"")+")'
TABLE_PATTERN = re.compile(rf"^{_IDENTIFIER}(?:\.{_IDENTIFIER})?$")
TABLE_RULE = (
    "must be 'name' or 'schema.name', each part an identifier ([A-Za-z_][A-Za-z0-9_$]*) "
    "or a double-quoted name"
)
# Dotted path into a JSON body ("data.items"): non-empty segments without whitespace.
JSON_PATH_PATTERN = re.compile(r"^[^.\s]+(?:\.[^.\s]+)*$")
ARTIFACT_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_./-]+$")
# RFC 9110 token characters: what an HTTP header name may contain.
HEADER_NAME_PATTERN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Credentials belong to the connection (DESIGN.md §1, §6), never to a pipeline spec.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
MAX_BATCH_SIZE = 100_000


def check_pipeline(pipeline: pipeline_pb2.Pipeline) -> None:
    """Raise INVALID_ARGUMENT (INVALID_PIPELINE_SPEC) listing every problem of ``pipeline``."""
    violations = pipeline_violations(pipeline)
    if violations:
        count = len(violations)
        raise invalid_argument(
            INVALID_PIPELINE_SPEC,
            f"the pipeline spec has {count} problem{'s' if count > 1 else ''}: "
            + "; ".join(f"{v.field}: {v.description}" for v in violations[:3])
            + ("; ..." if count > 3 else ""),
            violations,
        )


def check_request_id(request_id: str) -> None:
    """Raise INVALID_ARGUMENT if an idempotency key is unreasonable."""
    if len(request_id) > MAX_REQUEST_ID_CHARS or not request_id.isprintable():
        raise invalid_argument(
            INVALID_REQUEST,
            "request_id must be printable and at most 128 characters",
            [FieldViolation("request_id", "must be printable and at most 128 characters")],
        )


def pipeline_violations(pipeline: pipeline_pb2.Pipeline) -> list[FieldViolation]:
    """Every problem of ``pipeline``, in field order, one violation each."""
    violations: list[FieldViolation] = []
    violations += _name_violations("pipeline.name", pipeline.name)
    violations += _metadata_violations(pipeline)
    steps = list(pipeline.steps)
    if not steps:
        violations.append(FieldViolation("pipeline.steps", "must contain at least one step"))
        return violations
    if len(steps) > MAX_STEPS:
        violations.append(FieldViolation("pipeline.steps", f"must have at most {MAX_STEPS} steps"))
        return violations
    all_names = _index_of_all(steps)
    index_of: dict[str, int] = {}
    param_names = frozenset(pipeline.params)
    watermarks = frozenset(s.name for s in steps if s.HasField("watermark"))
    prefetch_sql(steps)  # one parse for every SQL text, instead of one per text
    # Problems of the step graph itself: with none, the pipeline can be planned.
    structural = 0
    for i, step in enumerate(steps):
        path = f"pipeline.steps[{i}]"
        name_problems = _name_violations(f"{path}.name", step.name)
        violations += name_problems
        if not name_problems:
            if step.name in index_of:
                violations.append(
                    FieldViolation(
                        f"{path}.name",
                        f'duplicate step name "{step.name}" (also steps[{index_of[step.name]}])',
                    )
                )
                structural += 1
            else:
                index_of[step.name] = i
        structural += len(name_problems) + (step.WhichOneof("kind") is None)
        templated = {f"{path}.{field}" for field, _ in template_fields(step)}
        violations += _untemplated(_kind_violations(path, step), templated)
        violations += step_template_violations(
            path, step, params=param_names, watermarks=watermarks
        )
        if step.HasField("retry"):
            violations += _retry_violations(f"{path}.retry", step.retry)
        link_problems = _input_violations(path, step, steps, all_names)
        link_problems += _after_violations(path, step, all_names)
        violations += link_problems
        structural += len(link_problems)
        if step.HasField("timeout"):
            violations += _positive_duration_violations(f"{path}.timeout", step.timeout)
        if step.HasField("watermark") and not step.watermark.column.strip():
            violations.append(FieldViolation(f"{path}.watermark.column", "is required"))
    graph_problems = _graph_violations(steps)
    violations += graph_problems
    if not structural and not graph_problems:
        # Only a sound step graph can be planned; the plan shows the stage-level problems.
        violations += _plan_violations(pipeline)
    if pipeline.HasField("default_retry"):
        violations += _retry_violations("pipeline.default_retry", pipeline.default_retry)
    violations += _param_violations(pipeline)
    if pipeline.HasField("schedule"):
        violations += _schedule_violations("pipeline.schedule", pipeline.schedule)
    for name in ("max_active_runs", "max_active_tasks"):
        if getattr(pipeline, name) < 0:
            violations.append(
                FieldViolation(f"pipeline.{name}", "must not be negative (0 means no limit)")
            )
    if pipeline.HasField("run_timeout"):
        violations += _positive_duration_violations("pipeline.run_timeout", pipeline.run_timeout)
    return violations


def step_violations(path: str, step: step_pb2.Step) -> list[FieldViolation]:
    """The problems of one step's source, transform or sink options (not its graph)."""
    return _kind_violations(path, step)


def source_violations(path: str, source: step_pb2.SourceSpec) -> list[FieldViolation]:
    """The problems of a source spec on its own (DescribeSource), fields under ``path``."""
    return _source_violations(path, source)


def connection_name_violations(path: str, name: str) -> list[FieldViolation]:
    """The problems of a connection name (required) at ``path``."""
    return _connection_violations(path, name, required=True)


def rendered_step_violations(step: step_pb2.Step, templated: Iterable[str]) -> list[FieldViolation]:
    """The problems of a rendered step's formerly templated fields (paths relative to the
    step, as :func:`templating.template_fields` gives them)."""
    fields = {f"step.{field}" for field in templated}
    problems = [v for v in _kind_violations("step", step) if _depends_on(v.field, fields)]
    return [FieldViolation(v.field.removeprefix("step."), v.description) for v in problems]


def _depends_on(field: str, templated: set[str]) -> bool:
    """Whether a violation on ``field`` may come from a templated value: the field itself,
    or a file's format/compression inferred from its templated path."""
    if field in templated:
        return True
    parent, _, leaf = field.rpartition(".")
    return leaf in ("format", "compression") and f"{parent}.path" in templated


def _untemplated(violations: list[FieldViolation], templated: set[str]) -> list[FieldViolation]:
    """Drop the violations that judge a template's text rather than its rendered value."""
    if not templated:
        return violations
    return [v for v in violations if not _depends_on(v.field, templated)]


def _after_violations(
    path: str, step: step_pb2.Step, index_of: dict[str, int]
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    for j, name in enumerate(step.after):
        field = f"{path}.after[{j}]"
        if name == step.name:
            violations.append(FieldViolation(field, "a step cannot wait for itself"))
        elif name not in index_of:
            violations.append(FieldViolation(field, f'"{name}" names no step of this pipeline'))
    return violations


def _positive_duration_violations(
    path: str, duration: duration_pb2.Duration
) -> list[FieldViolation]:
    if duration.seconds < 0 or duration.nanos < 0 or (duration.seconds, duration.nanos) == (0, 0):
        return [FieldViolation(path, "must be positive (leave it unset for no deadline)")]
    return []


def _plan_violations(pipeline: pipeline_pb2.Pipeline) -> list[FieldViolation]:
    """Stage-level problems: "after" lists that make stages wait in a cycle, and watermarks
    on steps whose stage ends in the artifact store (fan-out or fan-in)."""
    index_of = _index_of_all(pipeline.steps)
    try:
        stages = plan_pipeline(pipeline)
    except PlanError as exc:
        if exc.step in index_of:
            i = index_of[exc.step]
            j = list(pipeline.steps[i].after).index(exc.after)
            return [FieldViolation(f"pipeline.steps[{i}].after[{j}]", str(exc))]
        return [FieldViolation("pipeline.steps", str(exc))]
    violations: list[FieldViolation] = []
    for stage in stages:
        if not stage.artifact_output:
            continue
        for name in stage.steps[len(stage.artifact_inputs) :]:
            i = index_of[name]
            if pipeline.steps[i].HasField("watermark"):
                violations.append(
                    FieldViolation(
                        f"pipeline.steps[{i}].watermark",
                        f'the stage of step "{name}" ends by storing "{stage.artifact_output}" '
                        "for other stages (a fan-out, or an input of a join, union or sql "
                        "step), before any sink commits: keep the watermark on a step after "
                        "it, whose stage ends in a sink",
                    )
                )
    return violations


def _param_violations(pipeline: pipeline_pb2.Pipeline) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    for name in sorted(pipeline.params):
        problem = param_name_problem(name)
        if problem is not None:
            violations.append(FieldViolation(f"pipeline.params[{json.dumps(name)}]", problem))
    return violations


def _schedule_violations(path: str, schedule: pipeline_pb2.Schedule) -> list[FieldViolation]:
    # Imported here: the cron module depends on nothing of validation, and keeping the
    # import local keeps this module importable on its own.
    from datadog_platform.scheduler.cron import CronError, parse_schedule

    violations: list[FieldViolation] = []
    if not schedule.cron.strip():
        violations.append(FieldViolation(f"{path}.cron", "is required"))
    else:
        try:
            parse_schedule(schedule.cron, schedule.timezone)
        except CronError as exc:
            field = exc.field if exc.field in ("cron", "timezone") else "cron"
            violations.append(FieldViolation(f"{path}.{field}", exc.message))
    if schedule.HasField("start_time") and schedule.HasField("end_time"):
        start = (schedule.start_time.seconds, schedule.start_time.nanos)
        end = (schedule.end_time.seconds, schedule.end_time.nanos)
        if end <= start:
            violations.append(FieldViolation(f"{path}.end_time", "must be after start_time"))
    return violations


def _retry_violations(path: str, retry: step_pb2.RetryPolicy) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not 0 <= retry.max_attempts <= MAX_ATTEMPTS_LIMIT:
        violations.append(
            FieldViolation(
                f"{path}.max_attempts",
                f"must be 0 (inherit) to {MAX_ATTEMPTS_LIMIT} (attempts, the first included)",
            )
        )
    durations = {}
    for name in ("initial_backoff", "max_backoff"):
        if retry.HasField(name):
            duration = getattr(retry, name)
            seconds = duration.seconds + duration.nanos / 1e9
            if seconds < 0:
                violations.append(FieldViolation(f"{path}.{name}", "must not be negative"))
            else:
                durations[name] = seconds
    if len(durations) == 2 and durations["max_backoff"] < durations["initial_backoff"]:
        violations.append(FieldViolation(f"{path}.max_backoff", "must be at least initial_backoff"))
    multiplier = retry.backoff_multiplier
    if multiplier != 0 and not (math.isfinite(multiplier) and multiplier >= 1):
        violations.append(
            FieldViolation(
                f"{path}.backoff_multiplier", "must be 0 (the default, 2) or a number of at least 1"
            )
        )
    return violations


def _index_of_all(steps: Sequence[step_pb2.Step]) -> dict[str, int]:
    """Index of the first step with each (non-empty) name."""
    index: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.name:
            index.setdefault(step.name, i)
    return index


def _name_violations(path: str, name: str) -> list[FieldViolation]:
    if not name:
        return [FieldViolation(path, "is required")]
    if not NAME_PATTERN.fullmatch(name):
        return [FieldViolation(path, f"{name!r} is not a valid name: {NAME_RULE}")]
    return []


def _metadata_violations(pipeline: pipeline_pb2.Pipeline) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if len(pipeline.description) > MAX_DESCRIPTION_CHARS:
        violations.append(
            FieldViolation(
                "pipeline.description", f"must be at most {MAX_DESCRIPTION_CHARS} characters"
            )
        )
    seen_tags: set[str] = set()
    for i, tag in enumerate(pipeline.tags):
        path = f"pipeline.tags[{i}]"
        if not tag.strip() or len(tag) > MAX_TAG_CHARS or any(c.isspace() for c in tag):
            violations.append(
                FieldViolation(path, f"must be 1 to {MAX_TAG_CHARS} characters without whitespace")
            )
        elif tag in seen_tags:
            violations.append(FieldViolation(path, f'duplicate tag "{tag}"'))
        seen_tags.add(tag)
    for key in sorted(pipeline.labels):
        path = f"pipeline.labels[{json.dumps(key)}]"
        if not LABEL_KEY_PATTERN.fullmatch(key):
            violations.append(
                FieldViolation(
                    path,
                    "label keys must start with a letter and contain only letters, digits, "
                    "'_', '.' and '-' (at most 63)",
                )
            )
        if len(pipeline.labels[key]) > MAX_LABEL_VALUE_CHARS:
            violations.append(
                FieldViolation(path, f"label values must be at most {MAX_LABEL_VALUE_CHARS} chars")
            )
    return violations


def _kind_violations(path: str, step: step_pb2.Step) -> list[FieldViolation]:
    kind = step.WhichOneof("kind")
    if kind is None:
        return [FieldViolation(path, "must set exactly one of source, transform or sink")]
    if kind == "source":
        return _source_violations(f"{path}.source", step.source)
    if kind == "transform":
        return transform_violations(
            f"{path}.transform", step.transform, step.inputs, _sink_violations
        )
    return _sink_violations(f"{path}.sink", step.sink)


def _source_violations(path: str, source: step_pb2.SourceSpec) -> list[FieldViolation]:
    kind = source.WhichOneof("kind")
    if kind is None:
        return [
            FieldViolation(
                path, "must set a kind of source (file, database, rest, artifact or inline)"
            )
        ]
    path = f"{path}.{kind}"
    if kind == "file":
        return _file_source_violations(path, source.file)
    if kind == "database":
        return _database_source_violations(path, source.database)
    if kind == "rest":
        return _rest_source_violations(path, source.rest)
    if kind == "inline":
        # Rows are Struct messages, so each is a JSON object by construction; their
        # columns and types are the executor's to infer.
        return []
    return _artifact_violations(path, source.artifact.key)


def _sink_violations(path: str, sink: step_pb2.SinkSpec) -> list[FieldViolation]:
    kind = sink.WhichOneof("kind")
    if kind is None:
        return [
            FieldViolation(
                path, "must set a kind of sink (file, database, rest, artifact or discard)"
            )
        ]
    path = f"{path}.{kind}"
    if kind == "file":
        return _file_sink_violations(path, sink.file)
    if kind == "database":
        return _database_sink_violations(path, sink.database)
    if kind == "rest":
        return _rest_sink_violations(path, sink.rest)
    if kind == "discard":
        return []  # nothing to configure
    return _artifact_violations(path, sink.artifact.key)


# --- connections ------------------------------------------------------------------------
# Whether a named connection exists (and is of the right type) is NOT checked here yet:
# only the connector service knows its connections, and asking it at create time means a
# ListConnections call from the registry. Until then an unknown connection fails the run
# with CONNECTION_NOT_FOUND.


def _connection_violations(path: str, name: str, *, required: bool) -> list[FieldViolation]:
    if not name:
        return [FieldViolation(path, "is required")] if required else []
    if not CONNECTION_PATTERN.fullmatch(name):
        return [
            FieldViolation(
                path,
                f"{name!r} is not a valid connection name: it must start with a letter and "
                "contain only letters, digits, '_' and '-'",
            )
        ]
    return []


# --- files -------------------------------------------------------------------------------


def _file_source_violations(path: str, file: step_pb2.FileSource) -> list[FieldViolation]:
    violations = _connection_violations(f"{path}.connection", file.connection, required=False)
    violations += _relative_path_violations(f"{path}.path", file.path)
    violations += _format_violations(path, file.path, file.format)
    return violations


def _file_sink_violations(path: str, file: step_pb2.FileSink) -> list[FieldViolation]:
    violations = _connection_violations(f"{path}.connection", file.connection, required=False)
    path_problems = _relative_path_violations(f"{path}.path", file.path)
    if not path_problems and _is_glob(file.path):
        path_problems.append(
            FieldViolation(
                f"{path}.path", "a sink writes one file or directory, not a glob pattern"
            )
        )
    elif not path_problems and file.path.endswith("/") and not file.partition_by:
        path_problems.append(
            FieldViolation(
                f"{path}.path", "must name a file (a directory is written only with partition_by)"
            )
        )
    violations += path_problems
    violations += _format_violations(path, file.path, file.format)
    violations += _file_mode_violations(f"{path}.mode", file.mode, bool(file.partition_by))
    violations += _column_list_violations(f"{path}.partition_by", file.partition_by)
    violations += _compression_violations(path, file)
    return violations


def _relative_path_violations(path: str, file_path: str) -> list[FieldViolation]:
    if not file_path.strip():
        return [FieldViolation(path, "is required")]
    parts = PurePosixPath(file_path.replace("\\", "/"))
    if parts.is_absolute():
        return [FieldViolation(path, "must be relative to the connection's root")]
    if ".." in parts.parts:
        return [FieldViolation(path, "must not leave the connection's root ('..')")]
    return []


def _format_violations(path: str, file_path: str, file_format: int) -> list[FieldViolation]:
    if file_format not in _KNOWN_FORMATS:
        return [FieldViolation(f"{path}.format", "unknown file format")]
    if file_format != step_pb2.FILE_FORMAT_UNSPECIFIED or not file_path.strip():
        return []
    if _is_glob(file_path) or file_path.endswith("/"):
        # Several files may match, of any extension: the format must be stated.
        return [
            FieldViolation(
                f"{path}.format", "is required when the path is a glob pattern or a directory"
            )
        ]
    if infer_format(file_path) == step_pb2.FILE_FORMAT_UNSPECIFIED:
        return [
            FieldViolation(
                f"{path}.format",
                "is unspecified and cannot be inferred from the extension "
                f"(known: {', '.join(FORMAT_BY_EXTENSION)}, optionally followed by "
                f"{' or '.join(COMPRESSION_BY_EXTENSION)} for text formats)",
            )
        ]
    return []


def _file_mode_violations(path: str, mode: int, partitioned: bool) -> list[FieldViolation]:
    if mode not in _KNOWN_WRITE_MODES:
        return [FieldViolation(path, "unknown write mode")]
    if mode == step_pb2.WRITE_MODE_UPSERT:
        return [
            FieldViolation(
                path, "WRITE_MODE_UPSERT is not supported by file sinks (use OVERWRITE or APPEND)"
            )
        ]
    if mode == step_pb2.WRITE_MODE_APPEND and not partitioned:
        return [
            FieldViolation(
                path,
                "WRITE_MODE_APPEND needs partition_by (it adds files to a partitioned "
                "directory); a single file can only be overwritten",
            )
        ]
    return []


def _compression_violations(path: str, file: step_pb2.FileSink) -> list[FieldViolation]:
    compression = file.compression
    if compression not in _KNOWN_COMPRESSIONS:
        return [FieldViolation(f"{path}.compression", "unknown compression")]
    file_format = file.format or infer_format(file.path)
    if compression == step_pb2.FILE_COMPRESSION_SNAPPY and file_format not in (
        step_pb2.FILE_FORMAT_PARQUET,
        step_pb2.FILE_FORMAT_UNSPECIFIED,  # already reported under format
    ):
        return [
            FieldViolation(f"{path}.compression", "FILE_COMPRESSION_SNAPPY is for Parquet only")
        ]
    implied = infer_compression(file.path)
    if (
        compression != step_pb2.FILE_COMPRESSION_UNSPECIFIED
        and implied != step_pb2.FILE_COMPRESSION_UNSPECIFIED
        and compression != implied
    ):
        suffix = PurePosixPath(file.path).suffix
        return [
            FieldViolation(
                f"{path}.compression",
                f"{step_pb2.FileCompression.Name(compression)} contradicts the path's "
                f"{suffix!r} suffix",
            )
        ]
    return []


def _column_list_violations(path: str, columns: Sequence[str]) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    seen: set[str] = set()
    for i, column in enumerate(columns):
        if not column.strip():
            violations.append(FieldViolation(f"{path}[{i}]", "must not be empty"))
        elif column in seen:
            violations.append(FieldViolation(f"{path}[{i}]", f'duplicate column "{column}"'))
        seen.add(column)
    return violations


def _is_glob(file_path: str) -> bool:
    return any(c in _GLOB_CHARACTERS for c in file_path)


# --- databases ---------------------------------------------------------------------------


def _database_source_violations(
    path: str, database: step_pb2.DatabaseSource
) -> list[FieldViolation]:
    violations = _connection_violations(f"{path}.connection", database.connection, required=True)
    if database.table and database.query:
        violations.append(FieldViolation(path, "must set exactly one of table or query, not both"))
    elif database.table:
        violations += _table_violations(f"{path}.table", database.table)
    elif database.query:
        if not database.query.strip():
            violations.append(FieldViolation(f"{path}.query", "must not be empty"))
    else:
        violations.append(FieldViolation(path, "must set exactly one of table or query"))
    return violations


def _database_sink_violations(path: str, database: step_pb2.DatabaseSink) -> list[FieldViolation]:
    violations = _connection_violations(f"{path}.connection", database.connection, required=True)
    violations += _table_violations(f"{path}.table", database.table)
    mode = database.mode
    keys = list(database.key_columns)
    if mode not in _KNOWN_WRITE_MODES:
        violations.append(FieldViolation(f"{path}.mode", "unknown write mode"))
    elif mode == step_pb2.WRITE_MODE_UPSERT and not keys:
        violations.append(
            FieldViolation(f"{path}.key_columns", "WRITE_MODE_UPSERT needs key_columns to merge on")
        )
    elif mode != step_pb2.WRITE_MODE_UPSERT and keys:
        violations.append(
            FieldViolation(f"{path}.key_columns", "are only used with WRITE_MODE_UPSERT")
        )
    violations += _column_list_violations(f"{path}.key_columns", keys)
    return violations


def _table_violations(path: str, table: str) -> list[FieldViolation]:
    if not table:
        return [FieldViolation(path, "is required")]
    if not TABLE_PATTERN.fullmatch(table):
        return [FieldViolation(path, f"{table!r} is not a valid table name: {TABLE_RULE}")]
    return []


# --- REST ----------------------------------------------------------------------------------


def _rest_source_violations(path: str, rest: step_pb2.RestSource) -> list[FieldViolation]:
    violations = _rest_common_violations(path, rest.connection, rest.path, rest.headers)
    if rest.method not in _SOURCE_METHODS:
        violations.append(
            FieldViolation(f"{path}.method", "must be HTTP_METHOD_GET, POST, PUT or DELETE")
        )
    for key in sorted(rest.query):
        if not key.strip():
            violations.append(FieldViolation(f"{path}.query", "parameter names must not be empty"))
    if rest.body:
        try:
            json.loads(rest.body)
        except ValueError as exc:
            violations.append(FieldViolation(f"{path}.body", f"is not valid JSON: {exc}"))
    if rest.records_path and not JSON_PATH_PATTERN.fullmatch(rest.records_path):
        violations.append(
            FieldViolation(
                f"{path}.records_path",
                f"{rest.records_path!r} is not a dotted path such as 'data.items'",
            )
        )
    if rest.HasField("pagination"):
        violations += _pagination_violations(f"{path}.pagination", rest.pagination)
    return violations


def _rest_sink_violations(path: str, rest: step_pb2.RestSink) -> list[FieldViolation]:
    violations = _rest_common_violations(path, rest.connection, rest.path, rest.headers)
    if rest.method not in _SINK_METHODS:
        violations.append(
            FieldViolation(f"{path}.method", "a REST sink sends with HTTP_METHOD_POST or PUT")
        )
    if not 0 <= rest.batch_size <= MAX_BATCH_SIZE:
        violations.append(
            FieldViolation(
                f"{path}.batch_size", f"must be between 1 and {MAX_BATCH_SIZE} (0 means 100)"
            )
        )
    return violations


def _rest_common_violations(
    path: str, connection: str, url_path: str, headers: Mapping[str, str]
) -> list[FieldViolation]:
    violations = _connection_violations(f"{path}.connection", connection, required=True)
    if url_path:
        if not url_path.startswith("/"):
            violations.append(
                FieldViolation(f"{path}.path", "must start with '/' (it follows the base URL)")
            )
        elif url_path.startswith("//"):
            # "//host/x" would be a network-path reference to another host.
            violations.append(FieldViolation(f"{path}.path", "must not start with '//'"))
        elif any(c.isspace() for c in url_path):
            violations.append(
                FieldViolation(f"{path}.path", "must not contain whitespace (percent-encode it)")
            )
    for name in sorted(headers):
        field = f"{path}.headers[{json.dumps(name)}]"
        if not HEADER_NAME_PATTERN.fullmatch(name):
            violations.append(FieldViolation(field, "is not a valid HTTP header name"))
        elif name.lower() in _CREDENTIAL_HEADERS:
            violations.append(
                FieldViolation(
                    field,
                    "credentials belong to the connection's auth settings on the connector "
                    "service, not to the pipeline spec",
                )
            )
        elif any(c in headers[name] for c in "\r\n\x00"):
            violations.append(FieldViolation(field, "values must not contain line breaks"))
    return violations


def _pagination_violations(path: str, pagination: step_pb2.RestPagination) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if pagination.max_pages < 0:
        violations.append(
            FieldViolation(f"{path}.max_pages", "must not be negative (0 means 10000)")
        )
    kind = pagination.WhichOneof("kind")
    if kind == "page_number":
        page = pagination.page_number
        sub = f"{path}.page_number"
        if page.first_page < 0:
            violations.append(FieldViolation(f"{sub}.first_page", "must not be negative"))
        if page.page_size < 0:
            violations.append(FieldViolation(f"{sub}.page_size", "must not be negative"))
        elif page.page_size and not page.size_param:
            violations.append(FieldViolation(f"{sub}.size_param", "is required to send page_size"))
        elif page.size_param and not page.page_size:
            violations.append(
                FieldViolation(f"{sub}.page_size", "must be positive when size_param is set")
            )
        if page.size_param and page.size_param == (page.page_param or "page"):
            violations.append(FieldViolation(f"{sub}.size_param", "must differ from page_param"))
    elif kind == "offset":
        offset = pagination.offset
        sub = f"{path}.offset"
        if offset.limit < 0:
            violations.append(FieldViolation(f"{sub}.limit", "must not be negative (0 means 100)"))
        if (offset.offset_param or "offset") == (offset.limit_param or "limit"):
            violations.append(FieldViolation(f"{sub}.limit_param", "must differ from offset_param"))
    elif kind == "cursor":
        cursor = pagination.cursor
        sub = f"{path}.cursor"
        if not cursor.cursor_param:
            violations.append(FieldViolation(f"{sub}.cursor_param", "is required"))
        if not cursor.cursor_path:
            violations.append(FieldViolation(f"{sub}.cursor_path", "is required"))
        elif not JSON_PATH_PATTERN.fullmatch(cursor.cursor_path):
            violations.append(
                FieldViolation(
                    f"{sub}.cursor_path",
                    f"{cursor.cursor_path!r} is not a dotted path such as 'meta.next_cursor'",
                )
            )
    return violations


# --- artifacts -----------------------------------------------------------------------------


def _artifact_violations(path: str, key: str) -> list[FieldViolation]:
    field = f"{path}.key"
    if not key:
        return [FieldViolation(field, "is required")]
    if not ARTIFACT_KEY_PATTERN.fullmatch(key):
        return [
            FieldViolation(
                field, f"{key!r} may contain only letters, digits, '_', '.', '/' and '-'"
            )
        ]
    if key.startswith("/"):
        return [FieldViolation(field, "must be relative (no leading '/')")]
    if ".." in key:
        return [FieldViolation(field, "must not contain '..'")]
    return []


def _input_violations(
    path: str, step: step_pb2.Step, steps: Sequence[step_pb2.Step], index_of: dict[str, int]
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    kind = step.WhichOneof("kind")
    inputs = list(step.inputs)
    if kind == "source" and inputs:
        violations.append(FieldViolation(f"{path}.inputs", "a source takes no inputs"))
    elif kind == "sink":
        if len(inputs) != 1:
            violations.append(
                FieldViolation(
                    f"{path}.inputs",
                    "a sink needs exactly one input"
                    + (
                        " (to combine several, add a union, join or sql transform; to only "
                        "wait for other steps, list them in after)"
                        if inputs
                        else ""
                    ),
                )
            )
    elif kind == "transform":
        violations += _transform_input_violations(path, step.transform, inputs)
    for j, name in enumerate(inputs):
        if name not in index_of:
            violations.append(
                FieldViolation(f"{path}.inputs[{j}]", f'"{name}" names no step of this pipeline')
            )
        elif steps[index_of[name]].WhichOneof("kind") == "sink":
            violations.append(
                FieldViolation(f"{path}.inputs[{j}]", f'"{name}" is a sink, which has no output')
            )
    return violations


def _transform_input_violations(
    path: str, transform: step_pb2.TransformSpec, inputs: list[str]
) -> list[FieldViolation]:
    """How many inputs a transform step takes, by kind (join 2, union 2+, sql 1+, else 1)."""
    name = transform.WhichOneof("kind") or "transform"
    fewest, most = input_arity(transform)
    if fewest == most == 1 and len(inputs) != 1:
        rule = "exactly one input"
        hint = (
            " (only join, union and sql combine several; to only wait for other steps, "
            "list them in after)"
            if inputs
            else ""
        )
    elif fewest == most and len(inputs) != fewest:
        rule, hint = (
            f"exactly {fewest} inputs",
            " (inputs[0] is the left side, inputs[1] the right)",
        )
    elif len(inputs) < fewest or (most is not None and len(inputs) > most):
        rule = f"at least {fewest} input{'s' if fewest > 1 else ''}"
        hint = f", not {len(inputs)}" if inputs or fewest > 1 else ""
    else:
        violations = []
        first: dict[str, int] = {}
        for j, input_name in enumerate(inputs):
            if input_name in first:
                violations.append(
                    FieldViolation(
                        f"{path}.inputs[{j}]",
                        f'"{input_name}" is already inputs[{first[input_name]}]: a step reads '
                        "each input once (to combine a step with itself, consume it through "
                        "two steps)",
                    )
                )
            else:
                first[input_name] = j
        return violations
    article = "an" if name == "aggregate" else "a"  # "a union", "a sql"
    return [FieldViolation(f"{path}.inputs", f"{article} {name} transform takes {rule}{hint}")]


def _graph_violations(steps: Sequence[step_pb2.Step]) -> list[FieldViolation]:
    """Cycles (over inputs and after lists) and outputs that flow nowhere.

    Fan-out is fine: the planner materialises a shared output in the artifact store.
    """
    index_of = _index_of_all(steps)
    consumers: dict[int, list[int]] = defaultdict(list)  # producer -> consumers (data flow)
    edges: dict[int, list[int]] = defaultdict(list)  # before -> after (data flow and after)
    for i, step in enumerate(steps):
        for name in dict.fromkeys(step.inputs):  # a repeated input is one edge
            if name in index_of:
                consumers[index_of[name]].append(i)
                edges[index_of[name]].append(i)
        for name in dict.fromkeys(step.after):
            if name in index_of and name != step.name and i not in edges[index_of[name]]:
                edges[index_of[name]].append(i)
    violations: list[FieldViolation] = []
    for i, step in enumerate(steps):
        users = consumers.get(i, [])
        kind = step.WhichOneof("kind")
        if not users and kind in ("source", "transform") and index_of.get(step.name) == i:
            # Only dead ends are reported: every step upstream of one is fixed with it.
            violations.append(
                FieldViolation(
                    f"pipeline.steps[{i}]",
                    f'the output of {kind} step "{step.name}" reaches no sink '
                    "(no step consumes it)",
                )
            )
    for cycle in _cycles(len(steps), edges):
        first = cycle[0]
        before = steps[cycle[-1]].name
        inputs = list(steps[first].inputs)
        field = (
            f"inputs[{inputs.index(before)}]"
            if before in inputs
            else f"after[{list(steps[first].after).index(before)}]"
        )
        names = " -> ".join(steps[i].name for i in [*cycle, first])
        violations.append(
            FieldViolation(f"pipeline.steps[{first}].{field}", f"steps form a cycle: {names}")
        )
    return violations


def _cycles(count: int, edges: dict[int, list[int]]) -> list[list[int]]:
    """One cycle per strongly connected component that has one, as node lists in
    data-flow order starting at the component's lowest index."""
    cycles: list[list[int]] = []
    for component in _strongly_connected(count, edges):
        members = set(component)
        start = min(component)
        if len(component) == 1 and start not in edges.get(start, []):
            continue
        cycles.append(_path_back(start, edges, members))
    cycles.sort(key=lambda c: c[0])
    return cycles


def _path_back(start: int, edges: dict[int, list[int]], members: set[int]) -> list[int]:
    """Shortest path start -> ... -> start inside one component (breadth first)."""
    parent: dict[int, int] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in edges.get(node, []):
            if nxt not in members:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return [start]  # unreachable for a real component


def _strongly_connected(count: int, edges: dict[int, list[int]]) -> Iterable[list[int]]:
    """Tarjan's algorithm, iterative so that long chains do not hit the recursion limit."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    for root in range(count):
        if root in index:
            continue
        work: list[tuple[int, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            successors = edges.get(node, [])
            if child < len(successors):
                work.append((node, child + 1))
                nxt = successors[child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components

"""Plain-text rendering of API messages and errors; pure functions returning lines."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC
from typing import Any

import grpc
from google.protobuf import json_format, message, timestamp_pb2

from datadog_platform.api.common.v1 import connection_pb2, step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.core.errors import FieldViolation
from datadog_platform.core.status import RpcErrorDetails

FINAL_RUN_STATES = frozenset(
    {run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED}
)
FINAL_STAGE_STATES = frozenset(
    {
        run_pb2.STAGE_STATE_SUCCEEDED,
        run_pb2.STAGE_STATE_FAILED,
        run_pb2.STAGE_STATE_CANCELLED,
        run_pb2.STAGE_STATE_UPSTREAM_FAILED,
    }
)


def run_state_name(state: int) -> str:
    """``RUN_STATE_SUCCEEDED`` → ``SUCCEEDED`` (numbers this client does not know stay numbers)."""
    try:
        return run_pb2.RunState.Name(state).removeprefix("RUN_STATE_")
    except ValueError:
        return str(state)


def stage_state_name(state: int) -> str:
    """``STAGE_STATE_FAILED`` → ``FAILED``."""
    try:
        return run_pb2.StageState.Name(state).removeprefix("STAGE_STATE_")
    except ValueError:
        return str(state)


def is_final(run: run_pb2.Run) -> bool:
    """Whether the run has reached a final state."""
    return run.state in FINAL_RUN_STATES


def format_timestamp(ts: timestamp_pb2.Timestamp) -> str:
    """Local time to the second with its UTC offset; ``-`` when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    return ts.ToDatetime(tzinfo=UTC).astimezone().isoformat(sep=" ", timespec="seconds")


def format_duration(seconds: float) -> str:
    """``0.4s``, ``12.3s``, ``4m05s``, ``2h03m``."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def run_elapsed(run: run_pb2.Run, now: float | None = None) -> float:
    """Seconds from creation to the end of the run (or to ``now`` while it runs)."""
    if run.create_time.seconds == 0:
        return 0.0
    end = _seconds(run.end_time) if run.end_time.seconds else (now or time.time())
    return max(end - _seconds(run.create_time), 0.0)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "") -> list[str]:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    rows = [list(map(str, row)) for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append((indent + "  ".join([*cells, row[-1]])).rstrip())
    return lines


def _join_mapping(values: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(values.items()))


def _stage_steps(steps: Sequence[str]) -> str:
    return " -> ".join(steps)


def plan_lines(plan: Sequence[pipeline_pb2.PlannedStage], indent: str = "  ") -> list[str]:
    """One line per planned stage: its id and its fused chain of steps."""
    if not plan:
        return [f"{indent}(no stages)"]
    return [f"{indent}stage {stage.stage_id}: {_stage_steps(stage.steps)}" for stage in plan]


def created_lines(
    pipeline: pipeline_pb2.Pipeline, plan: Sequence[pipeline_pb2.PlannedStage]
) -> list[str]:
    """What ``pipeline create`` prints."""
    count = f"{len(plan)} stage{'s' if len(plan) != 1 else ''}"
    return [
        f"created pipeline {pipeline.name} version {pipeline.version}",
        f"plan ({count}):",
        *plan_lines(plan),
    ]


def pipeline_table(pipelines: Sequence[pipeline_pb2.Pipeline]) -> list[str]:
    """What ``pipeline list`` prints."""
    if not pipelines:
        return ["no pipelines"]
    rows = [
        (
            p.name,
            str(p.version),
            str(len(p.steps)),
            format_timestamp(p.update_time),
            ",".join(p.tags) or "-",
            p.description or "-",
        )
        for p in pipelines
    ]
    return table(("NAME", "VERSION", "STEPS", "UPDATED", "TAGS", "DESCRIPTION"), rows)


def step_kind(step: step_pb2.Step) -> str:
    """``source/file``, ``transform/filter``, ``sink/file``; ``?`` when none is set."""
    kind = step.WhichOneof("kind")
    if kind is None:
        return "?"
    spec = getattr(step, kind)
    sub = spec.WhichOneof("kind")
    return f"{kind}/{sub}" if sub else kind


def step_parameters(step: step_pb2.Step) -> str:
    """The step's settings as ``key=value`` pairs, whatever its kind.

    Specs hold no secrets (credentials live on the connector service), but a REST
    step's headers, query parameters and body are free-form, so values under names
    that look like credentials are masked rather than printed.
    """
    kind = step.WhichOneof("kind")
    if kind is None:
        return ""
    spec = getattr(step, kind)
    sub = spec.WhichOneof("kind")
    if sub is None:
        return ""
    settings = _as_dict(getattr(spec, sub))
    for field in ("headers", "query"):
        if isinstance(settings.get(field), dict):
            # Protobuf maps have no order: sort so that the output is stable.
            settings[field] = _masked(dict(sorted(settings[field].items())))
    if isinstance(settings.get("body"), str):
        settings["body"] = _masked_body(settings["body"])
    return ", ".join(f"{k}={v}" for k, v in _flatten(settings))


# Names whose values are credentials whatever the API: never printed.
_SENSITIVE_NAME = re.compile(
    r"auth|cookie|token|secret|passw|pwd|api[-_]?key|^key$|credential|signature|session",
    re.IGNORECASE,
)
MASK = "***"
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def _masked(value: Any, name: str = "") -> Any:
    """``value`` with the values under sensitive names replaced by ``***``."""
    if name and _SENSITIVE_NAME.search(name):
        return MASK
    if isinstance(value, dict):
        return {key: _masked(item, key) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value


def _masked_body(body: str) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return body  # refused at creation; shown as written
    return json.dumps(_masked(document), separators=(",", ":"), ensure_ascii=False)


def _as_dict(msg: message.Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        if not value and prefix:
            return [(prefix, "{}")]  # a set but empty message, e.g. link_header pagination
        pairs: list[tuple[str, str]] = []
        for key, item in value.items():
            pairs.extend(_flatten(item, f"{prefix}.{key}" if prefix else key))
        return pairs
    if isinstance(value, str):
        # A multi-line query must not break the table; spaces inside a line are kept.
        return [(prefix, _LINE_BREAKS.sub(" ", value).strip())]
    return [(prefix, json.dumps(value, ensure_ascii=False))]


def pipeline_detail_lines(
    pipeline: pipeline_pb2.Pipeline, plan: Sequence[pipeline_pb2.PlannedStage]
) -> list[str]:
    """What ``pipeline get`` prints."""
    lines = [
        f"Name:         {pipeline.name}",
        f"Version:      {pipeline.version}",
        f"Description:  {pipeline.description or '-'}",
        f"Tags:         {', '.join(pipeline.tags) or '-'}",
        f"Labels:       {_join_mapping(pipeline.labels) or '-'}",
        f"Created:      {format_timestamp(pipeline.create_time)}",
        f"Updated:      {format_timestamp(pipeline.update_time)}",
        "Steps:",
    ]
    rows = [
        (s.name, step_kind(s), ", ".join(s.inputs) or "-", step_parameters(s) or "-")
        for s in pipeline.steps
    ]
    lines += table(("NAME", "KIND", "INPUTS", "SETTINGS"), rows, indent="  ")
    lines += ["Plan:", *plan_lines(plan)]
    return lines


def _metrics_text(metrics: Any) -> str:
    return f"rows read {metrics.rows_read}, written {metrics.rows_written}"


def _output_text(output: Any) -> str:
    return f"wrote {output.rows_written} rows to {output.location}"


def _error_text(stage: run_pb2.StageRun) -> str:
    reason = stage.error_reason or "UNKNOWN"
    return f"{reason}: {one_line(stage.error_message)}" if stage.error_message else reason


def run_table(runs: Sequence[run_pb2.Run]) -> list[str]:
    """What ``run list`` prints, newest first."""
    if not runs:
        return ["no runs"]
    rows = [
        (
            r.run_id,
            r.pipeline,
            str(r.pipeline_version),
            run_state_name(r.state),
            format_timestamp(r.create_time),
            format_duration(run_elapsed(r)) if r.start_time.seconds or r.end_time.seconds else "-",
        )
        for r in runs
    ]
    return table(("RUN ID", "PIPELINE", "VERSION", "STATE", "CREATED", "DURATION"), rows)


def run_status_lines(run: run_pb2.Run) -> list[str]:
    """What ``run status`` prints: the run, then each stage (attempt, rows, outputs, error)."""
    took = f" (took {format_duration(run_elapsed(run))})" if run.end_time.seconds else ""
    lines = [
        f"Run:       {run.run_id}",
        f"Pipeline:  {run.pipeline} (version {run.pipeline_version})",
        f"State:     {run_state_name(run.state)}",
        f"Created:   {format_timestamp(run.create_time)}",
        f"Started:   {format_timestamp(run.start_time)}",
        f"Ended:     {format_timestamp(run.end_time)}{took}",
    ]
    if run.request_id:
        lines.append(f"Request:   {run.request_id}")
    if run.error_message:
        lines.append(f"Error:     {one_line(run.error_message)}")
    lines.append("Stages:")
    if not run.stages:
        lines.append("  (none)")
    for stage in run.stages:
        lines.append(
            f"  {stage.stage_id}: {stage_state_name(stage.state)}, attempt {stage.attempt}, "
            f"{_metrics_text(stage.metrics)}"
        )
        lines.append(f"      steps: {_stage_steps(stage.steps)}")
        if stage.start_time.seconds:
            lines.append(
                f"      started {format_timestamp(stage.start_time)}, "
                f"ended {format_timestamp(stage.end_time)}"
            )
        lines.extend(f"      output {o.step}: {_output_text(o)}" for o in stage.outputs)
        if stage.error_reason or stage.error_message:
            lines.append(f"      error: {_error_text(stage)}")
    return lines


def run_result_lines(run: run_pb2.Run) -> list[str]:
    """The end of ``pipeline run --wait``: outputs on success, failed stages otherwise."""
    state = run_state_name(run.state)
    head = f"run {run.run_id} {state} in {format_duration(run_elapsed(run))}"
    if run.state == run_pb2.RUN_STATE_SUCCEEDED:
        lines = [head]
        outputs = [o for stage in run.stages for o in stage.outputs]
        lines += [f"  {o.step}: {_output_text(o)}" for o in outputs] or ["  (no outputs)"]
        return lines
    lines = [f"{head}: {one_line(run.error_message)}" if run.error_message else head]
    for stage in run.stages:
        if stage.state == run_pb2.STAGE_STATE_SUCCEEDED:
            continue
        text = f"  stage {stage.stage_id} {stage_state_name(stage.state)}"
        if stage.attempt:
            text += f" (attempt {stage.attempt})"
        if stage.error_reason or stage.error_message:
            text += f": {_error_text(stage)}"
        lines.append(text)
    return lines


def progress_line(run: run_pb2.Run, elapsed: float) -> str:
    """The single updating line shown on a terminal while waiting for a run."""
    done = sum(1 for s in run.stages if s.state in FINAL_STAGE_STATES)
    rows_read = sum(s.metrics.rows_read for s in run.stages)
    rows_written = sum(s.metrics.rows_written for s in run.stages)
    return (
        f"{run_state_name(run.state)}  stages {done}/{len(run.stages)}  "
        f"rows read {rows_read}, written {rows_written}  elapsed {format_duration(elapsed)}"
    )


def change_lines(previous: run_pb2.Run | None, current: run_pb2.Run, elapsed: float) -> list[str]:
    """Plain lines for what changed state between two snapshots of a run (for logs and pipes)."""
    stamp = f"[{format_duration(elapsed):>6}]"
    lines = []
    if previous is None or previous.state != current.state:
        lines.append(f"{stamp} run {run_state_name(current.state)}")
    before = {s.stage_id: s for s in previous.stages} if previous else {}
    for stage in current.stages:
        old = before.get(stage.stage_id)
        if old is not None and (old.state, old.attempt) == (stage.state, stage.attempt):
            continue
        text = f"{stamp} stage {stage.stage_id} {stage_state_name(stage.state)}"
        if stage.attempt:
            text += f" (attempt {stage.attempt})"
        if stage.state in FINAL_STAGE_STATES:
            text += f", {_metrics_text(stage.metrics)}"
        lines.append(text)
    return lines


def connection_table(connections: Sequence[connection_pb2.Connection]) -> list[str]:
    """What ``connector list`` prints."""
    if not connections:
        return ["no connections"]
    rows = [
        (c.name, c.type, c.description or "-", _join_mapping(c.options) or "-") for c in connections
    ]
    return table(("NAME", "TYPE", "DESCRIPTION", "OPTIONS"), rows)


def violation_lines(violations: Sequence[FieldViolation]) -> list[str]:
    """One indented line per field violation."""
    return [f"  - {v.field or '(request)'}: {one_line(v.description)}" for v in violations]


def rpc_error_lines(details: RpcErrorDetails, server: str) -> list[str]:
    """``error: <message> (<CODE>, <reason>)`` and one line per field violation.

    A transport failure (no ErrorInfo reason, so the answer did not come from our
    service) says that the scheduler could not be reached.
    """
    code = details.code.name if isinstance(details.code, grpc.StatusCode) else "UNKNOWN"
    unreachable = not details.reason and details.code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )
    if unreachable:
        text = f"cannot reach the DataDog scheduler at {server}"
        if details.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            text += ": no answer in time"
    else:
        text = one_line(details.message) or "the call failed"
    suffix = f"({code}, {details.reason})" if details.reason else f"({code})"
    return [f"error: {text} {suffix}", *violation_lines(details.violations)]


def one_line(text: str) -> str:
    """Collapse line breaks so that every error stays on one line."""
    return " ".join(text.split())

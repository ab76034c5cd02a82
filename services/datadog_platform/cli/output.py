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

from datadog_platform.api.common.v1 import connection_pb2, step_pb2, task_pb2
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
    """One line per planned stage: its id, its fused chain of steps and its upstream stages."""
    if not plan:
        return [f"{indent}(no stages)"]
    return [
        f"{indent}stage {stage.stage_id}: {_stage_steps(stage.steps)}"
        + (f" (after {', '.join(stage.upstream)})" if stage.upstream else "")
        for stage in plan
    ]


def _stage_count(plan: Sequence[pipeline_pb2.PlannedStage]) -> str:
    return f"{len(plan)} stage{'s' if len(plan) != 1 else ''}"


def created_lines(
    pipeline: pipeline_pb2.Pipeline, plan: Sequence[pipeline_pb2.PlannedStage]
) -> list[str]:
    """What ``pipeline create`` prints."""
    return [
        f"created pipeline {pipeline.name} version {pipeline.version}",
        f"plan ({_stage_count(plan)}):",
        *plan_lines(plan),
        *_next_run_lines(pipeline),
    ]


def updated_lines(
    pipeline: pipeline_pb2.Pipeline, plan: Sequence[pipeline_pb2.PlannedStage]
) -> list[str]:
    """What ``pipeline update`` prints."""
    return [
        f"updated pipeline {pipeline.name} to version {pipeline.version}",
        f"plan ({_stage_count(plan)}):",
        *plan_lines(plan),
        *_next_run_lines(pipeline),
    ]


def _next_run_lines(pipeline: pipeline_pb2.Pipeline) -> list[str]:
    if not pipeline.HasField("schedule"):
        return []
    return [f"schedule: {schedule_text(pipeline.schedule)}; next run: {next_run_text(pipeline)}"]


def valid_lines(source: str, plan: Sequence[pipeline_pb2.PlannedStage]) -> list[str]:
    """What ``pipeline validate`` prints for a valid spec."""
    return [f"{source}: valid; plan ({_stage_count(plan)}):", *plan_lines(plan)]


def invalid_lines(source: str, violations: Sequence[FieldViolation]) -> list[str]:
    """What ``pipeline validate`` prints (on standard error) for an invalid spec."""
    count = len(violations)
    return [
        f"error: {source}: the pipeline spec has {count} problem{'s' if count != 1 else ''}"
        " (INVALID_ARGUMENT, INVALID_PIPELINE_SPEC)",
        *violation_lines(violations),
    ]


def paused_lines(pipeline: pipeline_pb2.Pipeline) -> list[str]:
    """What ``pipeline pause`` and ``pipeline unpause`` print."""
    if pipeline.paused:
        return [f"paused pipeline {pipeline.name}"]
    if not pipeline.HasField("schedule"):
        return [f"unpaused pipeline {pipeline.name} (it has no schedule)"]
    return [f"unpaused pipeline {pipeline.name}; next run: {next_run_text(pipeline)}"]


def schedule_text(schedule: pipeline_pb2.Schedule) -> str:
    """``0 2 * * * (Europe/Paris), catchup on, from ... until ...``."""
    text = f"{schedule.cron} ({schedule.timezone or 'UTC'}), catchup "
    text += "on" if schedule.catchup else "off"
    if schedule.HasField("start_time"):
        text += f", from {format_timestamp(schedule.start_time)}"
    if schedule.HasField("end_time"):
        text += f", until {format_timestamp(schedule.end_time)}"
    return text


def next_run_text(pipeline: pipeline_pb2.Pipeline) -> str:
    """When the schedule fires next, or why it does not."""
    if pipeline.HasField("next_run_time"):
        return format_timestamp(pipeline.next_run_time)
    if not pipeline.HasField("schedule"):
        return "- (no schedule)"
    if pipeline.paused:
        return "- (paused)"
    return "- (the schedule has ended)"


def params_text(params: Mapping[str, Any]) -> str:
    """``name=<JSON value>`` pairs, sorted by name; ``-`` when there are none."""
    if not params:
        return "-"
    return ", ".join(
        f"{name}={json.dumps(_json_of(value), ensure_ascii=False)}"
        for name, value in sorted(params.items())
    )


def _json_of(value: Any) -> Any:
    """A protobuf ``Value`` as JSON (integral numbers as integers); plain values as they are."""
    if isinstance(value, message.Message):
        value = json_format.MessageToDict(value)
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, list):
        return [_json_of(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_of(item) for key, item in value.items()}
    return value


def pipeline_table(pipelines: Sequence[pipeline_pb2.Pipeline]) -> list[str]:
    """What ``pipeline list`` prints."""
    if not pipelines:
        return ["no pipelines"]
    rows = [
        (
            p.name,
            str(p.version),
            str(len(p.steps)),
            _schedule_cell(p),
            format_timestamp(p.update_time),
            ",".join(p.tags) or "-",
            p.description or "-",
        )
        for p in pipelines
    ]
    return table(("NAME", "VERSION", "STEPS", "SCHEDULE", "UPDATED", "TAGS", "DESCRIPTION"), rows)


def _schedule_cell(pipeline: pipeline_pb2.Pipeline) -> str:
    if not pipeline.schedule.cron:
        return "-"
    return f"{pipeline.schedule.cron}{' (paused)' if pipeline.paused else ''}"


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
    # Protobuf numbers in free-form values (inline rows) are doubles: show 1, not 1.0.
    return [(prefix, json.dumps(_json_of(value), ensure_ascii=False))]


def pipeline_detail_lines(
    pipeline: pipeline_pb2.Pipeline, plan: Sequence[pipeline_pb2.PlannedStage]
) -> list[str]:
    """What ``pipeline get`` prints."""
    schedule = schedule_text(pipeline.schedule) if pipeline.HasField("schedule") else "-"
    lines = [
        f"Name:         {pipeline.name}",
        f"Version:      {pipeline.version}",
        f"Description:  {pipeline.description or '-'}",
        f"Tags:         {', '.join(pipeline.tags) or '-'}",
        f"Labels:       {_join_mapping(pipeline.labels) or '-'}",
        f"Params:       {params_text(pipeline.params)}",
        f"Schedule:     {schedule}",
        f"Paused:       {'yes' if pipeline.paused else 'no'}",
        f"Next run:     {next_run_text(pipeline)}",
        f"Created:      {format_timestamp(pipeline.create_time)}",
        f"Updated:      {format_timestamp(pipeline.update_time)}",
        "Steps:",
    ]
    # The AFTER column only when some step waits for others without their data.
    with_after = any(s.after for s in pipeline.steps)
    headers = ("NAME", "KIND", "INPUTS", *(("AFTER",) if with_after else ()), "SETTINGS")
    rows = [
        (
            s.name,
            step_kind(s),
            ", ".join(s.inputs) or "-",
            *((", ".join(s.after) or "-",) if with_after else ()),
            step_parameters(s) or "-",
        )
        for s in pipeline.steps
    ]
    lines += table(headers, rows, indent="  ")
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
            trigger_name(r.trigger),
            format_timestamp(r.logical_date),
            format_timestamp(r.create_time),
            format_duration(run_elapsed(r)) if r.start_time.seconds or r.end_time.seconds else "-",
        )
        for r in runs
    ]
    headers = ("RUN ID", "PIPELINE", "VERSION", "STATE", "TRIGGER", "LOGICAL DATE", "CREATED")
    return table((*headers, "DURATION"), rows)


def trigger_name(trigger: int) -> str:
    """``RUN_TRIGGER_SCHEDULE`` → ``SCHEDULE``; ``-`` when unset."""
    if trigger == run_pb2.RUN_TRIGGER_UNSPECIFIED:
        return "-"
    try:
        return run_pb2.RunTrigger.Name(trigger).removeprefix("RUN_TRIGGER_")
    except ValueError:
        return str(trigger)


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
    if run.trigger != run_pb2.RUN_TRIGGER_UNSPECIFIED:
        lines.append(f"Trigger:   {trigger_name(run.trigger)}")
    if run.HasField("logical_date"):
        lines.append(f"Logical:   {format_timestamp(run.logical_date)}")
    if run.HasField("data_interval_start") and run.data_interval_end != run.data_interval_start:
        lines.append(
            f"Interval:  {format_timestamp(run.data_interval_start)}"
            f" .. {format_timestamp(run.data_interval_end)}"
        )
    if run.params:
        lines.append(f"Params:    {params_text(run.params)}")
    if run.backfill_id:
        lines.append(f"Backfill:  {run.backfill_id}")
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
        if stage.upstream:
            lines.append(f"      after: {', '.join(stage.upstream)}")
        if stage.HasField("next_attempt_time"):
            lines.append(f"      next attempt at {format_timestamp(stage.next_attempt_time)}")
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


FINAL_BACKFILL_STATES = frozenset(
    {
        run_pb2.BACKFILL_STATE_SUCCEEDED,
        run_pb2.BACKFILL_STATE_FAILED,
        run_pb2.BACKFILL_STATE_CANCELLED,
    }
)


def backfill_state_name(state: int) -> str:
    """``BACKFILL_STATE_RUNNING`` → ``RUNNING``."""
    try:
        return run_pb2.BackfillState.Name(state).removeprefix("BACKFILL_STATE_")
    except ValueError:
        return str(state)


def backfill_progress(backfill: run_pb2.Backfill) -> str:
    """``3/10 runs created, 2 succeeded, 1 failed``."""
    return (
        f"{backfill.created_runs}/{backfill.total_runs} runs created, "
        f"{backfill.succeeded_runs} succeeded, {backfill.failed_runs} failed"
    )


def backfill_table(backfills: Sequence[run_pb2.Backfill]) -> list[str]:
    """What ``backfill list`` prints, newest first."""
    if not backfills:
        return ["no backfills"]
    rows = [
        (
            b.backfill_id,
            b.pipeline,
            backfill_state_name(b.state),
            format_timestamp(b.start_date),
            format_timestamp(b.end_date),
            f"{b.created_runs}/{b.total_runs}",
            str(b.succeeded_runs),
            str(b.failed_runs),
            format_timestamp(b.create_time),
        )
        for b in backfills
    ]
    headers = (
        "BACKFILL ID",
        "PIPELINE",
        "STATE",
        "START",
        "END",
        "RUNS",
        "SUCCEEDED",
        "FAILED",
        "CREATED",
    )
    return table(headers, rows)


def backfill_lines(backfill: run_pb2.Backfill) -> list[str]:
    """What ``backfill get`` prints."""
    return [
        f"Backfill:    {backfill.backfill_id}",
        f"Pipeline:    {backfill.pipeline}",
        f"State:       {backfill_state_name(backfill.state)}",
        f"Range:       {format_timestamp(backfill.start_date)}"
        f" .. {format_timestamp(backfill.end_date)}",
        f"Runs:        {backfill_progress(backfill)}",
        f"Max active:  {backfill.max_active_runs or 1}",
        f"Only failed: {'yes' if backfill.only_failed else 'no'}",
        f"Params:      {params_text(backfill.params)}",
        f"Created:     {format_timestamp(backfill.create_time)}",
        f"Ended:       {format_timestamp(backfill.end_time)}",
        *([f"Request:     {backfill.request_id}"] if backfill.request_id else []),
    ]


def backfill_result_lines(backfill: run_pb2.Backfill) -> list[str]:
    """The end of ``pipeline backfill --wait``."""
    return [
        f"backfill {backfill.backfill_id} {backfill_state_name(backfill.state)}: "
        f"{backfill_progress(backfill)}"
    ]


_LOG_LEVEL_WIDTH = 7


def log_line_text(line: task_pb2.LogLine) -> str:
    """``2026-05-01 12:00:00.123+02:00 INFO    [step] message``.

    A multi-line message (a traceback, a query) keeps its lines, indented.
    """
    when = "-"
    if line.time.seconds or line.time.nanos:
        local = line.time.ToDatetime(tzinfo=UTC).astimezone()
        when = local.isoformat(sep=" ", timespec="milliseconds")
    try:
        level = task_pb2.LogLevel.Name(line.level).removeprefix("LOG_LEVEL_")
    except ValueError:
        level = str(line.level)
    step = f"[{line.step}] " if line.step else ""
    message = "\n    ".join(line.message.rstrip().splitlines())
    return f"{when} {level:<{_LOG_LEVEL_WIDTH}} {step}{message}"


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
    elif details.code == grpc.StatusCode.UNIMPLEMENTED and not details.reason:
        text = f"the DataDog scheduler at {server} does not support this call (an older version?)"
    else:
        text = one_line(details.message) or "the call failed"
    suffix = f"({code}, {details.reason})" if details.reason else f"({code})"
    return [f"error: {text} {suffix}", *violation_lines(details.violations)]


def one_line(text: str) -> str:
    """Collapse line breaks so that every error stays on one line."""
    return " ".join(text.split())


def stage_elapsed(stage: run_pb2.StageRun, now: float | None = None) -> float | None:
    """Seconds a stage has run (to its end, or to ``now``); None before it started."""
    if not stage.start_time.seconds:
        return None
    end = _seconds(stage.end_time) if stage.end_time.seconds else (now or time.time())
    return max(end - _seconds(stage.start_time), 0.0)


def format_rate(count: float, seconds: float | None) -> str:
    """``12,345/s``; ``-`` when nothing moved or no time passed."""
    if not seconds or seconds <= 0 or not count:
        return "-"
    return f"{count / seconds:,.0f}/s"


def format_bytes_rate(count: float, seconds: float | None) -> str:
    """``12.3 MB/s``; ``-`` when nothing moved or no time passed."""
    if not seconds or seconds <= 0 or not count:
        return "-"
    return f"{count / seconds / 1e6:,.1f} MB/s"


def progress_table(run: run_pb2.Run, now: float | None = None) -> list[str]:
    """What a terminal shows while waiting: the run line, then one row per stage
    (state, attempt, rows, throughput, elapsed)."""
    now = time.time() if now is None else now
    lines = [progress_line(run, run_elapsed(run, now))]
    rows = []
    for stage in run.stages:
        took = stage_elapsed(stage, now)
        rows.append(
            (
                stage.stage_id,
                stage_state_name(stage.state),
                str(stage.attempt or "-"),
                f"{stage.metrics.rows_read:,}",
                f"{stage.metrics.rows_written:,}",
                format_rate(stage.metrics.rows_read, took),
                format_bytes_rate(stage.metrics.bytes_read, took),
                format_duration(took) if took is not None else "-",
            )
        )
    headers = ("STAGE", "STATE", "ATTEMPT", "READ", "WRITTEN", "ROWS/S", "MB/S", "ELAPSED")
    if rows:
        lines += table(headers, rows, indent="  ")
    return lines


def pipeline_status_lines(
    pipeline: pipeline_pb2.Pipeline, runs: Sequence[run_pb2.Run]
) -> list[str]:
    """What ``pipeline status`` prints: the pipeline's schedule, then its latest runs."""
    schedule = schedule_text(pipeline.schedule) if pipeline.HasField("schedule") else "-"
    lines = [
        f"Pipeline:  {pipeline.name} (version {pipeline.version})",
        f"Schedule:  {schedule}",
        f"Paused:    {'yes' if pipeline.paused else 'no'}",
        f"Next run:  {next_run_text(pipeline)}",
        "Latest runs:",
    ]
    return lines + ["  " + line for line in run_table(runs)]


def schedule_table(pipelines: Sequence[pipeline_pb2.Pipeline]) -> list[str]:
    """What ``schedule list`` prints: each scheduled pipeline and its next fire time."""
    if not pipelines:
        return ["no schedules"]
    rows = [
        (
            p.name,
            p.schedule.cron,
            p.schedule.timezone or "UTC",
            "on" if p.schedule.catchup else "off",
            "yes" if p.paused else "no",
            next_run_text(p),
        )
        for p in pipelines
    ]
    return table(("PIPELINE", "CRON", "TIMEZONE", "CATCHUP", "PAUSED", "NEXT RUN"), rows)


def inputs_text(min_inputs: int, max_inputs: int) -> str:
    """``1``, ``2``, ``1-3``, ``2+`` (max 0: no limit)."""
    if max_inputs == 0:
        return f"{min_inputs}+"
    if min_inputs == max_inputs:
        return str(min_inputs)
    return f"{min_inputs}-{max_inputs}"


def transform_table(transforms: Sequence[Any]) -> list[str]:
    """What ``transform list`` prints; required parameters are marked with ``*``."""
    if not transforms:
        return ["no transforms"]
    rows = [
        (
            t.name,
            inputs_text(t.min_inputs, t.max_inputs),
            "yes" if t.streaming else "no",
            ", ".join(p.name + ("*" if p.required else "") for p in t.parameters) or "-",
            one_line(t.description) or "-",
        )
        for t in sorted(transforms, key=lambda t: t.name)
    ]
    return table(("NAME", "INPUTS", "STREAMING", "PARAMETERS (* required)", "DESCRIPTION"), rows)


def columns_table(columns: Sequence[Any], estimated_rows: int | None) -> list[str]:
    """What ``connector describe`` prints: each column with its Arrow type."""
    lines = table(
        ("COLUMN", "TYPE", "NULLABLE"),
        [(c.name, c.type, "yes" if c.nullable else "no") for c in columns],
    )
    if not columns:
        lines = ["no columns"]
    if estimated_rows is not None:
        lines.append(f"estimated rows: {estimated_rows:,}")
    return lines


def connection_test_table(results: Sequence[tuple[str, Any]]) -> list[str]:
    """What ``connector test`` prints: one row per connection tested."""
    rows = []
    for name, result in results:
        text = one_line(result.message) or "-"
        if not result.ok and result.reason:
            text = f"{result.reason}: {text}"
        rows.append((name, "ok" if result.ok else "FAILED", f"{result.latency_ms:.1f} ms", text))
    return table(("CONNECTION", "RESULT", "LATENCY", "MESSAGE"), rows)

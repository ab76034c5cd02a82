"""The CLI's commands: each loads its input, calls the scheduler and prints the answer.

``create_pipeline`` and ``run_pipeline`` are shared with ``datadog dev --run``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
from google.protobuf import json_format

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.cli import api, formats, output
from datadog_platform.cli.api import ApiError, SchedulerClient
from datadog_platform.cli.errors import CliError, ExitCode
from datadog_platform.cli.progress import follow_run
from datadog_platform.cli.settings import Settings
from datadog_platform.cli.spec import SpecError, load_pipeline
from datadog_platform.core.connection_refs import connection_references
from datadog_platform.core.errors import FieldViolation

DEFAULT_WAIT_TIMEOUT = 86400.0
#: How often ``backfill --wait`` and ``run logs --follow`` ask again.
POLL_SECONDS = 0.5


def emit(lines: Iterable[str]) -> None:
    """Print lines to standard output (looked up at call time, so captures work)."""
    for line in lines:
        print(line, file=sys.stdout)
    sys.stdout.flush()


def load_spec(path: str) -> pipeline_pb2.Pipeline:
    """Load a pipeline file, turning any problem into exit code 4 with a readable message."""
    try:
        return load_pipeline(path)
    except SpecError as exc:
        raise CliError(f"error: {exc}", ExitCode.INVALID_ARGUMENT) from None


def create_pipeline(
    client: SchedulerClient,
    pipeline: pipeline_pb2.Pipeline,
    request_id: str = "",
    reuse_existing: bool = False,
) -> str:
    """Register ``pipeline`` and print its version and plan; returns its name.

    With ``reuse_existing``, a pipeline of that name that exists already is used as
    it is (and the user is told so) instead of failing with ALREADY_EXISTS.
    """
    try:
        response = client.create_pipeline(pipeline, request_id=request_id)
    except ApiError as exc:
        if not (reuse_existing and exc.code == grpc.StatusCode.ALREADY_EXISTS):
            raise
        existing = client.get_pipeline(pipeline.name)
        emit(
            [
                f"pipeline {existing.pipeline.name} already exists; "
                f"using its version {existing.pipeline.version}",
                "plan:",
                *output.plan_lines(existing.plan),
            ]
        )
        return existing.pipeline.name
    emit(output.created_lines(response.pipeline, response.plan))
    return response.pipeline.name


def run_pipeline(
    client: SchedulerClient,
    name: str,
    request_id: str = "",
    wait: bool = False,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    params: Mapping[str, Any] | None = None,
) -> ExitCode:
    """Start a run; with ``wait``, follow it and print its result.

    Without ``wait`` only the run id is printed (handy in scripts). With it, the exit
    code is the run's outcome: 0 if it succeeded, 1 otherwise.
    """
    run = client.run_pipeline(name, request_id=request_id, params=params)
    if not wait:
        emit([run.run_id])
        return ExitCode.OK
    emit([f"started run {run.run_id} of {run.pipeline} version {run.pipeline_version}"])
    return _follow(client, run, wait_timeout)


def retry_run(
    client: SchedulerClient,
    run_id: str,
    request_id: str = "",
    wait: bool = False,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
) -> ExitCode:
    """Retry a finished run; with ``wait``, follow it as ``pipeline run --wait`` does."""
    run = client.retry_run(run_id, request_id=request_id)
    if not wait:
        emit([f"run {run.run_id} {output.run_state_name(run.state)}"])
        return ExitCode.OK
    emit([f"retrying run {run.run_id} of {run.pipeline} version {run.pipeline_version}"])
    return _follow(client, run, wait_timeout)


def _follow(client: SchedulerClient, run: run_pb2.Run, wait_timeout: float) -> ExitCode:
    """Follow ``run`` until it ends and print its result; 0 if it succeeded, else 1."""
    try:
        final = follow_run(client, run.run_id, wait_timeout)
    except KeyboardInterrupt:
        # Only the watching stops; say how to find the run again.
        raise CliError(
            f"interrupted; run {run.run_id} goes on: datadog run status {run.run_id}",
            ExitCode.INTERRUPTED,
        ) from None
    emit(output.run_result_lines(final))
    return ExitCode.OK if final.state == run_pb2.RUN_STATE_SUCCEEDED else ExitCode.RUN_FAILED


def connect(settings: Settings) -> SchedulerClient:
    """A client of the scheduler with ``settings``' address, deadline, TLS and token."""
    return api.connect(settings)


def _client(args: argparse.Namespace) -> SchedulerClient:
    return connect(args.settings)


def _emit_as(args: argparse.Namespace, value: Any, table: Iterable[str]) -> None:
    """Print ``value`` as JSON/YAML when ``-o`` asks for it, else the ``table`` lines."""
    if formats.is_machine(args):
        emit(formats.render(value, args.output))
    else:
        emit(table)


def cmd_pipeline_create(args: argparse.Namespace) -> ExitCode:
    """``pipeline create -f FILE``: the file is checked before anything is sent."""
    pipeline = load_spec(args.file)
    with _client(args) as client:
        create_pipeline(client, pipeline, args.request_id)
    return ExitCode.OK


def cmd_pipeline_update(args: argparse.Namespace) -> ExitCode:
    """``pipeline update -f FILE``: stores the file as the pipeline's next version."""
    pipeline = load_spec(args.file)
    with _client(args) as client:
        response = client.update_pipeline(pipeline, request_id=args.request_id)
    emit(output.updated_lines(response.pipeline, response.plan))
    return ExitCode.OK


def cmd_pipeline_validate(args: argparse.Namespace) -> ExitCode:
    """``pipeline validate -f FILE``: the plan (exit 0), or every problem (exit 4)."""
    pipeline = load_spec(args.file)
    with _client(args) as client:
        response = client.validate_pipeline(pipeline)
    if not response.valid:
        violations = [FieldViolation(v.field, v.description) for v in response.violations]
        raise CliError(output.invalid_lines(args.file, violations), ExitCode.INVALID_ARGUMENT)
    emit(output.valid_lines(args.file, response.plan))
    return ExitCode.OK


def cmd_pipeline_delete(args: argparse.Namespace) -> ExitCode:
    """``pipeline delete NAME [--yes]``: asks first unless ``--yes``."""
    if not args.yes:
        _confirm(
            f"delete pipeline {args.name} with all its versions, runs, backfills and "
            "watermarks? [y/N] ",
            f"error: not deleting pipeline {args.name}: confirm with --yes",
        )
    with _client(args) as client:
        response = client.delete_pipeline(args.name)
    versions = f"{response.versions_deleted} version{'s' if response.versions_deleted != 1 else ''}"
    runs = f"{response.runs_deleted} run{'s' if response.runs_deleted != 1 else ''}"
    emit([f"deleted pipeline {response.name} ({versions}, {runs})"])
    return ExitCode.OK


def _confirm(question: str, refusal: str) -> None:
    """Ask ``question`` on the terminal; a usage error unless the answer is yes."""
    if not sys.stdin.isatty():
        raise CliError(f"{refusal} (standard input is not a terminal)", ExitCode.USAGE)
    try:
        answer = input(question)
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError(refusal, ExitCode.USAGE)


def cmd_pipeline_pause(args: argparse.Namespace) -> ExitCode:
    """``pipeline pause NAME``: its schedule stops creating runs."""
    with _client(args) as client:
        emit(output.paused_lines(client.pause_pipeline(args.name)))
    return ExitCode.OK


def cmd_pipeline_unpause(args: argparse.Namespace) -> ExitCode:
    """``pipeline unpause NAME``: its schedule creates runs again."""
    with _client(args) as client:
        emit(output.paused_lines(client.unpause_pipeline(args.name)))
    return ExitCode.OK


def cmd_pipeline_list(args: argparse.Namespace) -> ExitCode:
    """``pipeline list [--tag T ...] [--label K=V ...]``."""
    with _client(args) as client:
        pipelines = list(client.list_pipelines(tags=args.tag or (), labels=dict(args.label or ())))
    _emit_as(args, formats.items("pipelines", pipelines), output.pipeline_table(pipelines))
    return ExitCode.OK


def cmd_pipeline_get(args: argparse.Namespace) -> ExitCode:
    """``pipeline get NAME``."""
    with _client(args) as client:
        response = client.get_pipeline(args.name, version=args.version)
    _emit_as(args, response, output.pipeline_detail_lines(response.pipeline, response.plan))
    return ExitCode.OK


def cmd_pipeline_status(args: argparse.Namespace) -> ExitCode:
    """``pipeline status NAME [--limit N]``: its schedule and its latest runs."""
    with _client(args) as client:
        pipeline = client.get_pipeline(args.name).pipeline
        runs = list(client.list_runs(pipeline=args.name, limit=args.limit))
    _emit_as(
        args,
        {"pipeline": pipeline, "runs": runs},
        output.pipeline_status_lines(pipeline, runs),
    )
    return ExitCode.OK


def cmd_schedule_list(args: argparse.Namespace) -> ExitCode:
    """``schedule list``: the pipelines that have a schedule, with their next fire time."""
    with _client(args) as client:
        pipelines = [p for p in client.list_pipelines() if p.HasField("schedule")]
    _emit_as(args, formats.items("pipelines", pipelines), output.schedule_table(pipelines))
    return ExitCode.OK


def cmd_pipeline_run(args: argparse.Namespace) -> ExitCode:
    """``pipeline run NAME [-p KEY=VALUE ...] [--wait]``."""
    params = dict(args.param or ())
    with _client(args) as client:
        return run_pipeline(
            client, args.name, args.request_id, args.wait, args.wait_timeout, params
        )


def cmd_pipeline_backfill(args: argparse.Namespace) -> ExitCode:
    """``pipeline backfill NAME --start T --end T [--wait]``: one run per interval.

    Times without an offset are in the pipeline's schedule time zone.
    """
    with _client(args) as client:
        zone = _schedule_zone(client.get_pipeline(args.name).pipeline)
        start, end = _aware(args.start, zone), _aware(args.end, zone)
        backfill = client.backfill_pipeline(
            args.name,
            start,
            end,
            max_active_runs=args.max_active_runs,
            only_failed=args.only_failed,
            params=dict(args.param or ()),
            request_id=args.request_id,
        )
        if not args.wait:
            emit([backfill.backfill_id])
            return ExitCode.OK
        emit(
            [
                f"started backfill {backfill.backfill_id} of {backfill.pipeline}: "
                f"{backfill.total_runs} run{'s' if backfill.total_runs != 1 else ''}"
            ]
        )
        return _follow_backfill(client, backfill, args.wait_timeout)


def _schedule_zone(pipeline: pipeline_pb2.Pipeline) -> tzinfo:
    name = pipeline.schedule.timezone or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CliError(
            f"error: unknown time zone {name!r} here; give --start and --end with an offset",
            ExitCode.INVALID_ARGUMENT,
        ) from None


def _aware(value: datetime, zone: tzinfo) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=zone)


def _follow_backfill(
    client: SchedulerClient, backfill: run_pb2.Backfill, wait_timeout: float
) -> ExitCode:
    """Poll a backfill until it ends, printing its progress when it changes."""
    deadline = time.monotonic() + wait_timeout
    started = time.monotonic()
    last = ""
    try:
        while True:
            progress = output.backfill_progress(backfill)
            if progress != last:
                stamp = f"[{output.format_duration(time.monotonic() - started):>6}]"
                emit([f"{stamp} {progress}"])
                last = progress
            if backfill.state in output.FINAL_BACKFILL_STATES:
                break
            if time.monotonic() >= deadline:
                raise CliError(
                    f"error: backfill {backfill.backfill_id} did not finish within "
                    f"{wait_timeout:g}s; it goes on: datadog backfill get {backfill.backfill_id}",
                    ExitCode.UNAVAILABLE,
                )
            time.sleep(POLL_SECONDS)
            backfill = client.get_backfill(backfill.backfill_id)
    except KeyboardInterrupt:
        raise CliError(
            f"interrupted; backfill {backfill.backfill_id} goes on: "
            f"datadog backfill get {backfill.backfill_id}",
            ExitCode.INTERRUPTED,
        ) from None
    emit(output.backfill_result_lines(backfill))
    succeeded = backfill.state == run_pb2.BACKFILL_STATE_SUCCEEDED
    return ExitCode.OK if succeeded else ExitCode.RUN_FAILED


def cmd_backfill_list(args: argparse.Namespace) -> ExitCode:
    """``backfill list [--pipeline NAME] [--limit N]``."""
    with _client(args) as client:
        backfills = list(client.list_backfills(pipeline=args.pipeline, limit=args.limit))
    _emit_as(args, formats.items("backfills", backfills), output.backfill_table(backfills))
    return ExitCode.OK


def cmd_backfill_get(args: argparse.Namespace) -> ExitCode:
    """``backfill get ID``."""
    with _client(args) as client:
        backfill = client.get_backfill(args.backfill_id)
    _emit_as(args, {"backfill": backfill}, output.backfill_lines(backfill))
    return ExitCode.OK


def cmd_backfill_cancel(args: argparse.Namespace) -> ExitCode:
    """``backfill cancel ID``: stops it and cancels its unfinished runs."""
    with _client(args) as client:
        backfill = client.cancel_backfill(args.backfill_id)
    emit(
        [
            f"backfill {backfill.backfill_id} {output.backfill_state_name(backfill.state)}: "
            f"{output.backfill_progress(backfill)}"
        ]
    )
    return ExitCode.OK


def cmd_run_status(args: argparse.Namespace) -> ExitCode:
    """``run status RUN_ID``: reports the status; exits 0 whatever the run's outcome."""
    with _client(args) as client:
        run = client.get_run(args.run_id)
    _emit_as(args, {"run": run}, output.run_status_lines(run))
    return ExitCode.OK


def cmd_run_watch(args: argparse.Namespace) -> ExitCode:
    """``run watch RUN_ID``: live progress until the run ends; 0 if it succeeded, else 1."""
    with _client(args) as client:
        return _follow(client, client.get_run(args.run_id), args.wait_timeout)


def cmd_run_list(args: argparse.Namespace) -> ExitCode:
    """``run list [--pipeline NAME] [--state STATE ...] [--backfill ID] [--limit N]``."""
    states = [run_pb2.RunState.Value(f"RUN_STATE_{state}") for state in args.state or ()]
    with _client(args) as client:
        runs = list(
            client.list_runs(
                pipeline=args.pipeline, states=states, limit=args.limit, backfill_id=args.backfill
            )
        )
    _emit_as(args, formats.items("runs", runs), output.run_table(runs))
    return ExitCode.OK


def cmd_run_logs(args: argparse.Namespace) -> ExitCode:
    """``run logs RUN_ID STAGE [--attempt N] [--follow]``.

    With ``--follow`` it keeps printing new lines until the attempt has ended (and,
    without ``--attempt``, goes on with the stage's next attempts).
    """
    with _client(args) as client:
        try:
            _print_logs(client, args.run_id, args.stage, args.attempt, args.follow, args.output)
        except KeyboardInterrupt:
            return ExitCode.OK  # stopping a follow is the normal way out
    return ExitCode.OK


def _print_logs(
    client: SchedulerClient,
    run_id: str,
    stage_id: str,
    wanted: int,
    follow: bool,
    fmt: str = formats.TABLE,
) -> None:
    attempt = wanted
    while True:
        printed, next_attempt = _print_attempt(client, run_id, stage_id, attempt, follow, fmt)
        if next_attempt is None or wanted:
            return
        if printed and fmt == formats.TABLE:
            emit([f"--- attempt {next_attempt} ---"])
        attempt = next_attempt


def _print_attempt(
    client: SchedulerClient,
    run_id: str,
    stage_id: str,
    attempt: int,
    follow: bool,
    fmt: str = formats.TABLE,
) -> tuple[int, int | None]:
    """Print an attempt's lines (0: the latest attempt); with ``follow``, until it ends.

    Returns the attempt printed and, when following, the stage's later attempt that
    started meanwhile (None if there is none).
    """
    token, seen = "", 0  # seen: lines of the page of ``token`` already printed
    while True:
        # Looked up before the fetch: once the attempt had ended here, the fetch that
        # follows holds every line it wrote.
        stage = _stage_of(client.get_run(run_id), stage_id) if follow else None
        response = client.stage_logs_page(run_id, stage_id, attempt=attempt, page_token=token)
        attempt = response.attempt
        emit(_log_lines(response.lines[seen:], attempt, fmt))
        if response.next_page_token and response.next_page_token != token:
            token, seen = response.next_page_token, 0
            continue
        seen = len(response.lines)
        if stage is None:
            return attempt, None
        if stage.attempt > attempt:
            return attempt, stage.attempt
        if stage.state in output.FINAL_STAGE_STATES:
            return attempt, None
        time.sleep(POLL_SECONDS)


def _log_lines(lines: Iterable[Any], attempt: int, fmt: str) -> Iterable[str]:
    """Log lines as text, or (``-o json|yaml``) one JSON line / YAML document each, so that
    ``--follow`` streams too."""
    if fmt == formats.TABLE:
        return (output.log_line_text(line) for line in lines)
    return (
        text
        for line in lines
        for text in formats.render_stream_item({"attempt": attempt, **formats.as_dict(line)}, fmt)
    )


def _stage_of(run: run_pb2.Run, stage_id: str) -> run_pb2.StageRun | None:
    return next((s for s in run.stages if s.stage_id == stage_id), None)


def cmd_run_cancel(args: argparse.Namespace) -> ExitCode:
    """``run cancel RUN_ID``: prints the run's new state; a finished run is an error (6)."""
    with _client(args) as client:
        run = client.cancel_run(args.run_id, request_id=args.request_id)
    emit([f"run {run.run_id} {output.run_state_name(run.state)}"])
    return ExitCode.OK


def cmd_run_retry(args: argparse.Namespace) -> ExitCode:
    """``run retry RUN_ID [--wait]``: re-runs the failed and never-run stages."""
    with _client(args) as client:
        return retry_run(client, args.run_id, args.request_id, args.wait, args.wait_timeout)


def cmd_connector_list(args: argparse.Namespace) -> ExitCode:
    """``connector list``."""
    with _client(args) as client:
        connections = list(client.list_connections())
    _emit_as(args, formats.items("connections", connections), output.connection_table(connections))
    return ExitCode.OK


def cmd_connector_test(args: argparse.Namespace) -> ExitCode:
    """``connector test --connection NAME ... | -f PIPELINE_FILE``: 0 if every one works, else 1.

    With a pipeline file, every connection its steps use is tested.
    """
    names = list(dict.fromkeys(args.connection or ()))
    if args.file:
        names += [n for n in connections_of(load_spec(args.file)) if n not in names]
        if not names:
            emit([f"{args.file}: uses no connection"])
            return ExitCode.OK
    if not names:
        raise CliError("error: give --connection NAME or -f PIPELINE_FILE", ExitCode.USAGE)
    with _client(args) as client:
        results = [(name, client.test_connection(name)) for name in names]
    value = {"results": [{"name": name, **formats.as_dict(r)} for name, r in results]}
    _emit_as(args, value, output.connection_test_table(results))
    return ExitCode.OK if all(r.ok for _, r in results) else ExitCode.RUN_FAILED


def connections_of(pipeline: pipeline_pb2.Pipeline) -> list[str]:
    """The connections a pipeline's sources and sinks use, in step order, once each
    (a file step without one uses "local"; templated names are known only at run time)."""
    return list(dict.fromkeys(name for _, name in connection_references(pipeline)))


def cmd_connector_describe(args: argparse.Namespace) -> ExitCode:
    """``connector describe (--step NAME -f PIPELINE_FILE | --source JSON)``: a source's columns."""
    source = _source_to_describe(args)
    with _client(args) as client:
        response = client.describe_source(source)
    columns = describe_columns(response)
    del response.columns[:]
    response.columns.extend(columns)
    response.ClearField("schema")  # its columns say the same, readably
    estimated = response.estimated_rows if response.HasField("estimated_rows") else None
    _emit_as(args, response, output.columns_table(columns, estimated))
    return ExitCode.OK


def _source_to_describe(args: argparse.Namespace) -> step_pb2.SourceSpec:
    if bool(args.source) == bool(args.step):
        raise CliError(
            "error: give either --step NAME with -f PIPELINE_FILE, or --source JSON",
            ExitCode.USAGE,
        )
    if args.source:
        try:
            return json_format.Parse(args.source, step_pb2.SourceSpec())
        except json_format.ParseError as exc:
            raise CliError(
                f"error: --source is not a SourceSpec: {output.one_line(str(exc))}",
                ExitCode.INVALID_ARGUMENT,
            ) from None
    if not args.file:
        raise CliError("error: --step needs -f PIPELINE_FILE", ExitCode.USAGE)
    pipeline = load_spec(args.file)
    step = next((s for s in pipeline.steps if s.name == args.step), None)
    if step is None:
        known = ", ".join(s.name for s in pipeline.steps) or "none"
        raise CliError(
            f"error: {args.file} has no step {args.step!r} (steps: {known})", ExitCode.NOT_FOUND
        )
    if step.WhichOneof("kind") != "source":
        raise CliError(
            f"error: step {args.step!r} of {args.file} is a {step.WhichOneof('kind')}, "
            "not a source",
            ExitCode.INVALID_ARGUMENT,
        )
    return step.source


def describe_columns(response: pb.DescribeSourceResponse) -> list[pb.SourceColumn]:
    """The response's columns, or (from a server that sends only the Arrow schema) its
    schema's fields, with types in pyarrow's spelling."""
    if response.columns or not response.schema.ipc_message:
        return list(response.columns)
    import pyarrow as pa  # only here: it would slow every other command's start

    schema = pa.ipc.read_schema(pa.py_buffer(response.schema.ipc_message))
    return [pb.SourceColumn(name=f.name, type=str(f.type), nullable=f.nullable) for f in schema]


def cmd_transform_list(args: argparse.Namespace) -> ExitCode:
    """``transform list``: every transform the executors run, with inputs and parameters."""
    with _client(args) as client:
        transforms = client.list_transform_types()
    _emit_as(args, formats.items("transform_types", transforms), output.transform_table(transforms))
    return ExitCode.OK

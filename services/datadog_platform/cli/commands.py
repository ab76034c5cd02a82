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

from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.cli import output
from datadog_platform.cli.api import SchedulerClient
from datadog_platform.cli.errors import CliError, ExitCode
from datadog_platform.cli.progress import follow_run
from datadog_platform.cli.spec import SpecError, load_pipeline
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
        response = client.create_pipeline(pipeline, request_id)
    except grpc.RpcError as exc:
        if not (reuse_existing and exc.code() == grpc.StatusCode.ALREADY_EXISTS):  # type: ignore[attr-defined]
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
    run = client.run_pipeline(name, request_id, params)
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
    run = client.retry_run(run_id, request_id)
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


def _client(args: argparse.Namespace) -> SchedulerClient:
    return SchedulerClient(args.server, args.timeout)


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
        response = client.update_pipeline(pipeline, args.request_id)
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
        pipelines = client.list_pipelines(args.tag or (), dict(args.label or ()))
    emit(output.pipeline_table(pipelines))
    return ExitCode.OK


def cmd_pipeline_get(args: argparse.Namespace) -> ExitCode:
    """``pipeline get NAME``."""
    with _client(args) as client:
        response = client.get_pipeline(args.name, args.version)
    emit(output.pipeline_detail_lines(response.pipeline, response.plan))
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
        emit(output.backfill_table(client.list_backfills(args.pipeline, args.limit)))
    return ExitCode.OK


def cmd_backfill_get(args: argparse.Namespace) -> ExitCode:
    """``backfill get ID``."""
    with _client(args) as client:
        emit(output.backfill_lines(client.get_backfill(args.backfill_id)))
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
    emit(output.run_status_lines(run))
    return ExitCode.OK


def cmd_run_list(args: argparse.Namespace) -> ExitCode:
    """``run list [--pipeline NAME] [--state STATE ...] [--backfill ID] [--limit N]``."""
    states = [run_pb2.RunState.Value(f"RUN_STATE_{state}") for state in args.state or ()]
    with _client(args) as client:
        runs = client.list_runs(args.pipeline, states, args.limit, args.backfill)
    emit(output.run_table(runs))
    return ExitCode.OK


def cmd_run_logs(args: argparse.Namespace) -> ExitCode:
    """``run logs RUN_ID STAGE [--attempt N] [--follow]``.

    With ``--follow`` it keeps printing new lines until the attempt has ended (and,
    without ``--attempt``, goes on with the stage's next attempts).
    """
    with _client(args) as client:
        try:
            _print_logs(client, args.run_id, args.stage, args.attempt, args.follow)
        except KeyboardInterrupt:
            return ExitCode.OK  # stopping a follow is the normal way out
    return ExitCode.OK


def _print_logs(
    client: SchedulerClient, run_id: str, stage_id: str, wanted: int, follow: bool
) -> None:
    attempt = wanted
    while True:
        printed, next_attempt = _print_attempt(client, run_id, stage_id, attempt, follow)
        if next_attempt is None or wanted:
            return
        if printed:
            emit([f"--- attempt {next_attempt} ---"])
        attempt = next_attempt


def _print_attempt(
    client: SchedulerClient, run_id: str, stage_id: str, attempt: int, follow: bool
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
        response = client.list_stage_logs(run_id, stage_id, attempt, token)
        attempt = response.attempt
        emit(output.log_line_text(line) for line in response.lines[seen:])
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


def _stage_of(run: run_pb2.Run, stage_id: str) -> run_pb2.StageRun | None:
    return next((s for s in run.stages if s.stage_id == stage_id), None)


def cmd_run_cancel(args: argparse.Namespace) -> ExitCode:
    """``run cancel RUN_ID``: prints the run's new state; a finished run is an error (6)."""
    with _client(args) as client:
        run = client.cancel_run(args.run_id, args.request_id)
    emit([f"run {run.run_id} {output.run_state_name(run.state)}"])
    return ExitCode.OK


def cmd_run_retry(args: argparse.Namespace) -> ExitCode:
    """``run retry RUN_ID [--wait]``: re-runs the failed and never-run stages."""
    with _client(args) as client:
        return retry_run(client, args.run_id, args.request_id, args.wait, args.wait_timeout)


def cmd_connector_list(args: argparse.Namespace) -> ExitCode:
    """``connector list``."""
    with _client(args) as client:
        emit(output.connection_table(client.list_connections()))
    return ExitCode.OK

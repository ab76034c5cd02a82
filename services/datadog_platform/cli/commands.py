"""The CLI's commands: each loads its input, calls the scheduler and prints the answer.

``create_pipeline`` and ``run_pipeline`` are shared with ``datadog dev --run``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

import grpc

from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.cli import output
from datadog_platform.cli.api import SchedulerClient
from datadog_platform.cli.errors import CliError, ExitCode
from datadog_platform.cli.progress import follow_run
from datadog_platform.cli.spec import SpecError, load_pipeline

DEFAULT_WAIT_TIMEOUT = 86400.0


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
) -> ExitCode:
    """Start a run; with ``wait``, follow it and print its result.

    Without ``wait`` only the run id is printed (handy in scripts). With it, the exit
    code is the run's outcome: 0 if it succeeded, 1 otherwise.
    """
    run = client.run_pipeline(name, request_id)
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


def cmd_pipeline_list(args: argparse.Namespace) -> ExitCode:
    """``pipeline list``."""
    with _client(args) as client:
        emit(output.pipeline_table(client.list_pipelines()))
    return ExitCode.OK


def cmd_pipeline_get(args: argparse.Namespace) -> ExitCode:
    """``pipeline get NAME``."""
    with _client(args) as client:
        response = client.get_pipeline(args.name, args.version)
    emit(output.pipeline_detail_lines(response.pipeline, response.plan))
    return ExitCode.OK


def cmd_pipeline_run(args: argparse.Namespace) -> ExitCode:
    """``pipeline run NAME [--wait]``."""
    with _client(args) as client:
        return run_pipeline(client, args.name, args.request_id, args.wait, args.wait_timeout)


def cmd_run_status(args: argparse.Namespace) -> ExitCode:
    """``run status RUN_ID``: reports the status; exits 0 whatever the run's outcome."""
    with _client(args) as client:
        run = client.get_run(args.run_id)
    emit(output.run_status_lines(run))
    return ExitCode.OK


def cmd_run_list(args: argparse.Namespace) -> ExitCode:
    """``run list [--pipeline NAME] [--state STATE ...] [--limit N]``."""
    states = [run_pb2.RunState.Value(f"RUN_STATE_{state}") for state in args.state or ()]
    with _client(args) as client:
        runs = client.list_runs(args.pipeline, states, args.limit)
    emit(output.run_table(runs))
    return ExitCode.OK


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

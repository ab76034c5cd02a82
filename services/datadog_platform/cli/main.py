"""Entry point of the ``datadog`` command: argument parsing, dispatch, error reporting.

Errors never show a traceback: a failed call prints ``error: <message> (<CODE>, <reason>)``
and one ``  - <field>: <description>`` line per field violation, on standard error, and
the process exits with the code listed in :mod:`datadog_platform.cli.errors`:
0 ok, 1 run failed, 2 usage, 3 not found, 4 invalid argument, 5 scheduler unreachable
or too slow, 6 anything else, 130 interrupted.

Where to connect (address, deadline, TLS files, token) comes from flags, ``DATADOG_*``
variables or a context of the config file: see :mod:`datadog_platform.cli.settings`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import grpc

from datadog_platform.cli import commands, db, dev
from datadog_platform.cli.api import ApiError
from datadog_platform.cli.completion import add_completion_parser
from datadog_platform.cli.config_cmd import add_config_parser
from datadog_platform.cli.errors import EXIT_CODES_HELP, CliError, ExitCode, exit_code_for
from datadog_platform.cli.formats import add_output_flag
from datadog_platform.cli.output import rpc_error_lines
from datadog_platform.cli.settings import add_connection_flags, positive_float, resolve
from datadog_platform.core.status import details_of

Handler = Callable[[argparse.Namespace], int]

_RUN_STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")


def build_parser() -> argparse.ArgumentParser:
    """The full command tree; each leaf sets ``handler``."""
    parser = argparse.ArgumentParser(
        prog="datadog",
        description="DataDog: define, run and watch data pipelines.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_flags(parser)
    areas = parser.add_subparsers(dest="area", metavar="COMMAND", required=True)

    pipeline = areas.add_parser("pipeline", help="create, change, show, run and backfill pipelines")
    pipeline_cmds = pipeline.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    create = pipeline_cmds.add_parser("create", help="register a pipeline from a YAML/JSON file")
    create.add_argument("-f", "--file", required=True, help="pipeline file (.yaml, .yml, .json)")
    _add_request_id(create)
    create.set_defaults(handler=commands.cmd_pipeline_create)
    update = pipeline_cmds.add_parser(
        "update", help="store a pipeline file as the next version of its pipeline"
    )
    update.add_argument("-f", "--file", required=True, help="pipeline file (.yaml, .yml, .json)")
    _add_request_id(update)
    update.set_defaults(handler=commands.cmd_pipeline_update)
    validate = pipeline_cmds.add_parser(
        "validate", help="check a pipeline file without storing it: its plan or its problems"
    )
    validate.add_argument("-f", "--file", required=True, help="pipeline file (.yaml, .yml, .json)")
    validate.set_defaults(handler=commands.cmd_pipeline_validate)
    delete = pipeline_cmds.add_parser(
        "delete", help="delete a pipeline with its versions, runs and backfills"
    )
    delete.add_argument("name")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=commands.cmd_pipeline_delete)
    pause = pipeline_cmds.add_parser("pause", help="stop a pipeline's schedule creating runs")
    pause.add_argument("name")
    pause.set_defaults(handler=commands.cmd_pipeline_pause)
    unpause = pipeline_cmds.add_parser("unpause", help="let a pipeline's schedule create runs")
    unpause.add_argument("name")
    unpause.set_defaults(handler=commands.cmd_pipeline_unpause)
    listing = pipeline_cmds.add_parser("list", help="list pipelines (latest versions)")
    listing.add_argument(
        "--tag", action="append", metavar="TAG", help="only pipelines with this tag (repeatable)"
    )
    listing.add_argument(
        "--label",
        action="append",
        type=_label,
        metavar="KEY=VALUE",
        help="only pipelines with this label (repeatable)",
    )
    add_output_flag(listing)
    listing.set_defaults(handler=commands.cmd_pipeline_list)
    get = pipeline_cmds.add_parser(
        "get", help="show a pipeline, its schedule, its steps and its plan"
    )
    get.add_argument("name")
    get.add_argument("--version", type=int, default=0, help="version to show (default: latest)")
    add_output_flag(get)
    get.set_defaults(handler=commands.cmd_pipeline_get)
    pipeline_status = pipeline_cmds.add_parser(
        "status", help="show a pipeline's schedule and its latest runs"
    )
    pipeline_status.add_argument("name")
    pipeline_status.add_argument(
        "--limit",
        type=_non_negative_int,
        default=10,
        metavar="N",
        help="how many runs, newest first (default 10; 0: all)",
    )
    add_output_flag(pipeline_status)
    pipeline_status.set_defaults(handler=commands.cmd_pipeline_status)
    run = pipeline_cmds.add_parser("run", help="start a run of a pipeline's latest version")
    run.add_argument("name")
    _add_params(run)
    _add_wait(run)
    _add_request_id(run)
    run.set_defaults(handler=commands.cmd_pipeline_run)
    backfill = pipeline_cmds.add_parser(
        "backfill", help="run a scheduled pipeline once per interval of a date range"
    )
    backfill.add_argument("name")
    backfill.add_argument(
        "--start",
        required=True,
        type=_time,
        metavar="TIME",
        help="start of the range, inclusive (ISO 8601, e.g. 2026-01-01 or "
        "2026-01-01T02:00+01:00; without an offset: in the schedule's time zone)",
    )
    backfill.add_argument(
        "--end", required=True, type=_time, metavar="TIME", help="end of the range, exclusive"
    )
    backfill.add_argument(
        "--max-active-runs",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="how many of its runs may be unfinished at once (default 1)",
    )
    backfill.add_argument(
        "--only-failed",
        action="store_true",
        help="run only intervals whose latest run failed or that never ran",
    )
    _add_params(backfill)
    _add_wait(backfill, "follow the backfill until it ends")
    _add_request_id(backfill)
    backfill.set_defaults(handler=commands.cmd_pipeline_backfill)

    runs = areas.add_parser("run", help="list, inspect, cancel and retry runs; read stage logs")
    run_cmds = runs.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    status = run_cmds.add_parser(
        "status", aliases=["get"], help="show a run and each of its stages"
    )
    status.add_argument("run_id", metavar="RUN_ID")
    add_output_flag(status)
    status.set_defaults(handler=commands.cmd_run_status)
    watch = run_cmds.add_parser(
        "watch", help="show a run's progress live until it ends (exit 0 if it succeeded)"
    )
    watch.add_argument("run_id", metavar="RUN_ID")
    watch.add_argument(
        "--wait-timeout",
        type=positive_float,
        default=commands.DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help="how long to follow it (default 86400)",
    )
    watch.set_defaults(handler=commands.cmd_run_watch)
    run_list = run_cmds.add_parser("list", help="list runs, newest first")
    run_list.add_argument("--pipeline", default="", metavar="NAME", help="only this pipeline's")
    run_list.add_argument(
        "--state",
        nargs="+",
        action="extend",
        type=str.upper,
        choices=_RUN_STATES,
        metavar="STATE",
        help=f"only runs in these states ({', '.join(_RUN_STATES)})",
    )
    run_list.add_argument(
        "--backfill", default="", metavar="ID", help="only the runs of this backfill"
    )
    run_list.add_argument(
        "--limit", type=int, default=0, metavar="N", help="at most N runs (default: all)"
    )
    add_output_flag(run_list)
    run_list.set_defaults(handler=commands.cmd_run_list)
    logs = run_cmds.add_parser("logs", help="print the log lines of a stage attempt")
    logs.add_argument("run_id", metavar="RUN_ID")
    logs.add_argument("stage", metavar="STAGE")
    logs.add_argument(
        "--attempt",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="attempt number (default: the latest)",
    )
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing new lines until the attempt ends (without --attempt: "
        "and the stage's next attempts)",
    )
    add_output_flag(logs)
    logs.set_defaults(handler=commands.cmd_run_logs)
    cancel = run_cmds.add_parser("cancel", help="cancel a run that has not finished")
    cancel.add_argument("run_id", metavar="RUN_ID")
    _add_request_id(cancel)
    cancel.set_defaults(handler=commands.cmd_run_cancel)
    retry = run_cmds.add_parser(
        "retry", help="re-run the failed and never-run stages of a finished run"
    )
    retry.add_argument("run_id", metavar="RUN_ID")
    _add_wait(retry)
    _add_request_id(retry)
    retry.set_defaults(handler=commands.cmd_run_retry)

    backfills = areas.add_parser("backfill", help="list, inspect and cancel backfills")
    backfill_cmds = backfills.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    backfill_list = backfill_cmds.add_parser("list", help="list backfills, newest first")
    backfill_list.add_argument(
        "--pipeline", default="", metavar="NAME", help="only this pipeline's"
    )
    backfill_list.add_argument(
        "--limit", type=int, default=0, metavar="N", help="at most N backfills (default: all)"
    )
    add_output_flag(backfill_list)
    backfill_list.set_defaults(handler=commands.cmd_backfill_list)
    backfill_get = backfill_cmds.add_parser("get", help="show a backfill and its progress")
    backfill_get.add_argument("backfill_id", metavar="BACKFILL_ID")
    add_output_flag(backfill_get)
    backfill_get.set_defaults(handler=commands.cmd_backfill_get)
    backfill_cancel = backfill_cmds.add_parser(
        "cancel", help="stop a backfill and cancel its unfinished runs"
    )
    backfill_cancel.add_argument("backfill_id", metavar="BACKFILL_ID")
    backfill_cancel.set_defaults(handler=commands.cmd_backfill_cancel)

    connector = areas.add_parser("connector", help="list and test connections; describe sources")
    connector_cmds = connector.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    connections = connector_cmds.add_parser("list", help="list the configured connections")
    add_output_flag(connections)
    connections.set_defaults(handler=commands.cmd_connector_list)
    test = connector_cmds.add_parser(
        "test", help="check that connections work (exit 1 if one does not)"
    )
    test.add_argument(
        "--connection",
        action="append",
        metavar="NAME",
        help="a connection configured on the connector service (repeatable)",
    )
    test.add_argument("-f", "--file", help="a pipeline file: test every connection its steps use")
    add_output_flag(test)
    test.set_defaults(handler=commands.cmd_connector_test)
    describe = connector_cmds.add_parser(
        "describe", help="show the columns and types a source produces, without reading it"
    )
    describe.add_argument("--step", metavar="NAME", help="a source step of the -f pipeline file")
    describe.add_argument("-f", "--file", help="pipeline file (.yaml, .yml, .json) of --step")
    describe.add_argument(
        "--source",
        metavar="JSON",
        help='a SourceSpec as JSON, e.g. \'{"file": {"path": "a.csv", "format": '
        '"FILE_FORMAT_CSV"}}\'',
    )
    add_output_flag(describe)
    describe.set_defaults(handler=commands.cmd_connector_describe)

    transform = areas.add_parser("transform", help="the transforms the executors run")
    transform_cmds = transform.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    transforms = transform_cmds.add_parser(
        "list", help="list transforms with their inputs and parameters"
    )
    add_output_flag(transforms)
    transforms.set_defaults(handler=commands.cmd_transform_list)

    schedule = areas.add_parser("schedule", help="the pipelines' schedules")
    schedule_cmds = schedule.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    schedules = schedule_cmds.add_parser(
        "list", help="list scheduled pipelines: cron, time zone, paused, next run"
    )
    add_output_flag(schedules)
    schedules.set_defaults(handler=commands.cmd_schedule_list)

    db.add_db_parser(areas)
    add_config_parser(areas)
    add_completion_parser(areas)

    dev_parser = areas.add_parser(
        "dev",
        help="start the three services locally (dev mode)",
        description=dev.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dev.add_arguments(dev_parser)
    dev_parser.set_defaults(handler=dev.cmd_dev)
    return parser


def _add_wait(parser: argparse.ArgumentParser, text: str = "follow the run until it ends") -> None:
    parser.add_argument("--wait", action="store_true", help=text)
    parser.add_argument(
        "--wait-timeout",
        type=positive_float,
        default=commands.DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help="how long --wait follows it (default 86400)",
    )


def _add_params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        type=parse_param,
        metavar="KEY=VALUE",
        help="override a param (repeatable); VALUE is read as JSON when it parses "
        '(42, true, [1, 2], {"a": 1}, "quoted"), as a string otherwise',
    )


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, value): the value as JSON when it parses, else the string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except ValueError:
        value = raw
    return key.strip(), value


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; such a value stays a string.
    raise ValueError(name)


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date or time: {text!r} (e.g. 2026-01-01 or 2026-01-01T02:00Z)"
        ) from None


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _add_request_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--request-id", default="", metavar="ID", help="idempotency key: a retry returns the same"
    )


def run(argv: Sequence[str]) -> int:
    """Parse ``argv``, run the command and return its exit code; prints, never raises."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else ExitCode.USAGE
    handler: Handler = args.handler
    try:
        if getattr(args, "needs_server", True):
            # Resolved once, here: flag > DATADOG_* variable > config context > default.
            args.settings = resolve(args)
            args.server, args.timeout = args.settings.server, args.settings.timeout
        return int(handler(args))
    except CliError as exc:
        _print_error(exc.lines)
        return exc.exit_code
    except ApiError as exc:  # every call made through the SDK
        _print_error(rpc_error_lines(exc.details, args.server))
        return exit_code_for(exc.code)
    except grpc.RpcError as exc:
        details = details_of(exc)
        _print_error(rpc_error_lines(details, args.server))
        return exit_code_for(details.code)
    except KeyboardInterrupt:
        _print_error(["interrupted"])
        return ExitCode.INTERRUPTED


def _print_error(lines: Sequence[str]) -> None:
    sys.stdout.flush()  # keep what was printed so far ahead of the error
    for line in lines:
        print(line, file=sys.stderr)
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; with no ``argv`` it reads ``sys.argv`` and exits."""
    try:
        code = run(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        # The reader went away (`datadog run list | head`): stop quietly, as Unix tools
        # do. Point stdout at devnull so the interpreter's final flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + signal.SIGPIPE  # what a shell reports for a tool killed by SIGPIPE
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()

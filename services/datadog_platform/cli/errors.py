"""Exit codes of the ``datadog`` command and the error type its commands raise."""

from __future__ import annotations

import enum

import grpc


class ExitCode(enum.IntEnum):
    """Process exit codes; documented in the ``datadog --help`` epilog."""

    OK = 0
    RUN_FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    INVALID_ARGUMENT = 4
    UNAVAILABLE = 5
    ERROR = 6
    INTERRUPTED = 130


EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    the run or backfill failed (or was cancelled), or a connection test failed
  2    usage error
  3    not found (pipeline, run, backfill, ...)
  4    invalid argument (unreadable or invalid pipeline file, INVALID_ARGUMENT)
  5    the scheduler cannot be reached or did not answer in time (or is unavailable)
  6    any other error
  130  interrupted
"""


class CliError(Exception):
    """A failure to report as readable lines (no traceback) with an exit code."""

    def __init__(self, lines: str | list[str], exit_code: ExitCode = ExitCode.ERROR) -> None:
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        self.exit_code = exit_code
        super().__init__("\n".join(self.lines))


_EXIT_CODE_BY_STATUS = {
    grpc.StatusCode.NOT_FOUND: ExitCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: ExitCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAVAILABLE: ExitCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: ExitCode.UNAVAILABLE,
}


def exit_code_for(code: grpc.StatusCode | None) -> ExitCode:
    """The exit code for a failed RPC's status code."""
    if code is None:
        return ExitCode.ERROR
    return _EXIT_CODE_BY_STATUS.get(code, ExitCode.ERROR)

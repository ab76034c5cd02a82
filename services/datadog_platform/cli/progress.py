"""Follow a run with ``WatchRun`` and show its progress while it runs.

On a terminal: one line rewritten in place (state, stages done/total, rows, elapsed),
refreshed every second even between snapshots. Otherwise (pipes, logs, CI): one plain
line per state change.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

import grpc

from datadog_platform.api.scheduler.v1 import run_pb2
from datadog_platform.cli.api import SchedulerClient
from datadog_platform.cli.errors import CliError, ExitCode
from datadog_platform.cli.output import (
    change_lines,
    is_final,
    progress_line,
    run_elapsed,
    run_state_name,
)

_REFRESH_SECONDS = 1.0
_CLEAR_LINE = "\r\x1b[2K"


class _TerminalLine:
    """A status line redrawn on each snapshot and by a ticker thread in between."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._run: run_pb2.Run | None = None
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)

    def __enter__(self) -> _TerminalLine:
        self._ticker.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._ticker.join()
        with self._lock:
            if self._run is not None:
                self._out.write("\n")
                self._out.flush()

    def show(self, run: run_pb2.Run) -> None:
        with self._lock:
            self._run = run
            self._draw()

    def _tick(self) -> None:
        while not self._stop.wait(_REFRESH_SECONDS):
            with self._lock:
                if self._run is not None:
                    self._draw()

    def _draw(self) -> None:
        assert self._run is not None
        self._out.write(_CLEAR_LINE + progress_line(self._run, run_elapsed(self._run)))
        self._out.flush()


def follow_run(
    client: SchedulerClient,
    run_id: str,
    wait_timeout: float,
    out: TextIO | None = None,
    tty: bool | None = None,
) -> run_pb2.Run:
    """Watch a run until it is final, showing progress on ``out``; returns the final run."""
    out = out if out is not None else sys.stdout
    tty = out.isatty() if tty is None else tty
    last: run_pb2.Run | None = None
    try:
        if tty:
            with _TerminalLine(out) as line:
                for run in client.watch_run(run_id, wait_timeout):
                    line.show(run)
                    last = run
        else:
            for run in client.watch_run(run_id, wait_timeout):
                for text in change_lines(last, run, run_elapsed(run)):
                    print(text, file=out, flush=True)
                last = run
    except grpc.RpcError as exc:
        # Only the long watch deadline is the run's fault; anything else is reported
        # like every other failed call.
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and last is not None:  # type: ignore[attr-defined]
            raise CliError(
                f"error: run {run_id} did not finish within {wait_timeout:g}s; it goes on: "
                f"datadog run status {run_id}",
                ExitCode.UNAVAILABLE,
            ) from None
        raise
    if last is not None and is_final(last):
        return last
    # The stream ended early (e.g. the scheduler is shutting down): ask once more.
    run = client.get_run(run_id)
    if not is_final(run):
        raise CliError(
            f"error: stopped watching run {run_id} while it was {run_state_name(run.state)}; "
            f"see: datadog run status {run_id}",
            ExitCode.ERROR,
        )
    return run

"""Follow a run with ``WatchRun`` and show its progress while it runs.

On a terminal: a table redrawn in place (the run's state, then per stage its state,
attempt, rows, throughput and elapsed time), refreshed every second even between
snapshots. Otherwise (pipes, logs, CI): one plain line per state change.
"""

from __future__ import annotations

import shutil
import sys
import threading
from typing import TextIO

import grpc

from datadog_platform.api.scheduler.v1 import run_pb2
from datadog_platform.cli.api import ApiError, SchedulerClient
from datadog_platform.cli.errors import CliError, ExitCode
from datadog_platform.cli.output import (
    FINAL_STAGE_STATES,
    change_lines,
    is_final,
    progress_table,
    run_elapsed,
    run_state_name,
)

_REFRESH_SECONDS = 1.0
_UP = "\x1b[{}A"
_CLEAR_DOWN = "\r\x1b[J"


def fit(run: run_pb2.Run, height: int) -> tuple[run_pb2.Run, int]:
    """``run`` with at most the stages that fit in ``height`` lines, unfinished ones first;
    returns it and how many stages were left out."""
    room = max(height - 4, 1)  # run line, table header, "more" line, the cursor's line
    if len(run.stages) <= room + 1:
        return run, 0
    order = sorted(
        range(len(run.stages)), key=lambda i: (run.stages[i].state in FINAL_STAGE_STATES, i)
    )
    keep = sorted(order[:room])
    shown = run_pb2.Run()
    shown.CopyFrom(run)
    del shown.stages[:]
    shown.stages.extend(run.stages[i] for i in keep)
    return shown, len(run.stages) - room


def screen_lines(run: run_pb2.Run, width: int, height: int, now: float | None = None) -> list[str]:
    """The progress table for a terminal of ``width`` x ``height``: never wraps or scrolls,
    so the next redraw can move back over it."""
    shown, hidden = fit(run, height)
    lines = progress_table(shown, now)
    if hidden:
        lines.append(f"  ... and {hidden} more finished stage{'s' if hidden != 1 else ''}")
    return [line[: max(width - 1, 1)] for line in lines]


class _TerminalTable:
    """The progress table, redrawn on each snapshot and by a ticker thread in between."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._run: run_pb2.Run | None = None
        self._drawn = 0  # lines on screen from the last draw
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)

    def __enter__(self) -> _TerminalTable:
        self._ticker.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._ticker.join()
        with self._lock:
            if self._drawn:
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
        size = shutil.get_terminal_size(fallback=(100, 24))
        lines = screen_lines(self._run, size.columns, size.lines)
        # The cursor sits at the end of the last line drawn: go back to the first.
        back = _UP.format(self._drawn - 1) if self._drawn > 1 else ""
        self._out.write(back + _CLEAR_DOWN + "\n".join(lines))
        self._out.flush()
        self._drawn = len(lines)


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
            with _TerminalTable(out) as line:
                for run in client.watch_run(run_id, timeout=wait_timeout):
                    line.show(run)
                    last = run
        else:
            for run in client.watch_run(run_id, timeout=wait_timeout):
                for text in change_lines(last, run, run_elapsed(run)):
                    print(text, file=out, flush=True)
                last = run
    except ApiError as exc:
        # Only the long watch deadline is the run's fault; anything else is reported
        # like every other failed call.
        if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED and last is not None:
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

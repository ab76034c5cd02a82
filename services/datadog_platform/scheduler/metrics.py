"""The scheduler's Prometheus metrics.

Stage metrics are taken where every attempt passes, the dispatcher: a
:class:`MeteredDispatcher` wraps the real one and counts attempts by outcome,
times them, adds up the rows and bytes of succeeded ones and keeps the number in
flight; the run engine itself knows nothing of metrics. Runs by state and the
number of pipelines are store-wide gauges read from the store when scraped (at
most every ``RUNS_REFRESH_SECONDS``; the stage table is left out of scrapes, it
is the big one: ``GetMetrics`` has its full counts).

Per event the cost is one type check; per attempt a few increments of plain
numbers (:mod:`datadog_platform.core.metrics`' loop-only types) bound at import,
nothing formatted, no lock.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from datadog_platform.core.metrics import (
    CachedRefresher,
    LoopCounter,
    LoopGauge,
    LoopHistogram,
    Refresher,
)
from datadog_platform.scheduler.domain import (
    EXECUTOR_BUSY,
    Dispatcher,
    DispatchError,
    RunState,
    StageTask,
    TaskEvent,
    TaskFailed,
    TaskSucceeded,
)
from datadog_platform.scheduler.store import Store

#: Scrapes read run counts from the store at most this often (several scrapers, one query).
RUNS_REFRESH_SECONDS = 1.0

STAGE_ATTEMPTS = LoopCounter(
    "datadog_scheduler_stage_attempts_total",
    "Stage attempts dispatched, by outcome: succeeded, failed (the executor reported a "
    "failure), busy (every executor slot taken; dispatched again later), error (the "
    "executor could not be reached or the call broke), cancelled (the run engine "
    "stopped it).",
    ("outcome",),
)
STAGE_DURATION = LoopHistogram(
    "datadog_scheduler_stage_duration_seconds",
    "Duration of stage attempts that ran to an outcome, from dispatch to the final event.",
    ("outcome",),
)
STAGE_ROWS = LoopCounter(
    "datadog_scheduler_stage_rows_total",
    "Rows read and written by succeeded stage attempts.",
    ("direction",),
)
STAGE_BYTES = LoopCounter(
    "datadog_scheduler_stage_bytes_total",
    "Arrow bytes read and written by succeeded stage attempts.",
    ("direction",),
)
STAGES_IN_FLIGHT = LoopGauge(
    "datadog_scheduler_stages_in_flight",
    "Stage attempts this scheduler is dispatching right now.",
).labels()
RUNS = LoopGauge(
    "datadog_scheduler_runs",
    "Runs in the store by state (store-wide: every scheduler sharing it reports the same).",
    ("state",),
)
PIPELINES = LoopGauge("datadog_scheduler_pipelines", "Pipelines in the store.").labels()

# Children bound once: the hot path never calls .labels().
_SUCCEEDED = STAGE_ATTEMPTS.labels("succeeded")
_FAILED = STAGE_ATTEMPTS.labels("failed")
_BUSY = STAGE_ATTEMPTS.labels("busy")
_ERROR = STAGE_ATTEMPTS.labels("error")
_CANCELLED = STAGE_ATTEMPTS.labels("cancelled")
_SUCCEEDED_SECONDS = STAGE_DURATION.labels("succeeded")
_FAILED_SECONDS = STAGE_DURATION.labels("failed")
_ROWS_READ = STAGE_ROWS.labels("read")
_ROWS_WRITTEN = STAGE_ROWS.labels("written")
_BYTES_READ = STAGE_BYTES.labels("read")
_BYTES_WRITTEN = STAGE_BYTES.labels("written")
_RUN_STATES = {state.value: RUNS.labels(state.value) for state in RunState}


class MeteredDispatcher:
    """A :class:`Dispatcher` that records every attempt it passes on to ``inner``."""

    def __init__(self, inner: Dispatcher) -> None:
        self._inner = inner
        self.in_flight = 0

    async def execute(self, task: StageTask) -> AsyncIterator[TaskEvent]:
        """``inner.execute(task)``, counted."""
        started = time.perf_counter()
        outcome = _CANCELLED
        self.in_flight += 1
        STAGES_IN_FLIGHT.inc()
        try:
            # aclosing: closing this iterator (a cancelled stage) must close the call now.
            async with aclosing(self._inner.execute(task)) as events:
                async for event in events:
                    if isinstance(event, TaskSucceeded):
                        outcome = _SUCCEEDED
                        _succeeded(event, time.perf_counter() - started)
                    elif isinstance(event, TaskFailed):
                        outcome = _FAILED
                        _FAILED_SECONDS.observe(time.perf_counter() - started)
                    yield event
        except DispatchError as exc:
            outcome = _BUSY if exc.reason == EXECUTOR_BUSY else _ERROR
            raise
        finally:
            self.in_flight -= 1
            STAGES_IN_FLIGHT.dec()
            outcome.inc()


def _succeeded(event: TaskSucceeded, seconds: float) -> None:
    _SUCCEEDED_SECONDS.observe(seconds)
    metrics = event.metrics
    _ROWS_READ.inc(metrics.rows_read)
    _ROWS_WRITTEN.inc(metrics.rows_written)
    _BYTES_READ.inc(metrics.bytes_read)
    _BYTES_WRITTEN.inc(metrics.bytes_written)


def runs_refresher(store: Store) -> Refresher:
    """Sets the run and pipeline gauges from ``store`` (rate-limited), before a scrape."""

    async def refresh() -> None:
        counts = await store.metrics_counts(stages=False)
        PIPELINES.set(counts.pipelines)
        for state, child in _RUN_STATES.items():
            child.set(counts.runs.get(state, 0))

    return CachedRefresher(refresh, RUNS_REFRESH_SECONDS)

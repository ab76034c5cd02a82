"""Run manager: creates runs, drives their stages through a dispatcher, and lets
callers watch them.

Run: QUEUED → RUNNING (first dispatch) → SUCCEEDED | FAILED | CANCELLED.
Stage: PENDING → QUEUED (dispatch decided; committed with the run's state) → RUNNING
(executor started) → SUCCEEDED | FAILED | CANCELLED.

Cancelling a run this manager drives cancels its stage tasks (closing a running
attempt's event stream cancels the ExecuteTask call, which reaches the executor and
its connector streams, so no sink commits); the driver then marks the run and its
unfinished stages CANCELLED in one transaction. A run no process here drives is
marked CANCELLED in the store directly.

The manager keeps the live state of the runs it drives in memory (watchers are
notified on every change, progress included) and persists every state change; pure
progress is persisted at most every ``progress_persist_interval`` seconds per stage.
When the process stops, drivers are cancelled and leave their state as it is; the
next manager on the same database resumes those runs and dispatches their
unfinished stages again (sinks are idempotent and atomic, so at-least-once stage
execution is safe).

A failed attempt is retried per the stage's retry policy (see ``retry``): the
stage keeps the failed attempt's error and goes back to QUEUED, the driver sleeps
the backoff (CancelRun interrupts the sleep like a running attempt), then
dispatches the next attempt.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import FieldViolation, invalid_argument
from datadog_platform.core.logging import get_logger
from datadog_platform.core.page_tokens import decode_page_token, encode_page_token
from datadog_platform.scheduler.domain import (
    INVALID_PAGE_SIZE,
    INVALID_REQUEST,
    STAGE_INCOMPLETE,
    STAGE_INTERNAL_ERROR,
    Dispatcher,
    DispatchError,
    Run,
    RunState,
    StageOutput,
    StageRun,
    StageState,
    StageTask,
    TaskEvent,
    TaskFailed,
    TaskMetrics,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
    mark_cancelled,
    new_run_id,
    run_already_finished,
    utc_now,
)
from datadog_platform.scheduler.planner import plan_pipeline
from datadog_platform.scheduler.retry import RetryPolicy, backoff_delay, stage_policy
from datadog_platform.scheduler.store import IdempotencyKey, Store
from datadog_platform.scheduler.validation import check_request_id

log = get_logger(__name__)

#: ListRuns page sizes: the default (page_size 0) and the maximum.
DEFAULT_RUNS_PAGE_SIZE = 50
MAX_RUNS_PAGE_SIZE = 1000

#: How often a watcher of a run driven by another process polls the store.
_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class _Failure:
    """How a stage attempt failed (``retryable``: as the executor classified it)."""

    reason: str
    message: str
    metrics: TaskMetrics | None = None
    retryable: bool = False


@dataclass(eq=False)
class _LiveRun:
    """A run this manager drives: its live state and a change counter to wait on."""

    run: Run
    steps: dict[str, step_pb2.Step]
    #: The pipeline version's default retry policy (unset: a single attempt).
    default_retry: step_pb2.RetryPolicy | None = None
    version: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    #: Set (under ``changed``) once CancelRun asked for this run to stop.
    cancel_requested: bool = False
    #: The tasks driving its unfinished stages, to cancel them.
    stage_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: Per stage, the attempts made before a RetryRun (its retry policy counts
    #: attempts from there).
    attempt_bases: dict[str, int] = field(default_factory=dict)


class RunManager:
    """Creates, drives, resumes and watches runs."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        *,
        progress_persist_interval: float = 0.5,
        clock: Callable[[], datetime] = utc_now,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._persist_interval = progress_persist_interval
        self._clock = clock
        self._uniform = uniform  # the retry jitter's random source
        self._live: dict[str, _LiveRun] = {}
        self._drivers: set[asyncio.Task[None]] = set()

    async def start_run(self, pipeline: str, request_id: str = "") -> Run:
        """Create a run of the latest version of ``pipeline`` and start driving it.

        Returns the run as created (QUEUED, stages PENDING). A ``request_id`` seen
        before returns the run the first request created and starts nothing.
        """
        if not pipeline:
            raise invalid_argument(
                INVALID_REQUEST, "pipeline is required", [FieldViolation("pipeline", "is required")]
            )
        check_request_id(request_id)
        spec = await self._store.get_pipeline(pipeline)
        run = Run(
            run_id=new_run_id(),
            pipeline=spec.name,
            pipeline_version=spec.version,
            state=RunState.QUEUED,
            create_time=self._clock(),
            stages=[StageRun(s.stage_id, s.steps) for s in plan_pipeline(spec)],
            request_id=request_id,
        )
        key = IdempotencyKey("RunPipeline", request_id, pipeline) if request_id else None
        stored = await self._store.create_run(run, key)
        if stored.run_id == run.run_id:
            log.info("run.created", run_id=run.run_id, pipeline=pipeline, version=spec.version)
            self._launch(copy.deepcopy(run), spec)
        return stored

    async def get_run(self, run_id: str) -> Run:
        """The run's current state (live progress included)."""
        _require_run_id(run_id)
        live = self._live.get(run_id)
        if live is not None:
            async with live.changed:
                return copy.deepcopy(live.run)
        return await self._store.get_run(run_id)

    async def list_runs(
        self,
        *,
        pipeline: str = "",
        states: tuple[RunState, ...] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[Run], str]:
        """One page of runs, newest first, and the next page's token ("" at the end)."""
        if page_size < 0:
            raise invalid_argument(
                INVALID_PAGE_SIZE,
                "page_size must not be negative",
                [FieldViolation("page_size", "must not be negative")],
            )
        size = min(page_size or DEFAULT_RUNS_PAGE_SIZE, MAX_RUNS_PAGE_SIZE)
        before = decode_page_token(page_token, "ListRuns") if page_token else ""
        # One extra row tells whether another page follows without a second query.
        rows = await self._store.list_runs(
            size + 1, pipeline=pipeline, states=states, before=before
        )
        page = rows[:size]
        next_token = encode_page_token("ListRuns", page[-1].run_id) if len(rows) > size else ""
        # Runs driven here carry live progress the store only has at intervals.
        for index, run in enumerate(page):
            live = self._live.get(run.run_id)
            if live is not None:
                async with live.changed:
                    page[index] = copy.deepcopy(live.run)
        return page, next_token

    async def cancel_run(self, run_id: str, request_id: str = "") -> Run:
        """Cancel a run and return it in its final state (CANCELLED).

        FAILED_PRECONDITION (RUN_ALREADY_FINISHED) if it had already finished; a
        second cancel while one is in progress waits for it and returns the run, as
        does a retry with the ``request_id`` of a cancel that succeeded.
        """
        _require_run_id(run_id)
        check_request_id(request_id)
        key = IdempotencyKey("CancelRun", request_id, run_id) if request_id else None
        live = self._live.get(run_id)
        if live is None:
            if key is not None and await self._store.cancel_recorded(key):
                return await self.get_run(run_id)
            run = await self._store.cancel_run(run_id, self._clock(), key)
            log.info("run.cancelled", run_id=run_id, driven=False)
            return run
        async with live.changed:
            if live.run.state.is_terminal and not live.cancel_requested:
                raise run_already_finished(live.run)
            if not live.cancel_requested:
                live.cancel_requested = True
                log.info("run.cancel_requested", run_id=run_id)
                for task in list(live.stage_tasks):
                    task.cancel()
                # The driver may be between stages; wake it (and watchers) to look.
                live.version += 1
                live.changed.notify_all()
            while not live.run.state.is_terminal:
                await live.changed.wait()
            run = copy.deepcopy(live.run)
        if key is not None:
            await self._store.record_cancel(key, self._clock())
        return run

    async def retry_run(self, run_id: str, request_id: str = "") -> Run:
        """Run a finished, unsuccessful run again in place; returns it RUNNING.

        Its SUCCEEDED stages are kept (not re-run, outputs kept); the others go
        back to PENDING and are driven again, attempt numbers continuing and their
        retry policy applying afresh. NOT_FOUND for an unknown run;
        FAILED_PRECONDITION RUN_NOT_FINISHED / RUN_ALREADY_SUCCEEDED. A retry with
        the ``request_id`` of an earlier RetryRun returns what that one returned.
        """
        _require_run_id(run_id)
        check_request_id(request_id)
        key = IdempotencyKey("RetryRun", request_id, run_id) if request_id else None
        # The store has every state change of a driven run, so it decides alone.
        current = await self._store.get_run(run_id)  # NOT_FOUND for unknown runs
        spec = await self._store.get_pipeline(current.pipeline, current.pipeline_version)
        # Each stage's retry policy restarts from the attempts it has made so far.
        bases = {s.stage_id: s.attempt for s in current.stages}
        run, reset = await self._store.retry_run(run_id, self._clock(), key)
        if reset:
            log.info("run.retried", run_id=run_id, pipeline=run.pipeline)
            self._launch(copy.deepcopy(run), spec, bases)
        return run

    async def watch(self, run_id: str) -> AsyncIterator[Run]:
        """The run now, then after every change; ends after a terminal snapshot."""
        _require_run_id(run_id)
        live = self._live.get(run_id)
        if live is None:
            run = await self._store.get_run(run_id)  # NOT_FOUND for unknown runs
            yield run
            if run.state.is_terminal:
                return
            live = self._live.get(run_id)
            if live is None:
                async for polled in self._poll(run):
                    yield polled
                return
        seen = -1
        while True:
            async with live.changed:
                while live.version == seen:
                    await live.changed.wait()
                seen = live.version
                snapshot = copy.deepcopy(live.run)
            yield snapshot
            if snapshot.state.is_terminal:
                return

    async def _poll(self, last: Run) -> AsyncIterator[Run]:
        # Only for runs no manager of this process drives (e.g. another process's).
        while not last.state.is_terminal:
            await asyncio.sleep(_POLL_SECONDS)
            current = await self.get_run(last.run_id)
            if current != last:
                yield current
                last = current

    async def resume(self) -> int:
        """Drive again the runs a previous process left QUEUED or RUNNING; returns how many."""
        runs = [r for r in await self._store.unfinished_runs() if r.run_id not in self._live]
        for run in runs:
            spec = await self._store.get_pipeline(run.pipeline, run.pipeline_version)
            log.info("run.resumed", run_id=run.run_id, pipeline=run.pipeline)
            self._launch(run, spec)
        return len(runs)

    async def close(self) -> None:
        """Stop driving runs; their state stays as persisted, for :meth:`resume`."""
        drivers = list(self._drivers)
        for driver in drivers:
            driver.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Wait until every run being driven has finished (for tests and shutdown)."""
        while self._drivers:
            await asyncio.gather(*list(self._drivers), return_exceptions=True)

    # --- driving ----------------------------------------------------------------------

    def _launch(
        self, run: Run, spec: pipeline_pb2.Pipeline, attempt_bases: dict[str, int] | None = None
    ) -> None:
        default_retry = spec.default_retry if spec.HasField("default_retry") else None
        live = _LiveRun(run, {s.name: s for s in spec.steps}, default_retry)
        live.attempt_bases = dict(attempt_bases or {})
        self._live[run.run_id] = live
        driver = asyncio.create_task(self._drive(live), name=f"run-{run.run_id}")
        self._drivers.add(driver)
        driver.add_done_callback(self._drivers.discard)

    async def _drive(self, live: _LiveRun) -> None:
        run = live.run
        try:
            # Stages are independent (no fan-in/out yet), so all start at once; a
            # TaskGroup cancels the others if one breaks unexpectedly.
            # A stage task cancelled by CancelRun ends "cancelled", which the
            # TaskGroup ignores; _finish then records the run as CANCELLED.
            async with asyncio.TaskGroup() as group:
                for stage in run.stages:
                    if not stage.state.is_terminal and not live.cancel_requested:
                        task = group.create_task(self._drive_stage(live, stage))
                        live.stage_tasks.add(task)
                        task.add_done_callback(live.stage_tasks.discard)
            await self._finish(live)
        except asyncio.CancelledError:
            log.info("run.interrupted", run_id=run.run_id)
            raise
        except Exception:
            log.exception("run.driver_failed", run_id=run.run_id)
            await self._abandon(live)
        finally:
            # A RetryRun may already have put a new driver of this run in its place.
            if self._live.get(run.run_id) is live:
                del self._live[run.run_id]

    async def _abandon(self, live: _LiveRun) -> None:
        """Fail a run whose driver broke (e.g. the store failed), so watchers end."""

        def fail() -> None:
            live.run.state = RunState.FAILED
            live.run.error_message = "internal error in the scheduler; see its log"
            live.run.end_time = self._clock()

        try:
            await self._change(live, None, fail)
        except Exception:
            log.exception("run.abandon_failed", run_id=live.run.run_id)
            async with live.changed:  # not persisted: the run resumes on the next start
                live.version += 1
                live.changed.notify_all()

    async def _drive_stage(self, live: _LiveRun, stage: StageRun) -> None:
        run = live.run
        policy = stage_policy(stage.steps, live.steps, live.default_retry)
        base = live.attempt_bases.get(stage.stage_id, 0)

        def queue() -> None:
            now = self._clock()
            stage.state = StageState.QUEUED
            stage.attempt += 1
            stage.start_time = stage.end_time = None
            stage.metrics = TaskMetrics()
            stage.outputs = ()
            stage.error_reason = stage.error_message = ""
            if run.state is RunState.QUEUED:
                run.state = RunState.RUNNING
                run.start_time = now

        while True:
            # The dispatch decision commits with the run's state, before the dispatch.
            await self._change(live, stage, queue)
            failure = await self._attempt(live, stage)
            if failure is None:
                return
            attempt = stage.attempt - base
            if not policy.should_retry(attempt, failure.reason, failure.retryable):
                await self._fail(live, stage, failure.reason, failure.message, failure.metrics)
                return
            await self._schedule_retry(live, stage, policy, failure, attempt)

    async def _attempt(self, live: _LiveRun, stage: StageRun) -> _Failure | None:
        """Run the stage's current attempt; its failure, or None once it succeeded."""
        run = live.run
        task = StageTask(
            run_id=run.run_id,
            stage_id=stage.stage_id,
            attempt=stage.attempt,
            steps=tuple(live.steps[name] for name in stage.steps),
        )
        log.info(
            "stage.dispatched", run_id=run.run_id, stage_id=stage.stage_id, attempt=task.attempt
        )
        try:
            return await self._follow(live, stage, task)
        except DispatchError as exc:
            return _Failure(exc.reason, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stage.internal_error", run_id=run.run_id, stage_id=stage.stage_id)
            return _Failure(
                STAGE_INTERNAL_ERROR,
                "internal error in the scheduler while running the stage; see its log",
            )

    async def _schedule_retry(
        self,
        live: _LiveRun,
        stage: StageRun,
        policy: RetryPolicy,
        failure: _Failure,
        attempt: int,
    ) -> None:
        """Record the failed attempt, back to QUEUED, and sleep the backoff."""

        def requeue() -> None:
            stage.state = StageState.QUEUED
            stage.error_reason = failure.reason or "UNKNOWN"
            stage.error_message = failure.message or "the stage failed without a message"
            stage.end_time = self._clock()
            if failure.metrics is not None:
                stage.metrics = failure.metrics

        await self._change(live, stage, requeue)
        delay = backoff_delay(policy, attempt, self._uniform)
        log.warning(
            "stage.retry_scheduled",
            run_id=live.run.run_id,
            stage_id=stage.stage_id,
            attempt=stage.attempt,
            next_attempt=stage.attempt + 1,
            delay=round(delay, 3),
            reason=stage.error_reason,
            error=stage.error_message,
        )
        # CancelRun cancels this task, which interrupts the sleep at once.
        await asyncio.sleep(delay)

    async def _follow(self, live: _LiveRun, stage: StageRun, task: StageTask) -> _Failure | None:
        """Apply the attempt's events to the stage; None once it succeeded, else why not."""
        events: AsyncIterator[TaskEvent] = self._dispatcher.execute(task)
        last_saved = time.monotonic()
        try:
            async for event in events:
                match event:
                    case TaskStarted():
                        await self._change(live, stage, lambda: self._mark_running(stage))
                        last_saved = time.monotonic()
                    case TaskProgress(metrics=metrics):
                        persist = time.monotonic() - last_saved >= self._persist_interval
                        await self._change(
                            live, stage, lambda m=metrics: self._progress(stage, m), persist
                        )
                        if persist:
                            last_saved = time.monotonic()
                    case TaskSucceeded(metrics=metrics, outputs=outputs):

                        def succeed(
                            m: TaskMetrics = metrics, o: tuple[StageOutput, ...] = outputs
                        ) -> None:
                            self._mark_running(stage)
                            stage.state = StageState.SUCCEEDED
                            stage.metrics, stage.outputs = m, tuple(o)
                            stage.end_time = self._clock()

                        await self._change(live, stage, succeed)
                        log.info("stage.succeeded", run_id=task.run_id, stage_id=stage.stage_id)
                        return None
                    case TaskFailed(
                        reason=reason, message=message, metrics=metrics, retryable=retryable
                    ):
                        return _Failure(reason, message, metrics, retryable)
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()  # cancels the attempt if we stopped reading early
        return _Failure(
            STAGE_INCOMPLETE, "the executor ended the task without reporting success or failure"
        )

    def _mark_running(self, stage: StageRun) -> None:
        if stage.state is StageState.QUEUED:
            stage.state = StageState.RUNNING
            stage.start_time = self._clock()

    def _progress(self, stage: StageRun, metrics: TaskMetrics) -> None:
        self._mark_running(stage)
        stage.metrics = metrics

    async def _fail(
        self,
        live: _LiveRun,
        stage: StageRun,
        reason: str,
        message: str,
        metrics: TaskMetrics | None = None,
    ) -> None:
        def fail() -> None:
            stage.state = StageState.FAILED
            stage.error_reason = reason or "UNKNOWN"
            stage.error_message = message or "the stage failed without a message"
            stage.end_time = self._clock()
            if metrics is not None:
                stage.metrics = metrics

        await self._change(live, stage, fail)
        log.warning(
            "stage.failed",
            run_id=live.run.run_id,
            stage_id=stage.stage_id,
            reason=stage.error_reason,
            error=stage.error_message,
        )

    async def _finish(self, live: _LiveRun) -> None:
        run = live.run
        if live.cancel_requested:
            await self._finish_cancelled(live)
            return

        def finish() -> None:
            failed = [s for s in run.stages if s.state is not StageState.SUCCEEDED]
            if failed:
                run.state = RunState.FAILED
                run.error_message = "; ".join(
                    f'stage "{s.stage_id}" failed: {s.error_message}' for s in failed
                )
            else:
                run.state = RunState.SUCCEEDED
            run.end_time = self._clock()

        await self._change(live, None, finish)
        log.info("run.finished", run_id=run.run_id, state=run.state.value)

    async def _finish_cancelled(self, live: _LiveRun) -> None:
        run = live.run
        async with live.changed:
            # The run and every stage it cancels commit in one transaction.
            changed = mark_cancelled(run, self._clock())
            await self._store.update_run(run, changed)
            live.version += 1
            live.changed.notify_all()
        log.info("run.cancelled", run_id=run.run_id, stages=len(changed), driven=True)

    async def _change(
        self,
        live: _LiveRun,
        stage: StageRun | None,
        change: Callable[[], None],
        persist: bool = True,
    ) -> None:
        """Apply ``change`` to the live run, persist it, then wake the watchers.

        All of it happens under the run's lock, which watchers also take to copy the
        run: so they never see a state change that is not yet in the store (only
        unpersisted progress counters).
        """
        async with live.changed:
            change()
            if persist:
                await self._store.update_run(live.run, [stage] if stage else [])
            live.version += 1
            live.changed.notify_all()


def _require_run_id(run_id: str) -> None:
    if not run_id:
        raise invalid_argument(
            INVALID_REQUEST, "run_id is required", [FieldViolation("run_id", "is required")]
        )

"""Run engine: creates runs, drives their stage DAGs through a dispatcher, and lets
callers watch, cancel and retry them.

Run: QUEUED → RUNNING (admitted under the pipeline's ``max_active_runs``) →
SUCCEEDED | FAILED | CANCELLED. Stages follow :mod:`dag`: a stage is QUEUED once
every upstream stage SUCCEEDED, waits for a dispatch slot (the global
``max_parallel_stages`` and the pipeline's ``max_active_tasks``), runs, and either
succeeds (its downstream stages may become QUEUED), is retried per its policy
(:mod:`retry`; the backoff deadline persisted as ``next_attempt_time``), or fails for
good, which makes its downstream stages UPSTREAM_FAILED.

How it is driven:

- Each run has a driver task (admission, run timeout, cancellation, the final
  state) and one task per QUEUED/RUNNING stage (slot, attempts, backoffs). Nothing
  polls: tasks sleep on events, futures and timers.
- Every state change is made in memory, then queued to the :class:`StateWriter`,
  which writes all queued changes of all runs in one transaction (group commit). A
  stage is dispatched only after the change that QUEUED its attempt committed.
  Changes nobody waits for (a stage started, progress) linger a few milliseconds to
  share a transaction with what follows; progress alone is written at most every
  ``progress_persist_interval`` per stage.
- Callers see the committed state: each driven run keeps a view (copies made by the
  writer of what it wrote) plus live progress counters (:mod:`live_runs`); watchers
  wake on a version counter after each commit.
- Dispatch slots (:mod:`slots`) bound the stages in flight: globally
  (``max_parallel_stages``) and per pipeline over all its runs (``max_active_tasks``).
- Runs are leased (:mod:`leases`): this manager drives only runs it holds, renews
  their leases, claims abandoned runs, and stops driving a run at once (writing
  nothing more) when its lease is lost. A restarted or adopting scheduler dispatches
  the unfinished stages again as new attempts (sinks are idempotent and atomic, so
  at-least-once stage execution is safe).

Cancelling a run driven here cancels its stage tasks (closing a running attempt's
event stream cancels the ExecuteTask call, which reaches the executor and its
connector streams, so no sink commits), then marks the run and its unfinished stages
CANCELLED in one transaction. A run driven by another scheduler gets a cancellation
request (``Store.request_cancel``) that its driver sees at its next lease renewal;
a run nobody drives is cancelled in the store (at once on a single-scheduler store;
otherwise when nobody answered within a lease, unless this scheduler adopted it
meanwhile and cancelled it itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import FieldViolation, invalid_argument
from datadog_platform.core.logging import get_logger
from datadog_platform.core.page_tokens import (
    INVALID_PAGE_TOKEN,
    decode_page_token,
    encode_page_token,
)
from datadog_platform.scheduler import dag
from datadog_platform.scheduler.domain import (
    CANCELLED_MESSAGE,
    EXECUTOR_BUSY,
    INVALID_PAGE_SIZE,
    INVALID_REQUEST,
    RUN_TIMEOUT,
    STAGE_INCOMPLETE,
    STAGE_INTERNAL_ERROR,
    STAGE_TIMEOUT,
    TEMPLATE_ERROR,
    CheckResult,
    Dispatcher,
    DispatchError,
    JsonValue,
    LogLevel,
    LogLine,
    Run,
    RunChange,
    RunState,
    RunTrigger,
    StageLogLine,
    StageOutput,
    StageRun,
    StageState,
    StageTask,
    TaskEvent,
    TaskFailed,
    TaskLog,
    TaskMetrics,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
    new_run_id,
    run_already_finished,
    utc_now,
)
from datadog_platform.scheduler.leases import LeaseKeeper
from datadog_platform.scheduler.live_runs import LiveRun, PipelineInfo, clone_run, run_fields
from datadog_platform.scheduler.platform_counts import PlatformCounts
from datadog_platform.scheduler.retry import RetryPolicy, backoff_delay
from datadog_platform.scheduler.slots import Slots
from datadog_platform.scheduler.stage_steps import build_stage_steps
from datadog_platform.scheduler.state_writer import StateWriter
from datadog_platform.scheduler.store import IdempotencyKey, Store
from datadog_platform.scheduler.templating import TemplateError, resolve_params
from datadog_platform.scheduler.validation import check_request_id

log = get_logger(__name__)

#: ListRuns page sizes: the default (page_size 0) and the maximum.
DEFAULT_RUNS_PAGE_SIZE = 50
MAX_RUNS_PAGE_SIZE = 1000
#: ListStageLogs page sizes: the default (page_size 0) and the maximum.
DEFAULT_LOGS_PAGE_SIZE = 1000
MAX_LOGS_PAGE_SIZE = 10000

#: How often a watcher of a run driven by another scheduler polls the store.
WATCH_POLL_SECONDS = 0.5
#: Least time between two snapshots of a watched run, per stage of the run, and
#: at most (a 1,000-stage run: at most 20 snapshots a second).
WATCH_SPACING_PER_STAGE = 50e-6
WATCH_MAX_SPACING = 0.25
#: How often CancelRun polls the store for a run another scheduler drives.
CANCEL_POLL_SECONDS = 0.2
#: How long past a lease CancelRun waits for another scheduler before it cancels
#: the run in the store itself.
CANCEL_MARGIN_SECONDS = 2.0
#: How often a run waiting for admission (max_active_runs) asks the store again,
#: for runs of its pipeline that finished on other schedulers.
ADMISSION_POLL_SECONDS = 1.0
#: Back-off of a dispatch an executor refused as busy: first bound, cap (seconds).
BUSY_BACKOFF_INITIAL = 0.02
BUSY_BACKOFF_MAX = 2.0
#: Pipeline versions whose plan and policies are kept in memory.
_INFO_CACHE_SIZE = 256

_INTERNAL_MESSAGE = "internal error in the scheduler; see its log"


@dataclass(frozen=True)
class _Success:
    metrics: TaskMetrics
    outputs: tuple[StageOutput, ...]
    watermarks: Mapping[str, str]
    checks: tuple[CheckResult, ...] = ()


@dataclass(frozen=True)
class _Failure:
    """How an attempt failed (``retryable``: as the executor classified it; ``final``:
    never retried, whatever the policy)."""

    reason: str
    message: str
    metrics: TaskMetrics | None = None
    retryable: bool = False
    final: bool = False
    #: Data-quality check results the executor reported before failing.
    checks: tuple[CheckResult, ...] = ()


class RunManager:
    """Creates, drives, adopts, watches, cancels and retries runs."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        *,
        instance_id: str = "",
        lease_seconds: float = 10.0,
        max_parallel_stages: int = 64,
        progress_persist_interval: float = 0.5,
        clock: Callable[[], datetime] = utc_now,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self.instance_id = instance_id or f"scheduler-{secrets.token_hex(6)}"
        self._lease_seconds = lease_seconds
        self._persist_interval = progress_persist_interval
        self._clock = clock
        self._uniform = uniform  # jitter of retry and busy back-offs
        self._slots = Slots(max_parallel_stages)
        self._live: dict[str, LiveRun] = {}
        self._drivers: set[asyncio.Task[None]] = set()
        self._infos: dict[tuple[str, int, int, int], PipelineInfo] = {}
        self._writer = StateWriter(store, on_committed=self._committed, on_lost=self._lose)
        self._leases = LeaseKeeper(
            store,
            owner=self.instance_id,
            lease_seconds=lease_seconds,
            clock=clock,
            held=self._held,
            on_lost=self._lose,
            on_cancel_requested=self._cancel_requested,
            adopt=self._adopt,
        )

    @property
    def writer(self) -> StateWriter:
        """The group-commit writer (its counters show how changes were batched)."""
        return self._writer

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> int:
        """Claim the runs to drive (every unfinished run on a single-scheduler store;
        on a shared store those nobody holds), drive them, and start the lease loop.
        Returns how many runs were adopted."""
        self._writer.start()
        adopted = await self._leases.claim(ignore_leases=self._store.single_scheduler)
        if self._store.single_scheduler:
            # Runs a previous process with this same instance id left (lease expired).
            adopted += await self._leases.claim()
        if adopted:
            log.info("runs.adopted", count=adopted, instance_id=self.instance_id)
        self._leases.start()
        return adopted

    async def close(self, *, release: bool = True) -> None:
        """Stop driving runs (their state stays as written) and release their leases,
        so the next scheduler or a peer resumes them at once (``release=False``
        leaves the leases to expire, as a crash would)."""
        await self._leases.close()
        drivers = []
        for live in list(self._live.values()):
            live.stopping = True
            if live.driver is not None:
                live.driver.cancel()
                drivers.append(live.driver)
        await asyncio.gather(*drivers, return_exceptions=True)
        await self._writer.close()
        if not release:
            return
        try:
            await self._store.release_runs(self.instance_id)
        except Exception:
            log.exception("runs.release_failed", instance_id=self.instance_id)

    async def wait_idle(self) -> None:
        """Wait until every run being driven here has finished (tests, shutdown)."""
        while self._drivers:
            await asyncio.gather(*list(self._drivers), return_exceptions=True)

    async def platform_counts(self) -> PlatformCounts:
        """Store-wide counts (pipelines, runs and stages by state, data written) and the
        stages this scheduler is dispatching now (those holding a dispatch slot)."""
        counts = await self._store.metrics_counts()
        return dataclasses.replace(counts, stages_in_flight=self._slots.in_use)

    # --- creating runs -------------------------------------------------------------------

    async def start_run(
        self, pipeline: str, request_id: str = "", params: Mapping[str, JsonValue] | None = None
    ) -> Run:
        """Create a manual run of the latest version of ``pipeline`` and drive it.

        ``params`` override the pipeline's defaults (INVALID_ARGUMENT UNKNOWN_PARAM for
        a name it does not declare). Returns the run as created (QUEUED, stages
        PENDING). A ``request_id`` seen before returns the run the first request
        created and starts nothing.
        """
        if not pipeline:
            raise invalid_argument(
                INVALID_REQUEST, "pipeline is required", [FieldViolation("pipeline", "is required")]
            )
        check_request_id(request_id)
        spec = await self._store.get_pipeline(pipeline)
        overrides = dict(params or {})
        resolved = resolve_params(spec, overrides)
        info = self._info_of(spec)
        now = self._clock()
        run = self._new_run(
            spec,
            info,
            run_id=new_run_id(),
            trigger=RunTrigger.MANUAL,
            logical_date=now,
            interval_end=now,
            params=resolved,
            now=now,
            request_id=request_id,
        )
        fingerprint = pipeline
        if overrides:
            fingerprint += "\0" + json.dumps(overrides, sort_keys=True, separators=(",", ":"))
        key = IdempotencyKey("RunPipeline", request_id, fingerprint) if request_id else None
        stored, created = await self._store.create_run(
            run, key, owner=self.instance_id, lease_until=self._leases.lease_until()
        )
        if created:
            log.info("run.created", run_id=run.run_id, pipeline=pipeline, version=spec.version)
            self._launch(clone_run(stored), info)
        return stored

    async def create_run(
        self,
        spec: pipeline_pb2.Pipeline,
        *,
        run_id: str,
        trigger: RunTrigger,
        logical_date: datetime,
        interval_end: datetime,
        params: Mapping[str, JsonValue] | None = None,
        backfill_id: str = "",
    ) -> tuple[Run, bool]:
        """Create the run ``run_id`` of ``spec`` (a stored version) for the data
        interval [logical_date, interval_end) unless it exists; drive it if created.

        For the schedule ticker and backfills: ``run_id`` is deterministic, so two
        schedulers creating the same run collapse into one. ``params`` are overrides
        of the pipeline's defaults (resolved params pass through unchanged).
        Returns the stored run and whether this call created it.
        """
        info = self._info_of(spec)
        run = self._new_run(
            spec,
            info,
            run_id=run_id,
            trigger=trigger,
            logical_date=logical_date,
            interval_end=interval_end,
            params=resolve_params(spec, dict(params or {})),
            now=self._clock(),
            backfill_id=backfill_id,
        )
        stored, created = await self._store.create_run(
            run, owner=self.instance_id, lease_until=self._leases.lease_until()
        )
        if created:
            log.info("run.created", run_id=run_id, pipeline=spec.name, trigger=trigger.value)
            self._launch(clone_run(stored), info)
        return stored, created

    def _new_run(
        self,
        spec: pipeline_pb2.Pipeline,
        info: PipelineInfo,
        *,
        run_id: str,
        trigger: RunTrigger,
        logical_date: datetime,
        interval_end: datetime,
        params: dict[str, JsonValue],
        now: datetime,
        request_id: str = "",
        backfill_id: str = "",
    ) -> Run:
        return Run(
            run_id=run_id,
            pipeline=spec.name,
            pipeline_version=spec.version,
            state=RunState.QUEUED,
            create_time=now,
            stages=[StageRun(p.stage_id, p.steps, upstream=p.upstream) for p in info.plan.values()],
            request_id=request_id,
            params=params,
            trigger=trigger,
            logical_date=logical_date,
            data_interval_start=logical_date,
            data_interval_end=interval_end,
            backfill_id=backfill_id,
        )

    # --- reading runs --------------------------------------------------------------------

    async def get_run(self, run_id: str) -> Run:
        """The run's current state (committed, plus live progress if driven here)."""
        _require_run_id(run_id)
        live = self._live.get(run_id)
        if live is not None:
            return live.snapshot()
        return await self._store.get_run(run_id)

    async def list_runs(
        self,
        *,
        pipeline: str = "",
        states: tuple[RunState, ...] = (),
        page_size: int = 0,
        page_token: str = "",
        backfill_id: str = "",
    ) -> tuple[list[Run], str]:
        """One page of runs, newest first, and the next page's token ("" at the end)."""
        size = _page_size(page_size, DEFAULT_RUNS_PAGE_SIZE, MAX_RUNS_PAGE_SIZE)
        before = decode_page_token(page_token, "ListRuns") if page_token else ""
        # One extra row tells whether another page follows without a second query.
        rows = await self._store.list_runs(
            size + 1, pipeline=pipeline, states=states, before=before, backfill_id=backfill_id
        )
        page = rows[:size]
        next_token = encode_page_token("ListRuns", page[-1].run_id) if len(rows) > size else ""
        # Runs driven here carry live progress the store only has at intervals.
        for index, run in enumerate(page):
            live = self._live.get(run.run_id)
            if live is not None:
                page[index] = live.snapshot()
        return page, next_token

    async def watch(self, run_id: str) -> AsyncIterator[Run]:
        """The run now, then after every change; ends after a terminal snapshot.

        A run driven here is followed change by change (commits and live progress,
        coalesced when the watcher is slower than the run); one driven elsewhere is
        polled from the store.
        """
        _require_run_id(run_id)
        last: Run | None = None
        while True:
            live = self._live.get(run_id)
            if live is not None and not live.closed.is_set():
                # A snapshot costs the run's size (here and to send it): those of a
                # large run are taken at most every ``spacing`` seconds, changes
                # meanwhile coalesced, so that watching never starves the run.
                spacing = min(WATCH_MAX_SPACING, len(live.stages) * WATCH_SPACING_PER_STAGE)
                seen = -1
                taken = -spacing
                while True:
                    while live.version == seen and not live.closed.is_set():
                        await live.changed.wait()
                    if live.version == seen:
                        break  # no longer driven here: follow the store
                    wait = taken + spacing - time.monotonic()
                    if wait > 0 and not live.view_run.state.is_terminal:
                        await asyncio.sleep(wait)
                    seen = live.version
                    taken = time.monotonic()
                    snapshot = live.snapshot()
                    if snapshot != last:
                        yield snapshot
                        last = snapshot
                    if snapshot.state.is_terminal:
                        return
                continue
            current = await self._store.get_run(run_id)  # NOT_FOUND for unknown runs
            if current != last:
                yield current
                last = current
            if current.state.is_terminal:
                return
            await asyncio.sleep(WATCH_POLL_SECONDS)

    async def stage_logs(
        self,
        run_id: str,
        stage_id: str,
        attempt: int = 0,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[int, list[LogLine], str]:
        """One page of the log lines of a stage attempt (0: the latest), oldest first.

        Returns the attempt, its lines and the next page's token: "" on the last page
        (a running attempt may add lines later: asking again with the token of that
        last request returns its lines again, then the new ones). NOT_FOUND for an
        unknown run or stage.
        """
        _require_run_id(run_id)
        if not stage_id:
            raise invalid_argument(
                INVALID_REQUEST, "stage_id is required", [FieldViolation("stage_id", "is required")]
            )
        if attempt < 0:
            raise invalid_argument(
                INVALID_REQUEST,
                "attempt must not be negative",
                [FieldViolation("attempt", "must not be negative")],
            )
        size = _page_size(page_size, DEFAULT_LOGS_PAGE_SIZE, MAX_LOGS_PAGE_SIZE)
        after = 0
        if page_token:
            token_attempt, after = _decode_log_position(page_token, run_id, stage_id)
            if attempt and attempt != token_attempt:
                raise _bad_log_token()
            attempt = token_attempt
        latest = await self._store.latest_attempt(run_id, stage_id)  # NOT_FOUND
        attempt = attempt or latest
        if attempt == 0:
            return 0, [], ""
        lines = await self._store.stage_logs(run_id, stage_id, attempt, after, size)
        next_token = ""
        if len(lines) == size:
            position = f"{attempt}/{lines[-1].seq}/{run_id}/{stage_id}"
            next_token = encode_page_token("ListStageLogs", position)
        return attempt, [line.line for line in lines], next_token

    # --- cancelling and retrying ---------------------------------------------------------

    async def cancel_run(self, run_id: str, request_id: str = "") -> Run:
        """Cancel a run and return it in its final state (CANCELLED).

        FAILED_PRECONDITION (RUN_ALREADY_FINISHED) if it had already finished; a
        second cancel while one is in progress waits for it and returns the run, as
        does a retry with the ``request_id`` of a cancel that succeeded. A run driven
        by another scheduler is cancelled by it (asked through the store); one nobody
        drives is cancelled in the store.
        """
        _require_run_id(run_id)
        check_request_id(request_id)
        key = IdempotencyKey("CancelRun", request_id, run_id) if request_id else None
        live = self._live.get(run_id)
        if live is not None and not live.closed.is_set():
            if live.view_run.state.is_terminal and not live.cancel_requested:
                raise run_already_finished(live.view_run)
            self._request_cancel(live)
            run = await self._wait_finished(live)
            if run is not None:
                return await self._cancelled(run, key)
            # Lost or closing meanwhile: whoever drives it next sees the request.
        if key is not None and await self._store.cancel_recorded(key):
            return await self.get_run(run_id)
        run = await self._store.get_run(run_id)  # NOT_FOUND for unknown runs
        if run.state.is_terminal:
            raise run_already_finished(run)
        if self._store.single_scheduler:
            # Nobody else can be driving it.
            run = await self._store.cancel_run(run_id, self._clock(), key)
            log.info("run.cancelled", run_id=run_id, driven=False)
            return run
        await self._store.request_cancel(run_id)
        log.info("run.cancel_requested", run_id=run_id, driven=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._lease_seconds + CANCEL_MARGIN_SECONDS
        while loop.time() < deadline:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            live = self._live.get(run_id)
            if live is not None and not live.closed.is_set():
                # Adopted here meanwhile (its lease had expired): cancel it ourselves.
                self._request_cancel(live)
                finished = await self._wait_finished(live)
                if finished is not None:
                    return await self._cancelled(finished, key)
                continue
            run = await self._store.get_run(run_id)
            if run.state.is_terminal:
                return await self._cancelled(run, key)
        # Nobody drove it within a lease: its holder is gone.
        run = await self._store.cancel_run(run_id, self._clock(), key)
        log.info("run.cancelled", run_id=run_id, driven=False)
        return run

    async def _cancelled(self, run: Run, key: IdempotencyKey | None) -> Run:
        if key is not None:
            await self._store.record_cancel(key, self._clock())
        return run

    async def _wait_finished(self, live: LiveRun) -> Run | None:
        """The run's snapshot once terminal, or None if no longer driven here first."""
        while True:
            changed = live.changed
            if live.view_run.state.is_terminal:
                return live.snapshot()
            if live.closed.is_set():
                return None
            await changed.wait()

    async def retry_run(self, run_id: str, request_id: str = "") -> Run:
        """Run a finished, unsuccessful run again in place; returns it RUNNING.

        Its SUCCEEDED stages are kept (not re-run, outputs kept); the others go back
        to PENDING and are driven again, attempt numbers continuing and their retry
        policy applying afresh; the run timeout counts from the retry. NOT_FOUND for an
        unknown run; FAILED_PRECONDITION RUN_NOT_FINISHED / RUN_ALREADY_SUCCEEDED. A
        retry with the ``request_id`` of an earlier RetryRun returns what that one
        returned.
        """
        _require_run_id(run_id)
        check_request_id(request_id)
        key = IdempotencyKey("RetryRun", request_id, run_id) if request_id else None
        live = self._live.get(run_id)
        if live is not None and live.view_run.state.is_terminal and live.driver is not None:
            # Its driver is winding down; let it go before a new one starts.
            await asyncio.wait({live.driver})
        run, reset = await self._store.retry_run(
            run_id,
            self._clock(),
            key,
            owner=self.instance_id,
            lease_until=self._leases.lease_until(),
        )
        if reset:
            log.info("run.retried", run_id=run_id, pipeline=run.pipeline)
            info = await self._info(run.pipeline, run.pipeline_version)
            self._launch(clone_run(run), info, restarted=True)
        return run

    # --- leases --------------------------------------------------------------------------

    def _held(self) -> dict[str, int]:
        return {
            run_id: live.run.generation
            for run_id, live in self._live.items()
            if not live.lost and not live.closed.is_set()
        }

    def _lose(self, run_ids: set[str]) -> None:
        """Stop driving ``run_ids`` at once and write nothing more of them."""
        for run_id in run_ids:
            live = self._live.get(run_id)
            if live is None or live.lost:
                continue
            log.warning("run.lease_lost", run_id=run_id, instance_id=self.instance_id)
            live.lost = live.stopping = True
            self._writer.forget(run_id)
            for task in live.stage_tasks.values():
                task.cancel()
            if live.driver is not None:
                live.driver.cancel()

    def _cancel_requested(self, run_ids: set[str]) -> None:
        for run_id in run_ids:
            live = self._live.get(run_id)
            if live is not None and not live.lost:
                log.info("run.cancel_requested", run_id=run_id, by="store")
                self._request_cancel(live)

    async def _adopt(self, run: Run, cancel_requested: bool) -> None:
        stale = self._live.get(run.run_id)
        if stale is not None:
            # We thought we held it, but the store gave it out again: ours is stale.
            self._lose({run.run_id})
            if stale.driver is not None:
                await asyncio.wait({stale.driver})
        info = await self._info(run.pipeline, run.pipeline_version)
        live = self._launch(run, info)
        if cancel_requested:
            self._request_cancel(live)

    # --- driving a run -------------------------------------------------------------------

    def _info_of(self, spec: pipeline_pb2.Pipeline) -> PipelineInfo:
        # The version's creation time too: a pipeline deleted and created again
        # starts over at version 1.
        created = spec.update_time
        key = (spec.name, spec.version, created.seconds, created.nanos)
        info = self._infos.get(key)
        if info is None:
            info = PipelineInfo(spec)
            if len(self._infos) >= _INFO_CACHE_SIZE:
                del self._infos[next(iter(self._infos))]
            self._infos[key] = info
        return info

    async def _info(self, pipeline: str, version: int) -> PipelineInfo:
        return self._info_of(await self._store.get_pipeline(pipeline, version))

    def _launch(self, run: Run, info: PipelineInfo, *, restarted: bool = False) -> LiveRun:
        self._writer.start()
        live = LiveRun.of(run, info, restarted=restarted)
        self._live[run.run_id] = live
        driver = asyncio.create_task(self._drive(live), name=f"run-{run.run_id}")
        live.driver = driver
        self._drivers.add(driver)
        driver.add_done_callback(self._drivers.discard)
        return live

    async def _drive(self, live: LiveRun) -> None:
        run = live.run
        try:
            if run.state is RunState.QUEUED:
                await self._admit(live)
            if not live.cancel_requested:
                await self._begin(live)
            ending = await self._wait_for_end(live)
            if ending == "cancel":
                await self._finish_cancelled(live)
            elif ending == "timeout":
                await self._finish_timed_out(live)
            elif ending == "broken":
                await self._abandon(live)
            else:
                await self._finish(live)
        except asyncio.CancelledError:
            if not live.lost:
                log.info("run.interrupted", run_id=run.run_id)
            raise
        except Exception:
            log.exception("run.driver_failed", run_id=run.run_id)
            await self._abandon(live)
        finally:
            await self._stop_stages(live)
            if self._live.get(run.run_id) is live:
                del self._live[run.run_id]
            live.closed.set()
            live.notify()
            self._admission_chance(run.pipeline)

    async def _admit(self, live: LiveRun) -> None:
        """Wait until the run may start under its pipeline's max_active_runs."""
        run = live.run
        limit = live.info.max_active_runs
        if limit <= 0:
            return  # RUNNING is written with its first stages (see _begin)
        while not live.cancel_requested:
            now = self._clock()
            try:
                admitted = await self._store.try_start_run(run.run_id, run.generation, limit, now)
            except Exception:
                # A store hiccup: the run just waits for the next chance.
                log.exception("run.admission_failed", run_id=run.run_id)
                admitted = False
            if admitted:
                run.state = RunState.RUNNING
                run.start_time = now
                live.view_run = run_fields(run)  # the store wrote it
                live.notify()
                log.info("run.admitted", run_id=run.run_id)
                return
            live.wake.clear()
            # A run of the pipeline finishing here wakes us; others are polled.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(live.wake.wait(), ADMISSION_POLL_SECONDS)

    def _admission_chance(self, pipeline: str) -> None:
        for other in self._live.values():
            if other.run.pipeline == pipeline and other.run.state is RunState.QUEUED:
                other.wake.set()

    async def _begin(self, live: LiveRun) -> None:
        """Queue the ready stages (and resumed attempts), commit, dispatch."""
        run = live.run
        now = self._clock()
        if run.state is RunState.QUEUED or live.restarted:
            run.state = RunState.RUNNING
            run.start_time = now
        queued: list[StageRun] = []
        delayed: list[StageRun] = []
        for stage in run.stages:
            if stage.state is StageState.QUEUED and stage.next_attempt_time is not None:
                delayed.append(stage)  # a retry whose backoff survives the restart
            elif stage.state in (StageState.QUEUED, StageState.RUNNING):
                # Maybe dispatched before the restart: a new attempt, at least once.
                dag.queue_attempt(stage, now)
                queued.append(stage)
        for stage_id in live.graph.initially_ready():
            stage = live.stages[stage_id]
            dag.queue_attempt(stage, now)
            queued.append(stage)
        blocked = []
        for stage_id, failed in live.graph.initially_blocked().items():
            stage = live.stages[stage_id]
            dag.upstream_failed(stage, now, failed)
            blocked.append(stage)
        live.unfinished -= len(blocked)
        self._writer.touch(run, [*queued, *blocked])
        if not await self._commit(live):
            return
        for stage in (*queued, *delayed):
            self._spawn(live, stage)
        if live.unfinished == 0:
            live.wake.set()

    async def _wait_for_end(self, live: LiveRun) -> str:
        """Sleep until the run's stages are all final, it is cancelled, it breaks, or
        its run timeout passes; says which."""
        timeout = live.info.run_timeout
        start = live.run.start_time
        deadline = start + timedelta(seconds=timeout) if timeout and start else None
        while True:
            if live.broken is not None:
                return "broken"
            if live.cancel_requested:
                return "cancel"
            if live.unfinished <= 0:
                return "done"
            remaining = None
            if deadline is not None:
                remaining = (deadline - self._clock()).total_seconds()
                if remaining <= 0:
                    return "timeout"
            live.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(live.wake.wait(), remaining)

    async def _finish(self, live: LiveRun) -> None:
        run = live.run
        outcome = dag.run_outcome(run.stages)
        if outcome is None:  # cannot happen: unfinished counts the non-final stages
            raise RuntimeError(f"run {run.run_id} ended with unfinished stages")
        run.state = outcome.state
        run.error_message = outcome.error_message
        run.end_time = self._clock()
        self._writer.touch(run)
        if await self._commit(live):
            log.info("run.finished", run_id=run.run_id, state=run.state.value)

    async def _finish_cancelled(self, live: LiveRun) -> None:
        await self._stop_stages(live)
        run = live.run
        now = self._clock()
        changed = [s for s in run.stages if not s.state.is_terminal]
        for stage in changed:
            dag.cancel(stage, now)
        run.state = RunState.CANCELLED
        run.error_message = CANCELLED_MESSAGE
        run.end_time = now
        self._writer.touch(run, changed)
        if await self._commit(live):
            log.info("run.cancelled", run_id=run.run_id, stages=len(changed), driven=True)

    async def _finish_timed_out(self, live: LiveRun) -> None:
        await self._stop_stages(live)
        run = live.run
        now = self._clock()
        message = dag.run_timeout_message(live.info.run_timeout or 0.0)
        changed = [s for s in run.stages if not s.state.is_terminal]
        for stage in changed:
            dag.cancel(stage, now, RUN_TIMEOUT, message)
        run.state = RunState.FAILED
        run.error_message = message
        run.end_time = now
        self._writer.touch(run, changed)
        if await self._commit(live):
            log.warning("run.timed_out", run_id=run.run_id, stages_cancelled=len(changed))

    async def _abandon(self, live: LiveRun) -> None:
        """Fail a run whose driving broke (a bug), so that watchers end."""
        if live.lost:
            return
        await self._stop_stages(live)
        run = live.run
        now = self._clock()
        changed = [s for s in run.stages if not s.state.is_terminal]
        for stage in changed:
            dag.fail(stage, now, STAGE_INTERNAL_ERROR, _INTERNAL_MESSAGE)
        run.state = RunState.FAILED
        run.error_message = _INTERNAL_MESSAGE
        run.end_time = now
        self._writer.touch(run, changed)
        try:
            await self._commit(live)
        except Exception:
            log.exception("run.abandon_failed", run_id=run.run_id)

    async def _stop_stages(self, live: LiveRun) -> None:
        live.stopping = True
        while live.stage_tasks:
            tasks = list(live.stage_tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _request_cancel(self, live: LiveRun) -> None:
        if not live.cancel_requested:
            live.cancel_requested = True
            log.info("run.cancel_requested", run_id=live.run.run_id)
            live.wake.set()

    async def _commit(self, live: LiveRun) -> bool:
        """Wait for what is queued to be written; whether the run still is ours."""
        lost = await self._writer.commit()
        return not live.lost and live.run.run_id not in lost

    def _committed(self, changes: Sequence[RunChange]) -> None:
        """Writer callback: move the committed copies into the views, wake watchers."""
        for change in changes:
            live = self._live.get(change.run.run_id)
            if live is None or live.lost or change.run.generation != live.run.generation:
                continue
            live.view_run = change.run
            for stage in change.stages:
                live.view_stages[stage.stage_id] = stage
            live.notify()

    # --- driving a stage -----------------------------------------------------------------

    def _spawn(self, live: LiveRun, stage: StageRun) -> None:
        if live.stopping or live.cancel_requested:
            return  # the driver is about to end the run
        task = asyncio.create_task(self._drive_stage(live, stage))
        live.stage_tasks[stage.stage_id] = task
        task.add_done_callback(partial(self._stage_task_done, live, stage.stage_id))

    def _stage_task_done(self, live: LiveRun, stage_id: str, task: asyncio.Task[None]) -> None:
        if live.stage_tasks.get(stage_id) is task:
            del live.stage_tasks[stage_id]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error(
                "stage.driver_failed",
                run_id=live.run.run_id,
                stage_id=stage_id,
                exc_info=error,
            )
            live.broken = error
            live.wake.set()

    async def _drive_stage(self, live: LiveRun, stage: StageRun) -> None:
        """From QUEUED (committed) to a final state: slots, attempts and backoffs."""
        run = live.run
        policy = live.info.policy(stage)
        while True:
            if stage.next_attempt_time is not None:
                delay = (stage.next_attempt_time - self._clock()).total_seconds()
                if delay > 0:
                    # Cancelling the run cancels this task, which ends the sleep at once.
                    await asyncio.sleep(delay)
                dag.queue_attempt(stage, self._clock())
                self._writer.touch(run, [stage])
                if not await self._commit(live):
                    return
            await self._slots.acquire(run.pipeline, live.info.max_active_tasks)
            try:
                result = await self._attempt(live, stage)
            finally:
                self._slots.release(run.pipeline)
            if isinstance(result, _Success):
                await self._succeeded(live, stage, result)
                return
            attempt = stage.attempt - stage.attempt_base
            if not result.final and policy.should_retry(attempt, result.reason, result.retryable):
                self._schedule_retry(live, stage, policy, result, attempt)
                continue
            self._failed(live, stage, result)
            return

    async def _attempt(self, live: LiveRun, stage: StageRun) -> _Success | _Failure:
        """Build and run the stage's current attempt; how it ended."""
        run = live.run
        try:
            task = await self._build_task(live, stage)
        except TemplateError as exc:
            return _Failure(TEMPLATE_ERROR, str(exc), final=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stage.build_failed", run_id=run.run_id, stage_id=stage.stage_id)
            return _Failure(STAGE_INTERNAL_ERROR, _INTERNAL_MESSAGE)
        busy = BUSY_BACKOFF_INITIAL
        while True:
            try:
                async with asyncio.timeout(task.timeout):
                    return await self._follow(live, stage, task)
            except DispatchError as exc:
                if exc.reason != EXECUTOR_BUSY:
                    return _Failure(exc.reason, exc.message)
                # Not an attempt: the executor had no slot. Same attempt, a bit later.
                await asyncio.sleep(self._uniform(busy / 2, busy))
                busy = min(busy * 2, BUSY_BACKOFF_MAX)
            except TimeoutError:
                return _Failure(STAGE_TIMEOUT, dag.stage_timeout_message(task.timeout or 0.0))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stage.internal_error", run_id=run.run_id, stage_id=stage.stage_id)
                return _Failure(
                    STAGE_INTERNAL_ERROR,
                    "internal error in the scheduler while running the stage; see its log",
                )

    async def _build_task(self, live: LiveRun, stage: StageRun) -> StageTask:
        info = live.info
        run = live.run
        watermarks = await self._store.watermarks(run.pipeline) if info.uses_watermarks else {}
        steps = build_stage_steps(info.spec, info.planned(stage), run, watermarks)
        return StageTask(
            run_id=run.run_id,
            stage_id=stage.stage_id,
            attempt=stage.attempt,
            steps=tuple(steps),
            timeout=info.timeout(stage),
        )

    async def _follow(self, live: LiveRun, stage: StageRun, task: StageTask) -> _Success | _Failure:
        """Apply the attempt's events to the stage until its result."""
        events: AsyncIterator[TaskEvent] = self._dispatcher.execute(task)
        try:
            async for event in events:
                if isinstance(event, TaskStarted):
                    self._started(live, stage)
                elif isinstance(event, TaskProgress):
                    self._progress(live, stage, event.metrics)
                elif isinstance(event, TaskLog):
                    self._log_lines(live, stage, event.lines)
                elif isinstance(event, TaskSucceeded):
                    return _Success(
                        event.metrics,
                        tuple(event.outputs),
                        dict(event.watermarks),
                        tuple(event.checks),
                    )
                elif isinstance(event, TaskFailed):
                    return _Failure(
                        event.reason,
                        event.message,
                        event.metrics,
                        event.retryable,
                        checks=tuple(event.checks),
                    )
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()  # cancels the attempt if we stopped reading early
        return _Failure(
            STAGE_INCOMPLETE, "the executor ended the task without reporting success or failure"
        )

    def _started(self, live: LiveRun, stage: StageRun) -> None:
        if dag.start_attempt(stage, self._clock()):
            self._writer.touch(live.run, [stage])
            live.progress_saved[stage.stage_id] = time.monotonic()

    def _progress(self, live: LiveRun, stage: StageRun, metrics: TaskMetrics) -> None:
        started = dag.start_attempt(stage, self._clock())
        stage.metrics = metrics
        now = time.monotonic()
        last = live.progress_saved.get(stage.stage_id)
        if started or last is None or now - last >= self._persist_interval:
            self._writer.touch(live.run, [stage])
            live.progress_saved[stage.stage_id] = now
        else:
            # Shown live, written later: the view (its own copy) takes the counters.
            live.view_stages[stage.stage_id].metrics = metrics
            live.notify()

    def _log_lines(self, live: LiveRun, stage: StageRun, lines: Sequence[LogLine]) -> None:
        if lines:
            self._writer.touch(live.run, logs=self._numbered(live, stage, lines))

    def _numbered(
        self, live: LiveRun, stage: StageRun, lines: Sequence[LogLine]
    ) -> list[StageLogLine]:
        key = (stage.stage_id, stage.attempt)
        seq = live.log_seq.get(key, 0)
        numbered = []
        for line in lines:
            seq += 1
            numbered.append(StageLogLine(live.run.run_id, stage.stage_id, stage.attempt, seq, line))
        live.log_seq[key] = seq
        return numbered

    def _note(
        self, live: LiveRun, stage: StageRun, message: str, level: LogLevel = LogLevel.WARNING
    ) -> list[StageLogLine]:
        """A log line of the scheduler's own about the stage's current attempt."""
        line = LogLine(self._clock(), level, message)
        return self._numbered(live, stage, [line])

    async def _succeeded(self, live: LiveRun, stage: StageRun, result: _Success) -> None:
        run = live.run
        now = self._clock()
        dag.succeed(stage, now, result.metrics, result.outputs)
        stage.checks = result.checks
        live.unfinished -= 1
        ready = [live.stages[stage_id] for stage_id in live.graph.succeeded(stage.stage_id)]
        for downstream in ready:
            dag.queue_attempt(downstream, now)
        # The watermarks commit with the success of the stage whose sink covered them.
        self._writer.touch(run, [stage, *ready], watermarks=result.watermarks)
        if live.unfinished <= 0:
            live.wake.set()
        if ready and await self._commit(live):
            for downstream in ready:
                self._spawn(live, downstream)

    def _schedule_retry(
        self,
        live: LiveRun,
        stage: StageRun,
        policy: RetryPolicy,
        failure: _Failure,
        attempt: int,
    ) -> None:
        delay = backoff_delay(policy, attempt, self._uniform)
        now = self._clock()
        dag.schedule_retry(
            stage,
            now,
            failure.reason,
            failure.message,
            now + timedelta(seconds=delay),
            failure.metrics,
        )
        stage.checks = failure.checks
        note = self._note(
            live,
            stage,
            f"attempt {stage.attempt} failed ({stage.error_reason}): {stage.error_message};"
            f" retrying in {delay:.3g}s",
        )
        self._writer.touch(live.run, [stage], logs=note)
        log.warning(
            "stage.retry_scheduled",
            run_id=live.run.run_id,
            stage_id=stage.stage_id,
            attempt=stage.attempt,
            delay=round(delay, 3),
            reason=stage.error_reason,
            error=stage.error_message,
        )

    def _failed(self, live: LiveRun, stage: StageRun, failure: _Failure) -> None:
        now = self._clock()
        dag.fail(stage, now, failure.reason, failure.message, failure.metrics)
        stage.checks = failure.checks
        blocked = [live.stages[stage_id] for stage_id in live.graph.failed(stage.stage_id)]
        for downstream in blocked:
            dag.upstream_failed(downstream, now, stage.stage_id)
        live.unfinished -= 1 + len(blocked)
        note = self._note(
            live,
            stage,
            f"attempt {stage.attempt} failed ({stage.error_reason}): {stage.error_message}",
            LogLevel.ERROR,
        )
        self._writer.touch(live.run, [stage, *blocked], logs=note)
        log.warning(
            "stage.failed",
            run_id=live.run.run_id,
            stage_id=stage.stage_id,
            reason=stage.error_reason,
            error=stage.error_message,
            blocked=len(blocked),
        )
        if live.unfinished <= 0:
            live.wake.set()


# --- request checks ----------------------------------------------------------------------------


def _require_run_id(run_id: str) -> None:
    if not run_id:
        raise invalid_argument(
            INVALID_REQUEST, "run_id is required", [FieldViolation("run_id", "is required")]
        )


def _page_size(page_size: int, default: int, maximum: int) -> int:
    if page_size < 0:
        raise invalid_argument(
            INVALID_PAGE_SIZE,
            "page_size must not be negative",
            [FieldViolation("page_size", "must not be negative")],
        )
    return min(page_size or default, maximum)


def _bad_log_token() -> Exception:
    return invalid_argument(
        INVALID_PAGE_TOKEN,
        "page_token is not a token from a previous ListStageLogs response for this stage",
        [FieldViolation("page_token", "is not a token from a previous response")],
    )


def _decode_log_position(token: str, run_id: str, stage_id: str) -> tuple[int, int]:
    """(attempt, seq) of a ListStageLogs token of this run's stage."""
    position = decode_page_token(token, "ListStageLogs")
    parts = position.split("/", 3)
    if len(parts) != 4 or parts[2] != run_id or parts[3] != stage_id:
        raise _bad_log_token()
    try:
        attempt, seq = int(parts[0]), int(parts[1])
    except ValueError:
        raise _bad_log_token() from None
    if attempt < 1 or seq < 0:
        raise _bad_log_token()
    return attempt, seq

"""Backfills: run a scheduled pipeline once per interval of a date range.

The intervals are the schedule's: their logical dates (data_interval_start) are
the fire times in [start_date, end_date), fixed when the backfill is created
(``only_failed`` keeps those whose latest run failed, was cancelled or never
existed). Each tick creates the next runs in logical-date order, keeping at most
``max_active_runs`` of them unfinished; a backfill run's id is
``deterministic_run_id(pipeline, logical_date, backfill_id)``, so schedulers
advancing the same backfill never create one twice. Once every run has been
created and has finished, the backfill ends SUCCEEDED (all succeeded) or FAILED.
A cancelled backfill creates no more runs and its unfinished runs are cancelled.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from datadog_platform.core.errors import (
    DomainError,
    FieldViolation,
    failed_precondition,
    invalid_argument,
)
from datadog_platform.core.logging import get_logger
from datadog_platform.core.page_tokens import decode_page_token, encode_page_token
from datadog_platform.scheduler.cron import parse_schedule
from datadog_platform.scheduler.domain import (
    BACKFILL_ALREADY_FINISHED,
    INVALID_PAGE_SIZE,
    INVALID_REQUEST,
    PIPELINE_NOT_SCHEDULED,
    RUN_ALREADY_FINISHED,
    Backfill,
    BackfillState,
    JsonValue,
    Run,
    RunState,
    RunTrigger,
    deterministic_run_id,
    new_run_id,
    utc_now,
)
from datadog_platform.scheduler.store import IdempotencyKey
from datadog_platform.scheduler.templating import resolve_params
from datadog_platform.scheduler.validation import check_request_id

if TYPE_CHECKING:
    from datadog_platform.api.scheduler.v1 import pipeline_pb2
    from datadog_platform.scheduler.runs import RunManager
    from datadog_platform.scheduler.store import Store

log = get_logger(__name__)

#: A backfill covers at most this many intervals.
MAX_BACKFILL_INTERVALS = 10_000
#: ListBackfills page sizes: the default (page_size 0) and the maximum.
DEFAULT_BACKFILLS_PAGE_SIZE = 50
MAX_BACKFILLS_PAGE_SIZE = 1000

_LISTING = "ListBackfills"
_UNFINISHED = (RunState.QUEUED, RunState.RUNNING)
_RERUN_STATES = frozenset({RunState.FAILED, RunState.CANCELLED})
_EPSILON = timedelta(microseconds=1)
# How many RUNNING backfills one store query returns while ticking.
_TICK_PAGE = 100


class BackfillManager:
    """Creates, advances, lists and cancels backfills."""

    def __init__(
        self,
        store: Store,
        runs: RunManager,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._runs = runs
        self._clock = clock
        # Serialises advancing and cancelling within this process (other processes
        # are safe through deterministic run ids and the store's state checks).
        self._lock = asyncio.Lock()

    async def create(
        self,
        pipeline: str,
        start_date: datetime | None,
        end_date: datetime | None,
        *,
        max_active_runs: int = 0,
        only_failed: bool = False,
        params: Mapping[str, JsonValue] | None = None,
        request_id: str = "",
    ) -> Backfill:
        """Start a backfill of ``pipeline`` over [start_date, end_date).

        INVALID_ARGUMENT (INVALID_REQUEST with a field violation) for a missing or
        empty range, a range of more than MAX_BACKFILL_INTERVALS intervals or a
        negative max_active_runs; UNKNOWN_PARAM for undeclared params; NOT_FOUND
        for an unknown pipeline; FAILED_PRECONDITION PIPELINE_NOT_SCHEDULED without
        a schedule. ``max_active_runs`` 0 means 1. A ``request_id`` seen before
        returns the backfill that request created. Its first runs are created
        before this returns.
        """
        start_date, end_date = _check_request(pipeline, start_date, end_date, max_active_runs)
        check_request_id(request_id)
        overrides = dict(params or {})
        spec = await self._store.get_pipeline(pipeline)  # NOT_FOUND
        if not spec.schedule.cron:
            raise failed_precondition(
                PIPELINE_NOT_SCHEDULED,
                f'pipeline "{pipeline}" has no schedule; only a scheduled pipeline can be'
                " backfilled",
                pipeline=pipeline,
            )
        resolve_params(spec, overrides)  # UNKNOWN_PARAM now rather than at each run
        dates = _logical_dates(spec, start_date, end_date)
        if only_failed:
            latest = await self._store.runs_by_logical_date(pipeline, start_date, end_date)
            dates = [d for d in dates if d not in latest or latest[d].state in _RERUN_STATES]
        now = self._clock()
        backfill = Backfill(
            backfill_id=new_run_id(),
            pipeline=spec.name,
            start_date=start_date,
            end_date=end_date,
            max_active_runs=max_active_runs or 1,
            only_failed=only_failed,
            state=BackfillState.RUNNING,
            create_time=now,
            logical_dates=tuple(dates),
            params=overrides,
            request_id=request_id,
        )
        key = None
        if request_id:
            fingerprint = json.dumps(
                [
                    pipeline,
                    start_date.isoformat(),
                    end_date.isoformat(),
                    max_active_runs,
                    only_failed,
                    overrides,
                ],
                sort_keys=True,
                default=str,
            )
            key = IdempotencyKey("BackfillPipeline", request_id, fingerprint)
        stored, created = await self._store.create_backfill(backfill, key)
        if created:
            log.info(
                "backfill.created",
                backfill_id=stored.backfill_id,
                pipeline=pipeline,
                intervals=len(dates),
            )
            async with self._lock:
                try:
                    await self._advance(stored, now)
                except Exception:
                    # The ticker tries again; the backfill itself was created.
                    log.exception("backfill.advance_failed", backfill_id=stored.backfill_id)
        return await self._store.get_backfill(stored.backfill_id)

    async def get(self, backfill_id: str) -> Backfill:
        """The backfill with its run counters (NOT_FOUND BACKFILL_NOT_FOUND)."""
        _require_backfill_id(backfill_id)
        return await self._store.get_backfill(backfill_id)

    async def cancel(self, backfill_id: str) -> Backfill:
        """Stop creating runs and cancel the unfinished ones; returns it CANCELLED.

        FAILED_PRECONDITION BACKFILL_ALREADY_FINISHED if it had already finished.
        """
        _require_backfill_id(backfill_id)
        async with self._lock:
            await self._store.finish_backfill(backfill_id, BackfillState.CANCELLED, self._clock())
        log.info("backfill.cancelled", backfill_id=backfill_id)
        await self._cancel_runs(backfill_id)
        return await self._store.get_backfill(backfill_id)

    async def tick(self, now: datetime | None = None) -> int:
        """Advance every RUNNING backfill; returns how many runs were created."""
        now = self._clock() if now is None else now
        created = 0
        before = ""
        while True:
            page = await self._store.list_backfills(
                _TICK_PAGE, before=before, states=(BackfillState.RUNNING,)
            )
            for backfill in page:
                async with self._lock:
                    try:
                        created += await self._advance(backfill, now)
                    except Exception:
                        log.exception("backfill.advance_failed", backfill_id=backfill.backfill_id)
            if len(page) < _TICK_PAGE:
                return created
            before = page[-1].backfill_id

    async def _advance(self, backfill: Backfill, now: datetime) -> int:
        """Create its next runs, or finish it once all its runs are finished."""
        if backfill.state is not BackfillState.RUNNING:
            return 0
        backfill_id = backfill.backfill_id
        unfinished = await self._store.list_runs(
            backfill.max_active_runs, backfill_id=backfill_id, states=_UNFINISHED
        )
        total = len(backfill.logical_dates)
        # Runs are created in logical-date order, so the created ones are a prefix.
        done = min(backfill.created_runs, total)
        slots = backfill.max_active_runs - len(unfinished)
        todo = backfill.logical_dates[done : done + max(0, slots)]
        if not todo:
            if done >= total and not unfinished:
                await self._finish(backfill_id, now)
            return 0
        spec = await self._store.get_pipeline(backfill.pipeline)
        try:
            resolve_params(spec, backfill.params)
        except DomainError as error:
            # The pipeline changed since: its params no longer take the overrides.
            log.error("backfill.params_invalid", backfill_id=backfill_id, error=error.message)
            await self._finish(backfill_id, now, BackfillState.FAILED)
            return 0
        created = 0
        for index, logical in enumerate(todo, start=done):
            _, new = await self._runs.create_run(
                spec,
                run_id=deterministic_run_id(backfill.pipeline, logical, backfill_id),
                trigger=RunTrigger.BACKFILL,
                logical_date=logical,
                interval_end=_interval_end(spec, backfill, index),
                params=backfill.params,
                backfill_id=backfill_id,
            )
            created += new
        if created:
            log.info("backfill.runs_created", backfill_id=backfill_id, runs=created)
        # Cancelled meanwhile (by another scheduler): do not leave these runs going.
        current = await self._store.get_backfill(backfill_id)
        if current.state is BackfillState.CANCELLED:
            await self._cancel_runs(backfill_id)
        return created

    async def _finish(
        self, backfill_id: str, now: datetime, state: BackfillState | None = None
    ) -> None:
        if state is None:
            # Counters read now that every run has finished.
            current = await self._store.get_backfill(backfill_id)
            failed = current.failed_runs or current.succeeded_runs < current.created_runs
            state = BackfillState.FAILED if failed else BackfillState.SUCCEEDED
        try:
            await self._store.finish_backfill(backfill_id, state, now)
        except DomainError as error:
            if error.reason != BACKFILL_ALREADY_FINISHED:
                raise
            return  # finished (or cancelled) elsewhere meanwhile
        log.info("backfill.finished", backfill_id=backfill_id, state=state.value)

    async def _cancel_runs(self, backfill_id: str) -> None:
        runs: builtins.list[Run] = []
        before = ""
        while True:
            page = await self._store.list_runs(
                _TICK_PAGE, backfill_id=backfill_id, states=_UNFINISHED, before=before
            )
            runs += page
            if len(page) < _TICK_PAGE:
                break
            before = page[-1].run_id
        results = await asyncio.gather(
            *(self._runs.cancel_run(run.run_id) for run in runs), return_exceptions=True
        )
        for run, result in zip(runs, results, strict=True):
            if isinstance(result, DomainError) and result.reason == RUN_ALREADY_FINISHED:
                continue
            if isinstance(result, BaseException):
                log.error(
                    "backfill.cancel_run_failed",
                    backfill_id=backfill_id,
                    run_id=run.run_id,
                    error=str(result),
                )

    # Last, so that ``list`` in the annotations above is the builtin.
    async def list(
        self, *, pipeline: str = "", page_size: int = 0, page_token: str = ""
    ) -> tuple[builtins.list[Backfill], str]:
        """One page of backfills, newest first, and the next page's token ("" at the end)."""
        if page_size < 0:
            raise invalid_argument(
                INVALID_PAGE_SIZE,
                "page_size must not be negative",
                [FieldViolation("page_size", "must not be negative")],
            )
        size = min(page_size or DEFAULT_BACKFILLS_PAGE_SIZE, MAX_BACKFILLS_PAGE_SIZE)
        before = decode_page_token(page_token, _LISTING) if page_token else ""
        # One extra row tells whether another page follows.
        rows = await self._store.list_backfills(size + 1, pipeline=pipeline, before=before)
        page = rows[:size]
        token = encode_page_token(_LISTING, page[-1].backfill_id) if len(rows) > size else ""
        return page, token


def _check_request(
    pipeline: str,
    start_date: datetime | None,
    end_date: datetime | None,
    max_active_runs: int,
) -> tuple[datetime, datetime]:
    """The range, once the request's fields are valid."""
    violations: builtins.list[FieldViolation] = []
    if not pipeline:
        violations.append(FieldViolation("pipeline", "is required"))
    if start_date is None:
        violations.append(FieldViolation("start_date", "is required"))
    if end_date is None:
        violations.append(FieldViolation("end_date", "is required"))
    if start_date is not None and end_date is not None and start_date >= end_date:
        violations.append(FieldViolation("end_date", "must be after start_date"))
    if max_active_runs < 0:
        violations.append(FieldViolation("max_active_runs", "must not be negative"))
    if violations:
        raise invalid_argument(
            INVALID_REQUEST,
            "invalid backfill request: "
            + "; ".join(f"{v.field} {v.description}" for v in violations),
            violations,
        )
    assert start_date is not None
    assert end_date is not None
    return start_date, end_date


def _logical_dates(
    spec: pipeline_pb2.Pipeline, start_date: datetime, end_date: datetime
) -> builtins.list[datetime]:
    """The schedule's fire times in [start_date, end_date) (the intervals' starts)."""
    cron = parse_schedule(spec.schedule.cron, spec.schedule.timezone)
    dates: builtins.list[datetime] = []
    fire = cron.next_after(start_date - _EPSILON)
    while fire < end_date:
        if len(dates) == MAX_BACKFILL_INTERVALS:
            raise invalid_argument(
                INVALID_REQUEST,
                f"the range holds more than {MAX_BACKFILL_INTERVALS} intervals of the"
                f' schedule "{spec.schedule.cron}"; split it into smaller backfills',
                [
                    FieldViolation(
                        "end_date",
                        f"the range must hold at most {MAX_BACKFILL_INTERVALS} intervals",
                    )
                ],
            )
        dates.append(fire)
        fire = cron.next_after(fire)
    if not dates:
        raise invalid_argument(
            INVALID_REQUEST,
            f'the range holds no interval of the schedule "{spec.schedule.cron}"'
            f" (no fire time in [{start_date.isoformat()}, {end_date.isoformat()}))",
            [FieldViolation("end_date", "the range must hold at least one scheduled interval")],
        )
    return dates


def _interval_end(spec: pipeline_pb2.Pipeline, backfill: Backfill, index: int) -> datetime:
    """End of the interval starting at ``backfill.logical_dates[index]``."""
    logical = backfill.logical_dates[index]
    if spec.schedule.cron:
        return parse_schedule(spec.schedule.cron, spec.schedule.timezone).next_after(logical)
    # The schedule was removed since: the intervals end where the next one starts.
    if index + 1 < len(backfill.logical_dates):
        return backfill.logical_dates[index + 1]
    return logical


def _require_backfill_id(backfill_id: str) -> None:
    if not backfill_id:
        raise invalid_argument(
            INVALID_REQUEST,
            "backfill_id is required",
            [FieldViolation("backfill_id", "is required")],
        )

"""The schedule ticker: creates the runs of cron schedules as their fire times pass.

A fire time F creates the run of the data interval [previous fire time, F): its
logical_date is the previous fire time, its id ``deterministic_run_id(pipeline,
logical_date, "schedule")``. Runs are created "insert if absent", so every
scheduler can tick without coordination and no run is ever created twice; the
store's last fire time of a pipeline only moves forward and is an optimisation
(where to resume), not the guard against duplicates.

With ``catchup`` every fire time since the later of the last one done and the
schedule's start (its ``start_time``, else when the schedule appeared) runs;
without it only the latest due fire time does (if not done yet). No fire time is
before ``start_time`` or after ``end_time``. Paused pipelines are skipped (with
catchup, their missed intervals run once unpaused).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from datadog_platform.core.logging import get_logger
from datadog_platform.scheduler.cron import parse_schedule, schedule_bounds
from datadog_platform.scheduler.domain import RunTrigger, deterministic_run_id, utc_now

if TYPE_CHECKING:
    from datadog_platform.scheduler.backfills import BackfillManager
    from datadog_platform.scheduler.runs import RunManager
    from datadog_platform.scheduler.store import ScheduleState, Store

log = get_logger(__name__)

#: The scope of scheduled runs' deterministic ids.
SCHEDULE_SCOPE = "schedule"
#: At most this many runs per tick, so that a long catchup stays responsive (the
#: next tick follows at once and continues).
MAX_RUNS_PER_TICK = 1000

_EPSILON = timedelta(microseconds=1)


class ScheduleTicker:
    """Periodically creates due scheduled runs (and advances backfills)."""

    def __init__(
        self,
        store: Store,
        runs: RunManager,
        *,
        clock: Callable[[], datetime] = utc_now,
        interval: float = 1.0,
        backfills: BackfillManager | None = None,
        max_runs_per_tick: int = MAX_RUNS_PER_TICK,
    ) -> None:
        self._store = store
        self._runs = runs
        self._clock = clock
        self._interval = interval
        self._backfills = backfills
        self._max_runs = max_runs_per_tick
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: The earliest fire time the last tick saw coming (None: nothing due).
        self._next_due: datetime | None = None

    def start(self) -> None:
        """Start ticking in the background (first tick at once); needs a running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="schedule-ticker")

    async def close(self) -> None:
        """Stop ticking (waits for a tick in progress to be cancelled)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def tick(self, now: datetime | None = None) -> int:
        """Create the runs due at ``now`` (default: the clock); returns how many."""
        now = self._clock() if now is None else now
        async with self._lock:
            created = 0
            next_due: datetime | None = None
            budget = self._max_runs
            for state in await self._store.schedule_states():
                if state.paused or not state.pipeline.schedule.cron:
                    continue
                try:
                    count, handled, due = await self._tick_pipeline(state, now, budget)
                except Exception:
                    # One broken pipeline must not stop the others' schedules.
                    log.exception("schedule.tick_failed", pipeline=state.pipeline.name)
                    continue
                created += count
                # Fire times another scheduler already created cost as much.
                budget -= handled
                if due is not None and (next_due is None or due < next_due):
                    next_due = due
            if self._backfills is not None:
                try:
                    created += await self._backfills.tick(now)
                except Exception:
                    log.exception("backfill.tick_failed")
            self._next_due = next_due
            return created

    async def _tick_pipeline(
        self, state: ScheduleState, now: datetime, budget: int
    ) -> tuple[int, int, datetime | None]:
        """Create one pipeline's due runs; returns (runs created, fire times handled,
        next due time)."""
        spec = state.pipeline
        schedule = spec.schedule
        cron = parse_schedule(schedule.cron, schedule.timezone)
        start, end = schedule_bounds(schedule)
        # Fire times are strictly after ``after``: at/after the start, after the last done.
        after = (start or state.create_time) - _EPSILON
        if state.last_fire_time is not None and state.last_fire_time > after:
            after = state.last_fire_time
        limit = now if end is None or end > now else end
        fires: list[datetime] = []
        more = False  # whether due fire times are left for the next tick
        if schedule.catchup:
            fire = cron.next_after(after)
            while fire <= limit and len(fires) < budget:
                fires.append(fire)
                fire = cron.next_after(fire)
            more = fire <= limit
        else:
            latest = cron.previous_before(limit + _EPSILON)
            if latest > after:
                if budget > 0:
                    fires.append(latest)
                else:
                    more = True
        created = 0
        if fires:
            logical = cron.previous_before(fires[0])
            for fire in fires:
                _, new = await self._runs.create_run(
                    spec,
                    run_id=deterministic_run_id(spec.name, logical, SCHEDULE_SCOPE),
                    trigger=RunTrigger.SCHEDULE,
                    logical_date=logical,
                    interval_end=fire,
                )
                if new:
                    created += 1
                    log.info(
                        "schedule.run_created",
                        pipeline=spec.name,
                        logical_date=logical.isoformat(),
                        fire_time=fire.isoformat(),
                    )
                logical = fire
            await self._store.set_last_fire_time(spec.name, fires[-1])
        if more:
            return created, len(fires), now  # over this tick's budget: tick again at once
        following = cron.next_after(max(now, fires[-1] if fires else after))
        due = None if end is not None and following > end else following
        return created, len(fires), due

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("schedule.tick_failed")
            delay = self._interval
            if self._next_due is not None:
                until_due = (self._next_due - self._clock()).total_seconds()
                delay = max(0.0, min(delay, until_due))
            await asyncio.sleep(delay)

"""The lease loop: keep the runs this scheduler drives, and adopt abandoned ones.

Every ``period`` seconds (``min(lease_seconds / 3, 0.5)``) the keeper renews the
leases of the runs the engine drives (those lost to another scheduler are dropped at
once; those whose cancellation another scheduler requested are cancelled here) and
claims unfinished runs nobody holds (never leased, released at shutdown, or whose
holder stopped renewing), which the engine then drives. A run just claimed is
renewed once before it is handed over, so a pending cancellation is known before
anything of it is dispatched. When renewals keep failing (the store is unreachable)
until the leases are about to expire, the engine stops driving those runs, so that a
scheduler adopting them never runs a stage at the same time as this one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

from datadog_platform.core.logging import get_logger
from datadog_platform.scheduler.domain import Run
from datadog_platform.scheduler.store import Store

log = get_logger(__name__)

#: Runs claimed per store call.
CLAIM_BATCH = 200
#: The longest pause between two renewals.
MAX_PERIOD = 0.5


class LeaseKeeper:
    """Renews the engine's leases and claims runs for it (see the module docstring).

    ``held()``: run id → lease generation of every unfinished run the engine drives;
    ``on_lost(ids)``: runs whose lease is gone (stop driving them, write nothing);
    ``on_cancel_requested(ids)``: runs to cancel as if CancelRun had been called here;
    ``adopt(run, cancel_requested)``: drive a run just claimed.
    """

    def __init__(
        self,
        store: Store,
        *,
        owner: str,
        lease_seconds: float,
        clock: Callable[[], datetime],
        held: Callable[[], Mapping[str, int]],
        on_lost: Callable[[set[str]], None],
        on_cancel_requested: Callable[[set[str]], None],
        adopt: Callable[[Run, bool], Awaitable[None]],
    ) -> None:
        self._store = store
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._lease = timedelta(seconds=lease_seconds)
        self.period = min(lease_seconds / 3, MAX_PERIOD)
        self._clock = clock
        self._held = held
        self._on_lost = on_lost
        self._on_cancel_requested = on_cancel_requested
        self._adopt = adopt
        self._task: asyncio.Task[None] | None = None

    def lease_until(self) -> datetime:
        """When a lease taken or renewed now expires."""
        return self._clock() + self._lease

    def start(self) -> None:
        """Start the periodic renew-and-claim loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="lease-keeper")

    async def close(self) -> None:
        """Stop the loop (leases are left as they are; see ``Store.release_runs``)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.period)
            try:
                await self.renew()
                renewed = time.monotonic()
                await self.claim()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A store hiccup: the next round tries again (leases last several rounds).
                log.exception("leases.round_failed")
                if time.monotonic() - renewed > self._lease_seconds - self.period:
                    # Our leases run out before we could renew them: another scheduler
                    # may adopt these runs, so stop them first (no stage twice at once).
                    held = set(self._held())
                    if held:
                        log.error("leases.expiring_unrenewed", runs=len(held))
                        self._on_lost(held)

    async def renew(self) -> None:
        """Renew every held lease; report lost runs and requested cancellations."""
        held = dict(self._held())
        if not held:
            return
        result = await self._store.renew_leases(self._owner, held, self.lease_until())
        if result.lost:
            log.warning("leases.lost", runs=sorted(result.lost))
            self._on_lost(set(result.lost))
        cancels = set(result.cancel_requested) - set(result.lost)
        if cancels:
            self._on_cancel_requested(cancels)

    async def claim(self, *, ignore_leases: bool = False) -> int:
        """Claim unfinished runs nobody holds (every run not held by this owner with
        ``ignore_leases``) and hand them to the engine; returns how many."""
        total = 0
        while True:
            claimed = await self._store.claim_runs(
                self._owner,
                self._clock(),
                self.lease_until(),
                CLAIM_BATCH,
                ignore_leases=ignore_leases,
            )
            if not claimed:
                return total
            renewed = await self._store.renew_leases(
                self._owner, {r.run_id: r.generation for r in claimed}, self.lease_until()
            )
            for run in claimed:
                if run.run_id in renewed.lost:
                    continue
                log.info("run.adopted", run_id=run.run_id, pipeline=run.pipeline)
                try:
                    await self._adopt(run, run.run_id in renewed.cancel_requested)
                except Exception:
                    # Not driven, so not renewed: claimed again once the lease expires.
                    log.exception("run.adopt_failed", run_id=run.run_id)
            total += len(claimed)
            if len(claimed) < CLAIM_BATCH:
                return total

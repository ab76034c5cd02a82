"""Group commit: every queued state change of every run, in one store transaction.

Drivers change their live runs in memory and tell the writer what changed
(:meth:`StateWriter.touch`); one writer task takes everything queued so far, writes it
with one :meth:`Store.apply` call, and then resolves the callers waiting on
:meth:`StateWriter.commit`. While a transaction is in flight, new changes pile up and
go together in the next one, so the number of transactions follows the store's
speed, not the number of changes.

Changes of one run coalesce: the writer keeps references to the live run and the
stages touched, and copies them when it takes a batch, so the latest state wins and
a stage changed five times between two transactions is written once. Log lines and
watermarks are appended and merged. Copies are shallow (a run's own fields, each
touched stage's fields): a batch costs the size of what changed, never of whole runs.

A write whose lease fence fails (``apply`` returns the run id) is reported through
``on_lost``; nothing more of that run is written until it is touched again after
:meth:`forget`. A failing transaction (e.g. the database is unreachable) is retried
with a capped backoff, its changes merged with newer ones; waiters wait meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from datadog_platform.core.logging import get_logger
from datadog_platform.scheduler.domain import Run, RunChange, StageLogLine, StageRun
from datadog_platform.scheduler.store import Store

log = get_logger(__name__)

#: Backoff between attempts of a failing transaction: first delay and cap (seconds).
RETRY_INITIAL = 0.05
RETRY_MAX = 2.0
#: How long closing waits for the last changes to be written.
CLOSE_WAIT = 5.0
#: How long changes nobody waits for may wait for company before they are written.
DEFAULT_LINGER = 0.01


@dataclass(eq=False)
class _Pending:
    """What changed in one run since the last batch (live references, not copies)."""

    run: Run
    stages: dict[str, StageRun] = field(default_factory=dict)
    logs: list[StageLogLine] = field(default_factory=list)
    watermarks: dict[str, str] = field(default_factory=dict)

    def merge_older(self, older: _Pending) -> None:
        """Put back a batch that failed to commit, under changes made since."""
        self.stages = {**older.stages, **self.stages}
        self.logs = older.logs + self.logs
        self.watermarks = {**older.watermarks, **self.watermarks}

    def snapshot(self) -> RunChange:
        run = copy.copy(self.run)
        # The run row carries the run's own fields; its stages go as ``stages``.
        run.stages = []
        return RunChange(
            run=run,
            stages=[copy.copy(stage) for stage in self.stages.values()],
            logs=list(self.logs),
            watermarks=dict(self.watermarks),
        )


class StateWriter:
    """Batches run changes into store transactions (see the module docstring).

    ``on_committed(changes)`` runs after each successful transaction with the copies
    that were written (runs whose fence failed excluded), before any waiter resumes;
    ``on_lost(run_ids)`` with the runs whose fence failed.
    """

    def __init__(
        self,
        store: Store,
        *,
        on_committed: Callable[[Sequence[RunChange]], None],
        on_lost: Callable[[set[str]], None],
        linger: float = DEFAULT_LINGER,
    ) -> None:
        self._store = store
        self._linger = linger
        self._on_committed = on_committed
        self._on_lost = on_lost
        self._pending: dict[str, _Pending] = {}
        self._waiters: list[asyncio.Future[set[str]]] = []
        self._wakeup = asyncio.Event()
        #: Set when someone waits for a commit: no lingering then.
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Statistics: transactions written and run changes they carried.
        self.transactions = 0
        self.changes_written = 0

    def start(self) -> None:
        """Start the writer task."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="state-writer")

    async def close(self) -> None:
        """Write what is still queued (waiting at most CLOSE_WAIT seconds), then stop."""
        if self._task is None:
            return
        if self._pending and not self._task.done():
            try:
                await asyncio.wait_for(self.commit(), CLOSE_WAIT)
            except TimeoutError:
                log.error("state.unwritten_at_close", runs=len(self._pending))
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        self._waiters.clear()

    def touch(
        self,
        run: Run,
        stages: Iterable[StageRun] = (),
        *,
        logs: Iterable[StageLogLine] = (),
        watermarks: Mapping[str, str] | None = None,
    ) -> None:
        """Queue the current state of ``run`` (its own fields) and of ``stages``,
        plus new log lines and watermarks; written with the next transaction."""
        pending = self._pending.get(run.run_id)
        if pending is None or pending.run is not run:
            pending = self._pending[run.run_id] = _Pending(run)
        for stage in stages:
            pending.stages[stage.stage_id] = stage
        pending.logs.extend(logs)
        if watermarks:
            pending.watermarks.update(watermarks)
        self._wakeup.set()

    def forget(self, run_id: str) -> None:
        """Drop what is queued for ``run_id`` (its lease was lost)."""
        self._pending.pop(run_id, None)

    async def commit(self) -> set[str]:
        """Wait until everything queued so far is written; returns the run ids whose
        fence failed in that transaction (their changes were not written)."""
        waiter: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._urgent.set()
        self._wakeup.set()
        return await waiter

    async def _loop(self) -> None:
        delay = RETRY_INITIAL
        while True:
            await self._wakeup.wait()
            if not self._waiters and self._linger > 0:
                # Nobody waits for these changes (a stage started, progress): let the
                # next ones join them, e.g. the stage's success a moment later.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self._linger)
            self._wakeup.clear()
            self._urgent.clear()
            batch, self._pending = self._pending, {}
            waiters, self._waiters = self._waiters, []
            changes = [pending.snapshot() for pending in batch.values()]
            try:
                lost = set(await self._store.apply(changes)) if changes else set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("state.write_failed", runs=len(changes), retry_in=delay)
                for run_id, older in batch.items():
                    newer = self._pending.get(run_id)
                    if newer is None or newer.run is not older.run:
                        self._pending[run_id] = older
                    else:
                        newer.merge_older(older)
                self._waiters = waiters + self._waiters
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                self._wakeup.set()
                continue
            delay = RETRY_INITIAL
            self.transactions += bool(changes)
            self.changes_written += len(changes)
            if lost:
                log.warning("state.fence_failed", runs=sorted(lost))
            written = [c for c in changes if c.run.run_id not in lost]
            try:
                if written:
                    self._on_committed(written)
                if lost:
                    self._on_lost(lost)
            except Exception:
                log.exception("state.commit_callback_failed")
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(lost)

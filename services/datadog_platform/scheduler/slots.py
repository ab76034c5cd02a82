"""Dispatch slots: a global limit on stages in flight and a limit per pipeline.

A stage holds one slot from just before its attempt is dispatched until the attempt
ends. Waiters queue per pipeline (FIFO within a pipeline); when a slot frees, the
pipelines with waiters are served in turn, skipping those at their own limit, so a
pipeline at its ``max_active_tasks`` never holds up the others. No polling: a waiter
sleeps on a future that :meth:`Slots.release` resolves.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque


class Slots:
    """``total`` slots shared by all pipelines; a pipeline may use at most its limit."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("the global stage limit must be at least 1")
        self.total = total
        self.in_use = 0
        self._by_key: dict[str, int] = {}
        self._limits: dict[str, int] = {}
        self._waiters: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    def in_use_by(self, key: str) -> int:
        """Slots ``key`` (a pipeline) holds now."""
        return self._by_key.get(key, 0)

    async def acquire(self, key: str, limit: int = 0) -> None:
        """Wait for a slot for ``key`` (at most ``limit`` at once; 0: no own limit)."""
        self._limits[key] = limit
        if not self._waiters.get(key) and self._fits(key):
            self._take(key)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Granted just as it was cancelled: give the slot back.
                self.release(key)
            else:
                queue = self._waiters.get(key)
                if queue is not None and waiter in queue:
                    queue.remove(waiter)
                    if not queue:
                        del self._waiters[key]
            raise

    def release(self, key: str) -> None:
        """Give back a slot of ``key`` and hand free slots to waiters."""
        self.in_use -= 1
        left = self._by_key[key] - 1
        if left:
            self._by_key[key] = left
        else:
            del self._by_key[key]
        self._grant()

    def _fits(self, key: str) -> bool:
        limit = self._limits.get(key, 0)
        return self.in_use < self.total and (limit <= 0 or self._by_key.get(key, 0) < limit)

    def _take(self, key: str) -> None:
        self.in_use += 1
        self._by_key[key] = self._by_key.get(key, 0) + 1

    def _grant(self) -> None:
        # Round robin over the pipelines with waiters, one slot each per round; a
        # pipeline served moves last, so a busy one cannot take every free slot.
        progress = True
        while progress and self._waiters:
            progress = False
            for key in list(self._waiters):
                if self.in_use >= self.total:
                    return
                queue = self._waiters[key]
                while queue and queue[0].done():  # cancelled while queued
                    queue.popleft()
                if queue and self._fits(key):
                    self._take(key)
                    queue.popleft().set_result(None)
                    progress = True
                    self._waiters.move_to_end(key)
                if not queue:
                    del self._waiters[key]

"""Dependency-aware health: a background watcher that turns a server NOT_SERVING
while something it needs is down, and SERVING again when it is back.

A check is a coroutine returning ``None`` when its dependency is fine, or a short
problem description. The watcher runs every check about every ``interval`` seconds
(each bounded by ``timeout``); while any fails it reports the server's services
and ``""`` NOT_SERVING, and looks again after a back-off that doubles up to
``max_interval``. Transitions are logged once each, not every round.

``LIVENESS`` is a health name that stays SERVING while the process runs (until
shutdown): liveness and startup probes ask it, so that a dependency outage makes
pods unready rather than restarting them in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from datadog_platform.core.logging import get_logger

log = get_logger(__name__)

#: The health name that only says the process is alive (for liveness/startup probes).
LIVENESS = "liveness"

#: ``None`` when fine, else what is wrong.
HealthCheck = Callable[[], Awaitable[str | None]]

HEALTH_INTERVAL_SECONDS = 2.0
HEALTH_MAX_INTERVAL_SECONDS = 10.0
HEALTH_TIMEOUT_SECONDS = 2.0

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthWatcher:
    """Keeps ``names`` (and ``""``) of ``servicer`` in line with ``checks``."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        names: Sequence[str],
        checks: Mapping[str, HealthCheck],
        *,
        interval: float = HEALTH_INTERVAL_SECONDS,
        max_interval: float = HEALTH_MAX_INTERVAL_SECONDS,
        timeout: float = HEALTH_TIMEOUT_SECONDS,
    ) -> None:
        self._servicer = servicer
        self._names = ["", *names]
        self._checks = dict(checks)
        self._interval = interval
        self._max_interval = max(max_interval, interval)
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None
        #: What is wrong now, by check name (empty: SERVING).
        self.problems: dict[str, str] = {}

    def start(self) -> None:
        """Start watching (the first round runs at once)."""
        if self._task is None and self._checks:
            self._task = asyncio.create_task(self._watch(), name="health-watcher")

    async def close(self) -> None:
        """Stop watching; the statuses stay as they are."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check_once(self) -> dict[str, str]:
        """Run every check once; returns the problems by check name."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(self._checks[n]) for n in names))
        return {name: problem for name, problem in zip(names, results, strict=True) if problem}

    async def _run(self, check: HealthCheck) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                return await check()
        except TimeoutError:
            return f"no answer within {self._timeout:g}s"
        except Exception as exc:
            return str(exc) or type(exc).__name__

    async def _watch(self) -> None:
        serving = True  # the server starts SERVING
        failures = 0
        while True:
            problems = await self.check_once()
            self.problems = problems
            if bool(problems) == serving:
                serving = not problems
                for name in self._names:
                    await self._servicer.set(name, _SERVING if serving else _NOT_SERVING)
                if serving:
                    log.info("health.serving")
                else:
                    log.warning("health.not_serving", problems=problems)
            # Down: look again after interval, then twice that, ... up to max_interval.
            failures = 0 if serving else failures + 1
            delay = self._interval * 2 ** max(failures - 1, 0)
            await asyncio.sleep(min(delay, self._max_interval))


class GrpcHealthProbe:
    """Asks another service's ``grpc.health.v1.Health/Check`` about ``service``.

    It has its own channel with a short reconnect back-off, so that a dependency
    that comes back is seen within a round or two rather than after gRPC's
    default back-off (up to two minutes).
    """

    def __init__(self, address: str, service: str, timeout: float = 1.0) -> None:
        self._address = address
        self._service = service
        self._timeout = timeout
        self._channel = grpc.aio.insecure_channel(
            address,
            options=(
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ),
        )
        self._stub = health_pb2_grpc.HealthStub(self._channel)

    async def __call__(self) -> str | None:
        try:
            response = await self._stub.Check(
                health_pb2.HealthCheckRequest(service=self._service), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            return f"{self._service} at {self._address}: {exc.code().name}"
        if response.status != _SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            return f"{self._service} at {self._address}: {status}"
        return None

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

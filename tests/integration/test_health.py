"""Health follows dependencies: a scheduler and an executor whose connector service goes
away turn NOT_SERVING, and SERVING again once a connector is back on the same address.

Real in-process servers over real channels; the connector is stopped and a new one
started on the same port.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from datadog_platform.connector.app import ConnectorConfig
from datadog_platform.connector.app import build_server as build_connector
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.health import LIVENESS, HealthWatcher
from datadog_platform.executor.app import ExecutorConfig
from datadog_platform.executor.app import build_server as build_executor
from datadog_platform.scheduler.app import SchedulerConfig
from datadog_platform.scheduler.app import build_server as build_scheduler

pytestmark = pytest.mark.timeout(60)

SCHEDULER = "datadog_platform.api.scheduler.v1.SchedulerService"
EXECUTOR = "datadog_platform.api.executor.v1.ExecutorService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
FAST = {"health_interval": 0.1, "health_max_interval": 0.4}


async def status(address: str, service: str) -> int:
    async with insecure_channel(address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return response.status


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        await asyncio.sleep(0.05)


async def all_are(address: str, names: list[str], wanted: int) -> bool:
    return all([await status(address, name) == wanted for name in names])


async def test_health_follows_the_connector_service(tmp_path: Path) -> None:
    connector = await build_connector(ConnectorConfig.local(tmp_path))
    await connector.start()
    executor = await build_executor(ExecutorConfig(connector_address=connector.address, **FAST))
    await executor.start()
    scheduler = await build_scheduler(
        SchedulerConfig(
            store=str(tmp_path / "scheduler.db"),
            executor_address=executor.address,
            connector_address=connector.address,
            **FAST,
        )
    )
    await scheduler.start()
    replacement = None
    watched = {scheduler.address: ["", SCHEDULER], executor.address: ["", EXECUTOR]}
    try:
        for address, names in watched.items():
            assert await all_are(address, [*names, LIVENESS], SERVING)

        await connector.stop(grace=0)
        for address, names in watched.items():
            await eventually(
                lambda a=address, n=names: all_are(a, n, NOT_SERVING), f"{address} NOT_SERVING"
            )
            # Unready, not dead: liveness probes must not restart it for an outage elsewhere.
            assert await status(address, LIVENESS) == SERVING
        assert "connector" in scheduler.watcher.problems
        assert "store" not in scheduler.watcher.problems

        replacement = await build_connector(ConnectorConfig.local(tmp_path), connector.address)
        await replacement.start()
        assert replacement.address == connector.address
        for address, names in watched.items():
            await eventually(
                lambda a=address, n=names: all_are(a, n, SERVING), f"{address} SERVING again"
            )
        assert scheduler.watcher.problems == {}
    finally:
        await scheduler.stop(grace=0)
        await executor.stop(grace=0)
        await connector.stop(grace=0)
        if replacement is not None:
            await replacement.stop(grace=0)
    # Stopping turns everything NOT_SERVING, the watcher cannot undo it.
    assert await scheduler.health.Check(
        health_pb2.HealthCheckRequest(service=SCHEDULER), None
    ) == health_pb2.HealthCheckResponse(status=NOT_SERVING)


async def test_the_watcher_backs_off_while_down_and_reports_each_transition_once() -> None:
    servicer = health.aio.HealthServicer()
    await servicer.set("svc", SERVING)
    calls: list[float] = []
    down = True

    async def check() -> str | None:
        calls.append(time.monotonic())
        return "the store is down" if down else None

    async def current() -> int:
        reply = await servicer.Check(health_pb2.HealthCheckRequest(service="svc"), None)
        return reply.status

    watcher = HealthWatcher(servicer, ["svc"], {"store": check}, interval=0.05, max_interval=0.2)
    watcher.start()
    try:
        await eventually(lambda: _is(current, NOT_SERVING), "NOT_SERVING")
        assert watcher.problems == {"store": "the store is down"}
        await asyncio.sleep(1.0)
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        # 0.05, 0.1, 0.2, 0.2, ...: backed off, capped, still looking.
        assert gaps[0] < 0.15
        assert max(gaps) < 0.4
        assert sum(1 for gap in gaps if gap >= 0.18) >= 2
        down = False
        await eventually(lambda: _is(current, SERVING), "SERVING again", within=2)
        assert watcher.problems == {}
    finally:
        await watcher.close()


async def _is(current: Callable[[], Awaitable[int]], wanted: int) -> bool:
    return await current() == wanted

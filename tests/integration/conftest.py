"""Fixtures shared by the integration tests: a SQLite store and a run engine
dispatching to the real in-process executor, and a stub of that executor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from datadog_platform.api.executor.v1 import executor_service_pb2_grpc
from datadog_platform.core.channels import insecure_channel
from datadog_platform.scheduler.executor_client import ExecutorDispatcher
from datadog_platform.scheduler.runs import RunManager
from datadog_platform.scheduler.store import Store, open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A new SQLite store (a module may override it, e.g. with both backends)."""
    opened = await open_store(str(tmp_path / "scheduler.db"))
    yield opened
    await opened.close()


@pytest.fixture
async def runs(store: Store, executor_address: str) -> AsyncIterator[RunManager]:
    """A started run engine on ``store``, dispatching to the in-process executor."""
    dispatcher = ExecutorDispatcher(executor_address)
    manager = RunManager(store, dispatcher, instance_id="integration-test")
    await manager.start()
    yield manager
    await manager.close()
    await dispatcher.close()


@pytest.fixture
async def executor(
    executor_address: str,
) -> AsyncIterator[executor_service_pb2_grpc.ExecutorServiceStub]:
    """A stub of the in-process executor (a module may override it, e.g. with a
    differently configured executor)."""
    async with insecure_channel(executor_address) as channel:
        yield executor_service_pb2_grpc.ExecutorServiceStub(channel)

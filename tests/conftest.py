"""Fixtures that start the real services in-process on ephemeral ports.

Each fixture yields the ``host:port`` of a started server and stops it afterwards;
tests talk to them over real gRPC channels.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from datadog_platform.core.logging import configure_logging

configure_logging("tests", "WARNING")

#: The PostgreSQL server of the machine (trust auth); tests create their own databases.
PG_ADMIN_URL = os.environ.get("DATADOG_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards.

    Fails (never skips) when the server cannot be reached.
    """
    import psycopg

    name = f"datadog_test_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL must run at {PG_ADMIN_URL} (trust auth): {exc}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """Root directory of the "local" file connection in tests."""
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
async def connector_address(data_root: Path) -> AsyncIterator[str]:
    """A connector service whose "local" file connection is rooted at ``data_root``."""
    from datadog_platform.connector.app import ConnectorConfig, build_server

    server = await build_server(ConnectorConfig.local(data_root))
    await server.start()
    yield server.address
    await server.stop(grace=1)


@pytest.fixture
async def executor_address(connector_address: str) -> AsyncIterator[str]:
    """An executor service that reads and writes through ``connector_address``."""
    from datadog_platform.executor.app import ExecutorConfig, build_server

    server = await build_server(ExecutorConfig(connector_address=connector_address))
    await server.start()
    yield server.address
    await server.stop(grace=1)


@pytest.fixture
async def scheduler_address(
    tmp_path: Path, executor_address: str, connector_address: str
) -> AsyncIterator[str]:
    """A scheduler service with a SQLite store in ``tmp_path``."""
    from datadog_platform.scheduler.app import SchedulerConfig, build_server

    server = await build_server(
        SchedulerConfig(
            store=str(tmp_path / "scheduler.db"),
            executor_address=executor_address,
            connector_address=connector_address,
        )
    )
    await server.start()
    yield server.address
    await server.stop(grace=1)

"""The three services as separate processes, for the end-to-end tests.

A module overrides ``root`` when its connector needs files in place before it starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from service_process import ServiceProcess


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Root of the connector's "local" file connection (empty)."""
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def scheduler(tmp_path: Path, root: Path) -> Iterator[str]:
    """Connector, executor and scheduler as separate processes, logging to ``tmp_path/logs``;
    yields the scheduler's address."""
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[ServiceProcess] = []
    try:
        connector = ServiceProcess(
            "datadog_platform.connector.main", "--root", str(root), log=logs / "connector.log"
        )
        procs.append(connector)
        executor = ServiceProcess(
            "datadog_platform.executor.main",
            "--connector",
            connector.address,
            log=logs / "executor.log",
        )
        procs.append(executor)
        scheduler = ServiceProcess(
            "datadog_platform.scheduler.main",
            "--db",
            str(tmp_path / "state" / "scheduler.db"),
            "--executor",
            executor.address,
            "--connector",
            connector.address,
            log=logs / "scheduler.log",
        )
        procs.append(scheduler)
        yield scheduler.address
    finally:
        for proc in reversed(procs):
            proc.stop()

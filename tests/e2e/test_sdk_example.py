"""End to end: ``examples/simple_pipeline.py`` (the Python SDK) against the three services
started as separate processes, checked by reading the file it wrote."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "simple_pipeline.py"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The root of the "local" connection, holding the example data."""
    shutil.copytree(REPO / "examples" / "data", tmp_path / "examples" / "data")
    return tmp_path


def run_example(server: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--server", server, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sdk_example_builds_creates_and_runs_a_pipeline(root: Path, scheduler: str) -> None:
    result = run_example(scheduler)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "created pipeline sdk_simple_pipeline version 1" in result.stdout
    assert ": SUCCEEDED" in result.stdout
    assert "out: 35 rows" in result.stdout

    with (root / "examples" / "data" / "orders.csv").open(encoding="utf-8") as f:
        want = [int(r["order_id"]) for r in csv.DictReader(f) if Decimal(r["amount"]) > 100]
    table = pq.read_table(root / "out" / "sdk_big_orders.parquet")
    assert table.column("order_id").to_pylist() == want
    assert len(want) == 35

    # Run again from inline rows: the existing pipeline gets a new version.
    again = run_example(scheduler, "--inline", "--min-amount", "150")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "updated pipeline sdk_simple_pipeline to version 2" in again.stdout
    table = pq.read_table(root / "out" / "sdk_big_orders.parquet")
    assert table.column("customer").to_pylist() == ["Amélie", "Noor"]


def test_sdk_example_reports_an_unreachable_server(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        result = run_example(f"127.0.0.1:{sock.getsockname()[1]}")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr
    assert "Traceback" not in result.stderr

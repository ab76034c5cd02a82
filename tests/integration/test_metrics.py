"""Prometheus endpoints of the three services and the scheduler's GetMetrics, for real.

The services run in-process with their metrics endpoints on free ports; a pipeline
runs through them over real gRPC, and the counters each endpoint serves must move.
Counters are process-wide (every in-process server shares prometheus_client's
registry), so the tests compare values before and after.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
import yaml
from google.protobuf.json_format import ParseDict
from prometheus_client.parser import text_string_to_metric_families

from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.api.scheduler.v1.scheduler_service_pb2_grpc import SchedulerServiceStub
from datadog_platform.connector.app import ConnectorConfig
from datadog_platform.connector.app import build_server as build_connector
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.config import resolve_metrics_listen
from datadog_platform.core.server import Server
from datadog_platform.executor.app import ExecutorConfig
from datadog_platform.executor.app import build_server as build_executor
from datadog_platform.scheduler.app import SchedulerConfig
from datadog_platform.scheduler.app import build_server as build_scheduler

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "csv_to_parquet.yaml"
ORDERS = REPO / "examples" / "data" / "orders.csv"
SCHEDULER = "datadog_platform.api.scheduler.v1.SchedulerService"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Stack:
    connector: Server
    executor: Server
    scheduler: Server
    stub: SchedulerServiceStub


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite unless a test asks for ``postgresql`` (``indirect`` parametrization)."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "scheduler.db")


@pytest.fixture
async def stack(store_url: str, data_root: Path) -> AsyncIterator[Stack]:
    """The three services, each with its metrics endpoint on a free port."""
    target = data_root / "examples" / "data" / "orders.csv"
    target.parent.mkdir(parents=True)
    shutil.copy(ORDERS, target)
    listen = "127.0.0.1:0"
    connector = await build_connector(ConnectorConfig.local(data_root), metrics_listen=listen)
    await connector.start()
    executor = await build_executor(
        ExecutorConfig(connector_address=connector.address, metrics_listen=listen)
    )
    await executor.start()
    scheduler = await build_scheduler(
        SchedulerConfig(
            store=store_url,
            executor_address=executor.address,
            connector_address=connector.address,
            metrics_listen=listen,
        )
    )
    await scheduler.start()
    try:
        async with insecure_channel(scheduler.address) as channel:
            yield Stack(connector, executor, scheduler, SchedulerServiceStub(channel))
    finally:
        for server in (scheduler, executor, connector):
            await server.stop(grace=1)


async def scrape(server: Server) -> Samples:
    """Every sample the server's endpoint serves, parsed as Prometheus text."""
    address = server.metrics_address
    assert address is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{address}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def run_example(stub: SchedulerServiceStub) -> run_pb2.Run:
    spec = ParseDict(yaml.safe_load(EXAMPLE.read_text()), pipeline_pb2.Pipeline())
    await stub.CreatePipeline(pb.CreatePipelineRequest(pipeline=spec), timeout=10)
    started = await stub.RunPipeline(pb.RunPipelineRequest(pipeline=spec.name), timeout=10)
    call = stub.WatchRun(pb.WatchRunRequest(run_id=started.run.run_id), timeout=30)
    runs = [response.run async for response in call]
    assert runs[-1].state == run_pb2.RUN_STATE_SUCCEEDED, runs[-1]
    return runs[-1]


async def test_the_counters_of_every_service_move_with_a_run(stack: Stack) -> None:
    before = {
        "scheduler": await scrape(stack.scheduler),
        "executor": await scrape(stack.executor),
        "connector": await scrape(stack.connector),
    }

    run = await run_example(stack.stub)
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.stub.GetRun(pb.GetRunRequest(run_id="0" * 32), timeout=10)

    scheduler = await scrape(stack.scheduler)
    executor = await scrape(stack.executor)
    connector = await scrape(stack.connector)

    def moved(samples: Samples, service: str, name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before[service], name, **labels)

    # RPC latencies by service, method and code, in the shared interceptor.
    rpc = "datadog_grpc_server_handling_seconds_count"
    ok = {"grpc_service": SCHEDULER, "grpc_code": "OK"}
    assert moved(scheduler, "scheduler", rpc, grpc_method="RunPipeline", **ok) == 1
    assert moved(scheduler, "scheduler", rpc, grpc_method="CreatePipeline", **ok) == 1
    not_found = {"grpc_service": SCHEDULER, "grpc_code": "NOT_FOUND"}
    assert moved(scheduler, "scheduler", rpc, grpc_method="GetRun", **not_found) == 1
    # The scheduler closes ExecuteTask once it has the final event: OK or CANCELLED.
    execute = {
        "grpc_service": "datadog_platform.api.executor.v1.ExecutorService",
        "grpc_method": "ExecuteTask",
    }
    calls = sum(
        moved(executor, "executor", rpc, grpc_code=code, **execute) for code in ("OK", "CANCELLED")
    )
    assert calls == 1

    # Scheduler: the stage attempt, its duration and data, runs by state from the store.
    stage = run.stages[0]
    assert stage.metrics.rows_written == 35
    attempts = "datadog_scheduler_stage_attempts_total"
    assert moved(scheduler, "scheduler", attempts, outcome="succeeded") == 1
    duration = "datadog_scheduler_stage_duration_seconds_count"
    assert moved(scheduler, "scheduler", duration, outcome="succeeded") == 1
    rows = "datadog_scheduler_stage_rows_total"
    assert moved(scheduler, "scheduler", rows, direction="written") == 35
    assert moved(scheduler, "scheduler", rows, direction="read") == stage.metrics.rows_read
    assert moved(scheduler, "scheduler", "datadog_scheduler_stage_bytes_total", direction="written")
    assert value(scheduler, "datadog_scheduler_stages_in_flight") == 0
    # Runs by state come from the store, read at most once a second whatever the scrapes.
    deadline = time.monotonic() + 5
    while value(scheduler, "datadog_scheduler_runs", state="SUCCEEDED") == 0:
        assert time.monotonic() < deadline, "the run gauges were not refreshed"
        await asyncio.sleep(0.2)
        scheduler = await scrape(stack.scheduler)
    assert value(scheduler, "datadog_scheduler_runs", state="SUCCEEDED") == 1
    assert value(scheduler, "datadog_scheduler_runs", state="RUNNING") == 0
    assert value(scheduler, "datadog_scheduler_pipelines") == 1

    # Executor: the task's outcome, data in and out, slots (none in use now).
    tasks = "datadog_executor_tasks_total"
    assert moved(executor, "executor", tasks, outcome="succeeded") == 1
    assert moved(executor, "executor", "datadog_executor_rows_total", direction="out") == 35
    assert moved(executor, "executor", "datadog_executor_rows_total", direction="in") == 50
    assert moved(executor, "executor", "datadog_executor_bytes_total", direction="in") > 0
    assert value(executor, "datadog_executor_slots_in_use") == 0
    assert value(executor, "datadog_executor_slots") >= 1

    # Connector: rows and bytes by operation and connection type.
    rows = "datadog_connector_rows_total"
    assert moved(connector, "connector", rows, operation="read", type="file") == 50
    assert moved(connector, "connector", rows, operation="write", type="file") == 35
    written = moved(
        connector, "connector", "datadog_connector_bytes_total", operation="write", type="file"
    )
    assert written > 0

    # The process collectors come with prometheus_client's default registry.
    assert value(scheduler, "process_cpu_seconds_total") > 0


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
async def test_get_metrics_counts_the_store(stack: Stack) -> None:
    empty = await stack.stub.GetMetrics(pb.GetMetricsRequest(), timeout=10)
    assert empty == pb.GetMetricsResponse()

    run = await run_example(stack.stub)
    got = await stack.stub.GetMetrics(pb.GetMetricsRequest(), timeout=10)
    assert got.pipelines == 1
    assert {c.state: c.count for c in got.runs} == {"SUCCEEDED": 1}
    assert {c.state: c.count for c in got.stages} == {"SUCCEEDED": 1}
    assert got.rows_written == 35
    assert got.bytes_written == run.stages[0].metrics.bytes_written > 0
    assert got.stages_in_flight == 0


async def test_an_unknown_path_is_404_and_the_endpoint_stops_with_the_server(
    tmp_path: Path,
) -> None:
    server = await build_connector(ConnectorConfig.local(tmp_path), metrics_listen="127.0.0.1:0")
    await server.start()
    address = server.metrics_address
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{address}/nope") as response:
            assert response.status == 404
        await server.stop(grace=0)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(f"http://{address}/metrics"):
                pass


def test_metrics_listen_follows_the_grpc_listener() -> None:
    assert resolve_metrics_listen("auto", "127.0.0.1:50051", 9451) == "127.0.0.1:9451"
    assert resolve_metrics_listen("auto", "0.0.0.0:50052", 9452) == "0.0.0.0:9452"
    # A free gRPC port means a free metrics port too: processes started that way coexist.
    assert resolve_metrics_listen("AUTO", "127.0.0.1:0", 9453) == "127.0.0.1:0"
    assert resolve_metrics_listen("", "127.0.0.1:50051", 9451) == ""
    assert resolve_metrics_listen("10.0.0.1:9999", "127.0.0.1:0", 9451) == "10.0.0.1:9999"


def test_a_process_prints_its_metrics_address_after_the_listening_line(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "datadog_platform.connector.main", "--listen", "127.0.0.1:0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert re.fullmatch(r"listening on 127\.0\.0\.1:\d+\n", process.stdout.readline())
        metrics = re.fullmatch(r"metrics on (127\.0\.0\.1:(\d+))\n", process.stdout.readline())
        assert metrics, "no metrics line"
        assert int(metrics[2]) != 0
        with socket.create_connection(("127.0.0.1", int(metrics[2])), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            reply = b"".join(iter(lambda: sock.recv(65536), b""))
        assert reply.split(b"\r\n", 1)[0].endswith(b" 200 OK")
        assert b"datadog_grpc_server_handling_seconds" in reply
    finally:
        process.terminate()
        process.wait(timeout=20)


async def test_a_busy_metrics_port_fails_the_start_with_a_readable_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = await build_connector(
            ConnectorConfig.local(tmp_path), metrics_listen=f"127.0.0.1:{port}"
        )
        # OSError is what the runner turns into one line on stderr and exit code 1.
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}: "):
            await server.start()
        await server.stop(grace=0)

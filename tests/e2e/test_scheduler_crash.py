"""Crash tests with real processes: kill a scheduler or an executor in the middle of a
stage, and check that the run still finishes with every row in the sink exactly once.

Each pipeline loads a Parquet file of ``ROWS`` rows into a PostgreSQL table (APPEND,
so a replayed write would show as duplicates if the connector's ledger did not stop
it), then runs a no-op stage that waits for the load (``after``). The services are
separate processes; the process under test is killed with SIGKILL once the load
stage has reported progress, so its attempt is mid-stream.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from google.protobuf import json_format
from service_process import ServiceProcess

from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

DSN = "postgresql://postgres@127.0.0.1:5432/test"
ROWS = 1_500_000
TERMINAL = {run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED}


def sql(query: str, dsn: str = DSN) -> list[tuple]:
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A connector root holding the input file and a config with a postgres connection."""
    root = tmp_path_factory.mktemp("crash")
    ids = pa.array(range(ROWS), pa.int64())
    table = pa.table({"id": ids, "label": pc.cast(ids, pa.string())})
    pq.write_table(table, root / "input.parquet", row_group_size=100_000)
    (root / "connectors.yaml").write_text(
        f"connections:\n  local: {{type: file, root: .}}\n"
        f'  warehouse: {{type: postgres, dsn: "{DSN}"}}\n'
    )
    (root / "logs").mkdir()
    return root


@pytest.fixture
def target() -> Iterator[str]:
    name = f"crash_{uuid.uuid4().hex[:12]}"
    yield name
    sql(f"DROP TABLE IF EXISTS public.{name}")


@pytest.fixture
def connector(workdir: Path) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(
        "datadog_platform.connector.main",
        "--config",
        str(workdir / "connectors.yaml"),
        cwd=workdir,
        log=workdir / "logs" / "connector.log",
    )
    yield proc
    proc.stop()


def executor(workdir: Path, connector: ServiceProcess, port: int) -> ServiceProcess:
    return ServiceProcess(
        "datadog_platform.executor.main",
        "--listen",
        f"127.0.0.1:{port}",
        "--connector",
        connector.address,
        cwd=workdir,
        log=workdir / "logs" / "executor.log",
    )


def scheduler(
    workdir: Path, store: str, executor_address: str, connector: ServiceProcess, *extra: str
) -> ServiceProcess:
    return ServiceProcess(
        "datadog_platform.scheduler.main",
        "--store",
        store,
        "--executor",
        executor_address,
        "--connector",
        connector.address,
        *extra,
        cwd=workdir,
        log=workdir / "logs" / "scheduler.log",
    )


def pipeline(name: str, table: str) -> pipeline_pb2.Pipeline:
    return json_format.ParseDict(
        {
            "name": name,
            "defaultRetry": {
                # Enough attempts to outlast an executor restart on a loaded machine.
                "maxAttempts": 30,
                "initialBackoff": "0.5s",
                "maxBackoff": "2s",
            },
            "steps": [
                {"name": "input", "source": {"file": {"path": "input.parquet"}}},
                {
                    "name": "load",
                    "inputs": ["input"],
                    "sink": {
                        "database": {
                            "connection": "warehouse",
                            "table": f"public.{table}",
                            "mode": "WRITE_MODE_APPEND",
                        }
                    },
                },
                {"name": "ping", "after": ["load"], "source": {"inline": {"rows": [{"x": 1}]}}},
                {"name": "done", "inputs": ["ping"], "sink": {"discard": {}}},
            ],
        },
        pipeline_pb2.Pipeline(),
    )


def stub(address: str) -> tuple[grpc.Channel, pb_grpc.SchedulerServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, pb_grpc.SchedulerServiceStub(channel)


def start_run(address: str, spec: pipeline_pb2.Pipeline) -> str:
    channel, api = stub(address)
    with channel:
        api.CreatePipeline(pb.CreatePipelineRequest(pipeline=spec), timeout=30)
        return api.RunPipeline(pb.RunPipelineRequest(pipeline=spec.name), timeout=30).run.run_id


def wait_for_progress(address: str, run_id: str, stage: str = "load") -> None:
    """Until the stage has moved rows (its attempt is mid-stream)."""
    channel, api = stub(address)
    deadline = time.monotonic() + 60
    with channel:
        while time.monotonic() < deadline:
            run = api.GetRun(pb.GetRunRequest(run_id=run_id), timeout=10).run
            current = next(s for s in run.stages if s.stage_id == stage)
            assert current.state != run_pb2.STAGE_STATE_SUCCEEDED, "finished before the crash"
            if current.state == run_pb2.STAGE_STATE_RUNNING and current.metrics.rows_read > 0:
                return
            time.sleep(0.05)
    raise AssertionError(f"stage {stage} of {run_id} never made progress")


def wait_finished(address: str, run_id: str, timeout: float = 120) -> run_pb2.Run:
    channel, api = stub(address)
    deadline = time.monotonic() + timeout
    with channel:
        while time.monotonic() < deadline:
            try:
                run = api.GetRun(pb.GetRunRequest(run_id=run_id), timeout=10).run
            except grpc.RpcError:
                time.sleep(0.2)  # a scheduler that is still starting
                continue
            if run.state in TERMINAL:
                return run
            time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish within {timeout} s")


def assert_loaded_once(run: run_pb2.Run, table: str) -> None:
    assert run.state == run_pb2.RUN_STATE_SUCCEEDED, run
    load = next(s for s in run.stages if s.stage_id == "load")
    assert load.attempt >= 2, "the crash did not interrupt an attempt"
    count, distinct, total = sql(
        f"SELECT count(*), count(DISTINCT id), sum(id) FROM public.{table}"
    )[0]
    assert (count, distinct, total) == (ROWS, ROWS, ROWS * (ROWS - 1) // 2)


def test_scheduler_killed_mid_stage_then_restarted(
    workdir: Path, connector: ServiceProcess, target: str
) -> None:
    store = str(workdir / f"state-{target}" / "scheduler.db")
    exe = executor(workdir, connector, 0)
    first = scheduler(workdir, store, exe.address, connector)
    try:
        run_id = start_run(first.address, pipeline(f"p_{target}", target))
        wait_for_progress(first.address, run_id)
        first.kill()
        second = scheduler(workdir, store, exe.address, connector)
        try:
            run = wait_finished(second.address, run_id)
        finally:
            second.stop()
        assert_loaded_once(run, target)
    finally:
        first.stop()
        exe.stop()


def test_executor_killed_mid_stage_is_retried(
    workdir: Path, connector: ServiceProcess, target: str
) -> None:
    port = free_port()
    exe = executor(workdir, connector, port)
    sched = scheduler(workdir, str(workdir / f"state-{target}" / "s.db"), exe.address, connector)
    try:
        run_id = start_run(sched.address, pipeline(f"p_{target}", target))
        wait_for_progress(sched.address, run_id)
        exe.kill()
        exe = executor(workdir, connector, port)  # back on the same address
        run = wait_finished(sched.address, run_id)
        assert_loaded_once(run, target)
        load = next(s for s in run.stages if s.stage_id == "load")
        assert load.error_reason == ""  # the retry's success cleared the first error
    finally:
        sched.stop()
        exe.stop()


def test_two_schedulers_one_killed(
    workdir: Path, connector: ServiceProcess, target: str, pg_url: str
) -> None:
    exe = executor(workdir, connector, 0)
    lease = ("--lease-seconds", "2")
    first = scheduler(workdir, pg_url, exe.address, connector, *lease, "--instance-id", "a")
    second = scheduler(workdir, pg_url, exe.address, connector, *lease, "--instance-id", "b")
    try:
        run_id = start_run(first.address, pipeline(f"p_{target}", target))
        wait_for_progress(first.address, run_id)
        first.kill()
        killed = time.monotonic()
        run = wait_finished(second.address, run_id)
        assert_loaded_once(run, target)
        # Adopted within the lease timeout (plus the second attempt's own run time).
        assert time.monotonic() - killed < 60
    finally:
        first.stop()
        second.stop()
        exe.stop()

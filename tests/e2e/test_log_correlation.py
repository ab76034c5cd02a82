"""One run's log lines carry its run id (and stage id) in all three services' JSON logs.

The services run as separate processes logging JSON to files; the scheduler sends the
ids with each stage attempt, the executor binds them and forwards them to the
connector, and each service's interceptor binds them into every line of the call.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf.json_format import ParseDict
from service_process import ServiceProcess

from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.api.scheduler.v1.scheduler_service_pb2_grpc import SchedulerServiceStub

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("connector", "executor", "scheduler")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[dict[str, ServiceProcess]]:
    """The three services as processes, each logging JSON to ``logs/<service>.log``."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: dict[str, ServiceProcess] = {}
    try:
        procs["connector"] = ServiceProcess(
            "datadog_platform.connector.main",
            *("--root", str(tmp_path)),
            cwd=tmp_path,
            log=logs / "connector.log",
        )
        procs["executor"] = ServiceProcess(
            "datadog_platform.executor.main",
            *("--connector", procs["connector"].address),
            cwd=tmp_path,
            log=logs / "executor.log",
        )
        procs["scheduler"] = ServiceProcess(
            "datadog_platform.scheduler.main",
            *("--store", str(tmp_path / "scheduler.db")),
            *("--executor", procs["executor"].address),
            *("--connector", procs["connector"].address),
            cwd=tmp_path,
            log=logs / "scheduler.log",
        )
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every JSON object line of a log (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_one_runs_lines_carry_its_ids_in_every_service(
    tmp_path: Path, services: dict[str, ServiceProcess]
) -> None:
    spec = ParseDict(
        yaml.safe_load((tmp_path / "examples" / "csv_to_parquet.yaml").read_text()),
        pipeline_pb2.Pipeline(),
    )
    async with grpc.aio.insecure_channel(services["scheduler"].address) as channel:
        stub = SchedulerServiceStub(channel)
        await stub.CreatePipeline(pb.CreatePipelineRequest(pipeline=spec), timeout=30)
        started = await stub.RunPipeline(pb.RunPipelineRequest(pipeline=spec.name), timeout=30)
        watch = stub.WatchRun(pb.WatchRunRequest(run_id=started.run.run_id), timeout=60)
        final = [response.run async for response in watch][-1]
    assert final.state == run_pb2.RUN_STATE_SUCCEEDED
    run_id = final.run_id
    (stage,) = final.stages

    # SIGTERM flushes and closes every log before they are read.
    for name in ("scheduler", "executor", "connector"):
        assert services[name].terminate() == 0, name
    logs = {name: json_lines(tmp_path / "logs" / f"{name}.log") for name in SERVICES}

    for name in SERVICES:
        lines = [line for line in logs[name] if line.get("run_id") == run_id]
        assert lines, f"no {name} log line carries run_id {run_id}"
        assert all(line["service"] == name for line in lines)

    # The stage attempt: the executor's lines while it ran, the connector's Read and
    # Write calls it made; one request id end to end (the scheduler's, for this attempt).
    attempt = {
        "run_id": run_id,
        "stage_id": stage.stage_id,
        "attempt": 1,
        "request_id": f"{run_id}/{stage.stage_id}/1",
    }

    def of_attempt(line: dict[str, Any]) -> bool:
        return all(line.get(key) == value for key, value in attempt.items())

    executor = [line for line in logs["executor"] if of_attempt(line)]
    assert executor, logs["executor"]
    assert all(line["rpc"].endswith("/ExecuteTask") for line in executor)
    for method in ("Read", "Write"):
        (line,) = [
            line
            for line in logs["connector"]
            if line.get("rpc", "").endswith(f"/{method}") and line.get("event") == "rpc.ok"
        ]
        assert of_attempt(line), line

    # The scheduler's own lines about the run.
    events = {line["event"] for line in logs["scheduler"] if line.get("run_id") == run_id}
    assert {"run.created", "run.finished"} <= events

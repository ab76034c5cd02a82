"""End to end: a Node.js client generated at run time from protos/ runs a pipeline.

``tests/e2e/node_client/run_pipeline.js`` loads the .proto files with @grpc/proto-loader
and talks to the scheduler with @grpc/grpc-js (both pinned devDependencies in
package.json, installed by ``npm ci``). The three services run as separate processes.
This proves the contracts work for a client in another language: the Node client's
encoding of the pipeline (oneofs, enums by name, maps, repeated Structs, a Duration)
is read back identically by the Python stubs, and its run executes for real.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest
from google.protobuf import json_format

from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as spb
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2_grpc as sgrpc

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "tests" / "e2e" / "node_client" / "run_pipeline.js"
ROWS = [{"x": 1, "name": "a"}, {"x": 2, "name": "b"}]


@pytest.fixture
def node() -> str:
    """The node executable and the npm packages the client needs; missing is a failure."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js (>= 18) to run the Node client test")
    for package in ("@grpc/grpc-js", "@grpc/proto-loader"):
        if not (REPO / "node_modules" / package / "package.json").is_file():
            pytest.fail(f"{package} is not installed: run `npm ci` in {REPO}")
    return node


def test_node_client_creates_and_runs_a_pipeline(
    node: str, scheduler: str, root: Path, tmp_path: Path
) -> None:
    name = f"node_client_{uuid.uuid4().hex[:12]}"
    out = f"out/{name}.parquet"
    spec = {
        "name": name,
        "description": "Inline rows written as Parquet by a Node.js client.",
        "tags": ["e2e", "node"],
        "labels": {"client": "grpc-js"},
        "runTimeout": "300s",  # lowerCamelCase and snake_case are both accepted
        "steps": [
            {"name": "rows", "source": {"inline": {"rows": ROWS}}},
            {
                "name": "out",
                "inputs": ["rows"],
                "sink": {
                    "file": {
                        "connection": "local",
                        "path": out,
                        "format": "FILE_FORMAT_PARQUET",
                        "mode": "WRITE_MODE_OVERWRITE",
                    }
                },
            },
        ],
    }
    spec_file = tmp_path / "pipeline.json"
    spec_file.write_text(json.dumps(spec))

    result = subprocess.run(
        [node, str(CLIENT), scheduler, str(spec_file)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    run = json.loads(result.stdout)

    # The final run, as the Node client printed it (proto3 JSON).
    assert run["state"] == "RUN_STATE_SUCCEEDED", run
    assert run["pipeline"] == name
    assert re.fullmatch(r"[0-9a-f]{32}", run["runId"]), run["runId"]
    assert run["trigger"] == "RUN_TRIGGER_MANUAL"
    assert run["endTime"].endswith("Z")
    assert run["stages"], run
    assert {stage["state"] for stage in run["stages"]} == {"STAGE_STATE_SUCCEEDED"}
    outputs = [o for stage in run["stages"] for o in stage.get("outputs", [])]
    assert [(o["step"], o["rowsWritten"]) for o in outputs] == [("out", "2")]

    # The file holds the rows, column by column.
    assert pq.read_table(root / out).to_pylist() == ROWS

    # What the Node client encoded is what a Python client reads back.
    with grpc.insecure_channel(scheduler) as channel:
        stub = sgrpc.SchedulerServiceStub(channel)
        stored = stub.GetPipeline(spb.GetPipelineRequest(name=name), timeout=10).pipeline
        got_run = stub.GetRun(spb.GetRunRequest(run_id=run["runId"]), timeout=10).run
    stored_json = json_format.MessageToDict(stored)
    for field in ("name", "description", "tags", "labels", "runTimeout", "steps"):
        assert stored_json[field] == spec[field], field
    assert json_format.MessageToDict(got_run) == run


def test_node_client_reports_an_invalid_pipeline(node: str, scheduler: str, tmp_path: Path) -> None:
    """A refused spec is a readable gRPC status on stderr and exit code 3, not a crash."""
    spec_file = tmp_path / "bad.json"
    spec_file.write_text(
        json.dumps({"name": "bad", "steps": [{"name": "a", "inputs": ["ghost"], "sink": {}}]})
    )
    result = subprocess.run(
        [node, str(CLIENT), scheduler, str(spec_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr.startswith("CreatePipeline: INVALID_ARGUMENT: "), result.stderr
    assert result.stdout == ""

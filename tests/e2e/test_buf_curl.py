"""End to end: `buf curl` drives the public API with server reflection only.

`buf curl` (node_modules/.bin/buf, the pinned @bufbuild/buf devDependency) is a
third-party client that knows nothing of this repository: it runs from a directory
without any .proto file and learns every type from the scheduler's reflection service.
The README's pipeline file, as JSON, is created, run and polled to completion over
gRPC (HTTP/2 with prior knowledge), and the error model (google.rpc.Status with
ErrorInfo and BadRequest) reaches it intact. (test_example_pipeline.py already checks
`grpcurl list` and the health service of each process; this does not repeat it.)
"""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from google.rpc import error_details_pb2

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BUF = REPO / "node_modules" / ".bin" / "buf"
SERVICE = "datadog_platform.api.scheduler.v1.SchedulerService"
FINAL = {"RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Root of the connector's "local" file connection, holding the example's CSV."""
    root = tmp_path / "root"
    (root / "examples" / "data").mkdir(parents=True)
    shutil.copy(REPO / "examples" / "data" / "orders.csv", root / "examples" / "data")
    return root


@pytest.fixture(autouse=True)
def require_buf() -> None:
    """buf is installed (checked before the services start: autouse runs first)."""
    if not BUF.exists():
        pytest.fail(f"{BUF} is missing: run `npm ci` in {REPO}")


def buf_curl(
    address: str, method: str, request: dict[str, Any], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """One unary call with `buf curl`, the schema from server reflection only."""
    return subprocess.run(
        [
            str(BUF),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--data",
            json.dumps(request),
            f"http://{address}/{SERVICE}/{method}",
        ],
        cwd=cwd,  # no buf.yaml, no .proto file: reflection is the only schema
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def decode_any(detail: dict[str, str]) -> Any:
    """A status detail as buf curl prints it: {"type": name, "value": unpadded base64}."""
    message = {
        "google.rpc.ErrorInfo": error_details_pb2.ErrorInfo,
        "google.rpc.BadRequest": error_details_pb2.BadRequest,
    }[detail["type"]]()
    value = detail["value"].replace("-", "+").replace("_", "/")
    message.ParseFromString(base64.b64decode(value + "=" * (-len(value) % 4)))
    return message


def test_buf_curl_creates_runs_and_polls_a_pipeline(
    scheduler: str, root: Path, tmp_path: Path
) -> None:
    cwd = tmp_path / "client"
    cwd.mkdir()
    # The README's YAML pipeline is exactly the proto3 JSON of a Pipeline.
    pipeline = yaml.safe_load((REPO / "examples" / "csv_to_parquet.yaml").read_text())
    name = f"buf_curl_{uuid.uuid4().hex[:12]}"
    pipeline["name"] = name
    out = f"out/{name}.parquet"
    pipeline["steps"][-1]["sink"]["file"]["path"] = out

    created = ok(buf_curl(scheduler, "CreatePipeline", {"pipeline": pipeline}, cwd))["pipeline"]
    assert created["name"] == name
    assert created["version"] == "1"  # int64 as a JSON string
    assert [s["name"] for s in created["steps"]] == [s["name"] for s in pipeline["steps"]]

    request_id = str(uuid.uuid4())
    started = time.monotonic()
    run = ok(buf_curl(scheduler, "RunPipeline", {"pipeline": name, "requestId": request_id}, cwd))
    run_id = run["run"]["runId"]
    assert re.fullmatch(r"[0-9a-f]{32}", run_id)
    # The same request_id from a retrying client is the same run, not a second one.
    again = ok(buf_curl(scheduler, "RunPipeline", {"pipeline": name, "requestId": request_id}, cwd))
    assert again["run"]["runId"] == run_id

    state = run["run"]["state"]
    while state not in FINAL:
        assert time.monotonic() - started < 60, f"run {run_id} still {state}"
        time.sleep(0.2)
        got = ok(buf_curl(scheduler, "GetRun", {"runId": run_id}, cwd))["run"]
        state = got["state"]
    assert state == "RUN_STATE_SUCCEEDED", got
    assert got["pipeline"] == name
    assert got["pipelineVersion"] == "1"
    assert {stage["state"] for stage in got["stages"]} == {"STAGE_STATE_SUCCEEDED"}

    with (root / "examples" / "data" / "orders.csv").open(newline="", encoding="utf-8") as f:
        want = [int(r["order_id"]) for r in csv.DictReader(f) if Decimal(r["amount"]) > 100]
    outputs = [o for stage in got["stages"] for o in stage.get("outputs", [])]
    assert [(o["step"], o["rowsWritten"]) for o in outputs] == [("out", str(len(want)))]
    assert pq.read_table(root / out).column("order_id").to_pylist() == want


def test_buf_curl_sees_the_error_details(scheduler: str, tmp_path: Path) -> None:
    """A refused spec reaches a third-party client as INVALID_ARGUMENT with its details."""
    bad = {"name": "bad", "steps": [{"name": "a", "inputs": ["ghost"], "sink": {}}]}
    result = buf_curl(scheduler, "CreatePipeline", {"pipeline": bad}, tmp_path)
    assert result.returncode == 3 * 8, result.stderr  # buf curl exits with code * 8
    error = json.loads(result.stderr)
    assert error["code"] == "invalid_argument"
    details = [decode_any(d) for d in error["details"]]
    infos = [d for d in details if isinstance(d, error_details_pb2.ErrorInfo)]
    assert [(i.reason, i.domain) for i in infos] == [("INVALID_PIPELINE_SPEC", "datadog_platform")]
    (bad_request,) = [d for d in details if isinstance(d, error_details_pb2.BadRequest)]
    assert {v.field for v in bad_request.field_violations} == {
        "pipeline.steps[0].inputs[0]",
        "pipeline.steps[0].sink",
    }

"""The ``datadog`` CLI against the real services, started in-process on ephemeral ports.

The CLI is synchronous while the fixtures' servers run on the test's event loop, so
``main`` runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import yaml

from datadog_platform.api.scheduler.v1 import run_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.api.scheduler.v1.scheduler_service_pb2_grpc import SchedulerServiceStub
from datadog_platform.cli.main import main
from datadog_platform.core.channels import insecure_channel

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "csv_to_parquet.yaml"


async def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``datadog ARGS`` in a thread; returns (exit code, stdout, stderr)."""
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def example_data(data_root: Path) -> Path:
    """The example's input CSV under the "local" connection's root."""
    target = data_root / "examples" / "data"
    target.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "data" / "orders.csv", target / "orders.csv")
    return target / "orders.csv"


@pytest.fixture
def dead_address() -> Iterator[str]:
    """An address where nothing listens: a bound socket that never accepts.

    Safer than a fixed port such as 1, which another process may happen to hold.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def output_file(data_root: Path) -> Path:
    """Where the example writes, as an absolute path (its location is file:// + this)."""
    return data_root.resolve() / "out" / "big_orders.parquet"


def run_id_of(out: str) -> str:
    """The id in the ``started run ID of ...`` line printed by ``pipeline run --wait``."""
    for line in out.splitlines():
        if line.startswith("started run "):
            return line.split()[2]
    raise AssertionError(f"no run id in:\n{out}")


async def test_create_list_get_run_and_status_of_the_example(
    scheduler_address: str,
    data_root: Path,
    example_data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = ("--server", scheduler_address)

    code, out, err = await cli(capsys, *server, "pipeline", "create", "-f", str(EXAMPLE))
    assert (code, err) == (0, "")
    assert "created pipeline csv_to_parquet version 1" in out
    assert "stage out: orders -> big_orders -> out" in out

    code, out, _ = await cli(capsys, *server, "pipeline", "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["NAME", "VERSION", "STEPS"]
    assert [row.split()[:3] for row in rows] == [["csv_to_parquet", "1", "3"]]

    code, out, _ = await cli(capsys, *server, "pipeline", "get", "csv_to_parquet")
    assert code == 0
    assert "Description:  Orders over 100 from the example CSV, written as Parquet." in out
    assert "Tags:         example" in out
    assert "Labels:       team=data-platform" in out
    assert "predicate=amount > 100" in out
    lines = out.splitlines()
    steps_at = lines.index("Steps:") + 2  # after the table's header
    step_rows = {line.split()[0]: line.split()[1:3] for line in lines[steps_at : steps_at + 3]}
    assert step_rows == {
        "orders": ["source/file", "-"],
        "big_orders": ["transform/filter", "orders"],
        "out": ["sink/file", "big_orders"],
    }
    assert "  stage out: orders -> big_orders -> out" in out

    code, out, err = await cli(capsys, *server, "pipeline", "run", "csv_to_parquet", "--wait")
    written = output_file(data_root)
    assert (code, err) == (0, "")
    assert "run SUCCEEDED" in out  # plain progress lines, as stdout is not a terminal
    assert f"out: wrote 35 rows to file://{written}" in out
    assert (await asyncio.to_thread(pq.read_table, written)).num_rows == 35
    run_id = run_id_of(out)

    code, out, _ = await cli(capsys, *server, "run", "status", run_id)
    assert code == 0
    assert f"Run:       {run_id}" in out
    assert "Pipeline:  csv_to_parquet (version 1)" in out
    assert "State:     SUCCEEDED" in out
    assert "  out: SUCCEEDED, attempt 1, rows read 50, written 35" in out
    assert f"output out: wrote 35 rows to file://{written}" in out

    # The same name again is refused, on one line, with the scheduler's reason.
    code, out, err = await cli(capsys, *server, "pipeline", "create", "-f", str(EXAMPLE))
    assert code == 6
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ")
    assert "(ALREADY_EXISTS, " in err


async def test_run_without_wait_prints_only_the_run_id(
    scheduler_address: str, example_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", scheduler_address)
    assert (await cli(capsys, *server, "pipeline", "create", "-f", str(EXAMPLE)))[0] == 0
    code, out, _ = await cli(capsys, *server, "pipeline", "run", "csv_to_parquet")
    assert code == 0
    (run_id,) = out.split()
    code, out, _ = await cli(capsys, *server, "run", "status", run_id)
    assert code == 0
    assert f"Run:       {run_id}" in out


async def test_invalid_spec_prints_each_violation_and_exits_4(
    scheduler_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        """\
name: bad
steps:
  - name: orders
    source: {file: {path: in.csv}}
  - name: orders
    source: {file: {path: other.csv}}
  - name: out
    inputs: [nowhere]
    sink: {file: {path: out.parquet}}
""",
        encoding="utf-8",
    )
    code, out, err = await cli(
        capsys, "--server", scheduler_address, "pipeline", "create", "-f", str(spec)
    )
    assert code == 4
    assert out == ""
    first, *violations = err.splitlines()
    assert first.startswith("error: ")
    assert "(INVALID_ARGUMENT, " in first
    assert len(violations) >= 2
    assert all(line.startswith("  - pipeline.steps[") for line in violations)
    assert any("steps[1].name" in line for line in violations)  # the duplicate name
    assert any("steps[2].inputs" in line and "nowhere" in line for line in violations)


async def test_unknown_pipeline_and_run_exit_3(
    scheduler_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", scheduler_address)
    for args in (
        ("pipeline", "get", "nope"),
        ("pipeline", "run", "nope", "--wait"),
        ("run", "status", "no-such-run"),
    ):
        code, out, err = await cli(capsys, *server, *args)
        assert code == 3, args
        assert out == ""
        assert len(err.splitlines()) == 1
        assert err.startswith("error: ")
        assert "(NOT_FOUND, " in err


async def test_unreachable_server_exits_5_with_one_line(
    dead_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await cli(capsys, "--server", dead_address, "pipeline", "list")
    assert code == 5
    assert out == ""
    assert err.splitlines() == [
        f"error: cannot reach the DataDog scheduler at {dead_address} (UNAVAILABLE)"
    ]


async def test_connector_list_shows_the_local_connection(
    scheduler_address: str, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await cli(capsys, "--server", scheduler_address, "connector", "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "TYPE", "DESCRIPTION", "OPTIONS"]
    local = [row for row in rows if row.split()[0] == "local"]
    assert len(local) == 1
    assert local[0].split()[1] == "file"


async def test_missing_input_file_fails_the_run_with_exit_1(
    scheduler_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", scheduler_address)
    spec = tmp_path / "missing.yaml"
    spec.write_text(
        EXAMPLE.read_text(encoding="utf-8")
        .replace("name: csv_to_parquet", "name: missing_input")
        .replace("examples/data/orders.csv", "examples/data/absent.csv"),
        encoding="utf-8",
    )
    assert (await cli(capsys, *server, "pipeline", "create", "-f", str(spec)))[0] == 0

    code, out, err = await cli(capsys, *server, "pipeline", "run", "missing_input", "--wait")
    assert code == 1
    assert err == ""
    assert "run FAILED" in out
    assert "stage out FAILED (attempt " in out
    assert "SOURCE_NOT_FOUND" in out
    run_id = run_id_of(out)

    code, out, _ = await cli(capsys, *server, "run", "status", run_id)
    assert code == 0  # reporting a failed run is not a failure of the command
    assert "State:     FAILED" in out
    assert "error: SOURCE_NOT_FOUND" in out


async def _running_stage(stub: SchedulerServiceStub, run_id: str) -> None:
    call = stub.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=30)
    async for response in call:
        if response.run.stages[0].state == run_pb2.STAGE_STATE_RUNNING:
            call.cancel()
            return
    raise AssertionError("the run ended before its stage was running")


async def test_run_list_and_run_cancel(
    scheduler_address: str,
    data_root: Path,
    example_data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = ("--server", scheduler_address)
    assert (await cli(capsys, *server, "pipeline", "create", "-f", str(EXAMPLE)))[0] == 0
    code, out, _ = await cli(capsys, *server, "run", "list")
    assert (code, out.strip()) == (0, "no runs")
    code, out, _ = await cli(capsys, *server, "pipeline", "run", "csv_to_parquet", "--wait")
    assert code == 0
    done = run_id_of(out)

    code, out, err = await cli(capsys, *server, "run", "list", "--pipeline", "csv_to_parquet")
    assert (code, err) == (0, "")
    header, row = out.splitlines()
    assert header.split() == [
        *("RUN", "ID", "PIPELINE", "VERSION", "STATE", "TRIGGER"),
        *("LOGICAL", "DATE", "CREATED", "DURATION"),
    ]
    assert row.split()[:5] == [done, "csv_to_parquet", "1", "SUCCEEDED", "MANUAL"]
    code, out, _ = await cli(capsys, *server, "run", "list", "--state", "failed", "cancelled")
    assert (code, out.strip()) == (0, "no runs")
    code, _, err = await cli(capsys, *server, "run", "list", "--state", "bogus")
    assert code == 2
    assert "invalid choice" in err

    # A finished run cannot be cancelled: a readable error, exit 6.
    code, out, err = await cli(capsys, *server, "run", "cancel", done)
    assert (code, out) == (6, "")
    assert "already finished" in err
    assert "RUN_ALREADY_FINISHED" in err
    assert len(err.splitlines()) == 1

    # A slow run, cancelled from the CLI while its stage runs.
    ids = pa.array(range(3_000_000), pa.int64())
    pa_csv.write_csv(pa.table({"order_id": ids, "amount": ids}), example_data)
    async with insecure_channel(scheduler_address) as channel:
        stub = SchedulerServiceStub(channel)
        run = await stub.RunPipeline(pb.RunPipelineRequest(pipeline="csv_to_parquet"), timeout=10)
        await _running_stage(stub, run.run.run_id)
        code, out, err = await cli(capsys, *server, "run", "cancel", run.run.run_id)
        assert (code, err) == (0, "")
        assert out.strip() == f"run {run.run.run_id} CANCELLED"

        # `pipeline run --wait` of a run that gets cancelled: exit 1, says "cancelled".
        waiting = asyncio.create_task(
            cli(capsys, *server, "pipeline", "run", "csv_to_parquet", "--wait")
        )
        for _ in range(200):
            listed = await stub.ListRuns(
                pb.ListRunsRequest(states=[run_pb2.RUN_STATE_QUEUED, run_pb2.RUN_STATE_RUNNING]),
                timeout=10,
            )
            if listed.runs:
                break
            await asyncio.sleep(0.02)
        (pending,) = listed.runs
        await _running_stage(stub, pending.run_id)
        await stub.CancelRun(pb.CancelRunRequest(run_id=pending.run_id), timeout=10)
        code, out, _ = await waiting
    assert code == 1
    assert f"run {pending.run_id} CANCELLED" in out
    assert "cancelled" in out


async def test_run_retry_wait_reruns_a_failed_run(
    scheduler_address: str, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", scheduler_address)
    assert (await cli(capsys, *server, "pipeline", "create", "-f", str(EXAMPLE)))[0] == 0
    code, out, _ = await cli(capsys, *server, "pipeline", "run", "csv_to_parquet", "--wait")
    assert code == 1  # its input file is not there yet
    assert "SOURCE_NOT_FOUND" in out
    run_id = run_id_of(out)

    target = data_root / "examples" / "data"
    target.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "data" / "orders.csv", target / "orders.csv")
    code, out, err = await cli(capsys, *server, "run", "retry", run_id, "--wait")
    written = output_file(data_root)
    assert (code, err) == (0, "")
    assert f"retrying run {run_id} of csv_to_parquet version 1" in out
    assert "run SUCCEEDED" in out
    assert f"out: wrote 35 rows to file://{written}" in out
    assert (await asyncio.to_thread(pq.read_table, written)).num_rows == 35

    code, out, _ = await cli(capsys, *server, "run", "status", run_id)
    assert "  out: SUCCEEDED, attempt 2, rows read 50, written 35" in out
    # Nothing left to retry: a readable error, exit 6.
    code, out, err = await cli(capsys, *server, "run", "retry", run_id)
    assert (code, out) == (6, "")
    assert "RUN_ALREADY_SUCCEEDED" in err


# --- issue 4: update, validate, delete, pause, params, backfills, logs --------------------

NOOP = """\
name: {name}
params: {{region: eu, limit: 10}}
{extra}
steps:
  - name: rows
    source: {{inline: {{rows: [{{n: 1}}]}}}}
  - name: out
    inputs: [rows]
    sink: {{discard: {{}}}}
"""


def noop_file(tmp_path: Path, name: str = "noop", extra: str = "") -> Path:
    """A no-op pipeline file (one inline row into a discarding sink)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(NOOP.format(name=name, extra=extra), encoding="utf-8")
    return path


YEARLY = 'schedule: {cron: "0 0 1 1 *", timezone: UTC}'


async def test_validate_prints_the_plan_or_the_problems(
    scheduler_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", scheduler_address)
    code, out, err = await cli(capsys, *server, "pipeline", "validate", "-f", str(EXAMPLE))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{EXAMPLE}: valid; plan (1 stage):",
        "  stage out: orders -> big_orders -> out",
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace("name: csv_to_parquet", "name: 9bad")
        + 'schedule: {cron: "61 * * * *"}\n',
        encoding="utf-8",
    )
    code, out, err = await cli(capsys, *server, "pipeline", "validate", "-f", str(bad))
    assert (code, out) == (4, "")
    first, *violations = err.splitlines()
    assert first == (
        f"error: {bad}: the pipeline spec has 2 problems (INVALID_ARGUMENT, INVALID_PIPELINE_SPEC)"
    )
    assert [line.split(":")[0] for line in violations] == [
        "  - pipeline.name",
        "  - pipeline.schedule.cron",
    ]
    # Nothing was stored.
    code, out, _ = await cli(capsys, *server, "pipeline", "list")
    assert (code, out.strip()) == (0, "no pipelines")


async def test_update_pause_unpause_and_get_show_versions_and_the_schedule(
    scheduler_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", scheduler_address)
    path = noop_file(tmp_path)
    code, out, _ = await cli(capsys, *server, "pipeline", "create", "-f", str(path))
    assert code == 0
    assert "schedule" not in out

    noop_file(tmp_path, extra=YEARLY)
    code, out, err = await cli(capsys, *server, "pipeline", "update", "-f", str(path))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:3] == [
        "updated pipeline noop to version 2",
        "plan (1 stage):",
        "  stage out: rows -> out",
    ]
    assert lines[3].startswith("schedule: 0 0 1 1 * (UTC), catchup off; next run: ")
    assert lines[3].endswith("-01-01 " + lines[3].split("-01-01 ")[-1])  # a New Year's Day

    code, out, _ = await cli(capsys, *server, "pipeline", "pause", "noop")
    assert (code, out.strip()) == (0, "paused pipeline noop")
    code, out, _ = await cli(capsys, *server, "pipeline", "get", "noop")
    assert code == 0
    assert "Version:      2" in out
    assert 'Params:       limit=10, region="eu"' in out
    assert "Schedule:     0 0 1 1 * (UTC), catchup off" in out
    assert "Paused:       yes" in out
    assert "Next run:     - (paused)" in out
    code, out, _ = await cli(capsys, *server, "pipeline", "list")
    assert "0 0 1 1 * (paused)" in out
    code, out, _ = await cli(capsys, *server, "pipeline", "unpause", "noop")
    assert code == 0
    assert out.startswith("unpaused pipeline noop; next run: ")
    code, out, _ = await cli(capsys, *server, "pipeline", "get", "noop", "--version", "1")
    assert "Version:      1" in out
    assert "Schedule:     -" in out

    for args in (("pipeline", "pause", "nope"), ("pipeline", "unpause", "nope")):
        code, out, err = await cli(capsys, *server, *args)
        assert (code, out) == (3, ""), args
        assert "PIPELINE_NOT_FOUND" in err
    other = noop_file(tmp_path, "other")
    code, out, err = await cli(capsys, *server, "pipeline", "update", "-f", str(other))
    assert (code, out) == (3, "")
    assert "PIPELINE_NOT_FOUND" in err


async def test_run_with_params_and_its_logs(
    scheduler_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", scheduler_address)
    path = noop_file(tmp_path)
    assert (await cli(capsys, *server, "pipeline", "create", "-f", str(path)))[0] == 0
    code, out, err = await cli(
        capsys, *server, "pipeline", "run", "noop", "-p", "region=us", "-p", "limit=5", "--wait"
    )
    assert (code, err) == (0, "")
    run_id = run_id_of(out)
    code, out, _ = await cli(capsys, *server, "run", "status", run_id)
    assert 'Params:    limit=5, region="us"' in out
    assert "Trigger:   MANUAL" in out

    code, out, err = await cli(capsys, *server, "run", "logs", run_id, "out")
    assert (code, err) == (0, "")
    code, followed, err = await cli(capsys, *server, "run", "logs", run_id, "out", "--follow")
    assert (code, err) == (0, "")  # a finished attempt: prints what there is and ends
    assert followed == out
    code, out, _ = await cli(capsys, *server, "run", "logs", run_id, "out", "--attempt", "1")
    assert (code, out) == (0, followed)
    code, out, err = await cli(capsys, *server, "run", "logs", run_id, "nope")
    assert (code, out) == (3, "")
    assert "STAGE_NOT_FOUND" in err

    code, out, err = await cli(capsys, *server, "pipeline", "run", "noop", "-p", "regoin=us")
    assert (code, out) == (4, "")
    assert "UNKNOWN_PARAM" in err
    assert '  - params["regoin"]: ' in err


async def test_delete_asks_for_yes_and_removes_everything(
    scheduler_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", scheduler_address)
    path = noop_file(tmp_path)
    assert (await cli(capsys, *server, "pipeline", "create", "-f", str(path)))[0] == 0
    assert (await cli(capsys, *server, "pipeline", "update", "-f", str(path)))[0] == 0
    code, out, _ = await cli(capsys, *server, "pipeline", "run", "noop", "--wait")
    assert code == 0
    run_id = run_id_of(out)

    # Standard input is not a terminal here: without --yes nothing is deleted.
    code, out, err = await cli(capsys, *server, "pipeline", "delete", "noop")
    assert (code, out) == (2, "")
    assert err.strip() == (
        "error: not deleting pipeline noop: confirm with --yes (standard input is not a terminal)"
    )
    code, out, err = await cli(capsys, *server, "pipeline", "delete", "noop", "--yes")
    assert (code, err) == (0, "")
    assert out.strip() == "deleted pipeline noop (2 versions, 1 run)"
    code, _, err = await cli(capsys, *server, "run", "status", run_id)
    assert code == 3
    code, _, err = await cli(capsys, *server, "pipeline", "delete", "noop", "--yes")
    assert code == 3
    assert "PIPELINE_NOT_FOUND" in err


async def test_backfill_wait_list_get_runs_and_cancel(
    scheduler_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", scheduler_address)
    path = noop_file(tmp_path, extra=YEARLY)
    assert (await cli(capsys, *server, "pipeline", "create", "-f", str(path)))[0] == 0
    code, out, err = await cli(
        capsys,
        *server,
        "pipeline",
        "backfill",
        "noop",
        "--start",
        "2020-01-01",
        "--end",
        "2023-01-01",
        "--max-active-runs",
        "3",
        "-p",
        "region=us",
        "--wait",
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("started backfill ")
    assert lines[0].endswith(" of noop: 3 runs")
    backfill_id = lines[0].split()[2]
    assert lines[-1] == (
        f"backfill {backfill_id} SUCCEEDED: 3/3 runs created, 3 succeeded, 0 failed"
    )

    code, out, _ = await cli(capsys, *server, "backfill", "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:4] == ["BACKFILL", "ID", "PIPELINE", "STATE"]
    assert row.split()[:3] == [backfill_id, "noop", "SUCCEEDED"]
    code, out, _ = await cli(capsys, *server, "backfill", "list", "--pipeline", "other")
    assert (code, out.strip()) == (0, "no backfills")
    code, out, _ = await cli(capsys, *server, "backfill", "get", backfill_id)
    assert code == 0
    assert "State:       SUCCEEDED" in out
    assert "Runs:        3/3 runs created, 3 succeeded, 0 failed" in out
    assert 'Params:      region="us"' in out

    code, out, _ = await cli(capsys, *server, "run", "list", "--backfill", backfill_id)
    assert code == 0
    header, *rows = out.splitlines()
    assert len(rows) == 3
    assert all(row.split()[3:5] == ["SUCCEEDED", "BACKFILL"] for row in rows)

    code, out, err = await cli(capsys, *server, "backfill", "cancel", backfill_id)
    assert (code, out) == (6, "")
    assert "BACKFILL_ALREADY_FINISHED" in err
    for args in (("backfill", "get", "nope"), ("backfill", "cancel", "nope")):
        code, out, err = await cli(capsys, *server, *args)
        assert (code, out) == (3, ""), args
        assert "BACKFILL_NOT_FOUND" in err
    code, out, err = await cli(
        capsys,
        *server,
        "pipeline",
        "backfill",
        "noop",
        "--start",
        "2021-01-01",
        "--end",
        "2020-01-01",
    )
    assert (code, out) == (4, "")
    assert "end_date" in err


async def test_run_logs_follow_ends_with_the_attempt(
    scheduler_address: str, example_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", scheduler_address)
    ids = pa.array(range(1_000_000), pa.int64())
    pa_csv.write_csv(pa.table({"order_id": ids, "amount": ids}), example_data)
    assert (await cli(capsys, *server, "pipeline", "create", "-f", str(EXAMPLE)))[0] == 0
    async with insecure_channel(scheduler_address) as channel:
        stub = SchedulerServiceStub(channel)
        run = (
            await stub.RunPipeline(pb.RunPipelineRequest(pipeline="csv_to_parquet"), timeout=10)
        ).run
        await _running_stage(stub, run.run_id)
        code, followed, err = await cli(capsys, *server, "run", "logs", run.run_id, "out", "-f")
        assert (code, err) == (0, "")
        # It returned because the attempt ended, with every line the attempt wrote.
        final = (await stub.GetRun(pb.GetRunRequest(run_id=run.run_id), timeout=10)).run
    assert final.stages[0].state == run_pb2.STAGE_STATE_SUCCEEDED
    assert followed
    code, out, _ = await cli(capsys, *server, "run", "logs", run.run_id, "out")
    assert (code, out) == (0, followed)


# --- -o json|yaml, pipeline status, run get/watch, schedules, connectors, transforms, contexts


def parsed(fmt: str, out: str) -> object:
    """Standard output of ``-o json`` or ``-o yaml``, parsed."""
    return json.loads(out) if fmt == "json" else yaml.safe_load(out)


@pytest.mark.parametrize("fmt", ["json", "yaml"])
async def test_every_read_command_prints_json_and_yaml_that_parse(
    scheduler_address: str,
    data_root: Path,
    example_data: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
) -> None:
    server = ("--server", scheduler_address)
    assert (await cli(capsys, *server, "pipeline", "create", "-f", str(EXAMPLE)))[0] == 0
    code, out, _ = await cli(capsys, *server, "pipeline", "run", "csv_to_parquet", "--wait")
    assert code == 0
    run_id = run_id_of(out)
    o = ("-o", fmt)

    async def read(*args: str) -> Any:
        code, out, err = await cli(capsys, *server, *args, *o)
        assert (code, err) == (0, ""), args
        return parsed(fmt, out)

    listing = await read("pipeline", "list")
    assert [(p["name"], p["version"]) for p in listing["pipelines"]] == [("csv_to_parquet", "1")]
    got = await read("pipeline", "get", "csv_to_parquet")
    assert got["pipeline"]["steps"][1]["transform"]["filter"]["predicate"] == "amount > 100"
    assert got["plan"][0]["stage_id"] == "out"
    status = await read("pipeline", "status", "csv_to_parquet")
    assert status["pipeline"]["name"] == "csv_to_parquet"
    assert [r["run_id"] for r in status["runs"]] == [run_id]
    for command in ("get", "status"):
        run = (await read("run", command, run_id))["run"]
        assert (run["state"], run["stages"][0]["metrics"]["rows_written"]) == (
            "RUN_STATE_SUCCEEDED",
            "35",
        )
    runs = await read("run", "list", "--pipeline", "csv_to_parquet")
    assert [r["run_id"] for r in runs["runs"]] == [run_id]
    assert (await read("backfill", "list")) == {"backfills": []}
    assert (await read("schedule", "list")) == {"pipelines": []}
    connections = await read("connector", "list")
    assert "local" in [c["name"] for c in connections["connections"]]

    code, out, err = await cli(capsys, *server, "run", "logs", run_id, "out", *o)
    assert (code, err) == (0, "")
    lines = (
        [json.loads(line) for line in out.splitlines()]
        if fmt == "json"
        else list(yaml.safe_load_all(out))
    )
    assert lines
    assert all(line["attempt"] == 1 and line["level"].startswith("LOG_LEVEL_") for line in lines)


async def test_pipeline_status_run_get_and_run_watch(
    scheduler_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", scheduler_address)
    path = noop_file(tmp_path, extra=YEARLY)
    assert (await cli(capsys, *server, "pipeline", "create", "-f", str(path)))[0] == 0
    code, out, _ = await cli(capsys, *server, "pipeline", "run", "noop")
    run_id = out.strip()

    code, out, err = await cli(capsys, *server, "run", "watch", run_id)
    assert (code, err) == (0, "")
    assert "run SUCCEEDED" in out  # plain lines: standard output is not a terminal
    assert out.splitlines()[-2].startswith(f"run {run_id} SUCCEEDED in ")

    code, out, _ = await cli(capsys, *server, "run", "get", run_id)
    assert (code, out.splitlines()[0]) == (0, f"Run:       {run_id}")

    code, out, _ = await cli(capsys, *server, "pipeline", "status", "noop")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Pipeline:  noop (version 1)"
    assert lines[1] == "Schedule:  0 0 1 1 * (UTC), catchup off"
    assert lines[6].split()[:4] == [run_id, "noop", "1", "SUCCEEDED"]

    code, out, _ = await cli(capsys, *server, "schedule", "list")
    assert code == 0
    assert out.splitlines()[1].split()[:10] == [
        "noop",
        "0",
        "0",
        "1",
        "1",
        "*",
        "UTC",
        "off",
        "no",
        str(datetime.now(UTC).year + 1) + "-01-01",
    ]

    for args in (("run", "watch", "nope"), ("pipeline", "status", "nope")):
        code, out, err = await cli(capsys, *server, *args)
        assert (code, out, len(err.splitlines())) == (3, "", 1), args


async def test_connector_test_describe_and_transform_list(
    scheduler_address: str, example_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ("--server", scheduler_address)
    code, out, err = await cli(capsys, *server, "connector", "test", "--connection", "local")
    assert (code, err) == (0, "")
    assert out.splitlines()[1].split()[:2] == ["local", "ok"]
    code, out, _ = await cli(capsys, *server, "connector", "test", "-f", str(EXAMPLE), "-o", "json")
    assert code == 0
    assert [(r["name"], r["ok"]) for r in json.loads(out)["results"]] == [("local", True)]
    code, _, err = await cli(capsys, *server, "connector", "test", "--connection", "nope")
    assert code == 3
    assert len(err.splitlines()) == 1

    code, out, err = await cli(
        capsys, *server, "connector", "describe", "--step", "orders", "-f", str(EXAMPLE)
    )
    assert (code, err) == (0, "")
    columns = [line.split()[0] for line in out.splitlines()[1:] if line.split()]
    assert columns[:5] == ["order_id", "customer", "country", "amount", "ordered_at"]
    source = json.dumps({"file": {"path": "examples/data/orders.csv", "format": "FILE_FORMAT_CSV"}})
    code, out, _ = await cli(
        capsys, *server, "connector", "describe", "--source", source, "-o", "yaml"
    )
    assert code == 0
    described = yaml.safe_load(out)["columns"]
    assert [c["name"] for c in described][:2] == ["order_id", "customer"]
    assert all(c["type"] for c in described)

    code, out, err = await cli(capsys, *server, "transform", "list")
    assert (code, err) == (0, "")
    assert "filter" in [line.split()[0] for line in out.splitlines()[1:]]
    code, out, _ = await cli(capsys, *server, "transform", "list", "-o", "json")
    assert "filter" in [t["name"] for t in json.loads(out)["transform_types"]]


@pytest.mark.parametrize(
    "args",
    [
        ("transform", "list"),
        ("schedule", "list", "-o", "json"),
        ("connector", "test", "--connection", "local"),
        ("pipeline", "status", "x"),
        ("run", "watch", "x"),
    ],
)
async def test_unreachable_server_is_one_line_and_exit_5_for_every_command(
    dead_address: str, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    code, out, err = await cli(capsys, "--server", dead_address, "--timeout", "2", *args)
    assert (code, out) == (5, "")
    assert err.splitlines() == [
        f"error: cannot reach the DataDog scheduler at {dead_address} (UNAVAILABLE)"
    ]


async def test_the_server_comes_from_flag_then_variable_then_context(
    scheduler_address: str,
    dead_address: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "current_context": "dead",
                "contexts": {
                    "dead": {"server": dead_address, "timeout": 2},
                    "live": {"server": scheduler_address},
                },
            }
        )
    )
    monkeypatch.setenv("DATADOG_CONFIG", str(config))
    monkeypatch.delenv("DATADOG_SERVER", raising=False)
    monkeypatch.delenv("DATADOG_CONTEXT", raising=False)

    code, _, err = await cli(capsys, "pipeline", "list")
    assert (code, dead_address in err) == (5, True)  # the current context
    assert (await cli(capsys, "--context", "live", "pipeline", "list"))[0] == 0
    assert (await cli(capsys, "--server", scheduler_address, "pipeline", "list"))[0] == 0
    monkeypatch.setenv("DATADOG_SERVER", scheduler_address)
    assert (await cli(capsys, "pipeline", "list"))[0] == 0  # the variable beats the context
    code, _, _ = await cli(capsys, "--server", dead_address, "pipeline", "list")
    assert code == 5  # the flag beats the variable

    monkeypatch.delenv("DATADOG_SERVER")
    assert (await cli(capsys, "config", "use-context", "live"))[0] == 0
    assert (await cli(capsys, "pipeline", "list"))[0] == 0

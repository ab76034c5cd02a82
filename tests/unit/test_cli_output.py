"""Rendering of runs, pipelines, connections and errors by the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from datadog_platform.api.common.v1 import connection_pb2, step_pb2, task_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.cli import output
from datadog_platform.cli.errors import ExitCode, exit_code_for
from datadog_platform.cli.main import main
from datadog_platform.core.errors import FieldViolation
from datadog_platform.core.status import RpcErrorDetails

LOCATION = "file:///data/out/big_orders.parquet"


def stage(
    stage_id: str,
    state: int,
    *,
    attempt: int = 1,
    read: int = 0,
    written: int = 0,
    outputs: tuple[task_pb2.StageOutput, ...] = (),
    reason: str = "",
    message: str = "",
) -> run_pb2.StageRun:
    return run_pb2.StageRun(
        stage_id=stage_id,
        steps=["orders", "big_orders", stage_id],
        state=state,
        attempt=attempt,
        metrics=task_pb2.TaskMetrics(rows_read=read, rows_written=written),
        outputs=list(outputs),
        error_reason=reason,
        error_message=message,
    )


def run_of(state: int, *stages: run_pb2.StageRun, error: str = "") -> run_pb2.Run:
    run = run_pb2.Run(
        run_id="r-1",
        pipeline="csv_to_parquet",
        pipeline_version=2,
        state=state,
        stages=list(stages),
        error_message=error,
    )
    run.create_time.FromSeconds(1_800_000_000)
    run.start_time.FromSeconds(1_800_000_001)
    if state in output.FINAL_RUN_STATES:
        run.end_time.FromSeconds(1_800_000_004)
    return run


SUCCEEDED = run_of(
    run_pb2.RUN_STATE_SUCCEEDED,
    stage(
        "out",
        run_pb2.STAGE_STATE_SUCCEEDED,
        read=50,
        written=35,
        outputs=(task_pb2.StageOutput(step="out", location=LOCATION, rows_written=35),),
    ),
)
FAILED = run_of(
    run_pb2.RUN_STATE_FAILED,
    stage("ok", run_pb2.STAGE_STATE_SUCCEEDED, read=3, written=3),
    stage(
        "out",
        run_pb2.STAGE_STATE_FAILED,
        attempt=2,
        reason="SOURCE_NOT_FOUND",
        message="no file\nexamples/data/missing.csv",
    ),
    stage("after", run_pb2.STAGE_STATE_UPSTREAM_FAILED, attempt=0),
    error="stage out failed",
)


def test_result_of_a_successful_run_lists_each_output() -> None:
    assert output.run_result_lines(SUCCEEDED) == [
        "run r-1 SUCCEEDED in 4.0s",
        f"  out: wrote 35 rows to {LOCATION}",
    ]


def test_result_of_a_failed_run_lists_the_failed_stages_with_reason_and_message() -> None:
    assert output.run_result_lines(FAILED) == [
        "run r-1 FAILED in 4.0s: stage out failed",
        "  stage out FAILED (attempt 2): SOURCE_NOT_FOUND: no file examples/data/missing.csv",
        "  stage after UPSTREAM_FAILED",
    ]


def test_run_status_shows_every_stage_with_attempt_rows_outputs_and_error() -> None:
    lines = output.run_status_lines(FAILED)
    text = "\n".join(lines)
    assert lines[0] == "Run:       r-1"
    assert "Pipeline:  csv_to_parquet (version 2)" in lines
    assert "State:     FAILED" in lines
    assert "(took 4.0s)" in text
    assert "Error:     stage out failed" in lines
    assert "  ok: SUCCEEDED, attempt 1, rows read 3, written 3" in lines
    assert "  out: FAILED, attempt 2, rows read 0, written 0" in lines
    assert "      error: SOURCE_NOT_FOUND: no file examples/data/missing.csv" in lines
    assert "      steps: orders -> big_orders -> out" in lines
    success = output.run_status_lines(SUCCEEDED)
    assert f"      output out: wrote 35 rows to {LOCATION}" in success


def test_unset_times_show_as_dash() -> None:
    run = run_pb2.Run(run_id="r", state=run_pb2.RUN_STATE_QUEUED)
    lines = output.run_status_lines(run)
    assert "Started:   -" in lines
    assert "Ended:     -" in lines
    assert "  (none)" in lines


def test_progress_line_counts_finished_stages_and_rows() -> None:
    running = run_of(
        run_pb2.RUN_STATE_RUNNING,
        stage("a", run_pb2.STAGE_STATE_SUCCEEDED, read=10, written=4),
        stage("b", run_pb2.STAGE_STATE_RUNNING, read=5, written=1),
    )
    assert output.progress_line(running, 75.0) == (
        "RUNNING  stages 1/2  rows read 15, written 5  elapsed 1m15s"
    )


def test_change_lines_only_report_state_changes() -> None:
    queued = run_of(run_pb2.RUN_STATE_QUEUED, stage("out", run_pb2.STAGE_STATE_PENDING, attempt=0))
    running = run_of(run_pb2.RUN_STATE_RUNNING, stage("out", run_pb2.STAGE_STATE_RUNNING, read=10))
    more_rows = run_of(
        run_pb2.RUN_STATE_RUNNING, stage("out", run_pb2.STAGE_STATE_RUNNING, read=20)
    )
    assert output.change_lines(None, queued, 0.0) == [
        "[  0.0s] run QUEUED",
        "[  0.0s] stage out PENDING",
    ]
    assert output.change_lines(queued, running, 1.5) == [
        "[  1.5s] run RUNNING",
        "[  1.5s] stage out RUNNING (attempt 1)",
    ]
    assert output.change_lines(running, more_rows, 2.0) == []
    assert output.change_lines(more_rows, SUCCEEDED, 4.0) == [
        "[  4.0s] run SUCCEEDED",
        "[  4.0s] stage out SUCCEEDED (attempt 1), rows read 50, written 35",
    ]


def test_violations_are_one_indented_line_each() -> None:
    details = RpcErrorDetails(
        code=grpc.StatusCode.INVALID_ARGUMENT,
        message="the pipeline spec has 2 problems",
        reason="INVALID_PIPELINE",
        violations=[
            FieldViolation("pipeline.steps[1].name", 'duplicate step name "orders"'),
            FieldViolation("pipeline.steps[2].inputs[0]", 'no earlier step\nnamed "nowhere"'),
        ],
    )
    assert output.rpc_error_lines(details, "127.0.0.1:50051") == [
        "error: the pipeline spec has 2 problems (INVALID_ARGUMENT, INVALID_PIPELINE)",
        '  - pipeline.steps[1].name: duplicate step name "orders"',
        '  - pipeline.steps[2].inputs[0]: no earlier step named "nowhere"',
    ]


def test_transport_failures_say_the_scheduler_cannot_be_reached() -> None:
    refused = RpcErrorDetails(
        code=grpc.StatusCode.UNAVAILABLE, message="failed to connect to all addresses"
    )
    assert output.rpc_error_lines(refused, "h:1") == [
        "error: cannot reach the DataDog scheduler at h:1 (UNAVAILABLE)"
    ]
    slow = RpcErrorDetails(code=grpc.StatusCode.DEADLINE_EXCEEDED, message="Deadline Exceeded")
    assert output.rpc_error_lines(slow, "h:1") == [
        "error: cannot reach the DataDog scheduler at h:1: no answer in time (DEADLINE_EXCEEDED)"
    ]
    # UNAVAILABLE with a reason came from the scheduler itself: show its message.
    downstream = RpcErrorDetails(
        code=grpc.StatusCode.UNAVAILABLE,
        message="the connector service is down",
        reason="CONNECTOR_UNAVAILABLE",
    )
    assert output.rpc_error_lines(downstream, "h:1") == [
        "error: the connector service is down (UNAVAILABLE, CONNECTOR_UNAVAILABLE)"
    ]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.NOT_FOUND, ExitCode.NOT_FOUND),
        (grpc.StatusCode.INVALID_ARGUMENT, ExitCode.INVALID_ARGUMENT),
        (grpc.StatusCode.UNAVAILABLE, ExitCode.UNAVAILABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, ExitCode.UNAVAILABLE),
        (grpc.StatusCode.ALREADY_EXISTS, ExitCode.ERROR),
        (grpc.StatusCode.INTERNAL, ExitCode.ERROR),
    ],
)
def test_exit_codes_by_status(code: grpc.StatusCode, expected: ExitCode) -> None:
    assert exit_code_for(code) == expected


def test_pipeline_detail_shows_steps_kinds_inputs_and_plan() -> None:
    pipeline = pipeline_pb2.Pipeline(
        name="p",
        version=3,
        description="demo",
        tags=["a", "b"],
        labels={"team": "x"},
        steps=[
            step_pb2.Step(
                name="orders",
                source=step_pb2.SourceSpec(
                    file=step_pb2.FileSource(
                        connection="local", path="in.csv", format=step_pb2.FILE_FORMAT_CSV
                    )
                ),
            ),
            step_pb2.Step(
                name="big",
                inputs=["orders"],
                transform=step_pb2.TransformSpec(
                    filter=step_pb2.FilterTransform(predicate="amount > 100")
                ),
            ),
        ],
    )
    plan = [pipeline_pb2.PlannedStage(stage_id="big", steps=["orders", "big"])]
    lines = output.pipeline_detail_lines(pipeline, plan)
    assert "Version:      3" in lines
    assert "Tags:         a, b" in lines
    assert "Labels:       team=x" in lines
    assert lines[lines.index("Steps:") + 1 :] == [
        "  NAME    KIND              INPUTS  SETTINGS",
        "  orders  source/file       -       connection=local, path=in.csv, format=FILE_FORMAT_CSV",
        "  big     transform/filter  orders  predicate=amount > 100",
        "Plan:",
        "  stage big: orders -> big",
    ]


def test_connection_table() -> None:
    connections = [
        connection_pb2.Connection(
            name="local", type="file", description="files", options={"root": "/data"}
        ),
        connection_pb2.Connection(name="warehouse_archive", type="file"),
    ]
    assert output.connection_table(connections) == [
        "NAME               TYPE  DESCRIPTION  OPTIONS",
        "local              file  files        root=/data",
        "warehouse_archive  file  -            -",
    ]
    assert output.connection_table([]) == ["no connections"]


def test_usage_errors_exit_2_and_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == ExitCode.USAGE
    assert main(["pipeline", "frobnicate"]) == ExitCode.USAGE
    assert main(["--timeout", "-1", "pipeline", "list"]) == ExitCode.USAGE
    assert main(["--help"]) == ExitCode.OK
    out, _ = capsys.readouterr()
    assert "exit codes:" in out
    assert "5    the scheduler cannot be reached" in out


def settings_of(**kind: object) -> str:
    """``pipeline get``'s SETTINGS cell of a step built from its JSON mapping."""
    from google.protobuf.json_format import ParseDict

    return output.step_parameters(ParseDict(kind, step_pb2.Step()))


def test_database_steps_show_connection_table_query_mode_and_keys() -> None:
    assert settings_of(
        source={"database": {"connection": "warehouse", "table": "sales.orders"}}
    ) == ("connection=warehouse, table=sales.orders")
    query = "SELECT id,\n       amount\n  FROM orders\n WHERE amount  > 1"
    assert settings_of(source={"database": {"connection": "w", "query": query}}) == (
        "connection=w, query=SELECT id, amount FROM orders WHERE amount  > 1"
    )
    assert settings_of(
        sink={
            "database": {
                "connection": "w",
                "table": "t",
                "mode": "WRITE_MODE_UPSERT",
                "keyColumns": ["id", "day"],
            }
        }
    ) == ('connection=w, table=t, mode=WRITE_MODE_UPSERT, key_columns=["id", "day"]')


def test_file_sink_shows_partitioning_and_compression() -> None:
    assert settings_of(
        sink={
            "file": {
                "path": "out/d",
                "format": "FILE_FORMAT_NDJSON",
                "mode": "WRITE_MODE_APPEND",
                "partitionBy": ["country"],
                "compression": "FILE_COMPRESSION_GZIP",
            }
        }
    ) == (
        "path=out/d, format=FILE_FORMAT_NDJSON, mode=WRITE_MODE_APPEND, "
        'partition_by=["country"], compression=FILE_COMPRESSION_GZIP'
    )


def test_rest_steps_show_settings_but_never_credential_like_values() -> None:
    text = settings_of(
        source={
            "rest": {
                "connection": "api",
                "path": "/v1/orders",
                "method": "HTTP_METHOD_POST",
                "query": {"lang": "fr", "api_key": "k-123", "access_token": "t-456"},
                "headers": {"X-Trace": "on", "X-Api-Key": "k-789", "X-Session-Id": "s-1"},
                "body": '{"q": "x", "client_secret": "c-000", "nested": {"password": "p-1"}}',
                "recordsPath": "data.items",
                "pagination": {"maxPages": 3, "linkHeader": {}},
            }
        }
    )
    for secret in ("k-123", "t-456", "k-789", "s-1", "c-000", "p-1"):
        assert secret not in text
    assert text == (
        "connection=api, path=/v1/orders, method=HTTP_METHOD_POST, "
        "query.access_token=***, query.api_key=***, query.lang=fr, "
        "headers.X-Api-Key=***, headers.X-Session-Id=***, headers.X-Trace=on, "
        'body={"q":"x","client_secret":"***","nested":{"password":"***"}}, '
        "records_path=data.items, pagination.max_pages=3, pagination.link_header={}"
    )
    assert settings_of(
        sink={"rest": {"connection": "api", "method": "HTTP_METHOD_PUT", "batchSize": 50}}
    ) == ("connection=api, method=HTTP_METHOD_PUT, batch_size=50")


def test_artifact_steps_show_their_key() -> None:
    assert settings_of(source={"artifact": {"key": "runs/r/s/out"}}) == "key=runs/r/s/out"


def test_plan_lines_show_each_stage_upstream() -> None:
    plan = [
        pipeline_pb2.PlannedStage(stage_id="orders", steps=["orders"]),
        pipeline_pb2.PlannedStage(stage_id="eu", steps=["orders", "eu"], upstream=["orders"]),
        pipeline_pb2.PlannedStage(
            stage_id="facts", steps=["raw", "facts"], upstream=["dims", "orders"]
        ),
    ]
    assert output.plan_lines(plan) == [
        "  stage orders: orders",
        "  stage eu: orders -> eu (after orders)",
        "  stage facts: raw -> facts (after dims, orders)",
    ]
    assert output.plan_lines([]) == ["  (no stages)"]


def scheduled_pipeline(**fields: object) -> pipeline_pb2.Pipeline:
    from google.protobuf.json_format import ParseDict

    spec = {
        "name": "nightly",
        "version": 2,
        "params": {"region": "eu", "min_amount": 100, "days": [1, 2]},
        "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Paris", "catchup": True},
        "steps": [
            {"name": "dims", "source": {"inline": {"rows": [{"a": 1}]}}},
            {"name": "dims_out", "inputs": ["dims"], "sink": {"discard": {}}},
            {"name": "facts", "source": {"inline": {"rows": [{"b": 2}]}}},
            {
                "name": "facts_out",
                "inputs": ["facts"],
                "after": ["dims_out"],
                "sink": {"discard": {}},
            },
        ],
        **fields,
    }
    return ParseDict(spec, pipeline_pb2.Pipeline())


def test_pipeline_detail_shows_params_schedule_pause_next_run_and_after() -> None:
    pipeline = scheduled_pipeline(nextRunTime="2030-01-02T01:00:00Z")
    plan = [
        pipeline_pb2.PlannedStage(stage_id="dims_out", steps=["dims", "dims_out"]),
        pipeline_pb2.PlannedStage(
            stage_id="facts_out", steps=["facts", "facts_out"], upstream=["dims_out"]
        ),
    ]
    lines = output.pipeline_detail_lines(pipeline, plan)
    assert 'Params:       days=[1, 2], min_amount=100, region="eu"' in lines
    assert "Schedule:     0 2 * * * (Europe/Paris), catchup on" in lines
    assert "Paused:       no" in lines
    (next_run,) = [line for line in lines if line.startswith("Next run:")]
    assert next_run == f"Next run:     {output.format_timestamp(pipeline.next_run_time)}"
    assert lines[lines.index("Steps:") + 1 :] == [
        "  NAME       KIND           INPUTS  AFTER     SETTINGS",
        '  dims       source/inline  -       -         rows=[{"a": 1}]',
        "  dims_out   sink/discard   dims    -         -",
        '  facts      source/inline  -       -         rows=[{"b": 2}]',
        "  facts_out  sink/discard   facts   dims_out  -",
        "Plan:",
        "  stage dims_out: dims -> dims_out",
        "  stage facts_out: facts -> facts_out (after dims_out)",
    ]


def test_next_run_says_why_there_is_none() -> None:
    assert output.next_run_text(scheduled_pipeline(paused=True)) == "- (paused)"
    assert output.next_run_text(scheduled_pipeline()) == "- (the schedule has ended)"
    unscheduled = pipeline_pb2.Pipeline(name="p")
    assert output.next_run_text(unscheduled) == "- (no schedule)"
    assert output.paused_lines(unscheduled) == ["unpaused pipeline p (it has no schedule)"]
    assert output.paused_lines(scheduled_pipeline(paused=True)) == ["paused pipeline nightly"]
    lines = output.pipeline_detail_lines(unscheduled, [])
    assert "Schedule:     -" in lines
    assert "Params:       -" in lines


def test_pipeline_table_shows_the_schedule_and_whether_it_is_paused() -> None:
    rows = output.pipeline_table(
        [scheduled_pipeline(paused=True), pipeline_pb2.Pipeline(name="adhoc", version=1)]
    )
    assert rows[0].split()[:4] == ["NAME", "VERSION", "STEPS", "SCHEDULE"]
    assert "0 2 * * * (paused)" in rows[1]
    assert rows[2].split()[:4] == ["adhoc", "1", "0", "-"]


def test_validation_lines() -> None:
    plan = [pipeline_pb2.PlannedStage(stage_id="out", steps=["a", "out"])]
    assert output.valid_lines("p.yaml", plan) == [
        "p.yaml: valid; plan (1 stage):",
        "  stage out: a -> out",
    ]
    assert output.invalid_lines(
        "p.yaml", [FieldViolation("pipeline.schedule.cron", "has 4 fields")]
    ) == [
        "error: p.yaml: the pipeline spec has 1 problem (INVALID_ARGUMENT, INVALID_PIPELINE_SPEC)",
        "  - pipeline.schedule.cron: has 4 fields",
    ]


def test_run_status_shows_trigger_interval_params_backfill_upstream_and_next_attempt() -> None:
    run = run_of(
        run_pb2.RUN_STATE_RUNNING,
        stage("out", run_pb2.STAGE_STATE_QUEUED, reason="EXECUTOR_UNAVAILABLE"),
    )
    run.trigger = run_pb2.RUN_TRIGGER_BACKFILL
    run.backfill_id = "bf-1"
    run.logical_date.FromSeconds(1_700_000_000)
    run.data_interval_start.FromSeconds(1_700_000_000)
    run.data_interval_end.FromSeconds(1_700_086_400)
    run.params["region"].string_value = "eu"
    run.params["n"].number_value = 3
    run.stages[0].upstream.append("dims")
    run.stages[0].next_attempt_time.FromSeconds(1_800_000_010)
    lines = output.run_status_lines(run)
    assert "Trigger:   BACKFILL" in lines
    assert f"Logical:   {output.format_timestamp(run.logical_date)}" in lines
    assert (
        f"Interval:  {output.format_timestamp(run.data_interval_start)}"
        f" .. {output.format_timestamp(run.data_interval_end)}"
    ) in lines
    assert 'Params:    n=3, region="eu"' in lines
    assert "Backfill:  bf-1" in lines
    assert "      after: dims" in lines
    assert f"      next attempt at {output.format_timestamp(run.stages[0].next_attempt_time)}" in (
        lines
    )
    header, row = output.run_table([run])
    assert header.split() == [
        "RUN",
        "ID",
        "PIPELINE",
        "VERSION",
        "STATE",
        "TRIGGER",
        "LOGICAL",
        "DATE",
        "CREATED",
        "DURATION",
    ]
    assert row.split()[:5] == ["r-1", "csv_to_parquet", "2", "RUNNING", "BACKFILL"]


def backfill_of(state: int, **counters: int) -> run_pb2.Backfill:
    backfill = run_pb2.Backfill(
        backfill_id="bf-1", pipeline="nightly", state=state, max_active_runs=2, **counters
    )
    backfill.start_date.FromSeconds(1_700_000_000)
    backfill.end_date.FromSeconds(1_700_259_200)
    backfill.create_time.FromSeconds(1_800_000_000)
    return backfill


def test_backfill_rendering() -> None:
    running = backfill_of(
        run_pb2.BACKFILL_STATE_RUNNING, total_runs=3, created_runs=2, succeeded_runs=1
    )
    assert output.backfill_progress(running) == "2/3 runs created, 1 succeeded, 0 failed"
    header, row = output.backfill_table([running])
    assert header.split()[:4] == ["BACKFILL", "ID", "PIPELINE", "STATE"]
    assert row.split()[:3] == ["bf-1", "nightly", "RUNNING"]
    assert "2/3" in row.split()
    assert output.backfill_table([]) == ["no backfills"]
    lines = output.backfill_lines(running)
    assert "State:       RUNNING" in lines
    assert "Runs:        2/3 runs created, 1 succeeded, 0 failed" in lines
    assert "Max active:  2" in lines
    assert "Ended:       -" in lines
    done = backfill_of(run_pb2.BACKFILL_STATE_FAILED, total_runs=3, created_runs=3, failed_runs=1)
    assert output.backfill_result_lines(done) == [
        "backfill bf-1 FAILED: 3/3 runs created, 0 succeeded, 1 failed"
    ]


def test_log_lines_keep_level_step_and_every_line_of_the_message() -> None:
    line = task_pb2.LogLine(level=task_pb2.LOG_LEVEL_WARNING, step="orders", message="slow\nread")
    line.time.FromMilliseconds(1_800_000_000_123)
    text = output.log_line_text(line)
    when = datetime.fromtimestamp(1_800_000_000.123, UTC).astimezone()
    when_text = when.isoformat(sep=" ", timespec="milliseconds")  # local time, with ms
    assert text == f"{when_text} WARNING [orders] slow\n    read"
    bare = output.log_line_text(task_pb2.LogLine(level=task_pb2.LOG_LEVEL_INFO, message="done"))
    assert bare == "- INFO    done"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n=42", ("n", 42)),
        ("ratio=0.5", ("ratio", 0.5)),
        ("flag=true", ("flag", True)),
        ("none=null", ("none", None)),
        ("days=[1, 2]", ("days", [1, 2])),
        ('obj={"a": "b"}', ("obj", {"a": "b"})),
        ('quoted="42"', ("quoted", "42")),
        ("region=eu", ("region", "eu")),
        ("day=2026-01-01", ("day", "2026-01-01")),
        ("code=007", ("code", "007")),
        ("x=NaN", ("x", "NaN")),
        ("empty=", ("empty", "")),
        ("expr=a=b", ("expr", "a=b")),
    ],
)
def test_params_are_json_when_they_parse_and_strings_otherwise(
    text: str, expected: tuple[str, object]
) -> None:
    from datadog_platform.cli.main import parse_param

    assert parse_param(text) == expected


def test_malformed_params_and_dates_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", "run", "p", "-p", "novalue"]) == ExitCode.USAGE
    assert main(["pipeline", "run", "p", "-p", "=1"]) == ExitCode.USAGE
    assert main(["pipeline", "backfill", "p", "--start", "yesterday", "--end", "x"]) == (
        ExitCode.USAGE
    )
    assert main(["pipeline", "backfill", "p", "--start", "2026-01-01"]) == ExitCode.USAGE
    assert main(["run", "logs", "r", "s", "--attempt", "-1"]) == ExitCode.USAGE
    _, err = capsys.readouterr()
    assert "expected KEY=VALUE" in err
    assert "not an ISO 8601 date or time" in err


def test_db_upgrade_is_wired_into_the_command_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "scheduler.db"
    assert main(["db", "upgrade", "--store", str(store)]) == ExitCode.OK
    out, _ = capsys.readouterr()
    assert "schema version" in out
    assert store.exists()

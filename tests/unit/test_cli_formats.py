"""``-o json|yaml`` rendering, the newer tables and the terminal progress table."""

from __future__ import annotations

import io
import json

import yaml
from google.protobuf import timestamp_pb2

from datadog_platform.api.common.v1 import task_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.cli import formats, output
from datadog_platform.cli.progress import _TerminalTable, screen_lines

T0 = 1_800_000_000


def ts(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def running_run(stages: int = 2) -> run_pb2.Run:
    run = run_pb2.Run(
        run_id="r-1",
        pipeline="p",
        pipeline_version=3,
        state=run_pb2.RUN_STATE_RUNNING,
        create_time=ts(T0),
        start_time=ts(T0),
    )
    run.stages.add(
        stage_id="load",
        state=run_pb2.STAGE_STATE_SUCCEEDED,
        attempt=1,
        start_time=ts(T0),
        end_time=ts(T0 + 4),
        metrics=task_pb2.TaskMetrics(
            rows_read=40_000, rows_written=30_000, bytes_read=8_000_000, bytes_written=1
        ),
    )
    for i in range(stages - 1):
        run.stages.add(
            stage_id=f"s{i}",
            state=run_pb2.STAGE_STATE_RUNNING,
            attempt=2,
            start_time=ts(T0 + 5),
            metrics=task_pb2.TaskMetrics(rows_read=5_000),
        )
    return run


def test_json_and_yaml_are_the_proto3_mapping_with_proto_field_names() -> None:
    run = running_run()
    value = {"run": run}
    data = json.loads("\n".join(formats.render(value, formats.JSON)))
    assert data == yaml.safe_load("\n".join(formats.render(value, formats.YAML)))
    got = data["run"]
    assert got["run_id"] == "r-1"
    assert got["pipeline_version"] == "3"  # int64 is a string in the mapping
    assert got["state"] == "RUN_STATE_RUNNING"
    assert got["create_time"] == "2027-01-15T08:00:00Z"
    assert got["error_message"] == ""  # fields at their default are present too
    assert got["stages"][0]["metrics"]["rows_read"] == "40000"


def test_a_list_keeps_its_name_and_an_empty_one_is_an_empty_list() -> None:
    assert json.loads("\n".join(formats.render(formats.items("runs", []), formats.JSON))) == {
        "runs": []
    }


def test_stream_items_are_json_lines_or_yaml_documents() -> None:
    line = task_pb2.LogLine(message="hello", level=task_pb2.LOG_LEVEL_INFO)
    (text,) = formats.render_stream_item({"attempt": 1, **formats.as_dict(line)}, formats.JSON)
    assert json.loads(text)["message"] == "hello"
    lines = formats.render_stream_item(line, formats.YAML) * 2
    assert [d["level"] for d in yaml.safe_load_all("\n".join(lines))] == ["LOG_LEVEL_INFO"] * 2


def test_progress_table_has_state_rows_throughput_and_elapsed_per_stage() -> None:
    lines = output.progress_table(running_run(), now=T0 + 10)
    assert lines[0] == ("RUNNING  stages 1/2  rows read 45000, written 30000  elapsed 10.0s")
    assert lines[1].split() == [
        "STAGE",
        "STATE",
        "ATTEMPT",
        "READ",
        "WRITTEN",
        "ROWS/S",
        "MB/S",
        "ELAPSED",
    ]
    assert lines[2].split() == [
        "load",
        "SUCCEEDED",
        "1",
        "40,000",
        "30,000",
        "10,000/s",
        "2.0",
        "MB/s",
        "4.0s",
    ]
    assert lines[3].split() == ["s0", "RUNNING", "2", "5,000", "0", "1,000/s", "-", "5.0s"]


def test_screen_lines_fit_the_terminal_unfinished_stages_first() -> None:
    run = running_run(stages=30)
    lines = screen_lines(run, width=40, height=10, now=T0 + 10)
    assert len(lines) <= 9  # never scrolls, so the redraw can go back over it
    assert all(len(line) < 40 for line in lines)
    assert not any(line.lstrip().startswith("load ") for line in lines)  # finished: left out
    assert lines[-1] == "  ... and 24 more finished stages"[:39]


def test_the_terminal_table_redraws_in_place() -> None:
    out = io.StringIO()
    with _TerminalTable(out) as table:
        table.show(running_run())
        table.show(running_run())
    text = out.getvalue()
    # Second draw: three lines up (table of 4 lines), clear to the end, draw again.
    assert "\x1b[3A\r\x1b[J" in text
    assert text.endswith("\n")


def test_schedule_transform_columns_and_connection_tables() -> None:
    nightly = pipeline_pb2.Pipeline(
        name="nightly",
        schedule=pipeline_pb2.Schedule(cron="0 2 * * *", timezone="Europe/Paris"),
        next_run_time=ts(T0),
    )
    paused = pipeline_pb2.Pipeline(
        name="weekly", schedule=pipeline_pb2.Schedule(cron="@weekly"), paused=True
    )
    lines = output.schedule_table([nightly, paused])
    assert lines[0].split() == ["PIPELINE", "CRON", "TIMEZONE", "CATCHUP", "PAUSED", "NEXT", "RUN"]
    assert lines[1].split()[:9] == ["nightly", "0", "2", "*", "*", "*", "Europe/Paris", "off", "no"]
    assert lines[2].endswith("- (paused)")
    assert output.schedule_table([]) == ["no schedules"]

    assert output.inputs_text(1, 1) == "1"
    assert output.inputs_text(2, 0) == "2+"
    assert output.inputs_text(1, 3) == "1-3"
    assert output.transform_table([]) == ["no transforms"]

    columns = [pb.SourceColumn(name="id", type="int64")]
    assert output.columns_table(columns, None) == ["COLUMN  TYPE   NULLABLE", "id      int64  no"]
    assert output.columns_table([], 0) == ["no columns", "estimated rows: 0"]

    ok = pb.TestConnectionResponse(ok=True, message="connected", latency_ms=3)
    bad = pb.TestConnectionResponse(ok=False, reason="AUTH_FAILED", message="bad\npassword")
    assert output.connection_test_table([("a", ok), ("b", bad)]) == [
        "CONNECTION  RESULT  LATENCY  MESSAGE",
        "a           ok      3.0 ms   connected",
        "b           FAILED  0.0 ms   AUTH_FAILED: bad password",
    ]


def test_pipeline_status_shows_the_schedule_then_the_latest_runs() -> None:
    pipeline = pipeline_pb2.Pipeline(name="p", version=3)
    lines = output.pipeline_status_lines(pipeline, [running_run()])
    assert lines[:5] == [
        "Pipeline:  p (version 3)",
        "Schedule:  -",
        "Paused:    no",
        "Next run:  - (no schedule)",
        "Latest runs:",
    ]
    assert lines[5].split()[:2] == ["RUN", "ID"]
    assert lines[6].split()[:4] == ["r-1", "p", "3", "RUNNING"]
    assert output.pipeline_status_lines(pipeline, [])[-1] == "  no runs"

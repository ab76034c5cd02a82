"""The scheduler service with real connector and executor services, over real channels."""

from __future__ import annotations

import asyncio
import copy
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import yaml
from google.protobuf import json_format
from google.protobuf.json_format import ParseDict
from google.protobuf.timestamp_pb2 import Timestamp

from datadog_platform.api.common.v1 import step_pb2, task_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.api.scheduler.v1.scheduler_service_pb2_grpc import SchedulerServiceStub
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.status import RpcErrorDetails, details_of
from datadog_platform.scheduler.app import SchedulerConfig, build_server

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "csv_to_parquet.yaml"
ORDERS = REPO / "examples" / "data" / "orders.csv"
TIMEOUT = 10.0


@pytest.fixture
def example() -> dict[str, Any]:
    """The example pipeline as its JSON mapping."""
    return yaml.safe_load(EXAMPLE.read_text())


@pytest.fixture
def orders(data_root: Path) -> Path:
    """The example CSV where the example pipeline expects it."""
    target = data_root / "examples" / "data" / "orders.csv"
    target.parent.mkdir(parents=True)
    shutil.copy(ORDERS, target)
    return target


@pytest.fixture
async def stub(scheduler_address: str) -> AsyncIterator[SchedulerServiceStub]:
    async with insecure_channel(scheduler_address) as channel:
        yield SchedulerServiceStub(channel)


def pipeline_of(spec: dict[str, Any]) -> pipeline_pb2.Pipeline:
    return ParseDict(spec, pipeline_pb2.Pipeline())


async def create(
    stub: SchedulerServiceStub, spec: dict[str, Any], request_id: str = ""
) -> pb.CreatePipelineResponse:
    return await stub.CreatePipeline(
        pb.CreatePipelineRequest(pipeline=pipeline_of(spec), request_id=request_id),
        timeout=TIMEOUT,
    )


async def failure(call: Any) -> RpcErrorDetails:
    """Await ``call`` (a coroutine or a stream) and return the error it fails with."""

    async def drain() -> None:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await drain()
    return details_of(raised.value)


async def watch_to_end(stub: SchedulerServiceStub, run_id: str) -> list[run_pb2.Run]:
    call = stub.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=30)
    return [response.run async for response in call]


def free_port_address() -> str:
    """An address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def test_create_get_list_run_watch_and_the_output(
    stub: SchedulerServiceStub, example: dict[str, Any], orders: Path, data_root: Path
) -> None:
    created = await create(stub, example)
    assert created.pipeline.name == "csv_to_parquet"
    assert created.pipeline.version == 1
    assert created.pipeline.create_time.seconds > 0
    assert created.pipeline.update_time == created.pipeline.create_time
    assert [(s.stage_id, list(s.steps)) for s in created.plan] == [
        ("out", ["orders", "big_orders", "out"])
    ]

    got = await stub.GetPipeline(pb.GetPipelineRequest(name="csv_to_parquet"), timeout=TIMEOUT)
    assert got.pipeline == created.pipeline
    assert got.plan == created.plan
    assert got.pipeline.labels["team"] == "data-platform"
    by_version = await stub.GetPipeline(
        pb.GetPipelineRequest(name="csv_to_parquet", version=1), timeout=TIMEOUT
    )
    assert by_version.pipeline == created.pipeline

    listed = await stub.ListPipelines(pb.ListPipelinesRequest(), timeout=TIMEOUT)
    assert [p.name for p in listed.pipelines] == ["csv_to_parquet"]
    assert listed.next_page_token == ""

    started = await stub.RunPipeline(
        pb.RunPipelineRequest(pipeline="csv_to_parquet"), timeout=TIMEOUT
    )
    run = started.run
    assert run.state == run_pb2.RUN_STATE_QUEUED
    assert (run.pipeline, run.pipeline_version) == ("csv_to_parquet", 1)
    assert [s.state for s in run.stages] == [run_pb2.STAGE_STATE_PENDING]

    snapshots = await watch_to_end(stub, run.run_id)
    assert snapshots[-1].state == run_pb2.RUN_STATE_SUCCEEDED, snapshots[-1]
    assert all(s.state != run_pb2.RUN_STATE_SUCCEEDED for s in snapshots[:-1])
    final = (await stub.GetRun(pb.GetRunRequest(run_id=run.run_id), timeout=TIMEOUT)).run
    assert final == snapshots[-1]
    assert final.start_time.seconds > 0
    assert final.end_time.seconds > 0
    (stage,) = final.stages
    assert stage.state == run_pb2.STAGE_STATE_SUCCEEDED
    assert stage.attempt == 1
    assert (stage.metrics.rows_read, stage.metrics.rows_written) == (50, 35)
    (output,) = stage.outputs
    assert output.step == "out"
    assert output.rows_written == 35
    written = data_root / "out" / "big_orders.parquet"
    assert output.location == f"file://{written.resolve()}"

    actual = pq.read_table(written)
    source = pa_csv.read_csv(orders)
    expected = source.filter(pc.greater(source["amount"], 100))
    assert actual.num_rows == 35
    assert actual.column_names == expected.column_names
    assert actual.to_pylist() == expected.cast(actual.schema).to_pylist()


async def test_request_ids_make_both_mutations_idempotent(
    stub: SchedulerServiceStub, example: dict[str, Any], orders: Path
) -> None:
    first = await create(stub, example, request_id="create-1")
    again = await create(stub, example, request_id="create-1")
    assert again == first
    error = await failure(create(stub, example, request_id="create-2"))
    assert (error.code, error.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "PIPELINE_ALREADY_EXISTS",
    )
    error = await failure(create(stub, {**example, "name": "other"}, request_id="create-1"))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")

    request = pb.RunPipelineRequest(pipeline="csv_to_parquet", request_id="run-1")
    run = (await stub.RunPipeline(request, timeout=TIMEOUT)).run
    assert run.request_id == "run-1"
    await watch_to_end(stub, run.run_id)
    retried = (await stub.RunPipeline(request, timeout=TIMEOUT)).run
    assert retried == run  # the first response, not a new run
    other = (
        await stub.RunPipeline(
            pb.RunPipelineRequest(pipeline="csv_to_parquet", request_id="run-2"), timeout=TIMEOUT
        )
    ).run
    assert other.run_id != run.run_id
    assert (await watch_to_end(stub, other.run_id))[-1].state == run_pb2.RUN_STATE_SUCCEEDED


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    """A change to a spec: set (or, with ``value`` None, delete) the item at ``path``."""

    def change(spec: dict[str, Any]) -> None:
        target: Any = spec
        for key in path[:-1]:
            target = target[key]
        if value is None:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return change


BAD_INPUTS: list[tuple[str, Callable[[dict[str, Any]], None], set[str]]] = [
    ("no name", _set(("name",), ""), {"pipeline.name"}),
    ("invalid name", _set(("name",), "has spaces"), {"pipeline.name"}),
    ("no steps", _set(("steps",), []), {"pipeline.steps"}),
    (
        "duplicate step names",
        _set(("steps", 1, "name"), "orders"),
        # ... so nothing is called big_orders any more
        {"pipeline.steps[1].name", "pipeline.steps[2].inputs[0]"},
    ),
    (
        "input naming no step",
        _set(("steps", 2, "inputs"), ["nowhere"]),
        {"pipeline.steps[2].inputs[0]", "pipeline.steps[1]"},
    ),
    ("a step with no kind", _set(("steps", 1, "transform"), None), {"pipeline.steps[1]"}),
    ("an empty transform", _set(("steps", 1, "transform"), {}), {"pipeline.steps[1].transform"}),
    (
        "a predicate that does not parse",
        _set(("steps", 1, "transform", "filter", "predicate"), "amount >"),
        {"pipeline.steps[1].transform.filter.predicate"},
    ),
    (
        "a source with inputs",
        _set(("steps", 0, "inputs"), ["big_orders"]),
        # ... which also makes a cycle
        {"pipeline.steps[0].inputs", "pipeline.steps[0].inputs[0]"},
    ),
    (
        "a sink without input",
        _set(("steps", 2, "inputs"), []),
        {"pipeline.steps[2].inputs", "pipeline.steps[1]"},
    ),
    (
        "a file without path",
        _set(("steps", 0, "source", "file", "path"), ""),
        {"pipeline.steps[0].source.file.path"},
    ),
    (
        "a format that cannot be inferred",
        _set(("steps", 2, "sink", "file"), {"path": "out/big_orders.txt"}),
        {"pipeline.steps[2].sink.file.format"},
    ),
]


@pytest.mark.parametrize(
    ("change", "fields"),
    [(change, fields) for _, change, fields in BAD_INPUTS],
    ids=[name for name, _, _ in BAD_INPUTS],
)
async def test_each_bad_input_is_invalid_argument_with_its_violations(
    stub: SchedulerServiceStub,
    example: dict[str, Any],
    change: Callable[[dict[str, Any]], None],
    fields: set[str],
) -> None:
    spec = copy.deepcopy(example)
    change(spec)
    error = await failure(create(stub, spec))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_PIPELINE_SPEC"
    assert {v.field for v in error.violations} == fields, error.violations
    # Nothing was stored.
    listed = await stub.ListPipelines(pb.ListPipelinesRequest(), timeout=TIMEOUT)
    assert list(listed.pipelines) == []


async def test_a_cycle_names_its_steps(stub: SchedulerServiceStub, example: dict[str, Any]) -> None:
    spec = copy.deepcopy(example)
    # orders -> big_orders -> again -> big_orders ...: big_orders and again form a cycle.
    spec["steps"][1]["inputs"] = ["again"]
    spec["steps"].append(
        {"name": "again", "inputs": ["big_orders"], "transform": {"filter": {"predicate": "true"}}}
    )
    spec["steps"][2]["inputs"] = ["orders"]
    error = await failure(create(stub, spec))
    cycles = [v for v in error.violations if "cycle" in v.description]
    assert [(v.field, v.description) for v in cycles] == [
        ("pipeline.steps[1].inputs[0]", "steps form a cycle: big_orders -> again -> big_orders")
    ]


async def test_fan_out_goes_through_the_artifact_store_and_fan_in_is_refused(
    stub: SchedulerServiceStub, example: dict[str, Any], orders: Path, data_root: Path
) -> None:
    spec = copy.deepcopy(example)
    spec["steps"].append(
        {"name": "copy", "inputs": ["big_orders"], "sink": {"file": {"path": "out/copy.csv"}}}
    )
    created = await create(stub, spec)
    assert {(s.stage_id, tuple(s.steps), tuple(s.upstream)) for s in created.plan} == {
        ("big_orders", ("orders", "big_orders"), ()),
        ("out", ("big_orders", "out"), ("big_orders",)),
        ("copy", ("big_orders", "copy"), ("big_orders",)),
    }
    run = await start(stub, "csv_to_parquet")
    final = (await watch_to_end(stub, run.run_id))[-1]
    assert final.state == run_pb2.RUN_STATE_SUCCEEDED, final
    assert pq.read_table(data_root / "out" / "big_orders.parquet").num_rows == 35
    assert pa_csv.read_csv(data_root / "out" / "copy.csv").num_rows == 35

    spec["name"] = "fan_in"
    spec["steps"][2]["inputs"] = ["orders", "big_orders"]
    error = await failure(create(stub, spec))
    assert error.reason == "INVALID_PIPELINE_SPEC"
    assert "pipeline.steps[2].inputs" in {v.field for v in error.violations}


async def test_several_problems_yield_several_violations(
    stub: SchedulerServiceStub, example: dict[str, Any]
) -> None:
    spec = copy.deepcopy(example)
    spec["name"] = "9bad"
    spec["steps"][1]["transform"] = {"filter": {"predicate": ""}}
    spec["steps"][2]["inputs"] = ["nowhere"]
    spec["steps"].append(
        {"name": "orders", "inputs": ["orders"], "sink": {"file": {"path": "x.pq"}}}
    )
    error = await failure(create(stub, spec))
    assert error.reason == "INVALID_PIPELINE_SPEC"
    assert {v.field for v in error.violations} == {
        "pipeline.name",
        "pipeline.steps[1].transform.filter.predicate",
        "pipeline.steps[1]",  # its output now reaches no sink
        "pipeline.steps[2].inputs[0]",
        "pipeline.steps[3].name",
    }


async def test_a_missing_input_file_fails_the_run_with_its_reason(
    stub: SchedulerServiceStub, example: dict[str, Any], data_root: Path
) -> None:
    spec = copy.deepcopy(example)
    spec["steps"][0]["source"]["file"]["path"] = "examples/data/missing.csv"
    await create(stub, spec)
    run = (
        await stub.RunPipeline(pb.RunPipelineRequest(pipeline="csv_to_parquet"), timeout=TIMEOUT)
    ).run
    assert (await watch_to_end(stub, run.run_id))[-1].state == run_pb2.RUN_STATE_FAILED
    failed = (await stub.GetRun(pb.GetRunRequest(run_id=run.run_id), timeout=TIMEOUT)).run
    assert failed.state == run_pb2.RUN_STATE_FAILED
    (stage,) = failed.stages
    assert stage.state == run_pb2.STAGE_STATE_FAILED
    assert stage.error_reason == "SOURCE_NOT_FOUND"
    assert stage.error_message
    assert failed.error_message == f'stage "out" failed: {stage.error_message}'
    assert not (data_root / "out" / "big_orders.parquet").exists()


async def test_unknown_pipelines_and_runs_are_not_found(
    stub: SchedulerServiceStub, example: dict[str, Any]
) -> None:
    error = await failure(stub.GetPipeline(pb.GetPipelineRequest(name="nope"), timeout=TIMEOUT))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PIPELINE_NOT_FOUND")
    await create(stub, example)
    error = await failure(
        stub.GetPipeline(pb.GetPipelineRequest(name="csv_to_parquet", version=2), timeout=TIMEOUT)
    )
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PIPELINE_VERSION_NOT_FOUND")
    error = await failure(stub.RunPipeline(pb.RunPipelineRequest(pipeline="nope"), timeout=TIMEOUT))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PIPELINE_NOT_FOUND")
    error = await failure(stub.GetRun(pb.GetRunRequest(run_id="nope"), timeout=TIMEOUT))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
    error = await failure(stub.WatchRun(pb.WatchRunRequest(run_id="nope"), timeout=TIMEOUT))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")


async def test_retry_policies_round_trip(
    stub: SchedulerServiceStub, example: dict[str, Any]
) -> None:
    policy = {
        "maxAttempts": 4,
        "initialBackoff": "0.500s",
        "backoffMultiplier": 3.0,
        "maxBackoff": "60s",
        "retryAllFailures": True,
    }
    example["defaultRetry"] = policy
    example["steps"][-1]["retry"] = {"maxAttempts": 2}
    created = await create(stub, example)
    got = await stub.GetPipeline(pb.GetPipelineRequest(name=example["name"]), timeout=TIMEOUT)
    assert got.pipeline == created.pipeline
    assert got.pipeline.default_retry == pipeline_of({"defaultRetry": policy}).default_retry
    assert got.pipeline.default_retry.initial_backoff.ToMilliseconds() == 500
    assert got.pipeline.steps[-1].retry.max_attempts == 2
    example["name"] = "bad_retry"
    example["defaultRetry"] = {"maxAttempts": 101}
    error = await failure(create(stub, example))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["pipeline.default_retry.max_attempts"]


async def test_list_pipelines_pages(stub: SchedulerServiceStub, example: dict[str, Any]) -> None:
    for name in ["c_pipe", "a_pipe", "b_pipe"]:
        await create(stub, {**example, "name": name})
    page = await stub.ListPipelines(pb.ListPipelinesRequest(page_size=2), timeout=TIMEOUT)
    assert [p.name for p in page.pipelines] == ["a_pipe", "b_pipe"]
    assert page.next_page_token
    rest = await stub.ListPipelines(
        pb.ListPipelinesRequest(page_size=2, page_token=page.next_page_token), timeout=TIMEOUT
    )
    assert [p.name for p in rest.pipelines] == ["c_pipe"]
    assert rest.next_page_token == ""

    error = await failure(
        stub.ListPipelines(pb.ListPipelinesRequest(page_token="garbage!"), timeout=TIMEOUT)
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    error = await failure(stub.ListPipelines(pb.ListPipelinesRequest(page_size=-1)))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_connections_shows_the_connector_connections(
    stub: SchedulerServiceStub,
) -> None:
    response = await stub.ListConnections(pb.ListConnectionsRequest(), timeout=TIMEOUT)
    local = [c for c in response.connections if c.name == "local"]
    assert len(local) == 1
    assert local[0].type == "file"


async def test_unreachable_executor_and_connector(tmp_path: Path, example: dict[str, Any]) -> None:
    server = await build_server(
        SchedulerConfig(
            store=str(tmp_path / "lonely.db"),
            executor_address=free_port_address(),
            connector_address=free_port_address(),
        )
    )
    await server.start()
    try:
        async with insecure_channel(server.address) as channel:
            stub = SchedulerServiceStub(channel)
            error = await failure(
                stub.ListConnections(pb.ListConnectionsRequest(), timeout=TIMEOUT)
            )
            assert (error.code, error.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "CONNECTOR_UNAVAILABLE",
            )
            await create(stub, example)
            run = (
                await stub.RunPipeline(
                    pb.RunPipelineRequest(pipeline="csv_to_parquet"), timeout=TIMEOUT
                )
            ).run
            final = (await watch_to_end(stub, run.run_id))[-1]
            assert final.state == run_pb2.RUN_STATE_FAILED
            (stage,) = final.stages
            assert stage.error_reason == "EXECUTOR_UNAVAILABLE"
            assert "unavailable" in stage.error_message
    finally:
        await server.stop(grace=1)


async def test_pipelines_and_runs_survive_a_restart(
    tmp_path: Path,
    example: dict[str, Any],
    orders: Path,
    executor_address: str,
    connector_address: str,
) -> None:
    config = SchedulerConfig(
        store=str(tmp_path / "restart.db"),
        executor_address=executor_address,
        connector_address=connector_address,
    )
    server = await build_server(config)
    await server.start()
    async with insecure_channel(server.address) as channel:
        stub = SchedulerServiceStub(channel)
        created = await create(stub, example, request_id="req")
        run = (
            await stub.RunPipeline(
                pb.RunPipelineRequest(pipeline="csv_to_parquet"), timeout=TIMEOUT
            )
        ).run
        finished = (await watch_to_end(stub, run.run_id))[-1]
    await server.stop(grace=1)

    server = await build_server(config)
    await server.start()
    try:
        async with insecure_channel(server.address) as channel:
            stub = SchedulerServiceStub(channel)
            got = await stub.GetPipeline(
                pb.GetPipelineRequest(name="csv_to_parquet"), timeout=TIMEOUT
            )
            assert got.pipeline == created.pipeline
            assert await create(stub, example, request_id="req") == created
            again = (await stub.GetRun(pb.GetRunRequest(run_id=run.run_id), timeout=TIMEOUT)).run
            assert again == finished
            assert again.state == run_pb2.RUN_STATE_SUCCEEDED
    finally:
        await server.stop(grace=1)


async def start(stub: SchedulerServiceStub, pipeline: str) -> run_pb2.Run:
    request = pb.RunPipelineRequest(pipeline=pipeline)
    return (await stub.RunPipeline(request, timeout=TIMEOUT)).run


async def test_list_runs_pages_newest_first_and_filters(
    stub: SchedulerServiceStub, example: dict[str, Any], orders: Path
) -> None:
    await create(stub, example)
    await create(stub, {**example, "name": "other"})
    ids = []
    for name in ("csv_to_parquet", "other", "csv_to_parquet"):
        run = await start(stub, name)
        await watch_to_end(stub, run.run_id)
        ids.append(run.run_id)
    newest_first = ids[::-1]

    page = await stub.ListRuns(pb.ListRunsRequest(page_size=2), timeout=TIMEOUT)
    assert [r.run_id for r in page.runs] == newest_first[:2]
    assert all(len(r.stages) == 1 for r in page.runs)
    assert page.next_page_token
    rest = await stub.ListRuns(
        pb.ListRunsRequest(page_size=2, page_token=page.next_page_token), timeout=TIMEOUT
    )
    assert [r.run_id for r in rest.runs] == newest_first[2:]
    assert rest.next_page_token == ""

    everything = await stub.ListRuns(pb.ListRunsRequest(), timeout=TIMEOUT)
    assert [r.run_id for r in everything.runs] == newest_first
    by_pipeline = await stub.ListRuns(pb.ListRunsRequest(pipeline="other"), timeout=TIMEOUT)
    assert [r.run_id for r in by_pipeline.runs] == [ids[1]]
    succeeded = await stub.ListRuns(
        pb.ListRunsRequest(
            pipeline="csv_to_parquet",
            states=[run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED],
        ),
        timeout=TIMEOUT,
    )
    assert [r.run_id for r in succeeded.runs] == [ids[2], ids[0]]
    none = await stub.ListRuns(
        pb.ListRunsRequest(states=[run_pb2.RUN_STATE_CANCELLED]), timeout=TIMEOUT
    )
    assert list(none.runs) == []
    unknown = await stub.ListRuns(pb.ListRunsRequest(pipeline="nope"), timeout=TIMEOUT)
    assert (list(unknown.runs), unknown.next_page_token) == ([], "")

    error = await failure(stub.ListRuns(pb.ListRunsRequest(page_size=-1), timeout=TIMEOUT))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_SIZE")
    error = await failure(stub.ListRuns(pb.ListRunsRequest(page_token="zz"), timeout=TIMEOUT))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


async def test_cancelling_a_finished_or_unknown_run_fails(
    stub: SchedulerServiceStub, example: dict[str, Any], orders: Path
) -> None:
    await create(stub, example)
    run = await start(stub, "csv_to_parquet")
    assert (await watch_to_end(stub, run.run_id))[-1].state == run_pb2.RUN_STATE_SUCCEEDED
    error = await failure(stub.CancelRun(pb.CancelRunRequest(run_id=run.run_id), timeout=TIMEOUT))
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_ALREADY_FINISHED",
    )
    assert error.metadata["state"] == "SUCCEEDED"
    error = await failure(stub.CancelRun(pb.CancelRunRequest(run_id="nope"), timeout=TIMEOUT))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
    error = await failure(stub.CancelRun(pb.CancelRunRequest(), timeout=TIMEOUT))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancelling_a_running_stage_stops_it_and_commits_nothing(
    stub: SchedulerServiceStub, example: dict[str, Any], data_root: Path
) -> None:
    ids = pa.array(range(3_000_000), pa.int64())  # streams for well over a second
    pa_csv.write_csv(pa.table({"id": ids, "amount": ids}), data_root / "big.csv")
    spec = copy.deepcopy(example)
    spec["steps"][0]["source"]["file"]["path"] = "big.csv"
    await create(stub, spec)
    run = await start(stub, "csv_to_parquet")

    call = stub.WatchRun(pb.WatchRunRequest(run_id=run.run_id), timeout=30)
    async for response in call:
        assert response.run.state not in (run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED)
        if response.run.stages[0].state == run_pb2.STAGE_STATE_RUNNING:
            break
    loop = asyncio.get_running_loop()
    asked = loop.time()
    cancelled = (await stub.CancelRun(pb.CancelRunRequest(run_id=run.run_id), timeout=TIMEOUT)).run
    assert cancelled.state == run_pb2.RUN_STATE_CANCELLED
    assert cancelled.error_message == "cancelled"
    last = [response.run async for response in call][-1]  # the watch ends by itself
    assert loop.time() - asked < 2
    call.cancel()
    assert last.state == run_pb2.RUN_STATE_CANCELLED
    assert last.end_time.seconds > 0
    (stage,) = last.stages
    assert stage.state == run_pb2.STAGE_STATE_CANCELLED
    assert list(stage.outputs) == []
    got = (await stub.GetRun(pb.GetRunRequest(run_id=run.run_id), timeout=TIMEOUT)).run
    assert got == last

    # The executor cancels its connector calls; the connector drops its temp file.
    out = data_root / "out"
    deadline = loop.time() + 2
    while out.exists() and any(p.is_file() for p in out.rglob("*")):
        assert loop.time() < deadline, sorted(map(str, out.rglob("*")))
        await asyncio.sleep(0.05)


async def test_retry_run_after_the_missing_input_appears(
    stub: SchedulerServiceStub, example: dict[str, Any], data_root: Path
) -> None:
    await create(stub, example)
    run = await start(stub, "csv_to_parquet")
    assert (await watch_to_end(stub, run.run_id))[-1].state == run_pb2.RUN_STATE_FAILED
    (stage,) = (await stub.GetRun(pb.GetRunRequest(run_id=run.run_id), timeout=TIMEOUT)).run.stages
    assert (stage.error_reason, stage.attempt) == ("SOURCE_NOT_FOUND", 1)

    target = data_root / "examples" / "data" / "orders.csv"
    target.parent.mkdir(parents=True)
    shutil.copy(ORDERS, target)
    request = pb.RetryRunRequest(run_id=run.run_id, request_id="retry-1")
    retried = (await stub.RetryRun(request, timeout=TIMEOUT)).run
    assert (retried.run_id, retried.pipeline_version) == (run.run_id, 1)
    assert retried.state == run_pb2.RUN_STATE_RUNNING
    assert retried.error_message == ""
    assert not retried.HasField("end_time")
    assert [s.state for s in retried.stages] == [run_pb2.STAGE_STATE_PENDING]

    snapshots = await watch_to_end(stub, run.run_id)
    final = snapshots[-1]
    assert final.state == run_pb2.RUN_STATE_SUCCEEDED, final
    (stage,) = final.stages
    assert (stage.state, stage.attempt, stage.error_reason) == (
        run_pb2.STAGE_STATE_SUCCEEDED,
        2,
        "",
    )
    assert stage.outputs[0].rows_written == 35
    assert pq.read_table(data_root / "out" / "big_orders.parquet").num_rows == 35
    # The same request_id returns the first result; a new one finds nothing to retry.
    assert (await stub.RetryRun(request, timeout=TIMEOUT)).run == retried
    error = await failure(stub.RetryRun(pb.RetryRunRequest(run_id=run.run_id), timeout=TIMEOUT))
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_ALREADY_SUCCEEDED",
    )
    error = await failure(stub.RetryRun(pb.RetryRunRequest(run_id="nope"), timeout=TIMEOUT))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")


# --- issue 4: versions, validation, schedules, params, logs, backfills -------------------

YEARLY = {"cron": "0 0 1 1 *", "timezone": "UTC"}
#: A policy that keeps retrying a stage whose executor is unreachable for minutes.
STALLING_RETRY = {"maxAttempts": 100, "initialBackoff": "30s", "maxBackoff": "30s"}


def noop_spec(name: str = "noop", **fields: Any) -> dict[str, Any]:
    """The smallest real pipeline: one inline row into a discarding sink."""
    return {
        "name": name,
        "steps": [
            {"name": "rows", "source": {"inline": {"rows": [{"n": 1}]}}},
            {"name": "out", "inputs": ["rows"], "sink": {"discard": {}}},
        ],
        **fields,
    }


def after_spec(name: str = "dims_then_facts") -> dict[str, Any]:
    """Two chains; the facts wait for the dimensions without reading them."""
    return {
        "name": name,
        "steps": [
            {"name": "dims", "source": {"inline": {"rows": [{"d": 1}]}}},
            {"name": "dims_out", "inputs": ["dims"], "sink": {"discard": {}}},
            {"name": "facts", "source": {"inline": {"rows": [{"f": 1}]}}},
            {
                "name": "facts_out",
                "inputs": ["facts"],
                "after": ["dims_out"],
                "sink": {"discard": {}},
            },
        ],
    }


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def when(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


async def until_backfill_ends(
    stub: SchedulerServiceStub, backfill_id: str, seconds: float = 30
) -> run_pb2.Backfill:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        request = pb.GetBackfillRequest(backfill_id=backfill_id)
        backfill = (await stub.GetBackfill(request, timeout=TIMEOUT)).backfill
        if backfill.state != run_pb2.BACKFILL_STATE_RUNNING:
            return backfill
        assert loop.time() < deadline, backfill
        await asyncio.sleep(0.05)


@pytest.fixture
async def stalled_stub(
    tmp_path: Path, connector_address: str
) -> AsyncIterator[SchedulerServiceStub]:
    """A scheduler whose executor cannot be reached: with STALLING_RETRY, runs stay active."""
    server = await build_server(
        SchedulerConfig(
            store=str(tmp_path / "stalled.db"),
            executor_address=free_port_address(),
            connector_address=connector_address,
        )
    )
    await server.start()
    try:
        async with insecure_channel(server.address) as channel:
            yield SchedulerServiceStub(channel)
    finally:
        await server.stop(grace=1)


async def retrying_stage(stub: SchedulerServiceStub, run_id: str) -> run_pb2.Run:
    """The run once its stage failed an attempt and waits for the next one."""
    call = stub.WatchRun(pb.WatchRunRequest(run_id=run_id), timeout=20)
    async for response in call:
        if any(s.HasField("next_attempt_time") for s in response.run.stages):
            call.cancel()
            return response.run
    raise AssertionError("the run ended instead of retrying")


async def test_update_stores_a_new_version_and_runs_keep_theirs(
    stub: SchedulerServiceStub, example: dict[str, Any], orders: Path
) -> None:
    created = await create(stub, example)
    first = await start(stub, "csv_to_parquet")
    await watch_to_end(stub, first.run_id)

    changed = {**example, "description": "version two"}
    spec = pipeline_of(changed)
    spec.version, spec.paused = 99, True  # output-only: ignored
    request = pb.UpdatePipelineRequest(pipeline=spec, request_id="update-1")
    updated = await stub.UpdatePipeline(request, timeout=TIMEOUT)
    assert (updated.pipeline.version, updated.pipeline.description) == (2, "version two")
    assert not updated.pipeline.paused
    assert updated.pipeline.create_time == created.pipeline.create_time
    assert when(updated.pipeline.update_time) >= when(created.pipeline.update_time)
    assert [(s.stage_id, list(s.steps)) for s in updated.plan] == [
        ("out", ["orders", "big_orders", "out"])
    ]
    # The same request again returns the first answer; another spec under its id is refused.
    assert await stub.UpdatePipeline(request, timeout=TIMEOUT) == updated
    reused = pb.UpdatePipelineRequest(pipeline=pipeline_of(example), request_id="update-1")
    error = await failure(stub.UpdatePipeline(reused, timeout=TIMEOUT))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")

    latest = await stub.GetPipeline(pb.GetPipelineRequest(name="csv_to_parquet"), timeout=TIMEOUT)
    assert latest.pipeline == updated.pipeline
    old = await stub.GetPipeline(
        pb.GetPipelineRequest(name="csv_to_parquet", version=1), timeout=TIMEOUT
    )
    assert old.pipeline.description == example["description"]
    run = (await stub.GetRun(pb.GetRunRequest(run_id=first.run_id), timeout=TIMEOUT)).run
    assert run.pipeline_version == 1
    assert (await start(stub, "csv_to_parquet")).pipeline_version == 2

    error = await failure(
        stub.UpdatePipeline(
            pb.UpdatePipelineRequest(pipeline=pipeline_of({**example, "name": "nope"})),
            timeout=TIMEOUT,
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PIPELINE_NOT_FOUND")
    broken = copy.deepcopy(example)
    broken["steps"][1]["transform"]["filter"]["predicate"] = "amount >"
    error = await failure(
        stub.UpdatePipeline(pb.UpdatePipelineRequest(pipeline=pipeline_of(broken)), timeout=TIMEOUT)
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PIPELINE_SPEC")
    assert [v.field for v in error.violations] == ["pipeline.steps[1].transform.filter.predicate"]
    latest = await stub.GetPipeline(pb.GetPipelineRequest(name="csv_to_parquet"), timeout=TIMEOUT)
    assert latest.pipeline.version == 2


async def test_validate_returns_the_plan_with_upstream_and_stores_nothing(
    stub: SchedulerServiceStub,
) -> None:
    response = await stub.ValidatePipeline(
        pb.ValidatePipelineRequest(pipeline=pipeline_of(after_spec())), timeout=TIMEOUT
    )
    assert response.valid
    assert list(response.violations) == []
    assert [(s.stage_id, list(s.steps), list(s.upstream)) for s in response.plan] == [
        ("dims_out", ["dims", "dims_out"], []),
        ("facts_out", ["facts", "facts_out"], ["dims_out"]),
    ]
    fan_out = noop_spec("fan_out")
    fan_out["steps"].append({"name": "copy", "inputs": ["rows"], "sink": {"discard": {}}})
    response = await stub.ValidatePipeline(
        pb.ValidatePipelineRequest(pipeline=pipeline_of(fan_out)), timeout=TIMEOUT
    )
    assert response.valid, response.violations
    by_id = {s.stage_id: s for s in response.plan}
    assert set(by_id) == {"rows", "out", "copy"}
    assert list(by_id["out"].upstream) == list(by_id["copy"].upstream) == ["rows"]
    listed = await stub.ListPipelines(pb.ListPipelinesRequest(), timeout=TIMEOUT)
    assert list(listed.pipelines) == []


async def test_validate_lists_every_problem_without_failing(
    stub: SchedulerServiceStub, example: dict[str, Any]
) -> None:
    spec = copy.deepcopy(example)
    spec["name"] = "9bad"
    spec["schedule"] = {"cron": "61 * * * *", "timezone": "UTC"}
    spec["steps"][0]["source"]["file"]["connection"] = "nowhere"
    response = await stub.ValidatePipeline(
        pb.ValidatePipelineRequest(pipeline=pipeline_of(spec)), timeout=TIMEOUT
    )
    assert not response.valid
    assert list(response.plan) == []
    by_field = {v.field: v.description for v in response.violations}
    assert set(by_field) == {
        "pipeline.name",
        "pipeline.schedule.cron",
        "pipeline.steps[0].source.file.connection",
    }
    assert "nowhere" in by_field["pipeline.steps[0].source.file.connection"]
    assert "local" in by_field["pipeline.steps[0].source.file.connection"]
    empty = await stub.ValidatePipeline(pb.ValidatePipelineRequest(), timeout=TIMEOUT)
    assert not empty.valid
    assert {"pipeline.name", "pipeline.steps"} <= {v.field for v in empty.violations}


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ({"cron": "every day", "timezone": "UTC"}, "pipeline.schedule.cron"),
        ({"cron": "61 * * * *"}, "pipeline.schedule.cron"),
        ({"cron": "@fortnightly"}, "pipeline.schedule.cron"),
        ({"cron": "0 2 * * *", "timezone": "Mars/Olympus_Mons"}, "pipeline.schedule.timezone"),
        ({"timezone": "UTC"}, "pipeline.schedule.cron"),
    ],
    ids=["words", "minute 61", "unknown macro", "unknown zone", "no cron"],
)
async def test_a_bad_schedule_is_invalid_argument_with_a_field_violation(
    stub: SchedulerServiceStub, schedule: dict[str, Any], field: str
) -> None:
    error = await failure(create(stub, noop_spec(schedule=schedule)))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PIPELINE_SPEC")
    assert [v.field for v in error.violations] == [field]
    assert error.violations[0].description


async def test_an_unknown_connection_is_refused_at_creation(
    stub: SchedulerServiceStub, example: dict[str, Any]
) -> None:
    example["steps"][2]["sink"]["file"]["connection"] = "archive"
    error = await failure(create(stub, example))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PIPELINE_SPEC")
    (violation,) = error.violations
    assert violation.field == "pipeline.steps[2].sink.file.connection"
    assert 'connection "archive" is not configured' in violation.description
    example["steps"][2]["sink"]["file"]["connection"] = "local"
    assert (await create(stub, example)).pipeline.version == 1


async def test_pause_unpause_and_the_next_run_time(stub: SchedulerServiceStub) -> None:
    now = datetime.now(UTC)
    next_new_year = utc(now.year + 1, 1, 1)
    created = (await create(stub, noop_spec(schedule=YEARLY))).pipeline
    assert not created.paused
    assert when(created.next_run_time) == next_new_year

    paused = (
        await stub.PausePipeline(pb.PausePipelineRequest(name="noop"), timeout=TIMEOUT)
    ).pipeline
    assert paused.paused
    assert not paused.HasField("next_run_time")
    got = (await stub.GetPipeline(pb.GetPipelineRequest(name="noop"), timeout=TIMEOUT)).pipeline
    assert (got.paused, got.HasField("next_run_time")) == (True, False)
    listed = (await stub.ListPipelines(pb.ListPipelinesRequest(), timeout=TIMEOUT)).pipelines
    assert [(p.name, p.paused) for p in listed] == [("noop", True)]
    # Pausing twice is fine; a new version stays paused.
    await stub.PausePipeline(pb.PausePipelineRequest(name="noop"), timeout=TIMEOUT)
    updated = await stub.UpdatePipeline(
        pb.UpdatePipelineRequest(pipeline=pipeline_of(noop_spec(schedule=YEARLY))),
        timeout=TIMEOUT,
    )
    assert (updated.pipeline.version, updated.pipeline.paused) == (2, True)

    unpaused = (
        await stub.UnpausePipeline(pb.UnpausePipelineRequest(name="noop"), timeout=TIMEOUT)
    ).pipeline
    assert not unpaused.paused
    assert when(unpaused.next_run_time) == next_new_year

    # A schedule that starts later fires first at its start; one that ended, never.
    later = noop_spec("later", schedule={**YEARLY, "startTime": f"{now.year + 5}-06-01T00:00:00Z"})
    assert when((await create(stub, later)).pipeline.next_run_time) == utc(now.year + 6, 1, 1)
    ended = noop_spec("ended", schedule={**YEARLY, "endTime": "2020-06-01T00:00:00Z"})
    assert not (await create(stub, ended)).pipeline.HasField("next_run_time")
    unscheduled = (await create(stub, noop_spec("adhoc"))).pipeline
    assert not unscheduled.HasField("next_run_time")
    await stub.PausePipeline(pb.PausePipelineRequest(name="adhoc"), timeout=TIMEOUT)

    error = await failure(stub.PausePipeline(pb.PausePipelineRequest(name="nope"), timeout=TIMEOUT))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PIPELINE_NOT_FOUND")
    error = await failure(stub.UnpausePipeline(pb.UnpausePipelineRequest(), timeout=TIMEOUT))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["name"]


async def test_list_pipelines_filters_by_tags_and_labels(stub: SchedulerServiceStub) -> None:
    await create(stub, noop_spec("a", tags=["x", "y"], labels={"team": "core", "tier": "1"}))
    await create(stub, noop_spec("b", tags=["x"], labels={"team": "core"}))
    await create(stub, noop_spec("c", labels={"team": "web"}))

    async def names(**filters: Any) -> list[str]:
        request = pb.ListPipelinesRequest(**filters)
        return [p.name for p in (await stub.ListPipelines(request, timeout=TIMEOUT)).pipelines]

    assert await names() == ["a", "b", "c"]
    assert await names(tags=["x"]) == ["a", "b"]
    assert await names(tags=["x", "y"]) == ["a"]
    assert await names(labels={"team": "core"}) == ["a", "b"]
    assert await names(labels={"team": "core", "tier": "1"}) == ["a"]
    assert await names(tags=["x"], labels={"team": "web"}) == []
    assert await names(tags=["nope"]) == []
    page = await stub.ListPipelines(
        pb.ListPipelinesRequest(page_size=1, labels={"team": "core"}), timeout=TIMEOUT
    )
    assert [p.name for p in page.pipelines] == ["a"]
    rest = await stub.ListPipelines(
        pb.ListPipelinesRequest(
            page_size=1, page_token=page.next_page_token, labels={"team": "core"}
        ),
        timeout=TIMEOUT,
    )
    assert [p.name for p in rest.pipelines] == ["b"]


async def test_delete_removes_versions_and_runs(
    stub: SchedulerServiceStub, example: dict[str, Any], orders: Path
) -> None:
    await create(stub, example)
    await stub.UpdatePipeline(pb.UpdatePipelineRequest(pipeline=pipeline_of(example)))
    run = await start(stub, "csv_to_parquet")
    await watch_to_end(stub, run.run_id)

    deleted = await stub.DeletePipeline(
        pb.DeletePipelineRequest(name="csv_to_parquet"), timeout=TIMEOUT
    )
    assert (deleted.name, deleted.versions_deleted, deleted.runs_deleted) == (
        "csv_to_parquet",
        2,
        1,
    )
    error = await failure(
        stub.GetPipeline(pb.GetPipelineRequest(name="csv_to_parquet"), timeout=TIMEOUT)
    )
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PIPELINE_NOT_FOUND")
    error = await failure(stub.GetRun(pb.GetRunRequest(run_id=run.run_id), timeout=TIMEOUT))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
    error = await failure(
        stub.DeletePipeline(pb.DeletePipelineRequest(name="csv_to_parquet"), timeout=TIMEOUT)
    )
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PIPELINE_NOT_FOUND")
    error = await failure(stub.DeletePipeline(pb.DeletePipelineRequest(), timeout=TIMEOUT))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    # The name is free again.
    assert (await create(stub, example)).pipeline.version == 1


async def test_an_active_run_blocks_delete_until_cancelled(
    stalled_stub: SchedulerServiceStub,
) -> None:
    stub = stalled_stub
    await create(stub, noop_spec(defaultRetry=STALLING_RETRY))
    run = await start(stub, "noop")
    waiting = await retrying_stage(stub, run.run_id)
    assert waiting.state == run_pb2.RUN_STATE_RUNNING
    (stage,) = waiting.stages
    assert stage.error_reason == "EXECUTOR_UNAVAILABLE"
    assert when(stage.next_attempt_time) > when(waiting.create_time)

    error = await failure(stub.DeletePipeline(pb.DeletePipelineRequest(name="noop")))
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PIPELINE_HAS_ACTIVE_RUNS",
    )
    cancelled = (await stub.CancelRun(pb.CancelRunRequest(run_id=run.run_id), timeout=TIMEOUT)).run
    assert cancelled.state == run_pb2.RUN_STATE_CANCELLED
    assert not cancelled.stages[0].HasField("next_attempt_time")
    error = await failure(stub.CancelRun(pb.CancelRunRequest(run_id=run.run_id), timeout=TIMEOUT))
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_ALREADY_FINISHED",
    )
    deleted = await stub.DeletePipeline(pb.DeletePipelineRequest(name="noop"), timeout=TIMEOUT)
    assert (deleted.versions_deleted, deleted.runs_deleted) == (1, 1)


async def test_run_params_override_defaults_and_reach_the_templates(
    stub: SchedulerServiceStub, data_root: Path
) -> None:
    spec = {
        "name": "templated",
        "params": {"region": "eu", "limit": 10},
        "steps": [
            {"name": "rows", "source": {"inline": {"rows": [{"n": 1}, {"n": 2}]}}},
            {
                "name": "out",
                "inputs": ["rows"],
                "sink": {
                    "file": {
                        "path": "out/{{ params.region }}/{{ ds }}-{{ params.limit }}.csv",
                        "format": "FILE_FORMAT_CSV",
                    }
                },
            },
        ],
    }
    created = await create(stub, spec)
    assert json_format.MessageToDict(created.pipeline)["params"] == {"region": "eu", "limit": 10}
    request = pb.RunPipelineRequest(pipeline="templated")
    request.params["region"].string_value = "us"
    run = (await stub.RunPipeline(request, timeout=TIMEOUT)).run
    assert run.trigger == run_pb2.RUN_TRIGGER_MANUAL
    assert {k: json_format.MessageToDict(v) for k, v in run.params.items()} == {
        "region": "us",
        "limit": 10,
    }
    assert run.logical_date == run.data_interval_start == run.data_interval_end
    assert abs(when(run.logical_date) - when(run.create_time)) < timedelta(seconds=1)
    assert run.backfill_id == ""

    final = (await watch_to_end(stub, run.run_id))[-1]
    assert final.state == run_pb2.RUN_STATE_SUCCEEDED, final
    assert final.params == run.params
    written = data_root / "out" / "us" / f"{when(run.logical_date):%Y-%m-%d}-10.csv"
    assert pa_csv.read_csv(written).num_rows == 2

    request = pb.RunPipelineRequest(pipeline="templated")
    request.params["regoin"].string_value = "us"
    error = await failure(stub.RunPipeline(request, timeout=TIMEOUT))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_PARAM")
    assert [v.field for v in error.violations] == ['params["regoin"]']

    spec["name"] = "bad_template"
    spec["steps"][1]["sink"]["file"]["path"] = "out/{{ nowhere }}.csv"
    error = await failure(create(stub, spec))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PIPELINE_SPEC")
    assert [v.field for v in error.violations] == ["pipeline.steps[1].sink.file.path"]


async def test_runs_show_stage_upstream_and_respect_it(stub: SchedulerServiceStub) -> None:
    await create(stub, after_spec())
    run = await start(stub, "dims_then_facts")
    assert {s.stage_id: list(s.upstream) for s in run.stages} == {
        "dims_out": [],
        "facts_out": ["dims_out"],
    }
    final = (await watch_to_end(stub, run.run_id))[-1]
    assert final.state == run_pb2.RUN_STATE_SUCCEEDED, final
    stages = {s.stage_id: s for s in final.stages}
    assert when(stages["dims_out"].end_time) <= when(stages["facts_out"].start_time)


async def test_stage_logs_page_and_bad_requests(
    stub: SchedulerServiceStub, example: dict[str, Any], orders: Path
) -> None:
    await create(stub, example)
    run = await start(stub, "csv_to_parquet")
    await watch_to_end(stub, run.run_id)

    response = await stub.ListStageLogs(
        pb.ListStageLogsRequest(run_id=run.run_id, stage_id="out"), timeout=TIMEOUT
    )
    assert response.attempt == 1
    lines = list(response.lines)
    assert response.next_page_token == ""
    for line in lines:
        assert line.time.seconds > 0
        assert line.level != task_pb2.LOG_LEVEL_UNSPECIFIED
    same = await stub.ListStageLogs(
        pb.ListStageLogsRequest(run_id=run.run_id, stage_id="out", attempt=1), timeout=TIMEOUT
    )
    assert list(same.lines) == lines
    assert len(lines) >= 2  # the executor logs at least the start and the commit
    first = await stub.ListStageLogs(
        pb.ListStageLogsRequest(run_id=run.run_id, stage_id="out", page_size=1),
        timeout=TIMEOUT,
    )
    assert list(first.lines) == lines[:1]
    assert first.next_page_token
    second = await stub.ListStageLogs(
        pb.ListStageLogsRequest(
            run_id=run.run_id, stage_id="out", page_size=1, page_token=first.next_page_token
        ),
        timeout=TIMEOUT,
    )
    assert list(second.lines) == lines[1:2]

    error = await failure(
        stub.ListStageLogs(pb.ListStageLogsRequest(run_id=run.run_id, stage_id="nope"))
    )
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "STAGE_NOT_FOUND")
    error = await failure(
        stub.ListStageLogs(pb.ListStageLogsRequest(run_id="nope", stage_id="out"))
    )
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
    error = await failure(
        stub.ListStageLogs(
            pb.ListStageLogsRequest(run_id=run.run_id, stage_id="out", page_token="zz")
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    error = await failure(
        stub.ListStageLogs(pb.ListStageLogsRequest(run_id=run.run_id, stage_id="out", page_size=-1))
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_backfill_runs_each_interval_once(stub: SchedulerServiceStub) -> None:
    await create(stub, noop_spec(schedule=YEARLY, params={"tag": "x"}))
    request = pb.BackfillPipelineRequest(
        pipeline="noop",
        start_date=stamp(utc(2020, 1, 1)),
        end_date=stamp(utc(2023, 1, 1)),
        max_active_runs=2,
        request_id="backfill-1",
    )
    request.params["tag"].string_value = "backfilled"
    created = (await stub.BackfillPipeline(request, timeout=TIMEOUT)).backfill
    assert created.backfill_id
    assert (created.pipeline, created.total_runs, created.max_active_runs) == ("noop", 3, 2)
    assert (when(created.start_date), when(created.end_date)) == (utc(2020, 1, 1), utc(2023, 1, 1))
    assert created.request_id == "backfill-1"
    assert json_format.MessageToDict(created)["params"] == {"tag": "backfilled"}
    again = (await stub.BackfillPipeline(request, timeout=TIMEOUT)).backfill
    assert again.backfill_id == created.backfill_id

    done = await until_backfill_ends(stub, created.backfill_id)
    assert done.state == run_pb2.BACKFILL_STATE_SUCCEEDED, done
    assert (done.total_runs, done.created_runs, done.succeeded_runs, done.failed_runs) == (
        3,
        3,
        3,
        0,
    )
    assert done.HasField("end_time")

    runs = (
        await stub.ListRuns(pb.ListRunsRequest(backfill_id=created.backfill_id), timeout=TIMEOUT)
    ).runs
    assert [when(r.logical_date) for r in runs] == [
        utc(2022, 1, 1),
        utc(2021, 1, 1),
        utc(2020, 1, 1),
    ]
    for run in runs:
        assert run.trigger == run_pb2.RUN_TRIGGER_BACKFILL
        assert run.backfill_id == created.backfill_id
        assert run.data_interval_start == run.logical_date
        assert when(run.data_interval_end) == utc(when(run.logical_date).year + 1, 1, 1)
        assert run.state == run_pb2.RUN_STATE_SUCCEEDED
        assert json_format.MessageToDict(run.params["tag"]) == "backfilled"

    listed = (await stub.ListBackfills(pb.ListBackfillsRequest(), timeout=TIMEOUT)).backfills
    assert [b.backfill_id for b in listed] == [created.backfill_id]
    assert listed[0] == done
    other = await stub.ListBackfills(pb.ListBackfillsRequest(pipeline="other"), timeout=TIMEOUT)
    assert list(other.backfills) == []
    error = await failure(
        stub.CancelBackfill(pb.CancelBackfillRequest(backfill_id=created.backfill_id))
    )
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "BACKFILL_ALREADY_FINISHED",
    )


async def test_backfill_bad_requests(stub: SchedulerServiceStub) -> None:
    await create(stub, noop_spec(schedule=YEARLY))
    await create(stub, noop_spec("adhoc"))

    def backfill(**fields: Any) -> Any:
        """BackfillPipeline of a valid request with ``fields`` changed (None: cleared)."""
        request = pb.BackfillPipelineRequest(
            pipeline="noop", start_date=stamp(utc(2020, 1, 1)), end_date=stamp(utc(2022, 1, 1))
        )
        for name, value in fields.items():
            if value is None:
                request.ClearField(name)
            elif isinstance(value, Timestamp):
                getattr(request, name).CopyFrom(value)
            else:
                setattr(request, name, value)
        return stub.BackfillPipeline(request, timeout=TIMEOUT)

    error = await failure(backfill(pipeline="nope"))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PIPELINE_NOT_FOUND")
    error = await failure(backfill(pipeline="adhoc"))
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PIPELINE_NOT_SCHEDULED",
    )
    error = await failure(backfill(end_date=stamp(utc(2020, 1, 1))))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    error = await failure(backfill(start_date=None))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["start_date"]
    error = await failure(backfill(max_active_runs=-1))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    request = pb.BackfillPipelineRequest(
        pipeline="noop", start_date=stamp(utc(2020, 1, 1)), end_date=stamp(utc(2022, 1, 1))
    )
    request.params["nope"].bool_value = True
    error = await failure(stub.BackfillPipeline(request, timeout=TIMEOUT))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_PARAM")

    error = await failure(stub.GetBackfill(pb.GetBackfillRequest(backfill_id="nope")))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "BACKFILL_NOT_FOUND")
    error = await failure(stub.CancelBackfill(pb.CancelBackfillRequest(backfill_id="nope")))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "BACKFILL_NOT_FOUND")
    error = await failure(stub.ListBackfills(pb.ListBackfillsRequest(page_token="zz")))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    listed = await stub.ListBackfills(pb.ListBackfillsRequest(), timeout=TIMEOUT)
    assert list(listed.backfills) == []


async def test_cancelling_a_backfill_cancels_its_runs(stalled_stub: SchedulerServiceStub) -> None:
    stub = stalled_stub
    await create(stub, noop_spec(schedule=YEARLY, defaultRetry=STALLING_RETRY))
    request = pb.BackfillPipelineRequest(
        pipeline="noop",
        start_date=stamp(utc(2020, 1, 1)),
        end_date=stamp(utc(2023, 1, 1)),
        max_active_runs=1,
    )
    created = (await stub.BackfillPipeline(request, timeout=TIMEOUT)).backfill
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        runs = (
            await stub.ListRuns(
                pb.ListRunsRequest(backfill_id=created.backfill_id), timeout=TIMEOUT
            )
        ).runs
        if runs:
            break
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    (first,) = runs  # max_active_runs 1: one at a time
    assert when(first.logical_date) == utc(2020, 1, 1)
    await retrying_stage(stub, first.run_id)
    running = (
        await stub.GetBackfill(pb.GetBackfillRequest(backfill_id=created.backfill_id))
    ).backfill
    assert (running.state, running.created_runs, running.succeeded_runs) == (
        run_pb2.BACKFILL_STATE_RUNNING,
        1,
        0,
    )

    cancelled = (
        await stub.CancelBackfill(
            pb.CancelBackfillRequest(backfill_id=created.backfill_id), timeout=TIMEOUT
        )
    ).backfill
    assert cancelled.state == run_pb2.BACKFILL_STATE_CANCELLED
    assert cancelled.HasField("end_time")
    final = (await watch_to_end(stub, first.run_id))[-1]
    assert final.state == run_pb2.RUN_STATE_CANCELLED
    await asyncio.sleep(0.3)  # no further run appears
    runs = (
        await stub.ListRuns(pb.ListRunsRequest(backfill_id=created.backfill_id), timeout=TIMEOUT)
    ).runs
    assert [r.run_id for r in runs] == [first.run_id]
    error = await failure(
        stub.CancelBackfill(pb.CancelBackfillRequest(backfill_id=created.backfill_id))
    )
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "BACKFILL_ALREADY_FINISHED",
    )


# --- issue 5/6: proxies to the connector and executor; check results ------------------------


async def test_test_connection_is_forwarded_to_the_connector(stub: SchedulerServiceStub) -> None:
    tested = await stub.TestConnection(pb.TestConnectionRequest(name="local"), timeout=TIMEOUT)
    assert tested.ok, tested
    assert tested.latency_ms >= 0

    error = await failure(stub.TestConnection(pb.TestConnectionRequest(name="nope")))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "CONNECTION_NOT_FOUND")
    error = await failure(stub.TestConnection(pb.TestConnectionRequest()))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert [v.field for v in error.violations] == ["name"]


async def test_describe_source_returns_the_schema_from_the_connector(
    stub: SchedulerServiceStub, orders: Path
) -> None:
    source = json_format.ParseDict(
        {"file": {"path": "examples/data/orders.csv"}}, step_pb2.SourceSpec()
    )
    described = await stub.DescribeSource(pb.DescribeSourceRequest(source=source), timeout=TIMEOUT)
    expected = pa_csv.read_csv(orders).schema
    assert [(c.name, c.type) for c in described.columns] == [
        (f.name, str(f.type)) for f in expected
    ]
    assert all(c.nullable for c in described.columns)
    assert pa.ipc.read_schema(pa.py_buffer(described.schema.ipc_message)).names == expected.names

    error = await failure(stub.DescribeSource(pb.DescribeSourceRequest()))
    assert (error.code, [v.field for v in error.violations]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["source"],
    )
    bad = json_format.ParseDict({"file": {"path": "/etc/passwd.csv"}}, step_pb2.SourceSpec())
    error = await failure(stub.DescribeSource(pb.DescribeSourceRequest(source=bad)))
    assert (error.reason, [v.field for v in error.violations]) == (
        "INVALID_REQUEST",
        ["source.file.path"],
    )
    missing = json_format.ParseDict({"file": {"path": "no/such.csv"}}, step_pb2.SourceSpec())
    error = await failure(stub.DescribeSource(pb.DescribeSourceRequest(source=missing)))
    # The connector's own status and reason come through unchanged.
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "SOURCE_NOT_FOUND")


async def test_list_transform_types_comes_from_the_executor(stub: SchedulerServiceStub) -> None:
    response = await stub.ListTransformTypes(pb.ListTransformTypesRequest(), timeout=TIMEOUT)
    by_name = {t.name: t for t in response.transform_types}
    kinds = [f.name for f in step_pb2.TransformSpec.DESCRIPTOR.oneofs_by_name["kind"].fields]
    assert sorted(by_name) == sorted(kinds)
    assert (by_name["join"].min_inputs, by_name["join"].max_inputs) == (2, 2)
    assert (by_name["union"].min_inputs, by_name["union"].max_inputs) == (2, 0)
    assert (by_name["filter"].min_inputs, by_name["filter"].max_inputs) == (1, 1)
    assert by_name["filter"].streaming
    assert not by_name["sort"].streaming
    assert "predicate" in {p.name for p in by_name["filter"].parameters}
    assert all(t.description for t in response.transform_types)


async def test_the_proxies_answer_unavailable_without_their_services(tmp_path: Path) -> None:
    server = await build_server(
        SchedulerConfig(
            store=str(tmp_path / "alone.db"),
            executor_address=free_port_address(),
            connector_address=free_port_address(),
        )
    )
    await server.start()
    try:
        async with insecure_channel(server.address) as channel:
            stub = SchedulerServiceStub(channel)
            source = step_pb2.SourceSpec(file=step_pb2.FileSource(path="a.csv"))
            for call, reason in (
                (stub.TestConnection(pb.TestConnectionRequest(name="local")), "CONNECTOR"),
                (stub.DescribeSource(pb.DescribeSourceRequest(source=source)), "CONNECTOR"),
                (stub.ListTransformTypes(pb.ListTransformTypesRequest()), "EXECUTOR"),
            ):
                error = await failure(call)
                assert (error.code, error.reason) == (
                    grpc.StatusCode.UNAVAILABLE,
                    f"{reason}_UNAVAILABLE",
                )
    finally:
        await server.stop(grace=1)


CHECKED = {
    "name": "checked",
    "steps": [
        {
            "name": "rows",
            "source": {
                "inline": {
                    "rows": [
                        {"id": 1, "email": "a@example.com"},
                        {"id": None, "email": "nope"},
                        {"id": 3, "email": "c@example.com"},
                    ]
                }
            },
        },
        {
            "name": "quality",
            "inputs": ["rows"],
            "transform": {
                "check": {
                    "onFailure": "CHECK_ACTION_WARN",
                    "checks": [
                        {"name": "ids", "notNull": {"columns": ["id"]}},
                        {"name": "emails", "regex": {"column": "email", "pattern": "@"}},
                        {"name": "enough", "rowCount": {"min": 1}},
                    ],
                }
            },
        },
        {"name": "out", "inputs": ["quality"], "sink": {"discard": {}}},
    ],
}


async def test_check_results_are_shown_by_get_run_and_survive_a_restart(
    tmp_path: Path, executor_address: str, connector_address: str
) -> None:
    config = SchedulerConfig(
        store=str(tmp_path / "checks.db"),
        executor_address=executor_address,
        connector_address=connector_address,
    )
    server = await build_server(config)
    await server.start()
    try:
        async with insecure_channel(server.address) as channel:
            stub = SchedulerServiceStub(channel)
            await create(stub, CHECKED)
            run = await start(stub, "checked")
            final = (await watch_to_end(stub, run.run_id))[-1]
    finally:
        await server.stop(grace=1)
    assert final.state == run_pb2.RUN_STATE_SUCCEEDED, final
    (stage,) = final.stages
    results = {c.check: c for c in stage.checks}
    assert set(results) == {"ids", "emails", "enough"}
    assert all(c.step == "quality" and c.action == "WARN" for c in stage.checks)
    assert (results["ids"].passed, results["ids"].failing_rows) == (False, 1)
    assert (results["emails"].passed, results["emails"].failing_rows) == (False, 1)
    assert results["enough"].passed

    restarted = await build_server(config)
    await restarted.start()
    try:
        async with insecure_channel(restarted.address) as channel:
            stub = SchedulerServiceStub(channel)
            again = (await stub.GetRun(pb.GetRunRequest(run_id=run.run_id), timeout=TIMEOUT)).run
    finally:
        await restarted.stop(grace=1)
    assert list(again.stages[0].checks) == list(stage.checks)


async def test_a_join_of_two_sources_runs_through_the_artifact_store(
    stub: SchedulerServiceStub,
) -> None:
    spec = {
        "name": "joined",
        "steps": [
            {"name": "a", "source": {"inline": {"rows": [{"id": 1, "x": "a"}, {"id": 2}]}}},
            {"name": "b", "source": {"inline": {"rows": [{"id": 1, "y": "b"}]}}},
            {
                "name": "j",
                "inputs": ["a", "b"],
                "transform": {"join": {"on": [{"left": "id", "right": "id"}]}},
            },
            {"name": "out", "inputs": ["j"], "sink": {"discard": {}}},
        ],
    }
    created = await create(stub, spec)
    assert [(s.stage_id, list(s.steps), list(s.upstream)) for s in created.plan] == [
        ("a", ["a"], []),
        ("b", ["b"], []),
        ("out", ["a", "b", "j", "out"], ["a", "b"]),
    ]
    final = (await watch_to_end(stub, (await start(stub, "joined")).run_id))[-1]
    assert final.state == run_pb2.RUN_STATE_SUCCEEDED, final
    out = next(s for s in final.stages if s.stage_id == "out")
    assert out.metrics.rows_written == 1

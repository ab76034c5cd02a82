"""The scheduler service with real connector and executor services, over real channels."""

from __future__ import annotations

import asyncio
import copy
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import yaml
from google.protobuf.json_format import ParseDict

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
        # ... which also makes a cycle and a fan-out of big_orders
        {"pipeline.steps[0].inputs", "pipeline.steps[0].inputs[0]", "pipeline.steps[1]"},
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


async def test_fan_out_is_not_supported_yet(
    stub: SchedulerServiceStub, example: dict[str, Any]
) -> None:
    spec = copy.deepcopy(example)
    spec["steps"].append(
        {"name": "copy", "inputs": ["big_orders"], "sink": {"file": {"path": "c.csv"}}}
    )
    error = await failure(create(stub, spec))
    assert [
        (v.field, "fan-out is not supported yet" in v.description) for v in error.violations
    ] == [("pipeline.steps[1]", True)]


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
        "pipeline.steps[0]",  # consumed by big_orders and the second "orders": fan-out
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
            db_path=tmp_path / "lonely.db",
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
        db_path=tmp_path / "restart.db",
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

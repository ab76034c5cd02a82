"""The executor service against a real connector service, over real channels.

Inputs are written into the connector's ``data_root``; outputs are read back with
pyarrow and compared with what pyarrow computes by itself.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2 as pb
from datadog_platform.api.executor.v1 import executor_service_pb2_grpc
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.status import details_of
from datadog_platform.executor.app import ExecutorConfig, build_server

ORDERS = Path(__file__).resolve().parents[2] / "examples" / "data" / "orders.csv"


def stage_request(
    source_path: str = "orders.csv",
    predicate: str = "amount > 100",
    sink_path: str = "out/big_orders.parquet",
) -> pb.ExecuteTaskRequest:
    return pb.ExecuteTaskRequest(
        run_id="run-1",
        stage_id="out",
        attempt=1,
        steps=[
            step_pb2.Step(
                name="orders",
                source=step_pb2.SourceSpec(
                    file=step_pb2.FileSource(
                        connection="local", path=source_path, format=step_pb2.FILE_FORMAT_CSV
                    )
                ),
            ),
            step_pb2.Step(
                name="big_orders",
                inputs=["orders"],
                transform=step_pb2.TransformSpec(
                    filter=step_pb2.FilterTransform(predicate=predicate)
                ),
            ),
            step_pb2.Step(
                name="out",
                inputs=["big_orders"],
                sink=step_pb2.SinkSpec(
                    file=step_pb2.FileSink(
                        connection="local",
                        path=sink_path,
                        format=step_pb2.FILE_FORMAT_PARQUET,
                        mode=step_pb2.WRITE_MODE_OVERWRITE,
                    )
                ),
            ),
        ],
    )


@pytest.fixture
def orders_root(data_root: Path) -> Path:
    shutil.copy(ORDERS, data_root / "orders.csv")
    return data_root


@pytest.fixture
async def executor(
    executor_address: str,
) -> AsyncIterator[executor_service_pb2_grpc.ExecutorServiceStub]:
    async with insecure_channel(executor_address) as channel:
        yield executor_service_pb2_grpc.ExecutorServiceStub(channel)


async def run_stage(
    stub: executor_service_pb2_grpc.ExecutorServiceStub, request: pb.ExecuteTaskRequest
) -> list[pb.ExecuteTaskResponse]:
    return [event async for event in stub.ExecuteTask(request, timeout=60)]


def kinds(events: list[pb.ExecuteTaskResponse]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def assert_well_formed(events: list[pb.ExecuteTaskResponse], last: str) -> None:
    names = kinds(events)
    assert names[0] == "started"
    assert names[-1] == last
    assert set(names[1:-1]) <= {"progress"}


async def test_csv_filter_parquet_matches_pyarrow_row_by_row(
    orders_root: Path, executor: executor_service_pb2_grpc.ExecutorServiceStub
) -> None:
    events = await run_stage(executor, stage_request())

    assert_well_formed(events, "succeeded")
    assert events[0].started.executor_id
    done = events[-1].succeeded
    output = orders_root / "out" / "big_orders.parquet"
    assert [(o.step, o.location, o.rows_written) for o in done.outputs] == [
        ("out", f"file://{output.resolve()}", 35)
    ]
    assert (done.metrics.rows_read, done.metrics.rows_written) == (50, 35)
    assert done.metrics.bytes_read > done.metrics.bytes_written > 0

    expected = pa_csv.read_csv(ORDERS)
    expected = expected.filter(pc.greater(expected["amount"], 100))
    actual = pq.read_table(output)
    assert actual.num_rows == 35
    # Same columns and types, except that Parquet stores second timestamps as milliseconds.
    assert actual.schema.names == expected.schema.names
    for name in ("order_id", "customer", "country", "amount"):
        assert actual.schema.field(name).type == expected.schema.field(name).type
    assert actual.to_pylist() == expected.to_pylist()
    assert files_under(orders_root) == {"orders.csv", "out/big_orders.parquet"}


async def test_no_matching_row_writes_an_empty_file_with_the_input_schema(
    orders_root: Path, executor: executor_service_pb2_grpc.ExecutorServiceStub
) -> None:
    events = await run_stage(executor, stage_request(predicate="amount > 1e9"))

    assert_well_formed(events, "succeeded")
    done = events[-1].succeeded
    assert (done.metrics.rows_read, done.metrics.rows_written) == (50, 0)
    assert done.outputs[0].rows_written == 0
    actual = pq.read_table(orders_root / "out" / "big_orders.parquet")
    assert actual.num_rows == 0
    assert actual.schema.names == pa_csv.read_csv(ORDERS).schema.names


async def test_rerun_overwrites_with_the_same_result(
    orders_root: Path, executor: executor_service_pb2_grpc.ExecutorServiceStub
) -> None:
    first = await run_stage(executor, stage_request())
    second = await run_stage(executor, stage_request())
    assert kinds(first)[-1] == kinds(second)[-1] == "succeeded"
    assert pq.read_table(orders_root / "out" / "big_orders.parquet").num_rows == 35


async def test_missing_source_fails_with_source_not_found_and_writes_nothing(
    orders_root: Path, executor: executor_service_pb2_grpc.ExecutorServiceStub
) -> None:
    events = await run_stage(executor, stage_request(source_path="missing.csv"))

    assert_well_formed(events, "failed")
    failed = events[-1].failed
    assert failed.reason == "SOURCE_NOT_FOUND"
    assert failed.step == "orders"
    assert "orders" in failed.message
    assert "missing.csv" in failed.message
    assert not failed.retryable
    assert files_under(orders_root) == {"orders.csv"}


async def test_unknown_column_fails_with_transform_error_and_writes_nothing(
    orders_root: Path, executor: executor_service_pb2_grpc.ExecutorServiceStub
) -> None:
    events = await run_stage(executor, stage_request(predicate="nope > 100"))

    assert_well_formed(events, "failed")
    failed = events[-1].failed
    assert failed.reason == "TRANSFORM_ERROR"
    assert failed.step == "big_orders"
    assert "big_orders" in failed.message
    assert "nope > 100" in failed.message
    assert 'Referenced column "nope" not found' in failed.message
    assert not failed.retryable
    assert files_under(orders_root) == {"orders.csv"}


async def test_transform_error_after_batches_were_sent_commits_nothing(
    data_root: Path, executor: executor_service_pb2_grpc.ExecutorServiceStub
) -> None:
    # Several ~1 MiB batches of codes that cast to integers, then one that does not:
    # the sink has received data when the filter fails on the last batch.
    rows = 400_000
    codes = pa.array([f"c{i}" for i in range(rows - 1)] + ["cX"])
    pa_csv.write_csv(pa.table({"id": pa.array(range(rows)), "code": codes}), data_root / "c.csv")

    events = await run_stage(
        executor,
        stage_request(source_path="c.csv", predicate="CAST(substr(code, 2) AS INTEGER) % 2 = 0"),
    )

    assert_well_formed(events, "failed")
    failed = events[-1].failed
    assert (failed.reason, failed.step) == ("TRANSFORM_ERROR", "big_orders")
    assert "Conversion Error" in failed.message
    assert 0 < failed.metrics.rows_written < rows
    await asyncio.sleep(0.2)  # the connector learns of the cancelled write asynchronously
    assert files_under(data_root) == {"c.csv"}


@pytest.mark.parametrize(
    ("kwargs", "step"),
    [
        ({"sink_path": "../escaped.parquet"}, "out"),
        ({"source_path": "../../etc/passwd"}, "orders"),
    ],
)
async def test_path_outside_root_fails_with_the_connectors_reason(
    orders_root: Path,
    executor: executor_service_pb2_grpc.ExecutorServiceStub,
    kwargs: dict[str, str],
    step: str,
) -> None:
    events = await run_stage(executor, stage_request(**kwargs))

    assert_well_formed(events, "failed")
    failed = events[-1].failed
    assert (failed.reason, failed.step, failed.retryable) == ("PATH_OUTSIDE_ROOT", step, False)
    assert files_under(orders_root) == {"orders.csv"}
    assert not (orders_root.parent / "escaped.parquet").exists()


async def test_sink_refusal_keeps_the_connectors_reason_every_time(
    orders_root: Path, executor: executor_service_pb2_grpc.ExecutorServiceStub
) -> None:
    # The connector refuses the header while frames are in flight; grpc.aio may
    # then report a synthetic INTERNAL (grpc/grpc#36066) that must not leak.
    reasons = set()
    for _ in range(30):
        events = await run_stage(executor, stage_request(sink_path="../escaped.parquet"))
        reasons.add((events[-1].failed.reason, events[-1].failed.step))
    assert reasons == {("PATH_OUTSIDE_ROOT", "out")}


async def test_malformed_stage_is_an_invalid_argument_status(
    orders_root: Path, executor: executor_service_pb2_grpc.ExecutorServiceStub
) -> None:
    request = stage_request()
    del request.steps[-1]  # no sink

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_stage(executor, request)

    details = details_of(info.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "INVALID_STAGE"
    assert [v.field for v in details.violations] == ["steps[1]"]
    assert files_under(orders_root) == {"orders.csv"}


async def test_unreachable_connector_is_a_retryable_failure(orders_root: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await build_server(ExecutorConfig(connector_address=f"127.0.0.1:{port}"))
    await server.start()
    try:
        async with insecure_channel(server.address) as channel:
            stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
            events = await run_stage(stub, stage_request())
    finally:
        await server.stop(grace=1)

    assert_well_formed(events, "failed")
    failed = events[-1].failed
    assert (failed.reason, failed.step, failed.retryable) == (
        "CONNECTOR_UNAVAILABLE",
        "orders",
        True,
    )


async def test_connector_calls_have_the_stage_deadline(
    data_root: Path, connector_address: str
) -> None:
    ids = pa.array(range(3_000_000), pa.int64())  # streams for ~0.6 s
    pa_csv.write_csv(pa.table({"id": ids, "amount": ids}), data_root / "slow.csv")
    config = ExecutorConfig(connector_address=connector_address, stage_timeout_seconds=0.15)
    server = await build_server(config)
    await server.start()
    try:
        async with insecure_channel(server.address) as channel:
            stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
            events = await run_stage(stub, stage_request(source_path="slow.csv"))
    finally:
        await server.stop(grace=1)

    assert_well_formed(events, "failed")
    failed = events[-1].failed
    assert (failed.reason, failed.retryable) == ("CONNECTOR_DEADLINE_EXCEEDED", True)
    assert failed.step in {"orders", "out"}
    await asyncio.sleep(0.2)
    assert files_under(data_root) == {"slow.csv"}


@pytest.fixture
def big_csv(data_root: Path) -> Path:
    """A few million rows, so that a stage over it runs for well over a second."""
    rows = 4_000_000
    ids = pa.array(range(rows), pa.int64())
    table = pa.table(
        {
            "order_id": ids,
            "amount": pc.divide(pc.cast(pc.multiply(ids, 7919), pa.float64()), 1000.0),
            "country": pc.choose(
                pc.cast(pc.bit_wise_and(ids, 3), pa.int8()), "FR", "DE", "ES", "JP"
            ),
        }
    )
    path = data_root / "big.csv"
    pa_csv.write_csv(table, path)
    return path


async def test_cancelling_the_call_stops_the_stage_and_commits_nothing(
    data_root: Path, big_csv: Path, executor: executor_service_pb2_grpc.ExecutorServiceStub
) -> None:
    call = executor.ExecuteTask(
        stage_request(source_path="big.csv", predicate="amount > 100"), timeout=60
    )
    seen: list[str] = []
    async for event in call:
        seen.append(str(event.WhichOneof("event")))
        if seen[-1] == "progress":
            break
    assert seen[0] == "started"
    assert seen[-1] == "progress", f"the stage ended before any progress: {seen}"
    assert call.cancel()

    assert await call.code() == grpc.StatusCode.CANCELLED
    # The executor cancels its connector calls; the connector drops its temp file.
    deadline = asyncio.get_running_loop().time() + 3
    while files_under(data_root) != {"big.csv"}:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert files_under(data_root) == {"big.csv"}

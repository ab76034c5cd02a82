"""The executor service against a real connector service, over real channels.

Inputs are written into the connector's ``data_root``; outputs are read back with
pyarrow and compared with what pyarrow computes by itself.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from google.protobuf import json_format
from rest_server import RestApi, RestServer

from datadog_platform.api.common.v1 import step_pb2, task_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2 as pb
from datadog_platform.api.executor.v1 import executor_service_pb2_grpc
from datadog_platform.connector.app import build_server as build_connector
from datadog_platform.connector.app import parse_config
from datadog_platform.core.arrow_frames import TARGET_BATCH_BYTES
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.status import details_of
from datadog_platform.core.tasks import (
    LogLevel,
    StageTask,
    TaskLog,
    TaskStarted,
    TaskSucceeded,
)
from datadog_platform.executor.app import ExecutorConfig, build_server
from datadog_platform.scheduler.domain import (
    EXECUTOR_BUSY,
    EXECUTOR_UNAVAILABLE,
    STAGE_TIMEOUT,
    DispatchError,
)
from datadog_platform.scheduler.executor_client import ExecutorDispatcher
from datadog_platform.scheduler.retry import RETRYABLE_DISPATCH_REASONS

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


async def run_stage(
    stub: executor_service_pb2_grpc.ExecutorServiceStub, request: pb.ExecuteTaskRequest
) -> list[pb.ExecuteTaskResponse]:
    return [event async for event in stub.ExecuteTask(request, timeout=60)]


def kinds(events: list[pb.ExecuteTaskResponse]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


async def files_settle(root: Path, expected: set[str], within: float = 3.0) -> set[str]:
    """The files under ``root`` once they equal ``expected``, or after ``within`` seconds.

    The connector learns of a cancelled write asynchronously, then drops its temp file.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = files_under(root)
        if found == expected or loop.time() > deadline:
            return found
        await asyncio.sleep(0.02)


def assert_well_formed(events: list[pb.ExecuteTaskResponse], last: str) -> None:
    names = kinds(events)
    assert names[0] == "started"
    assert names[-1] == last
    assert set(names[1:-1]) <= {"progress", "log"}


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
    # Several batches of codes that cast to integers, then one that does not: the
    # sink has received data when the filter fails on the last batch.
    rows = 400_000 * TARGET_BATCH_BYTES // (1 << 20)
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
    assert await files_settle(data_root, {"c.csv"}) == {"c.csv"}


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
    assert await files_settle(data_root, {"slow.csv"}) == {"slow.csv"}


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
    assert await files_settle(data_root, {"big.csv"}) == {"big.csv"}


# --- built-ins, log lines, watermarks ----------------------------------------------------


def inline_step(name: str, rows: list[dict[str, object]]) -> step_pb2.Step:
    spec = json_format.ParseDict({"rows": rows}, step_pb2.InlineSource())
    return step_pb2.Step(name=name, source=step_pb2.SourceSpec(inline=spec))


def discard_step(name: str, after: str) -> step_pb2.Step:
    return step_pb2.Step(
        name=name, inputs=[after], sink=step_pb2.SinkSpec(discard=step_pb2.DiscardSink())
    )


def no_op_request(stage_id: str = "noop") -> pb.ExecuteTaskRequest:
    return pb.ExecuteTaskRequest(
        run_id="run-1",
        stage_id=stage_id,
        attempt=1,
        steps=[inline_step("one", [{"x": 1}]), discard_step(stage_id, "one")],
    )


def log_lines(events: list[pb.ExecuteTaskResponse]) -> list[tuple[int, str, str]]:
    return [(x.level, x.step, x.message) for e in events if e.HasField("log") for x in e.log.lines]


async def test_no_op_stage_is_started_one_log_batch_and_succeeded(
    executor: executor_service_pb2_grpc.ExecutorServiceStub,
) -> None:
    events = await run_stage(executor, no_op_request())

    assert kinds(events) == ["started", "log", "succeeded"]
    done = events[-1].succeeded
    assert [(o.step, o.location, o.rows_written) for o in done.outputs] == [
        ("noop", "discard://", 1)
    ]
    assert (done.metrics.rows_read, done.metrics.rows_written) == (1, 1)
    assert log_lines(events) == [
        (
            task_pb2.LOG_LEVEL_INFO,
            "",
            f"stage 'noop' attempt 1 started on {events[0].started.executor_id}: "
            "one (inline source) → noop (discard sink)",
        ),
        (task_pb2.LOG_LEVEL_INFO, "one", "read 1 row"),
        (task_pb2.LOG_LEVEL_INFO, "noop", "committed 1 row to discard://"),
    ]
    sent = events[1].log.lines[0].time.ToDatetime(tzinfo=UTC)
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 5


async def test_inline_rows_into_a_parquet_file_through_the_connector(
    data_root: Path, executor: executor_service_pb2_grpc.ExecutorServiceStub
) -> None:
    rows = [
        {"id": 1, "city": "Zürich", "price": 2.5, "ok": True, "meta": {"k": [1, "é"]}},
        {"id": 2, "city": "São Paulo", "price": 3},
    ]
    sink = stage_request().steps[-1]
    sink.inputs[:] = ["seed"]
    request = pb.ExecuteTaskRequest(
        run_id="run-1", stage_id="out", attempt=1, steps=[inline_step("seed", rows), sink]
    )

    events = await run_stage(executor, request)

    assert kinds(events) == ["started", "log", "succeeded"]
    output = data_root / "out" / "big_orders.parquet"
    assert events[-1].succeeded.outputs[0].location == f"file://{output.resolve()}"
    table = pq.read_table(output)
    assert table.schema.names == ["city", "id", "meta", "ok", "price"]
    assert [table.schema.field(n).type for n in table.schema.names] == [
        pa.string(),
        pa.int64(),
        pa.string(),
        pa.bool_(),
        pa.float64(),
    ]
    assert table.to_pylist() == [
        {"city": "Zürich", "id": 1, "meta": '{"k":[1,"é"]}', "ok": True, "price": 2.5},
        {"city": "São Paulo", "id": 2, "meta": None, "ok": None, "price": 3.0},
    ]
    assert (task_pb2.LOG_LEVEL_INFO, "out", f"committed 2 rows to file://{output.resolve()}") in (
        log_lines(events)
    )


async def test_watermarks_of_a_file_stage(
    orders_root: Path, executor: executor_service_pb2_grpc.ExecutorServiceStub
) -> None:
    request = stage_request()
    request.steps[0].watermark.column = "ordered_at"  # a CSV timestamp[s] column
    request.steps[1].watermark.column = "amount"

    events = await run_stage(executor, request)

    assert_well_formed(events, "succeeded")
    orders = pa_csv.read_csv(ORDERS)
    latest = pc.max(orders["ordered_at"]).as_py()
    big = pc.max(orders.filter(pc.greater(orders["amount"], 100))["amount"]).as_py()
    assert dict(events[-1].succeeded.watermarks) == {
        "orders": latest.isoformat(),
        "big_orders": str(big),
    }
    assert "T" in latest.isoformat()
    assert (
        task_pb2.LOG_LEVEL_INFO,
        "orders",
        f"watermark: max(ordered_at) = {latest.isoformat()}",
    ) in log_lines(events)


async def test_missing_watermark_column_fails_naming_step_and_column(
    orders_root: Path, executor: executor_service_pb2_grpc.ExecutorServiceStub
) -> None:
    request = stage_request()
    request.steps[1].watermark.column = "updated_at"

    events = await run_stage(executor, request)

    assert_well_formed(events, "failed")
    failed = events[-1].failed
    assert (failed.reason, failed.step, failed.retryable) == (
        "INVALID_WATERMARK",
        "big_orders",
        False,
    )
    assert "step 'big_orders': watermark column 'updated_at'" in failed.message
    assert (task_pb2.LOG_LEVEL_ERROR, "big_orders", failed.message) in log_lines(events)
    assert files_under(orders_root) == {"orders.csv"}


# --- slots and the scheduler's executor client ------------------------------------------


@pytest.fixture
async def rest_api() -> AsyncIterator[RestApi]:
    async with RestServer() as api:
        yield api


@pytest.fixture
async def one_slot_executor(data_root: Path, rest_api: RestApi) -> AsyncIterator[str]:
    """An executor with one slot, whose connector also reaches the test REST API as "api"."""
    connections = {
        "local": {"type": "file", "root": str(data_root)},
        "api": {"type": "rest", "base_url": rest_api.url},
    }
    connector = await build_connector(parse_config({"connections": connections}, data_root))
    await connector.start()
    executor = await build_server(ExecutorConfig(connector_address=connector.address, slots=1))
    await executor.start()
    yield executor.address
    await executor.stop(grace=1)
    await connector.stop(grace=1)


def slow_request() -> pb.ExecuteTaskRequest:
    """A stage whose source answers after 2 s (the REST API's /slow route)."""
    source = step_pb2.Step(
        name="slow",
        source=step_pb2.SourceSpec(rest=step_pb2.RestSource(connection="api", path="/slow")),
    )
    return pb.ExecuteTaskRequest(
        run_id="run-1", stage_id="out", attempt=1, steps=[source, discard_step("out", "slow")]
    )


async def drain(events: AsyncIterator[object], into: list[object]) -> None:
    async for event in events:
        into.append(event)


async def until_free(stub: executor_service_pb2_grpc.ExecutorServiceStub) -> float:
    """Seconds until a no-op stage is accepted again (the slot was freed)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        try:
            events = await run_stage(stub, no_op_request())
        except grpc.aio.AioRpcError as exc:
            reason = details_of(exc).reason
        else:
            assert kinds(events)[-1] == "succeeded"
            return loop.time() - started
        assert reason == "EXECUTOR_BUSY"
        assert loop.time() - started < 3, "the slot was not freed"
        await asyncio.sleep(0.01)


async def test_a_full_executor_answers_resource_exhausted_before_any_event(
    one_slot_executor: str, rest_api: RestApi
) -> None:
    async with insecure_channel(one_slot_executor) as channel:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
        holder = stub.ExecuteTask(slow_request(), timeout=60)
        assert (await holder.read()).WhichOneof("event") == "started"
        # The stage has reached the REST API (on a loaded machine this takes a while).
        for _ in range(500):
            if rest_api.hits["/slow"]:
                break
            await asyncio.sleep(0.01)

        second = stub.ExecuteTask(no_op_request(), timeout=60)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await second.read()
        details = details_of(info.value)
        assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.reason == "EXECUTOR_BUSY"
        assert details.metadata["slots"] == "1"
        assert await second.initial_metadata() is not None

        holder.cancel()
        assert await until_free(stub) < 1.0
    assert rest_api.hits["/slow"] == 1


async def test_dispatcher_maps_logs_watermarks_and_the_outcome(executor_address: str) -> None:
    dispatcher = ExecutorDispatcher(executor_address)
    steps = no_op_request().steps
    steps[0].watermark.column = "x"
    try:
        events = [e async for e in dispatcher.execute(StageTask("run-1", "noop", 3, steps))]
    finally:
        await dispatcher.close()

    assert [type(e) for e in events] == [TaskStarted, TaskLog, TaskSucceeded]
    log_event, done = events[1], events[2]
    assert isinstance(log_event, TaskLog)
    assert isinstance(done, TaskSucceeded)
    assert [(x.level, x.step) for x in log_event.lines] == [
        (LogLevel.INFO, ""),
        (LogLevel.INFO, "one"),
        (LogLevel.INFO, "noop"),
        (LogLevel.INFO, "one"),
    ]
    assert log_event.lines[0].message.startswith("stage 'noop' attempt 3 started on ")
    assert log_event.lines[-1].message == "watermark: max(x) = 1"
    assert all(x.time.tzinfo is not None for x in log_event.lines)
    assert abs((datetime.now(UTC) - log_event.lines[0].time).total_seconds()) < 5
    assert done.watermarks == {"one": "1"}
    assert done.outputs[0].location == "discard://"


async def test_dispatcher_reports_a_busy_executor_before_any_event(one_slot_executor: str) -> None:
    dispatcher = ExecutorDispatcher(one_slot_executor)
    slow = slow_request()
    holder = dispatcher.execute(StageTask("run-1", "out", 1, slow.steps))
    try:
        assert isinstance(await anext(holder), TaskStarted)
        seen: list[object] = []
        with pytest.raises(DispatchError) as info:
            await drain(dispatcher.execute(StageTask("run-1", "x", 1, no_op_request().steps)), seen)
        assert seen == []
        assert info.value.reason == EXECUTOR_BUSY
        assert one_slot_executor in info.value.message
    finally:
        await holder.aclose()
        await dispatcher.close()


async def test_task_timeout_is_the_deadline_and_maps_to_stage_timeout(
    one_slot_executor: str,
) -> None:
    dispatcher = ExecutorDispatcher(one_slot_executor)
    task = StageTask("run-1", "out", 1, slow_request().steps, timeout=0.3)
    seen: list[object] = []
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(DispatchError) as info:
            await drain(dispatcher.execute(task), seen)
    finally:
        await dispatcher.close()

    elapsed = asyncio.get_running_loop().time() - started
    assert 0.3 <= elapsed < 1.5
    assert info.value.reason == STAGE_TIMEOUT
    assert "0.3 seconds" in info.value.message
    assert isinstance(seen[0], TaskStarted)
    assert STAGE_TIMEOUT in RETRYABLE_DISPATCH_REASONS
    # The executor stopped the attempt when its deadline passed: the slot is free.
    async with insecure_channel(one_slot_executor) as channel:
        assert await until_free(executor_service_pb2_grpc.ExecutorServiceStub(channel)) < 1.0


async def test_dispatcher_errors_for_a_bad_stage_and_an_unreachable_executor(
    executor_address: str,
) -> None:
    dispatcher = ExecutorDispatcher(executor_address)
    try:
        with pytest.raises(DispatchError) as info:
            [e async for e in dispatcher.execute(StageTask("run-1", "x", 1, []))]
        assert info.value.reason == "INVALID_STAGE"
    finally:
        await dispatcher.close()

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dispatcher = ExecutorDispatcher(f"127.0.0.1:{port}")
    try:
        with pytest.raises(DispatchError) as info:
            [e async for e in dispatcher.execute(StageTask("run-1", "x", 1, no_op_request().steps))]
        assert info.value.reason == EXECUTOR_UNAVAILABLE
    finally:
        await dispatcher.close()

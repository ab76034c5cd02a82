"""File and artifact connections on an S3-compatible store (a local moto server), over gRPC.

The connector service is built from a config (``parse_config`` + ``build_server``)
whose ``lake`` connection is rooted at ``s3://<bucket>/x`` with an ``endpoint_url``,
and whose artifact store lives in the same bucket; every call goes through the
real ConnectorService RPCs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import grpc
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from arrow_streams import table_of
from moto.server import ThreadedMotoServer

from datadog_platform.api.common.v1 import predicate_pb2, step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.connector.app import build_server, parse_config
from datadog_platform.core.arrow_frames import (
    StreamCounter,
    decode_schema,
    encode_batch,
    encode_schema,
)
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.status import details_of

TIMEOUT = 20
ACCESS_KEY = "AKIAMOTOTESTKEY"
SECRET_KEY = "moto-secret-key-never-shown"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    name = f"lake-{uuid.uuid4().hex[:12]}"
    client = _client(moto_url)
    client.create_bucket(Bucket=name)
    yield name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


def _client(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )


def _keys(url: str, bucket: str, prefix: str = "") -> list[str]:
    client = _client(url)
    found = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(item["Key"] for item in found)


def _s3_options(url: str, root: str) -> dict[str, str]:
    return {
        "root": root,
        "endpoint_url": url,
        "region": "us-east-1",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
    }


@pytest.fixture
async def stub(
    moto_url: str, bucket: str, tmp_path: Path
) -> AsyncIterator[pb_grpc.ConnectorServiceStub]:
    document = {
        "connections": {
            "lake": {"type": "file", **_s3_options(moto_url, f"s3://{bucket}/x")},
            "nobucket": {"type": "file", **_s3_options(moto_url, f"s3://{bucket}-gone/x")},
            "artifacts": {"type": "artifact", **_s3_options(moto_url, f"s3://{bucket}/art")},
        }
    }
    server = await build_server(parse_config(document, tmp_path))
    await server.start()
    try:
        async with insecure_channel(server.address) as channel:
            yield pb_grpc.ConnectorServiceStub(channel)
    finally:
        await server.stop(grace=1)


def _table(n: int, offset: int = 0) -> pa.Table:
    ids = list(range(offset, offset + n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array([None if i % 7 == 3 else f"Zoë-{i}" for i in ids]),
            "country": pa.array(["FR", "DE", "JP"][i % 3] for i in ids),
            "amount": pa.array([i * 0.25 for i in ids]),
        }
    )


def _frames(
    sink: step_pb2.SinkSpec, table: pa.Table, key: str, complete: bool = True
) -> list[pb.WriteRequest]:
    counter = StreamCounter()
    frames = [
        pb.WriteRequest(header=pb.WriteHeader(sink=sink, idempotency_key=key)),
        pb.WriteRequest(schema=encode_schema(table.schema)),
    ]
    for batch in table.to_batches(max_chunksize=2_000):
        frames.append(pb.WriteRequest(record_batch=encode_batch(batch, counter)))
    if complete:
        frames.append(pb.WriteRequest(complete=counter.complete()))
    return frames


async def _write(
    stub: pb_grpc.ConnectorServiceStub,
    table: pa.Table,
    key: str = "run/stage/out",
    **file_sink: Any,
) -> pb.WriteResponse:
    sink = step_pb2.SinkSpec(file=step_pb2.FileSink(connection="lake", **file_sink))
    return await stub.Write(iter(_frames(sink, table, key)), timeout=TIMEOUT)


def _source(path: str, connection: str = "lake") -> step_pb2.SourceSpec:
    return step_pb2.SourceSpec(file=step_pb2.FileSource(connection=connection, path=path))


async def _read(
    stub: pb_grpc.ConnectorServiceStub,
    source: step_pb2.SourceSpec,
    ticket: bytes = b"",
    columns: tuple[str, ...] = (),
    predicate: predicate_pb2.Predicate | None = None,
) -> pa.Table:
    request = pb.ReadRequest(source=source, ticket=ticket, columns=columns, predicate=predicate)
    frames = [frame async for frame in stub.Read(request, timeout=TIMEOUT)]
    return table_of(frames)


async def test_parquet_round_trip_with_splits_and_pushdown(
    stub: pb_grpc.ConnectorServiceStub, moto_url: str, bucket: str
) -> None:
    table = _table(30_000)
    reply = await _write(stub, table, path="orders/orders.parquet")
    assert (reply.rows_written, reply.replayed) == (30_000, False)
    assert reply.location == f"s3://{bucket}/x/orders/orders.parquet"
    assert _keys(moto_url, bucket) == ["x/orders/orders.parquet"]  # no temporary object
    source = _source("orders/orders.parquet")
    assert (await _read(stub, source)).equals(table)

    description = await stub.DescribeSource(pb.DescribeSourceRequest(source=source), timeout=20)
    assert (decode_schema(description.schema), description.estimated_rows) == (
        table.schema,
        30_000,
    )

    # A file of several row groups (put directly: the connector writes big row groups)
    # splits into tickets that cover it exactly once.
    client = _client(moto_url)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=5_000)
    client.put_object(Bucket=bucket, Key="x/groups.parquet", Body=sink.getvalue().to_pybytes())
    plan = await stub.PlanRead(
        pb.PlanReadRequest(source=_source("groups.parquet"), max_splits=3), timeout=TIMEOUT
    )
    assert [t.estimated_rows for t in plan.tickets] == [10_000, 10_000, 10_000]
    parts = [await _read(stub, _source("groups.parquet"), t.ticket) for t in plan.tickets]
    assert pa.concat_tables(parts).equals(table)

    # Predicate pushdown keeps only the row group that can match.
    predicate = predicate_pb2.Predicate(
        all_of=[
            predicate_pb2.Comparison(
                column="id",
                operator=predicate_pb2.COMPARISON_OPERATOR_GE,
                values=[predicate_pb2.Literal(int_value=25_000)],
            )
        ]
    )
    plan = await stub.PlanRead(
        pb.PlanReadRequest(source=_source("groups.parquet"), predicate=predicate, columns=["id"]),
        timeout=TIMEOUT,
    )
    assert [t.estimated_rows for t in plan.tickets] == [5_000]
    got = await _read(stub, _source("groups.parquet"), plan.tickets[0].ticket, ("id",), predicate)
    assert got.column("id").to_pylist() == list(range(25_000, 30_000))


async def test_csv_round_trip_compressed_and_plain(
    stub: pb_grpc.ConnectorServiceStub, moto_url: str, bucket: str
) -> None:
    table = _table(5_000)
    for path in ("out/o.csv", "out/o.csv.gz"):
        reply = await _write(stub, table, path=path)
        assert reply.rows_written == 5_000
        assert (await _read(stub, _source(path))).equals(table)
    client = _client(moto_url)
    body = client.get_object(Bucket=bucket, Key="x/out/o.csv")["Body"].read()
    assert pa_csv.read_csv(pa.BufferReader(body)).num_rows == 5_000
    # Both files read as one source through a glob.
    assert (await _read(stub, _source("out/*.csv*"))).num_rows == 10_000


async def test_overwrite_replaces_and_a_broken_stream_changes_nothing(
    stub: pb_grpc.ConnectorServiceStub, moto_url: str, bucket: str
) -> None:
    await _write(stub, _table(10), path="t.parquet")
    sink = step_pb2.SinkSpec(file=step_pb2.FileSink(connection="lake", path="t.parquet"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Write(iter(_frames(sink, _table(50), "k2", complete=False)), timeout=TIMEOUT)
    assert details_of(info.value).reason == "ARROW_STREAM_INCOMPLETE"
    assert (await _read(stub, _source("t.parquet"))).equals(_table(10))
    again = await _write(stub, _table(20, offset=100), path="t.parquet", key="k3")
    assert again.rows_written == 20
    assert (await _read(stub, _source("t.parquet"))).equals(_table(20, offset=100))
    assert _keys(moto_url, bucket) == ["x/t.parquet"]


async def test_partitioned_write_append_and_replay(
    stub: pb_grpc.ConnectorServiceStub, moto_url: str, bucket: str
) -> None:
    parquet = step_pb2.FILE_FORMAT_PARQUET
    sink: dict[str, Any] = {"path": "sales", "format": parquet, "partition_by": ["country"]}
    await _write(stub, _table(30), key="old", **sink)
    await _write(stub, _table(9, offset=1000), key="r1", **sink)  # overwrite: old files go
    appended = await _write(
        stub, _table(6, offset=2000), key="r2", mode=step_pb2.WRITE_MODE_APPEND, **sink
    )
    assert (appended.rows_written, appended.replayed) == (6, False)
    keys = _keys(moto_url, bucket)
    replay = await _write(
        stub, _table(6, offset=2000), key="r2", mode=step_pb2.WRITE_MODE_APPEND, **sink
    )
    assert (replay.rows_written, replay.replayed) == (6, True)
    assert _keys(moto_url, bucket) == keys
    assert {k.split("/")[2] for k in keys if "/country=" in k} == {
        "country=DE",
        "country=FR",
        "country=JP",
    }
    back = await _read(stub, _source("sales"))
    assert sorted(back.column("id").to_pylist()) == [*range(1000, 1009), *range(2000, 2006)]
    assert set(back.column("country").to_pylist()) == {"FR", "DE", "JP"}


async def test_errors_name_paths_and_never_credentials(
    stub: pb_grpc.ConnectorServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _read(stub, _source("missing.parquet"))
    details = details_of(info.value)
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "SOURCE_NOT_FOUND")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _read(stub, _source("../../other-bucket/secret.parquet"))
    details = details_of(info.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PATH_OUTSIDE_ROOT",
    )

    listing = await stub.ListConnections(pb.ListConnectionsRequest(), timeout=TIMEOUT)
    assert SECRET_KEY not in str(listing)
    assert ACCESS_KEY not in str(listing)

    ok = await stub.TestConnection(pb.TestConnectionRequest(name="lake"), timeout=TIMEOUT)
    assert ok.ok, ok.message
    missing = await stub.TestConnection(pb.TestConnectionRequest(name="nobucket"), timeout=TIMEOUT)
    assert (missing.ok, missing.reason) == (False, "BUCKET_NOT_FOUND")
    assert SECRET_KEY not in missing.message


async def test_artifacts_on_s3(
    stub: pb_grpc.ConnectorServiceStub, moto_url: str, bucket: str
) -> None:
    table = _table(12_345)
    key = "runs/r1/stage-2/joined"
    sink = step_pb2.SinkSpec(artifact=step_pb2.ArtifactSink(key=key))
    reply = await stub.Write(iter(_frames(sink, table, "r1/stage-2/joined")), timeout=TIMEOUT)
    assert reply.location == f"s3://{bucket}/art/{key}.arrow"
    assert _keys(moto_url, bucket, "art/") == [f"art/{key}.arrow"]
    source = step_pb2.SourceSpec(artifact=step_pb2.ArtifactSource(key=key))
    assert (await _read(stub, source)).equals(table)
    description = await stub.DescribeSource(pb.DescribeSourceRequest(source=source), timeout=20)
    assert description.estimated_rows == 12_345

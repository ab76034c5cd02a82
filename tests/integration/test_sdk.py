"""The Python SDK (``datadog_platform.client``) against the real scheduler, executor and
connector started in-process, plus a recording test double of the scheduler for what
only the server side can observe: metadata, deadlines and TLS.

The blocking ``Client`` runs in a worker thread: the fixtures' servers run on the test's
event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest

from datadog_platform.api.scheduler.v1 import run_pb2, scheduler_service_pb2_grpc
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.cli.spec import load_pipeline
from datadog_platform.client import ApiError, AsyncClient, Client, Pipeline

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "csv_to_parquet.yaml"


def example_builder(name: str = "csv_to_parquet") -> Pipeline:
    """examples/csv_to_parquet.yaml, written with the builder."""
    return (
        Pipeline(
            name,
            description="Orders over 100 from the example CSV, written as Parquet.",
            tags=["example"],
            labels={"team": "data-platform"},
        )
        .add_source(
            "orders",
            file={
                "connection": "local",
                "path": "examples/data/orders.csv",
                "format": "FILE_FORMAT_CSV",
            },
        )
        .add_transformation("big_orders", filter={"predicate": "amount > 100"})
        .add_sink(
            "out",
            file={
                "connection": "local",
                "path": "out/big_orders.parquet",
                "format": "FILE_FORMAT_PARQUET",
                "mode": "WRITE_MODE_OVERWRITE",
            },
        )
    )


def inline_builder(name: str) -> Pipeline:
    """The smallest real pipeline: inline rows into a discard sink."""
    return (
        Pipeline(name, params={"limit": 2})
        .add_source("rows", inline={"rows": [{"id": 1}, {"id": 2}, {"id": 3}]})
        .add_transformation("keep", filter={"predicate": "id > 1"})
        .add_sink("drop", discard={})
    )


@pytest.fixture
def example_data(data_root: Path) -> Path:
    target = data_root / "examples" / "data"
    target.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "data" / "orders.csv", target / "orders.csv")
    return target / "orders.csv"


# -- the builder ---------------------------------------------------------------------


def test_builder_produces_exactly_the_yaml_example() -> None:
    assert example_builder().to_proto() == load_pipeline(EXAMPLE)


def test_builder_takes_messages_schedules_params_and_explicit_inputs() -> None:
    from datadog_platform.api.common.v1 import step_pb2

    pipeline = (
        Pipeline("p", schedule="@daily", params={"day": "2026-01-01", "n": 3}, run_timeout=90)
        .add_source("a", inline={"rows": [{"x": 1}]})
        .add_source("b", inline=step_pb2.InlineSource())
        .add_transformation("u", union={}, inputs=["a", "b"], timeout="30s")
        .add_sink("d", discard={})
        .to_proto()
    )
    assert pipeline.schedule.cron == "@daily"
    assert pipeline.params["n"].number_value == 3
    assert pipeline.run_timeout.seconds == 90
    assert list(pipeline.steps[1].inputs) == []  # a source consumes nothing
    assert list(pipeline.steps[2].inputs) == ["a", "b"]
    assert pipeline.steps[2].timeout.seconds == 30
    assert pipeline.steps[2].transform.WhichOneof("kind") == "union"
    assert list(pipeline.steps[3].inputs) == ["u"]  # the previous step by default
    assert pipeline.steps[3].sink.WhichOneof("kind") == "discard"


def test_builder_refuses_bad_kinds_and_duplicate_steps() -> None:
    with pytest.raises(TypeError, match="give exactly one of file, database"):
        Pipeline("p").add_source("a", file={"path": "x"}, inline={})
    with pytest.raises(TypeError, match=r"got filtr"):
        Pipeline("p").add_transformation("a", filtr={"predicate": "x"})
    with pytest.raises(ValueError, match="no field named"):
        Pipeline("p").add_sink("a", file={"pth": "x"})
    with pytest.raises(ValueError, match="already has a step named 'a'"):
        Pipeline("p").add_source("a", inline={}).add_sink("a", discard={})


# -- the blocking client against the real services ---------------------------------


async def test_sync_client_creates_runs_and_reads_the_example(
    scheduler_address: str, data_root: Path, example_data: Path
) -> None:
    def scenario() -> None:
        with Client(scheduler_address, timeout=10) as client:
            pipeline = example_builder()
            created = pipeline.create(client)
            assert (created.pipeline.name, created.pipeline.version) == ("csv_to_parquet", 1)
            assert [stage.stage_id for stage in created.plan] == ["out"]

            run = pipeline.run(client, wait=True, timeout=60)
            assert run.state == run_pb2.RUN_STATE_SUCCEEDED, run
            assert run.stages[0].metrics.rows_written == 35

            assert [r.run_id for r in pipeline.status(client)] == [run.run_id]
            assert client.get_run(run.run_id) == run
            assert [p.name for p in client.list_pipelines()] == ["csv_to_parquet"]
            assert "local" in [c.name for c in client.list_connections()]
            logs = list(client.list_stage_logs(run.run_id, "out"))
            page = client.stage_logs_page(run.run_id, "out")
            assert page.attempt == 1
            assert len(logs) == len(page.lines) > 0

            updated = pipeline.update(client)
            assert updated.pipeline.version == 2
            assert client.pause_pipeline("csv_to_parquet").paused
            assert not client.unpause_pipeline("csv_to_parquet").paused
            assert pipeline.validate(client).valid

    await asyncio.to_thread(scenario)
    assert pq.read_table(data_root / "out" / "big_orders.parquet").num_rows == 35


async def test_builder_without_a_client_uses_datadog_server(
    scheduler_address: str, data_root: Path, example_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seed's shape: Pipeline(...).create(), .run(wait=True), .status() with no client.
    monkeypatch.setenv("DATADOG_SERVER", scheduler_address)

    def scenario() -> None:
        pipeline = example_builder()
        assert pipeline.create().pipeline.version == 1
        run = pipeline.run(wait=True, timeout=60)
        assert run.state == run_pb2.RUN_STATE_SUCCEEDED, run
        assert [r.run_id for r in pipeline.status()] == [run.run_id]

    await asyncio.to_thread(scenario)


async def test_sync_client_raises_api_errors_with_reason_and_violations(
    scheduler_address: str,
) -> None:
    def scenario() -> None:
        with Client(scheduler_address) as client:
            with pytest.raises(ApiError) as not_found:
                client.get_pipeline("nope")
            assert not_found.value.code == grpc.StatusCode.NOT_FOUND
            assert not_found.value.reason == "PIPELINE_NOT_FOUND"
            assert "nope" in not_found.value.message

            bad = (
                Pipeline("bad")
                .add_source("a", inline={"rows": [{"x": 1}]})
                .add_transformation("f", filter={"predicate": "x > 0"}, inputs=["ghost"])
                .add_sink("d", discard={})
            )
            with pytest.raises(ApiError) as invalid:
                bad.create(client)
            error = invalid.value
            assert (error.code, error.reason) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID_PIPELINE_SPEC",
            )
            assert "pipeline.steps[1].inputs[0]" in {v.field for v in error.violations}
            assert "pipeline.steps[1].inputs[0]" in str(error)

    await asyncio.to_thread(scenario)


async def test_unreachable_server_is_unavailable_without_a_reason() -> None:
    import socket

    with socket.socket() as sock:  # bound, never listening: nothing answers there
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"

        def scenario() -> ApiError:
            with Client(address, timeout=2) as client, pytest.raises(ApiError) as caught:
                client.get_run("x")
            return caught.value

        error = await asyncio.to_thread(scenario)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == ""


async def test_list_iterators_walk_every_page(scheduler_address: str) -> None:
    names = [f"p{i}" for i in range(5)]
    async with AsyncClient(scheduler_address) as client:
        for name in names:
            await client.create_pipeline(inline_builder(name))
        # The server does page at 2, so iterating over everything takes three calls.
        first = await client.stub.ListPipelines(pb.ListPipelinesRequest(page_size=2))
        assert len(first.pipelines) == 2
        assert first.next_page_token

        listed = [p.name async for p in client.list_pipelines(page_size=2)]
        assert listed == names
        limited = [p.name async for p in client.list_pipelines(page_size=2, limit=3)]
        assert limited == names[:3]

    def sync_listing() -> list[str]:
        with Client(scheduler_address) as client:
            return [p.name for p in client.list_pipelines(page_size=2)]

    assert await asyncio.to_thread(sync_listing) == names


# -- the asyncio client against the real services ------------------------------------


async def test_async_client_runs_a_pipeline_and_lists_its_runs(scheduler_address: str) -> None:
    async with AsyncClient(scheduler_address, timeout=10) as client:
        pipeline = inline_builder("inline")
        created = await pipeline.create(client)
        assert created.pipeline.version == 1

        final = await pipeline.run(client, wait=True, params={"limit": 5}, timeout=60)
        assert final.state == run_pb2.RUN_STATE_SUCCEEDED, final
        assert final.params["limit"].number_value == 5

        started = await pipeline.run(client, wait=False)
        assert started.state in (run_pb2.RUN_STATE_QUEUED, run_pb2.RUN_STATE_RUNNING)
        snapshots = [run async for run in client.watch_run(started.run_id, timeout=60)]
        assert snapshots[-1].state == run_pb2.RUN_STATE_SUCCEEDED

        runs = [r.run_id async for r in client.list_runs(pipeline="inline", page_size=1)]
        assert runs == [started.run_id, final.run_id]  # newest first
        succeeded = client.list_runs(states=["SUCCEEDED"], limit=1)
        assert [r.run_id async for r in succeeded] == [started.run_id]
        assert [r.run_id for r in await pipeline.status(client)] == runs

        with pytest.raises(ApiError) as error:
            await client.cancel_run(final.run_id)
        assert (error.value.code, error.value.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "RUN_ALREADY_FINISHED",
        )
        with pytest.raises(ApiError) as error:
            await client.get_run("0" * 32)
        assert error.value.reason == "RUN_NOT_FOUND"

        deleted = await client.delete_pipeline("inline")
        assert (deleted.versions_deleted, deleted.runs_deleted) == (1, 2)


async def test_async_backfill_of_a_scheduled_pipeline(scheduler_address: str) -> None:
    async with AsyncClient(scheduler_address) as client:
        pipeline = Pipeline("daily", schedule={"cron": "@daily", "timezone": "UTC"})
        pipeline.add_source("rows", inline={"rows": [{"id": 1}]}).add_sink("drop", discard={})
        await pipeline.create(client)
        start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        backfill = await client.backfill_pipeline("daily", start, start + dt.timedelta(days=2))
        assert backfill.total_runs == 2
        assert (await client.get_backfill(backfill.backfill_id)).pipeline == "daily"
        assert [b.backfill_id async for b in client.list_backfills(pipeline="daily")] == [
            backfill.backfill_id
        ]
        with pytest.raises(ValueError, match="time zone"):
            await client.backfill_pipeline("daily", start.replace(tzinfo=None), start)


# -- a recording test double: metadata, deadlines, TLS -------------------------------


@dataclass
class Recorder(scheduler_service_pb2_grpc.SchedulerServiceServicer):
    """Answers a few calls and records what arrived with them."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    deadlines: list[float | None] = field(default_factory=list)
    slow_seconds: float = 0.0

    def _record(self, context: grpc.aio.ServicerContext) -> None:
        self.metadata.append({k: v for k, v in context.invocation_metadata() or ()})
        self.deadlines.append(context.time_remaining())

    async def GetRun(
        self, request: pb.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRunResponse:
        self._record(context)
        await asyncio.sleep(self.slow_seconds)
        return pb.GetRunResponse(run=run_pb2.Run(run_id=request.run_id))

    async def WatchRun(
        self, request: pb.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchRunResponse]:
        self._record(context)
        while True:  # a run that never ends
            yield pb.WatchRunResponse(
                run=run_pb2.Run(run_id=request.run_id, state=run_pb2.RUN_STATE_RUNNING)
            )
            await asyncio.sleep(0.05)

    async def ListTransformTypes(
        self, request: pb.ListTransformTypesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTransformTypesResponse:
        self._record(context)
        return pb.ListTransformTypesResponse(
            transform_types=[pb.TransformTypeInfo(name="filter", min_inputs=1, max_inputs=1)]
        )

    async def DescribeSource(
        self, request: pb.DescribeSourceRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeSourceResponse:
        self._record(context)
        path = request.source.file.path
        return pb.DescribeSourceResponse(columns=[pb.SourceColumn(name=path, type="int64")])


async def start_recorder(
    recorder: Recorder, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    scheduler_service_pb2_grpc.add_SchedulerServiceServicer_to_server(recorder, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    double = Recorder()
    server, address = await start_recorder(double)
    yield double, address
    await server.stop(grace=None)


async def test_token_metadata_and_deadline_are_sent(recorder: tuple[Recorder, str]) -> None:
    double, address = recorder
    options = {"token": "s3cret", "metadata": {"x-team": "data"}, "timeout": 7.0}

    def sync_call() -> None:
        with Client(address, **options) as client:  # type: ignore[arg-type]
            assert client.get_run("r1").run_id == "r1"
            assert client.get_run("r2", timeout=2).run_id == "r2"

    await asyncio.to_thread(sync_call)
    async with AsyncClient(address, **options) as client:  # type: ignore[arg-type]
        assert (await client.get_run("r3")).run_id == "r3"
        kinds = await client.list_transform_types()
        assert [k.name for k in kinds] == ["filter"]
        described = await client.describe_source({"file": {"path": "a.csv"}})
        assert described.columns[0].name == "a.csv"

    for headers in double.metadata:
        assert headers["authorization"] == "Bearer s3cret"
        assert headers["x-team"] == "data"
    deadlines = [d for d in double.deadlines if d is not None]
    assert len(deadlines) == len(double.deadlines) == 5
    # The server's clock reading may round up by a few milliseconds.
    assert 5 < deadlines[0] <= 7.1  # the client's default deadline
    assert 1 < deadlines[1] <= 2.1  # the call's own
    assert 5 < deadlines[2] <= 7.1


async def test_no_token_sends_no_authorization(recorder: tuple[Recorder, str]) -> None:
    double, address = recorder
    async with AsyncClient(address) as client:
        await client.get_run("r")
    assert "authorization" not in double.metadata[0]


async def test_a_slow_answer_fails_with_deadline_exceeded(recorder: tuple[Recorder, str]) -> None:
    double, address = recorder
    double.slow_seconds = 5
    async with AsyncClient(address, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(ApiError) as error:
            await client.get_run("slow")
        assert error.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2

        # A run that never ends: waiting for it stops at its own deadline.
        started = time.monotonic()
        with pytest.raises(ApiError) as error:
            await client.wait_for_run("forever", timeout=0.5)
        assert error.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 3

    def sync_wait() -> ApiError:
        with Client(address) as client, pytest.raises(ApiError) as caught:
            client.wait_for_run("forever", timeout=0.5)
        return caught.value

    assert (await asyncio.to_thread(sync_wait)).code == grpc.StatusCode.DEADLINE_EXCEEDED


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def issue(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
        sans: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        issuer_name, issuer_key = issuer or (name(subject), key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("test ca", ca_key, None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server = issue("localhost", server_key, (ca.subject, ca_key), sans)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = issue("sdk client", client_key, (ca.subject, ca_key))
    write("ca", ca, ca_key)
    write("server", server, server_key)
    write("client", client, client_key)
    return {stem: directory / f"{stem}.pem" for stem in ("ca", "server", "client")}


async def test_mutual_tls_with_ca_and_client_certificate(tmp_path: Path) -> None:
    files = make_certificates(tmp_path)
    credentials = grpc.ssl_server_credentials(
        [(tmp_path.joinpath("server.key").read_bytes(), files["server"].read_bytes())],
        root_certificates=files["ca"].read_bytes(),
        require_client_auth=True,
    )
    double = Recorder()
    server, address = await start_recorder(double, credentials)
    try:
        tls = {"ca_file": files["ca"], "timeout": 5.0}
        mutual = {**tls, "cert_file": files["client"], "key_file": tmp_path / "client.key"}
        async with AsyncClient(address, token="t", **mutual) as client:  # type: ignore[arg-type]
            assert (await client.get_run("secure")).run_id == "secure"
        assert double.metadata[0]["authorization"] == "Bearer t"

        def sync_calls() -> ApiError:
            with Client(address, **mutual) as client:  # type: ignore[arg-type]
                assert client.get_run("sync").run_id == "sync"
            # Without a client certificate the server refuses the handshake.
            with Client(address, **tls) as client, pytest.raises(ApiError) as refused:  # type: ignore[arg-type]
                client.get_run("anonymous")
            return refused.value

        assert (await asyncio.to_thread(sync_calls)).code == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(grace=None)


def test_settings_are_checked_before_any_call(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        Client("127.0.0.1:1", cert_file=tmp_path / "c.pem")
    with pytest.raises(FileNotFoundError):
        Client("127.0.0.1:1", ca_file=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="lower case"):
        Client("127.0.0.1:1", metadata={"X-Team": "a"})
    with pytest.raises(ValueError, match="positive"):
        Client("127.0.0.1:1", timeout=0)

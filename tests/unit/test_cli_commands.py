"""The CLI's newer commands and its channel (TLS, token) against a stand-in scheduler.

The stand-in answers the calls with canned messages and records the metadata it got;
the CLI is tested end to end through a real gRPC channel. The real scheduler is used
in tests/integration/test_cli.py.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from datadog_platform.api.common.v1 import arrow_pb2, connection_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2_grpc as pb_grpc
from datadog_platform.cli.commands import connections_of
from datadog_platform.cli.errors import ExitCode
from datadog_platform.cli.main import main
from datadog_platform.cli.spec import pipeline_from_dict

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("amount", pa.float64())])


class StandIn(pb_grpc.SchedulerServiceServicer):
    """Canned answers; ``metadata`` holds each call's invocation metadata."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.tested: list[str] = []
        self.described: list[Any] = []
        self.columns_in_response = True

    def _seen(self, context: grpc.ServicerContext) -> None:
        self.metadata.append(dict(context.invocation_metadata()))

    def TestConnection(
        self, request: pb.TestConnectionRequest, context: grpc.ServicerContext
    ) -> pb.TestConnectionResponse:
        self._seen(context)
        self.tested.append(request.name)
        if request.name == "unknown":
            context.abort(grpc.StatusCode.NOT_FOUND, "no connection 'unknown'")
        if request.name == "broken":
            return pb.TestConnectionResponse(
                ok=False, reason="CONNECTION_FAILED", message="refused", latency_ms=2.5
            )
        return pb.TestConnectionResponse(ok=True, message="connected", latency_ms=1.25)

    def DescribeSource(
        self, request: pb.DescribeSourceRequest, context: grpc.ServicerContext
    ) -> pb.DescribeSourceResponse:
        self._seen(context)
        self.described.append(request.source)
        response = pb.DescribeSourceResponse(
            schema=arrow_pb2.ArrowSchema(ipc_message=SCHEMA.serialize().to_pybytes()),
            estimated_rows=1234,
        )
        if self.columns_in_response:
            response.columns.add(name="id", type="int64", nullable=False)
            response.columns.add(name="amount", type="double", nullable=True)
        return response

    def ListTransformTypes(
        self, request: pb.ListTransformTypesRequest, context: grpc.ServicerContext
    ) -> pb.ListTransformTypesResponse:
        self._seen(context)
        return pb.ListTransformTypesResponse(
            transform_types=[
                pb.TransformTypeInfo(
                    name="join",
                    description="Joins two inputs on keys.",
                    min_inputs=2,
                    max_inputs=2,
                    parameters=[
                        pb.TransformParameterInfo(name="on", type="string[]", required=True),
                        pb.TransformParameterInfo(name="how", type="JoinType"),
                    ],
                ),
                pb.TransformTypeInfo(
                    name="filter",
                    description="Keeps rows.",
                    min_inputs=1,
                    max_inputs=1,
                    streaming=True,
                    parameters=[pb.TransformParameterInfo(name="predicate", required=True)],
                ),
            ]
        )

    def ListConnections(
        self, request: pb.ListConnectionsRequest, context: grpc.ServicerContext
    ) -> pb.ListConnectionsResponse:
        self._seen(context)
        return pb.ListConnectionsResponse(
            connections=[connection_pb2.Connection(name="local", type="file")]
        )


@pytest.fixture
def stand_in() -> Iterator[tuple[StandIn, str]]:
    servicer = StandIn()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_SchedulerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture(autouse=True)
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file and no DATADOG_* variable from the machine running the tests."""
    monkeypatch.setenv("DATADOG_CONFIG", str(tmp_path / "no-config.yaml"))
    for name in ("SERVER", "TIMEOUT", "TLS", "TLS_CA", "TLS_CERT", "TLS_KEY", "TOKEN", "CONTEXT"):
        monkeypatch.delenv(f"DATADOG_{name}", raising=False)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


PIPELINE = {
    "name": "p",
    "steps": [
        {"name": "orders", "source": {"file": {"path": "in.csv", "format": "FILE_FORMAT_CSV"}}},
        {"name": "rows", "source": {"inline": {"rows": [{"a": 1}]}}},
        {"name": "db", "source": {"database": {"connection": "warehouse", "table": "t"}}},
        {"name": "keep", "inputs": ["orders"], "transform": {"filter": {"predicate": "true"}}},
        {"name": "out", "inputs": ["keep"], "sink": {"database": {"connection": "warehouse"}}},
        {"name": "api", "source": {"rest": {"connection": "broken", "path": "/x"}}},
    ],
}


def write_pipeline(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(PIPELINE))
    return path


def test_connections_of_a_pipeline_in_step_order_with_local_for_file_steps() -> None:
    assert connections_of(pipeline_from_dict(PIPELINE)) == ["local", "warehouse", "broken"]
    assert connections_of(pipeline_pb2.Pipeline(name="x")) == []


def test_connector_test_reports_each_connection_and_exits_1_when_one_fails(
    stand_in: tuple[StandIn, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = stand_in
    code, out, err = cli(capsys, "--server", address, "connector", "test", "--connection", "local")
    assert (code, err) == (0, "")
    assert out.splitlines()[1].split()[:3] == ["local", "ok", "1.2"]

    path = write_pipeline(tmp_path)
    servicer.tested.clear()
    code, out, _ = cli(capsys, "--server", address, "connector", "test", "-f", str(path))
    assert code == ExitCode.RUN_FAILED
    assert servicer.tested == ["local", "warehouse", "broken"]
    assert "broken      FAILED  2.5 ms   CONNECTION_FAILED: refused" in out

    code, out, _ = cli(
        capsys, "--server", address, "connector", "test", "-f", str(path), "-o", "json"
    )
    results = json.loads(out)["results"]
    assert [(r["name"], r["ok"]) for r in results] == [
        ("local", True),
        ("warehouse", True),
        ("broken", False),
    ]
    assert results[2]["reason"] == "CONNECTION_FAILED"


def test_connector_test_errors(
    stand_in: tuple[StandIn, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = stand_in
    code, _, err = cli(capsys, "--server", address, "connector", "test")
    assert code == ExitCode.USAGE
    assert err == "error: give --connection NAME or -f PIPELINE_FILE\n"
    code, _, err = cli(capsys, "--server", address, "connector", "test", "--connection", "unknown")
    assert code == ExitCode.NOT_FOUND
    assert err == "error: no connection 'unknown' (NOT_FOUND)\n"


def test_connector_describe_a_step_of_a_file_or_an_inline_source(
    stand_in: tuple[StandIn, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, address = stand_in
    path = write_pipeline(tmp_path)
    code, out, err = cli(
        capsys, "--server", address, "connector", "describe", "--step", "db", "-f", str(path)
    )
    assert (code, err) == (0, "")
    assert servicer.described[-1].database.table == "t"
    assert out.splitlines() == [
        "COLUMN  TYPE    NULLABLE",
        "id      int64   no",
        "amount  double  yes",
        "estimated rows: 1,234",
    ]

    # A server that sends only the Arrow schema: the CLI reads the columns from it.
    servicer.columns_in_response = False
    source = '{"file": {"path": "a.csv", "format": "FILE_FORMAT_CSV"}}'
    code, out, _ = cli(
        capsys, "--server", address, "connector", "describe", "--source", source, "-o", "yaml"
    )
    assert code == 0
    assert servicer.described[-1].file.path == "a.csv"
    assert yaml.safe_load(out) == {
        "estimated_rows": "1234",
        "columns": [
            {"name": "id", "type": "int64", "nullable": False},
            {"name": "amount", "type": "double", "nullable": True},
        ],
    }


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ((), ExitCode.USAGE, "give either --step NAME with -f PIPELINE_FILE, or --source JSON"),
        (("--step", "db"), ExitCode.USAGE, "--step needs -f PIPELINE_FILE"),
        (("--step", "nope", "-f", "{file}"), ExitCode.NOT_FOUND, "has no step 'nope'"),
        (("--step", "out", "-f", "{file}"), ExitCode.INVALID_ARGUMENT, "is a sink, not a source"),
        (("--source", '{"fil": {}}'), ExitCode.INVALID_ARGUMENT, "--source is not a SourceSpec"),
    ],
)
def test_connector_describe_refuses_bad_arguments_before_calling(
    stand_in: tuple[StandIn, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    servicer, address = stand_in
    path = write_pipeline(tmp_path)
    argv = [str(path) if a == "{file}" else a for a in args]
    got, _, err = cli(capsys, "--server", address, "connector", "describe", *argv)
    assert got == code
    assert message in err
    assert len(err.splitlines()) == 1
    assert servicer.described == []


def test_transform_list_table_json_and_yaml(
    stand_in: tuple[StandIn, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = stand_in
    code, out, _ = cli(capsys, "--server", address, "transform", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "INPUTS", "STREAMING"]
    assert lines[1].split()[:4] == ["filter", "1", "yes", "predicate*"]
    assert lines[2].split()[:5] == ["join", "2", "no", "on*,", "how"]
    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        code, out, _ = cli(capsys, "--server", address, "transform", "list", "-o", fmt)
        document = load(out)
        assert [t["name"] for t in document["transform_types"]] == ["join", "filter"]
        assert document["transform_types"][0]["parameters"][0] == {
            "name": "on",
            "type": "string[]",
            "description": "",
            "required": True,
        }


def test_the_token_goes_with_every_call_from_flag_variable_or_context(
    stand_in: tuple[StandIn, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    servicer, address = stand_in
    assert main(["--server", address, "connector", "list"]) == 0
    assert "authorization" not in servicer.metadata[-1]
    assert main(["--server", address, "--token", "s3cret", "connector", "list"]) == 0
    assert servicer.metadata[-1]["authorization"] == "Bearer s3cret"
    monkeypatch.setenv("DATADOG_TOKEN", "from-env")
    assert main(["--server", address, "transform", "list"]) == 0
    assert servicer.metadata[-1]["authorization"] == "Bearer from-env"
    monkeypatch.delenv("DATADOG_TOKEN")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"contexts": {"c": {"server": address, "token": "ctx"}}}))
    monkeypatch.setenv("DATADOG_CONFIG", str(config))
    assert main(["--context", "c", "connector", "list"]) == 0
    assert servicer.metadata[-1]["authorization"] == "Bearer ctx"
    capsys.readouterr()


def test_a_call_the_server_does_not_know_is_one_line_and_exit_6(
    stand_in: tuple[StandIn, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, address = stand_in
    code, out, err = cli(capsys, "--server", address, "schedule", "list")
    assert (code, out) == (ExitCode.ERROR, "")
    assert err == (
        f"error: the DataDog scheduler at {address} does not support this call "
        "(an older version?) (UNIMPLEMENTED)\n"
    )


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_with_a_ca_file_and_mutual_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = _certificate(tmp_path)
    servicer = StandIn()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_SchedulerServiceServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=cert.read_bytes(),  # client certificates signed by itself
        require_client_auth=True,
    )
    port = server.add_secure_port("localhost:0", credentials)
    server.start()
    try:
        server_flag = ("--server", f"localhost:{port}", "--timeout", "5")
        tls = ("--tls-ca", str(cert), "--tls-cert", str(cert), "--tls-key", str(key))
        code, out, err = cli(capsys, *server_flag, *tls, "--token", "t", "connector", "list")
        assert (code, err) == (0, "")
        assert "local" in out
        assert servicer.metadata[-1]["authorization"] == "Bearer t"

        # Without a client certificate the handshake fails: one line, exit 5.
        code, _, err = cli(capsys, *server_flag, "--tls-ca", str(cert), "connector", "list")
        assert code == ExitCode.UNAVAILABLE
        assert len(err.splitlines()) == 1
        assert err.startswith(f"error: cannot reach the DataDog scheduler at localhost:{port}")

        code, _, err = cli(capsys, *server_flag, "--tls-cert", str(cert), "connector", "list")
        assert code == ExitCode.USAGE
        assert err == "error: --tls-cert and --tls-key go together (mutual TLS needs both)\n"
        missing = tmp_path / "missing.pem"
        code, _, err = cli(capsys, *server_flag, "--tls-ca", str(missing), "connector", "list")
        assert code == ExitCode.INVALID_ARGUMENT
        assert err == f"error: cannot read TLS file {missing}: No such file or directory\n"
    finally:
        server.stop(grace=None)

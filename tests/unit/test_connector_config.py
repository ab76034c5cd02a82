"""Connector config: option validation, ${env}/${file} secrets, lookups, live reload."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.connector.base import (
    Capability,
    Connection,
    ConnectorType,
    OptionSpec,
    ReadScope,
    RecordStream,
    TypeInfo,
    WriteOutcome,
)
from datadog_platform.connector.config import (
    ConnectorConfig,
    LiveConfig,
    load_config,
    parse_config,
)
from datadog_platform.connector.registry import ConnectorRegistry
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.core.page_tokens import decode_page_token, encode_page_token
from datadog_platform.core.redaction import MASK, redact

REPO = Path(__file__).resolve().parents[2]


class FakeConnection(Connection):
    """Records what it was created with and whether it was closed."""

    def __init__(self, name: str, type_name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, type_name)
        self.options = dict(options)
        self.closed = False

    def public_options(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.options.items() if k != "password"}

    async def test(self) -> str:
        return "ok"

    @contextlib.asynccontextmanager
    async def read(
        self, source: Any, scope: ReadScope, ticket: bytes
    ) -> AsyncIterator[RecordStream]:
        async def batches() -> AsyncIterator[pa.RecordBatch]:
            yield pa.record_batch({"x": [1]})

        yield RecordStream(pa.schema([("x", pa.int64())]), batches())

    async def write(self, sink: Any, key: str, schema: pa.Schema, batches: Any) -> WriteOutcome:
        return WriteOutcome(0, "fake://")

    async def close(self) -> None:
        self.closed = True


class FakeType(ConnectorType):
    """A connector type with one option of every kind."""

    def __init__(self, name: str, spec_kind: str) -> None:
        self.spec_kind = spec_kind
        self.info = TypeInfo(
            type=name,
            description=f"fake {spec_kind} connector",
            capabilities=frozenset({Capability.READ}),
            options=(
                OptionSpec("host", "string", "host name", required=True),
                OptionSpec("port", "integer", "port", default="5432"),
                OptionSpec("password", "string", "password", secret=True),
                OptionSpec("ratio", "number", "a number"),
                OptionSpec("enabled", "boolean", "a flag"),
                OptionSpec("tags", "list", "a list"),
                OptionSpec("auth", "map", "auth settings", secret=True),
                OptionSpec("dsn", "string", "a URL"),
            ),
        )
        self.created: list[FakeConnection] = []

    def create(self, name: str, options: Mapping[str, Any], base_dir: Path) -> Connection:
        if options.get("host") == "refuse":
            raise DomainError(
                ErrorCode.INVALID_ARGUMENT, "CONFIG_INVALID", "option 'host': refused"
            )
        connection = FakeConnection(name, self.info.type, options)
        self.created.append(connection)
        return connection


@pytest.fixture
def db_type() -> FakeType:
    return FakeType("fakedb", "database")


@pytest.fixture
def registry(db_type: FakeType) -> ConnectorRegistry:
    return ConnectorRegistry.of(
        db_type, FakeType("fakefile", "file"), FakeType("fakeartifact", "artifact")
    )


def _parse(registry: ConnectorRegistry, connections: dict[str, Any], base: Path = REPO):
    return parse_config({"connections": connections}, base, registry=registry)


def _error(call: Any) -> DomainError:
    with pytest.raises(DomainError) as info:
        call()
    return info.value


def _unique(prefix: str = "pw") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- options


def test_options_are_coerced_to_their_declared_types(registry: ConnectorRegistry) -> None:
    config = _parse(
        registry,
        {
            "db": {
                "type": "fakedb",
                "description": "Warehouse",
                "host": 1234,
                "port": "6543",
                "ratio": "0.5",
                "enabled": "yes",
                "tags": "a, b",
                "auth": '{"type": "bearer", "token": "tok-123456"}',
            }
        },
    )
    db = config.connections["db"]
    assert isinstance(db, FakeConnection)
    assert db.description == "Warehouse"
    assert db.options == {
        "host": "1234",
        "port": 6543,
        "ratio": 0.5,
        "enabled": True,
        "tags": ["a", "b"],
        "auth": {"type": "bearer", "token": "tok-123456"},
    }


def test_env_and_file_references_resolve_anywhere_in_values(
    registry: ConnectorRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password, token = _unique(), _unique("tok")
    monkeypatch.setenv("FAKE_DB_PASSWORD", password)
    monkeypatch.setenv("FAKE_DB_PORT", "7000")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(token + "\n")
    config = _parse(
        registry,
        {
            "db": {
                "type": "fakedb",
                "host": "db-${env:FAKE_DB_PORT}.internal",
                "port": "${env:FAKE_DB_PORT}",
                "password": "${env:FAKE_DB_PASSWORD}",
                "auth": {"type": "bearer", "token": "${file:secrets/token}"},
                "tags": ["$${env:LITERAL}", "${file:" + str(tmp_path / "secrets" / "token") + "}"],
            }
        },
        base=tmp_path,
    )
    options = config.connections["db"].options  # type: ignore[attr-defined]
    assert options["host"] == "db-7000.internal"
    assert options["port"] == 7000
    assert options["password"] == password
    assert options["auth"] == {"type": "bearer", "token": token}  # trailing newline stripped
    assert options["tags"] == ["${env:LITERAL}", token]
    # Secret options and secret-looking nested keys are registered; descriptive ones not.
    assert redact(f"{password} {token}") == f"{MASK} {MASK}"
    assert redact("bearer") == "bearer"
    assert redact("db-7000.internal") == "db-7000.internal"


def test_secret_maps_register_values_but_not_descriptive_ones(
    registry: ConnectorRegistry,
) -> None:
    key = _unique("key")
    _parse(
        registry,
        {
            "db": {
                "type": "fakedb",
                "host": "h",
                "auth": {"Content-Type": "application/json", "X-Api-Key": key, "in": "header"},
            }
        },
    )
    assert redact(f"{key} application/json header") == f"{MASK} application/json header"


def test_dsn_password_is_registered_whatever_the_option(registry: ConnectorRegistry) -> None:
    password = _unique()
    _parse(registry, {"db": {"type": "fakedb", "host": "h", "dsn": f"pg://u:{password}@h/db"}})
    assert redact(f"auth failed ({password})") == f"auth failed ({MASK})"


def test_missing_env_names_connection_and_option_never_the_value(
    registry: ConnectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAKE_MISSING_VAR", raising=False)
    error = _error(
        lambda: _parse(
            registry,
            {"db": {"type": "fakedb", "host": "h", "password": "${env:FAKE_MISSING_VAR}"}},
        )
    )
    assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert "connection 'db'" in error.message
    assert "option 'password'" in error.message
    assert "FAKE_MISSING_VAR is not set" in error.message


def test_missing_secret_file_is_config_invalid(registry: ConnectorRegistry, tmp_path: Path) -> None:
    error = _error(
        lambda: _parse(
            registry,
            {"db": {"type": "fakedb", "host": "h", "auth": {"token": "${file:nope/token}"}}},
            base=tmp_path,
        )
    )
    assert error.reason == "CONFIG_INVALID"
    assert "option 'auth.token'" in error.message
    assert str(tmp_path / "nope" / "token") in error.message


def test_unknown_reference_kind_is_refused(registry: ConnectorRegistry) -> None:
    error = _error(lambda: _parse(registry, {"db": {"type": "fakedb", "host": "${vault:x}"}}))
    assert "unknown reference" in error.message


def test_unknown_options_list_the_allowed_ones(registry: ConnectorRegistry) -> None:
    error = _error(
        lambda: _parse(registry, {"db": {"type": "fakedb", "host": "h", "passwd": "x", "u": 1}})
    )
    assert error.reason == "CONFIG_INVALID"
    assert "unknown option(s) passwd, u" in error.message
    assert "allowed: auth, dsn, enabled, host, password, port, ratio, tags" in error.message


def test_required_options_are_enforced(registry: ConnectorRegistry) -> None:
    error = _error(lambda: _parse(registry, {"db": {"type": "fakedb", "port": 1}}))
    assert "connection 'db' (fakedb) needs option(s) host" in error.message


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("port", "eighty", "option 'port' must be an integer, got 'eighty'"),
        ("port", True, "must be an integer"),
        ("enabled", "maybe", "must be a boolean"),
        ("ratio", "x", "must be a number"),
        ("auth", [1], "must be a map"),
        ("host", {"a": 1}, "must be a string"),
    ],
)
def test_badly_typed_options_are_config_invalid(
    registry: ConnectorRegistry, option: str, value: Any, fragment: str
) -> None:
    entry = {"type": "fakedb", "host": "h", option: value}
    error = _error(lambda: _parse(registry, {"db": entry}))
    assert error.reason == "CONFIG_INVALID"
    assert fragment in error.message


def test_badly_typed_secret_never_shows_its_value(registry: ConnectorRegistry) -> None:
    error = _error(
        lambda: _parse(registry, {"db": {"type": "fakedb", "host": "h", "password": ["x" * 9]}})
    )
    assert "must be a string" in error.message
    assert "xxxxxxxxx" not in error.message


def test_create_errors_name_the_connection(registry: ConnectorRegistry) -> None:
    error = _error(lambda: _parse(registry, {"db": {"type": "fakedb", "host": "refuse"}}))
    assert error.reason == "CONFIG_INVALID"
    assert "connection 'db' (fakedb): option 'host': refused" in error.message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "connections:\n  x: {type: s3, root: .}\n",
            "unknown type 's3'; known types: fakeartifact",
        ),
        ("connections:\n  x: {host: h}\n", "unknown type None"),
        ("connections:\n  9x: {type: fakedb, host: h}\n", "must start with a letter"),
        ("connections:\n  x: [1]\n", "must be a mapping"),
        ("connections:\n  x: {type: fakedb, host: h, description: [1]}\n", "must be a string"),
        ("connections: {}\n", "empty"),
        ("connections: [\n", "not valid YAML"),
        ("other: 1\n", "'connections' mapping"),
        ("connections: {x: {type: fakedb, host: h}}\nextra: 1\n", "unknown top-level keys"),
    ],
)
def test_bad_config_file_is_a_clear_error(
    registry: ConnectorRegistry, tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    error = _error(lambda: load_config(path, default_root=tmp_path, registry=registry))
    assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert fragment in error.message
    assert str(path) in error.message


def test_unreadable_config_file(registry: ConnectorRegistry, tmp_path: Path) -> None:
    error = _error(lambda: load_config(tmp_path / "none.yaml", tmp_path, registry=registry))
    assert "cannot read it" in error.message


def test_dotted_keys_fill_map_options(registry: ConnectorRegistry) -> None:
    config = _parse(
        registry, {"db": {"type": "fakedb", "host": "h", "auth.type": "basic", "auth.user": "u"}}
    )
    assert config.connections["db"].options["auth"] == {"type": "basic", "user": "u"}  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- lookups


@pytest.fixture
def mixed(registry: ConnectorRegistry) -> ConnectorConfig:
    return _parse(
        registry,
        {
            "local": {"type": "fakefile", "host": "files"},
            "warehouse": {"type": "fakedb", "host": "db"},
            "store": {"type": "fakeartifact", "host": "s3"},
        },
    )


def test_source_lookup_by_kind(mixed: ConnectorConfig) -> None:
    source = step_pb2.SourceSpec(database=step_pb2.DatabaseSource(connection="warehouse"))
    connection, spec = mixed.source_connection(source)
    assert connection.name == "warehouse"
    assert spec is source.database or spec == source.database
    connection, _ = mixed.source_connection(step_pb2.SourceSpec(file=step_pb2.FileSource()))
    assert connection.name == "local"  # an empty file connection name means "local"
    connection, _ = mixed.sink_connection(step_pb2.SinkSpec(artifact=step_pb2.ArtifactSink()))
    assert connection.name == "store"  # the only artifact connection


def test_database_source_naming_a_file_connection_names_the_field(mixed: ConnectorConfig) -> None:
    source = step_pb2.SourceSpec(database=step_pb2.DatabaseSource(connection="local"))
    error = _error(lambda: mixed.source_connection(source))
    assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, "CONNECTION_TYPE_MISMATCH")
    assert [v.field for v in error.violations] == ["source.database.connection"]
    assert "needs a connection of type fakedb" in error.message
    sink = step_pb2.SinkSpec(file=step_pb2.FileSink(connection="warehouse"))
    error = _error(lambda: mixed.sink_connection(sink))
    assert [v.field for v in error.violations] == ["header.sink.file.connection"]


def test_missing_and_unknown_connections(mixed: ConnectorConfig) -> None:
    error = _error(lambda: mixed.source_connection(step_pb2.SourceSpec()))
    assert (error.reason, [v.field for v in error.violations]) == (
        "REQUIRED_FIELD_MISSING",
        ["source"],
    )
    source = step_pb2.SourceSpec(database=step_pb2.DatabaseSource())
    error = _error(lambda: mixed.source_connection(source))
    assert [v.field for v in error.violations] == ["source.database.connection"]
    source = step_pb2.SourceSpec(database=step_pb2.DatabaseSource(connection="nope"))
    error = _error(lambda: mixed.source_connection(source))
    assert (error.code, error.reason) == (ErrorCode.NOT_FOUND, "CONNECTION_NOT_FOUND")
    assert error.metadata == {"connection": "nope"}
    assert "source.database.connection" in error.message


def test_artifact_store_must_be_unambiguous(registry: ConnectorRegistry) -> None:
    two = _parse(
        registry,
        {"a": {"type": "fakeartifact", "host": "x"}, "b": {"type": "fakeartifact", "host": "y"}},
    )
    source = step_pb2.SourceSpec(artifact=step_pb2.ArtifactSource(key="k"))
    error = _error(lambda: two.source_connection(source))
    assert (error.code, error.reason) == (ErrorCode.NOT_FOUND, "CONNECTION_NOT_FOUND")
    named = _parse(
        registry,
        {
            "a": {"type": "fakeartifact", "host": "x"},
            "artifacts": {"type": "fakeartifact", "host": "y"},
        },
    )
    assert named.source_connection(source)[0].name == "artifacts"


# --------------------------------------------------------------------------- paging


def test_paging_walks_all_connections_in_name_order(registry: ConnectorRegistry) -> None:
    config = _parse(registry, {n: {"type": "fakedb", "host": n} for n in "caebd"})
    seen: list[str] = []
    token = ""
    while True:
        page = config.list_page(2, token)
        seen += [c.name for c in page.connections]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["a", "b", "c", "d", "e"]
    assert config.list_page(0, "").next_page_token == ""
    assert len(config.list_page(0, "").connections) == 5
    error = _error(lambda: config.list_page(-1, ""))
    assert (error.reason, [v.field for v in error.violations]) == (
        "INVALID_PAGE_SIZE",
        ["page_size"],
    )


def test_page_token_round_trip_and_garbage() -> None:
    assert (
        decode_page_token(encode_page_token("ListConnections", "local"), "ListConnections")
        == "local"
    )
    other_list = encode_page_token("ListRuns", "local")
    for garbage in [
        "garbage!",
        "bG9jYWw=",
        "%%%",
        encode_page_token("ListConnections", ""),
        other_list,
    ]:
        error = _error(lambda garbage=garbage: decode_page_token(garbage, "ListConnections"))
        assert error.reason == "INVALID_PAGE_TOKEN"


# --------------------------------------------------------------------------- built-ins


def test_local_config_has_file_and_artifact_connections(tmp_path: Path) -> None:
    config = ConnectorConfig.local(tmp_path)
    assert [(c.name, c.type) for c in config.connections.values()] == [
        ("artifacts", "artifact"),
        ("local", "file"),
    ]
    assert config.file_connection("").public_options()["root"] == str(tmp_path.resolve())


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "examples" / "connectors.yaml", default_root=Path("/nonexistent"))
    assert {"local", "artifacts"} <= set(config.connections)
    assert config.connections["local"].type == "file"


# --------------------------------------------------------------------------- live reload


def _write_config(path: Path, hosts: dict[str, str]) -> None:
    lines = ["connections:"]
    lines += [f"  {name}: {{type: fakedb, host: {host}}}" for name, host in hosts.items()]
    path.write_text("\n".join(lines) + "\n")


async def test_reload_keeps_unchanged_closes_changed_after_their_last_user(
    registry: ConnectorRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "connectors.yaml"
    _write_config(path, {"keep": "a", "change": "b", "drop": "c"})
    live = LiveConfig(load_config(path, tmp_path, registry=registry))
    old = dict(live.current.connections)
    async with live.lease(lambda c: c.connection("change")) as busy:
        _write_config(path, {"keep": "a", "change": "b2", "new": "d"})
        assert await live.reload("test")
        new = live.current.connections
        assert list(new) == ["change", "keep", "new"]
        assert new["keep"] is old["keep"]  # unchanged: the same open connection
        assert new["change"] is not busy
        await asyncio.sleep(0)
        assert old["drop"].closed  # type: ignore[attr-defined]
        assert not busy.closed  # type: ignore[attr-defined]  # still streaming
        assert live.in_use(busy) == 1
    await _until(lambda: busy.closed)  # type: ignore[attr-defined]
    assert not new["keep"].closed  # type: ignore[attr-defined]
    await live.close()
    assert all(c.closed for c in new.values())  # type: ignore[attr-defined]


async def test_a_bad_new_file_keeps_the_old_config(
    registry: ConnectorRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "connectors.yaml"
    _write_config(path, {"db": "a"})
    live = LiveConfig(load_config(path, tmp_path, registry=registry))
    before = live.current
    path.write_text("connections:\n  db: {type: fakedb, hots: a}\n")
    assert not await live.reload("test")
    assert live.current is before
    assert not before.connections["db"].closed  # type: ignore[attr-defined]
    assert live.reloads["failed"] == 1
    await live.close()


async def test_watcher_reloads_when_the_file_or_a_secret_file_changes(
    registry: ConnectorRegistry, tmp_path: Path
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("first-pw\n")
    path = tmp_path / "connectors.yaml"
    path.write_text("connections:\n  db: {type: fakedb, host: a, password: '${file:pw}'}\n")
    live = LiveConfig(load_config(path, tmp_path, registry=registry))
    live.start_watching(0.05)
    try:
        first = live.current.connections["db"]
        await asyncio.sleep(0.1)
        assert live.current.connections["db"] is first  # nothing changed, nothing reloaded
        secret.write_text("rotated-pw-longer\n")
        await _until(lambda: live.current.connections["db"] is not first)
        assert live.current.connections["db"].options["password"] == "rotated-pw-longer"  # type: ignore[attr-defined]
        await _until(lambda: first.closed)  # type: ignore[attr-defined]
        path.write_text(path.read_text() + "  other: {type: fakedb, host: b}\n")
        await _until(lambda: "other" in live.current.connections)
    finally:
        await live.close()


async def test_reload_without_a_file_is_a_no_op(registry: ConnectorRegistry) -> None:
    live = LiveConfig(_parse(registry, {"db": {"type": "fakedb", "host": "h"}}))
    assert not await live.reload("test")
    await live.close()


async def _until(condition: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    assert condition()


def test_a_changed_environment_value_changes_the_fingerprint(
    registry: ConnectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_HOST", "one")
    first = _parse(registry, {"db": {"type": "fakedb", "host": "${env:FAKE_HOST}"}})
    monkeypatch.setenv("FAKE_HOST", "two")
    second = _parse(registry, {"db": {"type": "fakedb", "host": "${env:FAKE_HOST}"}})
    assert first.fingerprints["db"] != second.fingerprints["db"]
    assert os.environ["FAKE_HOST"] == "two"

"""Fake installed connector plugins, for tests that must not pip-install anything.

:func:`make_plugin_site` writes a directory that looks like site-packages with two
distributions: the repository's example plugin (``datadog-connector-example``,
its module copied from ``examples/plugins``) and ``fake-bad-plugins``, whose entry
points are broken, not connector types, shadow a built-in, or leak secrets on
purpose (``leaky``: its errors and logs contain its password, to prove redaction).
Putting the directory on ``sys.path`` (or ``PYTHONPATH`` for a subprocess) makes
``importlib.metadata`` find them exactly as if they were installed.
"""

from __future__ import annotations

import shutil
import textwrap
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = REPO / "examples" / "plugins" / "datadog-connector-example"

LEAKY_MODULE = '''
"""Connector types that misbehave, for tests."""
from __future__ import annotations

import contextlib
import logging

import pyarrow as pa

from datadog_platform.connector.base import (
    Capability, Connection, ConnectorType, OptionSpec, RecordStream, TypeInfo, WriteOutcome,
)
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.core.logging import get_logger

log = get_logger("leaky")
CLOSED: list[str] = []


class LeakyConnection(Connection):
    """Puts its password in every error and log line, like a careless driver."""

    def __init__(self, name, host, password):
        super().__init__(name, "leaky")
        self.host, self.password = host, password

    def public_options(self):
        return {"host": self.host}

    def _fail(self):
        log.warning("leaky.login_failed", password=self.password, host=self.host)
        logging.getLogger("leaky.driver").warning("login with %s failed", self.password)
        return DomainError(
            ErrorCode.UNAUTHENTICATED,
            "AUTHENTICATION_FAILED",
            f"password {self.password!r} rejected by {self.host}",
            {"password": self.password},
        )

    async def test(self):
        if self.password.startswith("good"):
            return f"logged in to {self.host} with {self.password}"
        raise self._fail()

    @contextlib.asynccontextmanager
    async def read(self, source, scope, ticket):
        raise self._fail()
        yield

    async def write(self, sink, idempotency_key, schema, batches):
        raise self._fail()

    async def close(self):
        CLOSED.append(self.name)


class LeakyType(ConnectorType):
    spec_kind = "database"
    info = TypeInfo(
        type="leaky",
        description="A connector that leaks its password (tests only)",
        capabilities=frozenset({Capability.READ}),
        options=(
            OptionSpec("host", "string", "host", required=True),
            OptionSpec("password", "string", "password", secret=True),
        ),
    )

    def create(self, name, options, base_dir):
        return LeakyConnection(name, options["host"], options.get("password", ""))


class ShadowRest(LeakyType):
    info = TypeInfo("rest", "tries to replace the built-in rest type", frozenset(), ())


class BadSpecKind(LeakyType):
    spec_kind = "carrier-pigeon"
    info = TypeInfo("pigeon", "serves no SourceSpec kind", frozenset(), ())


class MemoryConnection(Connection):
    """Reads generated rows; writes into WRITES, replaying committed keys."""

    def __init__(self, name, rows, batch_rows):
        super().__init__(name, "memory")
        self.rows, self.batch_rows = rows, batch_rows

    def public_options(self):
        return {"rows": str(self.rows)}

    async def test(self):
        return f"{self.rows} rows"

    @contextlib.asynccontextmanager
    async def read(self, source, scope, ticket):
        schema = pa.schema([("n", pa.int64())])

        async def batches():
            for start in range(0, self.rows, self.batch_rows):
                stop = min(self.rows, start + self.batch_rows)
                yield pa.record_batch([pa.array(range(start, stop), pa.int64())], schema=schema)

        yield RecordStream(schema, batches())

    async def write(self, sink, idempotency_key, schema, batches):
        target = f"memory://{self.name}/{sink.table}"
        if idempotency_key in COMMITTED:
            return WriteOutcome(COMMITTED[idempotency_key], target, replayed=True)
        received = []
        try:
            async for batch in batches:
                received.append(batch)
        except BaseException as exc:
            ABORTED.append((idempotency_key, type(exc).__name__, str(exc)))
            raise
        table = pa.Table.from_batches(received, schema=schema)
        WRITES[target] = table
        COMMITTED[idempotency_key] = table.num_rows
        return WriteOutcome(table.num_rows, target)

    async def close(self):
        CLOSED.append(self.name)


class MemoryType(ConnectorType):
    spec_kind = "database"
    info = TypeInfo(
        type="memory",
        description="Rows in memory (tests only)",
        capabilities=frozenset({Capability.READ, Capability.WRITE}),
        options=(
            OptionSpec("rows", "integer", "rows a read generates", default="0"),
            OptionSpec("batch_rows", "integer", "rows per batch", default="1000"),
        ),
    )

    def create(self, name, options, base_dir):
        return MemoryConnection(name, options.get("rows", 0), options.get("batch_rows", 1000))


WRITES: dict = {}
COMMITTED: dict = {}
ABORTED: list = []
LEAKY_CONNECTOR_TYPE = LeakyType()
MEMORY_CONNECTOR_TYPE = MemoryType()
SHADOW_REST = ShadowRest()
BAD_SPEC_KIND = BadSpecKind()
NOT_A_TYPE = object()
'''


def _dist_info(site: Path, name: str, version: str, entry_points: dict[str, str]) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[datadog_platform.connectors]"]
    lines += [f"{key} = {value}" for key, value in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def make_plugin_site(directory: Path) -> Path:
    """A site-packages-like directory holding the two fake distributions."""
    site = directory / "site"
    site.mkdir()
    shutil.copy(EXAMPLE_PLUGIN / "datadog_connector_example.py", site)
    # The entry points exactly as the example's pyproject.toml declares them.
    project = tomllib.loads((EXAMPLE_PLUGIN / "pyproject.toml").read_text())["project"]
    _dist_info(
        site,
        project["name"],
        project["version"],
        project["entry-points"]["datadog_platform.connectors"],
    )
    (site / "fake_leaky_plugins.py").write_text(textwrap.dedent(LEAKY_MODULE))
    (site / "fake_broken_plugin.py").write_text("raise ImportError('this plugin is broken')\n")
    _dist_info(
        site,
        "fake-bad-plugins",
        "1.0",
        {
            "broken": "fake_broken_plugin:TYPE",
            "missing": "fake_leaky_plugins:NO_SUCH_ATTRIBUTE",
            "not_a_type": "fake_leaky_plugins:NOT_A_TYPE",
            "pigeon": "fake_leaky_plugins:BAD_SPEC_KIND",
            "rest": "fake_leaky_plugins:SHADOW_REST",
            "leaky": "fake_leaky_plugins:LEAKY_CONNECTOR_TYPE",
            "memory": "fake_leaky_plugins:MEMORY_CONNECTOR_TYPE",
        },
    )
    return site

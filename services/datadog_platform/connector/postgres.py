"""The PostgreSQL connector: tables and queries in and out as Arrow record batches.

Two drivers, each where it was measured to be best (``bench/connector_postgres.py``,
TPC-H lineitem, this 2-core machine):

- **ADBC** (``adbc-driver-postgresql``, Arrow-native, C) moves the data. Reads run
  ``COPY (SELECT ...) TO STDOUT (FORMAT binary)`` and decode straight into Arrow:
  0.78 M rows/s in process (numeric read as text and cast to decimal128 in Arrow:
  ADBC's own numeric decoding halves that), versus 0.09 M rows/s for asyncpg rows
  converted to Arrow and 0.75 M rows/s for asyncpg merely draining the binary COPY.
  With a bound parameter ADBC cannot use COPY and materialises the whole result in
  one batch, so pushed-down values are rendered as literals (``pg_sql``). Writes
  stream one ``COPY ... FROM STDIN (FORMAT binary)``: 0.49-0.56 M rows/s, versus
  0.31 M rows/s for asyncpg COPY of CSV text and 0.05 M rows/s for asyncpg
  ``copy_records_to_table``. ADBC is synchronous: it runs on this connection's own
  threads, one batch at a time, with the next batch prefetched.
- **asyncpg** answers metadata: describe, plan, test.

Reads. A source is a table (``sales.orders``, PostgreSQL's own name syntax: unquoted
parts fold to lower case, ``"Mixed Case"`` keeps its case) or one SELECT statement
(validated by preparing it; run in a READ ONLY session). Projection and predicates
become SQL (``pg_sql``); types follow ``pg_types``. ``plan_read`` splits a table with
a single-column integer primary key into key ranges (min/max cut into equal parts,
first and last open-ended) and any other table into ``ctid`` page ranges (TID range
scans); a query is one ticket. Tickets are JSON that ``read`` validates.

Writes. In ONE transaction on one ADBC connection: the idempotency key is claimed in
the ledger table (``INSERT ... ON CONFLICT DO NOTHING``: a committed key means
replay, a concurrent writer of the same key waits for ours), the target is created
from the Arrow schema if missing (with a primary key on ``key_columns`` for UPSERT),
OVERWRITE truncates it, the rows are streamed with COPY (straight into the target,
or into a temporary staging table when SQL casts or ``ON CONFLICT`` are needed),
and the ledger row gets its count. Nothing is visible before COMMIT; a broken
stream, a bad value or a killed process leaves the target as it was. OVERWRITE
uses TRUNCATE, so readers of the target wait for the commit.

The ledger table (option ``ledger_table``, default ``_datadog_write_ledger`` in the
current schema) has columns ``idempotency_key text primary key, target text,
rows_written bigint, committed_at timestamptz``.

Error reasons (besides those of ``pg_errors``, ``pg_sql`` and ``pg_types``):

- ``CONFIG_INVALID`` (INVALID_ARGUMENT): a bad option (never echoing the DSN).
- ``REQUIRED_FIELD_MISSING`` / ``INVALID_QUERY`` / ``INVALID_OPTION``
  (INVALID_ARGUMENT): neither or both of table and query, a query that is not one
  SELECT, a malformed table name, bad ``key_columns``.
- ``UNSUPPORTED_WRITE_MODE`` (INVALID_ARGUMENT): an unknown write mode.
- ``INVALID_TICKET`` (INVALID_ARGUMENT): a ticket not from PlanRead of this source.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import adbc_driver_postgresql.dbapi as adbc
import asyncpg
import numpy as np
import pyarrow as pa

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.connector.base import (
    Capability,
    Connection,
    ConnectorType,
    OptionSpec,
    ReadPlan,
    ReadScope,
    RecordStream,
    SourceDescription,
    Ticket,
    TypeInfo,
    WriteOutcome,
    option_error,
    project_schema,
)
from datadog_platform.connector.pg_errors import Side, describe_failure, map_error
from datadog_platform.connector.pg_sql import (
    COLUMNS_SQL,
    INTEGER_KEY_SQL,
    RELATION_SQL,
    RESULT_COLUMNS_SQL,
    TableName,
    predicate_sql,
    quote_ident,
    strip_query,
)
from datadog_platform.connector.pg_types import (
    PgColumn,
    ReadColumn,
    WriteColumn,
    conform_batch,
    convert_array,
    ddl_type,
    read_column,
    value_out_of_range,
    write_columns,
)
from datadog_platform.core.errors import DomainError, ErrorCode, FieldViolation, invalid_argument
from datadog_platform.core.logging import get_logger

TYPE_NAME = "postgres"
APPLICATION_NAME = "datadog-connector"
DEFAULT_PORT = 5432
DEFAULT_POOL_SIZE = 4
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_LEDGER_TABLE = "_datadog_write_ledger"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: Driver batches of ~4 MiB were measured fastest (1 MiB: -9%, 16 MiB: -4%); the
#: servicer slices larger ones into frames of ~TARGET_BATCH_BYTES without copying.
READ_BATCH_BYTES = 4 << 20
#: Automatic splits are at least this many pages (8 KiB each) or key values.
MIN_SPLIT_PAGES = 1280
MIN_SPLIT_ROWS = 100_000
ROW_COLUMN = "__datadog_row"
#: A pooled ADBC connection idle for longer is checked (SELECT 1) before reuse.
IDLE_CHECK_SECONDS = 30.0
SOURCE_FIELD = "source.database"
SINK_FIELD = "header.sink.database"
_TICKET_VERSION = 1
_SPLITTABLE = frozenset({"r", "m"})  # ordinary tables and materialized views have ctids
_TABLE_KINDS = frozenset({"r", "p"})  # what a write may target

log = get_logger(__name__)
T = TypeVar("T")

_OPTIONS = (
    OptionSpec(
        "dsn",
        "string",
        "libpq URI postgresql://user[:password]@host[:port]/database[?sslmode=...]; "
        "the options below override its parts. Treated as a secret: never shown.",
        secret=True,
    ),
    OptionSpec("host", "string", "Server host name or address (or a Unix socket directory)."),
    OptionSpec("port", "integer", "Server port.", default=str(DEFAULT_PORT)),
    OptionSpec("user", "string", "Role to connect as.", default="postgres"),
    OptionSpec("password", "string", "Password of the role.", secret=True),
    OptionSpec("database", "string", "Database name; defaults to the user name."),
    OptionSpec("sslmode", "string", f"TLS mode: {', '.join(SSL_MODES)}.", default="prefer"),
    OptionSpec(
        "connect_timeout",
        "number",
        "Seconds to wait for a connection.",
        default=f"{DEFAULT_CONNECT_TIMEOUT:g}",
    ),
    OptionSpec(
        "pool_size",
        "integer",
        "Connections per pool (metadata, reads, writes each); also the default number of splits.",
        default=str(DEFAULT_POOL_SIZE),
    ),
    OptionSpec(
        "ledger_table",
        "string",
        "Table recording committed idempotency keys (created on first write).",
        default=DEFAULT_LEDGER_TABLE,
    ),
)

INFO = TypeInfo(
    type=TYPE_NAME,
    description="PostgreSQL tables and queries: split reads with pushdown, "
    "exactly-once bulk writes (append, overwrite, upsert).",
    capabilities=frozenset(
        {
            Capability.READ,
            Capability.WRITE,
            Capability.DESCRIBE,
            Capability.PROJECTION_PUSHDOWN,
            Capability.PREDICATE_PUSHDOWN,
            Capability.SPLITS,
            Capability.UPSERT,
        }
    ),
    options=_OPTIONS,
)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class PgSettings:
    """Where and how to connect (the password is never shown)."""

    host: str
    port: int
    user: str
    database: str
    password: str | None = field(default=None, repr=False)
    sslmode: str = "prefer"
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    pool_size: int = DEFAULT_POOL_SIZE
    ledger_table: str = DEFAULT_LEDGER_TABLE

    def adbc_uri(self, read_only: bool) -> str:
        """A libpq URI for ADBC (credentials percent-encoded; sessions in UTC)."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        params = {
            "sslmode": self.sslmode,
            # libpq takes whole seconds and treats < 2 as 2.
            "connect_timeout": str(max(2, math.ceil(self.connect_timeout))),
            "application_name": APPLICATION_NAME,
            "options": "-c TimeZone=UTC"
            + (" -c default_transaction_read_only=on" if read_only else ""),
        }
        if self.host.startswith("/"):
            params["host"] = self.host
            location = ""
        else:
            location = f"[{self.host}]" if ":" in self.host else self.host
        params["port"] = str(self.port)
        query = urlencode(params, quote_via=quote)
        return f"postgresql://{auth}@{location}/{quote(self.database, safe='')}?{query}"


def parse_settings(options: Mapping[str, Any]) -> PgSettings:
    """Settings from a connection's options (``dsn`` and/or separate parts)."""
    parts: dict[str, Any] = {}
    dsn = options.get("dsn")
    if dsn:
        parts.update(_parse_dsn(str(dsn)))
    for key in ("host", "port", "user", "password", "database", "sslmode", "connect_timeout"):
        value = options.get(key)
        if value is not None and value != "":
            parts[key] = value
    host = str(parts.get("host") or "")
    if not host:
        raise option_error("host", "is required (as 'host' or inside 'dsn')")
    port = _integer(parts.get("port", DEFAULT_PORT), "port", 1, 65535)
    user = str(parts.get("user") or "postgres")
    database = str(parts.get("database") or user)
    sslmode = str(parts.get("sslmode") or "prefer")
    if sslmode not in SSL_MODES:
        raise option_error("sslmode", f"must be one of {', '.join(SSL_MODES)}")
    try:
        timeout = float(parts.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
    except (TypeError, ValueError):
        raise option_error("connect_timeout", "must be a number of seconds") from None
    if not timeout > 0:
        raise option_error("connect_timeout", "must be positive")
    pool_size = _integer(options.get("pool_size", DEFAULT_POOL_SIZE), "pool_size", 1, 64)
    ledger = str(options.get("ledger_table") or DEFAULT_LEDGER_TABLE)
    password = parts.get("password")
    return PgSettings(
        host=host,
        port=port,
        user=user,
        database=database,
        password=None if password is None else str(password),
        sslmode=sslmode,
        connect_timeout=timeout,
        pool_size=pool_size,
        ledger_table=ledger,
    )


def _parse_dsn(dsn: str) -> dict[str, Any]:
    """The parts of a ``postgresql://`` URI (errors never echo it: it may hold a password)."""
    try:
        split = urlsplit(dsn)
        port = split.port
    except ValueError:
        raise option_error("dsn", "is not a valid postgresql:// URI") from None
    if split.scheme not in ("postgresql", "postgres"):
        raise option_error(
            "dsn", "must be a URI starting with postgresql:// (key=value DSNs are not supported)"
        )
    parts: dict[str, Any] = {}
    if split.hostname:
        parts["host"] = unquote(split.hostname)
    if port is not None:
        parts["port"] = port
    if split.username:
        parts["user"] = unquote(split.username)
    if split.password is not None:
        parts["password"] = unquote(split.password)
    if split.path.strip("/"):
        parts["database"] = unquote(split.path.lstrip("/"))
    known = {"sslmode", "connect_timeout", "host", "port", "user", "password", "dbname"}
    for key, values in parse_qs(split.query, keep_blank_values=True).items():
        if key == "application_name":
            continue
        if key not in known:
            raise option_error("dsn", f"has an unsupported parameter {key!r}")
        parts["database" if key == "dbname" else key] = values[-1]
    return parts


def _integer(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise option_error(name, "must be an integer") from None
    if not low <= number <= high:
        raise option_error(name, f"must be between {low} and {high}")
    return number


class PostgresConnectorType(ConnectorType):
    """The ``postgres`` connector type."""

    spec_kind = "database"
    info = INFO

    def create(self, name: str, options: Mapping[str, Any], base_dir: Path) -> Connection:
        """A connection (pools open lazily: nothing connects here)."""
        return PostgresConnection(name, parse_settings(options))


POSTGRES_CONNECTOR_TYPE = PostgresConnectorType()


# --------------------------------------------------------------------------- relations


@dataclass(frozen=True)
class _Relation:
    """A source resolved against the catalog."""

    identity: str  # what tickets are bound to
    display: str  # for messages
    from_sql: str  # what follows FROM
    columns: tuple[PgColumn, ...]
    table: TableName | None = None
    oid: int | None = None
    relkind: str = ""
    reltuples: float = -1.0
    pages: int = 0

    @property
    def estimated_rows(self) -> int | None:
        """The planner's row estimate; None for queries and never-analysed tables."""
        return int(self.reltuples) if self.reltuples >= 0 else None


@dataclass(frozen=True)
class _Split:
    """One decoded ticket: a key range, a page range, or everything."""

    kind: str  # "all", "pk" or "ctid"
    column: str | None = None
    low: int | None = None
    high: int | None = None

    def condition(self) -> str | None:
        """The SQL restricting a read to this split."""
        if self.kind == "pk" and self.column is not None:
            ref = quote_ident(self.column)
            parts = []
            if self.low is not None:
                parts.append(f"{ref} >= {int(self.low)}")
            if self.high is not None:
                parts.append(f"{ref} < {int(self.high)}")
            return " AND ".join(parts) or None
        if self.kind == "ctid":
            parts = []
            if self.low is not None:
                parts.append(f"ctid >= '({int(self.low)},0)'::tid")
            if self.high is not None:
                parts.append(f"ctid < '({int(self.high)},0)'::tid")
            return " AND ".join(parts) or None
        return None

    def describe(self) -> str:
        """Human-readable range, e.g. ``id in [1, 250000)``."""
        if self.kind == "all":
            return "the whole source"
        name = self.column if self.kind == "pk" else "pages"
        if self.low is None and self.high is None:
            return f"every {name}"
        if self.low is None:
            return f"{name} < {self.high}"
        if self.high is None:
            return f"{name} >= {self.low}"
        return f"{name} in [{self.low}, {self.high})"


# --------------------------------------------------------------------------- ADBC pools


@dataclass
class _Lease:
    """A pooled ADBC connection; set ``reuse = False`` to close it instead of returning it."""

    conn: Any
    reuse: bool = True


class _AdbcPool:
    """At most ``size`` ADBC connections, opened on demand and reused when healthy."""

    def __init__(self, uri: str, size: int, autocommit: bool, run: _Runner) -> None:
        self._uri = uri
        self._autocommit = autocommit
        self._run = run
        self._idle: list[tuple[Any, float]] = []  # (connection, when it was returned)
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    def _connect(self) -> Any:
        return adbc.connect(self._uri, autocommit=self._autocommit)

    def _reuse_or_connect(self, conn: Any, idle_since: float) -> Any:
        """``conn`` if it still answers (checked after a long idle), else a new one."""
        if time.monotonic() - idle_since < IDLE_CHECK_SECONDS:
            return conn
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchall()
            if not self._autocommit:
                conn.rollback()
            return conn
        except Exception:
            # The server restarted or dropped the session meanwhile.
            _close_quietly(conn)
            return self._connect()

    @asynccontextmanager
    async def lease(self, error: Callable[[BaseException], DomainError]) -> AsyncIterator[_Lease]:
        """A connection for the block; closed instead of reused if the block fails.

        ``error`` maps a failure to connect (refused, bad credentials ...).
        """
        async with self._slots:
            try:
                if self._idle:
                    conn = await self._run(self._reuse_or_connect, *self._idle.pop())
                else:
                    conn = await self._run(self._connect)
            except (adbc.Error, OSError) as exc:
                raise error(exc) from None
            lease = _Lease(conn)
            try:
                yield lease
            except BaseException:
                lease.reuse = False
                raise
            finally:
                if lease.reuse and not self._closed:
                    self._idle.append((conn, time.monotonic()))
                elif self._closed:
                    _close_quietly(conn)  # the threads may be gone
                else:
                    await self._run(_close_quietly, conn)

    async def close(self) -> None:
        """Close the idle connections; leased ones close when returned."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await self._run(_close_quietly, conn)


async def _settle(future: concurrent.futures.Future[Any]) -> None:
    """Wait for a worker to finish, ignoring its outcome (it was abandoned)."""
    wrapped = asyncio.wrap_future(future)
    await asyncio.wait([wrapped])
    if not wrapped.cancelled():
        wrapped.exception()  # retrieved, so asyncio does not report it as lost


def _close_quietly(obj: Any) -> None:
    with contextlib.suppress(Exception):
        obj.close()


class _Runner:
    """Runs blocking driver calls on the connection's own threads."""

    def __init__(self, executor: concurrent.futures.ThreadPoolExecutor) -> None:
        self.executor = executor

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self.executor.submit(fn, *args))

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        return self.executor.submit(fn, *args)


# --------------------------------------------------------------------------- connection


class PostgresConnection(Connection):
    """One configured PostgreSQL database."""

    def __init__(self, name: str, settings: PgSettings, description: str = "") -> None:
        super().__init__(name, TYPE_NAME, description)
        self.settings = settings
        size = settings.pool_size
        # Reads and writes each hold one thread per connection; a spare for opening them.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=2 * size + 2, thread_name_prefix=f"pg-{name}"
        )
        self._run = _Runner(self._executor)
        self._read_pool = _AdbcPool(settings.adbc_uri(read_only=True), size, True, self._run)
        self._write_pool = _AdbcPool(settings.adbc_uri(read_only=False), size, False, self._run)
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._ledger: TableName | None = None
        self._ledger_lock = threading.Lock()
        self._secrets = [s for s in (settings.password,) if s]

    # ------------------------------------------------------------------ basics

    def public_options(self) -> dict[str, str]:
        """Host, port, database and user: never the DSN or the password."""
        s = self.settings
        return {"host": s.host, "port": str(s.port), "database": s.database, "user": s.user}

    async def test(self) -> str:
        """Connect and return the server version."""
        async with self._metadata(Side.SOURCE, "the connection") as conn:
            version = await conn.fetchval("SHOW server_version")
            user, database = await conn.fetchrow("SELECT current_user, current_database()")
        s = self.settings
        return f"PostgreSQL {version} at {s.host}:{s.port}, database {database}, user {user}"

    async def close(self) -> None:
        """Close both ADBC pools, the asyncpg pool and the threads."""
        await self._read_pool.close()
        await self._write_pool.close()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), timeout=10)
            self._pool = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _asyncpg_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                s = self.settings
                self._pool = await asyncpg.create_pool(
                    host=s.host,
                    port=s.port,
                    user=s.user,
                    password=s.password,
                    database=s.database,
                    ssl=s.sslmode,
                    timeout=s.connect_timeout,
                    min_size=0,
                    max_size=s.pool_size,
                    server_settings={"application_name": APPLICATION_NAME, "TimeZone": "UTC"},
                )
            return self._pool

    @asynccontextmanager
    async def _metadata(
        self, side: Side, target: str, field: str = SOURCE_FIELD, query_field: str | None = None
    ) -> AsyncIterator[asyncpg.Connection]:
        """An asyncpg connection; driver errors become DomainErrors."""
        try:
            pool = await self._asyncpg_pool()
            async with pool.acquire(timeout=self.settings.connect_timeout) as conn:
                yield conn
        except DomainError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise self._error(exc, side, field, target, query_field) from None

    def _error(
        self,
        exc: BaseException,
        side: Side,
        field: str,
        target: str,
        query_field: str | None = None,
    ) -> DomainError:
        return map_error(
            exc, side, field=field, target=target, query_field=query_field, scrub=self._secrets
        )

    # ------------------------------------------------------------------ sources

    async def _relation(self, source: step_pb2.DatabaseSource) -> _Relation:
        """The table or query of ``source``, resolved and described."""
        table, query = source.table.strip(), source.query
        if table and query.strip():
            raise invalid_argument(
                "INVALID_QUERY",
                f"{SOURCE_FIELD}: set either table or query, not both",
                [FieldViolation(f"{SOURCE_FIELD}.query", "set either table or query, not both")],
            )
        if table:
            return await self._table_relation(table)
        if query.strip():
            return await self._query_relation(query)
        raise invalid_argument(
            "REQUIRED_FIELD_MISSING",
            f"{SOURCE_FIELD}: a table or a query is required",
            [FieldViolation(f"{SOURCE_FIELD}.table", "set a table or a query")],
        )

    async def _table_relation(self, text: str) -> _Relation:
        table_field = f"{SOURCE_FIELD}.table"
        target = f"table {text!r}"
        async with self._metadata(Side.SOURCE, target, table_field) as conn:
            try:
                oid = await conn.fetchval("SELECT to_regclass($1)::oid::int8", text)
            except asyncpg.PostgresError as exc:
                failure = describe_failure(exc)
                problem = failure.message if failure else str(exc)
                raise invalid_argument(
                    "INVALID_OPTION",
                    f"{table_field} {text!r} is not a valid table name: {problem}",
                    [FieldViolation(table_field, problem)],
                ) from None
            if oid is None:
                raise DomainError(
                    code=ErrorCode.NOT_FOUND,
                    reason="TABLE_NOT_FOUND",
                    message=f"{table_field}: table {text!r} does not exist",
                    metadata={"table": text},
                )
            row = await conn.fetchrow(RELATION_SQL, oid)
            allowed = await conn.fetchval("SELECT has_any_column_privilege($1::oid, 'SELECT')", oid)
            columns = await conn.fetch(COLUMNS_SQL, oid)
        rel_oid, schema, name, relkind, reltuples, pages = row
        table = TableName(schema, name)
        if not allowed:
            raise DomainError(
                code=ErrorCode.PERMISSION_DENIED,
                reason="ACCESS_DENIED",
                message=f"{table_field}: role {self.settings.user!r} may not read {table.display}",
                metadata={"table": table.display},
            )
        return _Relation(
            identity=f"table\x00{text}",
            display=f"table {table.display}",
            from_sql=table.sql,
            columns=tuple(PgColumn.from_row(tuple(c)) for c in columns),
            table=table,
            oid=rel_oid,
            relkind=relkind,
            reltuples=reltuples,
            pages=pages,
        )

    async def _query_relation(self, query: str) -> _Relation:
        query_field = f"{SOURCE_FIELD}.query"
        text = strip_query(query, query_field)
        async with self._metadata(Side.SOURCE, "the query", query_field, query_field) as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                # Preparing parses and plans without running; several statements are refused.
                statement = await conn.prepare(text)
                if statement.get_parameters():
                    raise invalid_argument(
                        "INVALID_QUERY",
                        f"{query_field} has parameters ($1 ...); write the values into the query",
                        [FieldViolation(query_field, "must not have parameters")],
                    )
                # A temporary view tells the exact column types (numeric(p,s) included)
                # and refuses anything that is not a single SELECT; rolled back below.
                try:
                    async with conn.transaction():  # a savepoint
                        view = await conn.prepare(
                            f'CREATE TEMP VIEW "_datadog_describe" AS\n{text}\n'
                        )
                        await view.fetch()
                except asyncpg.PostgresError as exc:
                    failure = describe_failure(exc)
                    if failure is None or failure.sqlstate not in _NO_TEMP_VIEW:
                        raise _not_a_select(query_field, failure, exc) from None
                    # A read-only standby or no TEMP privilege: types without modifiers.
                    attributes = statement.get_attributes()
                    names = [a.name for a in attributes]
                    duplicated = sorted({n for n in names if names.count(n) > 1})
                    if duplicated:
                        raise _not_a_select(query_field, None, exc, duplicated) from None
                    oids = [a.type.oid for a in attributes]
                    columns = await conn.fetch(RESULT_COLUMNS_SQL, names, oids)
                else:
                    oid = await conn.fetchval(
                        "SELECT 'pg_temp._datadog_describe'::regclass::oid::int8"
                    )
                    columns = await conn.fetch(COLUMNS_SQL, oid)
            finally:
                await tx.rollback()
        return _Relation(
            identity=f"query\x00{text}",
            display="the query",
            from_sql=f'(\n{text}\n) AS "_datadog_query"',
            columns=tuple(PgColumn.from_row(tuple(c)) for c in columns),
        )

    async def describe(self, source: step_pb2.DatabaseSource) -> SourceDescription:
        """The Arrow schema of a table or query, with the planner's row estimate for tables."""
        relation = await self._relation(source)
        schema = pa.schema([read_column(c).field for c in relation.columns])
        return SourceDescription(schema, relation.estimated_rows)

    async def plan_read(
        self, source: step_pb2.DatabaseSource, scope: ReadScope, max_splits: int
    ) -> ReadPlan:
        """Key ranges, page ranges or one ticket (see the module doc)."""
        relation = await self._relation(source)
        columns = [read_column(c) for c in relation.columns]
        schema = project_schema(pa.schema([c.field for c in columns]), scope.columns)
        # Refuse a bad predicate now rather than in every Read.
        predicate_sql(scope.predicate, {c.name: (c.filter_sql, c.field.type) for c in columns})
        splits = await self._splits(relation, max_splits)
        digest = _identity_digest(relation.identity)
        rows = relation.estimated_rows
        tickets = tuple(
            Ticket(
                _encode_ticket(digest, split),
                split.describe(),
                None if rows is None else math.ceil(rows / len(splits)),
            )
            for split in splits
        )
        return ReadPlan(schema, tickets)

    async def _splits(self, relation: _Relation, max_splits: int) -> list[_Split]:
        whole = [_Split("all")]
        if relation.table is None or relation.oid is None:
            return whole
        wanted = max_splits or self.settings.pool_size
        if wanted <= 1:
            return whole
        target = relation.display
        async with self._metadata(Side.SOURCE, target, f"{SOURCE_FIELD}.table") as conn:
            key = await conn.fetchval(INTEGER_KEY_SQL, relation.oid)
            if key is not None:
                low, high = await conn.fetchrow(
                    f"SELECT min({quote_ident(key)})::int8, max({quote_ident(key)})::int8 "
                    f"FROM {relation.table.sql}"
                )
        if key is not None:
            if low is None:
                return whole
            span = high - low + 1
            count = min(wanted, span)
            if not max_splits and relation.estimated_rows is not None:
                count = min(count, max(1, relation.estimated_rows // MIN_SPLIT_ROWS))
            return _ranges("pk", key, low, span, count)
        if relation.relkind not in _SPLITTABLE or relation.pages < 2:
            return whole
        count = min(wanted, relation.pages)
        if not max_splits:
            count = min(count, max(1, relation.pages // MIN_SPLIT_PAGES))
        return _ranges("ctid", None, 0, relation.pages, count)

    def _decode_ticket(self, relation: _Relation, ticket: bytes) -> _Split:
        if not ticket:
            return _Split("all")

        def bad(problem: str) -> DomainError:
            return invalid_argument(
                "INVALID_TICKET",
                f"ticket is not from PlanRead of this source: {problem}",
                [FieldViolation("ticket", problem)],
            )

        try:
            data = json.loads(ticket.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise bad("it does not decode") from None
        if not isinstance(data, dict) or data.get("v") != _TICKET_VERSION:
            raise bad("unknown ticket version")
        if data.get("src") != _identity_digest(relation.identity):
            raise bad("it was planned for another source")
        kind, column, low, high = data.get("kind"), data.get("col"), data.get("lo"), data.get("hi")
        for bound in (low, high):
            if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool)):
                raise bad("a bound is not an integer")
        if kind == "all":
            return _Split("all")
        if kind == "ctid" and relation.relkind in _SPLITTABLE:
            return _Split("ctid", None, low, high)
        names = {c.name for c in relation.columns}
        if kind == "pk" and isinstance(column, str) and column in names:
            return _Split("pk", column, low, high)
        raise bad("it does not match the source")

    # ------------------------------------------------------------------ reads

    @asynccontextmanager
    async def read(
        self, source: step_pb2.DatabaseSource, scope: ReadScope, ticket: bytes
    ) -> AsyncIterator[RecordStream]:
        """Stream one ticket (or the whole source) as Arrow batches."""
        relation = await self._relation(source)
        columns = [read_column(c) for c in relation.columns]
        schema = project_schema(pa.schema([c.field for c in columns]), scope.columns)
        by_name = {c.name: c for c in columns}
        selected = [by_name[name] for name in schema.names]
        conditions = []
        split = self._decode_ticket(relation, ticket).condition()
        if split is not None:
            conditions.append(split)
        conditions += predicate_sql(
            scope.predicate, {c.name: (c.filter_sql, c.field.type) for c in columns}
        )
        sql = (
            "SELECT "
            + ", ".join(f"{c.expression} AS {quote_ident(c.name)}" for c in selected)
            + f" FROM {relation.from_sql}"
        )
        if conditions:
            sql += " WHERE " + " AND ".join(f"({c})" for c in conditions)
        query_field = None if relation.table is not None else f"{SOURCE_FIELD}.query"

        def error(exc: BaseException) -> DomainError:
            return self._error(exc, Side.SOURCE, SOURCE_FIELD, relation.display, query_field)

        try:
            async with self._read_pool.lease(error) as lease:
                stream = _ReadStream(self._run, lease, sql, selected, schema, error)
                try:
                    await stream.open()
                    yield RecordStream(schema, stream.batches())
                finally:
                    await stream.close()
        except DomainError:
            raise
        except (adbc.Error, OSError) as exc:
            raise error(exc) from None

    # ------------------------------------------------------------------ writes

    async def write(
        self,
        sink: step_pb2.DatabaseSink,
        idempotency_key: str,
        schema: pa.Schema,
        batches: AsyncIterator[pa.RecordBatch],
    ) -> WriteOutcome:
        """Write every batch in one transaction with the ledger row (see the module doc)."""
        spec = _check_sink(sink, schema)
        loop = asyncio.get_running_loop()

        def error(exc: BaseException) -> DomainError:
            return self._error(exc, Side.SINK, f"{SINK_FIELD}.table", spec.table)

        async with self._write_pool.lease(error) as lease:
            job = _WriteJob(self, lease.conn, spec, idempotency_key, schema, batches, loop)
            future = self._run.submit(job.run)
            try:
                return await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                # The thread rolls back once it notices; the connection is not reused.
                lease.reuse = False
                job.abort()
                await _settle(future)
                raise
            except DomainError:
                raise
            except Exception as exc:
                lease.reuse = False
                if exc is job.failure:
                    raise  # the incoming stream broke: its own error, unchanged
                raise error(exc) from None

    def ledger_name(self, cursor: Any) -> TableName:
        """The ledger table, created on first use (thread side)."""
        with self._ledger_lock:
            if self._ledger is None:
                self._ledger = _ensure_ledger(cursor, self.settings.ledger_table)
            return self._ledger


# Why a temporary view of a query cannot be made: no privilege, a read-only standby.
_NO_TEMP_VIEW = frozenset({"42501", "25006"})


def _not_a_select(
    field: str, failure: Any, exc: BaseException, duplicated: list[str] | None = None
) -> DomainError:
    """INVALID_QUERY for a query a view cannot be made of."""
    problem = failure.message if failure is not None else str(exc)
    if duplicated or (failure is not None and failure.sqlstate == "42701"):
        names = f" ({', '.join(duplicated)})" if duplicated else ""
        problem = f"result columns must have distinct names{names}: {problem}"
    else:
        problem = f"it must be a single SELECT statement ({problem})"
    return invalid_argument(
        "INVALID_QUERY", f"{field} is not valid: {problem}", [FieldViolation(field, problem)]
    )


def _ranges(kind: str, column: str | None, start: int, span: int, count: int) -> list[_Split]:
    """``count`` equal ranges of ``[start, start + span)``, the first and last open-ended."""
    count = max(1, min(count, span))
    if count == 1:
        return [_Split(kind if kind == "ctid" else "pk", column, None, None)]
    bounds = [start + span * i // count for i in range(count + 1)]
    splits = []
    for i in range(count):
        low = None if i == 0 else bounds[i]
        high = None if i == count - 1 else bounds[i + 1]
        splits.append(_Split(kind, column, low, high))
    return splits


def _identity_digest(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _encode_ticket(digest: str, split: _Split) -> bytes:
    data = {"v": _TICKET_VERSION, "src": digest, "kind": split.kind}
    if split.column is not None:
        data["col"] = split.column
    if split.low is not None:
        data["lo"] = split.low
    if split.high is not None:
        data["hi"] = split.high
    return json.dumps(data, separators=(",", ":")).encode()


class _ReadStream:
    """One ADBC COPY read: batches decoded on a worker thread, one prefetched."""

    def __init__(
        self,
        run: _Runner,
        lease: _Lease,
        sql: str,
        columns: list[ReadColumn],
        schema: pa.Schema,
        error: Callable[[BaseException], DomainError],
    ) -> None:
        self._run = run
        self._lease = lease
        self._sql = sql
        self._columns = columns
        self._schema = schema
        self._error = error
        self._cursor: Any = None
        self._reader: Any = None
        self._rows = 0
        self._done = False
        self._pending: concurrent.futures.Future[pa.RecordBatch | None] | None = None

    def _open(self) -> None:
        self._cursor.execute(self._sql)
        self._reader = self._cursor.fetch_record_batch()

    async def open(self) -> None:
        """Run the query (errors such as a missing privilege surface here)."""
        # Made here (no I/O) so that a cancelled open can cancel the running statement.
        self._cursor = self._lease.conn.cursor()
        self._cursor.adbc_statement.set_options(
            **{"adbc.postgresql.batch_size_hint_bytes": str(READ_BATCH_BYTES)}
        )
        future = self._run.submit(self._open)
        try:
            await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self._lease.reuse = False
            with contextlib.suppress(Exception):
                self._cursor.adbc_cancel()
            await _settle(future)
            raise
        except Exception as exc:
            self._lease.reuse = False
            raise self._error(exc) from None

    def _next(self) -> pa.RecordBatch | None:
        try:
            batch = self._reader.read_next_batch()
        except StopIteration:
            self._done = True
            return None
        converted = conform_batch(batch, self._columns, self._schema, self._rows)
        self._rows += batch.num_rows
        return converted

    async def batches(self) -> AsyncIterator[pa.RecordBatch]:
        """The converted batches; the next one is decoded while this one is consumed."""
        self._pending = self._run.submit(self._next)
        while True:
            try:
                batch = await asyncio.wrap_future(self._pending)
            except DomainError:
                raise
            except Exception as exc:
                self._lease.reuse = False
                raise self._error(exc) from None
            if batch is None:
                return
            self._pending = self._run.submit(self._next)
            if batch.num_rows:
                yield batch

    def _cleanup(self) -> None:
        if not self._done and self._cursor is not None:
            # Stop the server streaming the rest of a COPY nobody will read.
            with contextlib.suppress(Exception):
                self._cursor.adbc_cancel()
        if self._reader is not None:
            _close_quietly(self._reader)
        if self._cursor is not None:
            _close_quietly(self._cursor)

    async def close(self) -> None:
        """Cancel an unfinished COPY, wait for the worker, release the cursor."""
        pending = self._pending
        if pending is not None and not pending.done():
            self._lease.reuse = False
            with contextlib.suppress(Exception):
                self._cursor.adbc_cancel()
            await _settle(pending)
        if not self._done:
            self._lease.reuse = False
        await self._run(self._cleanup)


# --------------------------------------------------------------------------- write job


@dataclass(frozen=True)
class _SinkSpec:
    table: str
    mode: int
    keys: tuple[str, ...]


_MODE = step_pb2.WriteMode


def _check_sink(sink: step_pb2.DatabaseSink, schema: pa.Schema) -> _SinkSpec:
    table_field = f"{SINK_FIELD}.table"
    if not sink.table.strip():
        raise invalid_argument(
            "REQUIRED_FIELD_MISSING",
            f"{table_field} is required",
            [FieldViolation(table_field, "must not be empty")],
        )
    mode = sink.mode or _MODE.WRITE_MODE_OVERWRITE
    if mode not in (_MODE.WRITE_MODE_OVERWRITE, _MODE.WRITE_MODE_APPEND, _MODE.WRITE_MODE_UPSERT):
        raise invalid_argument(
            "UNSUPPORTED_WRITE_MODE",
            f"{SINK_FIELD}.mode {mode} is not a write mode this server knows",
            [FieldViolation(f"{SINK_FIELD}.mode", "unknown write mode")],
        )
    names = schema.names
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise invalid_argument(
            "SINK_WRITE_ERROR",
            f"the data has duplicate column names: {', '.join(duplicated)}",
            [FieldViolation("schema", "duplicate column names")],
        )
    keys = tuple(sink.key_columns)
    keys_field = f"{SINK_FIELD}.key_columns"
    if mode == _MODE.WRITE_MODE_UPSERT:
        problem = None
        if not keys:
            problem = "UPSERT needs the key columns that identify a row"
        elif len(set(keys)) != len(keys):
            problem = "a key column is listed twice"
        else:
            missing = [k for k in keys if k not in names]
            if missing:
                problem = f"the data has no column(s) {', '.join(missing)}"
        if problem is not None:
            raise invalid_argument(
                "INVALID_OPTION", f"{keys_field}: {problem}", [FieldViolation(keys_field, problem)]
            )
    return _SinkSpec(sink.table.strip(), mode, keys)


def _rollback_quietly(cursor: Any) -> None:
    with contextlib.suppress(Exception):
        cursor.connection.rollback()


def _ensure_ledger(cursor: Any, name: str) -> TableName:
    """Resolve (and create if missing) the ledger table, in its own transaction."""
    table = _parse_table(cursor, name, "ledger_table")
    ddl = (
        f"CREATE TABLE IF NOT EXISTS {table.sql} ("
        "idempotency_key text PRIMARY KEY, target text NOT NULL, "
        "rows_written bigint NOT NULL, committed_at timestamptz NOT NULL DEFAULT now())"
    )
    try:
        cursor.execute(ddl)
        cursor.connection.commit()
    except adbc.Error as exc:
        _rollback_quietly(cursor)
        failure = describe_failure(exc)
        # Two first writers racing to create it: the loser finds it made.
        if failure is None or failure.sqlstate not in ("23505", "42P07"):
            raise
    return table


def _parse_table(cursor: Any, text: str, field: str) -> TableName:
    """A table name split by PostgreSQL's own rules (``parse_ident``), schema defaulted."""
    try:
        cursor.execute("SELECT parse_ident($1), current_schema(), current_database()", (text,))
        parts, current_schema, current_database = cursor.fetchone()
    except adbc.Error as exc:
        _rollback_quietly(cursor)
        failure = describe_failure(exc)
        if failure is not None and failure.sqlstate == "22023":
            raise invalid_argument(
                "INVALID_OPTION",
                f"{field} {text!r} is not a valid table name: {failure.message}",
                [FieldViolation(field, failure.message)],
            ) from None
        raise
    parts = list(parts)
    if len(parts) == 3 and parts[0] == current_database:
        parts = parts[1:]
    if len(parts) == 1:
        # An existing table is found along the search_path, a new one goes to its head.
        cursor.execute(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass($1)",
            (quote_ident(str(parts[0])),),
        )
        found = cursor.fetchone()
        if found is not None:
            return TableName(str(found[0]), str(parts[0]))
        if current_schema is None:
            raise invalid_argument(
                "INVALID_OPTION",
                f"{field} {text!r} has no schema and the search_path names none that exists",
                [FieldViolation(field, "qualify it with a schema")],
            )
        return TableName(str(current_schema), str(parts[0]))
    if len(parts) == 2:
        return TableName(str(parts[0]), str(parts[1]))
    raise invalid_argument(
        "INVALID_OPTION",
        f"{field} {text!r} is not a table name; use 'table' or 'schema.table'",
        [FieldViolation(field, "use 'table' or 'schema.table'")],
    )


class _Aborted(Exception):
    """The write was cancelled by its caller."""


class _WriteJob:
    """One write, run on a worker thread; batches are pulled from the event loop."""

    def __init__(
        self,
        connection: PostgresConnection,
        conn: Any,
        spec: _SinkSpec,
        key: str,
        schema: pa.Schema,
        batches: AsyncIterator[pa.RecordBatch],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._owner = connection
        self._conn = conn
        self._spec = spec
        self._key = key
        self._schema = schema
        self._batches = batches
        self._loop = loop
        self._rows = 0
        self.failure: BaseException | None = None  # raised by the incoming stream or a conversion
        self._aborted = threading.Event()
        self._pending: concurrent.futures.Future[pa.RecordBatch | None] | None = None
        self._table_field = f"{SINK_FIELD}.table"

    # -- loop side

    def abort(self) -> None:
        """Stop pulling batches (the caller was cancelled); the thread then rolls back."""
        self._aborted.set()
        pending = self._pending
        if pending is not None:
            pending.cancel()

    async def _anext(self) -> pa.RecordBatch | None:
        return await anext(self._batches, None)

    # -- thread side

    def _pull(self) -> pa.RecordBatch | None:
        """The next incoming batch (requesting the one after it ahead of time)."""
        if self._aborted.is_set():
            raise _Aborted("the write was cancelled")
        pending = self._pending or asyncio.run_coroutine_threadsafe(self._anext(), self._loop)
        try:
            batch = pending.result()
        except concurrent.futures.CancelledError:
            raise _Aborted("the write was cancelled") from None
        self._pending = None
        if batch is not None:
            self._pending = asyncio.run_coroutine_threadsafe(self._anext(), self._loop)
        return batch

    def _reader(self, plan: list[WriteColumn], staging: bool) -> pa.RecordBatchReader:
        fields = [pa.field(c.name, c.wire_type) for c in plan]
        if staging:
            fields.append(pa.field(ROW_COLUMN, pa.int64()))
        wire = pa.schema(fields)
        positions = [self._schema.get_field_index(c.name) for c in plan]

        def generate() -> Iterator[pa.RecordBatch]:
            try:
                while True:
                    batch = self._pull()
                    if batch is None:
                        return
                    if batch.num_rows == 0:
                        continue
                    arrays = [
                        convert_array(batch.column(i), c, self._rows)
                        for i, c in zip(positions, plan, strict=True)
                    ]
                    if staging:
                        start = self._rows + 1
                        arrays.append(pa.array(np.arange(start, start + batch.num_rows)))
                    self._rows += batch.num_rows
                    yield pa.RecordBatch.from_arrays(arrays, schema=wire)
            except BaseException as exc:
                # ADBC reports a generic stream error; keep ours to raise instead.
                self.failure = exc
                raise

        return pa.RecordBatchReader.from_batches(wire, generate())

    def run(self) -> WriteOutcome:
        """Claim the key, write, record, commit; roll back on any failure."""
        cursor = self._conn.cursor()
        try:
            return self._write(cursor)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self._conn.rollback()
            # The driver wraps a failure of the incoming stream; raise the original.
            cause = self.failure if self.failure is not None else exc
            if isinstance(cause, _Aborted):
                raise asyncio.CancelledError() from None
            if isinstance(cause, adbc.Error | OSError) and not isinstance(cause, ConnectionError):
                raise self._owner._error(
                    cause, Side.SINK, self._table_field, self._spec.table
                ) from None
            raise cause from None
        finally:
            pending = self._pending
            if pending is not None:
                pending.cancel()
            _close_quietly(cursor)

    def _write(self, cursor: Any) -> WriteOutcome:
        spec = self._spec
        ledger = self._owner.ledger_name(cursor)
        table = _parse_table(cursor, spec.table, self._table_field)
        location = f"postgres://{self._owner.name}/{table.display}"
        cursor.execute(
            f"INSERT INTO {ledger.sql} (idempotency_key, target, rows_written) "
            "VALUES ($1, $2, 0) ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1",
            (self._key, table.display),
        )
        if not cursor.fetchall():
            # Committed before (a concurrent writer of this key would have made us wait).
            cursor.execute(
                f"SELECT rows_written FROM {ledger.sql} WHERE idempotency_key = $1", (self._key,)
            )
            (rows,) = cursor.fetchone()
            self._conn.rollback()
            return WriteOutcome(int(rows), location, replayed=True)
        columns, created = self._target(cursor, table)
        plan = write_columns(self._schema, columns, table.display, self._table_field)
        upsert = spec.mode == _MODE.WRITE_MODE_UPSERT
        if spec.mode == _MODE.WRITE_MODE_OVERWRITE and not created:
            cursor.execute(f"TRUNCATE {table.sql}")
        if not upsert and all(c.direct for c in plan):
            cursor.adbc_ingest(
                table.name, self._reader(plan, staging=False), "append", db_schema_name=table.schema
            )
            rows = self._rows
        else:
            rows = self._staged(cursor, table, plan, upsert)
        cursor.execute(
            f"UPDATE {ledger.sql} SET rows_written = $1, committed_at = now() "
            "WHERE idempotency_key = $2",
            (rows, self._key),
        )
        self._conn.commit()
        return WriteOutcome(rows, location)

    def _target(self, cursor: Any, table: TableName) -> tuple[list[PgColumn], bool]:
        """The target's columns, creating the table from the Arrow schema if missing."""
        lookup = (
            "SELECT c.oid::int8, c.relkind::text FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2"
        )
        cursor.execute(lookup, (table.schema, table.name))
        found = cursor.fetchone()
        created = found is None
        if created:
            self._create(cursor, table)
            cursor.execute(lookup, (table.schema, table.name))
            found = cursor.fetchone()
        oid, relkind = found
        if not created and relkind not in _TABLE_KINDS:
            raise invalid_argument(
                "INVALID_OPTION",
                f"{self._table_field}: {table.display} is not a table",
                [FieldViolation(self._table_field, "not a table")],
            )
        cursor.execute(COLUMNS_SQL, (oid,))
        return [PgColumn.from_row(r) for r in cursor.fetchall()], created

    def _create(self, cursor: Any, table: TableName) -> None:
        definitions = []
        for arrow_field in self._schema:
            sql_type = ddl_type(arrow_field, self._table_field)
            null = "" if arrow_field.nullable else " NOT NULL"
            definitions.append(f"{quote_ident(arrow_field.name)} {sql_type}{null}")
        if self._spec.mode == _MODE.WRITE_MODE_UPSERT:
            keys = ", ".join(quote_ident(k) for k in self._spec.keys)
            definitions.append(f"PRIMARY KEY ({keys})")
        cursor.execute(f"CREATE TABLE {table.sql} ({', '.join(definitions)})")

    def _staged(self, cursor: Any, table: TableName, plan: list[WriteColumn], upsert: bool) -> int:
        """COPY into a temporary table, then INSERT ... SELECT (with casts, ON CONFLICT)."""
        stage = f"_datadog_stage_{secrets.token_hex(6)}"
        staged = f"pg_temp.{quote_ident(stage)}"
        cursor.adbc_ingest(stage, self._reader(plan, staging=True), "create", temporary=True)
        names = ", ".join(quote_ident(c.name) for c in plan)
        values = ", ".join(c.cast_sql for c in plan)
        row = quote_ident(ROW_COLUMN)
        if upsert:
            by_name = {c.name: c for c in plan}
            key_exprs = ", ".join(by_name[k].cast_sql for k in self._spec.keys)
            key_names = ", ".join(quote_ident(k) for k in self._spec.keys)
            updates = ", ".join(
                f"{quote_ident(c.name)} = EXCLUDED.{quote_ident(c.name)}"
                for c in plan
                if c.name not in self._spec.keys
            )
            action = f"UPDATE SET {updates}" if updates else "NOTHING"
            # The last row of a key wins, as if the rows were applied in order.
            sql = (
                f"INSERT INTO {table.sql} ({names}) SELECT DISTINCT ON ({key_exprs}) {values} "
                f"FROM {staged} ORDER BY {key_exprs}, {row} DESC "
                f"ON CONFLICT ({key_names}) DO {action}"
            )
        else:
            sql = f"INSERT INTO {table.sql} ({names}) SELECT {values} FROM {staged} ORDER BY {row}"
        # Through a guard that catches a refused value without aborting the transaction,
        # so the row can be located afterwards (ADBC runs nothing in an aborted one).
        cursor.execute(_GUARD_FUNCTION)
        cursor.execute("SELECT * FROM pg_temp.datadog_guarded($1)", (sql,))
        rows, state, message, column = cursor.fetchone()
        if state is not None:
            located = _locate_bad_value(cursor, staged, plan, column)
            raise located or value_out_of_range(column, None, message)
        cursor.execute(f"DROP TABLE {staged}")
        return int(rows)


# Runs one statement; a refused value (data exception, NOT NULL or CHECK violation) is
# returned instead of raised: the exception block makes it a subtransaction.
_GUARD_FUNCTION = """
CREATE OR REPLACE FUNCTION pg_temp.datadog_guarded(statement text)
RETURNS TABLE (row_count bigint, sqlstate text, message text, column_name text)
LANGUAGE plpgsql AS $guard$
DECLARE
  affected bigint;
  refused_column text;
BEGIN
  EXECUTE statement;
  GET DIAGNOSTICS affected = ROW_COUNT;
  RETURN QUERY SELECT affected, NULL::text, NULL::text, NULL::text;
EXCEPTION WHEN data_exception OR not_null_violation OR check_violation THEN
  GET STACKED DIAGNOSTICS refused_column = COLUMN_NAME;
  RETURN QUERY SELECT NULL::bigint, SQLSTATE::text, SQLERRM::text, nullif(refused_column, '');
END
$guard$
"""


def _locate_bad_value(
    cursor: Any, staged: str, plan: list[WriteColumn], column_name: str | None
) -> DomainError | None:
    """Which column and row of the staged data the target refuses (bisecting with probes).

    A probe inserts a range of one column, cast as the merge casts it, into a
    temporary table of the target column's type and constraints, through the guard.
    """
    row = quote_ident(ROW_COLUMN)

    def refused(column: WriteColumn, low: int, high: int) -> str | None:
        cursor.execute("TRUNCATE pg_temp._datadog_probe")
        probe = (
            f"INSERT INTO pg_temp._datadog_probe SELECT {column.cast_sql} FROM {staged} "
            f"WHERE {row} BETWEEN {int(low)} AND {int(high)}"
        )
        cursor.execute("SELECT message FROM pg_temp.datadog_guarded($1)", (probe,))
        return cursor.fetchone()[0]

    cursor.execute(f"SELECT coalesce(max({row}), 0) FROM {staged}")
    (last,) = cursor.fetchone()
    candidates = [c for c in plan if c.name == column_name] or plan
    for column in candidates:
        null = " NOT NULL" if column.target.not_null else ""
        cursor.execute("DROP TABLE IF EXISTS pg_temp._datadog_probe")
        cursor.execute(f"CREATE TEMP TABLE _datadog_probe (v {column.target.sql_type}{null})")
        message = refused(column, 1, last)
        if message is None:
            continue
        low, high = 1, last
        while low < high:
            middle = (low + high) // 2
            found = refused(column, low, middle)
            if found is not None:
                high, message = middle, found
            else:
                low = middle + 1
        return value_out_of_range(column.name, low, message)
    return None

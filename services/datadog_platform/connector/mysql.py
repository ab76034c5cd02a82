"""The MySQL / MariaDB connector (asyncmy, asyncio): tables and queries in, tables out.

Connection options (``type: mysql``)::

    shop:
      type: mysql
      host: 127.0.0.1
      port: 3306                  # default
      user: etl
      password: ${env:SHOP_PASSWORD}
      database: shop
      connect_timeout: 10         # seconds
      pool_size: 4                # connections per connection (reads of splits run in parallel)
      ledger_table: _datadog_write_ledger
      charset: utf8mb4
      load_data_local: true       # bulk writes with LOAD DATA LOCAL INFILE when the server allows

Every session runs with ``sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'`` (a
value that does not fit is an error, never silently clipped) and ``time_zone =
'+00:00'`` (TIMESTAMP columns read and write as UTC).

Reading (``DatabaseSource``): a table (``orders`` or ``shop.orders``) or one SELECT
statement, streamed with an unbuffered cursor and converted to Arrow in blocks of
64k rows off the event loop (``mysql_types`` has the type mapping). Projection and
predicates are pushed into the SQL (backtick-quoted identifiers, escaped literals);
a query is then wrapped as a derived table. Queries run in a READ ONLY transaction.
A table with a single-column integer primary key is split into key ranges (the first
and last ranges open-ended, so rows added after planning are read once); anything
else is one ticket. ``describe`` takes the schema from a ``LIMIT 0`` execution (one
type mapping for tables and queries) and the estimate from
``information_schema.tables.table_rows``.

Writing (``DatabaseSink``): one transaction holding the rows and a row of the ledger
table ``(idempotency_key, target, rows_written, committed_at)``. The ledger row is
inserted first: a key already committed (or being committed by a concurrent write,
which the insert waits for) is a duplicate, so the transaction is rolled back and the
original count reported with ``replayed=True``. OVERWRITE deletes the rows in the same
transaction (TRUNCATE would commit), APPEND adds, UPSERT is ``INSERT ... ON DUPLICATE
KEY UPDATE`` and requires ``key_columns`` to be exactly the primary key or a unique key
of the table. A missing table is created from the Arrow schema before the transaction
(DDL commits implicitly) and dropped again if the write fails while it is still empty.
Only transactional (InnoDB) tables are written.

The bulk path was chosen by measurement on this machine (2 cores; 1M rows x 6 columns
into an InnoDB table with a primary key, client and server sharing the cores):
``LOAD DATA LOCAL INFILE`` fed from memory ~350k rows/s, multi-row INSERTs built
with Arrow kernels ~240k rows/s, the driver's ``executemany`` 66k rows/s (text) and
129k rows/s (MariaDB binary bulk). APPEND and OVERWRITE use LOAD DATA when the
server's ``local_infile`` is on (else INSERTs); UPSERT uses INSERT ... ON DUPLICATE
KEY UPDATE. ``LOAD DATA LOCAL`` turns data errors into warnings (the server cannot
stop the upload), so every chunk's warnings are read back and any warning fails the
write. asyncmy's own LOCAL INFILE handler is replaced process-wide (it fails on the
file name, and would send any local file a server asks for): ours serves only the
in-memory chunks this connector offered on that same connection. Reads stream at
~1.0-1.2M rows/s per stream (the ``mysql`` client itself: ~1.2M rows/s); on 2 cores
several splits are not faster than one, they pay off with more cores or executors.

Error reasons raised here (besides those of ``mysql_sql`` and ``base``):

- ``CONFIG_INVALID`` (INVALID_ARGUMENT): a bad connection option.
- ``AUTHENTICATION_FAILED`` (UNAUTHENTICATED): the server refused the user/password.
- ``ACCESS_DENIED`` (PERMISSION_DENIED): the user lacks a privilege.
- ``DATABASE_NOT_FOUND`` / ``TABLE_NOT_FOUND`` (NOT_FOUND).
- ``INVALID_OPTION`` (INVALID_ARGUMENT): a bad source/sink field (named), e.g. both or
  neither of table and query, or ``key_columns`` that are not a unique key.
- ``INVALID_QUERY`` (INVALID_ARGUMENT, naming ``source.database.query``): the server
  rejected the query, or it is not a single SELECT.
- ``INVALID_TICKET`` (INVALID_ARGUMENT): a ticket this connector did not plan.
- ``UNKNOWN_COLUMN`` (INVALID_ARGUMENT): projection, predicate or written column
  that the table does not have.
- ``MISSING_COLUMN`` (INVALID_ARGUMENT): the data lacks a NOT NULL column of the
  table that has no default.
- ``VALUE_OUT_OF_RANGE`` (INVALID_ARGUMENT): a written value does not fit its column;
  names the column and the row (counted from 1 over the whole write), also in
  metadata ``column`` and ``row``.
- ``DUPLICATE_KEY`` (ALREADY_EXISTS): an appended row repeats a unique key.
- ``NON_TRANSACTIONAL_TABLE`` (FAILED_PRECONDITION): the target is not InnoDB, or a view.
- ``SINK_WRITE_ERROR`` (INVALID_ARGUMENT): a column type no MySQL column can hold.
- ``SOURCE_PARSE_ERROR`` (INVALID_ARGUMENT): a value the reader cannot convert.
- ``SOURCE_UNAVAILABLE`` / ``SINK_UNAVAILABLE`` (UNAVAILABLE): unreachable, refused,
  timed out, connection lost, too many connections, lock wait timeout or deadlock.
- ``DATABASE_ERROR`` (INTERNAL): any other server error (its code in metadata).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncmy
import asyncmy.connection
import asyncmy.errors
import pyarrow as pa
import pyarrow.compute as pc
from asyncmy import converters as asyncmy_converters
from asyncmy.cursors import SSCursor

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
from datadog_platform.connector.mysql_sql import (
    TableRef,
    check_select,
    parse_table_name,
    predicate_sql,
    quote_identifier,
    sql_literal,
)
from datadog_platform.connector.mysql_types import (
    ColumnMeta,
    NonFiniteValue,
    RowConverter,
    RowEncoder,
    column_definition,
    driver_conversions,
)
from datadog_platform.core.errors import (
    DomainError,
    ErrorCode,
    FieldViolation,
    already_exists,
    failed_precondition,
    internal,
    invalid_argument,
    not_found,
    permission_denied,
)

CONNECTION_TYPE = "mysql"
DEFAULT_LEDGER_TABLE = "_datadog_write_ledger"
SESSION_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"
#: Rows per Arrow batch of a read.
READ_BATCH_ROWS = 65_536
#: A split is not worth a connection below this many rows.
MIN_ROWS_PER_SPLIT = 50_000
#: Rows and bytes per LOAD DATA statement of a write.
LOAD_CHUNK_ROWS = 65_536
LOAD_CHUNK_BYTES = 16 << 20
#: Upper bound of one INSERT statement (also kept under the server's max_allowed_packet).
INSERT_STATEMENT_BYTES = 4 << 20
#: Size of the packets that carry LOAD DATA LOCAL content.
LOCAL_INFILE_PACKET_BYTES = 1 << 20
_LEDGER_KEY_LENGTH = 255
_UTF8_CHARSETS = frozenset({"utf8mb4", "utf8mb3", "utf8"})
_TRANSACTIONAL_ENGINES = frozenset({"INNODB", "ROCKSDB", "TOKUDB"})
_TICKET_VERSION = 1
_INTEGER_DATA_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "bigint"})

_WM = step_pb2.WriteMode
_MODE_NAMES = {
    _WM.WRITE_MODE_OVERWRITE: "overwrite",
    _WM.WRITE_MODE_APPEND: "append",
    _WM.WRITE_MODE_UPSERT: "upsert",
}

# Server error codes (client errors are 2000-2999).
_AUTH_ERRORS = frozenset({1045, 1698})
_ACCESS_ERRORS = frozenset({1044, 1142, 1143, 1227, 1370})
_UNAVAILABLE_ERRORS = frozenset({1040, 1053, 1205, 1213, 1927, 3024, 1969})
_VALUE_ERRORS = frozenset(
    {1048, 1101, 1263, 1264, 1265, 1292, 1300, 1366, 1367, 1406, 1411, 3819, 4025}
)
_DUPLICATE_KEY = 1062
_NO_SUCH_TABLE = 1146
_BAD_DATABASE = 1049
_TABLE_EXISTS = 1050
_SELF_FILLING = re.compile(r"auto_increment|generated|virtual|persistent|stored", re.IGNORECASE)
_AT_ROW = re.compile(r" at row (\d+)")
_COLUMN_NAMED = re.compile(r"column ((?:[`'\"][^`'\"]*[`'\"]\.?)+)", re.IGNORECASE)


# --------------------------------------------------------------------------- options

OPTIONS = (
    OptionSpec("host", "string", "server host name or address", required=True),
    OptionSpec("port", "integer", "server TCP port", default="3306"),
    OptionSpec("user", "string", "user to log in as", required=True),
    OptionSpec("password", "string", "password of the user", secret=True),
    OptionSpec("database", "string", "default database (schema)", required=True),
    OptionSpec("connect_timeout", "number", "seconds to wait for a connection", default="10"),
    OptionSpec("pool_size", "integer", "most open connections at once", default="4"),
    OptionSpec(
        "ledger_table",
        "string",
        "table recording committed idempotency keys ([database.]table), created on first write",
        default=DEFAULT_LEDGER_TABLE,
    ),
    OptionSpec(
        "charset", "string", "connection character set (utf8mb4 or utf8mb3)", default="utf8mb4"
    ),
    OptionSpec(
        "load_data_local",
        "boolean",
        "bulk-load appends and overwrites with LOAD DATA LOCAL INFILE when the server "
        "allows it (else multi-row INSERTs)",
        default="true",
    ),
)

INFO = TypeInfo(
    type=CONNECTION_TYPE,
    description=(
        "MySQL or MariaDB tables and SELECT queries: streamed reads split by primary-key "
        "ranges, projection and predicate pushdown, transactional exactly-once writes "
        "(append, overwrite, upsert)"
    ),
    capabilities=frozenset(Capability),
    options=OPTIONS,
)


@dataclass(frozen=True)
class MysqlSettings:
    """A connection's options, checked."""

    host: str
    port: int
    user: str
    database: str
    password: str = field(default="", repr=False)
    connect_timeout: float = 10.0
    pool_size: int = 4
    ledger_table: str = DEFAULT_LEDGER_TABLE
    charset: str = "utf8mb4"
    load_data_local: bool = True

    @property
    def ledger(self) -> TableRef:
        return parse_table_name(self.ledger_table, "ledger_table")


def parse_settings(options: Mapping[str, Any]) -> MysqlSettings:
    """Settings from a config entry; CONFIG_INVALID naming the option."""
    known = {spec.name for spec in OPTIONS}
    unknown = sorted(set(options) - known - {"description"})
    if unknown:
        raise option_error(unknown[0], f"is not an option of mysql ({', '.join(sorted(known))})")

    def text(name: str, default: str | None = None) -> str:
        value = options.get(name)
        if value is None:
            value = default
        if value is None:
            raise option_error(name, "is required")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise option_error(name, "must be a string")
        return str(value)

    def integer(name: str, default: int, low: int, high: int) -> int:
        value = options.get(name, default)
        try:
            number = int(str(value).strip()) if not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise option_error(name, f"must be an integer from {low} to {high}")
        return number

    timeout = options.get("connect_timeout", 10)
    try:
        connect_timeout = float(timeout) if not isinstance(timeout, bool) else -1.0
    except (TypeError, ValueError):
        connect_timeout = -1.0
    if not 1 <= connect_timeout <= 3600:
        raise option_error("connect_timeout", "must be a number of seconds from 1 to 3600")
    load_data = options.get("load_data_local", True)
    if isinstance(load_data, str):
        load_data = load_data.strip().lower() in {"true", "yes", "on", "1"}
    settings = MysqlSettings(
        host=text("host"),
        port=integer("port", 3306, 1, 65535),
        user=text("user"),
        password=text("password", ""),
        database=text("database"),
        connect_timeout=connect_timeout,
        pool_size=integer("pool_size", 4, 1, 1000),
        ledger_table=text("ledger_table", DEFAULT_LEDGER_TABLE),
        charset=text("charset", "utf8mb4"),
        load_data_local=bool(load_data),
    )
    if not settings.host.strip():
        raise option_error("host", "must not be empty")
    if not settings.database.strip():
        raise option_error("database", "must not be empty")
    if settings.charset.lower() not in _UTF8_CHARSETS:
        # Arrow strings are UTF-8: values are passed through, validated, never transcoded.
        raise option_error("charset", f"must be one of {', '.join(sorted(_UTF8_CHARSETS))}")
    try:
        settings.ledger  # noqa: B018 - validates the name
    except DomainError as exc:
        raise option_error("ledger_table", exc.message) from None
    return settings


class MysqlConnectorType(ConnectorType):
    """Connections to MySQL and MariaDB servers."""

    spec_kind = "database"
    info = INFO

    def create(self, name: str, options: Mapping[str, Any], base_dir: Path) -> MysqlConnection:
        return MysqlConnection(name, parse_settings(options))


MYSQL_CONNECTOR_TYPE = MysqlConnectorType()


# --------------------------------------------------------------------------- LOCAL INFILE

# In-memory "files" offered to LOAD DATA LOCAL: name -> (connection, chunks).
_LOCAL_FILES: dict[str, tuple[Any, Sequence[bytes]]] = {}


class _InMemoryLocalFile:
    """Stands in for ``asyncmy.connection.LoadLocalFile``: sends only data we offered.

    asyncmy's class passes the requested name as bytes to ``open`` (and fails) and
    would send any file a server asks for; a name must be registered here, by the
    same connection, to be served.
    """

    def __init__(self, filename: str | bytes, connection: Any) -> None:
        self.name = filename.decode("utf-8", "replace") if isinstance(filename, bytes) else filename
        self.connection = connection

    async def send_data(self) -> None:
        conn = self.connection
        entry = _LOCAL_FILES.get(self.name)
        try:
            if entry is None or entry[0] is not conn:
                raise asyncmy.errors.OperationalError(
                    2000, "LOAD DATA LOCAL refused: the connector did not offer that file"
                )
            for chunk in entry[1]:
                for start in range(0, len(chunk), LOCAL_INFILE_PACKET_BYTES):
                    conn.write_packet(chunk[start : start + LOCAL_INFILE_PACKET_BYTES])
                    await conn._proto.drain()
        finally:
            # An empty packet ends the upload, also after a failure.
            conn.write_packet(b"")
            await conn._proto.drain()


LOCAL_INFILE_SUPPORTED = hasattr(asyncmy.connection, "LoadLocalFile")
if LOCAL_INFILE_SUPPORTED:
    asyncmy.connection.LoadLocalFile = _InMemoryLocalFile  # type: ignore[attr-defined,misc]


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class _Source:
    table: TableRef | None
    query: str | None
    field: str  # the request field naming the table or query, for errors


@dataclass(frozen=True)
class _Sink:
    table: TableRef
    mode: int
    key_columns: tuple[str, ...]


@dataclass(frozen=True)
class _Range:
    """One split of a table: ``lo <= column < hi`` (a bound may be open)."""

    column: str
    lo: int | None
    hi: int | None

    def sql(self) -> str:
        column = quote_identifier(self.column)
        parts = []
        if self.lo is not None:
            parts.append(f"{column} >= {self.lo}")
        if self.hi is not None:
            parts.append(f"{column} < {self.hi}")
        return " AND ".join(parts) or "1=1"

    def describe(self) -> str:
        lo = "" if self.lo is None else f"{self.lo} <= "
        hi = "" if self.hi is None else f" < {self.hi}"
        return f"{lo}{self.column}{hi}"


@dataclass(frozen=True)
class _TargetTable:
    table: TableRef
    created: bool
    columns: tuple[str, ...]
    not_null: frozenset[str]  # lower-cased names of NOT NULL columns that take no NULL


def _source_spec(source: Any) -> _Source:
    if not isinstance(source, step_pb2.DatabaseSource):
        raise invalid_argument(
            "INVALID_OPTION", "a mysql connection reads database sources (source.database)"
        )
    table, query = source.table.strip(), source.query
    if bool(table) == bool(query):
        problem = "set exactly one of table and query"
        raise invalid_argument(
            "INVALID_OPTION",
            f"source.database: {problem}",
            [FieldViolation("source.database.table", problem)],
        )
    if table:
        field_name = "source.database.table"
        return _Source(parse_table_name(table, field_name), None, field_name)
    field_name = "source.database.query"
    return _Source(None, check_select(query, field_name), field_name)


def _sink_spec(sink: Any) -> _Sink:
    if not isinstance(sink, step_pb2.DatabaseSink):
        raise invalid_argument(
            "INVALID_OPTION", "a mysql connection writes database sinks (sink.database)"
        )
    where = "header.sink.database"
    if not sink.table.strip():
        raise invalid_argument(
            "INVALID_OPTION",
            f"{where}.table is required",
            [FieldViolation(f"{where}.table", "must not be empty")],
        )
    table = parse_table_name(sink.table.strip(), f"{where}.table")
    mode = sink.mode or _WM.WRITE_MODE_OVERWRITE
    if mode not in _MODE_NAMES:
        raise invalid_argument(
            "INVALID_OPTION",
            f"{where}.mode {mode} is not a write mode",
            [FieldViolation(f"{where}.mode", "unknown write mode")],
        )
    keys = tuple(sink.key_columns)
    if mode == _WM.WRITE_MODE_UPSERT and not keys:
        problem = "UPSERT needs key_columns: a primary or unique key of the table"
        raise invalid_argument(
            "INVALID_OPTION",
            f"{where}.key_columns: {problem}",
            [FieldViolation(f"{where}.key_columns", problem)],
        )
    return _Sink(table, mode, keys)


def _ledger_key(idempotency_key: str) -> str:
    """The key as stored: long keys are replaced by their SHA-256 (the column is 255 wide)."""
    if len(idempotency_key) <= _LEDGER_KEY_LENGTH:
        return idempotency_key
    return "sha256:" + hashlib.sha256(idempotency_key.encode()).hexdigest()


# --------------------------------------------------------------------------- sessions


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _is_server_error(exc: BaseException) -> bool:
    """An error packet from the server: the session is still usable afterwards."""
    if not isinstance(exc, asyncmy.errors.MySQLError):
        return False
    code = _code(exc)
    return code is not None and code > 0 and not 2000 <= code < 3000


def _code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class _Session:
    """One pooled connection and whether its protocol state is clean."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.usable = True

    async def run(self, sql: str | bytes) -> int:
        """Execute one statement; the result (if any) is in :meth:`rows`/:meth:`fields`."""
        self.usable = False
        try:
            affected = await self.conn.query(sql)
        except BaseException as exc:
            self.usable = _is_server_error(exc)
            raise
        self.usable = True
        return int(affected or 0)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of a (small) result, values as text (None for NULL)."""
        await self.run(sql)
        return [tuple(_text(v) for v in row) for row in self.conn._result.rows or ()]

    async def fields(self, sql: str) -> list[ColumnMeta]:
        await self.run(sql)
        return [ColumnMeta.of(f) for f in self.conn._result.fields or ()]

    @property
    def warning_count(self) -> int:
        result = getattr(self.conn, "_result", None)
        return int(getattr(result, "warning_count", 1) or 0)

    @property
    def in_transaction(self) -> bool:
        return bool(getattr(self.conn, "server_status", 0) & 1)


# --------------------------------------------------------------------------- connection


class MysqlConnection(Connection):
    """A named MySQL/MariaDB connection: a lazily created pool of sessions."""

    def __init__(self, name: str, settings: MysqlSettings, description: str = "") -> None:
        super().__init__(name, CONNECTION_TYPE, description)
        self.settings = settings
        self._pool: Any = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        self._ledger_ready = False
        self._server: dict[str, Any] = {}

    # ---------------------------------------------------------------- basics

    def public_options(self) -> dict[str, str]:
        s = self.settings
        return {
            "host": s.host,
            "port": str(s.port),
            "user": s.user,
            "database": s.database,
            "connect_timeout": f"{s.connect_timeout:g}",
            "pool_size": str(s.pool_size),
            "ledger_table": s.ledger_table,
            "charset": s.charset,
            "load_data_local": "true" if s.load_data_local else "false",
        }

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    async def test(self) -> str:
        async with self._session("connection") as session:
            version = (await session.rows("SELECT VERSION(), DATABASE(), CURRENT_USER()"))[0]
        return f"server {version[0]} at {self.address}, database {version[1]}, user {version[2]}"

    async def close(self) -> None:
        pool, self._pool, self._pool_loop = self._pool, None, None
        if pool is None:
            return
        pool.terminate()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.wait_closed(), timeout=5)

    def _get_pool(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool_loop is not loop:
            if self._pool is not None:
                # A pool belongs to the loop that made it (tests run one loop per test).
                with contextlib.suppress(Exception):
                    self._pool.terminate()
            s = self.settings
            init = (
                f"SET SESSION sql_mode = '{SESSION_SQL_MODE}', time_zone = '+00:00', "
                "net_write_timeout = 3600"
            )
            self._pool = asyncmy.Pool(
                minsize=0,
                maxsize=s.pool_size,
                pool_recycle=3600,
                host=s.host,
                port=s.port,
                user=s.user,
                password=s.password,
                database=s.database,
                charset=s.charset,
                connect_timeout=s.connect_timeout,
                autocommit=True,
                init_command=init,
                # Values arrive as the bytes sent; mysql_types converts them column-wise.
                conv=driver_conversions(asyncmy_converters.conversions),
                use_unicode=False,
                local_infile=s.load_data_local and LOCAL_INFILE_SUPPORTED,
            )
            self._pool_loop = loop
        return self._pool

    @asynccontextmanager
    async def _session(self, role: str) -> AsyncIterator[_Session]:
        """A pooled session; closed instead of reused if it ends in an unclean state."""
        pool = self._get_pool()
        # Bound the wait only when a new session is opened (the driver's connect timeout
        # does not cover the handshake); waiting for a busy pool is backpressure.
        opening = pool.freesize == 0 and pool.size < pool.maxsize
        try:
            async with asyncio.timeout(self.settings.connect_timeout * 2 + 5 if opening else None):
                conn = await pool.acquire()
        except DomainError:
            raise
        except Exception as exc:
            raise self._error(exc, role) from None
        session = _Session(conn)
        try:
            yield session
        finally:
            if not session.usable or session.in_transaction:
                # The server stops streaming and rolls back when the socket closes.
                conn.close()
            pool.release(conn)

    async def _server_setting(self, session: _Session, name: str) -> str:
        if name not in self._server:
            self._server[name] = str((await session.rows(f"SELECT @@{name}"))[0][0])
        return str(self._server[name])

    # ---------------------------------------------------------------- reading

    async def describe(self, source: Any) -> SourceDescription:
        spec = _source_spec(source)
        async with self._session("source") as session:
            try:
                columns = await self._source_columns(session, spec)
                estimate = None
                if spec.table is not None:
                    estimate = await self._table_rows(session, spec.table)
            except DomainError:
                raise
            except Exception as exc:
                raise self._error(exc, "source", spec) from None
        return SourceDescription(RowConverter(columns).schema, estimate)

    async def plan_read(self, source: Any, scope: ReadScope, max_splits: int) -> ReadPlan:
        spec = _source_spec(source)
        async with self._session("source") as session:
            try:
                columns = await self._source_columns(session, spec)
                schema = project_schema(RowConverter(columns).schema, scope.columns)
                predicate_sql(scope.predicate, [c.name for c in columns])
                if spec.table is None:
                    return ReadPlan(schema, (Ticket(b"", "the whole query"),))
                estimate = await self._table_rows(session, spec.table)
                ranges = await self._ranges(session, spec.table, estimate, max_splits)
            except DomainError:
                raise
            except Exception as exc:
                raise self._error(exc, "source", spec) from None
        if len(ranges) <= 1:
            return ReadPlan(schema, (Ticket(b"", "the whole table", estimate),))
        per_split = None if estimate is None else max(1, estimate // len(ranges))
        table = spec.table.display(self.settings.database)
        tickets = tuple(
            Ticket(_encode_ticket(table, r), f"{table} where {r.describe()}", per_split)
            for r in ranges
        )
        return ReadPlan(schema, tickets)

    def read(
        self, source: Any, scope: ReadScope, ticket: bytes
    ) -> contextlib.AbstractAsyncContextManager[RecordStream]:
        return self._read(source, scope, ticket)

    @asynccontextmanager
    async def _read(
        self, source: Any, scope: ReadScope, ticket: bytes
    ) -> AsyncIterator[RecordStream]:
        spec = _source_spec(source)
        split = None
        if ticket:
            if spec.table is None:
                raise _bad_ticket("a query is read whole: its plan has no tickets")
            split = _decode_ticket(ticket, spec.table.display(self.settings.database))
        async with self._session("source") as session:
            try:
                where: list[str] = []
                if scope.columns or scope.predicate.all_of:
                    columns = await self._source_columns(session, spec)
                    project_schema(RowConverter(columns).schema, scope.columns)
                    condition = predicate_sql(scope.predicate, [c.name for c in columns])
                    if condition:
                        where.append(condition)
                if split is not None:
                    where.append(split.sql())
                sql = self._select(spec, scope.columns, where)
                # A query cannot write, even one that slips past the lexical check.
                await session.run("START TRANSACTION READ ONLY")
                cursor = session.conn.cursor(SSCursor)
                session.usable = False  # until the result has been read to its end
                await cursor.execute(sql)
                converter = RowConverter([ColumnMeta.of(f) for f in cursor._result.fields])
            except DomainError:
                raise
            except Exception as exc:
                raise self._error(exc, "source", spec) from None
            _check_unique_names(converter.schema, spec)
            yield RecordStream(converter.schema, self._batches(session, cursor, converter, spec))
            if session.usable:
                await session.run("COMMIT")

    async def _batches(
        self, session: _Session, cursor: Any, converter: RowConverter, spec: _Source
    ) -> AsyncIterator[pa.RecordBatch]:
        """Blocks of rows converted on a worker thread while the next block is fetched."""
        converting: asyncio.Future[pa.RecordBatch] | None = None
        try:
            while True:
                try:
                    rows = await cursor.fetchmany(READ_BATCH_ROWS)
                except Exception as exc:
                    raise self._error(exc, "source", spec) from None
                if converting is not None:
                    batch, converting = await converting, None
                    yield batch
                if not rows:
                    break
                converting = asyncio.ensure_future(asyncio.to_thread(_convert, converter, rows))
            session.usable = True
        finally:
            if converting is not None:
                converting.cancel()

    def _select(self, spec: _Source, columns: Sequence[str], where: Sequence[str]) -> str:
        projection = ", ".join(quote_identifier(c) for c in columns) if columns else "*"
        condition = f" WHERE {' AND '.join(f'({w})' for w in where)}" if where else ""
        if spec.table is not None:
            return f"SELECT {projection} FROM {spec.table.sql}{condition}"
        assert spec.query is not None
        if not columns and not where:
            return spec.query
        # A newline before ')' so that a trailing -- comment cannot swallow it.
        return f"SELECT {projection} FROM (\n{spec.query}\n) AS `_datadog_query`{condition}"

    async def _source_columns(self, session: _Session, spec: _Source) -> list[ColumnMeta]:
        if spec.table is not None:
            sql = f"SELECT * FROM {spec.table.sql} LIMIT 0"
        else:
            sql = f"SELECT * FROM (\n{spec.query}\n) AS `_datadog_query` LIMIT 0"
        columns = await session.fields(sql)
        _check_unique_names(pa.schema([pa.field(c.name, pa.null()) for c in columns]), spec)
        return columns

    async def _table_rows(self, session: _Session, table: TableRef) -> int | None:
        rows = await session.rows(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE "
            f"TABLE_SCHEMA = {self._schema_of(table)} AND TABLE_NAME = {sql_literal(table.table)}"
        )
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0])

    def _schema_of(self, table: TableRef) -> str:
        return sql_literal(table.database) if table.database is not None else "DATABASE()"

    async def _ranges(
        self, session: _Session, table: TableRef, estimate: int | None, max_splits: int
    ) -> list[_Range]:
        """Key ranges of a single-column integer primary key (empty: do not split)."""
        wanted = max_splits if max_splits > 0 else self.settings.pool_size
        if wanted <= 1:
            return []
        keys = await session.rows(
            "SELECT k.COLUMN_NAME, c.DATA_TYPE FROM information_schema.STATISTICS k "
            "JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = k.TABLE_SCHEMA "
            "AND c.TABLE_NAME = k.TABLE_NAME AND c.COLUMN_NAME = k.COLUMN_NAME "
            f"WHERE k.TABLE_SCHEMA = {self._schema_of(table)} "
            f"AND k.TABLE_NAME = {sql_literal(table.table)} AND k.INDEX_NAME = 'PRIMARY'"
        )
        if len(keys) != 1 or str(keys[0][1]).lower() not in _INTEGER_DATA_TYPES:
            return []
        column = str(keys[0][0])
        quoted = quote_identifier(column)
        low, high = (await session.rows(f"SELECT MIN({quoted}), MAX({quoted}) FROM {table.sql}"))[0]
        if low is None or high is None:
            return []
        low, high = int(low), int(high)
        span = high - low + 1
        rows = estimate if estimate else span
        count = min(wanted, max(1, rows // MIN_ROWS_PER_SPLIT), span)
        if count <= 1:
            return []
        bounds = [low + span * i // count for i in range(count + 1)]
        return [
            _Range(column, None if i == 0 else bounds[i], None if i == count - 1 else bounds[i + 1])
            for i in range(count)
        ]

    # ---------------------------------------------------------------- writing

    async def write(
        self,
        sink: Any,
        idempotency_key: str,
        schema: pa.Schema,
        batches: AsyncIterator[pa.RecordBatch],
    ) -> WriteOutcome:
        spec = _sink_spec(sink)
        encoder = RowEncoder(schema)  # refuses unsupported types before anything is touched
        location = self._location(spec.table)
        names = {n.lower() for n in schema.names}
        missing_keys = [k for k in spec.key_columns if k.lower() not in names]
        if missing_keys:
            problem = f"{', '.join(missing_keys)} not among the written columns"
            raise invalid_argument(
                "INVALID_OPTION",
                f"header.sink.database.key_columns: {problem}",
                [FieldViolation("header.sink.database.key_columns", problem)],
            )
        key = _ledger_key(idempotency_key) if idempotency_key else ""
        replayed: int | None = None
        async with self._session("sink") as session:
            try:
                if key:
                    await self._ensure_ledger(session)
                    replayed = await self._ledger_count(session, key)
                if replayed is None:
                    replayed, rows = await self._write_once(
                        session, spec, schema, encoder, key, batches
                    )
                    if replayed is None:
                        return WriteOutcome(rows, location)
            except _UpstreamError as exc:
                raise exc.error from None  # the stream's own failure, not the database's
            except DomainError:
                raise
            except Exception as exc:
                raise self._error(exc, "sink") from None
        # A replay still drains the stream: a broken stream is an error even then.
        async for _ in batches:
            pass
        return WriteOutcome(replayed, location, replayed=True)

    def _location(self, table: TableRef) -> str:
        return f"mysql://{self.address}/{table.display(self.settings.database)}"

    async def _write_once(
        self,
        session: _Session,
        spec: _Sink,
        schema: pa.Schema,
        encoder: RowEncoder,
        key: str,
        batches: AsyncIterator[pa.RecordBatch],
    ) -> tuple[int | None, int]:
        """``(original count, 0)`` for a replay, else ``(None, rows written)`` once committed."""
        target = await self._prepare_target(session, spec, schema)
        committed = False
        try:
            await session.run("START TRANSACTION")
            if key and not await self._claim(session, key, target.table):
                await session.run("ROLLBACK")
                original = await self._ledger_count(session, key)
                return (original if original is not None else 0), 0
            if spec.mode == _WM.WRITE_MODE_OVERWRITE:
                await session.run(f"DELETE FROM {target.table.sql}")
            rows = await self._load(session, spec, target, schema, encoder, batches)
            if key:
                await session.run(
                    f"UPDATE {self.settings.ledger.sql} SET rows_written = {rows}, "
                    f"committed_at = NOW(6) WHERE idempotency_key = {sql_literal(key)}"
                )
            await session.run("COMMIT")
            committed = True
            return None, rows
        finally:
            if not committed:
                await self._abort(session, target)

    async def _abort(self, session: _Session, target: _TargetTable) -> None:
        """Roll back; drop a table this write created if it is still empty."""
        if not session.usable:
            return  # the session is closed on release: the server rolls back
        try:
            async with asyncio.timeout(10):
                await session.run("ROLLBACK")
                if target.created:
                    probe = await session.rows(f"SELECT 1 FROM {target.table.sql} LIMIT 1")
                    if not probe:
                        await session.run(f"DROP TABLE IF EXISTS {target.table.sql}")
        except BaseException:
            session.usable = False
            raise

    async def _ensure_ledger(self, session: _Session) -> None:
        if self._ledger_ready:
            return
        await session.run(
            f"CREATE TABLE IF NOT EXISTS {self.settings.ledger.sql} ("
            "idempotency_key VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL "
            "PRIMARY KEY, target VARCHAR(512) NOT NULL, rows_written BIGINT NOT NULL, "
            "committed_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
        self._ledger_ready = True

    async def _ledger_count(self, session: _Session, key: str) -> int | None:
        rows = await session.rows(
            f"SELECT rows_written FROM {self.settings.ledger.sql} "
            f"WHERE idempotency_key = {sql_literal(key)}"
        )
        return int(rows[0][0]) if rows else None

    async def _claim(self, session: _Session, key: str, table: TableRef) -> bool:
        """Insert the ledger row (in the open transaction); False if the key exists."""
        target = table.display(self.settings.database)
        try:
            await session.run(
                f"INSERT INTO {self.settings.ledger.sql} (idempotency_key, target, rows_written) "
                f"VALUES ({sql_literal(key)}, {sql_literal(target)}, 0)"
            )
        except asyncmy.errors.IntegrityError as exc:
            if _code(exc) == _DUPLICATE_KEY:
                return False
            raise
        return True

    async def _prepare_target(
        self, session: _Session, spec: _Sink, schema: pa.Schema
    ) -> _TargetTable:
        """Check (or create) the target table outside the transaction."""
        table = spec.table
        where = (
            f"TABLE_SCHEMA = {self._schema_of(table)} AND TABLE_NAME = {sql_literal(table.table)}"
        )
        info = await session.rows(
            f"SELECT ENGINE, TABLE_TYPE FROM information_schema.TABLES WHERE {where}"
        )
        created = False
        if not info:
            created = await self._create_table(session, spec, schema)
            info = await session.rows(
                f"SELECT ENGINE, TABLE_TYPE FROM information_schema.TABLES WHERE {where}"
            )
        display = table.display(self.settings.database)
        engine, kind = (str(v or "") for v in info[0]) if info else ("", "")
        if kind.upper() != "BASE TABLE" or engine.upper() not in _TRANSACTIONAL_ENGINES:
            what = (
                "a view" if "VIEW" in kind.upper() else f"a {engine or 'non-transactional'} table"
            )
            raise failed_precondition(
                "NON_TRANSACTIONAL_TABLE",
                f"{display} is {what}; writes need a transactional (InnoDB) table so that "
                "nothing is half-written",
                table=display,
            )
        described = await session.rows(
            "SELECT COLUMN_NAME, IS_NULLABLE, EXTRA, COLUMN_DEFAULT IS NULL "
            f"FROM information_schema.COLUMNS WHERE {where} ORDER BY ORDINAL_POSITION"
        )
        columns = tuple(str(r[0]) for r in described)
        known = {c.lower() for c in columns}
        names_written = {n.lower() for n in schema.names}
        unknown = [n for n in schema.names if n.lower() not in known]
        if unknown:
            raise invalid_argument(
                "UNKNOWN_COLUMN",
                f"table {display} has no column(s) {', '.join(unknown)}; "
                f"it has {', '.join(columns)}",
                [FieldViolation("schema", f"unknown column {n!r}") for n in unknown],
            )
        # NOT NULL columns that MySQL does not fill itself (auto-increment, generated).
        not_null = {
            str(r[0]).lower(): str(r[3]) == "1"
            for r in described
            if str(r[1]).upper() == "NO" and not _SELF_FILLING.search(str(r[2] or ""))
        }
        required = [
            c for c in columns if not_null.get(c.lower()) and c.lower() not in names_written
        ]
        if required:
            raise invalid_argument(
                "MISSING_COLUMN",
                f"table {display} needs a value for column(s) {', '.join(required)} "
                "(NOT NULL without a default), which the data does not have",
                [FieldViolation("schema", f"missing column {c!r}") for c in required],
            )
        if spec.mode == _WM.WRITE_MODE_UPSERT:
            await self._check_unique_key(session, spec, where, display)
        return _TargetTable(table, created, columns, frozenset(not_null))

    async def _create_table(self, session: _Session, spec: _Sink, schema: pa.Schema) -> bool:
        keys = {k.lower() for k in spec.key_columns}
        definitions = [column_definition(f, key=f.name.lower() in keys) for f in schema]
        if spec.key_columns:
            ordered = [
                f.name for k in spec.key_columns for f in schema if f.name.lower() == k.lower()
            ]
            definitions.append(f"PRIMARY KEY ({', '.join(quote_identifier(k) for k in ordered)})")
        if not definitions:
            raise invalid_argument("SINK_WRITE_ERROR", "cannot create a table without columns")
        try:
            await session.run(
                f"CREATE TABLE {spec.table.sql} ({', '.join(definitions)}) "
                "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            )
        except asyncmy.errors.MySQLError as exc:
            if _code(exc) == _TABLE_EXISTS:
                return False  # created concurrently by someone else
            raise
        return True

    async def _check_unique_key(
        self, session: _Session, spec: _Sink, where: str, display: str
    ) -> None:
        rows = await session.rows(
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
            f"WHERE {where} AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX"
        )
        unique: dict[str, list[str]] = {}
        for index, column in rows:
            unique.setdefault(str(index), []).append(str(column))
        wanted = {k.lower() for k in spec.key_columns}
        if any({c.lower() for c in cols} == wanted for cols in unique.values()):
            return
        have = "; ".join(f"{name} ({', '.join(cols)})" for name, cols in unique.items()) or "none"
        problem = (
            f"({', '.join(spec.key_columns)}) is not the primary key or a unique key of "
            f"{display}, so rows cannot be matched; its unique keys: {have}"
        )
        raise invalid_argument(
            "INVALID_OPTION",
            f"header.sink.database.key_columns {problem}",
            [FieldViolation("header.sink.database.key_columns", problem)],
        )

    async def _load(
        self,
        session: _Session,
        spec: _Sink,
        target: _TargetTable,
        schema: pa.Schema,
        encoder: RowEncoder,
        batches: AsyncIterator[pa.RecordBatch],
    ) -> int:
        """Stream every batch into the open transaction; the number of rows written.

        Batches are encoded on a worker thread while the previous chunk is being
        loaded, so the server and the encoder work at the same time.
        """
        use_load_data = spec.mode != _WM.WRITE_MODE_UPSERT and await self._load_data_allowed(
            session
        )
        statement_limit = min(
            INSERT_STATEMENT_BYTES,
            int(await self._server_setting(session, "max_allowed_packet")) // 2,
        )
        loader = _ChunkLoader(self, session, spec, target, schema, use_load_data, statement_limit)
        not_null = [(i, f.name) for i, f in enumerate(schema) if f.name.lower() in target.not_null]
        rows = 0
        pending: asyncio.Task[None] | None = None
        chunk: list[Any] = []
        chunk_rows = chunk_bytes = chunk_start = 0
        try:
            async for batch in _upstream(batches):
                if batch.num_rows == 0:
                    continue
                _check_not_null(batch, not_null, rows)
                encoded = await asyncio.to_thread(loader.encode, encoder, batch, rows)
                chunk.append(encoded)
                rows += batch.num_rows
                chunk_rows += batch.num_rows
                chunk_bytes += loader.size(encoded)
                if chunk_rows >= LOAD_CHUNK_ROWS or chunk_bytes >= LOAD_CHUNK_BYTES:
                    if pending is not None:
                        await pending
                    pending = asyncio.create_task(loader.send(chunk, chunk_start))
                    chunk, chunk_rows, chunk_bytes, chunk_start = [], 0, 0, rows
            if pending is not None:
                await pending
                pending = None
            if chunk:
                await loader.send(chunk, chunk_start)
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
        return rows

    async def _load_data_allowed(self, session: _Session) -> bool:
        if not (self.settings.load_data_local and LOCAL_INFILE_SUPPORTED):
            return False
        return (await self._server_setting(session, "local_infile")) in {"1", "ON"}

    # ---------------------------------------------------------------- errors

    def _error(
        self, exc: BaseException, role: str, spec: _Source | None = None
    ) -> DomainError | BaseException:
        """A driver failure as a domain error (unexpected ones are returned unchanged)."""
        if isinstance(exc, DomainError):
            return exc
        unavailable_reason = "SINK_UNAVAILABLE" if role == "sink" else "SOURCE_UNAVAILABLE"
        s = self.settings
        if isinstance(exc, TimeoutError | OSError | asyncmy.errors.InterfaceError):
            return DomainError(
                ErrorCode.UNAVAILABLE,
                unavailable_reason,
                f"MySQL server {self.address} is unreachable: {exc or type(exc).__name__}",
                {"connection": self.name},
            )
        if not isinstance(exc, asyncmy.errors.MySQLError):
            return exc
        code = _code(exc) or 0
        message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        if code in _AUTH_ERRORS:
            return DomainError(
                ErrorCode.UNAUTHENTICATED,
                "AUTHENTICATION_FAILED",
                f"MySQL server {self.address} refused user {s.user!r}: {message}",
                {"connection": self.name},
            )
        if code in _ACCESS_ERRORS:
            return permission_denied("ACCESS_DENIED", message, connection=self.name)
        if code == _BAD_DATABASE:
            return not_found("DATABASE_NOT_FOUND", message, connection=self.name)
        if code == _NO_SUCH_TABLE:
            return not_found("TABLE_NOT_FOUND", message, connection=self.name)
        if 2000 <= code < 3000 or code in _UNAVAILABLE_ERRORS:
            return DomainError(
                ErrorCode.UNAVAILABLE,
                unavailable_reason,
                f"MySQL server {self.address}: {message}",
                {"connection": self.name, "mysql_error": str(code)},
            )
        if spec is not None and spec.query is not None:
            return invalid_argument(
                "INVALID_QUERY",
                f"{spec.field} was rejected by the server: {message}",
                [FieldViolation(spec.field, message)],
                mysql_error=str(code),
            )
        return internal("DATABASE_ERROR", f"MySQL error {code}: {message}", mysql_error=str(code))


class _ChunkLoader:
    """Sends encoded chunks of one write: LOAD DATA statements or multi-row INSERTs."""

    def __init__(
        self,
        connection: MysqlConnection,
        session: _Session,
        spec: _Sink,
        target: _TargetTable,
        schema: pa.Schema,
        use_load_data: bool,
        statement_limit: int,
    ) -> None:
        self.connection = connection
        self.session = session
        self.use_load_data = use_load_data
        self.statement_limit = max(statement_limit, 1024)
        table = target.table.sql
        names = [quote_identifier(n) for n in schema.names]
        if use_load_data:
            targets, sets = [], []
            for i, f in enumerate(schema):
                if _is_binary(f.type):
                    targets.append(f"@b{i}")
                    sets.append(f"{names[i]} = UNHEX(@b{i})")
                else:
                    targets.append(names[i])
            set_clause = f" SET {', '.join(sets)}" if sets else ""
            self.statement_tail = (
                f"' INTO TABLE {table} CHARACTER SET utf8mb4 "
                "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
                f"({', '.join(targets)}){set_clause}"
            )
        else:
            self.prefix = f"INSERT INTO {table} ({', '.join(names)}) VALUES ".encode()
            self.suffix = b""
            if spec.mode == _WM.WRITE_MODE_UPSERT:
                keys = {k.lower() for k in spec.key_columns}
                updates = [
                    n for f, n in zip(schema, names, strict=True) if f.name.lower() not in keys
                ]
                updates = updates or [names[0]]
                self.suffix = (
                    " ON DUPLICATE KEY UPDATE " + ", ".join(f"{n} = VALUES({n})" for n in updates)
                ).encode()

    def encode(self, encoder: RowEncoder, batch: pa.RecordBatch, first_row: int) -> Any:
        """Blocking: a batch as TSV bytes, or as (SQL rows, row offsets)."""
        try:
            return encoder.tsv(batch) if self.use_load_data else encoder.sql_rows(batch)
        except NonFiniteValue as exc:
            column = exc.__notes__[-1] if getattr(exc, "__notes__", None) else "?"
            row = first_row + exc.row + 1
            raise _value_error(column, row, f"{exc.value} has no MySQL value") from None

    def size(self, encoded: Any) -> int:
        return len(encoded) if self.use_load_data else len(encoded[0])

    async def send(self, chunk: list[Any], first_row: int) -> None:
        if self.use_load_data:
            await self._load_data(chunk, first_row)
        else:
            await self._insert(chunk, first_row)

    async def _load_data(self, chunk: list[bytes], first_row: int) -> None:
        session = self.session
        name = f"datadog-{secrets.token_hex(12)}"
        _LOCAL_FILES[name] = (session.conn, chunk)
        try:
            await self._run(f"LOAD DATA LOCAL INFILE '{name}{self.statement_tail}", first_row)
        finally:
            _LOCAL_FILES.pop(name, None)
        if session.warning_count:
            # LOCAL implies IGNORE: data errors arrive as warnings, and any one fails the write.
            for level, code, message in await session.rows("SHOW WARNINGS"):
                if str(level).lower() != "note":
                    raise self._statement_error(int(code), str(message), first_row)

    async def _insert(self, chunk: list[tuple[bytes, Any]], first_row: int) -> None:
        row = first_row
        for data, offsets in chunk:
            count = len(offsets) - 1
            start = 0
            while start < count:
                limit = offsets[start] + self.statement_limit
                # The last row that still fits (always at least one row).
                end = max(start + 1, int(offsets.searchsorted(limit, side="right")) - 1)
                end = min(end, count)
                body = data[int(offsets[start]) : int(offsets[end]) - 1]  # drop the last ','
                await self._run(self.prefix + body + self.suffix, row + start)
                start = end
            row += count

    async def _run(self, sql: str | bytes, first_row: int) -> None:
        try:
            await self.session.run(sql)
        except asyncmy.errors.MySQLError as exc:
            code = _code(exc) or 0
            message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
            error = self._statement_error(code, message, first_row, raise_other=False)
            if error is None:
                raise
            raise error from None

    def _statement_error(
        self, code: int, message: str, first_row: int, raise_other: bool = True
    ) -> Any:
        """A value or key error of a statement whose first row is ``first_row`` (0-based)."""
        if code in _VALUE_ERRORS:
            match = _AT_ROW.search(message)
            row = first_row + int(match.group(1)) if match else None
            column = _column_of(message)
            if row is not None:
                message = _AT_ROW.sub(f" at row {row}", message, count=1)
            return _value_error(column, row, message)
        if code == _DUPLICATE_KEY:
            return already_exists(
                "DUPLICATE_KEY",
                f"a written row repeats a unique key of the table: {message}",
                mysql_error=str(code),
            )
        if not raise_other:
            return None
        return internal("DATABASE_ERROR", f"MySQL warning {code}: {message}", mysql_error=str(code))


class _UpstreamError(Exception):
    """The incoming batches failed: re-raised unchanged by ``write``, never mapped."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


async def _upstream(batches: AsyncIterator[pa.RecordBatch]) -> AsyncIterator[pa.RecordBatch]:
    iterator = aiter(batches)
    while True:
        try:
            batch = await anext(iterator)
        except StopAsyncIteration:
            return
        except Exception as exc:
            raise _UpstreamError(exc) from exc
        yield batch


def _value_error(column: str | None, row: int | None, message: str) -> DomainError:
    where = " and ".join(
        part
        for part in (
            f"column {column!r}" if column else "",
            f"row {row}" if row is not None else "",
        )
        if part
    )
    metadata = {k: v for k, v in (("column", column or ""), ("row", str(row or ""))) if v}
    return invalid_argument(
        "VALUE_OUT_OF_RANGE",
        f"a value does not fit the target column ({where or 'unknown position'}): {message}",
        [FieldViolation(f"rows[{row}].{column}" if row and column else "rows", message)],
        **metadata,
    )


def _column_of(message: str) -> str | None:
    match = _COLUMN_NAMED.search(message)
    if match is None:
        return None
    parts = re.findall(r"[`'\"]([^`'\"]*)[`'\"]", match.group(1))
    return parts[-1] if parts else None


def _check_not_null(
    batch: pa.RecordBatch, not_null: Sequence[tuple[int, str]], first_row: int
) -> None:
    """Refuse a NULL for a NOT NULL column, naming its row (the server may not say)."""
    for index, name in not_null:
        column = batch.column(index)
        if column.null_count:
            row = int(pc.index(column.is_null(), True).as_py())
            raise _value_error(
                name, first_row + row + 1, f"NULL in column {name!r}, which is NOT NULL"
            )


def _is_binary(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    )


def _convert(converter: RowConverter, rows: Sequence[tuple[Any, ...]]) -> pa.RecordBatch:
    try:
        return converter(rows)
    except (pa.ArrowException, ValueError) as exc:
        raise invalid_argument("SOURCE_PARSE_ERROR", f"cannot convert a value: {exc}") from None


def _check_unique_names(schema: pa.Schema, spec: _Source) -> None:
    seen: set[str] = set()
    for name in schema.names:
        if name in seen:
            problem = f"column name {name!r} appears twice; give the columns distinct aliases"
            raise invalid_argument(
                "INVALID_QUERY", f"{spec.field}: {problem}", [FieldViolation(spec.field, problem)]
            )
        seen.add(name)


def _encode_ticket(table: str, split: _Range) -> bytes:
    payload = {"v": _TICKET_VERSION, "table": table, "column": split.column}
    payload.update(lo=split.lo, hi=split.hi)
    return json.dumps(payload, separators=(",", ":")).encode()


def _decode_ticket(ticket: bytes, table: str) -> _Range:
    try:
        payload = json.loads(ticket)
    except (ValueError, UnicodeError):
        raise _bad_ticket("it is not a ticket of a mysql plan") from None
    if not isinstance(payload, dict) or payload.get("v") != _TICKET_VERSION:
        raise _bad_ticket("it is not a ticket of a mysql plan")
    if payload.get("table") != table:
        raise _bad_ticket(f"it was planned for {payload.get('table')!r}, not {table!r}")
    column, lo, hi = payload.get("column"), payload.get("lo"), payload.get("hi")
    bounds_ok = all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in (lo, hi))
    if not isinstance(column, str) or not column or not bounds_ok:
        raise _bad_ticket("its key range is malformed")
    return _Range(column, lo, hi)


def _bad_ticket(problem: str) -> DomainError:
    return invalid_argument(
        "INVALID_TICKET", f"ticket: {problem}", [FieldViolation("ticket", problem)]
    )

"""The PostgreSQL connector against the real server on 127.0.0.1:5432 (trust auth, db ``test``).

Every test makes its own uniquely named tables (and its own ledger table) and drops
them. Fixtures fail loudly when the server is missing. Setup and checks go through
a plain asyncpg connection, independent of the connector under test. The connection
class is tested directly, then the same paths through the real gRPC service.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from arrow_streams import table_of

from datadog_platform.api.common.v1 import predicate_pb2, step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.connector.app import build_server, parse_config
from datadog_platform.connector.base import ReadScope, WriteOutcome
from datadog_platform.connector.postgres import POSTGRES_CONNECTOR_TYPE, PostgresConnection
from datadog_platform.core.arrow_frames import (
    StreamCounter,
    decode_schema,
    encode_batch,
    encode_schema,
)
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.core.status import RpcErrorDetails, details_of

HOST, PORT, USER, DATABASE = "127.0.0.1", 5432, "postgres", "test"
DSN = f"postgresql://{USER}@{HOST}:{PORT}/{DATABASE}"
TIMEOUT = 60
MILLION = 1_000_000
CMP = predicate_pb2
UTC = dt.UTC
APPEND = step_pb2.WRITE_MODE_APPEND
OVERWRITE = step_pb2.WRITE_MODE_OVERWRITE
UPSERT = step_pb2.WRITE_MODE_UPSERT


def _name(prefix: str) -> str:
    return f"dd_{prefix}_{uuid.uuid4().hex[:10]}"


class Db:
    """A plain asyncpg session for setup and checks; drops what the test created."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.tables: list[str] = []
        self.roles: list[str] = []

    def table(self, prefix: str) -> str:
        name = _name(prefix)
        self.tables.append(name)
        return name

    async def role(self) -> str:
        name = _name("role")
        await self.conn.execute(f'CREATE ROLE "{name}" LOGIN')
        self.roles.append(name)
        return name

    async def count(self, table: str) -> int:
        return int(await self.conn.fetchval(f'SELECT count(*) FROM "{table}"'))

    async def exists(self, table: str) -> bool:
        return await self.conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{table}"')

    async def cleanup(self) -> None:
        for table in self.tables:
            await self.conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        for role in self.roles:
            await self.conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
async def db() -> AsyncIterator[Db]:
    try:
        conn = await asyncpg.connect(DSN, timeout=10)
    except Exception as exc:  # the server is part of the test environment: never skip
        pytest.fail(f"PostgreSQL must run on {HOST}:{PORT} (user {USER}, db {DATABASE}): {exc}")
    helper = Db(conn)
    try:
        yield helper
    finally:
        await helper.cleanup()
        await conn.close()


def _connect(db: Db, **options: Any) -> PostgresConnection:
    ledger = db.table("ledger")
    merged = {"dsn": DSN, "ledger_table": ledger, "connect_timeout": 5, **options}
    connection = POSTGRES_CONNECTOR_TYPE.create("pg", merged, Path("."))
    assert isinstance(connection, PostgresConnection)
    return connection


@pytest.fixture
async def pg(db: Db) -> AsyncIterator[PostgresConnection]:
    connection = _connect(db)
    try:
        yield connection
    finally:
        await connection.close()


def _table(name: str) -> step_pb2.DatabaseSource:
    return step_pb2.DatabaseSource(connection="pg", table=name)


def _query(sql: str) -> step_pb2.DatabaseSource:
    return step_pb2.DatabaseSource(connection="pg", query=sql)


def _sink(name: str, mode: int = APPEND, keys: Iterable[str] = ()) -> step_pb2.DatabaseSink:
    return step_pb2.DatabaseSink(connection="pg", table=name, mode=mode, key_columns=list(keys))


async def _read(
    pg: PostgresConnection,
    source: step_pb2.DatabaseSource,
    scope: ReadScope | None = None,
    ticket: bytes = b"",
) -> pa.Table:
    async with pg.read(source, scope or ReadScope(), ticket) as stream:
        batches = [batch async for batch in stream.batches]
        return pa.Table.from_batches(batches, schema=stream.schema)


async def _stream(data: pa.Table, chunk: int = 1000) -> AsyncIterator[pa.RecordBatch]:
    for batch in data.to_batches(max_chunksize=chunk):
        yield batch


async def _write(
    pg: PostgresConnection, sink: step_pb2.DatabaseSink, data: pa.Table, key: str | None = None
) -> WriteOutcome:
    return await pg.write(sink, key or uuid.uuid4().hex, data.schema, _stream(data))


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with NaN made comparable (NaN != NaN would fail any equality)."""
    return [
        {k: "NaN" if isinstance(v, float) and v != v else v for k, v in row.items()}
        for row in table.to_pylist()
    ]


def _same(left: pa.Table, right: pa.Table) -> bool:
    return left.schema == right.schema and _rows(left) == _rows(right)


async def _raises(awaitable: Any, code: ErrorCode, reason: str) -> DomainError:
    with pytest.raises(DomainError) as info:
        await awaitable
    assert (info.value.code, info.value.reason) == (code, reason), info.value
    return info.value


# --------------------------------------------------------------------------- types

TYPES_DDL = """
CREATE TABLE "{t}" (
  id integer PRIMARY KEY,
  i2 smallint, i4 integer, i8 bigint,
  n numeric(12,3), nu numeric,
  r real, d double precision,
  tx text, vc varchar(10), ch char(3),
  b boolean, dt date, tm time, ts timestamp, tz timestamptz, iv interval,
  u uuid, j json, jb jsonb, by bytea,
  ai integer[], at text[], an numeric(5,2)[]
)
"""

TYPES_ROWS = """
INSERT INTO "{t}" VALUES
 (1, 7, -8, 9, 1234.5, 0.1, 1.5, 2.25, 'héllo wörld ✓', 'ünï', 'ab', true,
  '2024-02-29', '12:34:56.123456', '2024-02-29 23:59:59.999999',
  '2024-03-10 02:30:00-08', '1 year 2 mons 3 days 04:05:06.000007',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"k": [1, 2]}}', '{{"b": 2, "a": 1}}', '\\x00ff10',
  ARRAY[1, NULL, 3], ARRAY['x', NULL, '😀'], ARRAY[1.25, NULL]),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, -32768, 2147483647, -9223372036854775808, -999999999.999,
  12345678901234567890.123456789, '-Infinity', 'NaN', '', '😀', 'xyz', false,
  '0001-01-01', '00:00:00', '1900-01-01 00:00:00', '1970-01-01 00:00:00+00',
  '-1 years -2 days -00:00:00.000001', '00000000-0000-0000-0000-000000000000', '[]', 'null',
  '\\x', ARRAY[]::integer[], ARRAY[]::text[], ARRAY[]::numeric[])
"""

EXPECTED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int32(), nullable=False),
        ("i2", pa.int16()),
        ("i4", pa.int32()),
        ("i8", pa.int64()),
        ("n", pa.decimal128(12, 3)),
        ("nu", pa.decimal128(38, 9)),
        ("r", pa.float32()),
        ("d", pa.float64()),
        ("tx", pa.string()),
        ("vc", pa.string()),
        ("ch", pa.string()),
        ("b", pa.bool_()),
        ("dt", pa.date32()),
        ("tm", pa.time64("us")),
        ("ts", pa.timestamp("us")),
        ("tz", pa.timestamp("us", tz="UTC")),
        ("iv", pa.month_day_nano_interval()),
        ("u", pa.string()),
        ("j", pa.string()),
        ("jb", pa.string()),
        ("by", pa.binary()),
        ("ai", pa.list_(pa.int32())),
        ("at", pa.list_(pa.string())),
        ("an", pa.list_(pa.decimal128(5, 2))),
    ]
)

D = decimal.Decimal


async def test_every_type_reads_faithfully_with_nulls(pg: PostgresConnection, db: Db) -> None:
    t = db.table("types")
    await db.conn.execute(TYPES_DDL.format(t=t))
    await db.conn.execute(TYPES_ROWS.format(t=t))

    description = await pg.describe(_table(t))
    assert description.schema == EXPECTED_SCHEMA
    table = (await _read(pg, _table(t))).sort_by("id")
    assert table.schema == EXPECTED_SCHEMA
    first, empty, extreme = table.to_pylist()

    assert first["n"] == D("1234.500")
    assert first["nu"] == D("0.1")
    assert (first["r"], first["d"]) == (1.5, 2.25)
    assert first["tx"] == "héllo wörld ✓"
    assert first["vc"] == "ünï"
    assert first["ch"] == "ab "
    assert first["dt"] == dt.date(2024, 2, 29)
    assert first["tm"] == dt.time(12, 34, 56, 123456)
    assert first["ts"] == dt.datetime(2024, 2, 29, 23, 59, 59, 999999)
    assert first["tz"] == dt.datetime(2024, 3, 10, 10, 30, tzinfo=UTC)
    assert first["iv"] == pa.MonthDayNano([14, 3, (4 * 3600 + 5 * 60 + 6) * 10**9 + 7000])
    assert first["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert first["j"] == '{"k": [1, 2]}'
    assert first["jb"] == '{"a": 1, "b": 2}'
    assert first["by"] == b"\x00\xff\x10"
    assert first["ai"] == [1, None, 3]
    assert first["at"] == ["x", None, "😀"]
    assert first["an"] == [D("1.25"), None]

    assert all(value is None for key, value in empty.items() if key != "id")

    assert (extreme["i2"], extreme["i4"], extreme["i8"]) == (-32768, 2**31 - 1, -(2**63))
    assert extreme["n"] == D("-999999999.999")
    assert extreme["nu"] == D("12345678901234567890.123456789")
    assert extreme["r"] == float("-inf")
    assert extreme["d"] != extreme["d"]
    assert extreme["tx"] == ""
    assert extreme["vc"] == "😀"
    assert extreme["b"] is False
    assert extreme["dt"] == dt.date(1, 1, 1)
    assert extreme["tz"] == dt.datetime(1970, 1, 1, tzinfo=UTC)
    assert extreme["iv"] == pa.MonthDayNano([-12, -2, -1000])
    assert extreme["j"] == "[]"
    assert extreme["jb"] == "null"
    assert extreme["by"] == b""
    assert (extreme["ai"], extreme["at"], extreme["an"]) == ([], [], [])


async def test_every_type_writes_back_faithfully(pg: PostgresConnection, db: Db) -> None:
    source, created, typed = db.table("types"), db.table("created"), db.table("typed")
    await db.conn.execute(TYPES_DDL.format(t=source))
    await db.conn.execute(TYPES_ROWS.format(t=source))
    await db.conn.execute(TYPES_DDL.format(t=typed))
    original = (await _read(pg, _table(source))).sort_by("id")

    # Into a new table created from the Arrow schema: the same Arrow data comes back.
    outcome = await _write(pg, _sink(created), original)
    assert (outcome.rows_written, outcome.replayed) == (3, False)
    assert outcome.location == f"postgres://pg/public.{created}"
    assert _same((await _read(pg, _table(created))).sort_by("id"), original)

    # Into an existing table of the original types (uuid, json, jsonb go through casts).
    assert (await _write(pg, _sink(typed), original)).rows_written == 3
    assert _same((await _read(pg, _table(typed))).sort_by("id"), original)
    same = await db.conn.fetchval(
        f'SELECT count(*) FROM "{source}" s JOIN "{typed}" t USING (id) '
        "WHERE s.u IS NOT DISTINCT FROM t.u AND s.jb IS NOT DISTINCT FROM t.jb "
        "AND s.tz IS NOT DISTINCT FROM t.tz AND s.an IS NOT DISTINCT FROM t.an"
    )
    assert same == 3


async def test_created_table_maps_arrow_types_back(pg: PostgresConnection, db: Db) -> None:
    t = db.table("created")
    data = pa.table(
        {
            "k": pa.array([1, 2], pa.int64()),
            "small": pa.array([1, None], pa.int8()),
            "u32": pa.array([4_000_000_000, None], pa.uint32()),
            "amount": pa.array([D("1.10"), None], pa.decimal128(20, 2)),
            "big": pa.array([D("1.5"), None], pa.decimal256(50, 10)),
            "at": pa.array([dt.datetime(2024, 1, 1, tzinfo=UTC), None], pa.timestamp("ns", "UTC")),
            "local": pa.array([dt.datetime(2024, 1, 1), None], pa.timestamp("ms")),
            "tags": pa.array([["a"], None], pa.list_(pa.large_string())),
            "text": pa.array(["x", None], pa.large_string()),
            "view": pa.array(["v", None], pa.string_view()),
            "cat": pa.array(["c", None]).dictionary_encode(),
            "blob": pa.array([b"\x00", None], pa.large_binary()),
            "day": pa.array([dt.date(2024, 1, 1), None], pa.date32()),
        },
        schema=pa.schema(
            [pa.field("k", pa.int64(), nullable=False)]
            + [
                pa.field(n, t)
                for n, t in [
                    ("small", pa.int8()),
                    ("u32", pa.uint32()),
                    ("amount", pa.decimal128(20, 2)),
                    ("big", pa.decimal256(50, 10)),
                    ("at", pa.timestamp("ns", "UTC")),
                    ("local", pa.timestamp("ms")),
                    ("tags", pa.list_(pa.large_string())),
                    ("text", pa.large_string()),
                    ("view", pa.string_view()),
                    ("cat", pa.dictionary(pa.int32(), pa.string())),
                    ("blob", pa.large_binary()),
                    ("day", pa.date32()),
                ]
            ]
        ),
    )
    await _write(pg, _sink(t), data)
    rows = await db.conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 ORDER BY attnum",
        f'"{t}"',
    )
    assert [(r["attname"], r["type"], r["attnotnull"]) for r in rows] == [
        ("k", "bigint", True),
        ("small", "smallint", False),
        ("u32", "bigint", False),
        ("amount", "numeric(20,2)", False),
        ("big", "numeric(50,10)", False),
        ("at", "timestamp with time zone", False),
        ("local", "timestamp without time zone", False),
        ("tags", "text[]", False),
        ("text", "text", False),
        ("view", "text", False),
        ("cat", "text", False),
        ("blob", "bytea", False),
        ("day", "date", False),
    ]
    back = (await _read(pg, _table(t))).sort_by("k").to_pylist()
    assert back[0]["u32"] == 4_000_000_000
    assert back[0]["amount"] == D("1.10")
    assert back[0]["big"] == D("1.5")
    assert back[0]["tags"] == ["a"]
    assert back[0]["cat"] == "c"
    assert back[0]["at"] == dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert back[1] == {"k": 2, **{name: None for name in data.schema.names[1:]}}


async def test_large_values_and_empty_tables(pg: PostgresConnection, db: Db) -> None:
    big, empty, copy = db.table("big"), db.table("empty"), db.table("copy")
    blob = bytes(range(256)) * (40 * 1024)  # 10 MiB
    text = "ünïcode ✓ " * (1024 * 1024)  # ~14 MB of UTF-8
    data = pa.table({"id": [1, 2], "blob": [blob, None], "body": [text, "small"]})
    assert (await _write(pg, _sink(big), data, "k")).rows_written == 2
    assert await db.conn.fetchval(f'SELECT length(blob) FROM "{big}" WHERE id = 1') == len(blob)
    back = (await _read(pg, _table(big))).sort_by("id")
    assert back.column("blob").to_pylist() == [blob, None]
    assert back.column("body").to_pylist() == [text, "small"]

    await db.conn.execute(f'CREATE TABLE "{empty}" (id bigint, name text, at timestamptz)')
    read = await _read(pg, _table(empty))
    assert read.num_rows == 0
    assert read.schema == pa.schema(
        [("id", pa.int64()), ("name", pa.string()), ("at", pa.timestamp("us", tz="UTC"))]
    )
    plan = await pg.plan_read(_table(empty), ReadScope(), 4)
    assert len(plan.tickets) == 1
    # An empty write still creates the table and commits its key.
    outcome = await pg.write(_sink(copy), "empty-key", read.schema, _stream(read))
    assert (outcome.rows_written, await db.exists(copy), await db.count(copy)) == (0, True, 0)
    replay = await pg.write(_sink(copy), "empty-key", read.schema, _stream(read))
    assert replay.replayed


# --------------------------------------------------------------------------- writes


async def test_append_overwrite_upsert_and_replay(pg: PostgresConnection, db: Db) -> None:
    t = db.table("modes")
    first = pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]})
    assert (await _write(pg, _sink(t, APPEND), first, "k1")).rows_written == 3
    assert (await _write(pg, _sink(t, APPEND), first, "k2")).rows_written == 3
    assert await db.count(t) == 6

    # A committed key is a no-op answering the original count.
    replay = await _write(pg, _sink(t, APPEND), pa.table({"id": [9], "v": ["z"]}), "k1")
    assert (replay.rows_written, replay.replayed) == (3, True)
    assert await db.count(t) == 6

    second = pa.table({"id": [7, 8], "v": ["x", "y"]})
    assert (await _write(pg, _sink(t, OVERWRITE), second, "k3")).rows_written == 2
    assert await db.conn.fetch(f'SELECT id, v FROM "{t}" ORDER BY id') == [(7, "x"), (8, "y")]

    # UPSERT into a new table creates its primary key; the last row of a key wins.
    u = db.table("upsert")
    rows = pa.table({"id": [1, 2, 1], "v": ["old", "two", "new"], "n": [1, 2, 3]})
    assert (await _write(pg, _sink(u, UPSERT, ["id"]), rows, "u1")).rows_written == 2
    more = pa.table({"id": [2, 3], "v": ["TWO", "three"], "n": [20, 30]})
    assert (await _write(pg, _sink(u, UPSERT, ["id"]), more, "u2")).rows_written == 2
    assert await db.conn.fetch(f'SELECT id, v, n FROM "{u}" ORDER BY id') == [
        (1, "new", 3),
        (2, "TWO", 20),
        (3, "three", 30),
    ]
    replay = await _write(pg, _sink(u, UPSERT, ["id"]), more, "u2")
    assert (replay.rows_written, replay.replayed) == (2, True)

    # UPSERT into a table without a unique key names key_columns.
    error = await _raises(
        _write(pg, _sink(t, UPSERT, ["id"]), second, "u3"),
        ErrorCode.INVALID_ARGUMENT,
        "INVALID_OPTION",
    )
    assert error.violations[0].field == "header.sink.database.key_columns"
    await _raises(
        _write(pg, _sink(t, UPSERT, ["nope"]), second), ErrorCode.INVALID_ARGUMENT, "INVALID_OPTION"
    )


async def test_concurrent_writers_of_one_key_write_once(pg: PostgresConnection, db: Db) -> None:
    t = db.table("race")
    data = pa.table({"id": list(range(5000))})
    outcomes = await asyncio.gather(*(_write(pg, _sink(t), data, "same") for _ in range(3)))
    assert sorted(o.replayed for o in outcomes) == [False, True, True]
    assert {o.rows_written for o in outcomes} == {5000}
    assert await db.count(t) == 5000


async def test_a_broken_stream_leaves_the_target_as_it_was(pg: PostgresConnection, db: Db) -> None:
    t = db.table("broken")
    await db.conn.execute(f'CREATE TABLE "{t}" (id bigint, v text)')
    await db.conn.execute(f"INSERT INTO \"{t}\" VALUES (1, 'kept')")

    async def breaking() -> AsyncIterator[pa.RecordBatch]:
        yield pa.record_batch({"id": [2, 3], "v": ["x", "y"]})
        raise ConnectionError("stream broke")

    schema = pa.schema([("id", pa.int64()), ("v", pa.string())])
    for mode in (APPEND, OVERWRITE, UPSERT):
        with pytest.raises(ConnectionError):
            await pg.write(_sink(t, mode, ["id"]), "key", schema, breaking())
    assert await db.conn.fetch(f'SELECT id, v FROM "{t}"') == [(1, "kept")]
    # The key was not recorded: the retry writes.
    outcome = await _write(pg, _sink(t, APPEND), pa.table({"id": [2], "v": ["ok"]}), "key")
    assert (outcome.rows_written, outcome.replayed, await db.count(t)) == (1, False, 2)


async def test_a_cancelled_write_leaves_the_target_as_it_was(
    pg: PostgresConnection, db: Db
) -> None:
    t = db.table("cancelled")
    await db.conn.execute(f'CREATE TABLE "{t}" (id bigint)')
    await db.conn.execute(f'INSERT INTO "{t}" VALUES (1)')
    sent = asyncio.Event()

    async def stalls() -> AsyncIterator[pa.RecordBatch]:
        yield pa.record_batch({"id": list(range(100, 10_100))})
        sent.set()
        await asyncio.sleep(3600)
        yield pa.record_batch({"id": [0]})

    schema = pa.schema([("id", pa.int64())])
    for mode in (OVERWRITE, UPSERT):
        sent.clear()
        task = asyncio.create_task(pg.write(_sink(t, mode, ["id"]), "key", schema, stalls()))
        await asyncio.wait_for(sent.wait(), TIMEOUT)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, TIMEOUT)
        assert await db.conn.fetch(f'SELECT id FROM "{t}"') == [(1,)]
    outcome = await _write(pg, _sink(t, APPEND), pa.table({"id": [2]}), "key")
    assert (outcome.replayed, await db.count(t)) == (False, 2)


async def test_an_abandoned_read_stops_its_query(pg: PostgresConnection, db: Db) -> None:
    t = db.table("abandoned")
    await db.conn.execute(
        f'CREATE TABLE "{t}" AS SELECT g AS id, repeat(md5(g::text), 8) AS pad '
        "FROM generate_series(1, 300000) g"
    )
    for _ in range(2):
        async with pg.read(_table(t), ReadScope(), b"") as stream:
            async for batch in stream.batches:
                assert batch.num_rows > 0
                break
    task = asyncio.create_task(_read(pg, _table(t)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    running = await db.conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
        "AND pid <> pg_backend_pid() AND position($1 in query) > 0",
        t,
    )
    assert running == 0
    assert (await _read(pg, _table(t), ReadScope(("id",)))).num_rows == 300_000


async def test_values_that_do_not_fit_name_column_and_row(pg: PostgresConnection, db: Db) -> None:
    t = db.table("narrow")
    await db.conn.execute(
        f'CREATE TABLE "{t}" (id integer, code varchar(3), amount numeric(5,2), u uuid)'
    )
    await db.conn.execute(f"INSERT INTO \"{t}\" VALUES (1, 'old', 1.00, NULL)")

    too_big = pa.table({"id": pa.array([5] * 1500 + [10**12, 6], pa.int64())})
    error = await _raises(
        _write(pg, _sink(t, OVERWRITE), too_big), ErrorCode.INVALID_ARGUMENT, "VALUE_OUT_OF_RANGE"
    )
    assert (error.metadata["column"], error.metadata["row"]) == ("id", "1501")
    assert "'id'" in error.message
    assert "row 1501" in error.message

    too_long = pa.table({"code": ["ab"] * 2100 + ["abcd"]})
    error = await _raises(
        _write(pg, _sink(t, APPEND), too_long), ErrorCode.INVALID_ARGUMENT, "VALUE_OUT_OF_RANGE"
    )
    assert (error.metadata["column"], error.metadata["row"]) == ("code", "2101")

    overflow = pa.table({"amount": pa.array([D("1.00"), D("123456.00")], pa.decimal128(10, 2))})
    error = await _raises(
        _write(pg, _sink(t, APPEND), overflow), ErrorCode.INVALID_ARGUMENT, "VALUE_OUT_OF_RANGE"
    )
    assert (error.metadata["column"], error.metadata["row"]) == ("amount", "2")

    # Through the staging table and a SQL cast (a string into a uuid column).
    bad_uuid = pa.table({"id": [1, 2, 3], "u": [str(uuid.uuid4()), "not-a-uuid", None]})
    error = await _raises(
        _write(pg, _sink(t, UPSERT, ["id"]), bad_uuid),
        ErrorCode.INVALID_ARGUMENT,
        "INVALID_OPTION",  # no unique key: refused before any value
    )
    error = await _raises(
        _write(pg, _sink(t, APPEND), bad_uuid), ErrorCode.INVALID_ARGUMENT, "VALUE_OUT_OF_RANGE"
    )
    assert (error.metadata["column"], error.metadata["row"]) == ("u", "2")

    assert await db.conn.fetch(f'SELECT id, code FROM "{t}"') == [(1, "old")]
    unknown = pa.table({"nope": [1]})
    await _raises(
        _write(pg, _sink(t, APPEND), unknown), ErrorCode.INVALID_ARGUMENT, "UNKNOWN_COLUMN"
    )


# --------------------------------------------------------------------------- reads


async def _million(db: Db, key: bool) -> str:
    t = db.table("million")
    primary = "PRIMARY KEY" if key else ""
    await db.conn.execute(
        f'CREATE TABLE "{t}" (id bigint {primary}, grp integer, amount numeric(12,2), note text)'
    )
    await db.conn.execute(
        f'INSERT INTO "{t}" SELECT g, g % 97, (g % 100000) / 100.0, '
        f"CASE WHEN g % 10 = 0 THEN NULL ELSE 'n' || g END FROM generate_series(1, {MILLION}) g"
    )
    await db.conn.execute(f'ANALYZE "{t}"')
    return t


async def _check_split_read(pg: PostgresConnection, db: Db, t: str, kind: str) -> None:
    plan = await pg.plan_read(_table(t), ReadScope(), 4)
    assert len(plan.tickets) == 4
    assert all(
        kind in ticket.description or "pages" in ticket.description for ticket in plan.tickets
    )
    parts = await asyncio.gather(*(_read(pg, _table(t), ticket=tk.data) for tk in plan.tickets))
    assert all(part.num_rows > 100_000 for part in parts)
    whole = pa.concat_tables(parts)
    expected = await db.conn.fetchrow(
        f'SELECT count(*), sum(id), sum(amount), count(note), sum(grp) FROM "{t}"'
    )
    assert whole.num_rows == expected[0] == MILLION
    assert pc.sum(whole["id"]).as_py() == expected[1]
    assert pc.sum(whole["amount"]).as_py() == expected[2]
    assert pc.count(whole["note"]).as_py() == expected[3]
    assert pc.sum(whole["grp"]).as_py() == expected[4]
    assert pc.count_distinct(whole["id"]).as_py() == MILLION


async def test_million_rows_by_key_ranges(pg: PostgresConnection, db: Db) -> None:
    t = await _million(db, key=True)
    description = await pg.describe(_table(t))
    assert description.estimated_rows is not None
    assert abs(description.estimated_rows - MILLION) < MILLION // 10
    await _check_split_read(pg, db, t, "id")


async def test_million_rows_by_page_ranges(pg: PostgresConnection, db: Db) -> None:
    t = await _million(db, key=False)
    await _check_split_read(pg, db, t, "pages")


async def test_projection_and_predicate_pushdown(pg: PostgresConnection, db: Db) -> None:
    t = db.table("push")
    await db.conn.execute(
        f'CREATE TABLE "{t}" (id int, name text, amount numeric(8,2), at timestamptz, u uuid)'
    )
    await db.conn.execute(
        f"INSERT INTO \"{t}\" VALUES (1, 'a''b', 10.50, '2024-01-01T00:00:00Z', NULL), "
        "(2, NULL, 20.00, '2024-06-01T00:00:00Z', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), "
        "(3, 'c\\d', NULL, NULL, NULL)"
    )

    def where(*comparisons: predicate_pb2.Comparison) -> predicate_pb2.Predicate:
        return predicate_pb2.Predicate(all_of=list(comparisons))

    def cmp(column: str, op: int, *values: predicate_pb2.Literal) -> predicate_pb2.Comparison:
        return predicate_pb2.Comparison(column=column, operator=op, values=list(values))

    lit = predicate_pb2.Literal

    async def ids(predicate: predicate_pb2.Predicate, columns: tuple[str, ...] = ()) -> list[int]:
        data = await _read(pg, _table(t), ReadScope(columns or ("id",), predicate))
        return sorted(data.column("id").to_pylist())

    assert await ids(where(cmp("name", CMP.COMPARISON_OPERATOR_EQ, lit(string_value="a'b")))) == [1]
    assert await ids(where(cmp("name", CMP.COMPARISON_OPERATOR_EQ, lit(string_value="c\\d")))) == [
        3
    ]
    assert await ids(where(cmp("name", CMP.COMPARISON_OPERATOR_IS_NULL))) == [2]
    assert await ids(
        where(cmp("amount", CMP.COMPARISON_OPERATOR_GE, lit(decimal_value="10.5")))
    ) == [1, 2]
    assert await ids(
        where(cmp("id", CMP.COMPARISON_OPERATOR_IN, lit(int_value=1), lit(int_value=3)))
    ) == [1, 3]
    assert await ids(
        where(
            cmp("at", CMP.COMPARISON_OPERATOR_GT, lit(timestamp_value="2024-03-01T00:00:00+00:00")),
            cmp("amount", CMP.COMPARISON_OPERATOR_IS_NOT_NULL),
        )
    ) == [2]
    assert await ids(
        where(
            cmp(
                "u",
                CMP.COMPARISON_OPERATOR_EQ,
                lit(string_value="a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            )
        )
    ) == [2]
    # Not pushable (a string against a number): left to the executor, every row comes.
    assert await ids(where(cmp("id", CMP.COMPARISON_OPERATOR_EQ, lit(string_value="x")))) == [
        1,
        2,
        3,
    ]

    data = await _read(pg, _table(t), ReadScope(("amount", "id")))
    assert data.schema.names == ["amount", "id"]
    await _raises(
        _read(pg, _table(t), ReadScope(("nope",))), ErrorCode.INVALID_ARGUMENT, "UNKNOWN_COLUMN"
    )
    error = await _raises(
        _read(pg, _table(t), ReadScope((), where(cmp("nope", CMP.COMPARISON_OPERATOR_IS_NULL)))),
        ErrorCode.INVALID_ARGUMENT,
        "UNKNOWN_COLUMN",
    )
    assert error.violations[0].field == "predicate.all_of[0].column"

    # A query source: one ticket, pushdown applies to its result columns.
    source = _query(f'SELECT id, amount * 2 AS twice FROM "{t}" WHERE id < 3;')
    plan = await pg.plan_read(source, ReadScope(), 4)
    assert len(plan.tickets) == 1
    assert plan.schema == pa.schema([("id", pa.int32()), ("twice", pa.decimal128(38, 9))])
    predicate = where(cmp("twice", CMP.COMPARISON_OPERATOR_GT, lit(int_value=30)))
    data = await _read(pg, source, ReadScope((), predicate), plan.tickets[0].data)
    assert data.to_pylist() == [{"id": 2, "twice": D("40.00")}]


# --------------------------------------------------------------------------- errors


async def test_errors_are_precise(pg: PostgresConnection, db: Db) -> None:
    t = db.table("private")
    await db.conn.execute(f'CREATE TABLE "{t}" (id int)')

    await _raises(pg.describe(_table("dd_no_such_table")), ErrorCode.NOT_FOUND, "TABLE_NOT_FOUND")
    await _raises(pg.describe(_table("no_schema.no_table")), ErrorCode.NOT_FOUND, "TABLE_NOT_FOUND")
    await _raises(
        pg.describe(_query("SELECT * FROM dd_no_such_table")),
        ErrorCode.NOT_FOUND,
        "TABLE_NOT_FOUND",
    )
    for bad in (
        "SELEC 1",
        "SELECT 1; SELECT 2",
        f'DELETE FROM "{t}' + '"',
        "SELECT 1 AS a, 2 AS a",
        "",
    ):
        error = await _raises(
            pg.describe(_query(bad) if bad else _table("")),
            ErrorCode.INVALID_ARGUMENT,
            "INVALID_QUERY" if bad else "REQUIRED_FIELD_MISSING",
        )
        if bad:
            assert error.violations[0].field == "source.database.query"
    error = await _raises(
        _read(pg, _query("SELECT 1/0 AS x")),
        ErrorCode.INVALID_ARGUMENT,
        "INVALID_QUERY",
    )
    await _raises(
        _read(pg, _query(f'UPDATE "{t}" SET id = 1 RETURNING id')),
        ErrorCode.INVALID_ARGUMENT,
        "INVALID_QUERY",
    )
    # Numerics an Arrow decimal cannot hold fail the read, naming column and row.
    nan = db.table("nan")
    await db.conn.execute(f'CREATE TABLE "{nan}" (id int, x numeric(6,2), y numeric)')
    await db.conn.execute(f"INSERT INTO \"{nan}\" VALUES (1, 1, 1), (2, 'NaN', 2), (3, 3, 1e-12)")
    error = await _raises(
        _read(pg, _query(f'SELECT id, x FROM "{nan}" ORDER BY id')),
        ErrorCode.INVALID_ARGUMENT,
        "VALUE_OUT_OF_RANGE",
    )
    assert (error.metadata["column"], error.metadata["row"]) == ("x", "2")
    error = await _raises(
        _read(pg, _query(f'SELECT id, y FROM "{nan}" ORDER BY id')),
        ErrorCode.INVALID_ARGUMENT,
        "VALUE_OUT_OF_RANGE",
    )
    assert (error.metadata["column"], error.metadata["row"]) == ("y", "3")
    exact = await _read(pg, _query(f'SELECT y::numeric(20,14) AS y FROM "{nan}" WHERE id = 3'))
    assert exact.to_pylist() == [{"y": D("0.00000000000100")}]

    plan = await pg.plan_read(_table(t), ReadScope(), 1)
    await _raises(
        _read(pg, _table("pg_class"), ticket=plan.tickets[0].data),
        ErrorCode.INVALID_ARGUMENT,
        "INVALID_TICKET",
    )
    await _raises(
        _read(pg, _table(t), ticket=b"garbage"), ErrorCode.INVALID_ARGUMENT, "INVALID_TICKET"
    )

    # A role that does not exist; a role without privileges on the table.
    ghost = _connect(db, user=_name("ghost"), password="pw-" + uuid.uuid4().hex)
    limited = _connect(db, user=await db.role())
    dead = _connect(db, dsn="postgresql://postgres:s3cret-pw@127.0.0.1:1/test", connect_timeout=2)
    try:
        await _raises(ghost.test(), ErrorCode.UNAUTHENTICATED, "AUTHENTICATION_FAILED")
        await _raises(_read(limited, _table(t)), ErrorCode.PERMISSION_DENIED, "ACCESS_DENIED")
        await _raises(
            _read(limited, _query(f'SELECT * FROM "{t}"')),
            ErrorCode.PERMISSION_DENIED,
            "ACCESS_DENIED",
        )
        await _raises(
            _write(limited, _sink(t), pa.table({"id": [1]})),
            ErrorCode.PERMISSION_DENIED,
            "ACCESS_DENIED",
        )
        error = await _raises(dead.test(), ErrorCode.UNAVAILABLE, "SOURCE_UNAVAILABLE")
        assert "s3cret-pw" not in error.message
        await _raises(_read(dead, _table(t)), ErrorCode.UNAVAILABLE, "SOURCE_UNAVAILABLE")
        await _raises(
            _write(dead, _sink(t), pa.table({"id": [1]})), ErrorCode.UNAVAILABLE, "SINK_UNAVAILABLE"
        )
        assert "s3cret-pw" not in repr(dead.public_options())
    finally:
        for connection in (ghost, limited, dead):
            await connection.close()
    assert await db.count(t) == 0


async def test_a_read_only_role_reads_queries_and_cannot_write(db: Db) -> None:
    t = db.table("readonly")
    await db.conn.execute(f'CREATE TABLE "{t}" (id int, amount numeric(8,2))')
    await db.conn.execute(f'INSERT INTO "{t}" VALUES (1, 2.50)')
    role = await db.role()
    await db.conn.execute(f'GRANT SELECT, INSERT ON "{t}" TO "{role}"')
    # Like a hot standby: no temporary view can describe a query, so types lose modifiers.
    await db.conn.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
    reader = _connect(db, user=role)
    try:
        source = _query(f'SELECT id, amount, amount AS again FROM "{t}"')
        description = await reader.describe(source)
        assert description.schema == pa.schema(
            [("id", pa.int32()), ("amount", pa.decimal128(38, 9)), ("again", pa.decimal128(38, 9))]
        )
        assert (await _read(reader, source)).to_pylist() == [
            {"id": 1, "amount": D("2.5"), "again": D("2.5")}
        ]
        await _raises(
            reader.describe(_query(f'SELECT id, id FROM "{t}"')),
            ErrorCode.INVALID_ARGUMENT,
            "INVALID_QUERY",
        )
        await _raises(
            _write(reader, _sink(t), pa.table({"id": [2]})),
            ErrorCode.PERMISSION_DENIED,
            "ACCESS_DENIED",
        )
    finally:
        await reader.close()
        await db.conn.execute(f'REVOKE ALL ON "{t}" FROM "{role}"')
    assert await db.count(t) == 1


def test_options_are_checked_and_never_show_secrets() -> None:
    connection = POSTGRES_CONNECTOR_TYPE.create(
        "pg",
        {"dsn": "postgresql://alice:hunter22@db.example:6543/sales?sslmode=require"},
        Path("."),
    )
    assert connection.public_options() == {
        "host": "db.example",
        "port": "6543",
        "database": "sales",
        "user": "alice",
    }
    assert isinstance(connection, PostgresConnection)
    assert connection.settings.sslmode == "require"
    assert "hunter22" not in repr(connection.settings)
    separate = POSTGRES_CONNECTOR_TYPE.create(
        "pg", {"host": "h", "user": "u", "password": "p@ss:/word", "database": "d"}, Path(".")
    )
    assert isinstance(separate, PostgresConnection)
    assert "p%40ss%3A%2Fword" in separate.settings.adbc_uri(read_only=True)
    for bad, option in [
        ({"dsn": "mysql://x@h/db?password=leaky-secret"}, "dsn"),
        ({"dsn": "postgresql://h/db?weird=1"}, "dsn"),
        ({"user": "u"}, "host"),
        ({"host": "h", "sslmode": "sometimes"}, "sslmode"),
        ({"host": "h", "pool_size": 0}, "pool_size"),
    ]:
        with pytest.raises(DomainError) as info:
            POSTGRES_CONNECTOR_TYPE.create("pg", bad, Path("."))
        assert info.value.reason == "CONFIG_INVALID"
        assert info.value.violations[0].field == option
        assert "leaky-secret" not in info.value.message


# --------------------------------------------------------------------------- gRPC service


@pytest.fixture
async def service(db: Db, tmp_path: Path) -> AsyncIterator[pb_grpc.ConnectorServiceStub]:
    limited = await db.role()
    config = parse_config(
        {
            "connections": {
                # Trust auth accepts any password: this one must never be shown.
                "pg": {
                    "type": "postgres",
                    "dsn": f"postgresql://{USER}:s3cret-pw@{HOST}:{PORT}/{DATABASE}",
                    "ledger_table": db.table("ledger"),
                },
                "limited": {
                    "type": "postgres",
                    "host": HOST,
                    "user": limited,
                    "database": DATABASE,
                },
                "ghost": {"type": "postgres", "host": HOST, "user": _name("ghost")},
                "dead": {"type": "postgres", "host": HOST, "port": 1, "connect_timeout": 2},
            }
        },
        tmp_path,
    )
    server = await build_server(config)
    await server.start()
    try:
        async with insecure_channel(server.address) as channel:
            yield pb_grpc.ConnectorServiceStub(channel)
    finally:
        await server.stop(grace=1)


def _spec(connection: str = "pg", table: str = "", query: str = "") -> step_pb2.SourceSpec:
    return step_pb2.SourceSpec(
        database=step_pb2.DatabaseSource(connection=connection, table=table, query=query)
    )


async def _grpc_read(
    stub: pb_grpc.ConnectorServiceStub, source: step_pb2.SourceSpec, ticket: bytes = b""
) -> pa.Table:
    request = pb.ReadRequest(source=source, ticket=ticket)
    frames = [frame async for frame in stub.Read(request, timeout=TIMEOUT)]
    return table_of(frames)


async def _grpc_write(
    stub: pb_grpc.ConnectorServiceStub,
    table: str,
    key: str,
    data: pa.Table,
    mode: int = APPEND,
    connection: str = "pg",
) -> pb.WriteResponse:
    sink = step_pb2.SinkSpec(
        database=step_pb2.DatabaseSink(connection=connection, table=table, mode=mode)
    )

    async def requests() -> AsyncIterator[pb.WriteRequest]:
        yield pb.WriteRequest(header=pb.WriteHeader(sink=sink, idempotency_key=key))
        yield pb.WriteRequest(schema=encode_schema(data.schema))
        counter = StreamCounter()
        for batch in data.to_batches(max_chunksize=10_000):
            yield pb.WriteRequest(record_batch=encode_batch(batch, counter))
        yield pb.WriteRequest(complete=counter.complete())

    return await stub.Write(requests(), timeout=TIMEOUT)


async def _rpc_error(call: Any) -> RpcErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return details_of(info.value)


async def test_service_lists_tests_and_describes(
    service: pb_grpc.ConnectorServiceStub, db: Db
) -> None:
    types = await service.ListConnectorTypes(pb.ListConnectorTypesRequest(), timeout=TIMEOUT)
    postgres = next(t for t in types.types if t.type == "postgres")
    assert pb.CAPABILITY_SPLITS in postgres.capabilities
    assert pb.CAPABILITY_UPSERT in postgres.capabilities
    secret_options = {o.name for o in postgres.options if o.secret}
    assert secret_options == {"dsn", "password"}

    listed = await service.ListConnections(pb.ListConnectionsRequest(), timeout=TIMEOUT)
    pg = next(c for c in listed.connections if c.name == "pg")
    assert dict(pg.options) == {"host": HOST, "port": "5432", "database": DATABASE, "user": USER}
    assert "s3cret-pw" not in str(listed)

    ok = await service.TestConnection(pb.TestConnectionRequest(name="pg"), timeout=TIMEOUT)
    assert ok.ok
    assert "PostgreSQL 1" in ok.message
    assert "s3cret-pw" not in ok.message
    ghost = await service.TestConnection(pb.TestConnectionRequest(name="ghost"), timeout=TIMEOUT)
    assert (ghost.ok, ghost.reason) == (False, "AUTHENTICATION_FAILED")
    dead = await service.TestConnection(pb.TestConnectionRequest(name="dead"), timeout=TIMEOUT)
    assert (dead.ok, dead.reason) == (False, "SOURCE_UNAVAILABLE")

    t = db.table("described")
    await db.conn.execute(f'CREATE TABLE "{t}" (id bigint PRIMARY KEY, amount numeric(9,2))')
    described = await service.DescribeSource(
        pb.DescribeSourceRequest(source=_spec(table=t)), timeout=TIMEOUT
    )
    assert decode_schema(described.schema) == pa.schema(
        [pa.field("id", pa.int64(), nullable=False), ("amount", pa.decimal128(9, 2))]
    )


async def test_service_split_reads_and_writes(
    service: pb_grpc.ConnectorServiceStub, db: Db
) -> None:
    source, target = db.table("src"), db.table("dst")
    await db.conn.execute(
        f'CREATE TABLE "{source}" AS SELECT g AS id, g * 1.5 AS x, md5(g::text) AS h '
        "FROM generate_series(1, 200000) g"
    )
    plan = await service.PlanRead(
        pb.PlanReadRequest(source=_spec(table=source), max_splits=4), timeout=TIMEOUT
    )
    assert len(plan.tickets) == 4
    parts = await asyncio.gather(
        *(_grpc_read(service, _spec(table=source), t.ticket) for t in plan.tickets)
    )
    data = pa.concat_tables(parts).sort_by("id")
    assert data.num_rows == 200_000
    assert data.column("id").to_pylist() == list(range(1, 200_001))

    written = await _grpc_write(service, target, "w1", data)
    assert (written.rows_written, written.replayed) == (200_000, False)
    assert written.location == f"postgres://pg/public.{target}"
    again = await _grpc_write(service, target, "w1", data)
    assert (again.rows_written, again.replayed) == (200_000, True)
    assert (
        await db.conn.fetchval(
            f'SELECT count(*) FROM "{source}" s JOIN "{target}" t USING (id) '
            "WHERE s.x = t.x AND s.h = t.h"
        )
        == 200_000
    )


async def test_service_errors(service: pb_grpc.ConnectorServiceStub, db: Db) -> None:
    t = db.table("errors")
    await db.conn.execute(f'CREATE TABLE "{t}" (id integer, code varchar(3))')

    missing = await _rpc_error(
        service.DescribeSource(pb.DescribeSourceRequest(source=_spec(table="dd_nope")))
    )
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "TABLE_NOT_FOUND")
    bad_sql = await _rpc_error(
        service.PlanRead(pb.PlanReadRequest(source=_spec(query="SELECT FROM WHERE")))
    )
    assert (bad_sql.code, bad_sql.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_QUERY")
    assert [v.field for v in bad_sql.violations] == ["source.database.query"]
    denied = await _rpc_error(_grpc_read(service, _spec(connection="limited", table=t)))
    assert (denied.code, denied.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED")
    ghost = await _rpc_error(_grpc_read(service, _spec(connection="ghost", table=t)))
    assert (ghost.code, ghost.reason) == (grpc.StatusCode.UNAUTHENTICATED, "AUTHENTICATION_FAILED")
    dead = await _rpc_error(_grpc_read(service, _spec(connection="dead", table=t)))
    assert (dead.code, dead.reason) == (grpc.StatusCode.UNAVAILABLE, "SOURCE_UNAVAILABLE")

    too_big = pa.table({"id": pa.array([1, 2, 10**12], pa.int64())})
    error = await _rpc_error(_grpc_write(service, t, "k1", too_big))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALUE_OUT_OF_RANGE")
    assert (error.metadata["column"], error.metadata["row"]) == ("id", "3")
    too_long = pa.table({"id": [1, 2], "code": ["abc", "abcd"]})
    error = await _rpc_error(_grpc_write(service, t, "k2", too_long))
    assert (error.reason, error.metadata["column"], error.metadata["row"]) == (
        "VALUE_OUT_OF_RANGE",
        "code",
        "2",
    )
    assert await db.count(t) == 0

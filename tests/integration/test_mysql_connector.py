"""The MySQL / MariaDB connector against the real MariaDB on 127.0.0.1:3306 (root, db ``test``).

Every test makes its own uniquely named tables (and ledger table) and drops them.
Fixtures fail loudly when the server is missing. Setup and checks go through a plain
asyncmy connection, independent of the connector under test. Measured rates are
printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import asyncmy
import asyncmy.errors
import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from arrow_streams import table_of

from datadog_platform.api.common.v1 import predicate_pb2, step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.connector import mysql as mysql_module
from datadog_platform.connector.app import build_server, parse_config
from datadog_platform.connector.base import ReadScope, WriteOutcome
from datadog_platform.connector.mysql import MYSQL_CONNECTOR_TYPE, MysqlConnection
from datadog_platform.core.arrow_frames import (
    StreamCounter,
    decode_schema,
    encode_batch,
    encode_schema,
)
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.core.status import RpcErrorDetails, details_of

HOST, PORT, USER, DATABASE = "127.0.0.1", 3306, "root", "test"
TIMEOUT = 30
MILLION = 1_000_000
CMP = predicate_pb2
BOTH_PATHS = pytest.mark.parametrize("load_data", [True, False], ids=["load-data", "insert"])


def _name(prefix: str) -> str:
    return f"dd_{prefix}_{uuid.uuid4().hex[:10]}"


def _options(**overrides: Any) -> dict[str, Any]:
    return {
        "host": HOST,
        "port": PORT,
        "user": USER,
        "password": "",
        "database": DATABASE,
        **overrides,
    }


async def _connect_plain() -> Any:
    try:
        return await asyncmy.connect(
            host=HOST,
            port=PORT,
            user=USER,
            password="",
            database=DATABASE,
            charset="utf8mb4",
            autocommit=True,
        )
    except Exception as exc:  # the server is part of the test environment: never skip
        pytest.fail(f"MariaDB must run on {HOST}:{PORT} (user {USER}, db {DATABASE}): {exc}")


class Db:
    """A plain session for setup and checks; drops what the test created."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.tables: list[str] = []

    def table(self, prefix: str) -> str:
        name = _name(prefix)
        self.tables.append(name)
        return name

    async def execute(self, sql: str, args: Any = None) -> None:
        async with self.conn.cursor() as cur:
            await cur.execute(sql, args)

    async def rows(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        async with self.conn.cursor() as cur:
            await cur.execute(sql, args)
            return list(await cur.fetchall())

    async def count(self, table: str) -> int:
        return int((await self.rows(f"SELECT COUNT(*) FROM `{table}`"))[0][0])

    async def exists(self, table: str) -> bool:
        found = await self.rows(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (DATABASE, table),
        )
        return bool(found)

    async def drop_all(self) -> None:
        for table in self.tables:
            # Not through a cursor: it would log the "unknown table" note.
            await self.conn.query(f"DROP TABLE IF EXISTS `{table}`")


@pytest.fixture
async def db() -> AsyncIterator[Db]:
    conn = await _connect_plain()
    db = Db(conn)
    try:
        yield db
    finally:
        await db.drop_all()
        conn.close()


def _make(db: Db, **overrides: Any) -> MysqlConnection:
    """A connector connection whose ledger table is private to the test (and dropped)."""
    if "ledger_table" not in overrides:
        overrides["ledger_table"] = db.table("ledger")
    connection = MYSQL_CONNECTOR_TYPE.create("shop", _options(**overrides), Path("."))
    assert isinstance(connection, MysqlConnection)
    return connection


@pytest.fixture
async def shop(db: Db) -> AsyncIterator[MysqlConnection]:
    connection = _make(db)
    yield connection
    await connection.close()


def _table_source(table: str) -> step_pb2.DatabaseSource:
    return step_pb2.DatabaseSource(connection="shop", table=table)


def _query_source(query: str) -> step_pb2.DatabaseSource:
    return step_pb2.DatabaseSource(connection="shop", query=query)


def _sink(table: str, mode: int = step_pb2.WRITE_MODE_APPEND, keys: Iterable[str] = ()) -> Any:
    return step_pb2.DatabaseSink(connection="shop", table=table, mode=mode, key_columns=keys)


async def _read(
    connection: MysqlConnection,
    source: step_pb2.DatabaseSource,
    scope: ReadScope | None = None,
    ticket: bytes = b"",
) -> pa.Table:
    async with connection.read(source, scope or ReadScope(), ticket) as stream:
        batches = [batch async for batch in stream.batches]
        return pa.Table.from_batches(batches, schema=stream.schema)


async def _stream(
    data: pa.Table, rows_per_batch: int = 1000, fail_after: int | None = None
) -> AsyncIterator[pa.RecordBatch]:
    for index, batch in enumerate(data.to_batches(max_chunksize=rows_per_batch)):
        if fail_after is not None and index == fail_after:
            raise ConnectionResetError("the write stream broke")
        yield batch


async def _write(
    connection: MysqlConnection,
    table: str,
    data: pa.Table,
    mode: int = step_pb2.WRITE_MODE_APPEND,
    key: str | None = None,
    keys: Iterable[str] = (),
    rows_per_batch: int = 1000,
    fail_after: int | None = None,
) -> WriteOutcome:
    return await connection.write(
        _sink(table, mode, keys),
        key or f"run-{uuid.uuid4().hex}/stage/out",
        data.schema,
        _stream(data, rows_per_batch, fail_after),
    )


async def _domain_error(call: Any) -> DomainError:
    with pytest.raises(DomainError) as info:
        await call
    return info.value


# --------------------------------------------------------------------------- types

TYPES_DDL = """CREATE TABLE `{t}` (
  id INT PRIMARY KEY,
  ti TINYINT, tu TINYINT UNSIGNED, b BOOLEAN, si SMALLINT, su SMALLINT UNSIGNED,
  mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
  de DECIMAL(10,3), dw DECIMAL(40,10), fl FLOAT, db DOUBLE,
  ch CHAR(10), vc VARCHAR(100), tx MEDIUMTEXT, js JSON,
  bn BINARY(4), vb VARBINARY(100), bl LONGBLOB,
  da DATE, dt DATETIME, dt6 DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6), yr YEAR,
  en ENUM('a','b')
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""

EXPECTED_TYPES = {
    "id": pa.int32(),
    "ti": pa.int8(),
    "tu": pa.uint8(),
    "b": pa.bool_(),
    "si": pa.int16(),
    "su": pa.uint16(),
    "mi": pa.int32(),
    "mu": pa.uint32(),
    "i": pa.int32(),
    "iu": pa.uint32(),
    "bi": pa.int64(),
    "bu": pa.uint64(),
    "de": pa.decimal128(10, 3),
    "dw": pa.decimal256(40, 10),
    "fl": pa.float32(),
    "db": pa.float64(),
    "ch": pa.string(),
    "vc": pa.string(),
    "tx": pa.string(),
    "js": pa.string(),
    "bn": pa.binary(),
    "vb": pa.binary(),
    "bl": pa.binary(),
    "da": pa.date32(),
    "dt": pa.timestamp("us"),
    "dt6": pa.timestamp("us"),
    "ts": pa.timestamp("us", "UTC"),
    "tm": pa.duration("us"),
    "yr": pa.int16(),
    "en": pa.string(),
}
D = decimal.Decimal
TRICKY = "tab\there\nnew line\\back'quote\"dq\x00nul \\N ,;"
BIG_TEXT = "Zoë 😀 " * 150_000  # ~1.5 MB of 4-byte and 2-byte characters
BIG_BLOB = bytes(range(256)) * 4096 + b"\t\n\\\x00"  # 1 MiB with every byte value
UTC = dt.UTC


def _type_rows() -> list[dict[str, Any]]:
    """Rows for TYPES_DDL as Python values (what the connector must read)."""
    low = {
        "id": 1,
        "ti": -128,
        "tu": 0,
        "b": False,
        "si": -32768,
        "su": 0,
        "mi": -8388608,
        "mu": 0,
        "i": -2147483648,
        "iu": 0,
        "bi": -(2**63),
        "bu": 0,
        "de": D("-9999999.999"),
        "dw": D("-" + "9" * 30 + "." + "9" * 10),
        "fl": -1.5,
        "db": -1.7976931348623157e308,
        "ch": "",
        "vc": "",
        "tx": "",
        "js": "[]",
        "bn": b"\x00\x00\x00\x00",
        "vb": b"",
        "bl": b"",
        "da": dt.date(1000, 1, 1),
        "dt": dt.datetime(1000, 1, 1),
        "dt6": dt.datetime(1000, 1, 1, 0, 0, 0, 1),
        "ts": dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
        "tm": dt.timedelta(hours=-838, minutes=-59, seconds=-59),
        "yr": 1901,
        "en": "a",
    }
    high = {
        "id": 2,
        "ti": 127,
        "tu": 255,
        "b": True,
        "si": 32767,
        "su": 65535,
        "mi": 8388607,
        "mu": 16777215,
        "i": 2147483647,
        "iu": 4294967295,
        "bi": 2**63 - 1,
        "bu": 2**64 - 1,
        "de": D("9999999.999"),
        "dw": D("9" * 30 + "." + "9" * 10),
        "fl": 3.25,
        "db": 1.7976931348623157e308,
        "ch": "héllo",
        "vc": "emoji 😀🎉 ünïcödé 中文 עברית",
        "tx": BIG_TEXT,
        "js": '{"a": [1, 2, {"b": null}], "e": "😀"}',
        "bn": b"\xde\xad\xbe\xef",
        "vb": b"\x00\xff\t\n\\'",
        "bl": BIG_BLOB,
        "da": dt.date(9999, 12, 31),
        "dt": dt.datetime(9999, 12, 31, 23, 59, 59),
        "dt6": dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
        "ts": dt.datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=UTC),
        "tm": dt.timedelta(hours=838, minutes=59, seconds=59),
        "yr": 2155,
        "en": "b",
    }
    nulls = {name: None for name in EXPECTED_TYPES} | {"id": 3}
    tricky = dict(nulls) | {
        "id": 4,
        "vc": TRICKY[:100],
        "tx": TRICKY,
        "bl": TRICKY.encode(),
        "tm": dt.timedelta(seconds=-1, microseconds=500000),  # -00:00:00.5
        "dt6": dt.datetime(2024, 2, 29, 12, 30, 45, 123456),
        "ts": dt.datetime(2024, 2, 29, 12, 30, 45, 123456, tzinfo=UTC),
        "b": True,
        "de": D("0.001"),
    }
    return [low, high, nulls, tricky]


def _sql_value(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.replace(tzinfo=None)  # the session writes UTC below
    if isinstance(value, dt.timedelta):  # the driver mangles negative intervals
        micros = abs(value // dt.timedelta(microseconds=1))
        seconds, fraction = divmod(micros, 1_000_000)
        sign = "-" if value < dt.timedelta(0) else ""
        return f"{sign}{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{fraction:06d}"
    return value


async def _create_types_table(db: Db, rows: list[dict[str, Any]] | None = None) -> str:
    table = db.table("types")
    await db.execute(TYPES_DDL.format(t=table))
    await db.execute("SET time_zone = '+00:00'")
    names = list(EXPECTED_TYPES)
    for row in _type_rows() if rows is None else rows:
        placeholders = ", ".join(["%s"] * len(names))
        await db.execute(
            f"INSERT INTO `{table}` ({', '.join(names)}) VALUES ({placeholders})",
            tuple(_sql_value(row[n]) for n in names),
        )
    return table


def _expected_table() -> pa.Table:
    rows = _type_rows()
    return pa.table(
        {name: pa.array([r[name] for r in rows], t) for name, t in EXPECTED_TYPES.items()}
    )


async def test_types_read_exactly_with_nulls_unicode_and_extremes(
    db: Db, shop: MysqlConnection
) -> None:
    table = await _create_types_table(db)
    got = await _read(shop, _table_source(table))
    assert {f.name: f.type for f in got.schema} == EXPECTED_TYPES
    assert not got.schema.field("id").nullable
    expected = _expected_table()
    for name in EXPECTED_TYPES:
        assert got.column(name).to_pylist() == expected.column(name).to_pylist(), name
    assert got.column("bu").to_pylist()[1] == 18446744073709551615
    described = await shop.describe(_table_source(table))
    assert described.schema == got.schema
    assert described.estimated_rows is not None


@BOTH_PATHS
async def test_types_round_trip_through_writes(db: Db, load_data: bool) -> None:
    shop = _make(db, load_data_local=load_data)
    try:
        source = await _create_types_table(db)
        original = await _read(shop, _table_source(source))

        # Into a table with the very same definition: every column type is written.
        same = db.table("same")
        await db.execute(TYPES_DDL.format(t=same))
        outcome = await _write(shop, same, original, rows_per_batch=3)
        assert (outcome.rows_written, outcome.replayed) == (4, False)
        assert outcome.location == f"mysql://{HOST}:{PORT}/{DATABASE}.{same}"
        assert (await _read(shop, _table_source(same))).equals(original)

        # Into a table the connector creates from the Arrow schema.
        created = db.table("created")
        await _write(shop, created, original)
        back = await _read(shop, _table_source(created))
        assert back.schema.names == original.schema.names
        for name in original.schema.names:
            want = original.column(name)
            if name == "ts":  # a zoned timestamp is stored as its UTC wall time (DATETIME)
                want = want.cast(pa.timestamp("us"))
            got = back.column(name)
            if pa.types.is_fixed_size_binary(want.type) or name in ("bn", "vb", "bl"):
                got = got.cast(pa.binary())
            assert got.cast(want.type).to_pylist() == want.to_pylist(), name
    finally:
        await shop.close()


async def test_created_table_maps_arrow_types_back(db: Db, shop: MysqlConnection) -> None:
    data = pa.table(
        {
            "k": pa.array(["a", "b"]),
            "flag": pa.array([True, None]),
            "u8": pa.array([255, None], pa.uint8()),
            "u64": pa.array([2**64 - 1, 0], pa.uint64()),
            "f32": pa.array([1.5, None], pa.float32()),
            "dec": pa.array([D("1.50"), None], pa.decimal128(5, 2)),
            "day": pa.array([dt.date(2024, 1, 2), None]),
            "at": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, 6), None], pa.timestamp("ns")),
            "clock": pa.array([dt.time(12, 30, 0, 500000), None], pa.time64("us")),
            "blob": pa.array([b"\x00\x01", None], pa.binary()),
            "tags": pa.array([["x", "y"], None], pa.list_(pa.string())),
            "cat": pa.array(["p", "q"]).dictionary_encode(),
        }
    )
    table = db.table("mapped")
    await _write(shop, table, data, mode=step_pb2.WRITE_MODE_UPSERT, keys=["k"])
    columns = {
        r[0]: (r[1], r[2])
        for r in await db.rows(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (DATABASE, table),
        )
    }
    assert columns["k"] == ("varchar(255)", "NO")
    assert columns["flag"][0] == "tinyint(1)"
    assert columns["u8"][0] == "tinyint(3) unsigned"
    assert columns["u64"][0] == "bigint(20) unsigned"
    assert columns["f32"][0] == "float"
    assert columns["dec"][0] == "decimal(5,2)"
    assert columns["at"][0] == "datetime(6)"
    assert columns["clock"][0] == "time(6)"
    assert columns["blob"][0] == "longblob"
    assert columns["tags"][0] == "longtext"  # MariaDB's JSON
    back = await _read(shop, _table_source(table))
    assert back.column("u64").to_pylist() == [2**64 - 1, 0]
    assert back.column("at").to_pylist()[0] == dt.datetime(2024, 1, 2, 3, 4, 5, 6)
    assert back.column("clock").to_pylist()[0] == dt.timedelta(hours=12, minutes=30, seconds=0.5)
    assert back.column("tags").to_pylist() == ['["x", "y"]', None]
    assert back.column("cat").to_pylist() == ["p", "q"]


async def test_empty_table_reads_its_schema_and_empty_write_creates_it(
    db: Db, shop: MysqlConnection
) -> None:
    table = await _create_types_table(db, rows=[])
    got = await _read(shop, _table_source(table))
    assert got.num_rows == 0
    assert {f.name: f.type for f in got.schema} == EXPECTED_TYPES
    plan = await shop.plan_read(_table_source(table), ReadScope(), 4)
    assert len(plan.tickets) == 1

    created = db.table("empty")
    outcome = await shop.write(_sink(created), "k-empty-" + created, got.schema, _stream(got))
    assert outcome.rows_written == 0
    assert await db.exists(created)
    assert await db.count(created) == 0


async def test_query_projection_and_predicate_pushdown(db: Db, shop: MysqlConnection) -> None:
    table = await _create_types_table(db)
    predicate = CMP.Predicate(
        all_of=[
            CMP.Comparison(
                column="id",
                operator=CMP.COMPARISON_OPERATOR_IN,
                values=[CMP.Literal(int_value=1), CMP.Literal(int_value=2)],
            ),
            CMP.Comparison(column="vc", operator=CMP.COMPARISON_OPERATOR_IS_NOT_NULL),
            CMP.Comparison(
                column="dt6",
                operator=CMP.COMPARISON_OPERATOR_GE,
                values=[CMP.Literal(timestamp_value="1000-01-01T00:00:00+00:00")],
            ),
        ]
    )
    scope = ReadScope(columns=("vc", "id"), predicate=predicate)
    got = await _read(shop, _table_source(table), scope)
    assert got.schema.names == ["vc", "id"]
    assert sorted(got.to_pylist(), key=lambda r: r["id"]) == [
        {"vc": "", "id": 1},
        {"vc": "emoji 😀🎉 ünïcödé 中文 עברית", "id": 2},
    ]
    # A query (with a '%' and a trailing comment) wrapped for the same pushdown.
    query = f"SELECT id, vc, 'x%' AS pct FROM `{table}` WHERE vc LIKE '%' -- all\n;"
    equal = CMP.Predicate(
        all_of=[
            CMP.Comparison(
                column="vc",
                operator=CMP.COMPARISON_OPERATOR_EQ,
                values=[CMP.Literal(string_value=TRICKY[:100])],
            )
        ]
    )
    got = await _read(shop, _query_source(query), ReadScope(("pct", "id"), equal))
    assert got.to_pylist() == [{"pct": "x%", "id": 4}]
    whole = await _read(shop, _query_source(query))
    assert whole.num_rows == 3
    # Decimal, date and bool literals.
    typed = CMP.Predicate(
        all_of=[
            CMP.Comparison(
                column="de",
                operator=CMP.COMPARISON_OPERATOR_LT,
                values=[CMP.Literal(decimal_value="0.5")],
            ),
            CMP.Comparison(
                column="b", operator=CMP.COMPARISON_OPERATOR_EQ, values=[CMP.Literal(bool_value=1)]
            ),
        ]
    )
    got = await _read(shop, _table_source(table), ReadScope(("id",), typed))
    assert got.column("id").to_pylist() == [4]
    with pytest.raises(DomainError) as info:
        await _read(shop, _table_source(table), ReadScope(("nope",)))
    assert info.value.reason == "UNKNOWN_COLUMN"
    bad = CMP.Predicate(all_of=[CMP.Comparison(column="zz", operator=CMP.COMPARISON_OPERATOR_EQ)])
    with pytest.raises(DomainError) as info:
        await _read(shop, _table_source(table), ReadScope(predicate=bad))
    assert info.value.reason == "UNKNOWN_COLUMN"


# --------------------------------------------------------------------------- writes


def _people(ids: Iterable[int], tag: str = "v1") -> pa.Table:
    ids = list(ids)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array([f"person {i} {tag} 😀" for i in ids]),
            "score": pa.array([i * 0.5 for i in ids]),
        }
    )


async def _people_table(db: Db) -> str:
    table = db.table("people")
    await db.execute(
        f"CREATE TABLE `{table}` (id BIGINT PRIMARY KEY, name VARCHAR(50), score DOUBLE)"
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    )
    return table


async def _ids_and_names(db: Db, table: str) -> list[tuple[int, str]]:
    return [(int(r[0]), r[1]) for r in await db.rows(f"SELECT id, name FROM `{table}` ORDER BY id")]


@BOTH_PATHS
async def test_write_modes_append_overwrite_upsert(db: Db, load_data: bool) -> None:
    shop = _make(db, load_data_local=load_data)
    try:
        table = await _people_table(db)
        assert (await _write(shop, table, _people(range(5)))).rows_written == 5
        assert (await _write(shop, table, _people(range(5, 8)))).rows_written == 3
        assert await db.count(table) == 8

        outcome = await _write(shop, table, _people(range(100, 102)), step_pb2.WRITE_MODE_OVERWRITE)
        assert outcome.rows_written == 2
        assert [i for i, _ in await _ids_and_names(db, table)] == [100, 101]

        upsert = await _write(
            shop, table, _people([101, 102], "v2"), step_pb2.WRITE_MODE_UPSERT, keys=["id"]
        )
        assert upsert.rows_written == 2
        assert await _ids_and_names(db, table) == [
            (100, "person 100 v1 😀"),
            (101, "person 101 v2 😀"),
            (102, "person 102 v2 😀"),
        ]
        # Unspecified mode is OVERWRITE.
        await _write(shop, table, _people([7]), step_pb2.WRITE_MODE_UNSPECIFIED)
        assert [i for i, _ in await _ids_and_names(db, table)] == [7]
    finally:
        await shop.close()


async def test_upsert_requires_a_unique_key_and_creates_one(db: Db, shop: MysqlConnection) -> None:
    table = await _people_table(db)
    error = await _domain_error(
        _write(shop, table, _people([1]), step_pb2.WRITE_MODE_UPSERT, keys=["name"])
    )
    assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, "INVALID_OPTION")
    assert error.violations[0].field == "header.sink.database.key_columns"
    assert "PRIMARY (id)" in error.message
    error = await _domain_error(_write(shop, table, _people([1]), step_pb2.WRITE_MODE_UPSERT))
    assert error.reason == "INVALID_OPTION"
    error = await _domain_error(
        _write(shop, table, _people([1]), step_pb2.WRITE_MODE_UPSERT, keys=["missing"])
    )
    assert error.reason == "INVALID_OPTION"
    assert await db.count(table) == 0

    fresh = db.table("fresh")
    await _write(shop, fresh, _people([1, 2]), step_pb2.WRITE_MODE_UPSERT, keys=["id"])
    await _write(shop, fresh, _people([2, 3], "v2"), step_pb2.WRITE_MODE_UPSERT, keys=["id"])
    assert await _ids_and_names(db, fresh) == [
        (1, "person 1 v1 😀"),
        (2, "person 2 v2 😀"),
        (3, "person 3 v2 😀"),
    ]


async def test_replayed_key_writes_nothing_and_answers_the_original_count(
    db: Db, shop: MysqlConnection
) -> None:
    table = await _people_table(db)
    key = f"run-{uuid.uuid4().hex}/stage-1/out"
    first = await _write(shop, table, _people(range(10)), key=key)
    assert (first.rows_written, first.replayed) == (10, False)
    again = await _write(shop, table, _people(range(10, 50)), key=key)
    assert (again.rows_written, again.replayed) == (10, True)
    # Even an overwrite with that key changes nothing.
    again = await _write(shop, table, _people([99]), step_pb2.WRITE_MODE_OVERWRITE, key=key)
    assert again.replayed
    assert await db.count(table) == 10
    ledger = shop.settings.ledger_table
    rows = await db.rows(
        f"SELECT target, rows_written FROM `{ledger}` WHERE idempotency_key = %s", key
    )
    assert rows == [(f"{DATABASE}.{table}", 10)]


async def test_concurrent_writes_with_one_key_commit_once(db: Db) -> None:
    ledger = db.table("ledger")
    one, two = _make(db, ledger_table=ledger), _make(db, ledger_table=ledger)
    try:
        table = await _people_table(db)
        key = f"run-{uuid.uuid4().hex}/stage/out"
        outcomes = await asyncio.gather(
            _write(one, table, _people(range(0, 3000)), key=key, rows_per_batch=500),
            _write(two, table, _people(range(3000, 6000)), key=key, rows_per_batch=500),
        )
        assert sorted(o.replayed for o in outcomes) == [False, True]
        assert {o.rows_written for o in outcomes} == {3000}
        assert await db.count(table) == 3000
    finally:
        await one.close()
        await two.close()


async def test_a_long_key_is_stored_hashed_and_still_replays(db: Db, shop: MysqlConnection) -> None:
    table = await _people_table(db)
    key = "run/" + "x" * 400
    assert not (await _write(shop, table, _people([1]), key=key)).replayed
    assert (await _write(shop, table, _people([2]), key=key)).replayed
    assert await db.count(table) == 1


@BOTH_PATHS
async def test_broken_stream_leaves_the_table_exactly_as_it_was(db: Db, load_data: bool) -> None:
    shop = _make(db, load_data_local=load_data)
    try:
        table = await _people_table(db)
        await _write(shop, table, _people(range(3)))
        key = f"run-{uuid.uuid4().hex}/s/o"
        for mode in (step_pb2.WRITE_MODE_APPEND, step_pb2.WRITE_MODE_OVERWRITE):
            with pytest.raises(ConnectionResetError):
                # 70k rows in batches of 10k: the first chunk is loaded before the break.
                await _write(
                    shop,
                    table,
                    _people(range(10, 70_010)),
                    mode,
                    key,
                    rows_per_batch=10_000,
                    fail_after=6,
                )
            assert [i for i, _ in await _ids_and_names(db, table)] == [0, 1, 2]
        # The key was not recorded: the retry writes.
        outcome = await _write(shop, table, _people(range(10, 20)), key=key)
        assert (outcome.rows_written, outcome.replayed) == (10, False)

        created = db.table("never")
        with pytest.raises(ConnectionResetError):
            await _write(shop, created, _people(range(100)), rows_per_batch=10, fail_after=3)
        assert not await db.exists(created)
    finally:
        await shop.close()


async def test_cancelled_write_leaves_nothing(db: Db, shop: MysqlConnection) -> None:
    table = await _people_table(db)
    started = asyncio.Event()

    async def endless() -> AsyncIterator[pa.RecordBatch]:
        for start in range(0, 10**9, 20_000):
            yield _people(range(start, start + 20_000)).to_batches()[0]
            if start >= 100_000:
                started.set()

    write = asyncio.ensure_future(
        shop.write(_sink(table), "k-cancel-" + table, _people([]).schema, endless())
    )
    await asyncio.wait_for(started.wait(), 20)
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    assert await db.count(table) == 0
    # The connection still works afterwards.
    assert (await _write(shop, table, _people([1]))).rows_written == 1


# --------------------------------------------------------------------------- errors


async def test_bad_credentials_are_unauthenticated(db: Db) -> None:
    secret = "hunter2-" + uuid.uuid4().hex
    nobody = _make(db, user=_name("nobody"), password=secret)
    try:
        for call in (nobody.test(), nobody.describe(_table_source("x"))):
            error = await _domain_error(call)
            assert (error.code, error.reason) == (
                ErrorCode.UNAUTHENTICATED,
                "AUTHENTICATION_FAILED",
            )
            assert secret not in error.message
        assert secret not in str(nobody.public_options())
    finally:
        await nobody.close()


async def test_unknown_table_is_not_found(shop: MysqlConnection) -> None:
    source = _table_source(_name("missing"))
    for call in (
        shop.describe(source),
        shop.plan_read(source, ReadScope(), 4),
        _read(shop, source),
    ):
        error = await _domain_error(call)
        assert (error.code, error.reason) == (ErrorCode.NOT_FOUND, "TABLE_NOT_FOUND")
    error = await _domain_error(shop.describe(_table_source("no_such_db_x.t")))
    assert error.code == ErrorCode.NOT_FOUND


@pytest.mark.parametrize(
    "query",
    [
        "SELEC 1",
        "SELECT * FROM WHERE",
        "SELECT nope FROM information_schema.TABLES",
        "SELECT 1; DROP TABLE x",
        "DELETE FROM x",
        "SELECT 1 INTO OUTFILE '/tmp/x'",
        "SELECT 'unclosed",
        "   ",
    ],
)
async def test_bad_sql_is_invalid_query_naming_the_field(shop: MysqlConnection, query: str) -> None:
    source = _query_source(query)
    for call in (shop.describe(source), _read(shop, source)):
        error = await _domain_error(call)
        assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, "INVALID_QUERY")
        assert error.violations[0].field == "source.database.query"


async def test_unreachable_server_is_unavailable(db: Db) -> None:
    dead = _make(db, port=1, connect_timeout=2)
    try:
        error = await _domain_error(dead.test())
        assert (error.code, error.reason) == (ErrorCode.UNAVAILABLE, "SOURCE_UNAVAILABLE")
        error = await _domain_error(_read(dead, _table_source("t")))
        assert error.reason == "SOURCE_UNAVAILABLE"
        error = await _domain_error(_write(dead, "t", _people([1])))
        assert (error.code, error.reason) == (ErrorCode.UNAVAILABLE, "SINK_UNAVAILABLE")
    finally:
        await dead.close()


@BOTH_PATHS
async def test_value_out_of_range_names_column_and_row_and_writes_nothing(
    db: Db, load_data: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small statements and chunks: the bad row sits in a later statement of a later chunk.
    monkeypatch.setattr(mysql_module, "INSERT_STATEMENT_BYTES", 4096)
    monkeypatch.setattr(mysql_module, "LOAD_CHUNK_ROWS", 1000)
    shop = _make(db, load_data_local=load_data)
    try:
        table = db.table("narrow")
        await db.execute(
            f"CREATE TABLE `{table}` (id INT PRIMARY KEY, small TINYINT, code VARCHAR(3) NOT NULL)"
        )
        await db.execute(f"INSERT INTO `{table}` VALUES (-1, 0, 'old')")
        n = 5000
        small = [i % 100 for i in range(n)]
        codes = ["abc"] * n
        small[2499] = 300  # row 2500, counted from 1

        def data() -> pa.Table:
            return pa.table(
                {
                    "id": pa.array(range(n), pa.int32()),
                    "small": pa.array(small, pa.int16()),
                    "code": pa.array(codes),
                }
            )

        cases = [("small", 2500, "300")]
        error = await _domain_error(_write(shop, table, data(), rows_per_batch=700))
        small[2499] = 1
        codes[4000] = "toolong"
        error2 = await _domain_error(_write(shop, table, data(), step_pb2.WRITE_MODE_OVERWRITE))
        codes[4000] = "abc"
        codes[10] = None  # type: ignore[call-overload]
        error3 = await _domain_error(_write(shop, table, data()))
        cases += [("code", 4001, "toolong"), ("code", 11, "NULL")]
        for err, (column, row, _) in zip((error, error2, error3), cases, strict=True):
            assert (err.code, err.reason) == (ErrorCode.INVALID_ARGUMENT, "VALUE_OUT_OF_RANGE")
            assert (err.metadata["column"], err.metadata["row"]) == (column, str(row)), err
            assert f"row {row}" in err.message
            assert repr(column) in err.message
        assert await db.rows(f"SELECT id, small, code FROM `{table}`") == [(-1, 0, "old")]

        nan = pa.table(
            {
                "id": pa.array([1, 2], pa.int32()),
                "small": pa.array([1.0, float("nan")]),
                "code": pa.array(["a", "b"]),
            }
        )
        error = await _domain_error(_write(shop, table, nan))
        assert (error.reason, error.metadata["row"], error.metadata["column"]) == (
            "VALUE_OUT_OF_RANGE",
            "2",
            "small",
        )
        assert await db.count(table) == 1
        error = await _domain_error(_write(shop, table, nan.drop_columns(["code"])))
        assert (error.reason, error.violations[0].description) == (
            "MISSING_COLUMN",
            "missing column 'code'",
        )
    finally:
        await shop.close()


async def test_duplicate_key_on_append_is_already_exists(db: Db, shop: MysqlConnection) -> None:
    table = await _people_table(db)
    await _write(shop, table, _people([1, 2]))
    error = await _domain_error(_write(shop, table, _people([3, 2])))
    assert (error.code, error.reason) == (ErrorCode.ALREADY_EXISTS, "DUPLICATE_KEY")
    assert await db.count(table) == 2


async def test_unknown_columns_and_non_transactional_targets_are_refused(
    db: Db, shop: MysqlConnection
) -> None:
    table = await _people_table(db)
    extra = _people([1]).append_column("nope", pa.array([1]))
    error = await _domain_error(_write(shop, table, extra))
    assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, "UNKNOWN_COLUMN")
    myisam = db.table("myisam")
    await db.execute(f"CREATE TABLE `{myisam}` (id BIGINT, name TEXT, score DOUBLE) ENGINE=MyISAM")
    error = await _domain_error(_write(shop, myisam, _people([1])))
    assert (error.code, error.reason) == (ErrorCode.FAILED_PRECONDITION, "NON_TRANSACTIONAL_TABLE")
    assert await db.count(myisam) == 0
    # A map is written as JSON text; an interval cannot be written at all.
    interval = pa.array([pa.MonthDayNano([1, 2, 3])], pa.month_day_nano_interval())
    error = await _domain_error(_write(shop, db.table("u"), pa.table({"x": interval})))
    assert error.reason == "SINK_WRITE_ERROR"
    created = db.table("map")
    mapped = pa.table(
        {
            "u": pa.array([1], pa.int64()),
            "m": pa.array([[("a", 1)]], pa.map_(pa.string(), pa.int64())),
        }
    )
    await _write(shop, created, mapped)
    assert (await db.rows(f"SELECT m FROM `{created}`")) == [('{"a": 1}',)]


async def test_connection_options_are_checked_and_never_show_the_password(db: Db) -> None:
    connection = _make(db, password="s3cret-value", pool_size="2", connect_timeout="2.5")
    options = connection.public_options()
    assert "password" not in options
    assert "s3cret-value" not in str(options)
    assert (options["pool_size"], options["connect_timeout"]) == ("2", "2.5")
    info = MYSQL_CONNECTOR_TYPE.info
    assert info.type == "mysql"
    assert MYSQL_CONNECTOR_TYPE.spec_kind == "database"
    specs = {o.name: o for o in info.options}
    assert specs["password"].secret
    assert specs["host"].required
    assert specs["user"].required
    assert specs["database"].required
    assert (specs["port"].default, specs["pool_size"].default) == ("3306", "4")
    bad_options: list[dict[str, Any]] = [
        {"port": "x"},
        {"pool_size": 0},
        {"host": ""},
        {"ledger_table": "a.b.c"},
        {"charset": "latin1"},
    ]
    for bad in bad_options:
        with pytest.raises(DomainError) as info_:
            MYSQL_CONNECTOR_TYPE.create("bad", _options(**bad), Path("."))
        assert info_.value.reason == "CONFIG_INVALID"


# --------------------------------------------------------------------------- a million rows


def _million_expected() -> pa.Table:
    ids = pa.array(range(1, MILLION + 1), pa.int64())
    return pa.table(
        {
            "id": ids,
            "k": pc.cast(pc.bit_wise_and(ids, 1023), pa.int32()),
            "v": pc.multiply(pc.cast(ids, pa.float64()), 0.5),
            "s": pc.binary_join_element_wise("row-😀-", pc.cast(ids, pa.string()), ""),
            "d": pc.cast(pc.cast(ids, pa.decimal128(19, 0)), pa.decimal128(12, 2)),
            "t": pc.cast(
                pc.add(pc.multiply(ids, 1_000_001), 1_704_067_200_000_000), pa.timestamp("us")
            ),
        }
    )


@pytest.fixture(scope="module")
def million() -> Iterator[str]:
    """A 1M-row table generated server-side from MariaDB's seq_1_to_1000000."""
    table = _name("million")

    async def run(*statements: str) -> None:
        conn = await _connect_plain()
        try:
            async with conn.cursor() as cur:
                for sql in statements:
                    await cur.execute(sql)
        finally:
            conn.close()

    asyncio.run(
        run(
            f"CREATE TABLE `{table}` (id BIGINT PRIMARY KEY, k INT, v DOUBLE, "
            "s VARCHAR(40), d DECIMAL(12,2), t DATETIME(6)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            f"INSERT INTO `{table}` SELECT seq, seq & 1023, seq * 0.5, CONCAT('row-😀-', seq), "
            "seq, TIMESTAMP('2024-01-01') + INTERVAL seq * 1000001 MICROSECOND "
            "FROM seq_1_to_1000000",
            f"ANALYZE TABLE `{table}`",
        )
    )
    yield table
    asyncio.run(run(f"DROP TABLE IF EXISTS `{table}`"))


async def test_million_rows_through_several_splits_equal_the_source(
    million: str, shop: MysqlConnection
) -> None:
    source = _table_source(million)
    plan = await shop.plan_read(source, ReadScope(), 4)
    assert len(plan.tickets) == 4
    assert all(t.data for t in plan.tickets)

    async def read_ticket(data: bytes) -> pa.Table:
        return await _read(shop, source, ticket=data)

    started = time.perf_counter()
    parts = await asyncio.gather(*(read_ticket(t.data) for t in plan.tickets))
    split_seconds = time.perf_counter() - started
    assert all(p.schema == plan.schema for p in parts)
    assert all(p.num_rows > 100_000 for p in parts)
    got = pa.concat_tables(parts).sort_by("id")
    expected = _million_expected()
    assert got.num_rows == MILLION
    for name in expected.column_names:
        assert got.column(name).equals(expected.column(name)), name

    started = time.perf_counter()
    single = await _read(shop, source)
    single_seconds = time.perf_counter() - started
    assert single.num_rows == MILLION
    print(
        f"\nmysql read 1M rows x 6 columns: one stream {MILLION / single_seconds:,.0f} rows/s, "
        f"4 splits {MILLION / split_seconds:,.0f} rows/s"
    )


async def test_abandoned_read_frees_its_session(million: str, db: Db) -> None:
    single = _make(db, pool_size=1)
    try:
        source = _table_source(million)
        async with single.read(source, ReadScope(), b"") as stream:
            async for batch in stream.batches:
                assert batch.num_rows > 0
                break  # the consumer goes away mid-stream
        # The only session was closed, not returned half-read: the next reads work.
        scope = ReadScope(columns=("s",), predicate=_id_below(3))
        for _ in range(2):
            got = await asyncio.wait_for(_read(single, source, scope), 10)
            assert got.column("s").to_pylist() == ["row-😀-1", "row-😀-2"]
    finally:
        await single.close()


def _id_below(limit: int) -> predicate_pb2.Predicate:
    return CMP.Predicate(
        all_of=[
            CMP.Comparison(
                column="id",
                operator=CMP.COMPARISON_OPERATOR_LT,
                values=[CMP.Literal(int_value=limit)],
            )
        ]
    )


async def test_tickets_are_checked_and_other_keys_are_not_split(
    million: str, db: Db, shop: MysqlConnection
) -> None:
    plan = await shop.plan_read(_table_source(million), ReadScope(("id",)), 2)
    assert len(plan.tickets) == 2
    assert plan.schema.names == ["id"]
    for source, ticket in (
        (_table_source(million), b"garbage"),
        (_table_source(million), b'{"v": 1}'),
        (_table_source(_name("other")), plan.tickets[0].data),
        (_query_source("SELECT 1"), plan.tickets[0].data),
    ):
        error = await _domain_error(_read(shop, source, ticket=ticket))
        assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, "INVALID_TICKET")
    # A ticket with a predicate reads its range and the predicate.
    scope = ReadScope(("id",), _id_below(4))
    first = await _read(shop, _table_source(million), scope, plan.tickets[0].data)
    assert first.column("id").to_pylist() == [1, 2, 3]

    text_key = db.table("textkey")
    await db.execute(f"CREATE TABLE `{text_key}` (code VARCHAR(10) PRIMARY KEY, n INT)")
    await db.execute(f"INSERT INTO `{text_key}` SELECT CONCAT('c', seq), seq FROM seq_1_to_200000")
    plan = await shop.plan_read(_table_source(text_key), ReadScope(), 4)
    assert [t.data for t in plan.tickets] == [b""]
    query_plan = await shop.plan_read(_query_source("SELECT 1 AS one"), ReadScope(), 4)
    assert [t.data for t in query_plan.tickets] == [b""]
    assert query_plan.schema.names == ["one"]


async def test_local_infile_serves_only_what_the_connector_offers(
    db: Db, shop: MysqlConnection
) -> None:
    table = await _people_table(db)
    async with shop._session("sink") as session:
        with pytest.raises(asyncmy.errors.OperationalError, match="refused"):
            await session.run(f"LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE `{table}` (name)")
    assert await db.count(table) == 0
    assert (await _write(shop, table, _people([1, 2]))).rows_written == 2


@pytest.mark.parametrize("load_data", [True, False], ids=["load-data", "insert"])
async def test_write_rate_of_a_million_rows(db: Db, load_data: bool) -> None:
    shop = _make(db, load_data_local=load_data)
    try:
        data = _million_expected()
        table = db.table("wmillion")
        await db.execute(
            f"CREATE TABLE `{table}` (id BIGINT PRIMARY KEY, k INT, v DOUBLE, "
            "s VARCHAR(40), d DECIMAL(12,2), t DATETIME(6)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
        started = time.perf_counter()
        outcome = await _write(shop, table, data, rows_per_batch=16_384)
        seconds = time.perf_counter() - started
        assert outcome.rows_written == MILLION
        assert await db.rows(f"SELECT COUNT(*), SUM(id), MAX(s) FROM `{table}`") == [
            (MILLION, D(MILLION * (MILLION + 1) // 2), "row-😀-999999")
        ]
        path = "LOAD DATA LOCAL" if load_data else "multi-row INSERT"
        print(f"\nmysql write 1M rows x 6 columns via {path}: {MILLION / seconds:,.0f} rows/s")
    finally:
        await shop.close()


# --------------------------------------------------------------------------- gRPC service


@pytest.fixture
async def service(db: Db, tmp_path: Path) -> AsyncIterator[pb_grpc.ConnectorServiceStub]:
    ledger = db.table("ledger")
    config = parse_config(
        {
            "connections": {
                "shop": {"type": "mysql", **_options(ledger_table=ledger)},
                "locked": {
                    "type": "mysql",
                    **_options(user=_name("nobody"), password="pw-" + uuid.uuid4().hex),
                },
                "dead": {"type": "mysql", **_options(port=1, connect_timeout=2)},
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


def _spec(connection: str = "shop", table: str = "", query: str = "") -> step_pb2.SourceSpec:
    return step_pb2.SourceSpec(
        database=step_pb2.DatabaseSource(connection=connection, table=table, query=query)
    )


async def _grpc_read(
    stub: pb_grpc.ConnectorServiceStub, source: step_pb2.SourceSpec, ticket: bytes = b""
) -> pa.Table:
    request = pb.ReadRequest(source=source, ticket=ticket)
    frames = [frame async for frame in stub.Read(request, timeout=TIMEOUT)]
    return table_of(frames)


def _write_frames(table: str, key: str, data: pa.Table, mode: int) -> list[pb.WriteRequest]:
    sink = step_pb2.SinkSpec(
        database=step_pb2.DatabaseSink(connection="shop", table=table, mode=mode)
    )
    frames = [
        pb.WriteRequest(header=pb.WriteHeader(sink=sink, idempotency_key=key)),
        pb.WriteRequest(schema=encode_schema(data.schema)),
    ]
    counter = StreamCounter()
    for batch in data.to_batches(max_chunksize=1000):
        frames.append(pb.WriteRequest(record_batch=encode_batch(batch, counter)))
    frames.append(pb.WriteRequest(complete=counter.complete()))
    return frames


async def _grpc_write(
    stub: pb_grpc.ConnectorServiceStub, frames: list[pb.WriteRequest]
) -> pb.WriteResponse:
    async def requests() -> AsyncIterator[pb.WriteRequest]:
        for frame in frames:
            yield frame

    return await stub.Write(requests(), timeout=TIMEOUT)


async def _rpc_error(call: Any) -> RpcErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return details_of(info.value)


async def test_service_lists_tests_and_describes_mysql(
    service: pb_grpc.ConnectorServiceStub, db: Db
) -> None:
    types = await service.ListConnectorTypes(pb.ListConnectorTypesRequest(), timeout=TIMEOUT)
    mysql = next(t for t in types.types if t.type == "mysql")
    assert pb.CAPABILITY_SPLITS in mysql.capabilities
    assert pb.CAPABILITY_UPSERT in mysql.capabilities
    assert {o.name for o in mysql.options if o.secret} == {"password"}
    listed = await service.ListConnections(pb.ListConnectionsRequest(), timeout=TIMEOUT)
    assert "pw-" not in str(listed)
    shop = next(c for c in listed.connections if c.name == "shop")
    assert shop.type == "mysql"

    ok = await service.TestConnection(pb.TestConnectionRequest(name="shop"), timeout=TIMEOUT)
    assert ok.ok
    assert "MariaDB" in ok.message
    locked = await service.TestConnection(pb.TestConnectionRequest(name="locked"), timeout=TIMEOUT)
    assert (locked.ok, locked.reason) == (False, "AUTHENTICATION_FAILED")
    assert "pw-" not in locked.message
    dead = await service.TestConnection(pb.TestConnectionRequest(name="dead"), timeout=TIMEOUT)
    assert (dead.ok, dead.reason) == (False, "SOURCE_UNAVAILABLE")
    inline = pb.InlineConnection(
        type="mysql",
        options={"host": HOST, "port": str(PORT), "user": USER, "database": DATABASE},
    )
    assert (await service.TestConnection(pb.TestConnectionRequest(inline=inline))).ok

    table = await _create_types_table(db)
    described = await service.DescribeSource(
        pb.DescribeSourceRequest(source=_spec(table=table)), timeout=TIMEOUT
    )
    schema = decode_schema(described.schema)
    assert {f.name: f.type for f in schema} == EXPECTED_TYPES
    assert described.HasField("estimated_rows")
    got = await _grpc_read(service, _spec(table=table))
    assert got.column("vc").to_pylist()[1] == "emoji 😀🎉 ünïcödé 中文 עברית"
    assert got.column("bl").to_pylist()[1] == BIG_BLOB


async def test_service_reads_a_million_rows_in_splits(
    service: pb_grpc.ConnectorServiceStub, million: str
) -> None:
    plan = await service.PlanRead(
        pb.PlanReadRequest(source=_spec(table=million), max_splits=3), timeout=TIMEOUT
    )
    assert len(plan.tickets) == 3
    started = time.perf_counter()
    parts = await asyncio.gather(
        *(_grpc_read(service, _spec(table=million), t.ticket) for t in plan.tickets)
    )
    seconds = time.perf_counter() - started
    got = pa.concat_tables(parts).sort_by("id")
    expected = _million_expected()
    assert got.num_rows == MILLION
    for name in expected.column_names:
        assert got.column(name).equals(expected.column(name)), name
    print(f"\nmysql read through gRPC, 3 splits: {MILLION / seconds:,.0f} rows/s")


async def test_service_writes_replays_and_reports_errors(
    service: pb_grpc.ConnectorServiceStub, db: Db
) -> None:
    table = await _people_table(db)
    key = f"run-{uuid.uuid4().hex}/stage/out"
    frames = _write_frames(table, key, _people(range(2500)), step_pb2.WRITE_MODE_APPEND)
    reply = await _grpc_write(service, frames)
    assert (reply.rows_written, reply.replayed) == (2500, False)
    assert reply.location == f"mysql://{HOST}:{PORT}/{DATABASE}.{table}"
    reply = await _grpc_write(service, frames)
    assert (reply.rows_written, reply.replayed) == (2500, True)
    assert await db.count(table) == 2500

    # A stream without its completion frame commits nothing.
    broken = _write_frames(
        table, key + "-2", _people(range(5000, 6000)), step_pb2.WRITE_MODE_APPEND
    )
    error = await _rpc_error(_grpc_write(service, broken[:-1]))
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert await db.count(table) == 2500

    bad = _people([9000, 9001]).set_column(1, "name", pa.array(["ok", "x" * 60]))
    error = await _rpc_error(
        _grpc_write(service, _write_frames(table, key + "-3", bad, step_pb2.WRITE_MODE_OVERWRITE))
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALUE_OUT_OF_RANGE")
    assert (error.metadata["column"], error.metadata["row"]) == ("name", "2")
    assert await db.count(table) == 2500

    error = await _rpc_error(_grpc_read(service, _spec(table=_name("missing"))))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "TABLE_NOT_FOUND")
    error = await _rpc_error(_grpc_read(service, _spec(query="SELECT * FROM WHERE")))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_QUERY")
    assert [v.field for v in error.violations] == ["source.database.query"]
    error = await _rpc_error(_grpc_read(service, _spec("dead", table="t")))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "SOURCE_UNAVAILABLE")
    error = await _rpc_error(_grpc_read(service, _spec("locked", table="t")))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "AUTHENTICATION_FAILED")

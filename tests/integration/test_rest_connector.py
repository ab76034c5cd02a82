"""The REST connector against a real aiohttp API on 127.0.0.1 (see ``rest_server``).

First the connection class directly (pagination, retries, auth, host allow-list,
rate limit, type inference, sink chunks), then through the connector gRPC service.
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest
from arrow_streams import table_of
from rest_server import API_KEY, ITEMS, NESTED, PASSWORD, TOKEN, USERNAME, RestApi, RestServer
from yarl import URL

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.connector.app import build_server, parse_config
from datadog_platform.connector.base import Capability, ReadScope
from datadog_platform.connector.rest import REST_CONNECTOR_TYPE, RestConnection
from datadog_platform.connector.rest_http import (
    HostRule,
    backoff_delay,
    host_allowed,
    http_date,
    next_link,
    parse_retry_after,
)
from datadog_platform.connector.rest_records import batch_to_records
from datadog_platform.core.arrow_frames import (
    StreamCounter,
    decode_schema,
    encode_batch,
    encode_schema,
)
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.errors import DomainError, ErrorCode
from datadog_platform.core.status import RpcErrorDetails, details_of

FAST = {"backoff_seconds": 0.01, "max_backoff_seconds": 2}

Connect = Callable[..., RestConnection]


@pytest.fixture
async def api() -> AsyncIterator[RestApi]:
    async with RestServer() as running:
        yield running


@pytest.fixture
async def connect(api: RestApi, tmp_path: Path) -> AsyncIterator[Connect]:
    """Makes REST connections to ``api`` (options as in a config file); closes them after."""
    made: list[RestConnection] = []

    def make(**options: Any) -> RestConnection:
        entry = {"base_url": api.url, **FAST, **options}
        connection = REST_CONNECTOR_TYPE.create("api", entry, tmp_path)
        made.append(connection)
        return connection

    yield make
    for connection in made:
        await connection.close()


def source(path: str, **fields: Any) -> step_pb2.RestSource:
    return step_pb2.RestSource(connection="api", path=path, **fields)


async def read_all(
    connection: RestConnection, src: step_pb2.RestSource, columns: Iterable[str] = ()
) -> pa.Table:
    async with connection.read(src, ReadScope(columns=tuple(columns)), b"") as stream:
        batches = [batch async for batch in stream.batches]
        for batch in batches:
            assert batch.schema == stream.schema
    return pa.Table.from_batches(batches, schema=stream.schema)


async def read_error(connection: RestConnection, src: step_pb2.RestSource) -> DomainError:
    with pytest.raises(DomainError) as caught:
        await read_all(connection, src)
    return caught.value


def page_number(**fields: Any) -> step_pb2.RestPagination:
    max_pages = fields.pop("max_pages", 0)
    return step_pb2.RestPagination(
        max_pages=max_pages, page_number=step_pb2.PageNumberPagination(**fields)
    )


# --- pagination ---------------------------------------------------------------------------


async def test_page_numbers_start_at_one_unless_set(api: RestApi, connect: Connect) -> None:
    await read_all(connect(), source("/items", records_path="data.items", pagination=page_number()))
    assert api.queries["/items"][0]["page"] == "1"
    api.queries.clear()
    zero_based = page_number(first_page=0)
    await read_all(connect(), source("/items", records_path="data.items", pagination=zero_based))
    assert api.queries["/items"][0]["page"] == "0"


async def test_page_number_pagination_infers_types(api: RestApi, connect: Connect) -> None:
    src = source(
        "/items",
        records_path="data.items",
        pagination=page_number(size_param="per_page", page_size=10),
    )
    table = await read_all(connect(), src)
    assert table.schema == pa.schema(
        [
            ("id", pa.int64()),
            ("name", pa.string()),
            ("price", pa.float64()),
            ("active", pa.bool_()),
            ("tags", pa.string()),
            ("meta", pa.string()),
        ]
    )
    assert table.column("id").to_pylist() == [item["id"] for item in ITEMS]
    assert table.column("price").to_pylist() == [item["price"] for item in ITEMS]
    assert [json.loads(t) for t in table.column("tags").to_pylist()] == [i["tags"] for i in ITEMS]
    assert [json.loads(m) for m in table.column("meta").to_pylist()] == [i["meta"] for i in ITEMS]
    # Three full pages, then the empty fourth page ends the read.
    assert api.hits["/items"] == 4
    assert [q["page"] for q in api.queries["/items"]] == ["1", "2", "3", "4"]
    assert {q["per_page"] for q in api.queries["/items"]} == {"10"}


async def test_offset_pagination_stops_on_a_short_page(api: RestApi, connect: Connect) -> None:
    pagination = step_pb2.RestPagination(offset=step_pb2.OffsetPagination(limit=10))
    table = await read_all(connect(), source("offset", pagination=pagination))
    assert table.column("id").to_pylist() == list(range(1, 26))
    assert [q["offset"] for q in api.queries["/offset"]] == ["0", "10", "20"]


async def test_cursor_pagination(api: RestApi, connect: Connect) -> None:
    pagination = step_pb2.RestPagination(
        cursor=step_pb2.CursorPagination(cursor_param="after", cursor_path="meta.next_cursor")
    )
    src = source("/cursor", records_path="items", pagination=pagination, query={"sort": "id"})
    table = await read_all(connect(), src)
    assert table.column("id").to_pylist() == list(range(1, 26))
    assert [q.get("after") for q in api.queries["/cursor"]] == [None, "7", "14", "21"]
    assert {q["sort"] for q in api.queries["/cursor"]} == {"id"}


async def test_link_header_pagination(api: RestApi, connect: Connect) -> None:
    pagination = step_pb2.RestPagination(link_header=step_pb2.LinkHeaderPagination())
    table = await read_all(connect(), source("/linked", pagination=pagination))
    assert table.column("id").to_pylist() == list(range(1, 26))
    assert [q.get("page") for q in api.queries["/linked"]] == [None, "2", "3"]


async def test_max_pages_bounds_the_requests(api: RestApi, connect: Connect) -> None:
    src = source(
        "/items",
        records_path="data.items",
        pagination=page_number(size_param="per_page", page_size=10, max_pages=2),
    )
    table = await read_all(connect(), src)
    assert table.num_rows == 20
    assert api.hits["/items"] == 2


async def test_single_request_and_single_object(connect: Connect) -> None:
    table = await read_all(connect(), source("/single", records_path="user"))
    assert table.to_pylist() == [{"id": 7, "name": "Ada"}]


async def test_post_with_body_and_query(api: RestApi, connect: Connect) -> None:
    src = source(
        "/echo",
        method=step_pb2.HTTP_METHOD_POST,
        body='{"filter": {"since": "2024-01-01"}}',
        query={"a": "b"},
        headers={"X-Trace": "t-1"},
    )
    [row] = (await read_all(connect(), src)).to_pylist()
    assert row["method"] == "POST"
    assert json.loads(row["body"]) == {"filter": {"since": "2024-01-01"}}
    assert json.loads(row["q"]) == {"a": "b"}
    assert api.headers["/echo"][0]["X-Trace"] == "t-1"
    assert api.headers["/echo"][0]["Content-Type"] == "application/json"


async def test_stopping_early_stops_requesting(api: RestApi, connect: Connect) -> None:
    src = source("/big", pagination=page_number())
    async with connect().read(src, ReadScope(), b"") as stream:
        first = await anext(stream.batches)
    assert first.num_rows == 10_000
    assert first.column("page").to_pylist() == [1] * 10_000
    assert api.hits["/big"] == 1  # one page per batch: no read-ahead


# --- records to Arrow ---------------------------------------------------------------------


async def test_nested_json_and_unicode(connect: Connect) -> None:
    table = await read_all(connect(), source("/nested", records_path="results"))
    assert table.schema.field("address").type == pa.string()
    assert table.schema.field("score").type == pa.int64()
    rows = table.to_pylist()
    assert [r["city"] for r in rows] == ["Zürich", "São Paulo"]
    assert rows[0]["greeting"] == "こんにちは 👋"
    assert [json.loads(r["address"]) for r in rows] == [n["address"] for n in NESTED]
    assert json.loads(rows[0]["tags"]) == ["café", "naïve"]
    assert "Bahnhofstraße" in rows[0]["address"]  # JSON text keeps unicode unescaped
    assert [r["score"] for r in rows] == [None, 7]


async def test_schema_of_the_first_page_is_kept(connect: Connect) -> None:
    """Later pages: unknown fields dropped, missing ones null, all-null column is string."""
    table = await read_all(connect(), source("/drift", pagination=page_number()))
    assert table.schema.names == ["id", "name", "note"]
    assert table.schema.field("note").type == pa.string()
    assert table.to_pylist() == [
        {"id": 1, "name": "a", "note": None},
        {"id": 2, "name": None, "note": "hello"},
        {"id": 3, "name": "c", "note": None},
    ]


async def test_value_changing_type_between_pages_fails_precisely(connect: Connect) -> None:
    error = await read_error(connect(), source("/type-change", pagination=page_number()))
    assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, "SOURCE_PARSE_ERROR")
    assert "'id'" in error.message
    assert "page 2" in error.message
    assert "2.5" in error.message


async def test_projection(connect: Connect) -> None:
    src = source("/offset", pagination=step_pb2.RestPagination(offset={"limit": 10}))
    table = await read_all(connect(), src, columns=["name", "id"])
    assert table.schema.names == ["name", "id"]
    assert table.column("id").to_pylist() == list(range(1, 26))
    with pytest.raises(DomainError) as caught:
        await read_all(connect(), src, columns=["id", "colour"])
    assert caught.value.reason == "UNKNOWN_COLUMN"


async def test_empty_source(connect: Connect) -> None:
    src = source("/rate", pagination=page_number(first_page=6))
    table = await read_all(connect(), src)
    assert (table.num_rows, table.num_columns) == (0, 0)
    table = await read_all(connect(), src, columns=["page"])
    assert table.schema == pa.schema([("page", pa.string())])
    assert table.num_rows == 0


async def test_describe_and_plan_read(connect: Connect) -> None:
    connection = connect()
    src = source("/items", records_path="data.items")
    description = await connection.describe(src)
    assert description.schema.names == ["id", "name", "price", "active", "tags", "meta"]
    plan = await connection.plan_read(src, ReadScope(columns=("id",)), max_splits=4)
    assert plan.schema == pa.schema([("id", pa.int64())])
    assert len(plan.tickets) == 1
    assert plan.tickets[0].data == b""
    with pytest.raises(DomainError) as caught:
        async with connection.read(src, ReadScope(), b"bogus"):
            pass
    assert caught.value.reason == "INVALID_TICKET"


@pytest.mark.parametrize(
    ("path", "records_path", "fragment"),
    [
        ("/html", "", "is not JSON"),
        ("/scalar", "data", "not an array"),
        ("/single", "user.orders", "is not in"),
    ],
)
async def test_unparsable_bodies(
    connect: Connect, path: str, records_path: str, fragment: str
) -> None:
    error = await read_error(connect(), source(path, records_path=records_path))
    assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, "SOURCE_PARSE_ERROR")
    assert fragment in error.message


# --- status codes, retries, timeouts ----------------------------------------------------


async def test_429_honours_retry_after(api: RestApi, connect: Connect) -> None:
    table = await read_all(connect(), source("/throttled"))
    assert table.to_pylist() == [{"id": 1}]
    first, second = api.times["/throttled"]
    assert second - first >= 0.95  # Retry-After: 1, although backoff_seconds is 0.01


async def test_retry_after_beyond_the_cap_gives_up_at_once(api: RestApi, connect: Connect) -> None:
    started = time.monotonic()
    error = await read_error(connect(), source("/throttled-long"))
    assert time.monotonic() - started < 1
    assert (error.code, error.reason) == (ErrorCode.UNAVAILABLE, "SOURCE_UNAVAILABLE")
    assert error.metadata["retry_after_seconds"] == "3600"
    assert api.hits["/throttled-long"] == 1


async def test_503_is_retried_until_success(api: RestApi, connect: Connect) -> None:
    table = await read_all(connect(max_retries=5), source("/flaky"))
    assert table.to_pylist() == [{"id": 1, "ok": True}]
    assert api.hits["/flaky"] == 4


async def test_permanent_500_is_unavailable_after_retries(api: RestApi, connect: Connect) -> None:
    connection = connect(max_retries="2", auth={"type": "bearer", "token": TOKEN})
    error = await read_error(connection, source("/broken"))
    assert (error.code, error.reason) == (ErrorCode.UNAVAILABLE, "SOURCE_UNAVAILABLE")
    assert error.metadata["http_status"] == "500"
    assert "3 attempt(s)" in error.message
    assert "HTTP 500" in error.message
    assert TOKEN not in error.message  # the server echoed it in its body
    assert api.hits["/broken"] == 3


async def test_timeout_is_unavailable(connect: Connect) -> None:
    started = time.monotonic()
    error = await read_error(connect(timeout_seconds=0.2, max_retries=1), source("/slow"))
    assert time.monotonic() - started < 1.5
    assert (error.code, error.reason) == (ErrorCode.UNAVAILABLE, "SOURCE_UNAVAILABLE")
    assert "timeout_seconds=0.2" in error.message


async def test_refused_connection_is_unavailable(tmp_path: Path) -> None:
    connection = REST_CONNECTOR_TYPE.create(
        "down", {"base_url": "http://127.0.0.1:9/", "max_retries": 1, **FAST}, tmp_path
    )
    try:
        error = await read_error(connection, source("/x"))
        assert (error.code, error.reason) == (ErrorCode.UNAVAILABLE, "SOURCE_UNAVAILABLE")
        assert "2 attempt(s)" in error.message
        with pytest.raises(DomainError) as caught:
            await connection.test()
        assert caught.value.code == ErrorCode.UNAVAILABLE
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("path", "code", "reason"),
    [
        ("/forbidden", ErrorCode.PERMISSION_DENIED, "ACCESS_DENIED"),
        ("/no-such-endpoint", ErrorCode.NOT_FOUND, "SOURCE_NOT_FOUND"),
        ("/bad-request", ErrorCode.INVALID_ARGUMENT, "INVALID_QUERY"),
    ],
)
async def test_client_errors(connect: Connect, path: str, code: ErrorCode, reason: str) -> None:
    error = await read_error(connect(), source(path))
    assert (error.code, error.reason) == (code, reason)
    assert path in error.message
    if reason == "INVALID_QUERY":
        assert "HTTP 400" in error.message
        assert "unknown filter 'colour'" in error.message


# --- auth --------------------------------------------------------------------------------

AUTH_CASES = [
    ("/bearer", {"type": "bearer", "token": TOKEN}, {"type": "bearer", "token": "wrong-token"}),
    (
        "/basic",
        {"type": "basic", "username": USERNAME, "password": PASSWORD},
        {"type": "basic", "username": USERNAME, "password": "wrong-password"},
    ),
    (
        "/key-header",
        {"type": "api_key", "name": "X-API-Key", "value": API_KEY},
        {"type": "api_key", "name": "X-API-Key", "value": "wrong-key"},
    ),
    (
        "/key-query",
        {"type": "api_key", "name": "api_key", "value": API_KEY, "in": "query"},
        {"type": "api_key", "name": "api_key", "value": "wrong-key", "in": "query"},
    ),
]


@pytest.mark.parametrize(("path", "good", "bad"), AUTH_CASES)
async def test_auth(
    api: RestApi, connect: Connect, path: str, good: dict[str, str], bad: dict[str, str]
) -> None:
    pagination = step_pb2.RestPagination(link_header={})
    table = await read_all(connect(auth=good), source(path, pagination=pagination))
    assert table.num_rows >= 1
    if path == "/key-query":
        # Page 2's link echoed the key; it was sent once, so the server accepted it.
        assert table.column("page").to_pylist() == [1, 2]
    error = await read_error(connect(auth=bad), source(path))
    assert (error.code, error.reason) == (ErrorCode.UNAUTHENTICATED, "AUTHENTICATION_FAILED")
    secret = bad.get("token") or bad.get("password") or bad.get("value")
    assert secret not in error.message
    # Without credentials at all.
    error = await read_error(connect(), source(path))
    assert error.code == ErrorCode.UNAUTHENTICATED


async def test_auth_given_as_strings_and_flattened_keys(connect: Connect) -> None:
    as_json = connect(auth=json.dumps({"type": "bearer", "token": TOKEN}))
    assert (await read_all(as_json, source("/bearer"))).num_rows == 1
    flat = connect(**{"auth.type": "basic", "auth.username": USERNAME, "auth.password": PASSWORD})
    assert (await read_all(flat, source("/basic"))).num_rows == 1


# --- allowed hosts -----------------------------------------------------------------------


async def test_next_link_to_another_host_is_refused(api: RestApi, connect: Connect) -> None:
    pagination = step_pb2.RestPagination(link_header={})
    error = await read_error(connect(), source("/linked-evil", pagination=pagination))
    assert (error.code, error.reason) == (ErrorCode.PERMISSION_DENIED, "HOST_NOT_ALLOWED")
    assert "localhost" in error.message
    assert api.hits["/linked"] == 0  # never requested
    # Allowing the host lets the same read through (127.0.0.1 still allowed for page 3).
    allowed = connect(allowed_hosts="127.0.0.1, localhost")
    table = await read_all(allowed, source("/linked-evil", pagination=pagination))
    assert table.num_rows == 25


async def test_redirects_are_checked_hop_by_hop(api: RestApi, connect: Connect) -> None:
    table = await read_all(connect(), source("/redirect-ok"))
    assert table.num_rows == 5
    error = await read_error(connect(), source("/redirect-evil"))
    assert error.reason == "HOST_NOT_ALLOWED"
    assert api.hits["/offset"] == 1  # only the same-host redirect


def test_base_url_port_is_part_of_the_default_allow_list(api: RestApi, connect: Connect) -> None:
    rules = connect().options.allowed_hosts
    assert host_allowed(URL(api.url) / "x", rules)
    assert not host_allowed(URL(api.url).with_port(9), rules)
    https = REST_CONNECTOR_TYPE.create("x", {"base_url": "https://api.example.com/v1"}, Path())
    assert host_allowed(URL("https://api.example.com/v2?page=2"), https.options.allowed_hosts)
    # No downgrade to http: the default rule keeps base_url's port, 443.
    assert not host_allowed(URL("http://api.example.com/v2"), https.options.allowed_hosts)


# --- rate limit --------------------------------------------------------------------------


async def test_rate_limit_spaces_requests(api: RestApi, connect: Connect) -> None:
    src = source("/rate", pagination=page_number())
    started = time.monotonic()
    await read_all(connect(), src)
    unlimited = time.monotonic() - started
    api.times.clear()
    table = await read_all(connect(rate_limit_per_second=10), src)
    assert table.num_rows == 5
    times = api.times["/rate"]
    assert len(times) == 6
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.06, gaps  # 0.1 s apart when sent; allow for loopback jitter
    assert times[-1] - times[0] >= 0.45
    assert unlimited < 0.4  # the spacing comes from the limiter, not the server


# --- sink --------------------------------------------------------------------------------


def sink(path: str = "/sink", **fields: Any) -> step_pb2.RestSink:
    return step_pb2.RestSink(connection="api", path=path, **fields)


async def batches_of(table: pa.Table, sizes: Iterable[int]) -> AsyncIterator[pa.RecordBatch]:
    offset = 0
    for size in sizes:
        yield table.slice(offset, size).combine_chunks().to_batches()[0]
        offset += size


async def test_sink_sends_every_record_in_chunks(api: RestApi, connect: Connect) -> None:
    rows = 250
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "name": [f"naïve ☃ {i}" if i % 7 else None for i in range(rows)],
            "amount": pa.array(
                [decimal.Decimal(f"{i}.05") for i in range(rows)], pa.decimal128(10, 2)
            ),
            "ts": pa.array(
                [
                    dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i)
                    for i in range(rows)
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "day": pa.array([dt.date(2024, 1, 1)] * rows, pa.date32()),
            "ratio": [float("nan") if i == 3 else i / 4 for i in range(rows)],
            "blob": [b"\x00\x01" for _ in range(rows)],
            "tags": [["x", "y"][: i % 3] for i in range(rows)],
        }
    )
    outcome = await connect().write(
        sink(batch_size=40), "run-1/stage-2", table.schema, batches_of(table, [100, 70, 80])
    )
    assert outcome.rows_written == rows
    assert outcome.replayed is False
    assert outcome.location == f"{api.url}sink"
    assert [len(c.records) for c in api.chunks] == [40] * 6 + [10]
    assert [c.idempotency_key for c in api.chunks] == [f"run-1/stage-2/{n}" for n in range(7)]
    assert {c.method for c in api.chunks} == {"POST"}
    assert {c.content_type for c in api.chunks} == {"application/json"}
    received = [record for chunk in api.chunks for record in chunk.records]
    assert [r["id"] for r in received] == list(range(rows))
    assert received[1] == {
        "id": 1,
        "name": "naïve ☃ 1",
        "amount": "1.05",
        "ts": "2024-01-01T00:01:00+00:00",
        "day": "2024-01-01",
        "ratio": 0.25,
        "blob": "AAE=",
        "tags": ["x"],
    }
    assert received[0]["name"] is None
    assert received[3]["ratio"] is None  # NaN is not JSON


async def test_sink_put_with_default_batch_size(api: RestApi, connect: Connect) -> None:
    table = pa.table({"n": list(range(150))})
    outcome = await connect().write(
        sink(method=step_pb2.HTTP_METHOD_PUT), "k", table.schema, batches_of(table, [150])
    )
    assert outcome.rows_written == 150
    assert [(c.method, len(c.records)) for c in api.chunks] == [("PUT", 100), ("PUT", 50)]


async def test_sink_failure_midway_reports_what_was_delivered(
    api: RestApi, connect: Connect
) -> None:
    table = pa.table({"n": list(range(10))})
    with pytest.raises(DomainError) as caught:
        await connect().write(
            sink("/sink-fail", batch_size=3), "key", table.schema, batches_of(table, [10])
        )
    error = caught.value
    assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, "SINK_WRITE_ERROR")
    assert "HTTP 422" in error.message
    assert "record 7 is invalid" in error.message
    assert "6 record(s) in 2 chunk(s) were already delivered" in error.message
    assert error.metadata["records_delivered"] == "6"
    assert [c.idempotency_key for c in api.chunks] == ["key/0", "key/1"]


async def test_sink_refuses_get_and_bad_hosts(connect: Connect) -> None:
    table = pa.table({"n": [1]})
    with pytest.raises(DomainError) as caught:
        await connect().write(
            sink(method=step_pb2.HTTP_METHOD_GET), "k", table.schema, batches_of(table, [1])
        )
    assert caught.value.reason == "INVALID_OPTION"
    with pytest.raises(DomainError) as caught:
        await connect(max_retries=0).write(
            sink("/missing"), "k", table.schema, batches_of(table, [1])
        )
    assert (caught.value.code, caught.value.reason) == (ErrorCode.NOT_FOUND, "SINK_NOT_FOUND")


# --- test(), options ---------------------------------------------------------------------


async def test_test_reports_reachability_and_auth(api: RestApi, connect: Connect) -> None:
    assert "is reachable" in await connect().test()
    with pytest.raises(DomainError) as caught:
        await connect(base_url=f"{api.url}bearer", auth={"type": "bearer", "token": "nope"}).test()
    assert caught.value.reason == "AUTHENTICATION_FAILED"
    good = connect(base_url=f"{api.url}bearer", auth={"type": "bearer", "token": TOKEN})
    assert "HEAD answered HTTP 200" in await good.test()
    assert "GET answered HTTP 200" in await connect(base_url=f"{api.url}no-head").test()
    assert [h["_method"] for h in api.headers["/no-head"]] == ["HEAD", "GET"]


def test_options_from_strings(tmp_path: Path) -> None:
    connection = REST_CONNECTOR_TYPE.create(
        "api",
        {
            "type": "rest",
            "base_url": "https://api.example.com/v1/",
            "allowed_hosts": '["api.example.com", "*.cdn.example.com", "files.example.com:8443"]',
            "auth": "{type: api_key, value: s3cr3t-value, in: query}",
            "headers": '{"X-Client": "datadog"}',
            "timeout_seconds": "2.5",
            "max_retries": "3",
            "rate_limit_per_second": "4",
            "verify_tls": "false",
            "description": "test API",
        },
        tmp_path,
    )
    options = connection.options
    assert (options.timeout_seconds, options.max_retries, options.verify_tls) == (2.5, 3, False)
    assert options.auth.name == "api_key"
    shown = connection.public_options()
    assert shown["auth"] == "api_key (api_key in query)"
    assert shown["headers"] == "X-Client"
    assert "s3cr3t-value" not in repr(options) + json.dumps(shown)
    assert connection.description == "test API"
    rules = options.allowed_hosts
    assert host_allowed(URL("https://a.cdn.example.com/x"), rules)
    assert host_allowed(URL("https://files.example.com:8443/x"), rules)
    assert not host_allowed(URL("https://files.example.com/x"), rules)
    assert not host_allowed(URL("https://evil.com/x"), rules)
    assert not host_allowed(URL("ftp://api.example.com/x"), rules)


@pytest.mark.parametrize(
    ("entry", "option"),
    [
        ({}, "base_url"),
        ({"base_url": "ftp://x.org"}, "base_url"),
        ({"base_url": "http://u:p@x.org"}, "base_url"),
        ({"base_url": "http://x.org", "colour": "red"}, "colour"),
        ({"base_url": "http://x.org", "auth": {"type": "oauth"}}, "auth.type"),
        ({"base_url": "http://x.org", "auth": {"type": "bearer"}}, "auth.token"),
        ({"base_url": "http://x.org", "auth": "[1, 2]"}, "auth"),
        ({"base_url": "http://x.org", "max_retries": "-1"}, "max_retries"),
        ({"base_url": "http://x.org", "timeout_seconds": 0}, "timeout_seconds"),
        ({"base_url": "http://x.org", "verify_tls": "maybe"}, "verify_tls"),
        ({"base_url": "http://x.org", "allowed_hosts": "x.org/path"}, "allowed_hosts"),
    ],
)
def test_bad_options_are_config_invalid(tmp_path: Path, entry: dict[str, Any], option: str) -> None:
    with pytest.raises(DomainError) as caught:
        REST_CONNECTOR_TYPE.create("api", entry, tmp_path)
    error = caught.value
    assert (error.code, error.reason) == (ErrorCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert [v.field for v in error.violations] == [f"connections.api.{option}"]


def test_type_info() -> None:
    info = REST_CONNECTOR_TYPE.info
    assert (info.type, REST_CONNECTOR_TYPE.spec_kind) == ("rest", "rest")
    assert Capability.PREDICATE_PUSHDOWN not in info.capabilities
    assert {Capability.READ, Capability.WRITE, Capability.DESCRIBE} <= info.capabilities
    secret = {o.name for o in info.options if o.secret}
    assert secret == {"auth", "headers"}
    assert [o.name for o in info.options if o.required] == ["base_url"]


# --- helpers -----------------------------------------------------------------------------


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3") == 3
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    later = dt.datetime.fromtimestamp(now + 120, dt.UTC)
    assert 118 <= parse_retry_after(http_date(later), now=now) <= 121  # type: ignore[operator]
    earlier = dt.datetime.fromtimestamp(now - 120, dt.UTC)
    assert parse_retry_after(http_date(earlier), now=now) == 0


def test_next_link_parsing() -> None:
    here = URL("https://api.example.com/v1/items?page=1")
    assert next_link(['<https://api.example.com/v1/items?page=2>; rel="next"'], here) == URL(
        "https://api.example.com/v1/items?page=2"
    )
    assert next_link(['</v1/items?page=3>; rel="prev", </v1/items?page=2>; rel=next'], here) == URL(
        "https://api.example.com/v1/items?page=2"
    )
    assert next_link(['<?page=2>; title="x, y"; rel="next last"'], here) == URL(
        "https://api.example.com/v1/items?page=2"
    )
    assert next_link(['<https://x/?page=1>; rel="first"'], here) is None
    assert next_link([], here) is None


def test_backoff_is_exponential_jittered_and_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 30, rng) for n in range(10)]
    for n, delay in enumerate(delays):
        ceiling = min(30, 0.5 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert HostRule.parse("[::1]:8080").matches("::1", 8080)


def test_batch_to_records_map_and_struct() -> None:
    batch = pa.record_batch(
        {
            "m": pa.array([[("a", 1)]], pa.map_(pa.string(), pa.int64())),
            "s": pa.array([{"x": 1, "y": "z"}]),
        }
    )
    assert batch_to_records(batch) == [{"m": {"a": 1}, "s": {"x": 1, "y": "z"}}]


def test_next_link_ignores_rel_inside_other_parameters() -> None:
    here = URL("https://api.example.com/items")
    header = '<?page=9>; title="see rel=next"; rel="last", <?page=2>; REL=next'
    assert next_link([header], here) == URL("https://api.example.com/items?page=2")


# --- through the connector gRPC service ----------------------------------------------------

TIMEOUT = 20


@pytest.fixture
async def stub(
    api: RestApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[pb_grpc.ConnectorServiceStub]:
    """A connector service whose REST connections point at ``api``."""
    monkeypatch.setenv("REST_TEST_TOKEN", TOKEN)
    fast = {"backoff_seconds": "0.01", "max_backoff_seconds": "2", "max_retries": "2"}
    document = {
        "connections": {
            "api": {
                "type": "rest",
                "base_url": api.url,
                "auth": {"type": "bearer", "token": "${env:REST_TEST_TOKEN}"},
                "description": "the test API",
                **fast,
            },
            "wrong": {
                "type": "rest",
                "base_url": api.url,
                "auth": {"type": "bearer", "token": "wrong-token-123"},
                **fast,
            },
        }
    }
    config = parse_config(document, tmp_path)
    server = await build_server(config, reload_interval=None)
    await server.start()
    try:
        async with insecure_channel(server.address) as channel:
            yield pb_grpc.ConnectorServiceStub(channel)
    finally:
        await server.stop(grace=1)


def rest_spec(path: str, connection: str = "api", **fields: Any) -> step_pb2.SourceSpec:
    return step_pb2.SourceSpec(rest=step_pb2.RestSource(connection=connection, path=path, **fields))


async def grpc_read(
    stub: pb_grpc.ConnectorServiceStub, request: pb.ReadRequest
) -> tuple[pa.Table, pb.ReadResponse]:
    frames = [frame async for frame in stub.Read(request, timeout=TIMEOUT)]
    return table_of(frames), frames[-1]


async def grpc_read_error(
    stub: pb_grpc.ConnectorServiceStub, source: step_pb2.SourceSpec
) -> RpcErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await grpc_read(stub, pb.ReadRequest(source=source))
    return details_of(caught.value)


async def test_grpc_lists_the_rest_type_and_connection(stub: pb_grpc.ConnectorServiceStub) -> None:
    types = await stub.ListConnectorTypes(pb.ListConnectorTypesRequest(), timeout=TIMEOUT)
    [rest] = [t for t in types.types if t.type == "rest"]
    assert set(rest.capabilities) == {
        pb.CAPABILITY_READ,
        pb.CAPABILITY_WRITE,
        pb.CAPABILITY_DESCRIBE,
    }
    options = {o.name: o for o in rest.options}
    assert options["base_url"].required
    assert options["auth"].secret
    assert options["max_retries"].default_value == "5"
    listed = await stub.ListConnections(pb.ListConnectionsRequest(), timeout=TIMEOUT)
    [connection] = [c for c in listed.connections if c.name == "api"]
    assert (connection.type, connection.description) == ("rest", "the test API")
    assert connection.options["auth"] == "bearer"
    assert TOKEN not in str(listed)


async def test_grpc_describe_plan_and_read(
    api: RestApi, stub: pb_grpc.ConnectorServiceStub
) -> None:
    pagination = step_pb2.RestPagination(
        page_number=step_pb2.PageNumberPagination(size_param="per_page", page_size=10)
    )
    source = rest_spec("/items", records_path="data.items", pagination=pagination)
    described = await stub.DescribeSource(pb.DescribeSourceRequest(source=source), timeout=TIMEOUT)
    assert decode_schema(described.schema).names == [
        "id",
        "name",
        "price",
        "active",
        "tags",
        "meta",
    ]
    assert not described.HasField("estimated_rows")
    plan = await stub.PlanRead(
        pb.PlanReadRequest(source=source, max_splits=4, columns=["name", "id"]), timeout=TIMEOUT
    )
    assert decode_schema(plan.schema) == pa.schema([("name", pa.string()), ("id", pa.int64())])
    [ticket] = plan.tickets
    table, complete = await grpc_read(
        stub, pb.ReadRequest(source=source, ticket=ticket.ticket, columns=["name", "id"])
    )
    assert table.column("id").to_pylist() == list(range(1, 26))
    assert table.column("name").to_pylist() == [i["name"] for i in ITEMS]
    assert complete.complete.total_rows == 25


async def test_grpc_read_of_nested_unicode(stub: pb_grpc.ConnectorServiceStub) -> None:
    table, _ = await grpc_read(
        stub, pb.ReadRequest(source=rest_spec("/nested", records_path="results"))
    )
    assert table.column("city").to_pylist() == ["Zürich", "São Paulo"]
    assert json.loads(table.column("address")[0].as_py()) == NESTED[0]["address"]


async def test_grpc_read_errors_are_precise_and_redacted(
    api: RestApi, stub: pb_grpc.ConnectorServiceStub
) -> None:
    link = step_pb2.RestPagination(link_header=step_pb2.LinkHeaderPagination())
    error = await grpc_read_error(stub, rest_spec("/linked-evil", pagination=link))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "HOST_NOT_ALLOWED")
    error = await grpc_read_error(stub, rest_spec("/broken"))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "SOURCE_UNAVAILABLE")
    assert error.metadata["http_status"] == "500"
    assert TOKEN not in error.message
    assert api.hits["/broken"] == 3
    error = await grpc_read_error(stub, rest_spec("/bearer", connection="wrong"))
    assert (error.code, error.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "AUTHENTICATION_FAILED",
    )
    error = await grpc_read_error(stub, rest_spec("/html"))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SOURCE_PARSE_ERROR")
    # A database source cannot name a REST connection.
    error = await grpc_read_error(
        stub, step_pb2.SourceSpec(database=step_pb2.DatabaseSource(connection="api", table="t"))
    )
    assert (error.code, error.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "CONNECTION_TYPE_MISMATCH",
    )


async def test_grpc_write_sends_chunks_with_idempotency_keys(
    api: RestApi, stub: pb_grpc.ConnectorServiceStub
) -> None:
    table = pa.table({"id": list(range(20)), "word": [f"wörd {i}" for i in range(20)]})
    sink = step_pb2.SinkSpec(rest=step_pb2.RestSink(connection="api", path="/sink", batch_size=7))

    async def frames() -> AsyncIterator[pb.WriteRequest]:
        yield pb.WriteRequest(header=pb.WriteHeader(sink=sink, idempotency_key="run-9/s/0"))
        yield pb.WriteRequest(schema=encode_schema(table.schema))
        counter = StreamCounter()
        for batch in table.to_batches(max_chunksize=6):
            yield pb.WriteRequest(record_batch=encode_batch(batch, counter))
        yield pb.WriteRequest(complete=counter.complete())

    response = await stub.Write(frames(), timeout=TIMEOUT)
    assert response.rows_written == 20
    assert response.location == f"{api.url}sink"
    assert not response.replayed
    assert [len(c.records) for c in api.chunks] == [7, 7, 6]
    assert [c.idempotency_key for c in api.chunks] == [f"run-9/s/0/{n}" for n in range(3)]
    assert [r for c in api.chunks for r in c.records] == table.to_pylist()
    assert {h["Authorization"] for h in api.headers["/sink"]} == {f"Bearer {TOKEN}"}


async def test_grpc_test_connection(api: RestApi, stub: pb_grpc.ConnectorServiceStub) -> None:
    named = await stub.TestConnection(pb.TestConnectionRequest(name="api"), timeout=TIMEOUT)
    assert named.ok, named.message
    assert "reachable" in named.message
    inline = pb.InlineConnection(
        type="rest",
        options={
            "base_url": f"{api.url}bearer",
            "auth.type": "bearer",
            "auth.token": "inline-wrong-token",
            "max_retries": "0",
        },
    )
    failed = await stub.TestConnection(pb.TestConnectionRequest(inline=inline), timeout=TIMEOUT)
    assert (failed.ok, failed.reason) == (False, "AUTHENTICATION_FAILED")
    assert "inline-wrong-token" not in failed.message
    good = pb.InlineConnection(
        type="rest",
        options={
            "base_url": f"{api.url}bearer",
            "auth": json.dumps({"type": "bearer", "token": TOKEN}),
            "verify_tls": "true",
        },
    )
    passed = await stub.TestConnection(pb.TestConnectionRequest(inline=good), timeout=TIMEOUT)
    assert passed.ok, passed.message
    bad = pb.InlineConnection(type="rest", options={"base_url": "ftp://example.com"})
    refused = await stub.TestConnection(pb.TestConnectionRequest(inline=bad), timeout=TIMEOUT)
    assert (refused.ok, refused.reason) == (False, "CONFIG_INVALID")
    assert "base_url" in refused.message

"""A real aiohttp HTTP API for the REST connector tests, on 127.0.0.1 and a free port.

Each route exercises one behaviour (a pagination style, an auth scheme, a failure
mode); ``RestApi`` records what the server saw so tests can assert on it.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

TOKEN = "tok-9f8e7d6c5b4a"
USERNAME, PASSWORD = "ada", "pa55-w0rd-lovelace"
API_KEY = "key-0123456789abcdef"

ITEMS: list[dict[str, Any]] = [
    {
        "id": i,
        "name": f"item {i}",
        "price": i * 1.5,
        "active": i % 2 == 0,
        "tags": ["a", "b"][: i % 3],
        "meta": {"rank": i, "label": "x"},
    }
    for i in range(1, 26)
]

NESTED: list[dict[str, Any]] = [
    {
        "id": 1,
        "city": "Zürich",
        "greeting": "こんにちは 👋",
        "address": {"street": "Bahnhofstraße 1", "geo": {"lat": 47.37, "lon": 8.54}},
        "tags": ["café", "naïve"],
        "score": None,
    },
    {
        "id": 2,
        "city": "São Paulo",
        "greeting": "Olá",
        "address": {"street": "Av. Paulista"},
        "tags": [],
        "score": 7,
    },
]


@dataclass
class Chunk:
    """One request received by a sink route."""

    method: str
    idempotency_key: str
    content_type: str
    records: list[dict[str, Any]]


@dataclass
class RestApi:
    """What the server saw: hits per route, request times, sink chunks, headers."""

    hits: Counter[str] = field(default_factory=Counter)
    times: dict[str, list[float]] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)
    queries: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    headers: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    url: str = ""
    port: int = 0


def _json(data: Any, status: int = 200, **headers: str) -> web.Response:
    return web.json_response(data, status=status, headers=headers or None)


def build_app(api: RestApi) -> web.Application:
    """The application; state goes to ``api``."""

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        name = request.path
        api.hits[name] += 1
        api.times.setdefault(name, []).append(time.monotonic())
        api.queries.setdefault(name, []).append(dict(request.query))
        api.headers.setdefault(name, []).append({**request.headers, "_method": request.method})
        return await handler(request)

    async def root(request: web.Request) -> web.Response:
        return _json({"ok": True})

    async def items(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        size = int(request.query.get("per_page", "10"))
        chunk = ITEMS[(page - 1) * size : page * size]
        return _json({"data": {"items": chunk}, "total": len(ITEMS)})

    async def offset(request: web.Request) -> web.Response:
        start = int(request.query["offset"])
        limit = int(request.query["limit"])
        return _json(ITEMS[start : start + limit])

    async def cursor(request: web.Request) -> web.Response:
        after = int(request.query.get("after", "0"))
        chunk = ITEMS[after : after + 7]
        following = after + 7 if after + 7 < len(ITEMS) else None
        return _json({"items": chunk, "meta": {"next_cursor": following}})

    async def linked(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        chunk = ITEMS[(page - 1) * 10 : page * 10]
        headers = {}
        if page * 10 < len(ITEMS):
            # Page 1 links relatively, page 2 absolutely, with other relations around.
            target = f"/linked?page={page + 1}"
            if page == 2:
                target = f"{api.url}linked?page={page + 1}"
            headers["Link"] = (
                f'<{api.url}linked?page=1>; rel="first", <{target}>; rel="next", '
                f'<{api.url}linked?page=3>; rel="last"'
            )
        return _json(chunk, **headers)

    async def linked_evil(request: web.Request) -> web.Response:
        # The next page is on "localhost": the same machine, but not an allowed host.
        link = f'<http://localhost:{api.port}/linked?page=2>; rel="next"'
        return _json(ITEMS[:10], Link=link)

    async def redirect_evil(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://localhost:{api.port}/offset?offset=0&limit=5")

    async def redirect_ok(request: web.Request) -> web.Response:
        raise web.HTTPFound("/offset?offset=0&limit=5")

    async def throttled(request: web.Request) -> web.Response:
        if api.hits[request.path] == 1:
            return _json({"error": "slow down"}, status=429, **{"Retry-After": "1"})
        return _json([{"id": 1}])

    async def throttled_long(request: web.Request) -> web.Response:
        return _json({"error": "slow down"}, status=429, **{"Retry-After": "3600"})

    async def flaky(request: web.Request) -> web.Response:
        if api.hits[request.path] <= 3:
            return _json({"error": "maintenance"}, status=503)
        return _json([{"id": 1, "ok": True}])

    async def broken(request: web.Request) -> web.Response:
        return _json({"error": f"boom {TOKEN}"}, status=500)

    async def bearer(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _json({"error": "bad token"}, status=401)
        return _json([{"who": "bearer"}])

    async def basic(request: web.Request) -> web.Response:
        expected = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return _json({"error": "bad password"}, status=401)
        return _json([{"who": "basic"}])

    async def key_header(request: web.Request) -> web.Response:
        if request.headers.get("X-Api-Key") != API_KEY:
            return _json({"error": "bad key"}, status=401)
        return _json([{"who": "key-header"}])

    async def key_query(request: web.Request) -> web.Response:
        if request.query.getall("api_key", []) != [API_KEY]:
            return _json({"error": "bad key"}, status=401)
        page = int(request.query.get("page", "1"))
        headers = {}
        if page == 1:
            # The next link echoes the key, as some APIs do; it must not be sent twice.
            headers["Link"] = f'</key-query?page=2&api_key={API_KEY}>; rel="next"'
        return _json([{"who": "key-query", "page": page}], **headers)

    async def forbidden(request: web.Request) -> web.Response:
        return _json({"error": "no"}, status=403)

    async def bad_request(request: web.Request) -> web.Response:
        return _json({"error": "unknown filter 'colour'"}, status=400)

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>Login</body></html>", content_type="text/html")

    async def scalar(request: web.Request) -> web.Response:
        return _json({"data": "not a list"})

    async def single(request: web.Request) -> web.Response:
        return _json({"user": {"id": 7, "name": "Ada"}})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return _json([])

    async def nested(request: web.Request) -> web.Response:
        return _json({"results": NESTED})

    async def drift(request: web.Request) -> web.Response:
        pages = {
            1: [{"id": 1, "name": "a", "note": None}],
            2: [{"id": 2, "extra": "ignored", "note": "hello"}, {"id": 3, "name": "c"}],
        }
        return _json(pages.get(int(request.query["page"]), []))

    async def type_change(request: web.Request) -> web.Response:
        pages = {1: [{"id": 1}], 2: [{"id": 2.5}]}
        return _json(pages.get(int(request.query["page"]), []))

    async def rate(request: web.Request) -> web.Response:
        page = int(request.query["page"])
        return _json([{"page": page}] if page <= 5 else [])

    async def big(request: web.Request) -> web.Response:
        # Endless pages of 10k records: a reader must stop asking when its consumer stops.
        page = int(request.query["page"])
        return _json([{"page": page, "n": n} for n in range(10_000)])

    async def no_head(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=501)
        return _json({"ok": True})

    async def echo(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        return _json([{"method": request.method, "body": body, "q": dict(request.query)}])

    async def sink(request: web.Request) -> web.Response:
        records = await request.json()
        api.chunks.append(
            Chunk(
                request.method,
                request.headers.get("Idempotency-Key", ""),
                request.headers.get("Content-Type", ""),
                records,
            )
        )
        return _json({"accepted": len(records)}, status=201)

    async def sink_fail(request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        if key.endswith("/2"):
            return _json({"error": "record 7 is invalid"}, status=422)
        return await sink(request)

    app = web.Application(middlewares=[record])
    routes = {
        "/": root,
        "/items": items,
        "/offset": offset,
        "/cursor": cursor,
        "/linked": linked,
        "/linked-evil": linked_evil,
        "/redirect-evil": redirect_evil,
        "/redirect-ok": redirect_ok,
        "/throttled": throttled,
        "/throttled-long": throttled_long,
        "/flaky": flaky,
        "/broken": broken,
        "/bearer": bearer,
        "/basic": basic,
        "/key-header": key_header,
        "/key-query": key_query,
        "/forbidden": forbidden,
        "/bad-request": bad_request,
        "/html": html,
        "/scalar": scalar,
        "/single": single,
        "/slow": slow,
        "/nested": nested,
        "/drift": drift,
        "/type-change": type_change,
        "/rate": rate,
        "/big": big,
    }
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/no-head", no_head)
    app.router.add_post("/sink", sink)
    app.router.add_put("/sink", sink)
    app.router.add_post("/sink-fail", sink_fail)
    return app


class RestServer:
    """``async with RestServer() as api``: the API running on 127.0.0.1, port 0."""

    def __init__(self) -> None:
        self.api = RestApi()
        self._server = TestServer(build_app(self.api), host="127.0.0.1", port=0)

    async def __aenter__(self) -> RestApi:
        await self._server.start_server()
        self.api.port = int(self._server.port or 0)
        self.api.url = str(self._server.make_url("/"))
        return self.api

    async def __aexit__(self, *exc_info: object) -> None:
        await self._server.close()

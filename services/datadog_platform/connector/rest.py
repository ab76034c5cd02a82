"""The REST connector: JSON records from and to HTTP APIs, with aiohttp.

Connection options (values may be YAML structures or strings: a list as
``"a.com, b.com"`` or JSON, a map as JSON/YAML text or flattened ``auth.type`` keys)::

    api:
      type: rest
      base_url: https://api.example.com/v1
      allowed_hosts: [api.example.com, cdn.example.com]   # default: base_url's host and port
      auth: {type: bearer, token: "${env:API_TOKEN}"}
      # auth: {type: basic, username: u, password: "${file:/run/secrets/pw}"}
      # auth: {type: api_key, name: X-API-Key, value: "...", in: header}   # or in: query
      headers: {Accept-Language: en}
      timeout_seconds: 30          # per request, connect to last byte
      max_retries: 5               # on 429, 5xx, connection errors and timeouts
      backoff_seconds: 0.5         # first delay; doubles, equal jitter, capped
      max_backoff_seconds: 30
      rate_limit_per_second: 0     # 0 = unlimited; one token bucket per connection
      verify_tls: true

Reading (``step_pb2.RestSource``): one request per page, pages streamed one after
the other (memory bounded by a page, plus up to ~10k records merged into one batch);
records found by ``records_path``; pagination by page number, offset, cursor or
``Link: <...>; rel="next"``, at most ``max_pages`` requests (default 10000). See
``rest_records`` for the JSON → Arrow type rules (schema inferred from the first
page with records, nested values as JSON text). Projection is applied after
conversion; predicates are not pushed down (the executor filters), so the type
claims neither pushdown capability. One ticket per read: the number of pages is
unknown in advance, so reads are not split.

Writing (``step_pb2.RestSink``): JSON arrays of ``batch_size`` records (default
100) by POST or PUT, each with the header ``Idempotency-Key: <key>/<chunk>``
(chunks numbered from 0). An HTTP API has no transaction: chunks are delivered as
the stream arrives, so a failure midway leaves the earlier chunks delivered; the
error says how many. Delivery is at-least-once, exactly-once on APIs that honour
Idempotency-Key (a replay resends the same chunks with the same keys).
``replayed`` is never reported: the connector cannot know.

Only allowed hosts are reached: every request URL, redirect (followed by hand,
never automatically) and pagination link is checked. Credentials go to every
allowed host. Secrets never appear in messages or logs: URLs are shown without
their query, and configured secret values are masked in response excerpts.

Error reasons raised here:

- ``CONFIG_INVALID`` (INVALID_ARGUMENT): a bad connection option, named.
- ``INVALID_OPTION`` (INVALID_ARGUMENT): a bad source/sink field, named.
- ``INVALID_TICKET`` (INVALID_ARGUMENT): a ticket this connector did not plan.
- ``HOST_NOT_ALLOWED`` (PERMISSION_DENIED): a URL outside ``allowed_hosts``.
- ``AUTHENTICATION_FAILED`` (UNAUTHENTICATED): HTTP 401.
- ``ACCESS_DENIED`` (PERMISSION_DENIED): HTTP 403.
- ``SOURCE_NOT_FOUND`` / ``SINK_NOT_FOUND`` (NOT_FOUND): HTTP 404.
- ``INVALID_QUERY`` (INVALID_ARGUMENT): another 4xx answer to a read (status and
  body excerpt in the message); ``SINK_WRITE_ERROR`` the same for a write.
- ``SOURCE_PARSE_ERROR`` (INVALID_ARGUMENT): a body that is not JSON, a records_path
  that is not an array, a value that changes type between pages.
- ``SOURCE_UNAVAILABLE`` / ``SINK_UNAVAILABLE`` (UNAVAILABLE): connection refused,
  timeout, TLS failure, or 429/5xx after ``max_retries`` retries (last status in the
  message and in metadata ``http_status``), or a ``Retry-After`` longer than
  ``max_backoff_seconds`` (then the caller's retry policy takes over).
- ``TOO_MANY_REDIRECTS`` (INVALID_ARGUMENT): more than 10 redirects.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa
import yaml
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.connector.base import (
    Capability,
    Connection,
    ConnectorType,
    OptionSpec,
    ReadPlan,
    ReadScope,
    RecordStream,
    Ticket,
    TypeInfo,
    WriteOutcome,
    project_schema,
)
from datadog_platform.connector.rest_http import (
    HostRule,
    Redactor,
    TokenBucket,
    backoff_delay,
    display_url,
    excerpt,
    host_allowed,
    next_link,
    parse_retry_after,
)
from datadog_platform.connector.rest_records import (
    batch_to_records,
    encode_records,
    extract_records,
    find,
    infer_schema,
    parse_body,
    split_path,
    to_batch,
)
from datadog_platform.core.arrow_frames import TARGET_BATCH_BYTES
from datadog_platform.core.errors import (
    DomainError,
    ErrorCode,
    FieldViolation,
    invalid_argument,
    not_found,
    permission_denied,
    unavailable,
)
from datadog_platform.core.logging import get_logger

TYPE_NAME = "rest"
DEFAULT_MAX_PAGES = 10_000
DEFAULT_SINK_BATCH = 100
MAX_REDIRECTS = 10
# Small pages are merged into batches of about this many rows (or TARGET_BATCH_BYTES).
TARGET_BATCH_ROWS = 10_000
# Bodies above this are parsed in a worker thread; below, the hop costs more than it saves.
_THREAD_THRESHOLD = 64 * 1024
_REDIRECTS = {301, 302, 303, 307, 308}
_USER_AGENT = "datadog-platform-connector"

log = get_logger(__name__)

_OPTIONS = (
    OptionSpec(
        "base_url", "string", "http(s) URL that source and sink paths are appended to", True
    ),
    OptionSpec(
        "allowed_hosts",
        "list",
        "hosts requests may reach ('api.example.com', 'host:8443', '*.example.com'); "
        "every request, redirect and pagination link is checked",
        default="the host and port of base_url",
    ),
    OptionSpec(
        "auth",
        "map",
        "{type: bearer, token} | {type: basic, username, password} | "
        "{type: api_key, name, value, in: header|query}; token, password and value are secret",
        secret=True,
    ),
    OptionSpec(
        "headers",
        "map",
        "headers sent with every request (treated as secret: they may carry keys)",
        secret=True,
    ),
    OptionSpec(
        "timeout_seconds", "number", "timeout of one request, connect to last byte", default="30"
    ),
    OptionSpec(
        "max_retries", "integer", "retries on 429, 5xx, connection errors, timeouts", default="5"
    ),
    OptionSpec(
        "backoff_seconds",
        "number",
        "first retry delay; doubles each retry, jittered",
        default="0.5",
    ),
    OptionSpec("max_backoff_seconds", "number", "cap of one retry delay", default="30"),
    OptionSpec(
        "rate_limit_per_second",
        "number",
        "request rate limit shared by the connection's requests; 0 means none",
        default="0",
    ),
    OptionSpec("verify_tls", "boolean", "verify the server's TLS certificate", default="true"),
)
# "type" and "description" are entry keys the config loader handles; accepted here too.
_KNOWN_OPTIONS = {o.name for o in _OPTIONS} | {"type", "description"}

_AUTH_KEYS = {
    "none": set(),
    "bearer": {"token"},
    "basic": {"username", "password"},
    "api_key": {"name", "value", "in"},
}


# --- options -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RestAuth:
    """How requests authenticate; the secret is kept out of ``repr``."""

    kind: str = "none"
    secret: str = field(default="", repr=False)
    username: str = ""
    name: str = ""
    location: str = "header"

    def apply(self, headers: CIMultiDict[str], params: list[tuple[str, str]]) -> None:
        if self.kind == "bearer":
            headers["Authorization"] = f"Bearer {self.secret}"
        elif self.kind == "basic":
            pair = f"{self.username}:{self.secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        elif self.kind == "api_key" and self.location == "header":
            headers[self.name] = self.secret
        elif self.kind == "api_key":
            params.append((self.name, self.secret))

    def secrets(self) -> list[str]:
        if self.kind == "basic":
            pair = f"{self.username}:{self.secret}".encode()
            return [self.secret, base64.b64encode(pair).decode("ascii")]
        return [self.secret] if self.secret else []

    def public(self) -> str:
        if self.kind == "basic":
            return f"basic (username {self.username})"
        if self.kind == "api_key":
            return f"api_key ({self.name} in {self.location})"
        return self.kind


@dataclass(frozen=True)
class RestOptions:
    """A REST connection's validated options."""

    base_url: URL
    allowed_hosts: tuple[HostRule, ...]
    auth: RestAuth = RestAuth()
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout_seconds: float = 30.0
    max_retries: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    rate_limit_per_second: float = 0.0
    verify_tls: bool = True
    description: str = ""


def parse_options(name: str, options: Mapping[str, Any]) -> RestOptions:
    """Validate one ``type: rest`` config entry; CONFIG_INVALID naming the bad option."""
    flat_auth = {k[5:]: v for k, v in options.items() if str(k).startswith("auth.")}
    flat_headers = {k[8:]: v for k, v in options.items() if str(k).startswith("headers.")}
    plain = {str(k): v for k, v in options.items() if not str(k).startswith(("auth.", "headers."))}
    unknown = sorted(set(plain) - _KNOWN_OPTIONS)
    if unknown:
        raise _config_error(
            name,
            unknown[0],
            f"unknown option(s) {', '.join(unknown)}; a rest connection takes "
            f"{', '.join(sorted(_KNOWN_OPTIONS - {'type', 'description'}))}",
        )
    base_url = _base_url(name, plain.get("base_url"))
    if "allowed_hosts" in plain and plain["allowed_hosts"] not in (None, "", []):
        entries = _as_list(name, "allowed_hosts", plain["allowed_hosts"])
        try:
            hosts = tuple(HostRule.parse(e) for e in entries)
        except ValueError as exc:
            raise _config_error(name, "allowed_hosts", str(exc)) from None
    else:
        # base_url's host and effective port: a next link cannot downgrade to http
        # or wander to another service on the same machine.
        hosts = (HostRule(str(base_url.host).lower(), base_url.port),)
    auth_map = _as_map(name, "auth", plain.get("auth"))
    auth_map.update(flat_auth)
    headers = {
        str(k): _scalar_text(name, f"headers.{k}", v)
        for k, v in _as_map(name, "headers", plain.get("headers")).items()
    }
    headers.update({str(k): _scalar_text(name, f"headers.{k}", v) for k, v in flat_headers.items()})
    description = plain.get("description") or ""
    if not isinstance(description, str):
        raise _config_error(name, "description", "must be a string")
    return RestOptions(
        base_url=base_url,
        allowed_hosts=hosts,
        auth=_auth(name, auth_map),
        headers=headers,
        timeout_seconds=_number(name, plain, "timeout_seconds", 30.0, positive=True),
        max_retries=int(_number(name, plain, "max_retries", 5, integer=True)),
        backoff_seconds=_number(name, plain, "backoff_seconds", 0.5),
        max_backoff_seconds=_number(name, plain, "max_backoff_seconds", 30.0),
        rate_limit_per_second=_number(name, plain, "rate_limit_per_second", 0.0),
        verify_tls=_boolean(name, "verify_tls", plain.get("verify_tls", True)),
        description=description,
    )


def _base_url(name: str, value: Any) -> URL:
    if not isinstance(value, str) or not value.strip():
        raise _config_error(name, "base_url", "is required: the http(s) URL of the API")
    try:
        url = URL(value.strip())
    except ValueError as exc:
        raise _config_error(name, "base_url", f"is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise _config_error(name, "base_url", "must be an http:// or https:// URL with a host")
    if url.user or url.password:
        raise _config_error(name, "base_url", "must not carry credentials; use the auth option")
    if url.query_string or url.fragment:
        raise _config_error(name, "base_url", "must not have a query or fragment")
    return url


def _auth(name: str, values: Mapping[str, Any]) -> RestAuth:
    if not values:
        return RestAuth()
    kind = str(values.get("type", "")).strip().lower().replace("-", "_")
    if kind not in _AUTH_KEYS:
        raise _config_error(
            name, "auth.type", f"must be one of {', '.join(_AUTH_KEYS)}, got {values.get('type')!r}"
        )
    unknown = sorted(set(values) - _AUTH_KEYS[kind] - {"type"})
    if unknown:
        raise _config_error(name, f"auth.{unknown[0]}", f"is not an option of {kind} auth")

    def text(key: str, default: str | None = None) -> str:
        value = values.get(key, default)
        if value is None or value == "":
            if default is not None:
                return default
            raise _config_error(name, f"auth.{key}", f"is required for {kind} auth")
        return _scalar_text(name, f"auth.{key}", value)

    if kind == "bearer":
        return RestAuth("bearer", secret=text("token"))
    if kind == "basic":
        return RestAuth("basic", secret=text("password", ""), username=text("username"))
    if kind == "api_key":
        location = text("in", "header").lower()
        if location not in ("header", "query"):
            raise _config_error(name, "auth.in", f"must be header or query, got {location!r}")
        default_name = "X-API-Key" if location == "header" else "api_key"
        return RestAuth(
            "api_key", secret=text("value"), name=text("name", default_name), location=location
        )
    return RestAuth()


def _scalar_text(name: str, option: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise _config_error(name, option, "must be a string")


def _as_map(name: str, option: str, value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise _config_error(name, option, "must be a mapping (YAML or JSON)") from None
    if not isinstance(value, Mapping):
        raise _config_error(name, option, "must be a mapping (YAML or JSON)")
    return {str(k): v for k, v in value.items()}


def _as_list(name: str, option: str, value: Any) -> list[str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                raise _config_error(name, option, "must be a list of host names") from None
        else:
            return [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise _config_error(name, option, "must be a list of host names")
    return [_scalar_text(name, option, v) for v in value]


def _number(
    name: str,
    options: Mapping[str, Any],
    option: str,
    default: float,
    *,
    integer: bool = False,
    positive: bool = False,
) -> float:
    value = options.get(option)
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if integer and not number.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise _config_error(name, option, f"must be {kind}, got {value!r}") from None
    if number < 0 or (positive and number == 0) or number != number or number == float("inf"):
        bound = "positive" if positive else "zero or more"
        raise _config_error(name, option, f"must be {bound}, got {value!r}")
    return number


def _boolean(name: str, option: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise _config_error(name, option, f"must be true or false, got {value!r}")


def _config_error(name: str, option: str, problem: str) -> DomainError:
    return invalid_argument(
        "CONFIG_INVALID",
        f"option {option} {problem}",
        [FieldViolation(f"connections.{name}.{option}", problem)],
        connection=name,
    )


# --- requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Response:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL


@dataclass(frozen=True)
class _Role:
    """Whose request it is, which decides error reasons and field names."""

    what: str  # "source", "sink" or "test"
    unavailable: str
    not_found: str
    rejected: str


_SOURCE = _Role("source", "SOURCE_UNAVAILABLE", "SOURCE_NOT_FOUND", "INVALID_QUERY")
_SINK = _Role("sink", "SINK_UNAVAILABLE", "SINK_NOT_FOUND", "SINK_WRITE_ERROR")
_TEST = _Role("test", "SOURCE_UNAVAILABLE", "SOURCE_NOT_FOUND", "INVALID_QUERY")


@dataclass
class _LoopState:
    """The aiohttp session and rate limiter of one event loop (aiohttp needs a loop)."""

    loop: asyncio.AbstractEventLoop
    session: aiohttp.ClientSession
    bucket: TokenBucket | None


@dataclass(frozen=True)
class _Pagination:
    kind: str  # "none", "page_number", "offset", "cursor", "link_header"
    max_pages: int
    param: str = ""  # page, offset or cursor parameter
    size_param: str = ""  # page size or limit parameter
    size: int = 0
    first: int = 1
    cursor_path: tuple[str, ...] = ()


@dataclass(frozen=True)
class _ReadSpec:
    url: URL
    method: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    body: bytes | None
    records_path: tuple[str, ...]
    pagination: _Pagination


_SOURCE_METHODS = {
    step_pb2.HTTP_METHOD_UNSPECIFIED: "GET",
    step_pb2.HTTP_METHOD_GET: "GET",
    step_pb2.HTTP_METHOD_POST: "POST",
    step_pb2.HTTP_METHOD_PUT: "PUT",
    step_pb2.HTTP_METHOD_DELETE: "DELETE",
}
_SINK_METHODS = {
    step_pb2.HTTP_METHOD_UNSPECIFIED: "POST",
    step_pb2.HTTP_METHOD_POST: "POST",
    step_pb2.HTTP_METHOD_PUT: "PUT",
}


class RestConnection(Connection):
    """A configured HTTP API: one aiohttp session, one rate limiter, retries."""

    def __init__(self, name: str, options: RestOptions) -> None:
        super().__init__(name, TYPE_NAME, options.description)
        self.options = options
        self._state: _LoopState | None = None
        self._redact = Redactor([*options.auth.secrets(), *(v for v in options.headers.values())])

    # -- Connection API --

    def public_options(self) -> dict[str, str]:
        o = self.options
        shown = {
            "base_url": str(o.base_url),
            "allowed_hosts": ", ".join(str(h) for h in o.allowed_hosts),
            "auth": o.auth.public(),
            "timeout_seconds": f"{o.timeout_seconds:g}",
            "max_retries": str(o.max_retries),
            "backoff_seconds": f"{o.backoff_seconds:g}",
            "max_backoff_seconds": f"{o.max_backoff_seconds:g}",
            "rate_limit_per_second": f"{o.rate_limit_per_second:g}",
            "verify_tls": "true" if o.verify_tls else "false",
        }
        if o.headers:
            shown["headers"] = ", ".join(sorted(o.headers))  # names only
        return shown

    async def test(self) -> str:
        """HEAD (or GET when HEAD is refused) of base_url; any status below 500 is reachable."""
        started = time.monotonic()
        url = self.options.base_url
        method = "HEAD"
        try:
            response = await self._exchange(
                _TEST, method, url, [], self._headers({}), None, retries=0
            )
            head_refused = response.status == 405
        except DomainError as exc:
            # 501 (HEAD not implemented) is a server error to _exchange, not to a probe.
            if exc.metadata.get("http_status") != "501":
                raise
            head_refused = True
        if head_refused:
            method = "GET"
            response = await self._exchange(
                _TEST, method, url, [], self._headers({}), None, retries=0
            )
        if response.status in (401, 403):
            self._check_status(_TEST, method, url, response)
        elapsed = (time.monotonic() - started) * 1000
        return (
            f"{display_url(url)} is reachable: {method} answered HTTP {response.status} "
            f"in {elapsed:.0f} ms"
        )

    async def plan_read(
        self, source: step_pb2.RestSource, scope: ReadScope, max_splits: int
    ) -> ReadPlan:
        """One ticket: the number of pages is not known before reading them."""
        description = await self.describe(source)
        schema = project_schema(description.schema, scope.columns)
        spec = self._read_spec(source)
        what = f"all pages of {spec.method} {display_url(spec.url)}"
        return ReadPlan(schema, (Ticket(b"", what),))

    def read(
        self, source: step_pb2.RestSource, scope: ReadScope, ticket: bytes
    ) -> contextlib.AbstractAsyncContextManager[RecordStream]:
        return self._read(source, scope, ticket)

    async def write(
        self,
        sink: step_pb2.RestSink,
        idempotency_key: str,
        schema: pa.Schema,
        batches: AsyncIterator[pa.RecordBatch],
    ) -> WriteOutcome:
        """POST/PUT ``batch_size`` records per request as they arrive (not atomic: module doc)."""
        url = self._url(sink.path, "sink.rest.path")
        method = _SINK_METHODS.get(sink.method)
        if method is None:
            raise _option_error("sink.rest.method", "a REST sink sends POST or PUT requests")
        if sink.batch_size < 0:
            raise _option_error("sink.rest.batch_size", "must not be negative")
        if not idempotency_key:
            raise _option_error("idempotency_key", "is required")
        size = sink.batch_size or DEFAULT_SINK_BATCH
        self._check_host(_SINK, url)
        sent = _Delivery()
        pending: list[dict[str, Any]] = []
        try:
            async for batch in batches:
                records = await asyncio.to_thread(batch_to_records, batch)
                start = 0
                if pending:
                    start = size - len(pending)
                    pending.extend(records[:start])
                    if len(pending) < size:
                        continue
                    await self._send_chunk(sink, method, url, idempotency_key, pending, sent)
                    pending = []
                full_end = start + (len(records) - start) // size * size
                for offset in range(start, full_end, size):
                    chunk = records[offset : offset + size]
                    await self._send_chunk(sink, method, url, idempotency_key, chunk, sent)
                pending = records[full_end:]
            if pending:
                await self._send_chunk(sink, method, url, idempotency_key, pending, sent)
        except DomainError as exc:
            raise _partial(exc, sent, display_url(url)) from None
        except BaseException:
            if sent.records:
                log.warning(
                    "rest.write_interrupted",
                    connection=self.name,
                    url=display_url(url),
                    records_delivered=sent.records,
                    chunks_delivered=sent.chunks,
                )
            raise
        log.info(
            "rest.write_done",
            connection=self.name,
            url=display_url(url),
            records=sent.records,
            chunks=sent.chunks,
        )
        return WriteOutcome(sent.records, display_url(url))

    async def close(self) -> None:
        state, self._state = self._state, None
        if state is None or state.session.closed:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is state.loop:
            await state.session.close()

    # -- reading --

    @contextlib.asynccontextmanager
    async def _read(
        self, source: step_pb2.RestSource, scope: ReadScope, ticket: bytes
    ) -> AsyncIterator[RecordStream]:
        if ticket:
            raise invalid_argument(
                "INVALID_TICKET",
                "a REST read has a single, empty ticket; use the tickets PlanRead returned",
                [FieldViolation("ticket", "not a ticket of this source")],
            )
        spec = self._read_spec(source)
        pages = self._pages(spec)
        batches: AsyncIterator[pa.RecordBatch] | None = None
        try:
            first: list[dict[str, Any]] = []
            first_where = ""
            async for where, records in pages:
                if records:
                    first, first_where = records, where
                    break
            if first:
                schema = await _maybe_thread(len(first) > 1000, infer_schema, first)
            else:
                # Nothing at all: the requested columns (as strings) with no rows.
                schema = pa.schema([pa.field(c, pa.string()) for c in scope.columns])
            projected = project_schema(schema, scope.columns)
            batches = self._batches(pages, first, first_where, schema, scope.columns)
            yield RecordStream(projected, batches)
        finally:
            if batches is not None:
                await batches.aclose()  # type: ignore[attr-defined]
            await pages.aclose()

    async def _batches(
        self,
        pages: AsyncIterator[tuple[str, list[dict[str, Any]]]],
        first: list[dict[str, Any]],
        first_where: str,
        schema: pa.Schema,
        columns: tuple[str, ...],
    ) -> AsyncIterator[pa.RecordBatch]:
        """Convert pages as they come, merging small ones up to ~10k rows / TARGET_BATCH_BYTES."""
        if not first:
            return
        pending: list[pa.RecordBatch] = []
        rows = nbytes = 0
        row_number = 0

        async def convert(where: str, records: list[dict[str, Any]]) -> pa.RecordBatch:
            batch = await asyncio.to_thread(to_batch, records, schema, where)
            return batch.select(list(columns)) if columns else batch

        page: tuple[str, list[dict[str, Any]]] | None = (first_where, first)
        while page is not None:
            where, records = page
            if records:
                batch = await convert(where, records)
                row_number += len(records)
                pending.append(batch)
                rows += batch.num_rows
                nbytes += batch.nbytes
                if rows >= TARGET_BATCH_ROWS or nbytes >= TARGET_BATCH_BYTES:
                    yield _concat(pending)
                    pending, rows, nbytes = [], 0, 0
            page = await anext(pages, None)  # type: ignore[call-overload]
        if pending:
            yield _concat(pending)

    async def _pages(self, spec: _ReadSpec) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """Request pages one at a time; yields (description, records) for each."""
        p = spec.pagination
        url = spec.url
        cursor = ""
        headers = self._headers(spec.headers)
        if spec.body is not None:
            headers["Content-Type"] = "application/json"
        for index in range(p.max_pages):
            params = list(spec.query)
            if p.kind == "page_number":
                params.append((p.param, str(p.first + index)))
                if p.size_param and p.size:
                    params.append((p.size_param, str(p.size)))
            elif p.kind == "offset":
                params += [(p.param, str(index * p.size)), (p.size_param, str(p.size))]
            elif p.kind == "cursor" and index > 0:
                params.append((p.param, cursor))
            elif p.kind == "link_header" and index > 0:
                params = []  # the next link carries its whole query
            where = f"page {index + 1} of {spec.method} {display_url(url)}"
            response = await self._exchange(_SOURCE, spec.method, url, params, headers, spec.body)
            self._check_status(_SOURCE, spec.method, url, response)
            records, cursor = await _maybe_thread(
                len(response.body) > _THREAD_THRESHOLD,
                _parse_page,
                response.body,
                spec.records_path,
                p.cursor_path,
                where,
            )
            yield where, records
            if p.kind == "none":
                return
            if p.kind == "page_number" and not records:
                return
            if p.kind == "offset" and len(records) < p.size:
                return
            if p.kind == "cursor" and not cursor:
                return
            if p.kind == "link_header":
                following = next_link(response.headers.getall("Link", []), response.url)
                if following is None:
                    return
                url = following
        log.warning(
            "rest.max_pages_reached",
            connection=self.name,
            url=display_url(spec.url),
            max_pages=p.max_pages,
        )

    def _read_spec(self, source: step_pb2.RestSource) -> _ReadSpec:
        url = self._url(source.path, "source.rest.path")
        method = _SOURCE_METHODS.get(source.method)
        if method is None:
            raise _option_error("source.rest.method", f"unknown value {source.method}")
        body: bytes | None = None
        if source.body:
            try:
                json.loads(source.body)
            except ValueError as exc:
                raise _option_error("source.rest.body", f"is not JSON: {exc}") from None
            body = source.body.encode("utf-8")
        return _ReadSpec(
            url=url,
            method=method,
            query=tuple(sorted(source.query.items())),
            headers=dict(source.headers),
            body=body,
            records_path=split_path(source.records_path),
            pagination=_pagination(source.pagination),
        )

    # -- writing --

    async def _send_chunk(
        self,
        sink: step_pb2.RestSink,
        method: str,
        url: URL,
        key: str,
        chunk: list[dict[str, Any]],
        sent: _Delivery,
    ) -> None:
        body = await _maybe_thread(len(chunk) > 1000, encode_records, chunk)
        headers = self._headers(dict(sink.headers))
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = f"{key}/{sent.chunks}"
        response = await self._exchange(_SINK, method, url, [], headers, body)
        self._check_status(_SINK, method, url, response)
        sent.chunks += 1
        sent.records += len(chunk)

    # -- HTTP --

    def _url(self, path: str, field_name: str) -> URL:
        """``path`` appended to base_url (one slash between them)."""
        if "://" in path:
            raise _option_error(field_name, "must be a path relative to the connection's base_url")
        base = str(self.options.base_url).rstrip("/")
        relative = path.lstrip("/")
        try:
            return URL(f"{base}/{relative}" if relative else base)
        except ValueError as exc:
            raise _option_error(field_name, f"does not make a valid URL: {exc}") from None

    def _headers(self, extra: Mapping[str, str]) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict(
            {"Accept": "application/json", "User-Agent": _USER_AGENT}
        )
        headers.update(self.options.headers)
        headers.update(extra)
        return headers

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._state
        if state is None or state.loop is not loop or state.session.closed:
            # A session belongs to the loop that made it: make one in this loop.
            o = self.options
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=o.verify_tls),
                timeout=aiohttp.ClientTimeout(total=o.timeout_seconds),
                auto_decompress=True,
            )
            bucket = TokenBucket(o.rate_limit_per_second) if o.rate_limit_per_second else None
            state = self._state = _LoopState(loop, session, bucket)
        return state

    def _check_host(self, role: _Role, url: URL) -> None:
        if not host_allowed(url, self.options.allowed_hosts):
            allowed = ", ".join(str(h) for h in self.options.allowed_hosts)
            raise permission_denied(
                "HOST_NOT_ALLOWED",
                f"{display_url(url)} is not on an allowed host of connection {self.name!r} "
                f"(allowed: {allowed}; only http and https); add it to allowed_hosts to reach it",
                connection=self.name,
                host=url.host or "",
            )

    async def _exchange(
        self,
        role: _Role,
        method: str,
        url: URL,
        params: list[tuple[str, str]],
        headers: CIMultiDict[str],
        body: bytes | None,
        *,
        retries: int | None = None,
    ) -> _Response:
        """One request with retries on 429, 5xx, connection errors and timeouts."""
        o = self.options
        retries = o.max_retries if retries is None else retries
        attempt = 0
        while True:
            status = 0
            retry_after: float | None = None
            try:
                response = await self._follow(role, method, url, params, headers, body)
            except aiohttp.ClientSSLError as exc:
                raise unavailable(
                    role.unavailable,
                    f"{method} {display_url(url)}: TLS failed ({self._redact(str(exc))}); "
                    "verify_tls: false is for test servers only",
                    connection=self.name,
                ) from None
            except aiohttp.InvalidURL as exc:
                raise invalid_argument(
                    "INVALID_OPTION", f"invalid URL {self._redact(str(exc))}"
                ) from None
            except TimeoutError:
                problem = f"no complete answer within timeout_seconds={o.timeout_seconds:g}"
            except aiohttp.ClientError as exc:
                problem = f"{type(exc).__name__}: {self._redact(str(exc)) or 'connection failed'}"
            else:
                if response.status != 429 and response.status < 500:
                    return response
                status = response.status
                problem = f"HTTP {status} {excerpt(response.body, 120)}"
                problem = self._redact(problem)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            metadata = {"connection": self.name}
            if status:
                metadata["http_status"] = str(status)
            if attempt >= retries:
                raise unavailable(
                    role.unavailable,
                    f"{method} {display_url(url)} failed after {attempt + 1} attempt(s); "
                    f"last: {problem}",
                    **metadata,
                )
            if retry_after is not None and retry_after > o.max_backoff_seconds:
                raise unavailable(
                    role.unavailable,
                    f"{method} {display_url(url)} answered {problem} and asks to retry after "
                    f"{retry_after:.0f} s, longer than max_backoff_seconds="
                    f"{o.max_backoff_seconds:g}",
                    retry_after_seconds=f"{retry_after:.0f}",
                    **metadata,
                )
            delay = (
                retry_after
                if retry_after is not None
                else backoff_delay(attempt, o.backoff_seconds, o.max_backoff_seconds)
            )
            log.info(
                "rest.retry",
                connection=self.name,
                url=display_url(url),
                attempt=attempt + 1,
                problem=problem,
                delay_seconds=round(delay, 3),
            )
            await asyncio.sleep(delay)
            attempt += 1

    async def _follow(
        self,
        role: _Role,
        method: str,
        url: URL,
        params: list[tuple[str, str]],
        headers: CIMultiDict[str],
        body: bytes | None,
    ) -> _Response:
        """Send one request, following redirects by hand so each hop's host is checked."""
        state = self._loop_state()
        for _ in range(MAX_REDIRECTS + 1):
            self._check_host(role, url)
            query = list(params)
            request_headers = CIMultiDict(headers)
            self.options.auth.apply(request_headers, query)
            target = url
            if self.options.auth.kind == "api_key" and self.options.auth.location == "query":
                # A next link may echo the key; send it once.
                target = url.without_query_params(self.options.auth.name)
            if state.bucket is not None:
                await state.bucket.acquire()
            async with state.session.request(
                method,
                target,
                params=query or None,
                headers=request_headers,
                data=body,
                allow_redirects=False,
            ) as answer:
                data = await answer.read()
                response = _Response(answer.status, answer.headers, data, answer.url)
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or not location:
                return response
            url = response.url.join(URL(location))
            params = []
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = ("HEAD" if method == "HEAD" else "GET"), None
        raise invalid_argument(
            "TOO_MANY_REDIRECTS",
            f"{display_url(url)}: more than {MAX_REDIRECTS} redirects",
            connection=self.name,
        )

    def _check_status(self, role: _Role, method: str, url: URL, response: _Response) -> None:
        status = response.status
        if 200 <= status < 300:
            return
        shown = f"{method} {display_url(url)} answered HTTP {status}"
        metadata = {"connection": self.name, "http_status": str(status)}
        if status == 401:
            raise DomainError(
                ErrorCode.UNAUTHENTICATED,
                "AUTHENTICATION_FAILED",
                f"{shown}: the credentials of connection {self.name!r} were refused",
                metadata,
            )
        if status == 403:
            raise permission_denied(
                "ACCESS_DENIED",
                f"{shown}: connection {self.name!r} may not access it",
                **metadata,
            )
        if status == 404:
            raise not_found(role.not_found, f"{shown}: no such endpoint", **metadata)
        body = self._redact(excerpt(response.body))
        field_name = "sink.rest" if role is _SINK else "source.rest"
        raise invalid_argument(
            role.rejected,
            f"{shown}: {body}",
            [FieldViolation(field_name, f"refused with HTTP {status}")],
            **metadata,
        )


@dataclass
class _Delivery:
    chunks: int = 0
    records: int = 0


def _partial(exc: DomainError, sent: _Delivery, where: str) -> DomainError:
    """``exc``, saying what was already delivered (a REST sink cannot roll back)."""
    if not sent.records:
        return exc
    note = (
        f"; {sent.records} record(s) in {sent.chunks} chunk(s) were already delivered to "
        f"{where} and stay delivered (an HTTP API has no transaction): retry with the same "
        "idempotency key, whose chunk keys are the same, to complete it"
    )
    metadata = {
        **exc.metadata,
        "records_delivered": str(sent.records),
        "chunks_delivered": str(sent.chunks),
    }
    return DomainError(exc.code, exc.reason, exc.message + note, metadata, exc.violations)


def _parse_page(
    body: bytes, records_path: tuple[str, ...], cursor_path: tuple[str, ...], where: str
) -> tuple[list[dict[str, Any]], str]:
    document = parse_body(body, where)
    if document is None:  # an empty body (e.g. 204): no records
        return [], ""
    records = extract_records(document, records_path, where)
    cursor = ""
    if cursor_path:
        _, value = find(document, cursor_path)
        if value is not None and not isinstance(value, dict | list):
            cursor = str(value).lower() if isinstance(value, bool) else str(value)
    return records, cursor


def _pagination(message: step_pb2.RestPagination) -> _Pagination:
    kind = message.WhichOneof("kind") or "none"
    if message.max_pages < 0:
        raise _option_error("source.rest.pagination.max_pages", "must not be negative")
    max_pages = message.max_pages or DEFAULT_MAX_PAGES
    prefix = f"source.rest.pagination.{kind}"
    if kind == "page_number":
        p = message.page_number
        if p.page_size < 0 or p.first_page < 0:
            raise _option_error(prefix, "page_size and first_page must not be negative")
        return _Pagination(
            kind,
            max_pages,
            p.page_param or "page",
            p.size_param,
            p.page_size,
            p.first_page if p.HasField("first_page") else 1,
        )
    if kind == "offset":
        o = message.offset
        if o.limit < 0:
            raise _option_error(f"{prefix}.limit", "must not be negative")
        return _Pagination(
            kind, max_pages, o.offset_param or "offset", o.limit_param or "limit", o.limit or 100
        )
    if kind == "cursor":
        c = message.cursor
        if not c.cursor_param:
            raise _option_error(f"{prefix}.cursor_param", "is required")
        if not c.cursor_path:
            raise _option_error(f"{prefix}.cursor_path", "is required")
        return _Pagination(kind, max_pages, c.cursor_param, cursor_path=split_path(c.cursor_path))
    return _Pagination(kind, max_pages)


def _option_error(field_name: str, problem: str) -> DomainError:
    return invalid_argument(
        "INVALID_OPTION", f"{field_name} {problem}", [FieldViolation(field_name, problem)]
    )


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)


async def _maybe_thread(offload: bool, func: Any, *args: Any) -> Any:
    """``func(*args)``, in a worker thread when the input is big enough to block the loop."""
    if offload:
        return await asyncio.to_thread(func, *args)
    return func(*args)


class RestConnectorType(ConnectorType):
    """``type: rest``: JSON HTTP APIs."""

    spec_kind = "rest"
    info = TypeInfo(
        type=TYPE_NAME,
        description=(
            "JSON HTTP APIs (aiohttp): paginated reads (page number, offset, cursor, Link "
            "header) and batched POST/PUT writes, with auth, retries, rate limit and an "
            "allow-list of hosts. Projection is applied after download; no predicate pushdown."
        ),
        capabilities=frozenset({Capability.READ, Capability.WRITE, Capability.DESCRIBE}),
        options=_OPTIONS,
    )

    def create(self, name: str, options: Mapping[str, Any], base_dir: Path) -> RestConnection:
        return RestConnection(name, parse_options(name, options))


REST_CONNECTOR_TYPE = RestConnectorType()

"""ConnectorService over gRPC: protobuf frames to and from the connector interface (``base``).

Each RPC looks its connection up in the live config (holding a lease on it for
the whole call, so a config reload never closes a connection under a running
stream), calls one :class:`~datadog_platform.connector.base.Connection` method and
translates the result. Errors are :class:`DomainError` and mapped to statuses by
the shared interceptor (which redacts secrets), also after a stream has started.

Error reasons raised here (besides those of ``config`` and the connectors):

- ``REQUIRED_FIELD_MISSING`` (INVALID_ARGUMENT): no source/sink, no connection name,
  an empty ``header.idempotency_key``, or a TestConnection without a target.
- ``INVALID_OPTION`` (INVALID_ARGUMENT): a negative ``max_splits``.
- ``ARROW_STREAM_PROTOCOL`` (INVALID_ARGUMENT): write frames out of order, or undecodable.
- ``ARROW_STREAM_INCOMPLETE`` / ``ARROW_STREAM_MISMATCH`` (UNAVAILABLE): a write stream
  that ended without its completion frame, or whose totals disagree; nothing is written.

TestConnection answers failures in its response (``ok=false``, ``reason``, redacted
``message``) rather than as an RPC error, except an unknown connection name
(NOT_FOUND, CONNECTION_NOT_FOUND).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pyarrow as pa

from datadog_platform.api.common.v1 import arrow_pb2, connection_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.connector.base import Connection, ReadScope, TypeInfo
from datadog_platform.connector.config import (
    ConnectorConfig,
    LiveConfig,
    close_quietly,
    create_connection,
    parse_entry,
    required_field,
)
from datadog_platform.core.arrow_frames import (
    BatchFrame,
    EncodedFrame,
    StreamCounter,
    batch_frames,
    decode_batch,
    decode_schema,
    encode_schema,
    frame_kind,
    incomplete_stream_error,
    protocol_error,
)
from datadog_platform.core.connector_frames import READ_BATCH_FIELD
from datadog_platform.core.errors import DomainError, FieldViolation, invalid_argument
from datadog_platform.core.logging import get_logger
from datadog_platform.core.parquet_frames import ParquetChunk, ParquetFileHead
from datadog_platform.core.redaction import redact, secret_scope

SERVICE_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["ConnectorService"]
#: Upper bound on one TestConnection check; connectors have their own, shorter timeouts.
TEST_TIMEOUT_SECONDS = 30.0
INLINE_CONNECTION = "inline"

log = get_logger(__name__)


class ConnectorServicer(pb_grpc.ConnectorServiceServicer):
    """The ConnectorService RPCs over the live config's connections."""

    def __init__(self, config: ConnectorConfig | LiveConfig) -> None:
        self._live = config if isinstance(config, LiveConfig) else LiveConfig(config)

    @property
    def live(self) -> LiveConfig:
        """The reloadable config this servicer reads."""
        return self._live

    # ------------------------------------------------------------------ metadata

    async def ListConnections(
        self, request: pb.ListConnectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConnectionsResponse:
        page = self._live.current.list_page(request.page_size, request.page_token)
        return pb.ListConnectionsResponse(
            connections=[_connection_message(c) for c in page.connections],
            next_page_token=page.next_page_token,
        )

    async def ListConnectorTypes(
        self, request: pb.ListConnectorTypesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConnectorTypesResponse:
        infos = self._live.current.registry.infos()
        return pb.ListConnectorTypesResponse(types=[_type_message(i) for i in infos])

    async def TestConnection(
        self, request: pb.TestConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.TestConnectionResponse:
        target = request.WhichOneof("target")
        if target == "name":
            async with self._live.lease(lambda c: c.connection(request.name, "name")) as conn:
                return await _test(conn)
        if target == "inline":
            return await self._test_inline(request.inline)
        raise required_field("target", "a connection name or an inline connection")

    async def _test_inline(self, inline: pb.InlineConnection) -> pb.TestConnectionResponse:
        """Build a temporary connection from the request, test it, close it."""
        config = self._live.current
        options = dict(inline.options)
        registered = config.registry.get(inline.type)
        # Client-given secrets are masked for this call only, not registered for good.
        secrets = [v for k, v in options.items() if _is_secret(registered, k)]
        with secret_scope(secrets):
            started = time.perf_counter()
            found: list[str] = []
            try:
                if registered is None:
                    known = ", ".join(config.registry.names)
                    raise invalid_argument(
                        "CONFIG_INVALID",
                        f"inline.type {inline.type!r} is not a known connector type "
                        f"(known: {known})",
                        [FieldViolation("inline.type", "unknown connector type")],
                    )
                entry = parse_entry(
                    INLINE_CONNECTION,
                    {**options, "type": inline.type},
                    config.base_dir,
                    config.registry,
                    [],
                    "inline connection",
                    allow_references=False,
                    register=found.append,
                )
            except DomainError as exc:
                return _failure(exc, started)
            with secret_scope(found):
                try:
                    connection = create_connection(registered, entry, config.base_dir)
                except DomainError as exc:
                    return _failure(exc, started)
                try:
                    return await _test(connection)
                finally:
                    await close_quietly(connection)

    # ------------------------------------------------------------------ reads

    async def DescribeSource(
        self, request: pb.DescribeSourceRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeSourceResponse:
        async with self._live.lease(lambda c: c.source_connection(request.source)) as picked:
            connection, source = picked
            description = await connection.describe(source)
        response = pb.DescribeSourceResponse(schema=encode_schema(description.schema))
        if description.estimated_rows is not None:
            response.estimated_rows = description.estimated_rows
        return response

    async def PlanRead(
        self, request: pb.PlanReadRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlanReadResponse:
        if request.max_splits < 0:
            raise invalid_argument(
                "INVALID_OPTION",
                f"max_splits must not be negative, got {request.max_splits}",
                [FieldViolation("max_splits", "must not be negative")],
            )
        scope = ReadScope(tuple(request.columns), request.predicate, request.accept_parquet)
        async with self._live.lease(lambda c: c.source_connection(request.source)) as picked:
            connection, source = picked
            plan = await connection.plan_read(source, scope, request.max_splits)
        response = pb.PlanReadResponse(schema=encode_schema(plan.schema))
        for ticket in plan.tickets:
            message = response.tickets.add(ticket=ticket.data, description=ticket.description)
            if ticket.estimated_rows is not None:
                message.estimated_rows = ticket.estimated_rows
        return response

    async def Read(
        self, request: pb.ReadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReadResponse | bytes]:
        scope = ReadScope(tuple(request.columns), request.predicate, request.accept_parquet)
        async with self._live.lease(lambda c: c.source_connection(request.source)) as picked:
            connection, source = picked
            async with connection.read(source, scope, request.ticket) as stream:
                yield pb.ReadResponse(schema=encode_schema(stream.schema))
                counter = StreamCounter()
                # Pre-encoded ReadResponse frames of ~TARGET_BATCH_BYTES, encoded off the loop.
                frames = batch_frames(stream.batches, counter, READ_BATCH_FIELD, _parquet_frame)
                async for frame in frames:
                    yield frame
                yield pb.ReadResponse(complete=counter.complete())

    # ------------------------------------------------------------------ writes

    async def Write(
        self, request_iterator: AsyncIterator[pb.WriteRequest], context: grpc.aio.ServicerContext
    ) -> pb.WriteResponse:
        frames = aiter(request_iterator)
        first = await anext(frames, None)
        if first is None or frame_kind(first) != "header":
            raise protocol_error("the first frame of a write stream must be the header")
        header = first.header
        if not header.idempotency_key:
            raise required_field("header.idempotency_key", "an idempotency key")
        # The sink is looked up (connection, kind) before any data is read, so a
        # bad sink is refused while the client is still sending.
        async with self._live.lease(lambda c: c.sink_connection(header.sink)) as picked:
            connection, sink = picked
            second = await anext(frames, None)
            if second is None or frame_kind(second) != "schema":
                raise protocol_error("the second frame of a write stream must be the schema")
            schema = decode_schema(second.schema)
            outcome = await connection.write(
                sink, header.idempotency_key, schema, _batches(frames, schema)
            )
        log.info(
            "write.committed",
            connection=connection.name,
            location=outcome.location,
            rows=outcome.rows_written,
            replayed=outcome.replayed,
            idempotency_key=header.idempotency_key,
        )
        return pb.WriteResponse(
            rows_written=outcome.rows_written,
            location=redact(outcome.location),
            replayed=outcome.replayed,
        )


def _parquet_frame(item: ParquetFileHead | ParquetChunk) -> list[EncodedFrame]:
    """The Read frame of a Parquet file's head or stored chunk (a chunk counts as a batch)."""
    if isinstance(item, ParquetFileHead):
        head = arrow_pb2.ParquetFile(size=item.size, footer=item.footer)
        return [EncodedFrame(pb.ReadResponse(parquet_file=head).SerializeToString(), False)]
    chunk = arrow_pb2.ParquetRowGroup(
        index=item.index,
        num_rows=item.num_rows,
        offsets=item.offsets,
        lengths=item.lengths,
        data=item.data,
    )
    frame = pb.ReadResponse(parquet_row_group=chunk).SerializeToString()
    return [EncodedFrame(frame, True, item.num_rows, len(item.data))]


async def _batches(
    frames: AsyncIterator[pb.WriteRequest | BatchFrame], schema: pa.Schema
) -> AsyncIterator[pa.RecordBatch]:
    """The record batches of a write stream after its schema, checked against its totals.

    Raises (so the connection commits nothing) on a frame out of order, an
    undecodable batch, totals that disagree, or a stream that ends without its
    completion frame.
    """
    counter = StreamCounter()
    async for frame in frames:
        if type(frame) is BatchFrame:
            yield decode_batch(frame, schema, counter)
            continue
        kind = frame.WhichOneof("frame")
        if kind == "record_batch":
            yield decode_batch(frame.record_batch, schema, counter)
        elif kind == "complete":
            counter.check(frame.complete)
            return
        else:
            raise protocol_error(
                f"unexpected {kind or 'empty'} frame after the schema; "
                "expected record_batch or complete"
            )
    raise incomplete_stream_error(counter)


async def _test(connection: Connection) -> pb.TestConnectionResponse:
    """Run ``connection.test()``; a failure is an ``ok=false`` response, never an RPC error."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(TEST_TIMEOUT_SECONDS):
            message = await connection.test()
    except DomainError as exc:
        return _failure(exc, started)
    except TimeoutError:
        return pb.TestConnectionResponse(
            ok=False,
            reason="SOURCE_UNAVAILABLE",
            message=f"the check did not finish within {TEST_TIMEOUT_SECONDS:g}s",
            latency_ms=_elapsed_ms(started),
        )
    except Exception as exc:
        log.error("connection.test_crashed", connection=connection.name, exc_info=exc)
        return pb.TestConnectionResponse(
            ok=False,
            reason="INTERNAL",
            message="the check failed unexpectedly; see the connector log",
            latency_ms=_elapsed_ms(started),
        )
    return pb.TestConnectionResponse(
        ok=True, message=redact(message), latency_ms=_elapsed_ms(started)
    )


def _failure(error: DomainError, started: float) -> pb.TestConnectionResponse:
    log.info("connection.test_failed", reason=error.reason, error=error.message)
    return pb.TestConnectionResponse(
        ok=False,
        reason=error.reason,
        message=redact(error.message),
        latency_ms=_elapsed_ms(started),
    )


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _is_secret(registered: object, option: str) -> bool:
    """Whether an inline option is a secret (all of them when the type is unknown)."""
    info: TypeInfo | None = getattr(registered, "info", None)
    if info is None:
        return True
    return any(s.name == option and s.secret for s in info.options)


def _connection_message(connection: Connection) -> connection_pb2.Connection:
    options = {k: redact(str(v)) for k, v in connection.public_options().items()}
    return connection_pb2.Connection(
        name=connection.name,
        type=connection.type,
        description=connection.description,
        options=options,
    )


def _type_message(info: TypeInfo) -> pb.ConnectorType:
    return pb.ConnectorType(
        type=info.type,
        description=info.description,
        capabilities=sorted(
            pb.Capability.Value(f"CAPABILITY_{c.value}") for c in info.capabilities
        ),
        options=[
            pb.ConnectorOption(
                name=o.name,
                type=o.type,
                required=o.required,
                default_value=o.default,
                description=o.description,
                secret=o.secret,
            )
            for o in info.options
        ],
        plugin=info.plugin,
    )

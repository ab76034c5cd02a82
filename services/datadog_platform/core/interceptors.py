"""The one server interceptor: request-scoped log context and error mapping.

Every RPC gets ``request_id`` (from the ``x-request-id`` header, or a new one) and
``rpc`` bound in the structlog context. A :class:`DomainError` becomes a rich status;
any other exception becomes INTERNAL with an opaque message and is logged with its
traceback, so no client ever sees UNKNOWN or a Python traceback. Every message,
metadata value and field violation sent to a client goes through
:func:`~datadog_platform.core.redaction.redact` first.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

from datadog_platform.core.errors import DomainError, FieldViolation, internal
from datadog_platform.core.logging import get_logger
from datadog_platform.core.redaction import redact
from datadog_platform.core.status import to_grpc_status

REQUEST_ID_HEADER = "x-request-id"
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

log = get_logger(__name__)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Binds log context per call and maps exceptions to statuses."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        request_id = _request_id(handler_call_details)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, request_id),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, method, request_id),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method, request_id),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(handler.stream_stream, method, request_id),
            handler.request_deserializer,
            handler.response_serializer,
        )


def _request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == REQUEST_ID_HEADER and value:
            return str(value)[:128]
    return uuid.uuid4().hex


def _wrap_unary(behavior: Callable[..., Awaitable[Any]], method: str, request_id: str):
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with structlog.contextvars.bound_contextvars(request_id=request_id, rpc=method):
            started = time.perf_counter()
            try:
                response = await behavior(request, context)
            except Exception as exc:
                await _abort(context, exc, method, started)
            _log_done(method, started)
            return response

    return wrapper


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]], method: str, request_id: str):
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        with structlog.contextvars.bound_contextvars(request_id=request_id, rpc=method):
            started = time.perf_counter()
            try:
                async for response in behavior(request, context):
                    yield response
            except Exception as exc:
                await _abort(context, exc, method, started)
            _log_done(method, started)

    return wrapper


def _log_done(method: str, started: float) -> None:
    if not method.startswith(_QUIET_PREFIXES):
        log.info("rpc.ok", duration_ms=round((time.perf_counter() - started) * 1000, 2))


async def _abort(
    context: grpc.aio.ServicerContext, exc: Exception, method: str, started: float
) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc  # the servicer already set a status
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    if isinstance(exc, DomainError):
        error = _redacted(exc)
        log.warning(
            "rpc.error",
            code=error.code.value,
            reason=error.reason,
            error=error.message,
            duration_ms=duration_ms,
        )
    else:
        log.error("rpc.internal_error", duration_ms=duration_ms, exc_info=exc)
        error = internal("INTERNAL", "internal error; see the server log for details")
    status = to_grpc_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


def _redacted(error: DomainError) -> DomainError:
    """``error`` with secrets masked in everything a client will see."""
    return DomainError(
        error.code,
        error.reason,
        redact(error.message),
        {key: redact(value) for key, value in error.metadata.items()},
        tuple(FieldViolation(v.field, redact(v.description)) for v in error.violations),
    )

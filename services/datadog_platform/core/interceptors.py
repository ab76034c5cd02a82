"""The one server interceptor: request-scoped log context, error mapping and RPC metrics.

Every RPC gets ``request_id`` (from the ``x-request-id`` header, or a new one) and
``rpc`` bound in the structlog context, plus ``run_id``, ``stage_id`` and ``attempt``
when the caller sent them (``x-datadog-run-id``, ``x-datadog-stage-id``,
``x-datadog-attempt``): the scheduler sends them with each stage attempt and the
executor forwards them to the connector, so one run's log lines correlate across
the three services. Every call's duration is recorded by method and status code
(:func:`~datadog_platform.core.metrics.observe_rpc`). A :class:`DomainError` becomes a rich status;
any other exception becomes INTERNAL with an opaque message and is logged with its
traceback, so no client ever sees UNKNOWN or a Python traceback. Every message,
metadata value and field violation sent to a client goes through
:func:`~datadog_platform.core.redaction.redact` first.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
import structlog

from datadog_platform.core.arrow_frames import pass_encoded
from datadog_platform.core.errors import DomainError, FieldViolation, internal
from datadog_platform.core.logging import get_logger
from datadog_platform.core.metrics import observe_rpc
from datadog_platform.core.redaction import redact
from datadog_platform.core.status import to_grpc_status

REQUEST_ID_HEADER = "x-request-id"
RUN_ID_HEADER = "x-datadog-run-id"
STAGE_ID_HEADER = "x-datadog-stage-id"
ATTEMPT_HEADER = "x-datadog-attempt"
# Correlation header -> the log field it is bound as.
_CORRELATION_FIELDS = {
    RUN_ID_HEADER: "run_id",
    STAGE_ID_HEADER: "stage_id",
    ATTEMPT_HEADER: "attempt",
}
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
_MAX_HEADER_CHARS = 128

log = get_logger(__name__)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Binds log context per call and maps exceptions to statuses.

    ``request_parsers`` replace the generated deserializer of the methods they name
    (full method paths), e.g. to parse a client stream's record batches without
    copying them (``arrow_frames.parse_frame``).
    """

    def __init__(self, request_parsers: Mapping[str, Callable[[bytes], Any]] | None = None) -> None:
        self._parsers = dict(request_parsers or {})

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        bound = _call_context(handler_call_details)
        bound["rpc"] = method
        parse = self._parsers.get(method, handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, bound),
                parse,
                _responses_or_encoded(handler.response_serializer),
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, method, bound),
                parse,
                _responses_or_encoded(handler.response_serializer),
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method, bound),
                parse,
                _responses_or_encoded(handler.response_serializer),
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(handler.stream_stream, method, bound),
            parse,
            _responses_or_encoded(handler.response_serializer),
        )


def _responses_or_encoded(
    serializer: Callable[[Any], bytes] | None,
) -> Callable[[Any], bytes] | None:
    # Hot streams may yield messages they encoded off the loop (arrow_frames.batch_frames).
    return None if serializer is None else pass_encoded(serializer)


def correlation_metadata(
    run_id: str, stage_id: str, attempt: int | str
) -> tuple[tuple[str, str], ...]:
    """The headers that tie a call to one stage attempt (bound into the callee's logs)."""
    return (
        (RUN_ID_HEADER, run_id),
        (STAGE_ID_HEADER, stage_id),
        (ATTEMPT_HEADER, str(attempt)),
    )


def forwarded_metadata(context: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Request id and correlation headers for an outgoing call, from a log context
    (``structlog.contextvars.get_contextvars()``): what this call was bound to."""
    metadata: list[tuple[str, str]] = []
    request_id = context.get("request_id")
    if request_id:
        metadata.append((REQUEST_ID_HEADER, str(request_id)))
    for header, field in _CORRELATION_FIELDS.items():
        value = context.get(field)
        if value is not None and value != "":
            metadata.append((header, str(value)))
    return tuple(metadata)


def _call_context(details: grpc.HandlerCallDetails) -> dict[str, Any]:
    """``request_id`` (given or new) and any correlation ids the caller sent."""
    bound: dict[str, Any] = {}
    for key, value in details.invocation_metadata or ():
        if not value or isinstance(value, bytes):
            continue
        if key == REQUEST_ID_HEADER:
            bound["request_id"] = value[:_MAX_HEADER_CHARS]
            continue
        field = _CORRELATION_FIELDS.get(key)
        if field is not None:
            text = value[:_MAX_HEADER_CHARS]
            # attempt is an int in every other log line; keep one type per field.
            bound[field] = int(text) if field == "attempt" and text.isdigit() else text
    if "request_id" not in bound:
        bound["request_id"] = uuid.uuid4().hex
    return bound


def _wrap_unary(behavior: Callable[..., Awaitable[Any]], method: str, bound: dict[str, Any]):
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with structlog.contextvars.bound_contextvars(**bound):
            started = time.perf_counter()
            code = "OK"
            try:
                response = await behavior(request, context)
            except Exception as exc:
                code = _code_of(exc, context)
                await _abort(context, exc, started)
            except asyncio.CancelledError:
                code = "CANCELLED"
                _log_cancelled(method, started)
                raise
            finally:
                observe_rpc(method, code, time.perf_counter() - started)
            _log_done(method, started)
            return response

    return wrapper


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]], method: str, bound: dict[str, Any]):
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        with structlog.contextvars.bound_contextvars(**bound):
            started = time.perf_counter()
            code = "OK"
            try:
                async for response in behavior(request, context):
                    yield response
            except Exception as exc:
                code = _code_of(exc, context)
                await _abort(context, exc, started)
            except (asyncio.CancelledError, GeneratorExit):
                # The client went away mid-stream, or stopped reading once it had what
                # it needed (the scheduler does, after a stage's final event).
                code = "CANCELLED"
                _log_cancelled(method, started)
                raise
            finally:
                observe_rpc(method, code, time.perf_counter() - started)
            _log_done(method, started)

    return wrapper


def _log_done(method: str, started: float) -> None:
    if not method.startswith(_QUIET_PREFIXES):
        log.info("rpc.ok", duration_ms=round((time.perf_counter() - started) * 1000, 2))


def _code_of(exc: Exception, context: grpc.aio.ServicerContext) -> str:
    """Name of the status code the call ends with because of ``exc``."""
    if isinstance(exc, grpc.aio.AbortError):
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    if isinstance(exc, DomainError):
        return exc.code.value  # ErrorCode names are gRPC's
    return "INTERNAL"


def _log_cancelled(method: str, started: float) -> None:
    # DEBUG: the scheduler cancels every ExecuteTask once it has the final event, and at
    # a thousand stages a second an INFO line each would cost the executor more than
    # the no-op stages themselves (their own outcome is logged by the stage runner).
    if not method.startswith(_QUIET_PREFIXES):
        log.debug("rpc.cancelled", duration_ms=round((time.perf_counter() - started) * 1000, 2))


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, started: float) -> None:
    """End the call with the status ``exc`` maps to (always raises)."""
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

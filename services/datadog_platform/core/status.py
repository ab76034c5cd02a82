"""Translation between domain errors and ``google.rpc.Status`` (both directions).

Servers turn a :class:`DomainError` into a status with an ``ErrorInfo`` and, for bad
input, ``BadRequest`` field violations. Clients read them back with :func:`details_of`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from datadog_platform.core.errors import ERROR_DOMAIN, DomainError, ErrorCode, FieldViolation

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def to_grpc_status(error: DomainError) -> grpc.Status:
    """The rich gRPC status for a domain error."""
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=ERROR_DOMAIN, metadata=dict(error.metadata)
    )
    details = [_pack(info)]
    if error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    status = status_pb2.Status(
        code=code_pb2.Code.Value(error.code.value), message=error.message, details=details
    )
    return rpc_status.to_status(status)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


@dataclass
class RpcErrorDetails:
    """What a client can learn from a failed call."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[FieldViolation] = field(default_factory=list)


def details_of(error: grpc.RpcError) -> RpcErrorDetails:
    """Decode the status, ``ErrorInfo`` and ``BadRequest`` carried by a failed call."""
    code = error.code()  # type: ignore[attr-defined]
    message = error.details() or ""  # type: ignore[attr-defined]
    result = RpcErrorDetails(code=code, message=message)
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key != _STATUS_DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                result.reason, result.metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                result.violations = [
                    FieldViolation(v.field, v.description) for v in bad.field_violations
                ]
    return result


def domain_error_of(error: grpc.RpcError) -> DomainError:
    """A failed call from another service as a domain error, keeping its reason."""
    details = details_of(error)
    try:
        code = ErrorCode(details.code.name)
    except ValueError:
        code = ErrorCode.INTERNAL
    return DomainError(
        code,
        details.reason or details.code.name,
        details.message,
        details.metadata,
        tuple(details.violations),
    )

"""Domain errors: what went wrong, independent of any transport.

Domain code raises these; one interceptor (``core.interceptors``) turns them into a
``google.rpc.Status`` with an ``ErrorInfo`` (and ``BadRequest`` field violations for
bad input). Nothing in this module imports grpc.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

ERROR_DOMAIN = "datadog_platform"


class ErrorCode(enum.Enum):
    """Canonical error codes; names match gRPC status codes one to one."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class FieldViolation:
    """One problem with one field of a request, e.g. ``pipeline.steps[2].inputs[0]``."""

    field: str
    description: str


@dataclass
class DomainError(Exception):
    """An error with a stable machine-readable ``reason`` (UPPER_SNAKE_CASE)."""

    code: ErrorCode
    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def invalid_argument(
    reason: str, message: str, violations: Iterable[FieldViolation] = (), **metadata: str
) -> DomainError:
    """Bad input; ``violations`` name each offending field."""
    return DomainError(ErrorCode.INVALID_ARGUMENT, reason, message, metadata, tuple(violations))


def not_found(reason: str, message: str, **metadata: str) -> DomainError:
    """The named thing does not exist."""
    return DomainError(ErrorCode.NOT_FOUND, reason, message, metadata)


def already_exists(reason: str, message: str, **metadata: str) -> DomainError:
    """The thing to create exists already."""
    return DomainError(ErrorCode.ALREADY_EXISTS, reason, message, metadata)


def permission_denied(reason: str, message: str, **metadata: str) -> DomainError:
    """The caller may not do this (e.g. a path outside a connection's root)."""
    return DomainError(ErrorCode.PERMISSION_DENIED, reason, message, metadata)


def failed_precondition(reason: str, message: str, **metadata: str) -> DomainError:
    """The system is not in a state where this can be done."""
    return DomainError(ErrorCode.FAILED_PRECONDITION, reason, message, metadata)


def unavailable(reason: str, message: str, **metadata: str) -> DomainError:
    """A dependency cannot be reached right now; retrying may help."""
    return DomainError(ErrorCode.UNAVAILABLE, reason, message, metadata)


def resource_exhausted(reason: str, message: str, **metadata: str) -> DomainError:
    """Out of capacity; back off and retry."""
    return DomainError(ErrorCode.RESOURCE_EXHAUSTED, reason, message, metadata)


def internal(reason: str, message: str, **metadata: str) -> DomainError:
    """A broken invariant; the message must be safe to show to a client."""
    return DomainError(ErrorCode.INTERNAL, reason, message, metadata)

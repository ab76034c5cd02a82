"""``ApiError``: every failed call of the SDK, with the server's ``ErrorInfo`` decoded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from datadog_platform.core.errors import FieldViolation
from datadog_platform.core.status import RpcErrorDetails, details_of


class ApiError(Exception):
    """A failed call: its status ``code``, the ``ErrorInfo.reason`` (empty when the answer
    did not come from a DataDog service, e.g. an unreachable server), the ``message``,
    the ``ErrorInfo`` ``metadata`` and the ``BadRequest`` field ``violations``.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        super().__init__(str(self))

    def __str__(self) -> str:
        suffix = f"{self.code.name}, {self.reason}" if self.reason else self.code.name
        text = f"{self.message} ({suffix})"
        return "\n".join([text, *(f"  - {v.field}: {v.description}" for v in self.violations)])

    def __repr__(self) -> str:
        return (
            f"ApiError(code={self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r}, violations={len(self.violations)})"
        )

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ApiError:
        """Decode a failed gRPC call (sync or asyncio) into an ``ApiError``."""
        details = details_of(error)
        code = (
            details.code if isinstance(details.code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
        )
        return cls(code, details.message, details.reason, details.metadata, details.violations)

    @property
    def details(self) -> RpcErrorDetails:
        """The same facts as :class:`~datadog_platform.core.status.RpcErrorDetails`."""
        return RpcErrorDetails(
            code=self.code,
            message=self.message,
            reason=self.reason,
            metadata=dict(self.metadata),
            violations=list(self.violations),
        )

"""Driver errors (asyncpg, ADBC, sockets) as domain errors for the PostgreSQL connector.

PostgreSQL reports a SQLSTATE with every error; both drivers pass it on. The
mapping (``side`` is SOURCE for reads, describes and tests, SINK for writes):

=================================== ==================== ==========================
SQLSTATE / failure                  code                 reason
=================================== ==================== ==========================
28000, 28P01 (no such role, bad     UNAUTHENTICATED      AUTHENTICATION_FAILED
password)
42501, 25006 (insufficient          PERMISSION_DENIED    ACCESS_DENIED
privilege, read-only database)
42P01, 3F000 (no such table/schema) NOT_FOUND            TABLE_NOT_FOUND
3D000 (no such database)            NOT_FOUND            DATABASE_NOT_FOUND
42P10 (ON CONFLICT without a        INVALID_ARGUMENT     INVALID_OPTION (key_columns)
matching unique index)
other class 42, 0A000, 2xxxx in a   INVALID_ARGUMENT     INVALID_QUERY
query
class 22, 23502, 23514 in a write   INVALID_ARGUMENT     VALUE_OUT_OF_RANGE
other class 23 in a write           INVALID_ARGUMENT     SINK_WRITE_ERROR
refused, unreachable, timeout,      UNAVAILABLE          SOURCE_UNAVAILABLE /
08xxx, 53xxx, 57xxx, 40xxx                               SINK_UNAVAILABLE
anything else                       INTERNAL             SOURCE_READ_ERROR /
                                                         SINK_WRITE_ERROR
=================================== ==================== ==========================

Messages carry PostgreSQL's own text (never the DSN or password: callers pass
them to :func:`scrub`).
"""

from __future__ import annotations

import asyncio
import enum
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from datadog_platform.connector.pg_sql import copy_error_position
from datadog_platform.connector.pg_types import value_out_of_range
from datadog_platform.core.errors import DomainError, ErrorCode, FieldViolation, invalid_argument

try:  # the ADBC driver manager's exception hierarchy
    import adbc_driver_manager

    _ADBC_ERROR: type[BaseException] = adbc_driver_manager.Error
except ImportError:  # pragma: no cover - a dependency of the connector
    _ADBC_ERROR = RuntimeError


class Side(enum.Enum):
    """Which end of the data the failing operation was on."""

    SOURCE = "SOURCE"
    SINK = "SINK"


@dataclass(frozen=True)
class PgFailure:
    """What a driver exception says, driver-independently."""

    sqlstate: str | None
    message: str
    detail: str = ""
    column: str | None = None
    context: str = ""


def describe_failure(exc: BaseException) -> PgFailure | None:
    """The SQLSTATE, message and position of a server or driver error; None if neither."""
    if isinstance(exc, asyncpg.PostgresError):
        return PgFailure(
            getattr(exc, "sqlstate", None),
            str(getattr(exc, "message", None) or exc),
            str(getattr(exc, "detail", None) or ""),
            getattr(exc, "column_name", None),
            str(getattr(exc, "context", None) or ""),
        )
    if isinstance(exc, _ADBC_ERROR):
        details = {}
        for key, value in getattr(exc, "details", None) or ():
            k = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
            v = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            details[k] = v
        message = details.get("PG_DIAG_MESSAGE_PRIMARY") or _adbc_message(str(exc))
        return PgFailure(
            getattr(exc, "sqlstate", None) or details.get("PG_DIAG_SQLSTATE"),
            message,
            details.get("PG_DIAG_MESSAGE_DETAIL", ""),
            details.get("PG_DIAG_COLUMN_NAME"),
            details.get("PG_DIAG_CONTEXT", ""),
        )
    return None


def _adbc_message(text: str) -> str:
    """The server's message inside an ADBC error text (without the echoed query)."""
    text = text.split("\nQuery was:", 1)[0]
    for marker in ("ERROR:  ", "FATAL:  "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip().rstrip(".")


_CONNECT_MARKERS = (
    "could not connect",
    "connection refused",
    "could not translate host name",
    "timeout expired",
    "server closed the connection",
    "no route to host",
    "network is unreachable",
    "connection to server",
)


def map_error(
    exc: BaseException,
    side: Side,
    *,
    field: str,
    target: str,
    query_field: str | None = None,
    scrub: Iterable[str] = (),
) -> DomainError:
    """``exc`` as a DomainError.

    ``field`` names the request field of the table (or sink) for violations;
    ``query_field`` is set when the source is a user query (bad SQL is then the
    caller's). ``target`` is the table or query shown in messages; ``scrub`` lists
    strings (passwords) to blank out of any message.
    """
    if isinstance(exc, DomainError):
        return exc
    unavailable_reason = f"{side.value}_UNAVAILABLE"
    failure = describe_failure(exc)
    if failure is None or failure.sqlstate is None:
        text = _clean(str(exc) or type(exc).__name__, scrub)
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            return DomainError(
                ErrorCode.UNAVAILABLE,
                unavailable_reason,
                f"PostgreSQL did not answer in time ({text})",
            )
        if isinstance(exc, OSError | socket.gaierror | asyncpg.InterfaceError | ConnectionError):
            return DomainError(
                ErrorCode.UNAVAILABLE, unavailable_reason, f"cannot reach PostgreSQL: {text}"
            )
        lowered = text.lower()
        if "authentication failed" in lowered or (
            "role" in lowered and "does not exist" in lowered
        ):
            return DomainError(
                ErrorCode.UNAUTHENTICATED,
                "AUTHENTICATION_FAILED",
                f"PostgreSQL refused the credentials: {_adbc_message(text)}",
            )
        if any(marker in lowered for marker in _CONNECT_MARKERS):
            return DomainError(
                ErrorCode.UNAVAILABLE, unavailable_reason, f"cannot reach PostgreSQL: {text}"
            )
        reason = "SINK_WRITE_ERROR" if side is Side.SINK else "SOURCE_READ_ERROR"
        return DomainError(
            ErrorCode.INTERNAL, reason, f"PostgreSQL {side.value.lower()} failed: {text}"
        )
    state = failure.sqlstate
    message = _clean(failure.message, scrub)
    if failure.detail:
        message = f"{message} ({_clean(failure.detail, scrub)})"
    if state in ("28000", "28P01"):
        return DomainError(
            ErrorCode.UNAUTHENTICATED,
            "AUTHENTICATION_FAILED",
            f"PostgreSQL refused the credentials: {message}",
        )
    if state in ("42501", "25006"):  # no privilege; a read-only standby or role
        return DomainError(
            ErrorCode.PERMISSION_DENIED,
            "ACCESS_DENIED",
            f"{target}: {message}",
            {"sqlstate": state},
        )
    if state in ("42P01", "3F000"):
        return DomainError(
            ErrorCode.NOT_FOUND, "TABLE_NOT_FOUND", f"{target}: {message}", {"sqlstate": state}
        )
    if state == "3D000":
        return DomainError(ErrorCode.NOT_FOUND, "DATABASE_NOT_FOUND", message, {"sqlstate": state})
    if state == "42P10":
        where = field.rsplit(".", 1)[0] + ".key_columns"
        return invalid_argument(
            "INVALID_OPTION",
            f"{where}: {target} has no unique index or primary key on the key columns ({message})",
            [FieldViolation(where, "needs a unique index or primary key on these columns")],
        )
    if state[:2] in ("08", "53", "57", "40") or state == "55P03":
        return DomainError(
            ErrorCode.UNAVAILABLE, unavailable_reason, f"PostgreSQL: {message}", {"sqlstate": state}
        )
    if side is Side.SINK and (state[:2] == "22" or state in ("23502", "23514")):
        row, column = copy_error_position(failure.context)
        return value_out_of_range(column or failure.column, row, message)
    if side is Side.SINK and state[:2] == "23":
        return invalid_argument(
            "SINK_WRITE_ERROR", f"{target}: {message}", [FieldViolation(field, message)]
        )
    if query_field is not None and (state[:2] in ("42", "22", "21", "0A", "2F", "25")):
        return invalid_argument(
            "INVALID_QUERY",
            f"{query_field} is not valid: {message}",
            [FieldViolation(query_field, message)],
            sqlstate=state,
        )
    if state[:2] == "42":
        return invalid_argument(
            "INVALID_OPTION",
            f"{field}: {message}",
            [FieldViolation(field, message)],
            sqlstate=state,
        )
    reason = "SINK_WRITE_ERROR" if side is Side.SINK else "SOURCE_READ_ERROR"
    return DomainError(ErrorCode.INTERNAL, reason, f"{target}: {message}", {"sqlstate": state})


def _clean(text: str, scrub: Iterable[str]) -> str:
    for secret in scrub:
        if secret:
            text = text.replace(secret, "***")
    return text.strip()

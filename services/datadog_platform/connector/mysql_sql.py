"""SQL text for the MySQL / MariaDB connector: identifiers, literals, queries, predicates.

Everything here is pure string work (no driver, no I/O), so it is unit-testable and
shared by reads and writes. Identifiers are always backtick-quoted; values become
literals escaped for a session whose ``sql_mode`` does *not* contain
``NO_BACKSLASH_ESCAPES`` (the connector sets its sessions' ``sql_mode`` itself) and
whose character set is utf8mb4. Literals are rendered here rather than passed as
driver parameters because the driver's ``%s`` formatting would also rewrite a ``%``
inside a user's query.

Error reasons raised by this module (all INVALID_ARGUMENT, naming the field):

- ``INVALID_OPTION``: a table name that cannot be parsed (empty part, stray backtick,
  more than ``database.table``).
- ``INVALID_QUERY``: a query that is empty, is not a single SELECT (or WITH ... SELECT)
  statement, writes a file (``INTO OUTFILE``/``DUMPFILE``) or holds an executable
  comment (``/*! ... */``).
- ``UNKNOWN_COLUMN``: a predicate on a column the source does not have.
- ``INVALID_PREDICATE``: a comparison without an operator, with the wrong number of
  values, or with a value that cannot be a literal (NaN, a malformed date).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datadog_platform.api.common.v1 import predicate_pb2
from datadog_platform.core.errors import DomainError, FieldViolation, invalid_argument

_CMP = predicate_pb2.ComparisonOperator
_BINARY_OPERATORS = {
    _CMP.COMPARISON_OPERATOR_EQ: "=",
    _CMP.COMPARISON_OPERATOR_NE: "<>",
    _CMP.COMPARISON_OPERATOR_LT: "<",
    _CMP.COMPARISON_OPERATOR_LE: "<=",
    _CMP.COMPARISON_OPERATOR_GT: ">",
    _CMP.COMPARISON_OPERATOR_GE: ">=",
}
# Escapes of MySQL's own mysql_real_escape_string, for quoted string literals.
_STRING_ESCAPES = str.maketrans(
    {
        "\\": "\\\\",
        "'": "\\'",
        '"': '\\"',
        "\x00": "\\0",
        "\n": "\\n",
        "\r": "\\r",
        "\x1a": "\\Z",
    }
)
# Words that make a SELECT write a file on the server.
_FILE_WRITING_WORDS = frozenset({"OUTFILE", "DUMPFILE"})
_QUERY_STARTS = frozenset({"SELECT", "WITH"})


def quote_identifier(name: str) -> str:
    """``name`` as a backtick-quoted identifier (backticks inside are doubled)."""
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True)
class TableRef:
    """A table, optionally in another database than the connection's."""

    table: str
    database: str | None = None

    @property
    def sql(self) -> str:
        """The quoted, qualified name for SQL text."""
        if self.database is None:
            return quote_identifier(self.table)
        return f"{quote_identifier(self.database)}.{quote_identifier(self.table)}"

    def display(self, default_database: str) -> str:
        """``database.table`` for messages and write locations."""
        return f"{self.database or default_database}.{self.table}"


def parse_table_name(text: str, field: str) -> TableRef:
    """``table`` or ``database.table``; parts may be backtick-quoted (```my.db`.t``)."""

    def bad(problem: str) -> DomainError:
        return invalid_argument(
            "INVALID_OPTION",
            f"{field} {text!r} is not a table name: {problem}",
            [FieldViolation(field, problem)],
        )

    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == "`":
            part, i = _read_backticked(text, i)
            if part is None:
                raise bad("a backtick is not closed")
        else:
            j = text.find(".", i)
            j = n if j < 0 else j
            part = text[i:j].strip()
            if "`" in part:
                raise bad("quote a part with backticks around all of it")
            i = j
        if not part:
            raise bad("a part of the name is empty")
        if "\x00" in part:
            raise bad("a name cannot contain a NUL character")
        parts.append(part)
        if i >= n:
            break
        if text[i] != ".":
            raise bad("unexpected text after a quoted name")
        i += 1
    if len(parts) > 2:
        raise bad("use 'table' or 'database.table'")
    if len(parts) == 2:
        return TableRef(parts[1], parts[0])
    return TableRef(parts[0])


def _read_backticked(text: str, start: int) -> tuple[str | None, int]:
    """The identifier quoted at ``start`` and the index after it (None if unclosed)."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        if text[i] == "`":
            if text.startswith("``", i):
                out.append("`")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(text[i])
        i += 1
    return None, i


def check_select(query: str, field: str) -> str:
    """``query`` if it is one SELECT statement (trailing ``;`` and comments removed).

    This is a lexical check (strings, quoted identifiers and comments are skipped);
    the server still parses the statement, and reads run in a READ ONLY transaction.
    """

    def bad(problem: str) -> DomainError:
        return invalid_argument(
            "INVALID_QUERY", f"{field} is not valid: {problem}", [FieldViolation(field, problem)]
        )

    text = query
    n = len(text)
    i = 0
    first: str | None = None
    end: int | None = None  # index of the first top-level ';'
    while i < n:
        c = text[i]
        if c in "'\"`":
            i = _skip_quoted(text, i)
            if i < 0:
                raise bad(f"a {c} quote is not closed")
            token = c
        elif c == "#" or (
            text.startswith("--", i) and (i + 2 == n or text[i + 2].isspace() or text[i + 2] < " ")
        ):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        elif text.startswith("/*", i):
            if text.startswith("/*!", i) or text.startswith("/*M!", i):
                raise bad("executable comments (/*! ... */) are not allowed")
            j = text.find("*/", i + 2)
            if j < 0:
                raise bad("a /* comment is not closed")
            i = j + 2
            continue
        elif c.isspace():
            i += 1
            continue
        elif c == ";":
            if end is None:
                end = i
            i += 1
            continue
        elif c.isalnum() or c in "_$":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "_$"):
                j += 1
            token = text[i:j].upper()
            if token in _FILE_WRITING_WORDS:
                raise bad("SELECT ... INTO OUTFILE/DUMPFILE is not allowed")
            i = j
        else:
            token = c
            i += 1
        # Only comments and whitespace (skipped above) may follow the first ';'.
        if end is not None:
            raise bad("it holds more than one statement; give a single SELECT")
        if first is None:
            first = token
    if first is None:
        raise bad("it is empty")
    if first not in _QUERY_STARTS and first != "(":
        raise bad(f"it must be a single SELECT statement, not {first}")
    return text[:end] if end is not None else text


def _skip_quoted(text: str, start: int) -> int:
    """The index after the string or identifier quoted at ``start``; -1 if unclosed."""
    quote = text[start]
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and quote != "`":
            i += 2
            continue
        if c == quote:
            if i + 1 < n and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return -1


def sql_literal(value: Any) -> str:
    """``value`` as a SQL literal (None, bool, int, float, Decimal, str, bytes, date, datetime)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no SQL literal")
        return repr(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} has no SQL literal")
        return str(value)
    if isinstance(value, str):
        return "'" + value.translate(_STRING_ESCAPES) + "'"
    if isinstance(value, bytes | bytearray | memoryview):
        return "X'" + bytes(value).hex() + "'"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            # Sessions run with time_zone '+00:00': instants compare in UTC.
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return "'" + value.isoformat(sep=" ") + "'"
    if isinstance(value, dt.date):
        return "'" + value.isoformat() + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def predicate_sql(predicate: predicate_pb2.Predicate, columns: Sequence[str]) -> str:
    """The predicate as a SQL condition over ``columns`` (empty string when it is empty)."""
    known = set(columns)
    parts: list[str] = []
    for index, comparison in enumerate(predicate.all_of):
        where = f"predicate.all_of[{index}]"
        if comparison.column not in known:
            raise invalid_argument(
                "UNKNOWN_COLUMN",
                f"{where} compares unknown column {comparison.column!r}; "
                f"the source has {', '.join(columns)}",
                [FieldViolation(f"{where}.column", f"unknown column {comparison.column!r}")],
            )
        column = quote_identifier(comparison.column)
        operator = comparison.operator
        values = list(comparison.values)
        if operator in (_CMP.COMPARISON_OPERATOR_IS_NULL, _CMP.COMPARISON_OPERATOR_IS_NOT_NULL):
            if values:
                raise _bad_predicate(where, "IS NULL / IS NOT NULL take no values")
            negation = "NOT " if operator == _CMP.COMPARISON_OPERATOR_IS_NOT_NULL else ""
            parts.append(f"{column} IS {negation}NULL")
        elif operator == _CMP.COMPARISON_OPERATOR_IN:
            if not values:
                raise _bad_predicate(where, "IN needs at least one value")
            rendered = ", ".join(_literal(v, f"{where}.values[{i}]") for i, v in enumerate(values))
            parts.append(f"{column} IN ({rendered})")
        elif operator in _BINARY_OPERATORS:
            if len(values) != 1:
                raise _bad_predicate(where, "a comparison takes exactly one value")
            rendered = _literal(values[0], f"{where}.values[0]")
            parts.append(f"{column} {_BINARY_OPERATORS[operator]} {rendered}")
        else:
            raise _bad_predicate(where, "the operator is not set")
    return " AND ".join(parts)


def _literal(literal: predicate_pb2.Literal, where: str) -> str:
    kind = literal.WhichOneof("value")
    try:
        if kind is None:
            raise ValueError("the literal has no value")
        if kind == "decimal_value":
            return sql_literal(decimal.Decimal(literal.decimal_value))
        if kind == "date_value":
            return sql_literal(dt.date.fromisoformat(literal.date_value))
        if kind == "timestamp_value":
            return sql_literal(dt.datetime.fromisoformat(literal.timestamp_value))
        return sql_literal(getattr(literal, kind))
    except (ValueError, decimal.InvalidOperation) as exc:
        raise _bad_predicate(where, f"cannot be a SQL value: {exc}") from None


def _bad_predicate(where: str, problem: str) -> DomainError:
    return invalid_argument(
        "INVALID_PREDICATE", f"{where}: {problem}", [FieldViolation(where, problem)]
    )

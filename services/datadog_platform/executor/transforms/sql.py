"""SQL building blocks of the transforms: quoting, literals, expression checks, probes.

Every identifier is quoted, every value becomes a quoted string literal cast to
the column's type, and every user expression is first parsed by DuckDB's own
parser as exactly one expression (no second statement, no FROM, no set
operation can ride along), then spliced in parentheses on lines of its own (a
trailing ``--`` comment cannot swallow what follows).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import duckdb
import pyarrow as pa
from google.protobuf import struct_pb2

from datadog_platform.core.expressions import sandboxed_connection

# Expression nodes a row-wise expression may not contain: they make a row's value
# depend on other rows (window, subquery) or expand to several columns (star).
_WINDOW = "WINDOW"
_SUBQUERY = "SUBQUERY"
_STAR = "STAR"
_PARAMETER = "PARAMETER"

_local = threading.local()


def quote(name: str) -> str:
    """``name`` as a DuckDB identifier: in double quotes, inner double quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def unquote(identifier: str) -> str:
    """The name a quoted identifier stands for (unquoted names are returned as they are)."""
    if len(identifier) >= 2 and identifier[0] == identifier[-1] == '"':
        return identifier[1:-1].replace('""', '"')
    return identifier


def string_literal(text: str) -> str:
    """``text`` as a SQL string literal (single quotes doubled; no escapes in DuckDB strings)."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return "'" + text.replace("'", "''") + "'"


def value_text(value: struct_pb2.Value) -> str | None:
    """The text of a JSON scalar, as SQL would parse it in a cast; None for null."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "number_value":
        number = value.number_value
        # Integral JSON numbers read as integers, so "3" fills an int column exactly.
        if math.isfinite(number) and number.is_integer() and abs(number) < 2**63:
            return str(int(number))
        return repr(number)
    if kind == "string_value":
        return value.string_value
    raise ValueError("must be a number, a string or a boolean, not a list or an object")


def typed_literal(value: struct_pb2.Value, sql_type: str) -> str:
    """``value`` as a SQL literal of type ``sql_type``; raises ValueError for a list/object."""
    text = value_text(value)
    if text is None:
        return f"CAST(NULL AS {sql_type})"
    return f"CAST({string_literal(text)} AS {sql_type})"


def paren(expr: str) -> str:
    """A checked expression ready to splice: on its own lines, in parentheses."""
    return f"(\n{expr}\n)"


def expression_problem(expr: str, *, aggregates: bool = False) -> str | None:
    """Why ``expr`` is not one SQL expression usable by a transform, or None.

    Subqueries, ``*``, parameters and window functions are refused (they need the
    whole input or expand to several columns: that is what the sql transform is
    for); aggregate functions unless ``aggregates``.
    """
    if not expr.strip():
        return "must not be empty"
    if "\x00" in expr:
        return "must not contain NUL characters"
    try:
        duckdb.SQLExpression(expr)
    except duckdb.Error as exc:
        return first_line(str(exc))
    nodes = list(_nodes(f"SELECT {paren(expr)}"))
    classes = {node.get("class") for node in nodes}
    if _SUBQUERY in classes:
        return "subqueries are not allowed (use a sql transform)"
    if _STAR in classes:
        return "* and COLUMNS(...) are not allowed: name the columns"
    if _PARAMETER in classes:
        return "parameters ($1, ?) are not allowed"
    if _WINDOW in classes:
        return "window functions are not allowed (use a sql transform)"
    if not aggregates:
        names = _aggregate_functions()
        for node in nodes:
            if node.get("class") == "FUNCTION" and str(node.get("function_name")).lower() in names:
                return f"aggregate function {node['function_name']}() is not allowed here"
    return None


def select_problem(query: str) -> tuple[str | None, str]:
    """(why ``query`` is not exactly one SELECT statement or None, the statement's text)."""
    if not query.strip():
        return "must not be empty", ""
    if "\x00" in query:
        return "must not contain NUL characters", ""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        return first_line(str(exc)), ""
    if len(statements) != 1:
        return f"must be exactly one SELECT statement, not {len(statements)} statements", ""
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        return f"must be a SELECT statement, not {statement.type.name}", ""
    return None, _without_final_semicolons(statement.query)


def _without_final_semicolons(query: str) -> str:
    # The engine nests the query in parentheses: cut the final semicolon(s) and
    # whatever comments follow them, found by DuckDB's tokenizer (so a ';' inside
    # a string or a comment is left alone); end on a newline so that a trailing
    # "--" comment cannot swallow the closing parenthesis.
    cut = len(query)
    for position, token_type in reversed(duckdb.tokenize(query)):
        if token_type == duckdb.token_type.comment:
            continue
        if token_type == duckdb.token_type.operator and query.startswith(";", position):
            cut = position
            continue
        break
    return query[:cut].strip() + "\n"


def bind_problem(sql: str, tables: Mapping[str, pa.Schema]) -> str | None:
    """The error DuckDB gives binding ``sql`` over empty tables of those schemas, or None.

    Binding only: nothing runs (a user's query may be costly whatever its input).
    """
    with _tables(tables) as con:
        try:
            con.sql(sql)
        except duckdb.Error as exc:
            return first_line(str(exc))
    return None


def sql_types(schema: pa.Schema) -> list[str]:
    """The DuckDB type of each column of ``schema`` (for typed literals and NULLs)."""
    with _tables({"__datadog_types": schema}) as con:
        return [str(t) for t in con.sql('SELECT * FROM "__datadog_types"').types]


def cast_problem(literal: str) -> str | None:
    """The error DuckDB gives evaluating a constant such as a typed literal, or None."""
    with _tables({}) as con:
        try:
            con.sql(f"SELECT {literal}").fetchall()
        except duckdb.Error as exc:
            return first_line(str(exc))
    return None


def first_line(message: str) -> str:
    """The first line of a DuckDB error, without its "Binder Error: " prefix."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    line = lines[0] if lines else message
    head, sep, rest = line.partition(" Error: ")
    if sep and all(word[:1].isupper() and word.isalpha() for word in head.split()):
        return rest
    return line


def _connection() -> duckdb.DuckDBPyConnection:
    # One sandboxed connection per thread: probes are frequent and tiny.
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = sandboxed_connection()
    return con


@contextmanager
def _tables(tables: Mapping[str, pa.Schema]) -> Iterator[duckdb.DuckDBPyConnection]:
    con = _connection()
    registered: list[str] = []
    try:
        for name, schema in tables.items():
            con.register(name, schema.empty_table())
            registered.append(name)
        yield con
    finally:
        for name in registered:
            con.unregister(name)


def _nodes(sql: str) -> Iterator[dict[str, Any]]:
    # DuckDB's own parse tree of the statement, as JSON: every expression node.
    with _tables({}) as con:
        rows = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()
    yield from _expression_nodes(json.loads(rows[0][0]) if rows else {})


def _expression_nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("class"), str):
            yield node
        for child in node.values():
            yield from _expression_nodes(child)
    elif isinstance(node, list):
        for child in node:
            yield from _expression_nodes(child)


def _aggregate_functions() -> frozenset[str]:
    names = getattr(_local, "aggregates", None)
    if names is None:
        with _tables({}) as con:
            rows = con.sql(
                "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
                "WHERE function_type = 'aggregate'"
            ).fetchall()
        names = _local.aggregates = frozenset(r[0] for r in rows)
    return names


def expression_type(expr: str, schema: pa.Schema) -> tuple[str | None, str | None]:
    """(the DuckDB type of ``expr`` over a table of ``schema``, the binding error)."""
    with _tables({"__datadog_input": schema}) as con:
        try:
            types = con.sql(f'SELECT {paren(expr)} FROM "__datadog_input"').types
        except duckdb.Error as exc:
            return None, first_line(str(exc))
    return str(types[0]), None

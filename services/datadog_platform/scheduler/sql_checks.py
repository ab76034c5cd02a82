"""Create-time checks of the SQL in transforms, with DuckDB's own parser (the
executor's dialect, core/expressions.py).

Only syntax and shape are judged here: column names and types are known when the
stage binds its inputs, on the executor. An expression is parsed as the single item
of ``SELECT (<expr>)`` and its parse tree (``json_serialize_sql``) is inspected, so
that text closing the parenthesis to smuggle in more (``a) FROM t WHERE (1``) is
refused rather than trusted.

Parsing one text costs a DuckDB query (about half a millisecond), so a pipeline's
texts are parsed together first (:func:`prefetch`, one query for all) and parse
results are cached by text.
"""

from __future__ import annotations

import enum
import functools
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import duckdb

_local = threading.local()
#: Parse results by SQL text: (statements, problem). Cleared when it grows past the cap.
_parsed: dict[str, tuple[list[dict[str, Any]] | None, str | None]] = {}
_CACHE_CAP = 20_000


class ExpressionKind(enum.Enum):
    """Where an expression is used, which decides what it may contain."""

    #: Per row (filter and check predicates, derived columns): no aggregates.
    SCALAR = "scalar"
    #: An aggregate's output column: at least one aggregate function.
    AGGREGATE = "aggregate"


def expression_problem(text: str, kind: ExpressionKind = ExpressionKind.SCALAR) -> str | None:
    """Why ``text`` is not one SQL expression usable as ``kind``, or None if it is."""
    if not text.strip():
        return "must not be empty"
    tree, problem = _parse(_expression_sql(text))
    if problem is not None:
        return problem
    assert tree is not None
    node = tree[0]["node"]
    if (
        node.get("type") != "SELECT_NODE"
        or len(node.get("select_list", ())) != 1
        or node.get("from_table", {}).get("type") != "EMPTY"
        or node.get("modifiers")
        or node.get("cte_map", {}).get("map")
        or any(node.get(k) for k in ("where_clause", "having", "qualify", "sample"))
        or node.get("group_expressions")
    ):
        return "must be a single expression"
    expression = node["select_list"][0]
    aggregates = 0
    for item in _walk(expression):
        cls = item.get("class")
        if cls == "SUBQUERY":
            return "must not contain a subquery (use a join or the sql transform)"
        if cls == "WINDOW":
            return "must not use a window function (use the sql transform)"
        if cls == "PARAMETER":
            return "must not contain parameters ($1, ?)"
        if cls == "FUNCTION" and not item.get("is_operator"):
            name = str(item.get("function_name", "")).lower()
            if name in _aggregate_functions():
                if kind is ExpressionKind.SCALAR and name not in _scalar_functions():
                    return (
                        f"must not use the aggregate function {name}() (aggregates belong "
                        "in an aggregate transform)"
                    )
                aggregates += 1
    if kind is ExpressionKind.AGGREGATE and not aggregates:
        return (
            "must use an aggregate function, e.g. count(*), sum(amount) or "
            "quantile_cont(amount, 0.5)"
        )
    return None


def query_problem(query: str, inputs: Sequence[str]) -> str | None:
    """Why ``query`` is not a single SELECT over the tables named ``inputs`` (the
    step's inputs, visible as tables named after their steps), or None if it is."""
    if not query.strip():
        return "must not be empty"
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        return _first_line(str(exc))
    if len(statements) != 1:
        return f"must be exactly one SELECT statement, not {len(statements)}"
    if statements[0].type != duckdb.StatementType.SELECT:
        return f"must be a SELECT statement, not {statements[0].type.name}"
    tree, problem = _parse(query)
    if problem is not None:
        return problem
    assert tree is not None
    ctes = {name.casefold() for name in _cte_names(tree)}
    known = {name.casefold() for name in inputs}
    for table in _base_tables(tree):
        if table.casefold() not in known and table.casefold() not in ctes:
            listed = ", ".join(f'"{name}"' for name in inputs) or "none"
            return (
                f'reads table "{table}", which is not an input of this step (inputs, '
                f"visible as tables named after their steps: {listed})"
            )
    return None


def prefetch(expressions: Iterable[str], queries: Iterable[str] = ()) -> None:
    """Parse ``expressions`` and ``queries`` in one DuckDB query, for the checks to come."""
    texts = [_expression_sql(e) for e in expressions if e.strip()]
    texts += [q for q in queries if q.strip()]
    missing = [t for t in dict.fromkeys(texts) if t not in _parsed]
    if len(missing) < 2:
        return  # nothing to gain over parsing on demand
    try:
        row = (
            _connection()
            .execute(
                "SELECT list_transform($1::VARCHAR[], lambda x: json_serialize_sql(x))", [missing]
            )
            .fetchone()
        )
    except duckdb.Error:
        return  # each text is parsed on its own later, with its own error
    if row is None or len(row[0]) != len(missing):
        return
    _remember_room(len(missing))
    for text, serialized in zip(missing, row[0], strict=True):
        _parsed[text] = _result_of(serialized)


def _expression_sql(text: str) -> str:
    # Newlines keep a trailing "-- comment" from swallowing the closing parenthesis.
    return f"SELECT (\n{text}\n) AS __expr"


def _remember_room(count: int) -> None:
    if len(_parsed) + count > _CACHE_CAP:
        _parsed.clear()


def _parse(sql: str) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The statements' parse trees, or why the text does not parse."""
    cached = _parsed.get(sql)
    if cached is not None:
        return cached
    try:
        row = _connection().execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()
    except duckdb.Error as exc:
        return None, _first_line(str(exc))
    result = _result_of(row[0] if row else None)
    _remember_room(1)
    _parsed[sql] = result
    return result


def _result_of(serialized: str | None) -> tuple[list[dict[str, Any]] | None, str | None]:
    result = json.loads(serialized) if serialized else {"error": True, "error_message": "no result"}
    if result.get("error"):
        return None, _first_line(str(result.get("error_message", "does not parse")))
    statements = result.get("statements") or []
    if len(statements) != 1:
        return None, "must be one expression, not several statements"
    return statements, None


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in a parse tree, depth first."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _base_tables(tree: Any) -> Iterator[str]:
    for item in _walk(tree):
        if item.get("type") == "BASE_TABLE" and "table_name" in item:
            yield str(item["table_name"])


def _cte_names(tree: Any) -> Iterator[str]:
    for item in _walk(tree):
        cte_map = item.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map") or ():
                if isinstance(entry, dict) and "key" in entry:
                    yield str(entry["key"])


def _connection() -> duckdb.DuckDBPyConnection:
    """This thread's parsing connection (DuckDB connections are not shared across threads)."""
    con = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect(":memory:")
        con.execute("SET enable_external_access = false")
        _local.con = con
    return con


@functools.cache
def _aggregate_functions() -> frozenset[str]:
    return _functions("'aggregate'")


@functools.cache
def _scalar_functions() -> frozenset[str]:
    # A name that is both (e.g. histogram) is left to the executor's binder.
    return _functions("'scalar', 'macro'")


def _functions(types: str) -> frozenset[str]:
    sql = f"SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type IN ({types})"
    rows = duckdb.connect(":memory:").execute(sql).fetchall()
    return frozenset(str(row[0]).lower() for row in rows)


def _first_line(message: str) -> str:
    lines = [line for line in message.splitlines() if line.strip()]
    return lines[0] if lines else message

"""SQL expressions of transforms: one dialect (DuckDB's), checked and run the same way.

The scheduler checks syntax at pipeline creation; the executor evaluates them in a
DuckDB connection that cannot touch files, the network or extensions, so a
predicate cannot be used to read anything beyond the batches it is given.
"""

from __future__ import annotations

import duckdb


def predicate_problem(predicate: str) -> str | None:
    """Why ``predicate`` is not a single valid SQL boolean expression, or None if it is."""
    if not predicate.strip():
        return "must not be empty"
    try:
        statements = duckdb.extract_statements(f"SELECT * FROM input WHERE ({predicate})")
    except duckdb.Error as exc:
        return _first_line(str(exc))
    if len(statements) != 1:
        return "must be one expression, not several statements"
    return None


def sandboxed_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with external access disabled and locked."""
    con = duckdb.connect(":memory:")
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET threads = 1")
    con.execute("SET lock_configuration = true")
    return con


def _first_line(message: str) -> str:
    lines = [line for line in message.splitlines() if line.strip()]
    return lines[0] if lines else message

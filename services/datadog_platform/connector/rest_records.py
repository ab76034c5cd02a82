"""JSON records ↔ Arrow for the REST connector (blocking; callers run it off the loop).

Reading: a page's records are found by a dotted path in the JSON body. The schema
is inferred from the first page that has records and then kept for the whole
stream, so every batch of a read has the same schema:

- ``true``/``false`` → bool; integers → int64; numbers with a fraction (or a mix of
  integers and fractions) → float64; strings → string.
- Nested objects and arrays → string holding their JSON text (``ensure_ascii=False``).
  JSON text rather than structs because an API's nested objects vary from record to
  record, and a struct inferred from one page breaks on the next; DuckDB's JSON
  functions (``json_extract``) read the text back in a transform.
- A field that is null in every record of the first page, or whose values mix
  types (e.g. strings and numbers) → string (non-strings as their JSON text).
- Records that are not objects (e.g. an array of strings) become ``{"value": x}``.
- Later pages: fields the first page did not have are ignored, missing fields are
  null; a value that does not fit its column's inferred type (e.g. ``1.5`` in an
  int64 column) fails the read with SOURCE_PARSE_ERROR naming the field, record and
  page, rather than losing data silently.

Writing: each row becomes a JSON object. Decimals are written as strings (exact),
dates, times and timestamps as ISO 8601 strings, durations as seconds, binary as
base64, NaN and infinities as null.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from datadog_platform.core.errors import DomainError, invalid_argument

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_KIND_TYPES: dict[frozenset[str], pa.DataType] = {
    frozenset({"bool"}): pa.bool_(),
    frozenset({"int"}): pa.int64(),
    frozenset({"float"}): pa.float64(),
    frozenset({"int", "float"}): pa.float64(),
}


def split_path(path: str) -> tuple[str, ...]:
    """``"data.items"`` → ``("data", "items")``; empty → ``()``."""
    return tuple(part for part in path.split(".") if part) if path else ()


def parse_body(body: bytes, where: str) -> Any:
    """The JSON document of a response body; SOURCE_PARSE_ERROR if it is not JSON."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeError) as exc:
        raise parse_error(f"{where} is not JSON ({exc})") from None


def find(document: Any, path: Sequence[str]) -> tuple[bool, Any]:
    """The value at a dotted ``path`` (array indexes allowed) and whether it exists."""
    value = document
    for part in path:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def extract_records(document: Any, path: Sequence[str], where: str) -> list[dict[str, Any]]:
    """The records at ``path``: an array of them, or one object; null means none."""
    found, value = find(document, path)
    shown = ".".join(path)
    if not found:
        raise parse_error(f"records_path {shown!r} is not in {where}")
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [dict(value)]
    if not isinstance(value, list):
        at = f"records_path {shown!r}" if path else "the body"
        raise parse_error(
            f"{at} of {where} is a JSON {_json_kind(value)}, not an array of records; "
            "set records_path to the array"
        )
    return [dict(r) if isinstance(r, Mapping) else {"value": r} for r in value]


def infer_schema(records: Sequence[Mapping[str, Any]]) -> pa.Schema:
    """A schema for ``records`` (see the module doc); fields in order of first appearance."""
    kinds: dict[str, set[str]] = {}
    for record in records:
        for name, value in record.items():
            seen = kinds.setdefault(name, set())
            if value is not None:
                seen.add(_json_kind(value))
    return pa.schema(
        [
            pa.field(name, _KIND_TYPES.get(frozenset(seen), pa.string()))
            for name, seen in kinds.items()
        ]
    )


def to_batch(
    records: Sequence[Mapping[str, Any]], schema: pa.Schema, where: str, first_row: int = 0
) -> pa.RecordBatch:
    """``records`` as a batch of ``schema``: unknown fields dropped, missing ones null."""
    if not schema:
        # No columns: keep the row count, which a batch of no arrays cannot carry.
        empty = pa.array([{}] * len(records), type=pa.struct([]))
        return pa.RecordBatch.from_struct_array(empty)
    columns = []
    for field in schema:
        values = [record.get(field.name) for record in records]
        columns.append(_column(values, field, where, first_row))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _column(values: list[Any], field: pa.Field, where: str, first_row: int) -> pa.Array:
    kind = field.type
    if pa.types.is_string(kind):
        converted = [v if v is None or isinstance(v, str) else _json_text(v) for v in values]
        return pa.array(converted, type=kind)
    check = _FITS[kind.id]
    for index, value in enumerate(values):
        if value is not None and not check(value):
            raise parse_error(
                f"field {field.name!r} of record {first_row + index + 1} in {where} is "
                f"{_json_text(value)[:60]}, which does not fit the type {kind} inferred from "
                "the first page; the API's records change type between pages"
            )
    if pa.types.is_integer(kind):
        values = [None if v is None else int(v) for v in values]
    return pa.array(values, type=kind)


def _fits_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value.is_integer() and _INT64_MIN <= value <= _INT64_MAX
    return isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX


_FITS = {
    pa.bool_().id: lambda v: isinstance(v, bool),
    pa.int64().id: _fits_int,
    pa.float64().id: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64_MIN <= value <= _INT64_MAX else "bigint"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "null" if value is None else type(value).__name__


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def parse_error(message: str) -> DomainError:
    return invalid_argument("SOURCE_PARSE_ERROR", message)


# --- writing ---------------------------------------------------------------------------


def batch_to_records(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """The rows of ``batch`` as JSON-ready dicts (see the module doc for the encodings)."""
    names = batch.schema.names
    columns = []
    for column in batch.columns:
        values = column.to_pylist()
        if not _json_native(column.type):
            values = [_jsonable(v) for v in values]
        columns.append(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def encode_records(records: Sequence[Mapping[str, Any]]) -> bytes:
    """A JSON array of ``records``, UTF-8."""
    return json.dumps(records, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _json_native(kind: pa.DataType) -> bool:
    """Types whose Python values json.dumps already writes faithfully (floats may be NaN)."""
    return (
        pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_null(kind)
    )


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, pa.MonthDayNano):
        return {"months": value.months, "days": value.days, "nanoseconds": value.nanoseconds}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and all(isinstance(p, tuple) and len(p) == 2 for p in value):
            keys = [p[0] for p in value]
            if all(isinstance(k, str) for k in keys):
                # A map column: to_pylist gives (key, value) pairs.
                return {k: _jsonable(v) for k, v in value}
        return [_jsonable(v) for v in value]
    return str(value)

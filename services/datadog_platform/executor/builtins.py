"""Built-in source and sink that the executor evaluates itself, with no connector call.

- ``source: {inline: {rows: [...]}}``: the rows written in the spec, as one record
  batch. Columns are the union of the rows' keys in name order (a protobuf
  ``Struct`` is a map: the spec's key order does not survive parsing, so name
  order is the only stable one); a key missing from a row is null there. A column
  is ``int64`` when every number in it is integral (and fits), ``float64``
  otherwise, ``bool`` for booleans, ``string`` for strings, and ``string``
  holding compact JSON for objects and lists; a column with only nulls has
  Arrow's ``null`` type. Mixing kinds in a column (e.g. numbers and strings) is
  refused (``INVALID_INLINE_ROWS``) rather than guessed. No rows: an empty batch
  with no columns.
- ``sink: {discard: {}}``: consumes its input and keeps nothing, reporting the
  rows it saw at location ``discard://``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pyarrow as pa
from google.protobuf import struct_pb2

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.errors import DomainError, invalid_argument

#: An inline source's rows cannot make a table (e.g. a column mixes numbers and strings).
INVALID_INLINE_ROWS = "INVALID_INLINE_ROWS"
#: Where a discard sink "writes".
DISCARD_LOCATION = "discard://"

_INT64_MIN, _INT64_LIMIT = -(2**63), 2**63
# Value kinds by the column type they make; objects and lists share JSON text.
_FAMILIES = {
    "number_value": "number",
    "string_value": "string",
    "bool_value": "boolean",
    "struct_value": "object/list",
    "list_value": "object/list",
}
_EMPTY = pa.RecordBatch.from_pydict({})


def is_inline(source: step_pb2.SourceSpec) -> bool:
    """Whether the executor evaluates ``source`` itself."""
    return source.WhichOneof("kind") == "inline"


def is_discard(sink: step_pb2.SinkSpec) -> bool:
    """Whether the executor evaluates ``sink`` itself."""
    return sink.WhichOneof("kind") == "discard"


def inline_batch(source: step_pb2.InlineSource) -> pa.RecordBatch:
    """The rows of an inline source as one record batch (see the module docstring).

    Raises INVALID_ARGUMENT ``INVALID_INLINE_ROWS`` when a column mixes kinds.
    """
    return rows_to_batch(source.rows)


def rows_to_batch(rows: Sequence[struct_pb2.Struct]) -> pa.RecordBatch:
    """Record batch of JSON-object rows; the typing rules are the module docstring's."""
    if not rows:
        return _EMPTY
    count = len(rows)
    # column -> (kind -> first row index with it), values by row (None: null/missing)
    values: dict[str, list[Any]] = {}
    kinds: dict[str, dict[str, int]] = {}
    for index, row in enumerate(rows):
        for key, value in row.fields.items():
            column = values.get(key)
            if column is None:
                column = values[key] = [None] * count
                kinds[key] = {}
            kind = value.WhichOneof("kind")
            if kind is None or kind == "null_value":
                continue
            kinds[key].setdefault(kind, index)
            if kind == "number_value":
                column[index] = value.number_value
            elif kind == "string_value":
                column[index] = value.string_value
            elif kind == "bool_value":
                column[index] = value.bool_value
            else:
                column[index] = _json(value)
    if not values:  # rows without keys: rows all the same, of no column
        return pa.RecordBatch.from_struct_array(pa.array([{}] * count, pa.struct([])))
    names = sorted(values)
    arrays = [_array(name, values[name], kinds[name]) for name in names]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _array(name: str, column: list[Any], kinds: dict[str, int]) -> pa.Array:
    if not kinds:
        return pa.nulls(len(column))
    families: dict[str, int] = {}
    for kind, row in sorted(kinds.items(), key=lambda item: item[1]):
        families.setdefault(_FAMILIES[kind], row)
    if len(families) > 1:
        (first, first_row), (second, second_row) = list(families.items())[:2]
        raise invalid_argument(
            INVALID_INLINE_ROWS,
            f"inline rows: column {name!r} mixes {first} (row {first_row}) and {second} "
            f"(row {second_row}) values; a column holds one kind",
            column=name,
        )
    family = next(iter(families))
    if family == "number":
        if all(v is None or _is_int64(v) for v in column):
            return pa.array([None if v is None else int(v) for v in column], pa.int64())
        return pa.array(column, pa.float64())
    if family == "boolean":
        return pa.array(column, pa.bool_())
    return pa.array(column, pa.string())


def _is_int64(number: float) -> bool:
    return number.is_integer() and _INT64_MIN <= number < _INT64_LIMIT


def _json(value: struct_pb2.Value) -> str:
    """Compact JSON of a nested value; keys sorted (their order was lost anyway)."""
    return json.dumps(_python(value), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _python(value: struct_pb2.Value) -> object:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        # JSON has one number type; show integral ones as integers, as they were written.
        return int(number) if _is_int64(number) else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: _python(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_python(v) for v in value.list_value.values]
    return None


async def discard(batches: AsyncIterator[pa.RecordBatch]) -> int:
    """Consume ``batches``; the number of rows they held."""
    rows = 0
    async for batch in batches:
        rows += batch.num_rows
    return rows


def check_inline(source: step_pb2.InlineSource) -> str:
    """Why ``source`` cannot make a table, or "" (for spec validation, before any run)."""
    try:
        inline_batch(source)
    except DomainError as exc:
        return exc.message
    return ""

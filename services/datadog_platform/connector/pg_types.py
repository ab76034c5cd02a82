"""PostgreSQL <-> Arrow types for the PostgreSQL connector.

Reads (PostgreSQL column -> Arrow field, and the SQL expression that reads it):

============================== ==============================================================
PostgreSQL                     Arrow
============================== ==============================================================
smallint / integer / bigint    int16 / int32 / int64
numeric(p, s)                  decimal128(p, s) (decimal256 when p > 38)
numeric (unconstrained)        decimal128(38, 9); a value that needs more digits fails the
                               read (VALUE_OUT_OF_RANGE) rather than being rounded: cast it
                               in a query (``x::numeric(38, 20)`` or ``x::text``)
real / double precision        float32 / float64
text, varchar(n), char(n)      string (char(n) keeps its padding, as PostgreSQL returns it)
boolean                        bool
date / time                    date32 / time64[us]
timestamp                      timestamp[us]
timestamptz                    timestamp[us, tz=UTC] (instants normalised to UTC)
interval                       month_day_nano_interval
bytea                          binary
uuid                           string (canonical 36-character form)
json / jsonb                   string (the JSON text)
arrays of the above            list<...> (one-dimensional; a multi-dimensional array is
                               flattened by the driver)
anything else (enum, inet,     string (its text form)
timetz, money, domains of ...) domains read as their base type
============================== ==============================================================

NaN in a numeric column cannot be a decimal and fails the read (VALUE_OUT_OF_RANGE).

Writes convert each Arrow column to the type a read of the target column would give
(checking ranges, so a value that does not fit is reported with its row number)
and stream them with ``COPY ... FROM STDIN (FORMAT binary)``; target columns of
other types (uuid, jsonb, enums ...) or other Arrow types (e.g. strings into an
integer column) go through a staging table and a SQL ``CAST``. A missing target
table is created from the Arrow schema (:func:`ddl_type`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from datadog_platform.connector.pg_sql import quote_ident
from datadog_platform.core.errors import DomainError, FieldViolation, invalid_argument

#: Arrow type of an unconstrained ``numeric``.
UNCONSTRAINED_NUMERIC = pa.decimal128(38, 9)
TIMESTAMPTZ = pa.timestamp("us", tz="UTC")

# Types the bulk driver reads and writes in their binary form without any help.
_NATIVE: dict[str, pa.DataType] = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "bool": pa.bool_(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "timestamp": pa.timestamp("us"),
    "timestamptz": TIMESTAMPTZ,
    "interval": pa.month_day_nano_interval(),
    "bytea": pa.binary(),
}
# Text-based types whose binary COPY input is their text: a string can be written as is.
_TEXT_INPUT = frozenset({"text", "varchar", "bpchar", "json"})


@dataclass(frozen=True)
class PgColumn:
    """A column as the catalog describes it (domains resolved to their base type)."""

    name: str
    not_null: bool
    typmod: int
    sql_type: str  # format_type(): "numeric(10,2)", "character varying(3)", "integer[]"
    # The type by its catalog name, which carries no modifier ("pg_catalog.bpchar",
    # "pg_catalog._int4"); "character" in a cast would mean char(1).
    cast_type: str
    type_name: str  # pg_type.typname of the base type: "int4", "_int4", "uuid"
    category: str  # pg_type.typcategory: "A" for arrays, "E" for enums ...
    elem_name: str | None = None  # element typname for arrays
    elem_category: str | None = None

    @classmethod
    def from_row(cls, row: Sequence[object]) -> PgColumn:
        """From a row of ``pg_sql.COLUMNS_SQL``."""
        (
            name,
            not_null,
            typmod,
            sql_type,
            cast_type,
            type_name,
            category,
            elem,
            elem_cat,
        ) = row
        return cls(
            str(name),
            bool(not_null),
            int(typmod),  # type: ignore[call-overload]
            str(sql_type),
            str(cast_type),
            str(type_name),
            str(category),
            None if elem is None else str(elem),
            None if elem_cat is None else str(elem_cat),
        )

    @property
    def is_array(self) -> bool:
        """Whether the column is an array."""
        return self.category == "A" and self.elem_name is not None

    @property
    def scalar_name(self) -> str:
        """The typname of the scalar (the element for arrays)."""
        return self.elem_name if self.is_array and self.elem_name else self.type_name


def numeric_type(typmod: int) -> pa.DataType:
    """The Arrow decimal of a ``numeric`` column with type modifier ``typmod``."""
    if typmod < 4:
        return UNCONSTRAINED_NUMERIC
    precision = ((typmod - 4) >> 16) & 0xFFFF
    # PostgreSQL 15+ stores the scale as an 11-bit signed number (numeric(3, -2)).
    scale = (((typmod - 4) & 0x7FF) ^ 1024) - 1024
    digits = max(precision, scale) - min(scale, 0)
    scale = max(scale, 0)
    if digits <= 38:
        return pa.decimal128(digits, scale)
    if digits <= 76:
        return pa.decimal256(digits, scale)
    return pa.string()


# --------------------------------------------------------------------------- reads


@dataclass(frozen=True)
class ReadColumn:
    """How one column is read: its SQL expression, its Arrow field, a conversion."""

    field: pa.Field
    expression: str  # SQL reading the column (unaliased)
    convert: Callable[[pa.Array], pa.Array] | None = None  # of the driver's array
    filter_expression: str = ""  # SQL a pushed-down comparison applies to (default: expression)

    @property
    def filter_sql(self) -> str:
        """The SQL a pushed-down comparison on this column applies to."""
        return self.filter_expression or self.expression

    @property
    def name(self) -> str:
        """The column name."""
        return self.field.name


def read_column(column: PgColumn) -> ReadColumn:
    """How to read ``column`` so that the result has the Arrow type documented above."""
    ref = quote_ident(column.name)
    nullable = not column.not_null
    scalar = column.scalar_name
    if scalar == "numeric":
        target = numeric_type(column.typmod)
        if column.is_array:
            arrow: pa.DataType = pa.list_(target)
            expression = f"{ref}::text[]"
        else:
            arrow, expression = target, f"{ref}::text"
        field = pa.field(column.name, arrow, nullable)
        if target == pa.string():
            return ReadColumn(field, expression, None, ref)
        # Comparisons apply to the number, not to its text.
        return ReadColumn(field, expression, _to(arrow), ref)
    native = _NATIVE.get(scalar)
    if native is None:
        # Everything else is read as its text form (uuid, json, enums, inet ...).
        if column.is_array:
            field = pa.field(column.name, pa.list_(pa.string()), nullable)
            return ReadColumn(field, f"{ref}::text[]")
        return ReadColumn(pa.field(column.name, pa.string(), nullable), f"{ref}::text")
    arrow = pa.list_(native) if column.is_array else native
    return ReadColumn(pa.field(column.name, arrow, nullable), ref)


def _to(arrow: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    def convert(array: pa.Array) -> pa.Array:
        return array.cast(arrow)

    return convert


def conform_batch(
    batch: pa.RecordBatch, columns: Sequence[ReadColumn], schema: pa.Schema, row_offset: int
) -> pa.RecordBatch:
    """The driver's batch as ``schema``: conversions applied, driver metadata dropped.

    A value that cannot be converted (a numeric NaN, or more digits than the Arrow
    decimal holds) raises VALUE_OUT_OF_RANGE naming the column and the row
    (1-based, counted from the start of this read).
    """
    arrays: list[pa.Array] = []
    for index, column in enumerate(columns):
        array = batch.column(index)
        if column.convert is not None:
            try:
                array = column.convert(array)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                bad = _first_failure(array, column.convert)
                raise _value_error(
                    column.name, row_offset + bad + 1, array[bad].as_py(), str(column.field.type)
                ) from None
        if not array.type.equals(column.field.type):
            # List types carry the driver's child metadata; the values are the same.
            array = array.cast(column.field.type)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# --------------------------------------------------------------------------- writes


def ddl_type(field: pa.Field, where: str) -> str:
    """The PostgreSQL type of a new column for the Arrow ``field``."""
    sql = _ddl_scalar(field.type)
    if sql is not None:
        return sql
    kind = field.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        element = _ddl_scalar(kind.value_type)
        if element is not None:
            return f"{element}[]"
    raise unsupported_type(field, where)


def _ddl_scalar(kind: pa.DataType) -> str | None:
    if pa.types.is_dictionary(kind):
        return _ddl_scalar(kind.value_type)
    if isinstance(kind, pa.ExtensionType):
        name = kind.extension_name
        if name == "arrow.uuid":
            return "uuid"
        if name == "arrow.json":
            return "jsonb"
        return _ddl_scalar(kind.storage_type)
    simple = {
        pa.int8(): "smallint",
        pa.int16(): "smallint",
        pa.uint8(): "smallint",
        pa.int32(): "integer",
        pa.uint16(): "integer",
        pa.int64(): "bigint",
        pa.uint32(): "bigint",
        pa.uint64(): "numeric(20,0)",
        pa.float16(): "real",
        pa.float32(): "real",
        pa.float64(): "double precision",
        pa.bool_(): "boolean",
        pa.null(): "text",
        pa.month_day_nano_interval(): "interval",
    }
    if kind in simple:
        return simple[kind]
    if _is_string(kind):
        return "text"
    if _is_binary(kind):
        return "bytea"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_time(kind):
        return "time"
    if pa.types.is_timestamp(kind):
        return "timestamptz" if kind.tz else "timestamp"
    if pa.types.is_duration(kind):
        return "interval"
    if pa.types.is_decimal(kind):
        return f"numeric({kind.precision},{kind.scale})"
    return None


def unsupported_type(field: pa.Field, where: str) -> DomainError:
    """SINK_WRITE_ERROR for a column type PostgreSQL sinks cannot store."""
    problem = f"column {field.name!r} has Arrow type {field.type}, which has no PostgreSQL type"
    return invalid_argument(
        "SINK_WRITE_ERROR",
        f"{where}: {problem}; convert it (e.g. to a JSON string) first",
        [FieldViolation(where, problem)],
    )


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or kind == pa.string_view()


def _is_binary(kind: pa.DataType) -> bool:
    return (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or kind == pa.binary_view()
    )


def _is_list(kind: pa.DataType) -> bool:
    return (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    )


def plain_type(kind: pa.DataType) -> pa.DataType:
    """``kind`` in a form the bulk driver ingests (views, dictionaries, extensions undone)."""
    if isinstance(kind, pa.ExtensionType):
        return plain_type(kind.storage_type)
    if pa.types.is_dictionary(kind):
        return plain_type(kind.value_type)
    if kind == pa.string_view():
        return pa.string()
    if kind == pa.binary_view():
        return pa.binary()
    if pa.types.is_date64(kind):
        return pa.date32()
    if _is_list(kind):
        return pa.list_(plain_type(kind.value_type))
    return kind


@dataclass(frozen=True)
class WriteColumn:
    """How one incoming column is written."""

    name: str
    wire_type: pa.DataType  # the Arrow type sent to the server
    target: PgColumn
    direct: bool  # the wire type is the target's own binary form (no SQL cast needed)

    @property
    def cast_sql(self) -> str:
        """The staged column cast to the target's type without its modifier.

        The modifier (varchar(3), numeric(5,2)) is left to the assignment into the
        target: an explicit cast to varchar(3) would silently truncate, the
        assignment refuses a value that is too long.
        """
        return f"CAST({quote_ident(self.name)} AS {self.target.cast_type})"


def write_columns(
    schema: pa.Schema, targets: Sequence[PgColumn], table: str, where: str
) -> list[WriteColumn]:
    """How each column of ``schema`` goes into the existing columns ``targets``."""
    by_name = {c.name: c for c in targets}
    planned: list[WriteColumn] = []
    for field in schema:
        target = by_name.get(field.name)
        if target is None:
            problem = f"table {table} has no column {field.name!r}"
            raise invalid_argument(
                "UNKNOWN_COLUMN",
                f"{where}: {problem} (it has {', '.join(by_name) or 'none'})",
                [FieldViolation(where, problem)],
            )
        if pa.types.is_struct(field.type) or pa.types.is_map(field.type):
            raise unsupported_type(field, where)
        wanted = _wire_type(target)
        source = plain_type(field.type)
        if wanted is not None and _convertible(source, wanted):
            planned.append(WriteColumn(field.name, wanted, target, True))
        else:
            planned.append(WriteColumn(field.name, source, target, False))
    return planned


def _wire_type(target: PgColumn) -> pa.DataType | None:
    """The Arrow type whose binary COPY form is the target column's, if there is one."""
    scalar = target.scalar_name
    if scalar == "numeric":
        element = numeric_type(target.typmod)
        if element == pa.string():
            return None
    elif scalar == "json" and not target.is_array:
        element = pa.string()
    else:
        native = _NATIVE.get(scalar)
        if native is None:
            return None
        element = native
    return pa.list_(element) if target.is_array else element


def _convertible(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether :func:`convert_array` turns ``source`` into ``target`` (with checks)."""
    if source.equals(target) or pa.types.is_null(source):
        return True
    if _is_list(target):
        return _is_list(source) and _convertible(source.value_type, target.value_type)
    if pa.types.is_integer(target):
        return pa.types.is_integer(source)
    if pa.types.is_floating(target):
        return (
            pa.types.is_integer(source)
            or pa.types.is_floating(source)
            or pa.types.is_decimal(source)
        )
    if pa.types.is_decimal(target):
        return pa.types.is_integer(source) or pa.types.is_decimal(source)
    if pa.types.is_string(target):
        return _is_string(source)
    if pa.types.is_binary(target):
        return _is_binary(source)
    if pa.types.is_date(target):
        return pa.types.is_date(source)
    if pa.types.is_time(target):
        return pa.types.is_time(source)
    if pa.types.is_timestamp(target):
        return pa.types.is_timestamp(source)
    return False


def convert_array(array: pa.Array, column: WriteColumn, row_offset: int) -> pa.Array:
    """``array`` as ``column.wire_type``; VALUE_OUT_OF_RANGE names the first bad row (1-based)."""
    target = column.wire_type
    array = _plain_array(array)
    if array.type.equals(target):
        return array
    if not column.direct:
        return array.cast(target)
    try:
        return _cast_value(array, target, column.target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        bad = _first_failure(array, lambda a: _cast_value(a, target, column.target))
        raise _value_error(
            column.name, row_offset + bad + 1, array[bad].as_py(), column.target.sql_type
        ) from None


def _plain_array(array: pa.Array) -> pa.Array:
    kind = array.type
    if isinstance(kind, pa.ExtensionType):
        array = array.storage
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    plain = plain_type(array.type)
    if not array.type.equals(plain):
        array = array.cast(plain)
    return array


def _cast_value(array: pa.Array, target: pa.DataType, column: PgColumn) -> pa.Array:
    """One checked conversion; raises ArrowInvalid when a value does not fit."""
    source = array.type
    if pa.types.is_decimal(target) and pa.types.is_decimal(source) and source.scale > target.scale:
        # PostgreSQL rounds extra fractional digits half away from zero; so do we.
        array = pc.round(array, ndigits=target.scale, round_mode="half_away_from_zero")
    elif pa.types.is_floating(target) and not pa.types.is_integer(source):
        return array.cast(target, safe=False)  # float precision is not a range
    elif (
        pa.types.is_timestamp(target)
        and pa.types.is_timestamp(source)
        and _unit_rank(source.unit) > _unit_rank(target.unit)
    ):
        return array.cast(target, safe=False)  # finer than microseconds: truncated
    elif (
        pa.types.is_time(target)
        and pa.types.is_time(source)
        and _unit_rank(source.unit) > _unit_rank(target.unit)
    ):
        return array.cast(target, safe=False)
    return array.cast(target, safe=True)


def _unit_rank(unit: str) -> int:
    return {"s": 0, "ms": 1, "us": 2, "ns": 3}[unit]


def _first_failure(array: pa.Array, convert: Callable[[pa.Array], pa.Array]) -> int:
    """Index of the first element ``convert`` fails on (bisection; 0 if none is found)."""
    low, high = 0, len(array)
    while high - low > 1:
        middle = (low + high) // 2
        try:
            convert(array.slice(low, middle - low))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            high = middle
        else:
            low = middle
    return low


def _value_error(column: str, row: int, value: object, type_name: str) -> DomainError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return value_out_of_range(column, row, f"value {shown} does not fit {type_name}")


def value_out_of_range(column: str | None, row: int | None, problem: str) -> DomainError:
    """VALUE_OUT_OF_RANGE naming the column and the (1-based) row where known."""
    where = []
    if column:
        where.append(f"column {column!r}")
    if row is not None:
        where.append(f"row {row}")
    prefix = ", ".join(where) or "a value"
    metadata = {}
    if column:
        metadata["column"] = column
    if row is not None:
        metadata["row"] = str(row)
    return invalid_argument(
        "VALUE_OUT_OF_RANGE",
        f"{prefix}: {problem}",
        [FieldViolation(f"rows[{row}].{column}" if row and column else "rows", problem)],
        **metadata,
    )

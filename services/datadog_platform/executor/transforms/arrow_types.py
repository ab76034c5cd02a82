"""Arrow types from their pyarrow spelling: ``str(pa_type)`` parses back to ``pa_type``."""

from __future__ import annotations

import re
import zoneinfo

import pyarrow as pa

_SIMPLE: dict[str, pa.DataType] = {
    "null": pa.null(),
    "bool": pa.bool_(),
    "boolean": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "halffloat": pa.float16(),
    "float16": pa.float16(),
    "float": pa.float32(),
    "float32": pa.float32(),
    "double": pa.float64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "utf8": pa.string(),
    "large_string": pa.large_string(),
    "large_utf8": pa.large_string(),
    "string_view": pa.string_view(),
    "binary": pa.binary(),
    "large_binary": pa.large_binary(),
    "binary_view": pa.binary_view(),
    "date32": pa.date32(),
    "date32[day]": pa.date32(),
    "date64": pa.date64(),
    "date64[ms]": pa.date64(),
    # Unqualified "time" and "timestamp"/"duration" default to microseconds, DuckDB's unit.
    "time": pa.time64("us"),
    "timestamp": pa.timestamp("us"),
    "duration": pa.duration("us"),
}

_UNITS = ("s", "ms", "us", "ns")
_TIMESTAMP = re.compile(r"timestamp\[(s|ms|us|ns)(?:,\s*tz=([^\]]+))?\]")
_TIME = re.compile(r"time(32|64)\[(s|ms|us|ns)\]")
_DURATION = re.compile(r"duration\[(s|ms|us|ns)\]")
_DECIMAL = re.compile(
    r"(decimal|decimal32|decimal64|decimal128|decimal256)\(\s*(\d+)\s*,\s*(-?\d+)\s*\)"
)
_OFFSET = re.compile(r"[+-]\d{2}:\d{2}")
_FIXED_BINARY = re.compile(r"fixed_size_binary\[(\d+)\]")
_DECIMALS = {
    "decimal": pa.decimal128,
    "decimal128": pa.decimal128,
    "decimal256": pa.decimal256,
    "decimal32": getattr(pa, "decimal32", pa.decimal128),
    "decimal64": getattr(pa, "decimal64", pa.decimal128),
}


def parse_arrow_type(spelling: str) -> pa.DataType:
    """The Arrow type spelled ``spelling`` ("int64", "timestamp[us, tz=UTC]",
    "decimal128(12, 2)"...); raises ValueError naming what is accepted."""
    text = spelling.strip()
    simple = _SIMPLE.get(text.lower())
    if simple is not None:
        return simple
    try:
        if match := _TIMESTAMP.fullmatch(text):
            unit, tz = match.groups()
            return pa.timestamp(unit, tz=_time_zone(tz.strip()) if tz else None)
        if match := _TIME.fullmatch(text):
            bits, unit = match.groups()
            return pa.time32(unit) if bits == "32" else pa.time64(unit)
        if match := _DURATION.fullmatch(text):
            return pa.duration(match.group(1))
        if match := _DECIMAL.fullmatch(text.lower()):
            name, precision, scale = match.groups()
            return _DECIMALS[name](int(precision), int(scale))
        if match := _FIXED_BINARY.fullmatch(text):
            return pa.binary(int(match.group(1)))
    except (ValueError, TypeError, pa.ArrowException) as exc:
        raise ValueError(f"invalid Arrow type {spelling!r}: {exc}") from None
    raise ValueError(
        f"unknown Arrow type {spelling!r}; expected e.g. int64, float64, string, "
        "large_string, bool, binary, date32, timestamp[us], timestamp[us, tz=UTC], "
        "time64[us], duration[s], decimal128(12, 2)"
    )


def _time_zone(name: str) -> str:
    # Arrow accepts any string as a zone and fails only on the first value.
    if not _OFFSET.fullmatch(name):
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
    return name

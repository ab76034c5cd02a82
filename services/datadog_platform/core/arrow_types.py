"""Arrow types from their pyarrow spelling: ``str(pa_type)`` parses back to ``pa_type``.

One parser for both ends of a cast transform: the scheduler validates the type at
CreatePipeline with it and the executor casts with it, so a spelling accepted at
creation is one the executor runs. Accepted: every ``pyarrow.type_for_alias`` alias
("int64", "string", "bool", "date32", "timestamp[us]", "time64[us]"...), unqualified
"time"/"timestamp"/"duration" (microseconds, DuckDB's unit), ``decimal128(p, s)`` and
its 32/64/256-bit siblings, ``timestamp[unit, tz=ZONE]`` with an IANA zone or a fixed
offset such as "+02:00", and ``fixed_size_binary[n]``. Nested types are not.

Also: :func:`is_string_kind`, for code that treats Arrow's three string types alike.
"""

from __future__ import annotations

import re
import zoneinfo

import pyarrow as pa

# Spellings pyarrow's own ``type_for_alias`` does not know.
_EXTRA: dict[str, pa.DataType] = {
    "time": pa.time64("us"),
    "timestamp": pa.timestamp("us"),
    "duration": pa.duration("us"),
}
_TIMESTAMP_TZ = re.compile(r"timestamp\[\s*(s|ms|us|ns)\s*,\s*tz\s*=\s*([^\]]+?)\s*\]")
_DECIMAL = re.compile(
    r"(decimal|decimal32|decimal64|decimal128|decimal256)\(\s*(\d+)\s*,\s*(-?\d+)\s*\)"
)
_FIXED_BINARY = re.compile(r"fixed_size_binary\[(\d+)\]")
_OFFSET = re.compile(r"[+-](?:[01]\d|2[0-3]):[0-5]\d")
#: Decimal spellings: the constructor and the largest precision it holds.
_DECIMALS = {
    "decimal": (pa.decimal128, 38),
    "decimal128": (pa.decimal128, 38),
    "decimal256": (pa.decimal256, 76),
    "decimal32": (getattr(pa, "decimal32", pa.decimal128), 9),
    "decimal64": (getattr(pa, "decimal64", pa.decimal128), 18),
}


def parse_arrow_type(spelling: str) -> pa.DataType:
    """The Arrow type spelled ``spelling``; ValueError with a readable reason otherwise."""
    text = spelling.strip()
    if not text:
        raise ValueError("is required")
    extra = _EXTRA.get(text.lower())
    if extra is not None:
        return extra
    if match := _DECIMAL.fullmatch(text.lower()):
        return _decimal(spelling, match.group(1), int(match.group(2)), int(match.group(3)))
    if match := _TIMESTAMP_TZ.fullmatch(text):
        unit, zone = match.groups()
        if not _is_zone(zone):
            raise ValueError(
                f"{zone!r} is not a time zone (an IANA name such as 'Europe/Paris' or "
                "an offset such as '+02:00')"
            )
        return pa.timestamp(unit, tz=zone)
    if match := _FIXED_BINARY.fullmatch(text):
        return pa.binary(int(match.group(1)))
    try:
        return pa.type_for_alias(text.lower())
    except (ValueError, KeyError):
        raise ValueError(
            f"unknown Arrow type {spelling!r}: {spelling!r} is not an Arrow type in "
            "pyarrow's spelling, e.g. 'int64', "
            "'float64', 'string', 'large_string', 'bool', 'binary', 'date32', "
            "'timestamp[us]', 'timestamp[us, tz=UTC]', 'time64[us]', 'duration[s]' or "
            "'decimal128(12, 2)'"
        ) from None


def _decimal(spelling: str, kind: str, precision: int, scale: int) -> pa.DataType:
    make, most = _DECIMALS[kind]
    if not 1 <= precision <= most:
        problem = f"{kind} precision must be between 1 and {most}, not {precision}"
    elif not 0 <= scale <= precision:
        problem = f"{kind} scale must be between 0 and the precision, not {scale}"
    else:
        return make(precision, scale)
    raise ValueError(f"{spelling!r} is not a valid Arrow type: {problem}")


def _is_zone(zone: str) -> bool:
    # Arrow accepts any string as a zone and fails only on the first value.
    if zone == "UTC" or _OFFSET.fullmatch(zone):
        return True
    try:
        zoneinfo.ZoneInfo(zone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return False
    return True


def is_string_kind(kind: pa.DataType) -> bool:
    """Whether ``kind`` is one of Arrow's string types (plain, large or view)."""
    return (
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    )

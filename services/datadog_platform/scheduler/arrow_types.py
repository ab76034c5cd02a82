"""Arrow type strings of cast transforms, parsed the way pyarrow spells types.

Accepted: every ``pyarrow.type_for_alias`` alias ("int64", "string", "bool",
"date32", "timestamp[us]", "time64[us]", "duration[s]"...), ``decimal128(p, s)``
and ``decimal256(p, s)``, and ``timestamp[unit, tz=ZONE]`` with an IANA zone or a
fixed offset such as "+02:00". Nested types (list, struct) are not castable here.
"""

from __future__ import annotations

import re
import zoneinfo

import pyarrow as pa

_DECIMAL = re.compile(r"^(decimal128|decimal256)\(\s*(\d+)\s*,\s*(-?\d+)\s*\)$")
_TIMESTAMP_TZ = re.compile(r"^timestamp\[\s*(s|ms|us|ns)\s*,\s*tz\s*=\s*([^\]]+?)\s*\]$")
_OFFSET = re.compile(r"^[+-](?:[01]\d|2[0-3]):[0-5]\d$")
_MAX_PRECISION = {"decimal128": 38, "decimal256": 76}


def parse_arrow_type(text: str) -> pa.DataType:
    """The Arrow type spelled ``text``; ValueError with a readable reason otherwise."""
    spelled = text.strip()
    if not spelled:
        raise ValueError("is required")
    decimal = _DECIMAL.fullmatch(spelled)
    if decimal:
        kind, precision, scale = decimal.group(1), int(decimal.group(2)), int(decimal.group(3))
        if not 1 <= precision <= _MAX_PRECISION[kind]:
            raise ValueError(
                f"{kind} precision must be between 1 and {_MAX_PRECISION[kind]}, not {precision}"
            )
        if not 0 <= scale <= precision:
            raise ValueError(f"{kind} scale must be between 0 and the precision, not {scale}")
        return (
            pa.decimal128(precision, scale)
            if kind == "decimal128"
            else pa.decimal256(precision, scale)
        )
    timestamp = _TIMESTAMP_TZ.fullmatch(spelled)
    if timestamp:
        unit, zone = timestamp.group(1), timestamp.group(2)
        if not _is_zone(zone):
            raise ValueError(
                f"{zone!r} is not a time zone (an IANA name such as 'Europe/Paris' or "
                "an offset such as '+02:00')"
            )
        return pa.timestamp(unit, tz=zone)
    try:
        return pa.type_for_alias(spelled)
    except (ValueError, KeyError):
        raise ValueError(
            f"{text!r} is not an Arrow type: use pyarrow's spelling, e.g. 'int64', "
            "'float64', 'string', 'bool', 'date32', 'timestamp[us]', "
            "'timestamp[us, tz=UTC]' or 'decimal128(12, 2)'"
        ) from None


def _is_zone(zone: str) -> bool:
    if zone == "UTC" or _OFFSET.fullmatch(zone):
        return True
    try:
        zoneinfo.ZoneInfo(zone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return False
    return True

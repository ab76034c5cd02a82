"""Opaque page tokens of list RPCs.

A token is the position to continue after, tagged with the list it belongs to, so a
token from one list (or any other string) is refused with INVALID_PAGE_TOKEN.
"""

from __future__ import annotations

import base64
import binascii
import json

from datadog_platform.core.errors import FieldViolation, invalid_argument

INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
_VERSION = 1


def encode_page_token(listing: str, position: str) -> str:
    """A token that continues ``listing`` (the RPC's name) after ``position``."""
    raw = json.dumps({"v": _VERSION, "list": listing, "after": position}).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_page_token(token: str, listing: str) -> str:
    """The non-empty position a token of ``listing`` continues after."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position = data["after"]
        if (
            data["v"] == _VERSION
            and data["list"] == listing
            and isinstance(position, str)
            and position
        ):
            return position
    except (binascii.Error, ValueError, TypeError, KeyError):
        pass
    raise invalid_argument(
        INVALID_PAGE_TOKEN,
        f"page_token is not a token from a previous {listing} response",
        [FieldViolation("page_token", "is not a token from a previous response")],
    )

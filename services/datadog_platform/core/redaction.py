"""Process-wide secret redaction for logs and error messages (DESIGN.md §6).

The connector's config loader registers every secret value it resolves
(passwords, tokens, ``${env:…}``/``${file:…}`` values of options marked secret);
:func:`redact` replaces each occurrence of a known secret with ``***`` and masks
the password of any ``scheme://user:password@host`` URL and libpq-style
``password=…`` pair, whether registered or not. The shared interceptor redacts
every error status it sends and a structlog processor every log line, so a driver
that echoes a DSN in an exception cannot leak it.

Secrets shorter than :data:`MIN_SECRET_LENGTH` are not registered: replacing
every "ab" in every log line would make logs unreadable and protects nothing.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MIN_SECRET_LENGTH = 4
MASK = "***"

# user:password@ right after a URL scheme; the user part may be empty (":pw@host").
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+@")
# libpq key=value DSNs and similar: password=..., passwd='...'.
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd)\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s;&,]+)",
    re.IGNORECASE,
)

_lock = threading.Lock()
_permanent: set[str] = set()
_scoped: Counter[str] = Counter()
_pattern: re.Pattern[str] | None = None


def _variants(value: str) -> set[str]:
    """The value plus the forms it takes inside URLs (percent-encoded)."""
    return {v for v in (value, quote(value, safe=""), quote_plus(value)) if v}


def register_secret(value: object) -> None:
    """Redact ``value`` from every log line and error message from now on."""
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    global _pattern
    with _lock:
        new = _variants(value) - _permanent
        if new:
            _permanent.update(new)
            _pattern = None


@contextlib.contextmanager
def secret_scope(values: Iterable[object]) -> Iterator[None]:
    """Redact ``values`` while the block runs (e.g. an inline connection's password)."""
    global _pattern
    added: list[str] = []
    for value in values:
        if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
            added.extend(_variants(value))
    with _lock:
        _scoped.update(added)
        _pattern = None
    try:
        yield
    finally:
        with _lock:
            _scoped.subtract(added)
            for value in added:
                if _scoped[value] <= 0:
                    del _scoped[value]
            _pattern = None


def _current_pattern() -> re.Pattern[str] | None:
    global _pattern
    with _lock:
        if _pattern is None:
            secrets = _permanent | set(_scoped)
            if not secrets:
                return None
            # Longest first, so a secret containing another is masked whole.
            ordered = sorted(secrets, key=len, reverse=True)
            _pattern = re.compile("|".join(re.escape(s) for s in ordered))
        return _pattern


def redact(text: str) -> str:
    """``text`` with every registered secret and URL/DSN password replaced by ``***``."""
    if not text:
        return text
    pattern = _current_pattern()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    if "=" in text:
        text = _KEYWORD_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)
    return text


def redact_value(value: Any) -> Any:
    """Strings redacted inside ``value`` (recursing into mappings, lists and tuples)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    if isinstance(value, BaseException):
        return redact(str(value))
    return value


def structlog_processor(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: redact every value of the event (after exceptions are formatted)."""
    return {key: _redact_log_value(value) for key, value in event_dict.items()}


def _redact_log_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool | Mapping | list | tuple):
        return redact_value(value)
    # The renderer would fall back to repr(), which may spell out a secret: do it here.
    return redact(repr(value))


class RedactingFilter(logging.Filter):
    """A stdlib logging filter redacting records of third-party loggers (drivers, aiohttp)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            # The traceback text is formatted later; cache a redacted rendering now.
            formatter = logging.Formatter()
            record.exc_text = redact(formatter.formatException(record.exc_info))
            record.exc_info = None
        return True


def _reset_for_tests() -> None:
    """Forget every registered secret (tests only)."""
    global _pattern
    with _lock:
        _permanent.clear()
        _scoped.clear()
        _pattern = None

"""HTTP plumbing of the REST connector: host policy, rate limit, backoff, Link headers.

Pure helpers with no I/O of their own (the token bucket only sleeps), so they can be
unit-tested without a server. No grpc here.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from yarl import URL

# A Link header entry: "<uri>" followed by its ";"-separated parameters, whose
# quoted values may contain "," and ";".
_LINK = re.compile(r'<([^>]*)>((?:\s*;(?:[^;,<"]|"[^"]*")*)*)')
_PARAM = re.compile(r';\s*([^=;\s]+)\s*(?:=\s*(?:"([^"]*)"|([^;]*)))?')


@dataclass(frozen=True)
class HostRule:
    """One ``allowed_hosts`` entry: a host name (``*.`` for any subdomain), maybe a port."""

    host: str
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> HostRule:
        """``example.com``, ``example.com:8443``, ``*.example.com``, ``[::1]:80`` or a URL."""
        text = entry.strip()
        if not text:
            raise ValueError("an empty host")
        wildcard = text.startswith("*.")
        if wildcard:
            text = text[2:]
        url = URL(text if "://" in text else f"http://{text}")
        if not url.host or url.path not in ("", "/") or url.query_string:
            raise ValueError(f"{entry!r} is not a host name (with an optional :port)")
        host = url.host.lower().rstrip(".")
        return cls(f"*.{host}" if wildcard else host, url.explicit_port)

    def matches(self, host: str, port: int | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def __str__(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port is None else f"{name}:{self.port}"


def host_allowed(url: URL, rules: Iterable[HostRule]) -> bool:
    """Whether ``url`` is http(s) and on one of ``rules``."""
    if url.scheme not in ("http", "https") or not url.host:
        return False
    host = url.host.lower().rstrip(".")
    return any(rule.matches(host, url.port) for rule in rules)


def display_url(url: URL) -> str:
    """``url`` without credentials, query or fragment: safe for messages and logs.

    The query is dropped because an API key may travel in it.
    """
    return str(url.with_user(None).with_query(None).with_fragment(None))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else time.time()
    return max(0.0, when.timestamp() - current)


def backoff_delay(
    attempt: int, initial: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped.

    The fixed half keeps retries from hammering a server; the random half spreads
    the clients that failed together.
    """
    ceiling = min(cap, initial * (2 ** min(attempt, 60)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def next_link(link_headers: Iterable[str], current: URL) -> URL | None:
    """The ``rel="next"`` target of RFC 8288 ``Link`` headers, resolved against ``current``."""
    for header in link_headers:
        for match in _LINK.finditer(header):
            for param in _PARAM.finditer(match.group(2)):
                if param.group(1).lower() != "rel":
                    continue
                relations = (param.group(2) or param.group(3) or "").lower().split()
                if "next" in relations:
                    target = match.group(1).strip()
                    return current.join(URL(target)) if target else None
    return None


class TokenBucket:
    """Spaces requests to ``rate`` per second, allowing a burst of ``burst`` requests.

    Shared by every request of a connection (in one event loop), so concurrent reads
    and writes together respect the limit.
    """

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        self._rate = rate
        self._capacity = max(1.0, burst)
        self._tokens = self._capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until a request may be sent, and take its token."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(
                    self._capacity, self._tokens + (now - self._updated) * self._rate
                )
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)


class Redactor:
    """Replaces configured secrets in text that may reach a client or a log."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def excerpt(body: bytes, limit: int = 200) -> str:
    """The start of a response body on one line, for error messages."""
    text = body[: limit * 4].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return text or "(empty body)"


def http_date(when: datetime) -> str:
    """``when`` as an HTTP date (for tests and servers)."""
    return email.utils.format_datetime(when.astimezone(UTC), usegmt=True)

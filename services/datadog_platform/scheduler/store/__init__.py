"""The scheduler's durable state: one :class:`Store` protocol, two backends.

Open one with :func:`open_store` and a URL:

- a file path, or ``sqlite://`` followed by the path (``sqlite:///var/lib/s.db`` is
  ``/var/lib/s.db``, ``sqlite://data/s.db`` is relative): SQLite (aiosqlite, WAL),
  the dev default; one scheduler per file;
- ``postgresql://`` (or ``postgres://``) URL, passed to asyncpg: PostgreSQL, for
  production and several schedulers.

Opening migrates the schema (``datadog db upgrade`` does it on its own). See
:mod:`.base` for why both backends share one implementation.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from datadog_platform.scheduler.store.base import (
    DeleteResult,
    IdempotencyKey,
    Migration,
    RenewResult,
    ScheduleState,
    Store,
    StoreError,
    StoreLockedError,
)

#: Environment variable with the store URL of the scheduler and ``datadog db``.
STORE_URL_ENV = "DATADOG_SCHEDULER_STORE"
#: The store URL when none is given: a SQLite file in the dev data directory.
DEFAULT_STORE_URL = ".datadog/scheduler.db"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


@dataclass(frozen=True)
class StoreUrl:
    """A parsed store URL: ``backend`` and where (a file path or an asyncpg DSN)."""

    backend: str
    location: str

    @property
    def display(self) -> str:
        """The URL without its password, for messages and logs."""
        if self.backend == "sqlite":
            return self.location
        parts = urlsplit(self.location)
        if parts.password is None:
            return self.location
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))


def parse_store_url(url: str | os.PathLike[str]) -> StoreUrl:
    """Which backend ``url`` names; StoreError for an unknown scheme or an empty path."""
    text = os.fspath(url).strip()
    scheme = _SCHEME.match(text)
    if scheme is None:
        backend, location = "sqlite", text
    elif scheme.group(1).lower() in ("postgresql", "postgres"):
        backend, location = "postgresql", text
    elif scheme.group(1).lower() == "sqlite":
        backend, location = "sqlite", text[len("sqlite:") :].removeprefix("//")
    else:
        raise StoreError(
            f"unsupported store URL {text!r}: use a file path, sqlite:///PATH or"
            " postgresql://USER@HOST:PORT/DATABASE"
        )
    if not location:
        raise StoreError("the store URL names no database")
    if backend == "sqlite":
        location = str(Path(location).expanduser())
    return StoreUrl(backend, location)


async def open_store(
    url: str | os.PathLike[str], *, exclusive: bool = True, migrate: bool = True
) -> Store:
    """Open the store ``url`` names (see the module docstring), migrated unless
    ``migrate`` is False.

    ``exclusive`` (SQLite): hold ``<db>.lock`` so that no other process opens the
    store exclusively meanwhile (StoreLockedError if one already does); what a
    scheduler must do. PostgreSQL needs no such lock.
    """
    target = parse_store_url(url)
    if target.backend == "postgresql":
        from datadog_platform.scheduler.store.postgres import PostgresStore

        return await PostgresStore.connect(target.location, migrate=migrate)
    from datadog_platform.scheduler.store.sqlite import SqliteStore

    return await SqliteStore.connect(Path(target.location), exclusive=exclusive, migrate=migrate)


__all__ = [
    "DEFAULT_STORE_URL",
    "STORE_URL_ENV",
    "DeleteResult",
    "IdempotencyKey",
    "Migration",
    "RenewResult",
    "ScheduleState",
    "Store",
    "StoreError",
    "StoreLockedError",
    "StoreUrl",
    "open_store",
    "parse_store_url",
]

"""``datadog db``: maintenance of the scheduler's store (works on the database directly).

``datadog db upgrade [--store URL]`` applies the pending schema migrations and prints
what it applied and the resulting schema version. The scheduler also migrates on
start; this command lets an operator do it beforehand (e.g. as a deploy step).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from datadog_platform.cli.errors import CliError, ExitCode
from datadog_platform.scheduler.store import (
    DEFAULT_STORE_URL,
    STORE_URL_ENV,
    StoreError,
    open_store,
    parse_store_url,
)


def add_db_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``db`` and its subcommands to the ``datadog`` command tree."""
    db = subparsers.add_parser("db", help="maintain the scheduler's database")
    commands = db.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    upgrade = commands.add_parser(
        "upgrade",
        help="apply pending schema migrations",
        description="Apply the store's pending schema migrations (the scheduler also does"
        " at start) and print the schema version.",
    )
    upgrade.add_argument(
        "--store",
        default=os.environ.get(STORE_URL_ENV, DEFAULT_STORE_URL),
        metavar="URL",
        help="a SQLite file path (or sqlite:///PATH) or a postgresql:// URL"
        f" (env {STORE_URL_ENV}; default {DEFAULT_STORE_URL})",
    )
    upgrade.set_defaults(handler=cmd_db_upgrade)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Migrate the store at ``args.store``; prints the migrations applied and the version."""
    try:
        target = parse_store_url(args.store)
        applied, version = asyncio.run(_upgrade(args.store))
    except StoreError as exc:
        raise CliError(f"error: {exc}") from None
    except OSError as exc:  # e.g. PostgreSQL not reachable, directory not writable
        raise CliError(
            f"error: cannot open the store {_display(args.store)}: {exc}", ExitCode.UNAVAILABLE
        ) from None
    except Exception as exc:  # a database error (unknown database, bad credentials, ...)
        raise CliError(
            f"error: cannot upgrade the store {_display(args.store)}: {type(exc).__name__}: {exc}"
        ) from None
    where = f"{target.backend} {target.display}"
    if applied:
        print(f"applied migrations {', '.join(map(str, applied))} to {where}")
    else:
        print(f"{where} is up to date")
    print(f"schema version {version}")
    return ExitCode.OK


async def _upgrade(url: str) -> tuple[list[int], int]:
    # Not exclusive: a running scheduler holds the SQLite lock, and migrating under it
    # is safe (one transaction; an up-to-date schema makes this a no-op).
    store = await open_store(url, exclusive=False, migrate=False)
    try:
        applied = await store.upgrade()
        return applied, await store.schema_version()
    finally:
        await store.close()


def _display(url: str) -> str:
    try:
        return parse_store_url(url).display
    except StoreError:
        return url

"""The process side of every service: logging, start, the ``listening on`` line, signals.

Startup problems (a port in use, a bad config file) end the process with one
readable line on stderr and exit code 1, not a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from datadog_platform.core.errors import DomainError
from datadog_platform.core.logging import configure_logging
from datadog_platform.core.server import Server


def run_service(
    service: str, args: argparse.Namespace, build: Callable[[], Awaitable[Server]]
) -> None:
    """Build and start the server, print ``listening on HOST:PORT`` (then ``metrics on
    HOST:PORT`` when the Prometheus endpoint is on), serve until SIGTERM."""
    configure_logging(service, args.log_level)
    try:
        asyncio.run(_serve(build, args.shutdown_grace))
    except (OSError, DomainError) as exc:
        print(f"datadog-{service}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


async def _serve(build: Callable[[], Awaitable[Server]], grace: float) -> None:
    server = await build()
    try:
        await server.start()
    except BaseException:
        await server.stop(grace=0)  # releases what build() opened (store, channels)
        raise
    # The first line on stdout: launchers and tests read the bound port from it.
    print(f"listening on {server.address}", flush=True)
    if server.metrics_address is not None:
        print(f"metrics on {server.metrics_address}", flush=True)
    await server.serve_until_signalled(grace)

"""``datadog-executor``: run the executor service until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse

from datadog_platform.core.config import (
    DEFAULT_CONNECTOR_ADDRESS,
    DEFAULT_EXECUTOR_ADDRESS,
    add_common_flags,
    env_default,
)
from datadog_platform.core.runner import run_service
from datadog_platform.executor.app import ExecutorConfig, build_server
from datadog_platform.executor.stage import DEFAULT_SLOTS


def main(argv: list[str] | None = None) -> None:
    """Parse flags, start the server, print ``listening on HOST:PORT``, serve until signalled."""
    parser = argparse.ArgumentParser(
        prog="datadog-executor",
        description="DataDog executor: runs pipeline stages on Arrow record batches.",
    )
    parser.add_argument(
        "--listen",
        default=env_default("EXECUTOR_LISTEN", DEFAULT_EXECUTOR_ADDRESS),
        help="host:port to serve on; port 0 picks a free one (env DATADOG_EXECUTOR_LISTEN)",
    )
    parser.add_argument(
        "--connector",
        default=env_default("CONNECTOR_ADDRESS", DEFAULT_CONNECTOR_ADDRESS),
        help="host:port of the connector service (env DATADOG_CONNECTOR_ADDRESS)",
    )
    parser.add_argument(
        "--slots",
        type=int,
        default=env_default("EXECUTOR_SLOTS", str(DEFAULT_SLOTS)),  # argparse applies type=int
        help="stage attempts run at once; more are refused with RESOURCE_EXHAUSTED "
        f"(env DATADOG_EXECUTOR_SLOTS; default {DEFAULT_SLOTS})",
    )
    add_common_flags(parser)
    args = parser.parse_args(argv)
    if args.slots < 1:
        parser.error(f"--slots must be at least 1, not {args.slots}")
    config = ExecutorConfig(connector_address=args.connector, slots=args.slots)
    run_service("executor", args, lambda: build_server(config, args.listen))


if __name__ == "__main__":
    main()

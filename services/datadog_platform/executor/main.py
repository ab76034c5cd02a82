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
    add_common_flags(parser)
    args = parser.parse_args(argv)
    config = ExecutorConfig(connector_address=args.connector)
    run_service("executor", args, lambda: build_server(config, args.listen))


if __name__ == "__main__":
    main()

"""Service configuration from command-line flags with ``DATADOG_*`` environment defaults."""

from __future__ import annotations

import argparse
import os


def env_default(name: str, default: str) -> str:
    """The value of ``DATADOG_<NAME>`` if set, else ``default``."""
    return os.environ.get(f"DATADOG_{name}", default)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every service takes."""
    parser.add_argument(
        "--log-level",
        default=env_default("LOG_LEVEL", "INFO"),
        help="log level (env DATADOG_LOG_LEVEL; default INFO)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=float(env_default("SHUTDOWN_GRACE", "10")),
        help="seconds to drain in-flight calls on SIGTERM (env DATADOG_SHUTDOWN_GRACE)",
    )


DEFAULT_SCHEDULER_ADDRESS = "127.0.0.1:50051"
DEFAULT_EXECUTOR_ADDRESS = "127.0.0.1:50052"
DEFAULT_CONNECTOR_ADDRESS = "127.0.0.1:50053"

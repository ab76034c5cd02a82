"""``datadog-scheduler``: run the scheduler service until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
from pathlib import Path

from datadog_platform.core.config import (
    DEFAULT_CONNECTOR_ADDRESS,
    DEFAULT_EXECUTOR_ADDRESS,
    DEFAULT_SCHEDULER_ADDRESS,
    add_common_flags,
    env_default,
)
from datadog_platform.core.runner import run_service
from datadog_platform.scheduler.app import SchedulerConfig, build_server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The scheduler's command line (flags default to ``DATADOG_*`` variables)."""
    parser = argparse.ArgumentParser(
        prog="datadog-scheduler",
        description="DataDog scheduler: pipeline registry, runs and the public API.",
    )
    parser.add_argument(
        "--listen",
        default=env_default("SCHEDULER_LISTEN", DEFAULT_SCHEDULER_ADDRESS),
        help="host:port to listen on (env DATADOG_SCHEDULER_LISTEN; port 0 picks a free one)",
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=Path(env_default("SCHEDULER_DB", ".datadog/scheduler.db")),
        help="SQLite database file, created with its parent directories "
        "(env DATADOG_SCHEDULER_DB; default .datadog/scheduler.db)",
    )
    parser.add_argument(
        "--executor",
        default=env_default("EXECUTOR_ADDRESS", DEFAULT_EXECUTOR_ADDRESS),
        help="executor service host:port (env DATADOG_EXECUTOR_ADDRESS)",
    )
    parser.add_argument(
        "--connector",
        default=env_default("CONNECTOR_ADDRESS", DEFAULT_CONNECTOR_ADDRESS),
        help="connector service host:port (env DATADOG_CONNECTOR_ADDRESS)",
    )
    add_common_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``datadog-scheduler`` and ``python -m datadog_platform.scheduler.main``."""
    args = parse_args(argv)
    config = SchedulerConfig(
        db_path=args.db, executor_address=args.executor, connector_address=args.connector
    )
    run_service("scheduler", args, lambda: build_server(config, listen=args.listen))


if __name__ == "__main__":
    main()

"""``datadog-scheduler``: run the scheduler service until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse

from datadog_platform.core.allocator import tune_allocator
from datadog_platform.core.config import (
    DEFAULT_CONNECTOR_ADDRESS,
    DEFAULT_EXECUTOR_ADDRESS,
    DEFAULT_SCHEDULER_ADDRESS,
    DEFAULT_SCHEDULER_METRICS_PORT,
    METRICS_AUTO,
    add_common_flags,
    env_default,
    metrics_listen_help,
    resolve_metrics_listen,
)
from datadog_platform.core.runner import run_service
from datadog_platform.scheduler.app import SchedulerConfig, build_server, default_instance_id


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
        "--store",
        "--db",
        dest="store",
        default=env_default("SCHEDULER_STORE", ".datadog/scheduler.db"),
        help="the state store: a SQLite file (created with its parent directories; one "
        "scheduler only) or a postgresql:// URL (several schedulers may share it) "
        "(env DATADOG_SCHEDULER_STORE; default .datadog/scheduler.db)",
    )
    parser.add_argument(
        "--instance-id",
        default=env_default("SCHEDULER_INSTANCE_ID", default_instance_id()),
        help="name of this scheduler among its peers (env DATADOG_SCHEDULER_INSTANCE_ID; "
        "default host-pid-random)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=float(env_default("SCHEDULER_LEASE_SECONDS", "10")),
        help="how long a run stays held by a silent scheduler before a peer adopts it "
        "(env DATADOG_SCHEDULER_LEASE_SECONDS; default 10)",
    )
    parser.add_argument(
        "--max-parallel-stages",
        type=int,
        default=int(env_default("SCHEDULER_MAX_PARALLEL_STAGES", "16")),
        help="stages dispatched at once over all runs "
        "(env DATADOG_SCHEDULER_MAX_PARALLEL_STAGES; default 16, one executor's slots)",
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
    parser.add_argument(
        "--metrics-listen",
        default=env_default("SCHEDULER_METRICS_LISTEN", METRICS_AUTO),
        help=metrics_listen_help(
            "DATADOG_SCHEDULER_METRICS_LISTEN", DEFAULT_SCHEDULER_METRICS_PORT
        ),
    )
    add_common_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``datadog-scheduler`` and ``python -m datadog_platform.scheduler.main``."""
    tune_allocator()  # before any thread starts (core.allocator)
    args = parse_args(argv)
    config = SchedulerConfig(
        store=args.store,
        executor_address=args.executor,
        connector_address=args.connector,
        instance_id=args.instance_id,
        lease_seconds=args.lease_seconds,
        max_parallel_stages=args.max_parallel_stages,
        metrics_listen=resolve_metrics_listen(
            args.metrics_listen, args.listen, DEFAULT_SCHEDULER_METRICS_PORT
        ),
    )
    run_service("scheduler", args, lambda: build_server(config, listen=args.listen))


if __name__ == "__main__":
    main()

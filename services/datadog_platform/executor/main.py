"""``datadog-executor``: run the executor service until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse

from datadog_platform.core.allocator import arrow_jemalloc, tune_allocator
from datadog_platform.core.config import (
    DEFAULT_CONNECTOR_ADDRESS,
    DEFAULT_EXECUTOR_ADDRESS,
    DEFAULT_EXECUTOR_METRICS_PORT,
    METRICS_AUTO,
    add_common_flags,
    env_default,
    metrics_listen_help,
    resolve_metrics_listen,
)
from datadog_platform.core.runner import run_service
from datadog_platform.executor.app import ExecutorConfig, build_server
from datadog_platform.executor.data_plane import DEFAULT_READ_SPLITS
from datadog_platform.executor.engine.query import DEFAULT_MEMORY_LIMIT, Engine, EngineConfig
from datadog_platform.executor.stage import DEFAULT_SLOTS


def main(argv: list[str] | None = None) -> None:
    """Parse flags, start the server, print ``listening on HOST:PORT``, serve until signalled."""
    tune_allocator()  # before any thread starts (core.allocator)
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
    parser.add_argument(
        "--metrics-listen",
        default=env_default("EXECUTOR_METRICS_LISTEN", METRICS_AUTO),
        help=metrics_listen_help("DATADOG_EXECUTOR_METRICS_LISTEN", DEFAULT_EXECUTOR_METRICS_PORT),
    )
    parser.add_argument(
        "--memory-limit",
        default=env_default("EXECUTOR_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT),
        help="memory the transform engine (DuckDB) may use for all stages, e.g. 512MB or 4GB; "
        "blocking transforms spill to --spill-dir beyond it (env DATADOG_EXECUTOR_MEMORY_LIMIT; "
        f"default {DEFAULT_MEMORY_LIMIT})",
    )
    parser.add_argument(
        "--spill-dir",
        default=env_default("EXECUTOR_SPILL_DIR", "") or None,
        help="directory blocking transforms spill to (env DATADOG_EXECUTOR_SPILL_DIR; default a "
        "temporary directory removed on exit)",
    )
    parser.add_argument(
        "--read-splits",
        type=int,
        default=env_default("EXECUTOR_READ_SPLITS", str(DEFAULT_READ_SPLITS)),
        help="splits (PlanRead tickets) a source read is divided into at most, read "
        "concurrently in order; 1 reads each source with one stream "
        f"(env DATADOG_EXECUTOR_READ_SPLITS; default {DEFAULT_READ_SPLITS})",
    )
    parser.add_argument(
        "--parquet-passthrough",
        action=argparse.BooleanOptionalAction,
        default=env_default("EXECUTOR_PARQUET_PASSTHROUGH", "true").lower() != "false",
        help="read Parquet sources as their stored column chunks and decode them here, "
        "instead of as Arrow batches the connector decoded: several times fewer bytes "
        "between the services, the decoding CPU moved here "
        "(env DATADOG_EXECUTOR_PARQUET_PASSTHROUGH=false to turn off; default on)",
    )
    add_common_flags(parser)
    args = parser.parse_args(argv)
    if args.slots < 1:
        parser.error(f"--slots must be at least 1, not {args.slots}")
    if args.read_splits < 1:
        parser.error(f"--read-splits must be at least 1, not {args.read_splits}")
    try:  # a bad --memory-limit is a usage error, not a traceback at startup
        Engine(EngineConfig(memory_limit=args.memory_limit, spill_dir=args.spill_dir)).close()
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    config = ExecutorConfig(
        connector_address=args.connector,
        slots=args.slots,
        memory_limit=args.memory_limit,
        spill_dir=args.spill_dir,
        read_splits=args.read_splits,
        parquet_passthrough=args.parquet_passthrough,
    )
    config.metrics_listen = resolve_metrics_listen(
        args.metrics_listen, args.listen, DEFAULT_EXECUTOR_METRICS_PORT
    )
    arrow_jemalloc()
    run_service("executor", args, lambda: build_server(config, args.listen))


if __name__ == "__main__":
    main()

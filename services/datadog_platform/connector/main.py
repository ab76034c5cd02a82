"""``datadog-connector``: run the connector service until SIGTERM/SIGINT.

Prints one line, ``listening on HOST:PORT``, once it accepts calls; logs go to stderr.
The ``--config`` file is re-read on SIGHUP and whenever it changes (checked every
~2 s); a bad new file is logged and the running config kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from datadog_platform.connector.app import build_server, load_config
from datadog_platform.core.allocator import tune_allocator
from datadog_platform.core.config import (
    DEFAULT_CONNECTOR_ADDRESS,
    DEFAULT_CONNECTOR_METRICS_PORT,
    METRICS_AUTO,
    add_common_flags,
    env_default,
    metrics_listen_help,
    resolve_metrics_listen,
)
from datadog_platform.core.runner import run_service
from datadog_platform.core.server import Server

PROG = "datadog-connector"


def build_parser() -> argparse.ArgumentParser:
    """The command line: flags with ``DATADOG_*`` environment defaults."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="The DataDog connector service: all reads and writes of data."
    )
    parser.add_argument(
        "--listen",
        default=env_default("CONNECTOR_LISTEN", DEFAULT_CONNECTOR_ADDRESS),
        help="host:port to listen on; port 0 picks a free one "
        f"(env DATADOG_CONNECTOR_LISTEN; default {DEFAULT_CONNECTOR_ADDRESS})",
    )
    parser.add_argument(
        "--config",
        default=env_default("CONNECTOR_CONFIG", ""),
        help="YAML file of named connections (env DATADOG_CONNECTOR_CONFIG), re-read on "
        "SIGHUP and when it changes; without it there is one file connection, 'local', "
        "rooted at --root, and the artifact store 'artifacts' in <root>/.datadog/artifacts",
    )
    parser.add_argument(
        "--root",
        default=env_default("CONNECTOR_ROOT", "."),
        help="root directory of the 'local' file connection when no --config is given "
        "(env DATADOG_CONNECTOR_ROOT; default .)",
    )
    parser.add_argument(
        "--metrics-listen",
        default=env_default("CONNECTOR_METRICS_LISTEN", METRICS_AUTO),
        help=metrics_listen_help(
            "DATADOG_CONNECTOR_METRICS_LISTEN", DEFAULT_CONNECTOR_METRICS_PORT
        ),
    )
    add_common_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse flags, load the connections, serve until signalled."""
    tune_allocator()  # before any thread starts (core.allocator)
    args = build_parser().parse_args(argv)
    config_path = Path(args.config) if args.config else None
    root = Path(args.root)

    async def build() -> Server:
        # A bad config is a DomainError here: one readable line and exit 1.
        return await build_server(
            load_config(config_path, root),
            args.listen,
            reload_on_sighup=True,
            metrics_listen=resolve_metrics_listen(
                args.metrics_listen, args.listen, DEFAULT_CONNECTOR_METRICS_PORT
            ),
        )

    run_service("connector", args, build)


if __name__ == "__main__":
    main()

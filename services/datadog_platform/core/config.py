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

#: Prometheus endpoints' default ports (``--metrics-listen``).
DEFAULT_SCHEDULER_METRICS_PORT = 9451
DEFAULT_EXECUTOR_METRICS_PORT = 9452
DEFAULT_CONNECTOR_METRICS_PORT = 9453
#: ``--metrics-listen`` default: derived from ``--listen`` (see :func:`resolve_metrics_listen`).
METRICS_AUTO = "auto"


def metrics_listen_help(env: str, port: int) -> str:
    """The ``--metrics-listen`` help text of a service."""
    return (
        f"host:port of the Prometheus endpoint (GET /metrics); '' disables it (env {env}; "
        f"default: the --listen host, port {port}, or a free port when --listen's port is 0)"
    )


def resolve_metrics_listen(value: str, listen: str, port: int) -> str:
    """The metrics address to bind: ``value`` as given, or for ``auto`` the host of the
    gRPC address ``listen`` with ``port``, or port 0 when ``listen``'s port is 0 (tests
    and launchers start many processes that way; a fixed port would collide)."""
    if value.strip().lower() != METRICS_AUTO:
        return value.strip()
    host, _, grpc_port = listen.rpartition(":")
    return f"{host}:{0 if grpc_port == '0' else port}"

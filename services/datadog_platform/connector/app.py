"""The connector service's factory: configuration in, an unstarted server out.

The server keeps a :class:`~datadog_platform.connector.config.LiveConfig`: once
started it re-reads the config file when it (or a ``${file:}`` it references)
changes, and on SIGHUP when ``reload_on_sighup`` is set (the process entry point
does); on stop it closes every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence

from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.connector.config import (
    RELOAD_INTERVAL_SECONDS,
    ConnectorConfig,
    LiveConfig,
    load_config,
    parse_config,
)
from datadog_platform.connector.metrics import MeteredConnectorServicer
from datadog_platform.connector.servicer import SERVICE_DESCRIPTOR
from datadog_platform.core.connector_frames import parse_write_request
from datadog_platform.core.metrics import MetricsEndpoint
from datadog_platform.core.server import Server, ServiceRegistration

__all__ = ["ConnectorConfig", "ConnectorServer", "build_server", "load_config", "parse_config"]


class ConnectorServer(Server):
    """A :class:`Server` that watches its config while it runs and closes connections on stop."""

    def __init__(
        self,
        registrations: Sequence[ServiceRegistration],
        live: LiveConfig,
        listen: str,
        reload_interval: float | None,
        reload_on_sighup: bool,
        metrics: MetricsEndpoint | None = None,
    ) -> None:
        # No health checks: the connector depends on no other service (a database
        # that is down fails the calls that need it, not the whole service).
        super().__init__(registrations, listen=listen, on_stop=self._on_stop, metrics=metrics)
        self.live = live
        self._reload_interval = reload_interval
        self._reload_on_sighup = reload_on_sighup
        self._sighup_installed = False

    async def start(self) -> int:
        """Start serving, then start watching the config (and SIGHUP, if asked)."""
        port = await super().start()
        if self._reload_interval:
            self.live.start_watching(self._reload_interval)
        if self._reload_on_sighup:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self.live.request_reload, "SIGHUP")
            self._sighup_installed = True
        return port

    async def _on_stop(self) -> None:
        if self._sighup_installed:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup_installed = False
        await self.live.close()


async def build_server(
    config: ConnectorConfig | LiveConfig,
    listen: str = "127.0.0.1:0",
    *,
    reload_interval: float | None = RELOAD_INTERVAL_SECONDS,
    reload_on_sighup: bool = False,
    metrics_listen: str = "",
) -> ConnectorServer:
    """A connector server for ``config`` on ``listen`` (port 0 binds a free port); not started.

    A config loaded from a file is re-read every ``reload_interval`` seconds when it
    changed (``None`` disables that), and on SIGHUP when ``reload_on_sighup``.
    ``metrics_listen`` is the Prometheus endpoint's ``host:port`` ("" disables it).
    """
    live = config if isinstance(config, LiveConfig) else LiveConfig(config)
    registration = ServiceRegistration(
        SERVICE_DESCRIPTOR,
        MeteredConnectorServicer(live),
        pb_grpc.add_ConnectorServiceServicer_to_server,
        request_parsers={"Write": parse_write_request},
    )
    metrics = MetricsEndpoint(metrics_listen) if metrics_listen else None
    return ConnectorServer([registration], live, listen, reload_interval, reload_on_sighup, metrics)

"""Server factory: one aio gRPC server with health, reflection and the interceptor.

Binds port 0 for tests and reports the bound port. Health and reflection names come
from the generated descriptors. On SIGTERM/SIGINT the health status turns
NOT_SERVING first (so load balancers stop sending), then in-flight calls drain.

Optionally, a :class:`~datadog_platform.core.health.HealthWatcher` keeps health in
line with the service's dependencies, and a
:class:`~datadog_platform.core.metrics.MetricsEndpoint` serves Prometheus metrics;
both start and stop with the server.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from datadog_platform.core.health import (
    HEALTH_INTERVAL_SECONDS,
    HEALTH_MAX_INTERVAL_SECONDS,
    LIVENESS,
    HealthCheck,
    HealthWatcher,
)
from datadog_platform.core.interceptors import ErrorMappingInterceptor
from datadog_platform.core.logging import get_logger
from datadog_platform.core.metrics import MetricsEndpoint

# Arrow batches are ~1 MiB; leave ample headroom, and set the same on both ends.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)
# gRPC sets SO_REUSEPORT by default, so a second server on a busy port would
# silently share it instead of failing; two services must never share a port.
SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (*CHANNEL_OPTIONS, ("grpc.so_reuseport", 0))

log = get_logger(__name__)


@dataclass(frozen=True)
class ServiceRegistration:
    """A servicer plus what it takes to register it: its descriptor and adder."""

    descriptor: ServiceDescriptor
    servicer: object
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    #: Parsers replacing the generated request deserializer, by method name.
    request_parsers: Mapping[str, Callable[[bytes], Any]] = field(default_factory=dict)

    def parsers_by_path(self) -> dict[str, Callable[[bytes], Any]]:
        """``request_parsers`` keyed by full method path, as gRPC names calls."""
        name = self.descriptor.full_name
        return {f"/{name}/{method}": parse for method, parse in self.request_parsers.items()}


class Server:
    """A started-on-demand gRPC server for one service and its health/reflection."""

    def __init__(
        self,
        registrations: Sequence[ServiceRegistration],
        listen: str = "127.0.0.1:0",
        on_stop: Callable[[], Awaitable[None]] | None = None,
        *,
        metrics: MetricsEndpoint | None = None,
        health_checks: Mapping[str, HealthCheck] | None = None,
        health_interval: float = HEALTH_INTERVAL_SECONDS,
        health_max_interval: float = HEALTH_MAX_INTERVAL_SECONDS,
    ) -> None:
        self._registrations = list(registrations)
        self._listen = listen
        self._on_stop = on_stop
        parsers = {p: f for r in self._registrations for p, f in r.parsers_by_path().items()}
        self._server = grpc.aio.server(
            interceptors=[ErrorMappingInterceptor(parsers)], options=SERVER_OPTIONS
        )
        self.health = health.aio.HealthServicer()
        self.port = 0
        self._stopped = asyncio.Event()
        #: The Prometheus endpoint, if enabled.
        self.metrics = metrics
        self.watcher = HealthWatcher(
            self.health,
            self.service_names,
            health_checks or {},
            interval=health_interval,
            max_interval=health_max_interval,
        )

    @property
    def service_names(self) -> list[str]:
        """Fully qualified names of the registered application services."""
        return [r.descriptor.full_name for r in self._registrations]

    @property
    def address(self) -> str:
        """``host:port`` of the bound listener."""
        return f"{self._listen.rsplit(':', 1)[0]}:{self.port}"

    @property
    def metrics_address(self) -> str | None:
        """``host:port`` of the metrics endpoint once started; None when disabled."""
        return self.metrics.address if self.metrics is not None else None

    async def start(self) -> int:
        """Bind, start serving (and the metrics endpoint), mark every service SERVING,
        start watching dependencies; returns the bound gRPC port."""
        for registration in self._registrations:
            registration.add_to_server(registration.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            [
                *self.service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )
        try:
            self.port = self._server.add_insecure_port(self._listen)
        except RuntimeError as exc:  # grpc's way of saying the bind failed
            raise OSError(f"cannot listen on {self._listen}: {exc}") from None
        if self.port == 0:
            raise OSError(f"cannot listen on {self._listen}")
        await self._server.start()
        if self.metrics is not None:
            await self.metrics.start()  # before SERVING: a bad metrics port fails the start
        await self.set_serving(True)
        self.watcher.start()
        log.info("server.started", address=self.address, services=self.service_names)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        """Report every service (and the server as a whole, "", and the liveness name)
        SERVING or NOT_SERVING."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", LIVENESS, *self.service_names]:
            await self.health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        """Turn NOT_SERVING, let in-flight calls finish within ``grace``, then stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self.watcher.close()  # before NOT_SERVING, so that it cannot undo it
        await self.set_serving(False)
        await self._server.stop(grace)
        if self.metrics is not None:
            await self.metrics.stop()
        if self._on_stop is not None:
            await self._on_stop()
        log.info("server.stopped", address=self.address)

    async def serve_until_signalled(self, grace: float = 5.0) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        signalled = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled.set)
        await signalled.wait()
        log.info("server.stopping", grace_seconds=grace)
        await self.stop(grace)

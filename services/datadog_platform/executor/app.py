"""Assembly of the executor service: configuration, the connector channel, the server."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from datadog_platform.api.connector.v1 import connector_service_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2, executor_service_pb2_grpc
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.health import (
    HEALTH_INTERVAL_SECONDS,
    HEALTH_MAX_INTERVAL_SECONDS,
    GrpcHealthProbe,
)
from datadog_platform.core.metrics import MetricsEndpoint
from datadog_platform.core.server import Server, ServiceRegistration
from datadog_platform.executor.data_plane import DEFAULT_READ_SPLITS, GrpcDataPlane
from datadog_platform.executor.engine.query import DEFAULT_MEMORY_LIMIT, Engine, EngineConfig
from datadog_platform.executor.metrics import SLOTS, MeteredExecutorServicer
from datadog_platform.executor.stage import DEFAULT_SLOTS, StageRunner

SERVICE = executor_service_pb2.DESCRIPTOR.services_by_name["ExecutorService"]


def default_executor_id() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class ExecutorConfig:
    """Settings of one executor process."""

    connector_address: str
    executor_id: str = field(default_factory=default_executor_id)
    # Deadline of every connector call of a stage, hence the longest a stage can run.
    stage_timeout_seconds: float = 3600.0
    # Stage attempts run at once; one more is refused with RESOURCE_EXHAUSTED (EXECUTOR_BUSY).
    slots: int = DEFAULT_SLOTS
    # DuckDB's memory limit for all stages together; blocking transforms spill beyond it.
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    # Tickets each source read is split into at most, read concurrently (1: unsplit).
    read_splits: int = DEFAULT_READ_SPLITS
    # Take Parquet files' stored column chunks and decode them here (core.parquet_frames).
    parquet_passthrough: bool = True
    # Where they spill; None: a temporary directory removed when the server stops.
    spill_dir: str | None = None
    #: ``host:port`` of the Prometheus endpoint ("" disables it; port 0 picks one).
    metrics_listen: str = ""
    #: How often health checks the connector service (backing off while it is down).
    health_interval: float = HEALTH_INTERVAL_SECONDS
    health_max_interval: float = HEALTH_MAX_INTERVAL_SECONDS


async def build_server(config: ExecutorConfig, listen: str = "127.0.0.1:0") -> Server:
    """The executor's server, not started; its connector channel and engine close when it stops.

    Raises ValueError when the engine settings are invalid (e.g. a bad memory limit).
    """
    channel = insecure_channel(config.connector_address)
    data_plane = GrpcDataPlane(
        channel,
        config.connector_address,
        timeout=config.stage_timeout_seconds,
        read_splits=config.read_splits,
        parquet_passthrough=config.parquet_passthrough,
    )
    engine = Engine(EngineConfig(memory_limit=config.memory_limit, spill_dir=config.spill_dir))
    runner = StageRunner(
        data_plane, executor_id=config.executor_id, slots=config.slots, engine=engine
    )
    registration = ServiceRegistration(
        SERVICE,
        MeteredExecutorServicer(runner),
        executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server,
    )

    connector_health = GrpcHealthProbe(
        config.connector_address,
        connector_service_pb2.DESCRIPTOR.services_by_name["ConnectorService"].full_name,
    )
    SLOTS.set(config.slots)

    async def close_channel() -> None:
        await channel.close()
        await connector_health.close()

    return Server(
        [registration],
        listen=listen,
        on_stop=close_channel,
        metrics=MetricsEndpoint(config.metrics_listen) if config.metrics_listen else None,
        health_checks={"connector": connector_health},
        health_interval=config.health_interval,
        health_max_interval=config.health_max_interval,
    )

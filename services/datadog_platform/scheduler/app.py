"""Scheduler server factory: store, run engine, schedules, clients and servicer wired together."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field

from datadog_platform.api.connector.v1 import connector_service_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2, scheduler_service_pb2_grpc
from datadog_platform.core.health import (
    HEALTH_INTERVAL_SECONDS,
    HEALTH_MAX_INTERVAL_SECONDS,
    GrpcHealthProbe,
    HealthCheck,
)
from datadog_platform.core.logging import get_logger
from datadog_platform.core.metrics import MetricsEndpoint
from datadog_platform.core.server import Server, ServiceRegistration
from datadog_platform.scheduler.backfills import BackfillManager
from datadog_platform.scheduler.connector_client import ConnectorClient
from datadog_platform.scheduler.executor_client import ExecutorDispatcher
from datadog_platform.scheduler.metrics import MeteredDispatcher, runs_refresher
from datadog_platform.scheduler.pipelines import PipelineRegistry
from datadog_platform.scheduler.runs import RunManager
from datadog_platform.scheduler.schedules import ScheduleTicker
from datadog_platform.scheduler.servicer import SchedulerServicer
from datadog_platform.scheduler.store import Store, open_store

log = get_logger(__name__)


def default_instance_id() -> str:
    """A scheduler instance id unique across restarts: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class SchedulerConfig:
    """Where the scheduler keeps its state, which services it talks to, and its limits.

    ``store``: a SQLite file path (or ``sqlite:///path``) or a ``postgresql://`` URL.
    """

    store: str
    executor_address: str
    connector_address: str
    instance_id: str = field(default_factory=default_instance_id)
    #: How long a scheduler's hold on a run lasts without renewal (HA on PostgreSQL).
    lease_seconds: float = 10.0
    #: Stages this scheduler dispatches at once, over all runs (default: one
    #: executor's default slots; raise it with the executor replicas).
    max_parallel_stages: int = 16
    #: How often schedules and backfills are looked at, at most.
    tick_interval: float = 1.0
    #: ``host:port`` of the Prometheus endpoint ("" disables it; port 0 picks one).
    metrics_listen: str = ""
    #: How often health checks the store and the connector service (backing off to
    #: ``health_max_interval`` while one is down).
    health_interval: float = HEALTH_INTERVAL_SECONDS
    health_max_interval: float = HEALTH_MAX_INTERVAL_SECONDS


async def build_server(config: SchedulerConfig, listen: str = "127.0.0.1:0") -> Server:
    """A scheduler server, not yet started.

    Opens (and migrates) the store, adopts the runs left unfinished (by a previous
    process, or by a dead peer once its lease expired) and starts the schedule
    ticker right away; stopping the server stops the drivers (releasing their runs to
    peers or the next start) and closes the store and channels.
    """
    store = await open_store(config.store)
    dispatcher = ExecutorDispatcher(config.executor_address)
    connector = ConnectorClient(config.connector_address)
    connector_health = GrpcHealthProbe(
        config.connector_address,
        connector_service_pb2.DESCRIPTOR.services_by_name["ConnectorService"].full_name,
    )
    runs = RunManager(
        store,
        MeteredDispatcher(dispatcher),
        instance_id=config.instance_id,
        lease_seconds=config.lease_seconds,
        max_parallel_stages=config.max_parallel_stages,
    )
    backfills = BackfillManager(store, runs)
    ticker = ScheduleTicker(store, runs, backfills=backfills, interval=config.tick_interval)

    async def on_stop() -> None:
        await ticker.close()
        await runs.close()
        await dispatcher.close()
        await connector.close()
        await connector_health.close()
        await store.close()

    servicer = SchedulerServicer(
        PipelineRegistry(store, connector), runs, backfills, connector, executor=dispatcher
    )
    server = Server(
        [
            ServiceRegistration(
                scheduler_service_pb2.DESCRIPTOR.services_by_name["SchedulerService"],
                servicer,
                scheduler_service_pb2_grpc.add_SchedulerServiceServicer_to_server,
            )
        ],
        listen=listen,
        on_stop=on_stop,
        metrics=(
            MetricsEndpoint(config.metrics_listen, [runs_refresher(store)])
            if config.metrics_listen
            else None
        ),
        health_checks={"store": _store_check(store), "connector": connector_health},
        health_interval=config.health_interval,
        health_max_interval=config.health_max_interval,
    )
    try:
        await runs.start()
        ticker.start()
    except BaseException:
        await on_stop()
        raise
    log.info("scheduler.started", instance_id=config.instance_id, store=store.backend)
    return server


def _store_check(store: Store) -> HealthCheck:
    """Health check: the store answers a trivial query (its schema version)."""

    async def check() -> str | None:
        await store.schema_version()
        return None

    return check

"""Scheduler server factory: store, run manager, clients and servicer wired together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datadog_platform.api.scheduler.v1 import scheduler_service_pb2, scheduler_service_pb2_grpc
from datadog_platform.core.logging import get_logger
from datadog_platform.core.server import Server, ServiceRegistration
from datadog_platform.scheduler.connector_client import ConnectorClient
from datadog_platform.scheduler.executor_client import ExecutorDispatcher
from datadog_platform.scheduler.pipelines import PipelineRegistry
from datadog_platform.scheduler.runs import RunManager
from datadog_platform.scheduler.servicer import SchedulerServicer
from datadog_platform.scheduler.store import Store

log = get_logger(__name__)


@dataclass
class SchedulerConfig:
    """Where the scheduler keeps its state and which services it talks to."""

    db_path: Path
    executor_address: str
    connector_address: str


async def build_server(config: SchedulerConfig, listen: str = "127.0.0.1:0") -> Server:
    """A scheduler server, not yet started.

    Opens (and migrates) the store and resumes the runs a previous process left
    unfinished right away; stopping the server stops the runs' drivers (they resume
    on the next start) and closes the store and channels.
    """
    store = await Store.open(Path(config.db_path))
    dispatcher = ExecutorDispatcher(config.executor_address)
    connector = ConnectorClient(config.connector_address)
    runs = RunManager(store, dispatcher)

    async def on_stop() -> None:
        await runs.close()
        await dispatcher.close()
        await connector.close()
        await store.close()

    servicer = SchedulerServicer(PipelineRegistry(store), runs, connector)
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
    )
    try:
        resumed = await runs.resume()
    except BaseException:
        await on_stop()
        raise
    if resumed:
        log.info("runs.resumed", count=resumed)
    return server

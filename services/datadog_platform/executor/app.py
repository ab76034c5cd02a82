"""Assembly of the executor service: configuration, the connector channel, the server."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from datadog_platform.api.executor.v1 import executor_service_pb2, executor_service_pb2_grpc
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.server import Server, ServiceRegistration
from datadog_platform.executor.data_plane import GrpcDataPlane
from datadog_platform.executor.servicer import ExecutorServicer
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


async def build_server(config: ExecutorConfig, listen: str = "127.0.0.1:0") -> Server:
    """The executor's server, not started; its one connector channel closes when it stops."""
    channel = insecure_channel(config.connector_address)
    data_plane = GrpcDataPlane(
        channel, config.connector_address, timeout=config.stage_timeout_seconds
    )
    runner = StageRunner(data_plane, executor_id=config.executor_id, slots=config.slots)
    registration = ServiceRegistration(
        SERVICE,
        ExecutorServicer(runner),
        executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server,
    )

    async def close_channel() -> None:
        await channel.close()

    return Server([registration], listen=listen, on_stop=close_channel)

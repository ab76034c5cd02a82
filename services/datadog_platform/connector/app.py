"""The connector service's factory: configuration in, an unstarted server out."""

from __future__ import annotations

from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.connector.config import ConnectorConfig, load_config
from datadog_platform.connector.servicer import SERVICE_DESCRIPTOR, ConnectorServicer
from datadog_platform.core.server import Server, ServiceRegistration

__all__ = ["ConnectorConfig", "build_server", "load_config"]


async def build_server(config: ConnectorConfig, listen: str = "127.0.0.1:0") -> Server:
    """A connector server for ``config`` on ``listen`` (port 0 binds a free port); not started."""
    registration = ServiceRegistration(
        SERVICE_DESCRIPTOR,
        ConnectorServicer(config),
        pb_grpc.add_ConnectorServiceServicer_to_server,
    )
    return Server([registration], listen=listen)

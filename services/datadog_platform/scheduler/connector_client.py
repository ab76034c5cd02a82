"""The connector service as the scheduler sees it: the catalog of connections."""

from __future__ import annotations

import grpc

from datadog_platform.api.common.v1 import connection_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2, connector_service_pb2_grpc
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.errors import unavailable
from datadog_platform.core.status import domain_error_of
from datadog_platform.scheduler.domain import CONNECTOR_UNAVAILABLE

DEFAULT_TIMEOUT_SECONDS = 10.0


class ConnectorClient:
    """Client of the connector service at ``address``."""

    def __init__(self, address: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._address = address
        self._timeout = timeout
        self._channel = insecure_channel(address)
        self._stub = connector_service_pb2_grpc.ConnectorServiceStub(self._channel)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def list_connections(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[connection_pb2.Connection], str]:
        """One page of the connector's connections and the next page's token.

        Raises UNAVAILABLE (CONNECTOR_UNAVAILABLE) if the connector cannot be reached
        in time; other failures keep the connector's own code and reason.
        """
        request = connector_service_pb2.ListConnectionsRequest(
            page_size=page_size, page_token=page_token
        )
        try:
            response = await self._stub.ListConnections(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise unavailable(
                    CONNECTOR_UNAVAILABLE,
                    f"the connector service at {self._address} is unavailable: {exc.details()}",
                ) from None
            raise domain_error_of(exc) from None
        return list(response.connections), response.next_page_token

"""The connector service as the scheduler sees it: the catalog of connections, their
tests, and the schemas of sources.

Every call has a deadline (the client's default, or less when the caller has less
time left). UNAVAILABLE or DEADLINE_EXCEEDED from the connector becomes UNAVAILABLE
(CONNECTOR_UNAVAILABLE); any other failure keeps the connector's own code, reason and
field violations.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from datadog_platform.api.common.v1 import connection_pb2, step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2, connector_service_pb2_grpc
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.errors import unavailable
from datadog_platform.core.status import domain_error_of
from datadog_platform.scheduler.domain import CONNECTOR_UNAVAILABLE

DEFAULT_TIMEOUT_SECONDS = 10.0

T = TypeVar("T")


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
        """One page of the connector's connections and the next page's token."""
        request = connector_service_pb2.ListConnectionsRequest(
            page_size=page_size, page_token=page_token
        )
        response = await self._call(self._stub.ListConnections, request, None)
        return list(response.connections), response.next_page_token

    async def test_connection(
        self, name: str, *, time_left: float | None = None
    ) -> connector_service_pb2.TestConnectionResponse:
        """The connector's verdict on the configured connection ``name`` (a failed test
        is a response with ``ok`` false, not an error; an unknown name is NOT_FOUND)."""
        request = connector_service_pb2.TestConnectionRequest(name=name)
        return await self._call(self._stub.TestConnection, request, time_left)

    async def describe_source(
        self, source: step_pb2.SourceSpec, *, time_left: float | None = None
    ) -> connector_service_pb2.DescribeSourceResponse:
        """The Arrow schema (IPC-encoded) and row estimate of ``source``."""
        request = connector_service_pb2.DescribeSourceRequest(source=source)
        return await self._call(self._stub.DescribeSource, request, time_left)

    async def _call(
        self, method: Callable[..., Awaitable[T]], request: object, time_left: float | None
    ) -> T:
        # The caller's remaining time (its own deadline) caps ours.
        deadline = self._timeout if time_left is None else max(0.0, min(time_left, self._timeout))
        try:
            return await method(request, timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise unavailable(
                    CONNECTOR_UNAVAILABLE,
                    f"the connector service at {self._address} is unavailable: {exc.details()}",
                ) from None
            raise domain_error_of(exc) from None

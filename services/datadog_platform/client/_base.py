"""What ``Client`` and ``AsyncClient`` share: the constructor (settings, call metadata,
channel and stub) and the ``address``/``timeout`` properties. Each subclass opens its own
kind of channel and makes the calls."""

from __future__ import annotations

import os
from typing import Generic, TypeVar

from datadog_platform.api.scheduler.v1 import scheduler_service_pb2_grpc
from datadog_platform.client.connection import DEFAULT_TIMEOUT, ConnectionSettings, Metadata

ChannelT = TypeVar("ChannelT")

#: Pause between two watches of a run whose stream ended before it finished.
REWATCH_SECONDS = 0.2


class BaseClient(Generic[ChannelT]):
    """A client of ``SchedulerService`` over one channel of type ``ChannelT``."""

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tls: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        server_name: str | None = None,
        token: str | None = None,
        metadata: Metadata | None = None,
        settings: ConnectionSettings | None = None,
    ) -> None:
        self.settings = settings or ConnectionSettings.create(
            address,
            timeout=timeout,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            server_name=server_name,
            token=token,
            metadata=metadata,
        )
        self._metadata = self.settings.call_metadata()
        self._channel = self._open_channel(self.settings)
        #: The generated stub, for anything the methods do not cover.
        self.stub = scheduler_service_pb2_grpc.SchedulerServiceStub(self._channel)

    @staticmethod
    def _open_channel(settings: ConnectionSettings) -> ChannelT:
        raise NotImplementedError

    @property
    def address(self) -> str:
        """The scheduler's address."""
        return self.settings.address

    @property
    def timeout(self) -> float:
        """The default deadline of a call, in seconds."""
        return self.settings.timeout

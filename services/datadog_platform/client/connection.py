"""Connection settings shared by ``Client`` and ``AsyncClient``: address, TLS, token,
metadata and the default deadline; and the channels built from them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

#: Where the scheduler listens unless told otherwise (env ``DATADOG_SERVER`` overrides).
DEFAULT_ADDRESS = "127.0.0.1:50051"
#: Deadline of each unary call, in seconds.
DEFAULT_TIMEOUT = 10.0
#: Deadline of a whole ``watch_run``/``wait_for_run``: runs may take long.
DEFAULT_WATCH_TIMEOUT = 86400.0
# The services accept messages up to 64 MiB (core.server.MAX_MESSAGE_BYTES); a client
# with gRPC's 4 MiB default could not read a large plan or run.
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_CHANNEL_OPTIONS: tuple[tuple[str, object], ...] = (
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
)

Metadata = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach the scheduler.

    TLS is used when ``tls`` is true or any of ``ca_file``, ``cert_file``/``key_file``
    (client certificate for mutual TLS) is given; without ``ca_file`` the system roots
    verify the server. ``server_name`` overrides the name checked against its
    certificate. ``token`` is sent as ``authorization: Bearer <token>`` on every call,
    with ``metadata`` (extra headers).
    """

    address: str = DEFAULT_ADDRESS
    timeout: float = DEFAULT_TIMEOUT
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    token: str | None = None
    metadata: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @classmethod
    def create(
        cls,
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
    ) -> ConnectionSettings:
        """Validated settings; ``address`` defaults to ``$DATADOG_SERVER`` or 127.0.0.1:50051."""
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if (cert_file is None) != (key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate)")
        pairs = tuple(metadata.items() if isinstance(metadata, Mapping) else metadata or ())
        for key, _ in pairs:
            # gRPC rejects upper-case keys at call time with an obscure error.
            if key != key.lower():
                raise ValueError(f"metadata keys must be lower case, got {key!r}")
        return cls(
            address=address or os.environ.get("DATADOG_SERVER") or DEFAULT_ADDRESS,
            timeout=float(timeout),
            tls=tls,
            ca_file=os.fspath(ca_file) if ca_file is not None else None,
            cert_file=os.fspath(cert_file) if cert_file is not None else None,
            key_file=os.fspath(key_file) if key_file is not None else None,
            server_name=server_name,
            token=token or None,
            metadata=pairs,
        )

    @property
    def uses_tls(self) -> bool:
        """Whether the channel is encrypted."""
        return self.tls or self.ca_file is not None or self.cert_file is not None

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        """Headers sent with every call."""
        token = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        return (*token, *self.metadata)

    def channel_options(self) -> list[tuple[str, object]]:
        options = list(_CHANNEL_OPTIONS)
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return options

    def credentials(self) -> grpc.ChannelCredentials:
        """TLS credentials from the files (read now, so a missing file fails early)."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file),
            private_key=_read(self.key_file),
            certificate_chain=_read(self.cert_file),
        )

    def channel(self) -> grpc.Channel:
        """A blocking channel."""
        if self.uses_tls:
            return grpc.secure_channel(
                self.address, self.credentials(), options=self.channel_options()
            )
        return grpc.insecure_channel(self.address, options=self.channel_options())

    def aio_channel(self) -> grpc.aio.Channel:
        """An asyncio channel."""
        if self.uses_tls:
            return grpc.aio.secure_channel(
                self.address, self.credentials(), options=self.channel_options()
            )
        return grpc.aio.insecure_channel(self.address, options=self.channel_options())


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path is not None else None

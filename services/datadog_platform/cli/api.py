"""The CLI's link to the scheduler: a :class:`datadog_platform.client.Client` (the Python
SDK) built from the command's connection settings. Commands call the SDK directly; its
failures arrive as :class:`~datadog_platform.client.ApiError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from datadog_platform.cli.errors import CliError, ExitCode
from datadog_platform.client import ApiError, Client

#: The name the CLI's modules use for the client they are given.
SchedulerClient = Client

__all__ = ["ApiError", "SchedulerClient", "connect"]


class ConnectionFlags(Protocol):
    """What ``connect`` reads (``cli.settings.Settings`` has it)."""

    server: str
    timeout: float
    tls: bool
    tls_ca: str
    tls_cert: str
    tls_key: str
    token: str


def connect(settings: ConnectionFlags) -> Client:
    """A client for the resolved flags: address, deadline, TLS files and bearer token.

    An unreadable TLS file exits 4 and a certificate without its key 2, before any call.
    """
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise CliError(
            "error: --tls-cert and --tls-key go together (mutual TLS needs both)",
            ExitCode.USAGE,
        )
    try:
        return Client(
            settings.server,
            timeout=settings.timeout,
            tls=settings.tls,
            ca_file=_path(settings.tls_ca),
            cert_file=_path(settings.tls_cert),
            key_file=_path(settings.tls_key),
            token=settings.token or None,
        )
    except OSError as exc:
        raise CliError(
            f"error: cannot read TLS file {exc.filename}: {exc.strerror or exc}",
            ExitCode.INVALID_ARGUMENT,
        ) from None


def _path(value: str) -> str | None:
    return str(Path(value).expanduser()) if value else None

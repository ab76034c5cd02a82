"""Client channels between services: one long-lived channel per peer."""

from __future__ import annotations

import grpc

from datadog_platform.core.server import CHANNEL_OPTIONS


def insecure_channel(address: str) -> grpc.aio.Channel:
    """An aio channel with the platform's message-size limits."""
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)

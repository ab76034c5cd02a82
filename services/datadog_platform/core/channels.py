"""Client channels between services: one long-lived channel per peer."""

from __future__ import annotations

import grpc

from datadog_platform.core.server import CHANNEL_OPTIONS

# Replicas behind a headless Service (``dns:///executor:50052``) resolve to several
# addresses; gRPC's default pick_first would send every call to the first one.
CLIENT_OPTIONS: tuple[tuple[str, object], ...] = (
    *CHANNEL_OPTIONS,
    ("grpc.lb_policy_name", "round_robin"),
)


def insecure_channel(address: str) -> grpc.aio.Channel:
    """An aio channel with the platform's message-size limits, balancing calls
    round-robin over every address the target resolves to."""
    return grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS)

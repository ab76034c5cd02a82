"""The record-batch frames of ``ConnectorService``'s ``Read`` and ``Write`` streams.

Both ends of each stream (the connector service and the executor's data plane) build
and parse these frames with ``arrow_frames``; the field numbers and parsers live here
once so the two sides cannot drift apart.
"""

from __future__ import annotations

from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.core.arrow_frames import BatchFrame, parse_frame

#: ``ReadResponse.record_batch``: the field ``Read`` frames carry batches in.
READ_BATCH_FIELD = pb.ReadResponse.DESCRIPTOR.fields_by_name["record_batch"].number
#: ``WriteRequest.record_batch``: the field ``Write`` frames carry batches in.
WRITE_BATCH_FIELD = pb.WriteRequest.DESCRIPTOR.fields_by_name["record_batch"].number


def parse_read_response(data: bytes) -> pb.ReadResponse | BatchFrame:
    """A ``Read`` stream message; record batches are parsed without copying their body."""
    return parse_frame(data, READ_BATCH_FIELD, pb.ReadResponse.FromString)


def parse_write_request(data: bytes) -> pb.WriteRequest | BatchFrame:
    """A ``Write`` stream message; record batches are parsed without copying their body."""
    return parse_frame(data, WRITE_BATCH_FIELD, pb.WriteRequest.FromString)

"""The data frames of ``ConnectorService``'s ``Read`` and ``Write`` streams.

Both ends of each stream (the connector service and the executor's data plane) build
and parse the record-batch frames with ``arrow_frames``, and the executor parses the
Parquet row-group frames here; the field numbers and parsers live here once so the
two sides cannot drift apart.
"""

from __future__ import annotations

from typing import NamedTuple

from datadog_platform.api.common.v1 import arrow_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.core.arrow_frames import (
    BatchFrame,
    embedded_start,
    lift_bytes_field,
    parse_frame,
)

#: ``ReadResponse.record_batch``: the field ``Read`` frames carry batches in.
READ_BATCH_FIELD = pb.ReadResponse.DESCRIPTOR.fields_by_name["record_batch"].number
#: ``WriteRequest.record_batch``: the field ``Write`` frames carry batches in.
WRITE_BATCH_FIELD = pb.WriteRequest.DESCRIPTOR.fields_by_name["record_batch"].number


_ROW_GROUP_FIELD = pb.ReadResponse.DESCRIPTOR.fields_by_name["parquet_row_group"].number
_ROW_GROUP_DATA_FIELD = arrow_pb2.ParquetRowGroup.DESCRIPTOR.fields_by_name["data"].number


class RowGroupFrame(NamedTuple):
    """A received ``parquet_row_group`` frame whose data is a view into the message bytes."""

    #: The frame's other fields (its ``data`` left empty).
    header: arrow_pb2.ParquetRowGroup
    data: memoryview


def parse_read_response(data: bytes) -> pb.ReadResponse | BatchFrame | RowGroupFrame:
    """A ``Read`` stream message; record batches and Parquet row groups are parsed
    without copying their bytes (protobuf would copy them twice)."""
    start = embedded_start(data, _ROW_GROUP_FIELD)
    if start is not None:
        lifted = lift_bytes_field(data, _ROW_GROUP_DATA_FIELD, start)
        if lifted is not None:
            rest, value = lifted
            return RowGroupFrame(arrow_pb2.ParquetRowGroup.FromString(rest), value)
    return parse_frame(data, READ_BATCH_FIELD, pb.ReadResponse.FromString)


def parse_write_request(data: bytes) -> pb.WriteRequest | BatchFrame:
    """A ``Write`` stream message; record batches are parsed without copying their body."""
    return parse_frame(data, WRITE_BATCH_FIELD, pb.WriteRequest.FromString)

"""Decoding whole connector Read streams in tests."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.core.arrow_frames import StreamCounter, decode_batch, decode_schema


def table_of(frames: Sequence[pb.ReadResponse]) -> pa.Table:
    """The data of a complete Read stream: schema first, batches, completion totals checked."""
    assert frames[0].WhichOneof("frame") == "schema"
    assert frames[-1].WhichOneof("frame") == "complete"
    assert all(f.WhichOneof("frame") == "record_batch" for f in frames[1:-1])
    schema = decode_schema(frames[0].schema)
    counter = StreamCounter()
    batches = [decode_batch(f.record_batch, schema, counter) for f in frames[1:-1]]
    counter.check(frames[-1].complete)
    return pa.Table.from_batches(batches, schema=schema)

"""File extensions that imply a format or a compression codec.

One table for the scheduler (format inference when a pipeline is validated) and
the file connector (reads and writes), so the two never disagree.
"""

from __future__ import annotations

from datadog_platform.api.common.v1 import step_pb2

FORMAT_BY_EXTENSION: dict[str, step_pb2.FileFormat.ValueType] = {
    ".csv": step_pb2.FILE_FORMAT_CSV,
    ".parquet": step_pb2.FILE_FORMAT_PARQUET,
    ".pq": step_pb2.FILE_FORMAT_PARQUET,
    ".json": step_pb2.FILE_FORMAT_JSON,
    ".ndjson": step_pb2.FILE_FORMAT_NDJSON,
    ".jsonl": step_pb2.FILE_FORMAT_NDJSON,
}
# A codec suffix after a text format's extension ("orders.csv.gz").
COMPRESSION_BY_EXTENSION: dict[str, step_pb2.FileCompression.ValueType] = {
    ".gz": step_pb2.FILE_COMPRESSION_GZIP,
    ".zst": step_pb2.FILE_COMPRESSION_ZSTD,
}

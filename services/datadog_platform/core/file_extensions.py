"""File extensions that imply a format or a compression codec.

One table for the scheduler (format inference when a pipeline is validated), the
executor (which sources are Parquet) and the file connector (reads and writes), so
they never disagree.
"""

from __future__ import annotations

from pathlib import PurePosixPath

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

_TEXT_FORMATS = frozenset(
    {step_pb2.FILE_FORMAT_CSV, step_pb2.FILE_FORMAT_JSON, step_pb2.FILE_FORMAT_NDJSON}
)


def infer_format(file_path: str) -> int:
    """The file format implied by ``file_path``'s extension (``.csv.gz`` too), or UNSPECIFIED."""
    pure = PurePosixPath(file_path.lower())
    if pure.suffix in COMPRESSION_BY_EXTENSION:
        inner = FORMAT_BY_EXTENSION.get(
            pure.with_suffix("").suffix, step_pb2.FILE_FORMAT_UNSPECIFIED
        )
        # Parquet compresses inside the file, so "x.parquet.gz" is not a Parquet file.
        return inner if inner in _TEXT_FORMATS else step_pb2.FILE_FORMAT_UNSPECIFIED
    return FORMAT_BY_EXTENSION.get(pure.suffix, step_pb2.FILE_FORMAT_UNSPECIFIED)


def infer_compression(file_path: str) -> int:
    """The codec implied by a ``.gz``/``.zst`` suffix, or UNSPECIFIED."""
    suffix = PurePosixPath(file_path.lower()).suffix
    return COMPRESSION_BY_EXTENSION.get(suffix, step_pb2.FILE_COMPRESSION_UNSPECIFIED)

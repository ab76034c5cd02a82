"""The built-in file connectors: ``file`` (CSV/JSON/NDJSON/Parquet) and ``artifact``.

The registry imports :data:`FILE_CONNECTOR_TYPE` and :data:`ARTIFACT_CONNECTOR_TYPE`
from here. The implementation is split by concern:

- ``file_paths``: roots (local or S3 through ``pyarrow.fs``), path confinement, listing;
- ``file_formats``: format and compression inference, reading one file, format writers;
- ``file_predicates``: pushed-down predicates as dataset filter expressions;
- ``file_io``: blocking reads/writes driven from asyncio, atomic single-file writes;
- ``file_writers``: single-file and hive-partitioned writes, the APPEND ledger;
- ``file_connector``: the ``file`` type; ``file_artifacts``: the ``artifact`` type.
"""

from __future__ import annotations

from datadog_platform.connector.file_artifacts import (
    ARTIFACT_CONNECTOR_TYPE,
    ArtifactConnection,
    ArtifactConnectorType,
)
from datadog_platform.connector.file_connector import (
    FILE_CONNECTOR_TYPE,
    FileConnection,
    FileConnectorType,
)
from datadog_platform.connector.file_formats import FileFormat
from datadog_platform.connector.file_paths import FileRoot, is_temp_name

__all__ = [
    "ARTIFACT_CONNECTOR_TYPE",
    "FILE_CONNECTOR_TYPE",
    "ArtifactConnection",
    "ArtifactConnectorType",
    "FileConnection",
    "FileConnectorType",
    "FileFormat",
    "FileRoot",
    "is_temp_name",
]

"""The transform catalogue of the executor: one typed transform per ``TransformSpec`` kind.

``registry.TRANSFORM_KINDS`` describes each kind and how it runs: compiled to a
DuckDB SELECT over its inputs, or as a Python batch operator (cast, check).
"""

from datadog_platform.executor.transforms.errors import TRANSFORM_ERROR, TransformError

__all__ = ["TRANSFORM_ERROR", "TransformError"]

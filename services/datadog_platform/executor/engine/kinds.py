"""The transform registry the engine compiles against (``executor.transforms.registry``).

The engine relies only on the shared interface: ``TRANSFORM_KINDS`` (name →
``TransformKind`` with ``min_inputs``, ``max_inputs``, ``compile_sql``,
``make_operator``) and ``SqlContext``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from datadog_platform.executor.transforms.registry import TRANSFORM_KINDS, SqlContext


def transform_kinds() -> Mapping[str, Any]:
    """Transform kind name → ``TransformKind``."""
    return TRANSFORM_KINDS


def sql_context(
    step: str, spec: Any, inputs: tuple[str, ...], schemas: tuple[pa.Schema, ...]
) -> SqlContext:
    """The ``SqlContext`` of one step."""
    return SqlContext(step=step, spec=spec, inputs=inputs, schemas=schemas)

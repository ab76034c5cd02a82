"""The one error type of the transform catalogue."""

from __future__ import annotations

from datadog_platform.core.errors import DomainError, ErrorCode

TRANSFORM_ERROR = "TRANSFORM_ERROR"


class TransformError(DomainError):
    """A transform that cannot bind or run: names the step, the field, the column and expression.

    ``field`` is the path of the offending parameter inside the ``TransformSpec``
    (``"derive.columns[1].expr"``), so the caller can prefix the step's own path
    (``pipeline.steps[3].transform.``) to make a field violation of it.
    """

    def __init__(self, step: str, field: str, message: str) -> None:
        super().__init__(
            ErrorCode.INVALID_ARGUMENT,
            TRANSFORM_ERROR,
            f"step {step!r}: {message}",
            {"step": step, "field": field},
        )
        self.step = step
        self.field = field

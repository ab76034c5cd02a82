"""Pipeline registry: validate, store, version and page through pipelines."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import FieldViolation, invalid_argument
from datadog_platform.core.page_tokens import decode_page_token, encode_page_token
from datadog_platform.scheduler.domain import (
    INVALID_PAGE_SIZE,
    INVALID_REQUEST,
    RegisteredPipeline,
    utc_now,
)
from datadog_platform.scheduler.planner import plan_pipeline
from datadog_platform.scheduler.store import IdempotencyKey, Store
from datadog_platform.scheduler.validation import check_pipeline, check_request_id

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class PipelineRegistry:
    """The pipeline half of the public API, on top of the store."""

    def __init__(self, store: Store, clock: Callable[[], datetime] = utc_now) -> None:
        self._store = store
        self._clock = clock

    async def create(self, spec: pipeline_pb2.Pipeline, request_id: str = "") -> RegisteredPipeline:
        """Validate ``spec`` fully and store it as version 1 (output-only fields ignored)."""
        check_request_id(request_id)
        clean = pipeline_pb2.Pipeline()
        clean.CopyFrom(spec)
        for name in ("version", "create_time", "update_time"):
            clean.ClearField(name)
        check_pipeline(clean)
        key = None
        if request_id:
            fingerprint = hashlib.sha256(clean.SerializeToString(deterministic=True)).hexdigest()
            key = IdempotencyKey("CreatePipeline", request_id, fingerprint)
        stored = await self._store.create_pipeline(clean, self._clock(), key)
        return RegisteredPipeline(stored, plan_pipeline(stored))

    async def get(self, name: str, version: int = 0) -> RegisteredPipeline:
        """A pipeline version (0 = latest) and its plan."""
        if not name:
            raise invalid_argument(
                INVALID_REQUEST, "name is required", [FieldViolation("name", "is required")]
            )
        if version < 0:
            raise invalid_argument(
                INVALID_REQUEST,
                "version must be positive, or 0 for the latest",
                [FieldViolation("version", "must be positive, or 0 for the latest")],
            )
        stored = await self._store.get_pipeline(name, version)
        return RegisteredPipeline(stored, plan_pipeline(stored))

    async def list(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[pipeline_pb2.Pipeline], str]:
        """One page of the latest versions, by name, and the next page's token ("" at the end)."""
        if page_size < 0:
            raise invalid_argument(
                INVALID_PAGE_SIZE,
                "page_size must not be negative",
                [FieldViolation("page_size", "must not be negative")],
            )
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = decode_page_token(page_token, "ListPipelines") if page_token else ""
        # One extra row tells whether another page follows without a second query.
        rows = await self._store.list_pipelines(size + 1, after)
        page = rows[:size]
        next_token = encode_page_token("ListPipelines", page[-1].name) if len(rows) > size else ""
        return page, next_token

"""Pipeline registry: validate, store, version, pause, delete and page through pipelines.

Every pipeline this module returns has its output-only fields set, ``next_run_time``
included: when the schedule of the latest version fires next (unset for a pipeline
without a schedule, a paused one, one whose schedule has ended, and older versions).

Validation is :func:`validation.pipeline_violations` (steps, graph, templates, params,
schedule) plus, when the connector service can be asked, whether every connection a
step names is configured there. A connector that cannot be reached does not block a
pipeline: the check is skipped with a warning and an unknown connection then fails the
run (CONNECTION_NOT_FOUND) instead.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from datadog_platform.api.common.v1 import connection_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.connection_refs import connection_references
from datadog_platform.core.errors import DomainError, FieldViolation, invalid_argument
from datadog_platform.core.logging import get_logger
from datadog_platform.core.page_tokens import decode_page_token, encode_page_token
from datadog_platform.scheduler import cron
from datadog_platform.scheduler.domain import (
    INVALID_PAGE_SIZE,
    INVALID_PIPELINE_SPEC,
    INVALID_REQUEST,
    PlannedStage,
    RegisteredPipeline,
    utc_now,
)
from datadog_platform.scheduler.planner import PlanError, plan_pipeline
from datadog_platform.scheduler.store import IdempotencyKey, Store
from datadog_platform.scheduler.validation import check_request_id, pipeline_violations

if TYPE_CHECKING:
    from datadog_platform.scheduler.store import DeleteResult

log = get_logger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: How long the connection check may wait for the connector service, in seconds.
CONNECTION_CHECK_SECONDS = 3.0
#: Fields a client may send but the registry sets (ignored on input).
OUTPUT_ONLY_FIELDS = ("version", "create_time", "update_time", "paused", "next_run_time")
#: The connection an empty ``file`` connection name stands for.
_CONNECTIONS_PAGE_SIZE = 1000
_MAX_NAMES_IN_MESSAGE = 10


class ConnectionCatalog(Protocol):
    """Where the configured connections can be listed (the connector service's client)."""

    async def list_connections(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[connection_pb2.Connection], str]:
        """One page of connections and the next page's token ("" at the end)."""
        ...


@dataclass(frozen=True)
class Validation:
    """The verdict on a spec: its problems, or (when it has none) its plan."""

    violations: tuple[FieldViolation, ...]
    plan: tuple[PlannedStage, ...] = ()

    @property
    def valid(self) -> bool:
        """Whether the spec has no problem."""
        return not self.violations


class PipelineRegistry:
    """The pipeline half of the public API, on top of the store."""

    def __init__(
        self,
        store: Store,
        connections: ConnectionCatalog | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        connection_check_timeout: float = CONNECTION_CHECK_SECONDS,
    ) -> None:
        self._store = store
        self._connections = connections
        self._clock = clock
        self._check_timeout = connection_check_timeout

    async def create(self, spec: pipeline_pb2.Pipeline, request_id: str = "") -> RegisteredPipeline:
        """Validate ``spec`` fully and store it as version 1 (output-only fields ignored).

        INVALID_ARGUMENT (INVALID_PIPELINE_SPEC) with every problem; ALREADY_EXISTS if
        the name is taken. A ``request_id`` seen before returns the first result.
        """
        check_request_id(request_id)
        clean = without_output_fields(spec)
        await self._check(clean)
        key = _idempotency_key("CreatePipeline", request_id, clean)
        stored = await self._store.create_pipeline(clean, self._clock(), key)
        return self._registered(stored)

    async def update(self, spec: pipeline_pb2.Pipeline, request_id: str = "") -> RegisteredPipeline:
        """Validate ``spec`` and store it as the next version of the pipeline it names.

        Runs already created keep their version. NOT_FOUND if the pipeline does not
        exist; INVALID_ARGUMENT as for :meth:`create`.
        """
        check_request_id(request_id)
        clean = without_output_fields(spec)
        await self._check(clean)
        key = _idempotency_key("UpdatePipeline", request_id, clean)
        stored = await self._store.update_pipeline(clean, self._clock(), key)
        return self._registered(stored)

    async def validate(self, spec: pipeline_pb2.Pipeline) -> Validation:
        """Every problem of ``spec``, or its plan; stores nothing and never raises for the spec."""
        clean = without_output_fields(spec)
        violations = await self._violations(clean)
        if violations:
            return Validation(tuple(violations))
        try:
            return Validation((), plan_pipeline(clean))
        except PlanError as exc:  # validation should have caught it; still, say so
            return Validation((FieldViolation("pipeline.steps", str(exc)),))

    async def delete(self, name: str) -> DeleteResult:
        """Delete a pipeline with its versions, runs, backfills and watermarks.

        FAILED_PRECONDITION (PIPELINE_HAS_ACTIVE_RUNS) while a run of it is unfinished.
        """
        _require_name(name)
        result = await self._store.delete_pipeline(name)
        log.info("pipeline.deleted", pipeline=name, versions=result.versions, runs=result.runs)
        return result

    async def set_paused(self, name: str, paused: bool) -> pipeline_pb2.Pipeline:
        """Pause (or unpause) the pipeline's schedule; returns its latest version."""
        _require_name(name)
        stored = await self._store.set_paused(name, paused, self._clock())
        log.info("pipeline.paused" if paused else "pipeline.unpaused", pipeline=name)
        return self._with_next_run(stored)

    async def get(self, name: str, version: int = 0) -> RegisteredPipeline:
        """A pipeline version (0 = latest) and its plan."""
        _require_name(name)
        if version < 0:
            raise invalid_argument(
                INVALID_REQUEST,
                "version must be positive, or 0 for the latest",
                [FieldViolation("version", "must be positive, or 0 for the latest")],
            )
        stored = await self._store.get_pipeline(name, version)
        if version:
            # Only the latest version's schedule fires.
            latest = await self._store.get_pipeline(name)
            if latest.version != stored.version:
                return RegisteredPipeline(stored, plan_pipeline(stored))
        return self._registered(stored)

    # --- helpers ------------------------------------------------------------------------

    def _registered(self, stored: pipeline_pb2.Pipeline) -> RegisteredPipeline:
        return RegisteredPipeline(self._with_next_run(stored), plan_pipeline(stored))

    def _with_next_run(self, pipeline: pipeline_pb2.Pipeline) -> pipeline_pb2.Pipeline:
        """``pipeline`` (a stored latest version) with ``next_run_time`` set."""
        pipeline.ClearField("next_run_time")
        if pipeline.paused or not pipeline.schedule.cron:
            return pipeline
        try:
            when = cron.next_run_time(pipeline.schedule, self._clock())
        except cron.CronError as exc:
            # Accepted when stored; e.g. the time zone database changed since.
            log.warning("pipeline.schedule_invalid", pipeline=pipeline.name, error=str(exc))
            return pipeline
        if when is not None:
            pipeline.next_run_time.FromDatetime(when)
        return pipeline

    async def _check(self, spec: pipeline_pb2.Pipeline) -> None:
        violations = await self._violations(spec)
        if violations:
            raise invalid_spec(violations)

    async def _violations(self, spec: pipeline_pb2.Pipeline) -> list[FieldViolation]:
        violations = list(pipeline_violations(spec))
        seen = {v.field for v in violations}  # e.g. a connection name that is malformed
        violations += [v for v in await self._connection_violations(spec) if v.field not in seen]
        return violations

    async def _connection_violations(self, spec: pipeline_pb2.Pipeline) -> list[FieldViolation]:
        used = connection_references(spec)
        if not used or self._connections is None:
            return []
        try:
            async with asyncio.timeout(self._check_timeout):
                known = await self._known_connections()
        except (DomainError, TimeoutError) as exc:
            log.warning(
                "pipeline.connections_unchecked",
                pipeline=spec.name,
                error=str(exc) or "the connector service did not answer in time",
            )
            return []
        listed = ", ".join(sorted(known)[:_MAX_NAMES_IN_MESSAGE]) or "none"
        if len(known) > _MAX_NAMES_IN_MESSAGE:
            listed += ", ..."
        return [
            FieldViolation(
                path,
                f'connection "{name}" is not configured on the connector service'
                f" (configured: {listed})",
            )
            for path, name in used
            if name not in known
        ]

    async def _known_connections(self) -> set[str]:
        assert self._connections is not None
        names: set[str] = set()
        token = ""
        while True:
            page, next_token = await self._connections.list_connections(
                _CONNECTIONS_PAGE_SIZE, token
            )
            names.update(c.name for c in page)
            if not next_token or next_token == token:
                return names
            token = next_token

    # Last, so that ``list`` in the annotations above is the builtin.
    async def list(
        self,
        page_size: int = 0,
        page_token: str = "",
        *,
        tags: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
    ) -> tuple[list[pipeline_pb2.Pipeline], str]:
        """One page of the latest versions, by name, and the next page's token ("" at the end).

        Only pipelines carrying every tag of ``tags`` and every label of ``labels``.
        """
        if page_size < 0:
            raise invalid_argument(
                INVALID_PAGE_SIZE,
                "page_size must not be negative",
                [FieldViolation("page_size", "must not be negative")],
            )
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = decode_page_token(page_token, "ListPipelines") if page_token else ""
        # One extra row tells whether another page follows without a second query.
        rows = await self._store.list_pipelines(
            size + 1, after, tags=tuple(tags), labels=dict(labels or {})
        )
        page = [self._with_next_run(p) for p in rows[:size]]
        next_token = encode_page_token("ListPipelines", page[-1].name) if len(rows) > size else ""
        return page, next_token


def without_output_fields(spec: pipeline_pb2.Pipeline) -> pipeline_pb2.Pipeline:
    """A copy of ``spec`` without the fields the registry sets."""
    clean = pipeline_pb2.Pipeline()
    clean.CopyFrom(spec)
    for name in OUTPUT_ONLY_FIELDS:
        clean.ClearField(name)
    return clean


def invalid_spec(violations: Sequence[FieldViolation]) -> DomainError:
    """INVALID_ARGUMENT (INVALID_PIPELINE_SPEC) listing every problem."""
    count = len(violations)
    return invalid_argument(
        INVALID_PIPELINE_SPEC,
        f"the pipeline spec has {count} problem{'s' if count > 1 else ''}: "
        + "; ".join(f"{v.field}: {v.description}" for v in violations[:3])
        + ("; ..." if count > 3 else ""),
        violations,
    )


def _idempotency_key(
    method: str, request_id: str, clean: pipeline_pb2.Pipeline
) -> IdempotencyKey | None:
    if not request_id:
        return None
    # The spec itself: the same id with a different spec is REQUEST_ID_REUSED.
    fingerprint = hashlib.sha256(clean.SerializeToString(deterministic=True)).hexdigest()
    return IdempotencyKey(method, request_id, fingerprint)


def _require_name(name: str) -> None:
    if not name:
        raise invalid_argument(
            INVALID_REQUEST, "name is required", [FieldViolation("name", "is required")]
        )

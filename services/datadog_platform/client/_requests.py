"""Request construction shared by the sync and asyncio clients (no I/O here)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.client.errors import ApiError

M = TypeVar("M", bound=Message)


class ToProto(Protocol):
    """Anything that renders a ``Pipeline`` message, such as the builder."""

    def to_proto(self) -> pipeline_pb2.Pipeline: ...


PipelineLike = pipeline_pb2.Pipeline | ToProto | Mapping[str, Any]
RunStateLike = int | str


def message(value: Any, cls: type[M], what: str = "") -> M:
    """``value`` as a ``cls`` message: the message itself (copied) or its JSON mapping."""
    if isinstance(value, cls):
        copy = cls()
        copy.CopyFrom(value)
        return copy
    if isinstance(value, Message):
        raise TypeError(
            f"{what or cls.DESCRIPTOR.name}: expected {cls.DESCRIPTOR.full_name}, "
            f"got {value.DESCRIPTOR.full_name}"
        )
    try:
        return json_format.ParseDict(value, cls())
    except json_format.ParseError as exc:
        raise ValueError(f"{what or cls.DESCRIPTOR.name}: {exc}") from None


def pipeline(value: PipelineLike) -> pipeline_pb2.Pipeline:
    """A ``Pipeline`` message from a message, a builder or a JSON mapping (as in YAML)."""
    if hasattr(value, "to_proto"):
        return value.to_proto()  # type: ignore[union-attr]
    return message(value, pipeline_pb2.Pipeline, "pipeline")


def set_params(target: Any, params: Mapping[str, Any] | None) -> None:
    """Fill a ``map<string, Value>`` field from JSON values."""
    for name, value in (params or {}).items():
        target[name].CopyFrom(json_format.ParseDict(value, struct_pb2.Value()))


def run_state(state: RunStateLike) -> int:
    """A ``RunState`` from its number or name ("FAILED" or "RUN_STATE_FAILED")."""
    if isinstance(state, int):
        return state
    name = state.upper()
    return run_pb2.RunState.Value(name if name.startswith("RUN_STATE_") else f"RUN_STATE_{name}")


def create_pipeline(spec: PipelineLike, request_id: str) -> pb.CreatePipelineRequest:
    return pb.CreatePipelineRequest(pipeline=pipeline(spec), request_id=request_id)


def update_pipeline(spec: PipelineLike, request_id: str) -> pb.UpdatePipelineRequest:
    return pb.UpdatePipelineRequest(pipeline=pipeline(spec), request_id=request_id)


def validate_pipeline(spec: PipelineLike) -> pb.ValidatePipelineRequest:
    return pb.ValidatePipelineRequest(pipeline=pipeline(spec))


def run_pipeline(
    name: str, request_id: str, params: Mapping[str, Any] | None
) -> pb.RunPipelineRequest:
    request = pb.RunPipelineRequest(pipeline=name, request_id=request_id)
    set_params(request.params, params)
    return request


def list_pipelines(
    tags: Iterable[str], labels: Mapping[str, str] | None, size: int, token: str
) -> pb.ListPipelinesRequest:
    return pb.ListPipelinesRequest(
        page_size=size, page_token=token, tags=list(tags), labels=dict(labels or {})
    )


def list_runs(
    pipeline: str, states: Iterable[RunStateLike], backfill_id: str, size: int, token: str
) -> pb.ListRunsRequest:
    return pb.ListRunsRequest(
        pipeline=pipeline,
        states=[run_state(s) for s in states],
        backfill_id=backfill_id,
        page_size=size,
        page_token=token,
    )


def backfill_pipeline(
    name: str,
    start: datetime,
    end: datetime,
    max_active_runs: int,
    only_failed: bool,
    params: Mapping[str, Any] | None,
    request_id: str,
) -> pb.BackfillPipelineRequest:
    for value in (start, end):
        if value.tzinfo is None:
            # A naive time would silently be read as UTC by FromDatetime.
            raise ValueError(f"backfill times need a time zone, got {value.isoformat()}")
    request = pb.BackfillPipelineRequest(
        pipeline=name,
        max_active_runs=max_active_runs,
        only_failed=only_failed,
        request_id=request_id,
    )
    request.start_date.FromDatetime(start)
    request.end_date.FromDatetime(end)
    set_params(request.params, params)
    return request


def describe_source(source: step_pb2.SourceSpec | Mapping[str, Any]) -> pb.DescribeSourceRequest:
    return pb.DescribeSourceRequest(source=message(source, step_pb2.SourceSpec, "source"))


def page_size(limit: int, fetched: int, page_size: int) -> int:
    """How many items to ask for next: a full page, or what is left of ``limit``."""
    if limit:
        return min(limit - fetched, page_size) if page_size else limit - fetched
    return page_size


#: Larger pages mean fewer round trips; the server caps them at 1000 anyway.
DEFAULT_PAGE_SIZE = 1000


def is_final(run: run_pb2.Run) -> bool:
    """Whether a run has reached a final state."""
    return run.state in (
        run_pb2.RUN_STATE_SUCCEEDED,
        run_pb2.RUN_STATE_FAILED,
        run_pb2.RUN_STATE_CANCELLED,
    )


def remaining(deadline: float, run_id: str) -> float:
    """Seconds left before ``deadline`` (monotonic); DEADLINE_EXCEEDED once it passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, f"run {run_id} did not finish in time")
    return left

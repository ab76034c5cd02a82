"""Stage attempts and their events: the domain side of ``ExecuteTask``.

The scheduler dispatches a :class:`StageTask`; the executor runs it and reports
:data:`TaskEvent` values: started, progress, then exactly one of succeeded or
failed. Both sides share these types; each converts them to and from protobuf in
its own adapter. Nothing here imports grpc.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from datadog_platform.api.common.v1 import step_pb2


@dataclass(frozen=True)
class StageTask:
    """One attempt of a stage: its steps in order, source first and sink last."""

    run_id: str
    stage_id: str
    attempt: int
    steps: Sequence[step_pb2.Step]


@dataclass(frozen=True)
class TaskMetrics:
    """Cumulative counters of an attempt."""

    rows_read: int = 0
    bytes_read: int = 0
    rows_written: int = 0
    bytes_written: int = 0


@dataclass(frozen=True)
class StageOutput:
    """What one sink step committed."""

    step: str
    location: str
    rows_written: int


@dataclass(frozen=True)
class TaskStarted:
    """The executor accepted the attempt and started it."""

    executor_id: str = ""


@dataclass(frozen=True)
class TaskProgress:
    """Data moved so far."""

    metrics: TaskMetrics


@dataclass(frozen=True)
class TaskSucceeded:
    """The attempt finished and its sinks committed."""

    metrics: TaskMetrics
    outputs: tuple[StageOutput, ...]


@dataclass(frozen=True)
class TaskFailed:
    """The attempt failed; the failing sink committed nothing."""

    reason: str
    message: str
    step: str = ""
    retryable: bool = False
    metrics: TaskMetrics = field(default_factory=TaskMetrics)


TaskEvent = TaskStarted | TaskProgress | TaskSucceeded | TaskFailed

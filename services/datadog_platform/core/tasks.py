"""Stage attempts and their events: the domain side of ``ExecuteTask``.

The scheduler dispatches a :class:`StageTask`; the executor runs it and reports
:data:`TaskEvent` values: started, progress, then exactly one of succeeded or
failed. Both sides share these types; each converts them to and from protobuf in
its own adapter. Nothing here imports grpc.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from datadog_platform.api.common.v1 import step_pb2


@dataclass(frozen=True)
class StageTask:
    """One attempt of a stage: its steps in order, source first and sink last."""

    run_id: str
    stage_id: str
    attempt: int
    steps: Sequence[step_pb2.Step]
    #: Deadline of the attempt in seconds (None: the dispatcher's default).
    timeout: float | None = None


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
class StepMetrics:
    """What one source or sink step of an attempt has moved so far."""

    step: str
    rows: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one data-quality check of a stage attempt."""

    step: str
    check: str
    passed: bool
    failing_rows: int = 0
    message: str = ""
    #: "FAIL", "WARN" or "QUARANTINE".
    action: str = "FAIL"


@dataclass(frozen=True)
class TaskStarted:
    """The executor accepted the attempt and started it."""

    executor_id: str = ""


@dataclass(frozen=True)
class TaskProgress:
    """Data moved so far."""

    metrics: TaskMetrics
    #: Per source and sink step.
    steps: tuple[StepMetrics, ...] = ()


@dataclass(frozen=True)
class TaskSucceeded:
    """The attempt finished and its sinks committed."""

    metrics: TaskMetrics
    outputs: tuple[StageOutput, ...]
    #: New watermark values by step name (steps keeping one that saw rows).
    watermarks: Mapping[str, str] = field(default_factory=dict)
    #: Outcomes of the stage's data-quality checks.
    checks: tuple[CheckResult, ...] = ()
    #: Final counters per source and sink step.
    steps: tuple[StepMetrics, ...] = ()


@dataclass(frozen=True)
class TaskFailed:
    """The attempt failed; the failing sink committed nothing."""

    reason: str
    message: str
    step: str = ""
    retryable: bool = False
    metrics: TaskMetrics = field(default_factory=TaskMetrics)
    #: Outcomes of the checks evaluated before the failure.
    checks: tuple[CheckResult, ...] = ()


class LogLevel(enum.StrEnum):
    """Severity of a stage log line."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


@dataclass(frozen=True)
class LogLine:
    """One log line of a stage attempt (``step`` empty: about the whole stage)."""

    time: datetime
    level: LogLevel
    message: str
    step: str = ""


@dataclass(frozen=True)
class TaskLog:
    """Log lines of the attempt, in order."""

    lines: tuple[LogLine, ...]


TaskEvent = TaskStarted | TaskProgress | TaskLog | TaskSucceeded | TaskFailed

"""Domain types of the scheduler: runs, stages, plans, and the dispatch protocol.

Nothing here imports grpc. Pipeline specs stay protobuf messages (they are the spec
format); everything else is plain dataclasses that the servicer translates.

Error reasons (``ErrorInfo.reason``) this service answers with are the constants at
the bottom of this module; stage failure reasons are either the executor's own
(e.g. ``SOURCE_NOT_FOUND``) or one of the ``STAGE_*``/``EXECUTOR_*`` ones here.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import DomainError, failed_precondition
from datadog_platform.core.tasks import (  # noqa: F401 - re-exported for the scheduler
    CheckResult,
    LogLevel,
    LogLine,
    StageOutput,
    StageTask,
    TaskEvent,
    TaskFailed,
    TaskLog,
    TaskMetrics,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)

#: A JSON value (params are JSON: the protobuf Value mapping).
JsonValue = Any


class RunState(enum.StrEnum):
    """Life cycle of a run."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """Whether the run has reached a final state."""
        return self in _TERMINAL_RUN_STATES


_TERMINAL_RUN_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})


class StageState(enum.StrEnum):
    """Life cycle of a stage within a run."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    UPSTREAM_FAILED = "UPSTREAM_FAILED"

    @property
    def is_terminal(self) -> bool:
        """Whether the stage has reached a final state."""
        return self in _TERMINAL_STAGE_STATES


_TERMINAL_STAGE_STATES = frozenset(
    {
        StageState.SUCCEEDED,
        StageState.FAILED,
        StageState.CANCELLED,
        StageState.UPSTREAM_FAILED,
    }
)


class RunTrigger(enum.StrEnum):
    """What created a run."""

    MANUAL = "MANUAL"
    SCHEDULE = "SCHEDULE"
    BACKFILL = "BACKFILL"


class BackfillState(enum.StrEnum):
    """Life cycle of a backfill."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """Whether the backfill has reached a final state."""
        return self is not BackfillState.RUNNING


@dataclass(frozen=True)
class PlannedStage:
    """A chain of steps (source first, sink last) that streams end to end.

    ``steps`` are user step names. ``artifact_inputs`` names the steps (of other
    stages) whose output this stage reads back from the artifact store: such a
    step is the first of ``steps`` and is replaced by an artifact source when the
    stage is built. ``artifact_output`` names the step (the last of ``steps``)
    whose output this stage writes to the artifact store for other stages
    (an artifact sink is appended when the stage is built), "" for a stage ending
    in a user sink. ``upstream``: stage ids that must succeed first.
    """

    stage_id: str
    steps: tuple[str, ...]
    upstream: tuple[str, ...] = ()
    artifact_inputs: tuple[str, ...] = ()
    artifact_output: str = ""


@dataclass(frozen=True)
class RegisteredPipeline:
    """A stored pipeline version (output-only fields set) and its execution plan."""

    spec: pipeline_pb2.Pipeline
    plan: tuple[PlannedStage, ...]


@dataclass
class StageRun:
    """State of one stage of a run."""

    stage_id: str
    steps: tuple[str, ...]
    state: StageState = StageState.PENDING
    attempt: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    metrics: TaskMetrics = field(default_factory=TaskMetrics)
    outputs: tuple[StageOutput, ...] = ()
    error_reason: str = ""
    error_message: str = ""
    #: Stage ids that must succeed before this stage starts.
    upstream: tuple[str, ...] = ()
    #: While QUEUED after a failed attempt: when the next attempt is due.
    next_attempt_time: datetime | None = None
    #: Attempts made before the last RetryRun (the retry policy counts from there).
    attempt_base: int = 0
    #: Outcomes of the data-quality checks of the current or last attempt.
    checks: tuple[CheckResult, ...] = ()


@dataclass
class Run:
    """One execution of a pipeline version."""

    run_id: str
    pipeline: str
    pipeline_version: int
    state: RunState
    create_time: datetime
    stages: list[StageRun]
    start_time: datetime | None = None
    end_time: datetime | None = None
    error_message: str = ""
    request_id: str = ""
    #: The pipeline's param defaults with the run's overrides (JSON values).
    params: dict[str, JsonValue] = field(default_factory=dict)
    trigger: RunTrigger = RunTrigger.MANUAL
    #: Start of the data interval (for a manual run: its creation time).
    logical_date: datetime | None = None
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None
    backfill_id: str = ""
    #: Lease fencing generation (store-internal, not in the API): every write of a
    #: run by its driver must carry the generation its lease was taken with.
    generation: int = 0


@dataclass
class Backfill:
    """A range of scheduled intervals run for a pipeline (see the proto's Backfill)."""

    backfill_id: str
    pipeline: str
    start_date: datetime
    end_date: datetime
    max_active_runs: int
    only_failed: bool
    state: BackfillState
    create_time: datetime
    #: The intervals' logical dates (data_interval_start), in order, fixed at creation.
    logical_dates: tuple[datetime, ...] = ()
    end_time: datetime | None = None
    params: dict[str, JsonValue] = field(default_factory=dict)
    request_id: str = ""
    #: Counters, derived from its runs when read.
    created_runs: int = 0
    succeeded_runs: int = 0
    failed_runs: int = 0


@dataclass(frozen=True)
class StageLogLine:
    """A log line of one stage attempt, with its position (``seq``, from 1)."""

    run_id: str
    stage_id: str
    attempt: int
    seq: int
    line: LogLine


@dataclass
class RunChange:
    """What a run's driver writes in one go (one transaction, possibly with others).

    ``run``: the run's own fields (always written, fenced by ``run.generation``);
    ``stages``: stages whose fields changed; ``logs``: new log lines;
    ``watermarks``: step → value to save for the run's pipeline (only ever with the
    stage success that committed the rows they cover).
    """

    run: Run
    stages: list[StageRun] = field(default_factory=list)
    logs: list[StageLogLine] = field(default_factory=list)
    watermarks: dict[str, str] = field(default_factory=dict)


#: The run's error message once cancelled.
CANCELLED_MESSAGE = "cancelled"


def mark_cancelled(run: Run, now: datetime) -> list[StageRun]:
    """Make ``run`` and its unfinished stages CANCELLED; returns the stages changed."""
    changed = [s for s in run.stages if not s.state.is_terminal]
    for stage in changed:
        stage.state = StageState.CANCELLED
        stage.end_time = now
    run.state = RunState.CANCELLED
    run.error_message = CANCELLED_MESSAGE
    run.end_time = now
    return changed


def run_already_finished(run: Run) -> DomainError:
    """The error of cancelling a run that already reached a final state."""
    return failed_precondition(
        RUN_ALREADY_FINISHED,
        f'run "{run.run_id}" already finished ({run.state.value}); there is nothing to cancel',
        run_id=run.run_id,
        state=run.state.value,
    )


def prepare_retry(run: Run) -> list[StageRun]:
    """Put a finished, unsuccessful ``run`` back to RUNNING for RetryRun.

    Its SUCCEEDED stages stay as they are; every other stage goes
    back to PENDING, keeping its attempt count so that numbering continues.
    Returns the stages changed. FAILED_PRECONDITION (RUN_NOT_FINISHED or
    RUN_ALREADY_SUCCEEDED) when there is nothing to retry.
    """
    if not run.state.is_terminal:
        raise failed_precondition(
            RUN_NOT_FINISHED,
            f'run "{run.run_id}" has not finished ({run.state.value}); only a finished run'
            " can be retried",
            run_id=run.run_id,
            state=run.state.value,
        )
    if run.state is RunState.SUCCEEDED:
        raise failed_precondition(
            RUN_ALREADY_SUCCEEDED,
            f'run "{run.run_id}" already succeeded; there is nothing to retry',
            run_id=run.run_id,
            state=run.state.value,
        )
    changed = [s for s in run.stages if s.state is not StageState.SUCCEEDED]
    for stage in changed:
        stage.state = StageState.PENDING
        stage.start_time = stage.end_time = None
        stage.metrics = TaskMetrics()
        stage.outputs = ()
        stage.error_reason = stage.error_message = ""
    run.state = RunState.RUNNING
    run.error_message = ""
    run.end_time = None
    return changed


# --- dispatch protocol: what the run manager needs from an executor -------------------


class DispatchError(Exception):
    """The attempt could not be dispatched or its event stream broke."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Dispatcher(Protocol):
    """Runs stage attempts somewhere (an executor service) and reports their events.

    ``execute`` yields events until exactly one ``TaskSucceeded`` or ``TaskFailed``;
    it raises :class:`DispatchError` when the executor cannot be reached or the
    stream breaks. Closing the iterator early cancels the attempt.
    """

    def execute(self, task: StageTask) -> AsyncIterator[TaskEvent]:
        """Start ``task`` and stream its events."""
        ...


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def new_run_id() -> str:
    """A new run id: 32 hex digits, sortable by creation time (ms), then random."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


# --- error reasons (ErrorInfo.reason) ------------------------------------------------

#: The pipeline spec has problems; the field violations list them all.
INVALID_PIPELINE_SPEC = "INVALID_PIPELINE_SPEC"
#: A request field other than the pipeline spec is missing or malformed.
INVALID_REQUEST = "INVALID_REQUEST"
#: ``page_size`` is negative.
INVALID_PAGE_SIZE = "INVALID_PAGE_SIZE"
#: ``page_token`` is not one this service handed out.
INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
#: A ``request_id`` was reused for a different request.
REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
#: CreatePipeline for a name that exists.
PIPELINE_ALREADY_EXISTS = "PIPELINE_ALREADY_EXISTS"
#: No pipeline has that name.
PIPELINE_NOT_FOUND = "PIPELINE_NOT_FOUND"
#: The pipeline exists but not that version.
PIPELINE_VERSION_NOT_FOUND = "PIPELINE_VERSION_NOT_FOUND"
#: No run has that id.
RUN_NOT_FOUND = "RUN_NOT_FOUND"
#: CancelRun of a run that already reached a final state (FAILED_PRECONDITION).
RUN_ALREADY_FINISHED = "RUN_ALREADY_FINISHED"
#: RetryRun of a run still QUEUED or RUNNING (FAILED_PRECONDITION).
RUN_NOT_FINISHED = "RUN_NOT_FINISHED"
#: RetryRun of a run that succeeded (FAILED_PRECONDITION).
RUN_ALREADY_SUCCEEDED = "RUN_ALREADY_SUCCEEDED"
#: The connector service cannot be reached.
CONNECTOR_UNAVAILABLE = "CONNECTOR_UNAVAILABLE"
#: Stage failure: the executor service cannot be reached (or went away mid-task).
EXECUTOR_UNAVAILABLE = "EXECUTOR_UNAVAILABLE"
#: Stage failure: the executor rejected the task without a reason of its own.
EXECUTOR_ERROR = "EXECUTOR_ERROR"
#: Stage failure: the attempt exceeded its deadline.
STAGE_TIMEOUT = "STAGE_TIMEOUT"
#: Stage failure: the executor's event stream ended without a result.
STAGE_INCOMPLETE = "STAGE_INCOMPLETE"
#: Stage failure: a bug in the scheduler (logged with its traceback).
STAGE_INTERNAL_ERROR = "STAGE_INTERNAL_ERROR"
#: Dispatch answer: every slot of the executor is busy (RESOURCE_EXHAUSTED); the
#: scheduler backs off and dispatches the same attempt again.
EXECUTOR_BUSY = "EXECUTOR_BUSY"
#: Stage failure: a template of the stage's steps could not be rendered.
TEMPLATE_ERROR = "TEMPLATE_ERROR"
#: Stage failure / run error: the run exceeded its run_timeout.
RUN_TIMEOUT = "RUN_TIMEOUT"
#: DeletePipeline while a run of it is unfinished (FAILED_PRECONDITION).
PIPELINE_HAS_ACTIVE_RUNS = "PIPELINE_HAS_ACTIVE_RUNS"
#: BackfillPipeline of a pipeline without a schedule (FAILED_PRECONDITION).
PIPELINE_NOT_SCHEDULED = "PIPELINE_NOT_SCHEDULED"
#: No backfill has that id.
BACKFILL_NOT_FOUND = "BACKFILL_NOT_FOUND"
#: CancelBackfill of a finished backfill (FAILED_PRECONDITION).
BACKFILL_ALREADY_FINISHED = "BACKFILL_ALREADY_FINISHED"
#: RunPipeline/BackfillPipeline with params the pipeline does not declare.
UNKNOWN_PARAM = "UNKNOWN_PARAM"
#: ListStageLogs for a stage the run does not have.
STAGE_NOT_FOUND = "STAGE_NOT_FOUND"


# --- deterministic run ids (schedules and backfills) ---------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def deterministic_run_id(pipeline: str, logical_date: datetime, scope: str) -> str:
    """The run id of ``pipeline``'s interval starting at ``logical_date`` in ``scope``.

    ``scope`` is "schedule" for scheduled runs, the backfill id for a backfill's.
    Every scheduler computes the same id, so creating the run "if absent" never
    makes a duplicate. 32 hex digits like :func:`new_run_id`: 12 of the logical
    date in ms (ids sort by logical time), then the first 20 of
    sha256("{pipeline}\\0{logical date, UTC ISO 8601}\\0{scope}").
    """
    when = logical_date.astimezone(UTC)
    millis = (when - _EPOCH) // timedelta(milliseconds=1)
    digest = hashlib.sha256(f"{pipeline}\0{when.isoformat()}\0{scope}".encode()).hexdigest()
    return f"{millis % (1 << 48):012x}{digest[:20]}"

"""The stage state machine of a run: transitions, readiness and the run's outcome.

Nothing here does I/O or awaits: the run engine (``runs``) calls these functions and
persists what they changed. Transitions mutate the given :class:`StageRun` in place
(the engine owns its live copy). :class:`RunGraph` indexes who waits for whom and
counts, per pending stage, the upstream stages it still waits for, so that a stage
finishing costs the size of its downstream, not of the run (a join behind 1,000
stages must not rescan 1,000 upstream states 1,000 times).

Stage life cycle::

    PENDING → QUEUED (all upstream SUCCEEDED; attempt n decided) → RUNNING
        → SUCCEEDED | FAILED | CANCELLED
    QUEUED/RUNNING → QUEUED (attempt failed, retry due at next_attempt_time)
    PENDING → UPSTREAM_FAILED (an upstream stage failed for good, transitively)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from datadog_platform.scheduler.domain import (
    RunState,
    StageOutput,
    StageRun,
    StageState,
    TaskMetrics,
)

#: ``error_reason`` of a stage not run because an upstream stage failed.
UPSTREAM_FAILED_REASON = "UPSTREAM_FAILED"
#: How many failed stages a run's error message names before summarising.
MAX_STAGES_IN_MESSAGE = 5

_UNKNOWN_REASON = "UNKNOWN"
_NO_MESSAGE = "the stage failed without a message"


# --- transitions of one stage ------------------------------------------------------------


def queue_attempt(stage: StageRun, now: datetime) -> None:
    """Decide the stage's next attempt: QUEUED with ``attempt`` + 1, fields of the last
    attempt cleared (committed before the attempt is dispatched)."""
    stage.state = StageState.QUEUED
    stage.attempt += 1
    stage.start_time = stage.end_time = None
    stage.metrics = TaskMetrics()
    stage.outputs = ()
    stage.checks = ()
    stage.error_reason = stage.error_message = ""
    stage.next_attempt_time = None


def start_attempt(stage: StageRun, now: datetime) -> bool:
    """The executor started the attempt: QUEUED → RUNNING; whether the state changed."""
    if stage.state is not StageState.QUEUED:
        return False
    stage.state = StageState.RUNNING
    stage.start_time = now
    return True


def succeed(
    stage: StageRun, now: datetime, metrics: TaskMetrics, outputs: Sequence[StageOutput]
) -> None:
    """The attempt finished and its sinks committed."""
    start_attempt(stage, now)
    stage.state = StageState.SUCCEEDED
    stage.metrics = metrics
    stage.outputs = tuple(outputs)
    stage.end_time = now
    stage.next_attempt_time = None


def fail(
    stage: StageRun,
    now: datetime,
    reason: str,
    message: str,
    metrics: TaskMetrics | None = None,
) -> None:
    """The stage failed for good (no attempt left, or a failure not retried)."""
    stage.state = StageState.FAILED
    _record_failure(stage, now, reason, message, metrics)
    stage.next_attempt_time = None


def schedule_retry(
    stage: StageRun,
    now: datetime,
    reason: str,
    message: str,
    next_attempt_time: datetime,
    metrics: TaskMetrics | None = None,
) -> None:
    """The attempt failed and another one is due at ``next_attempt_time``: the stage
    goes back to QUEUED showing the failed attempt's error."""
    stage.state = StageState.QUEUED
    _record_failure(stage, now, reason, message, metrics)
    stage.next_attempt_time = next_attempt_time


def upstream_failed(stage: StageRun, now: datetime, failed_upstream: str) -> None:
    """Never to run: an upstream stage (``failed_upstream``, maybe indirectly) failed."""
    stage.state = StageState.UPSTREAM_FAILED
    stage.error_reason = UPSTREAM_FAILED_REASON
    stage.error_message = f'not run: upstream stage "{failed_upstream}" failed'
    stage.end_time = now
    stage.next_attempt_time = None


def cancel(stage: StageRun, now: datetime, reason: str = "", message: str = "") -> None:
    """Cancelled with its run (``reason`` set when a deadline did it)."""
    stage.state = StageState.CANCELLED
    stage.end_time = now
    stage.next_attempt_time = None
    if reason:
        stage.error_reason = reason
        stage.error_message = message


def _record_failure(
    stage: StageRun, now: datetime, reason: str, message: str, metrics: TaskMetrics | None
) -> None:
    stage.error_reason = reason or _UNKNOWN_REASON
    stage.error_message = message or _NO_MESSAGE
    stage.end_time = now
    if metrics is not None:
        stage.metrics = metrics


# --- the graph ----------------------------------------------------------------------------


class RunGraph:
    """The stages of one run, who waits for whom, and what is still pending.

    Built from the stages' current states (a new run, or one resumed mid-way); then
    told of each stage that succeeded or failed for good, it answers which stages
    became ready or can no longer run.
    """

    def __init__(self, stages: Iterable[StageRun]) -> None:
        self.stages: dict[str, StageRun] = {s.stage_id: s for s in stages}
        self.downstream: dict[str, list[str]] = {stage_id: [] for stage_id in self.stages}
        for stage in self.stages.values():
            # dict.fromkeys: an upstream listed twice is waited for once.
            for upstream in dict.fromkeys(stage.upstream):
                if upstream not in self.stages:
                    raise ValueError(
                        f'stage "{stage.stage_id}" waits for unknown stage "{upstream}"'
                    )
                self.downstream[upstream].append(stage.stage_id)
        #: Per PENDING stage, how many of its upstream stages have not succeeded.
        self.waiting: dict[str, int] = {
            s.stage_id: sum(
                self.stages[u].state is not StageState.SUCCEEDED for u in set(s.upstream)
            )
            for s in self.stages.values()
            if s.state is StageState.PENDING
        }

    def initially_ready(self) -> list[str]:
        """PENDING stages whose upstream stages all succeeded, in plan order."""
        return [stage_id for stage_id, count in self.waiting.items() if count == 0]

    def initially_blocked(self) -> dict[str, str]:
        """PENDING stages behind an upstream stage that ended unsuccessfully (each
        mapped to the first such upstream found), transitively, in plan order."""
        blocked: dict[str, str] = {}
        for stage in self.stages.values():
            if stage.state.is_terminal and stage.state is not StageState.SUCCEEDED:
                for stage_id in self._pending_downstream(stage.stage_id):
                    blocked.setdefault(stage_id, stage.stage_id)
        order = {stage_id: index for index, stage_id in enumerate(self.stages)}
        for stage_id in blocked:
            self.waiting.pop(stage_id, None)
        return dict(sorted(blocked.items(), key=lambda item: order[item[0]]))

    def succeeded(self, stage_id: str) -> list[str]:
        """``stage_id`` succeeded: the downstream stages that became ready."""
        ready = []
        for downstream in self.downstream[stage_id]:
            count = self.waiting.get(downstream)
            if count is None:
                continue
            self.waiting[downstream] = count - 1
            if count == 1:
                del self.waiting[downstream]
                ready.append(downstream)
        return ready

    def failed(self, stage_id: str) -> list[str]:
        """``stage_id`` ended unsuccessfully for good: every PENDING stage downstream
        of it (transitively), which can no longer run, in discovery order."""
        blocked = self._pending_downstream(stage_id)
        for downstream in blocked:
            self.waiting.pop(downstream, None)
        return blocked

    def _pending_downstream(self, stage_id: str) -> list[str]:
        found: list[str] = []
        seen = {stage_id}
        queue = deque([stage_id])
        while queue:
            for downstream in self.downstream[queue.popleft()]:
                if downstream in seen:
                    continue
                seen.add(downstream)
                # Only stages still waiting: not those already blocked or running.
                if downstream in self.waiting:
                    found.append(downstream)
                    queue.append(downstream)
        return found


# --- the run's outcome ----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How a run ended once every stage is final."""

    state: RunState
    error_message: str = ""


def run_outcome(stages: Sequence[StageRun]) -> Outcome | None:
    """The run's final state once every stage is final, else None.

    SUCCEEDED when every stage succeeded; otherwise FAILED, the message naming the
    failed stages (the first few) and counting those not run because of them.
    """
    if any(not s.state.is_terminal for s in stages):
        return None
    unsuccessful = [s for s in stages if s.state is not StageState.SUCCEEDED]
    if not unsuccessful:
        return Outcome(RunState.SUCCEEDED)
    own = [s for s in unsuccessful if s.state is not StageState.UPSTREAM_FAILED]
    parts = [
        f'stage "{s.stage_id}" failed: {s.error_message or _NO_MESSAGE}'
        for s in own[:MAX_STAGES_IN_MESSAGE]
    ]
    if len(own) > MAX_STAGES_IN_MESSAGE:
        parts.append(f"{len(own) - MAX_STAGES_IN_MESSAGE} more stages failed")
    skipped = len(unsuccessful) - len(own)
    if skipped:
        parts.append(f"{skipped} downstream stage{'s' if skipped > 1 else ''} not run")
    return Outcome(RunState.FAILED, "; ".join(parts))


def run_timeout_message(timeout_seconds: float) -> str:
    """The run's error message (and its cancelled stages') once its run_timeout passed."""
    return f"the run exceeded its run_timeout of {_seconds(timeout_seconds)}"


def stage_timeout_message(timeout_seconds: float) -> str:
    """The stage's error message when an attempt exceeded the stage's timeout."""
    return f"the stage did not finish within its timeout of {_seconds(timeout_seconds)}"


def _seconds(value: float) -> str:
    return f"{value:g}s"

"""What the run engine keeps in memory per pipeline version and per driven run.

:class:`PipelineInfo` is computed once per pipeline version (plan, limits, each
stage's retry policy and timeout) and shared by its runs. :class:`LiveRun` is a run
being driven: the live objects the engine changes, and the committed view callers
see (copies the state writer made of what it wrote, plus live progress counters),
with a version counter that watchers wait on.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field

from google.protobuf import duration_pb2

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.scheduler import dag
from datadog_platform.scheduler.domain import PlannedStage, Run, StageRun
from datadog_platform.scheduler.planner import plan_pipeline
from datadog_platform.scheduler.retry import RetryPolicy, stage_policy


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


class PipelineInfo:
    """A pipeline version's plan, limits and per-stage policies, shared by its runs."""

    def __init__(self, spec: pipeline_pb2.Pipeline) -> None:
        self.spec = spec
        self.plan: dict[str, PlannedStage] = {s.stage_id: s for s in plan_pipeline(spec)}
        self.steps: dict[str, step_pb2.Step] = {s.name: s for s in spec.steps}
        self.default_retry = spec.default_retry if spec.HasField("default_retry") else None
        self.max_active_runs = max(0, spec.max_active_runs)
        self.max_active_tasks = max(0, spec.max_active_tasks)
        timeout = _seconds(spec.run_timeout) if spec.HasField("run_timeout") else 0.0
        self.run_timeout: float | None = timeout if timeout > 0 else None
        # Only then is the store asked for watermarks at each dispatch.
        self.uses_watermarks = any(s.HasField("watermark") for s in spec.steps)
        self._policies: dict[str, RetryPolicy] = {}
        self._timeouts: dict[str, float | None] = {}

    def planned(self, stage: StageRun) -> PlannedStage:
        """The planned stage of ``stage`` (the run's own copy if the plan lacks it)."""
        planned = self.plan.get(stage.stage_id)
        if planned is None:
            planned = PlannedStage(stage.stage_id, stage.steps, stage.upstream)
        return planned

    def _own_steps(self, stage: StageRun) -> list[str]:
        # A step read back from the artifact store belongs to the stage producing it.
        planned = self.planned(stage)
        return [
            name
            for name in planned.steps
            if name in self.steps and name not in planned.artifact_inputs
        ]

    def policy(self, stage: StageRun) -> RetryPolicy:
        """The stage's retry policy."""
        policy = self._policies.get(stage.stage_id)
        if policy is None:
            policy = stage_policy(self._own_steps(stage), self.steps, self.default_retry)
            self._policies[stage.stage_id] = policy
        return policy

    def timeout(self, stage: StageRun) -> float | None:
        """The deadline of one attempt of the stage: the smallest of its steps'."""
        if stage.stage_id not in self._timeouts:
            timeouts = [
                _seconds(self.steps[name].timeout)
                for name in self._own_steps(stage)
                if self.steps[name].HasField("timeout")
            ]
            positive = [t for t in timeouts if t > 0]
            self._timeouts[stage.stage_id] = min(positive) if positive else None
        return self._timeouts[stage.stage_id]


@dataclass(eq=False)
class LiveRun:
    """A run this manager drives: live state, committed view, and its tasks."""

    run: Run
    info: PipelineInfo
    graph: dag.RunGraph
    #: Stages in plan order (the live objects of ``run.stages``).
    stages: dict[str, StageRun]
    #: The committed state callers see: the run's own fields (``stages`` empty) and
    #: each stage, as last written (plus live progress counters).
    view_run: Run
    view_stages: dict[str, StageRun]
    #: Stages not yet final.
    unfinished: int
    #: Set by RetryRun: the run timeout counts from the retry.
    restarted: bool = False
    version: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Wakes the driver (a stage ended, cancellation, admission chance).
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set once the run is no longer driven here (finished, lost, or closing).
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_requested: bool = False
    #: No new stage task may start (the run is ending).
    stopping: bool = False
    #: The lease was lost: write nothing more.
    lost: bool = False
    broken: BaseException | None = None
    driver: asyncio.Task[None] | None = None
    stage_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: Last log seq per (stage_id, attempt).
    log_seq: dict[tuple[str, int], int] = field(default_factory=dict)
    #: When each stage's progress was last written (monotonic seconds).
    progress_saved: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, run: Run, info: PipelineInfo, *, restarted: bool = False) -> LiveRun:
        """A run (as stored) about to be driven: its view is what the store has."""
        stages = {s.stage_id: s for s in run.stages}
        return cls(
            run=run,
            info=info,
            graph=dag.RunGraph(run.stages),
            stages=stages,
            view_run=run_fields(run),
            view_stages={stage_id: copy.copy(s) for stage_id, s in stages.items()},
            unfinished=sum(not s.state.is_terminal for s in run.stages),
            restarted=restarted,
        )

    def snapshot(self) -> Run:
        """What callers see: the committed state with live progress, as a copy."""
        run = copy.copy(self.view_run)
        run.params = dict(run.params)
        run.stages = [copy.copy(self.view_stages[stage_id]) for stage_id in self.stages]
        return run

    def notify(self) -> None:
        """Wake the watchers (after a commit, or live progress)."""
        self.version += 1
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


def run_fields(run: Run) -> Run:
    """A copy of the run's own fields (``stages`` empty)."""
    fields = copy.copy(run)
    fields.stages = []
    return fields


def clone_run(run: Run) -> Run:
    """A copy of ``run`` sharing nothing mutable with it (stage fields are immutable)."""
    clone = copy.copy(run)
    clone.params = dict(run.params)
    clone.stages = [copy.copy(stage) for stage in run.stages]
    return clone

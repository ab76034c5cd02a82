"""Planner: a validated pipeline's steps → stages.

A linear chain of steps (each consumed by exactly one step that consumes nothing
else) is fused into one stage that streams end to end (DESIGN.md §3). Where the
DAG fans out (a step consumed by several steps) or in (a step consuming several
steps), the producer's output is materialised in the artifact store: its stage
ends with that step (``artifact_output``), and every consumer's stage starts by
reading it back (``artifact_inputs``, listed first in ``steps``). A stage's id is
the name of its last user step: its sink, or the step whose output it
materialises. ``after`` lists add the named steps' stages to ``upstream``.

Stages come in a topological order (every stage after its upstream stages), ties
broken by the position of their last step in the spec.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.scheduler.domain import PlannedStage


class PlanError(ValueError):
    """The pipeline cannot be planned; it was not validated first.

    ``step`` and ``after`` name the ``after`` entry that closes a cycle of stages,
    when that is the problem (validation reports it on that field).
    """

    def __init__(self, message: str, *, step: str = "", after: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.after = after


@dataclass
class _Graph:
    steps: dict[str, step_pb2.Step]
    position: dict[str, int]
    inputs: dict[str, list[str]]  # distinct inputs, in order
    consumers: dict[str, list[str]]


def plan_pipeline(pipeline: pipeline_pb2.Pipeline) -> tuple[PlannedStage, ...]:
    """The stages of a pipeline that passed :func:`validation.check_pipeline`."""
    graph = _graph(pipeline.steps)
    stages, owner = _stages(graph)
    planned = {
        stage.stage_id: PlannedStage(
            stage_id=stage.stage_id,
            steps=stage.steps,
            upstream=_upstream(stage, graph, owner),
            artifact_inputs=stage.artifact_inputs,
            artifact_output=stage.artifact_output,
        )
        for stage in stages
    }
    return _topological(planned, graph, owner)


def _graph(steps: Sequence[step_pb2.Step]) -> _Graph:
    by_name: dict[str, step_pb2.Step] = {}
    position: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.name in by_name:
            raise PlanError(f'duplicate step name "{step.name}"')
        by_name[step.name] = step
        position[step.name] = i
    inputs: dict[str, list[str]] = {}
    consumers: dict[str, list[str]] = {name: [] for name in by_name}
    for step in steps:
        kind = step.WhichOneof("kind")
        names = list(dict.fromkeys(step.inputs))  # a repeated input is one edge
        if kind is None:
            raise PlanError(f'step "{step.name}" is neither a source, a transform nor a sink')
        if kind == "source" and names:
            raise PlanError(f'source step "{step.name}" has inputs')
        if kind != "source" and not names:
            raise PlanError(f'{kind} step "{step.name}" has no input')
        for name in names:
            if name not in by_name:
                raise PlanError(f'step "{step.name}" consumes unknown step "{name}"')
            if by_name[name].WhichOneof("kind") == "sink":
                raise PlanError(f'step "{step.name}" consumes sink "{name}"')
            consumers[name].append(step.name)
        for name in step.after:
            if name not in by_name:
                raise PlanError(f'step "{step.name}" waits for unknown step "{name}"')
        inputs[step.name] = names
    for name, step in by_name.items():
        if step.WhichOneof("kind") != "sink" and not consumers[name]:
            raise PlanError(f'the output of step "{name}" reaches no sink')
    return _Graph(by_name, position, inputs, consumers)


@dataclass
class _Stage:
    stage_id: str
    steps: tuple[str, ...]
    artifact_inputs: tuple[str, ...]
    artifact_output: str


def _fused_successor(name: str, graph: _Graph) -> str | None:
    """The step ``name`` streams into within one stage, if any."""
    users = graph.consumers[name]
    if len(users) == 1 and len(graph.inputs[users[0]]) == 1:
        return users[0]
    return None


def _stages(graph: _Graph) -> tuple[list[_Stage], dict[str, str]]:
    """The stages (in spec order of their first step) and each step's owning stage."""
    fused_into = {
        successor
        for name in graph.steps
        if (successor := _fused_successor(name, graph)) is not None
    }
    stages: list[_Stage] = []
    owner: dict[str, str] = {}
    for head in graph.steps:
        if head in fused_into:
            continue
        chain = [head]
        while (successor := _fused_successor(chain[-1], graph)) is not None:
            if successor in chain:  # unreachable for a head; kept as a guard
                raise PlanError(f'steps form a cycle through "{successor}"')
            chain.append(successor)
        last = chain[-1]
        sink = graph.steps[last].WhichOneof("kind") == "sink"
        # A head that is not a source reads every input back from the artifact store
        # (were it the only consumer of a single input, it would have been fused).
        materialised = tuple(graph.inputs[head])
        stage = _Stage(
            stage_id=last,
            steps=(*materialised, *chain),
            artifact_inputs=materialised,
            artifact_output="" if sink else last,
        )
        stages.append(stage)
        for name in chain:
            owner[name] = last
    unplanned = [name for name in graph.steps if name not in owner]
    if unplanned:
        raise PlanError(f'steps form a cycle through "{unplanned[0]}"')
    return stages, owner


def _upstream(stage: _Stage, graph: _Graph, owner: dict[str, str]) -> tuple[str, ...]:
    upstream = [owner[name] for name in stage.artifact_inputs]
    for name in stage.steps[len(stage.artifact_inputs) :]:
        # An "after" step of the same stage is satisfied by the stage itself.
        upstream += [owner[a] for a in graph.steps[name].after if owner[a] != stage.stage_id]
    return tuple(dict.fromkeys(upstream))


def _topological(
    planned: dict[str, PlannedStage], graph: _Graph, owner: dict[str, str]
) -> tuple[PlannedStage, ...]:
    """Kahn's algorithm; among ready stages the one whose last step comes first."""
    waiting = {stage_id: len(stage.upstream) for stage_id, stage in planned.items()}
    downstream: dict[str, list[str]] = {stage_id: [] for stage_id in planned}
    for stage in planned.values():
        for up in stage.upstream:
            downstream[up].append(stage.stage_id)
    ready = [(graph.position[s], s) for s, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[PlannedStage] = []
    while ready:
        _, stage_id = heapq.heappop(ready)
        order.append(planned[stage_id])
        for down in downstream[stage_id]:
            waiting[down] -= 1
            if waiting[down] == 0:
                heapq.heappush(ready, (graph.position[down], down))
    if len(order) < len(planned):
        raise _stage_cycle_error(
            planned, {s for s, count in waiting.items() if count}, graph, owner
        )
    return tuple(order)


def _stage_cycle_error(
    planned: dict[str, PlannedStage], stuck: set[str], graph: _Graph, owner: dict[str, str]
) -> PlanError:
    """Name an ``after`` entry on a cycle of stages.

    Fusing chains keeps a data-flow DAG acyclic, so a cycle of stages over an
    acyclic step graph always goes through an ``after`` edge.
    """
    cycle = _find_cycle(planned, stuck)
    for down, up in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
        # ``up`` is an upstream stage of ``down``: find the "after" that made it so.
        stage = planned[down]
        for name in stage.steps[len(stage.artifact_inputs) :]:
            for waited in graph.steps[name].after:
                if owner[waited] == up:
                    names = " -> ".join([*cycle, cycle[0]])
                    return PlanError(
                        f'step "{name}" waits for "{waited}", whose stage "{up}" itself '
                        f'waits for this step\'s stage "{down}" (stages wait in a cycle: '
                        f"{names})",
                        step=name,
                        after=waited,
                    )
    return PlanError(f"stages wait for each other in a cycle: {', '.join(cycle)}")


def _find_cycle(planned: dict[str, PlannedStage], stuck: set[str]) -> list[str]:
    """A cycle among the stuck stages, following upstream links (each has one in ``stuck``,
    or it would not be stuck: walking them must come back to a stage already seen)."""
    start = min(stuck)
    seen: dict[str, int] = {}
    path: list[str] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(up for up in planned[node].upstream if up in stuck)
    return path[seen[node] :]

"""Planner: a validated pipeline's steps → stages.

Each linear chain source → transforms → sink is fused into one stage that streams
end to end (DESIGN.md §3); its ``stage_id`` is the sink step's name. Fan-out and
fan-in (which would need materialised stage outputs) are rejected by validation, so
every sink has exactly one chain behind it. Stages come in the order of their sink
steps in the spec.
"""

from __future__ import annotations

from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.scheduler.domain import PlannedStage


class PlanError(ValueError):
    """The pipeline cannot be planned; it was not validated first."""


def plan_pipeline(pipeline: pipeline_pb2.Pipeline) -> tuple[PlannedStage, ...]:
    """The stages of a pipeline that passed :func:`validation.check_pipeline`."""
    by_name = {step.name: step for step in pipeline.steps}
    stages: list[PlannedStage] = []
    for sink in pipeline.steps:
        if sink.WhichOneof("kind") != "sink":
            continue
        chain = [sink.name]
        step = sink
        while step.WhichOneof("kind") != "source":
            if len(step.inputs) != 1 or step.inputs[0] not in by_name:
                raise PlanError(f'step "{step.name}" does not have exactly one known input')
            step = by_name[step.inputs[0]]
            if step.name in chain:
                raise PlanError(f'steps form a cycle through "{step.name}"')
            chain.append(step.name)
        stages.append(PlannedStage(stage_id=sink.name, steps=tuple(reversed(chain))))
    if not stages:
        raise PlanError("the pipeline has no sink")
    return tuple(stages)

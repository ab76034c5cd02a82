"""The steps an executor runs for one stage of a run: rendered, artifact steps inserted.

A stage that reads another stage's output starts with an artifact source step named
like the step whose output it reads (so the next step's ``inputs`` still match); a
stage whose output fans out ends with an artifact sink step ``<step>__artifact``.
Artifacts live under ``runs/<run_id>/<step>``: one key per run and materialised
step, the same for every attempt (the artifact sink overwrites atomically).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.scheduler.domain import PlannedStage, Run
from datadog_platform.scheduler.templating import (
    TemplateContext,
    TemplateError,
    render_step,
    template_fields,
)
from datadog_platform.scheduler.validation import rendered_step_violations

#: Suffix of the name of the artifact sink step appended to a fanned-out stage.
ARTIFACT_SINK_SUFFIX = "__artifact"


def artifact_key(run_id: str, step: str) -> str:
    """Where the output of ``step`` is materialised for the other stages of a run."""
    return f"runs/{run_id}/{step}"


def artifact_source_step(run_id: str, step: str) -> step_pb2.Step:
    """A source step named ``step`` reading its output back from the artifact store."""
    return step_pb2.Step(
        name=step,
        source=step_pb2.SourceSpec(
            artifact=step_pb2.ArtifactSource(key=artifact_key(run_id, step))
        ),
    )


def artifact_sink_step(run_id: str, step: str) -> step_pb2.Step:
    """A sink step writing the output of ``step`` to the artifact store."""
    return step_pb2.Step(
        name=f"{step}{ARTIFACT_SINK_SUFFIX}",
        inputs=[step],
        sink=step_pb2.SinkSpec(artifact=step_pb2.ArtifactSink(key=artifact_key(run_id, step))),
    )


class _SpecIndex:
    """A pipeline version's steps by name, and which of them hold templates."""

    __slots__ = ("spec", "steps", "templated")

    def __init__(self, spec: pipeline_pb2.Pipeline) -> None:
        self.spec = spec  # kept alive so that an id-keyed entry cannot be reused
        self.steps = {step.name: step for step in spec.steps}
        self.templated = {
            step.name: tuple(path for path, _ in fields)
            for step in spec.steps
            if (fields := template_fields(step))
        }


_CACHE_SIZE = 64
_cache: OrderedDict[int, _SpecIndex] = OrderedDict()


def _index(spec: pipeline_pb2.Pipeline) -> _SpecIndex:
    """The index of ``spec``, cached by identity: a run dispatches all its stages with
    the same spec object (specs are not mutated once in use). The entry holds the spec,
    so its id cannot be reused by another object while cached."""
    key = id(spec)
    entry = _cache.get(key)
    if entry is not None and entry.spec is spec:
        _cache.move_to_end(key)
        return entry
    entry = _SpecIndex(spec)
    _cache[key] = entry
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return entry


def build_stage_steps(
    spec: pipeline_pb2.Pipeline,
    stage: PlannedStage,
    run: Run,
    watermarks: Mapping[str, str],
) -> list[step_pb2.Step]:
    """The steps of one attempt of ``stage``: artifact steps inserted, templates rendered.

    ``watermarks``: the pipeline's saved watermarks (step → value). Raises
    :class:`TemplateError` when a template cannot be rendered or renders to an
    invalid value. Steps without templates are returned as the spec's own messages:
    callers must not mutate them.
    """
    index = _index(spec)
    context: TemplateContext | None = None
    steps: list[step_pb2.Step] = []
    for name in stage.steps:
        if name in stage.artifact_inputs:
            steps.append(artifact_source_step(run.run_id, name))
            continue
        step = index.steps.get(name)
        if step is None:
            raise ValueError(f'stage "{stage.stage_id}" names step "{name}", not in the spec')
        templated = index.templated.get(name)
        if templated:
            if context is None:
                context = TemplateContext.for_run(spec, run, watermarks)
            step = render_step(step, context)
            problems = rendered_step_violations(step, templated)
            if problems:
                first = problems[0]
                raise TemplateError(
                    name, first.field, f"the rendered value is invalid: {first.description}"
                )
        steps.append(step)
    if stage.artifact_output:
        steps.append(artifact_sink_step(run.run_id, stage.artifact_output))
    return steps

"""A stage as a small DAG: steps → validated nodes, split into DuckDB segments.

A stage is one or more sources, transforms and exactly one sink, its last step;
each step comes after the steps it consumes. A step consumes the steps named in
``inputs``; a transform or sink with no inputs consumes the step before it.

Execution splits the DAG at *streams*, the outputs that pass through Python:
sources, Python operators (e.g. cast, check), SQL steps keeping a watermark and
the inputs of operators and of the sink. Every other SQL step is fused into the
one DuckDB query (a :class:`Segment`) computing the stream downstream of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.core.errors import FieldViolation
from datadog_platform.core.expressions import predicate_problem


@dataclass(frozen=True)
class StepNode:
    """One step of the stage, with its resolved inputs."""

    name: str
    index: int
    #: "source", "transform" or "sink".
    role: str
    #: The spec's kind: "file", "inline", "filter", "join", "discard"...
    kind: str
    step: step_pb2.Step
    inputs: tuple[str, ...]

    @property
    def spec(self) -> Any:
        """The typed message of the step: e.g. ``FilterTransform`` or ``FileSink``."""
        return getattr(getattr(self.step, self.role), self.kind)

    @property
    def watermark(self) -> str:
        """The watermark column of the step, or ""."""
        return self.step.watermark.column


@dataclass(frozen=True)
class Segment:
    """One DuckDB query: SQL ``steps`` (stage order, ``output`` last) over stream ``leaves``."""

    output: str
    steps: tuple[str, ...]
    leaves: tuple[str, ...]


@dataclass(frozen=True)
class StageGraph:
    """A validated stage DAG and its segments, in stage order."""

    nodes: tuple[StepNode, ...]
    segments: tuple[Segment, ...]
    #: Transform steps run as Python operators.
    operators: frozenset[str]

    def node(self, name: str) -> StepNode:
        """The step called ``name``."""
        return self._by_name[name]

    @property
    def _by_name(self) -> dict[str, StepNode]:
        return {node.name: node for node in self.nodes}

    @property
    def sources(self) -> tuple[StepNode, ...]:
        """The source steps."""
        return tuple(n for n in self.nodes if n.role == "source")

    @property
    def sink(self) -> StepNode:
        """The sink step (the last one)."""
        return self.nodes[-1]

    @property
    def transforms(self) -> tuple[StepNode, ...]:
        """The transform steps."""
        return tuple(n for n in self.nodes if n.role == "transform")

    def read_by_queries_only(self, name: str) -> bool:
        """Whether every step reading stream ``name`` runs in a DuckDB query."""
        readers = [n for n in self.nodes if name in n.inputs]
        return bool(readers) and all(
            n.role == "transform" and n.name not in self.operators for n in readers
        )

    def read_whole_by_one_query(self, name: str) -> bool:
        """Whether stream ``name`` is the only input of one DuckDB query that aggregates,
        sorts or deduplicates it (so it emits nothing before ``name`` ends) and does not
        stop early (no ``limit``)."""
        segments = [s for s in self.segments if name in s.leaves]
        if len(segments) != 1 or segments[0].leaves != (name,):
            return False
        kinds = {self.node(step).kind for step in segments[0].steps}
        return bool(kinds & {"aggregate", "sort", "dedupe"}) and "limit" not in kinds

    def segment_of(self, output: str) -> Segment | None:
        """The query computing stream ``output``; None for a source or an operator."""
        return next((s for s in self.segments if s.output == output), None)


def build_graph(
    steps: Sequence[step_pb2.Step], kinds: Mapping[str, Any]
) -> tuple[StageGraph | None, list[FieldViolation]]:
    """The stage's graph, or None and the violations found (one per problem)."""
    if len(steps) < 2:
        return None, [
            FieldViolation(
                "steps",
                "a stage is one or more source steps, transforms, then one sink step; got "
                f"{len(steps)} step(s)",
            )
        ]
    violations: list[FieldViolation] = []
    index_of: dict[str, int] = {}
    nodes: list[StepNode] = []
    shape_ok = True
    for index, step in enumerate(steps):
        path = f"steps[{index}]"
        if not step.name:
            violations.append(FieldViolation(f"{path}.name", "is required"))
        elif step.name in index_of:
            violations.append(FieldViolation(f"{path}.name", f"duplicate step name {step.name!r}"))
        index_of.setdefault(step.name, index)
        role = step.WhichOneof("kind")
        problem = _role_problem(index, len(steps), role)
        if problem:
            violations.append(FieldViolation(path, problem))
            shape_ok = False
        elif role is not None:
            spec_violations = _spec_violations(path, step, role, kinds)
            violations.extend(spec_violations)
            shape_ok = shape_ok and not spec_violations
        inputs, input_violations = _inputs(path, index, step, steps, index_of, kinds)
        violations.extend(input_violations)
        shape_ok = shape_ok and not input_violations
        if role is not None:
            kind = getattr(step, role).WhichOneof("kind") or ""
            nodes.append(StepNode(step.name, index, role, kind, step, inputs))
    if violations or not shape_ok:
        return None, violations
    consumed = {name for node in nodes for name in node.inputs}
    for node in nodes[:-1]:
        if node.name not in consumed:
            violations.append(
                FieldViolation(
                    f"steps[{node.index}]",
                    f"step {node.name!r} is consumed by no step; every step but the sink feeds "
                    "another",
                )
            )
    if violations:
        return None, violations
    operators = frozenset(
        n.name for n in nodes if n.role == "transform" and kinds[n.kind].compile_sql is None
    )
    segments, violations = _segments(nodes, operators)
    if violations:
        return None, violations
    return StageGraph(tuple(nodes), segments, operators), []


def _role_problem(index: int, count: int, role: str | None) -> str:
    expected = "source" if index == 0 else "sink" if index == count - 1 else "source or transform"
    if role is None:
        return f"must be a {expected} step; no kind is set"
    if index == 0 and role != "source":
        return f"is a {role} step where the stage needs a source step (its first step)"
    if index == count - 1 and role != "sink":
        return f"is a {role} step where the stage needs a sink step (its last step)"
    if 0 < index < count - 1 and role == "sink":
        return "is a sink step where the stage needs a source or transform step (one sink, last)"
    return ""


def _spec_violations(
    path: str, step: step_pb2.Step, role: str, kinds: Mapping[str, Any]
) -> list[FieldViolation]:
    spec = getattr(step, role)
    spec_kind = spec.WhichOneof("kind")
    if spec_kind is None:
        return [FieldViolation(f"{path}.{role}", f"no kind of {role} is set")]
    if role != "transform":
        return []
    if spec_kind not in kinds:
        return [
            FieldViolation(
                f"{path}.transform.{spec_kind}",
                f"the {spec_kind} transform is not supported by this executor",
            )
        ]
    if spec_kind == "filter":
        problem = predicate_problem(spec.filter.predicate)
        if problem:
            return [FieldViolation(f"{path}.transform.filter.predicate", problem)]
    return []


def _inputs(
    path: str,
    index: int,
    step: step_pb2.Step,
    steps: Sequence[step_pb2.Step],
    index_of: Mapping[str, int],
    kinds: Mapping[str, Any],
) -> tuple[tuple[str, ...], list[FieldViolation]]:
    role = step.WhichOneof("kind")
    if role == "source":
        if step.inputs:
            return (), [FieldViolation(f"{path}.inputs", "a source step takes no inputs")]
        return (), []
    inputs = tuple(step.inputs)
    if not inputs and index > 0:
        inputs = (steps[index - 1].name,)
    violations = [
        FieldViolation(f"{path}.inputs", f"{name!r} is not an earlier step of the stage")
        for name in inputs
        if index_of.get(name, index) >= index
    ]
    if role == "sink" and len(inputs) != 1:
        violations.append(
            FieldViolation(f"{path}.inputs", f"a sink takes one input, not {len(inputs)}")
        )
    elif role == "transform":
        kind = kinds.get(step.transform.WhichOneof("kind") or "")
        if kind is not None:
            low, high = kind.min_inputs, kind.max_inputs
            if len(inputs) < low or (high and len(inputs) > high):
                wanted = (
                    f"{low}" if low == high else f"{low} or more" if not high else f"{low}-{high}"
                )
                violations.append(
                    FieldViolation(
                        f"{path}.inputs",
                        f"a {kind.name} transform takes {wanted} input(s), not {len(inputs)}",
                    )
                )
    return inputs, violations


def _segments(
    nodes: list[StepNode], operators: frozenset[str]
) -> tuple[tuple[Segment, ...], list[FieldViolation]]:
    """Split the SQL steps into queries, each computing one stream."""
    by_name = {node.name: node for node in nodes}
    sql = {n.name for n in nodes if n.role == "transform" and n.name not in operators}
    outputs = {n.name for n in nodes if n.role == "sink" or n.name in operators}
    # What passes through Python: segment outputs are the SQL inputs of operators and
    # the sink, and SQL steps keeping a watermark (observed on their output).
    boundaries = {i for name in outputs for i in by_name[name].inputs if i in sql}
    boundaries |= {name for name in sql if by_name[name].watermark}
    streams = {n.name for n in nodes if n.role == "source"} | operators | boundaries

    owner: dict[str, str] = {}
    segments: list[Segment] = []
    violations: list[FieldViolation] = []
    for output in sorted(boundaries, key=lambda name: by_name[name].index):
        members: set[str] = set()
        leaves: set[str] = set()
        pending = [output]
        while pending:
            name = pending.pop()
            if name != output and name in streams:
                leaves.add(name)
                continue
            if name in members:
                continue
            members.add(name)
            if owner.setdefault(name, output) != output:
                node = by_name[name]
                violations.append(
                    FieldViolation(
                        f"steps[{node.index}]",
                        f"step {name!r} feeds both {owner[name]!r} and {output!r}, which run as "
                        "separate queries; a stage cannot fan a step out across them",
                    )
                )
            pending.extend(by_name[name].inputs)
        ordered = tuple(sorted(members, key=lambda n: by_name[n].index))
        segments.append(
            Segment(output, ordered, tuple(sorted(leaves, key=lambda n: by_name[n].index)))
        )
    # A stream is read once: by one query (maybe at several places), an operator or the sink.
    readers: dict[str, set[str]] = {}
    for segment in segments:
        for leaf in segment.leaves:
            readers.setdefault(leaf, set()).add(segment.output)
    for name in outputs:
        for leaf in by_name[name].inputs:
            if leaf in streams:
                readers.setdefault(leaf, set()).add(name)
    for stream, consumers in readers.items():
        if len(consumers) > 1:
            node = by_name[stream]
            names = ", ".join(repr(c) for c in sorted(consumers))
            violations.append(
                FieldViolation(
                    f"steps[{node.index}]",
                    f"step {stream!r} is read by {names}, which run separately; a stage "
                    "cannot fan a stream out across them",
                )
            )
    return tuple(segments), violations

"""Full validation of a pipeline spec: every problem becomes one field violation.

Validation collects all problems instead of stopping at the first, so a user fixes a
spec in one round trip. Field paths follow the request, e.g.
``pipeline.steps[2].inputs[0]`` or ``pipeline.steps[1].transform.filter.predicate``.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import FieldViolation, invalid_argument
from datadog_platform.core.expressions import predicate_problem
from datadog_platform.scheduler.domain import INVALID_PIPELINE_SPEC, INVALID_REQUEST

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,127}$")
NAME_RULE = "must start with a letter and contain only letters, digits, '_' and '-' (at most 128)"
LABEL_KEY_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
MAX_STEPS = 1000
MAX_DESCRIPTION_CHARS = 4096
MAX_TAG_CHARS = 64
MAX_LABEL_VALUE_CHARS = 256
MAX_REQUEST_ID_CHARS = 128

FORMAT_BY_EXTENSION = {
    ".csv": step_pb2.FILE_FORMAT_CSV,
    ".parquet": step_pb2.FILE_FORMAT_PARQUET,
    ".pq": step_pb2.FILE_FORMAT_PARQUET,
}
_KNOWN_FORMATS = frozenset(step_pb2.FileFormat.values())
_KNOWN_WRITE_MODES = frozenset(step_pb2.WriteMode.values())


def check_pipeline(pipeline: pipeline_pb2.Pipeline) -> None:
    """Raise INVALID_ARGUMENT (INVALID_PIPELINE_SPEC) listing every problem of ``pipeline``."""
    violations = pipeline_violations(pipeline)
    if violations:
        count = len(violations)
        raise invalid_argument(
            INVALID_PIPELINE_SPEC,
            f"the pipeline spec has {count} problem{'s' if count > 1 else ''}: "
            + "; ".join(f"{v.field}: {v.description}" for v in violations[:3])
            + ("; ..." if count > 3 else ""),
            violations,
        )


def check_request_id(request_id: str) -> None:
    """Raise INVALID_ARGUMENT if an idempotency key is unreasonable."""
    if len(request_id) > MAX_REQUEST_ID_CHARS or not request_id.isprintable():
        raise invalid_argument(
            INVALID_REQUEST,
            "request_id must be printable and at most 128 characters",
            [FieldViolation("request_id", "must be printable and at most 128 characters")],
        )


def pipeline_violations(pipeline: pipeline_pb2.Pipeline) -> list[FieldViolation]:
    """Every problem of ``pipeline``, in field order, one violation each."""
    violations: list[FieldViolation] = []
    violations += _name_violations("pipeline.name", pipeline.name)
    violations += _metadata_violations(pipeline)
    steps = list(pipeline.steps)
    if not steps:
        violations.append(FieldViolation("pipeline.steps", "must contain at least one step"))
        return violations
    if len(steps) > MAX_STEPS:
        violations.append(FieldViolation("pipeline.steps", f"must have at most {MAX_STEPS} steps"))
        return violations
    all_names = _index_of_all(steps)
    index_of: dict[str, int] = {}
    for i, step in enumerate(steps):
        path = f"pipeline.steps[{i}]"
        name_problems = _name_violations(f"{path}.name", step.name)
        violations += name_problems
        if not name_problems:
            if step.name in index_of:
                violations.append(
                    FieldViolation(
                        f"{path}.name",
                        f'duplicate step name "{step.name}" (also steps[{index_of[step.name]}])',
                    )
                )
            else:
                index_of[step.name] = i
        violations += _kind_violations(path, step)
        violations += _input_violations(path, step, steps, all_names)
    violations += _graph_violations(steps)
    return violations


def _index_of_all(steps: Sequence[step_pb2.Step]) -> dict[str, int]:
    """Index of the first step with each (non-empty) name."""
    index: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.name:
            index.setdefault(step.name, i)
    return index


def _name_violations(path: str, name: str) -> list[FieldViolation]:
    if not name:
        return [FieldViolation(path, "is required")]
    if not NAME_PATTERN.match(name):
        return [FieldViolation(path, f"{name!r} is not a valid name: {NAME_RULE}")]
    return []


def _metadata_violations(pipeline: pipeline_pb2.Pipeline) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if len(pipeline.description) > MAX_DESCRIPTION_CHARS:
        violations.append(
            FieldViolation(
                "pipeline.description", f"must be at most {MAX_DESCRIPTION_CHARS} characters"
            )
        )
    seen_tags: set[str] = set()
    for i, tag in enumerate(pipeline.tags):
        path = f"pipeline.tags[{i}]"
        if not tag.strip() or len(tag) > MAX_TAG_CHARS or any(c.isspace() for c in tag):
            violations.append(
                FieldViolation(path, f"must be 1 to {MAX_TAG_CHARS} characters without whitespace")
            )
        elif tag in seen_tags:
            violations.append(FieldViolation(path, f'duplicate tag "{tag}"'))
        seen_tags.add(tag)
    for key in sorted(pipeline.labels):
        path = f"pipeline.labels[{json.dumps(key)}]"
        if not LABEL_KEY_PATTERN.match(key):
            violations.append(
                FieldViolation(
                    path,
                    "label keys must start with a letter and contain only letters, digits, "
                    "'_', '.' and '-' (at most 63)",
                )
            )
        if len(pipeline.labels[key]) > MAX_LABEL_VALUE_CHARS:
            violations.append(
                FieldViolation(path, f"label values must be at most {MAX_LABEL_VALUE_CHARS} chars")
            )
    return violations


def _kind_violations(path: str, step: step_pb2.Step) -> list[FieldViolation]:
    kind = step.WhichOneof("kind")
    if kind is None:
        return [FieldViolation(path, "must set exactly one of source, transform or sink")]
    if kind == "source":
        return _source_violations(f"{path}.source", step.source)
    if kind == "transform":
        return _transform_violations(f"{path}.transform", step.transform)
    return _sink_violations(f"{path}.sink", step.sink)


def _source_violations(path: str, source: step_pb2.SourceSpec) -> list[FieldViolation]:
    if source.WhichOneof("kind") is None:
        return [FieldViolation(path, "must set a kind of source (file)")]
    return _file_violations(f"{path}.file", source.file.path, source.file.format)


def _sink_violations(path: str, sink: step_pb2.SinkSpec) -> list[FieldViolation]:
    if sink.WhichOneof("kind") is None:
        return [FieldViolation(path, "must set a kind of sink (file)")]
    violations = _file_violations(f"{path}.file", sink.file.path, sink.file.format)
    if sink.file.mode not in _KNOWN_WRITE_MODES:
        violations.append(FieldViolation(f"{path}.file.mode", "unknown write mode"))
    return violations


def _transform_violations(path: str, transform: step_pb2.TransformSpec) -> list[FieldViolation]:
    if transform.WhichOneof("kind") is None:
        return [FieldViolation(path, "must set a kind of transform (filter)")]
    problem = predicate_problem(transform.filter.predicate)
    if problem is not None:
        return [FieldViolation(f"{path}.filter.predicate", problem)]
    return []


def _file_violations(path: str, file_path: str, file_format: int) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not file_path.strip():
        violations.append(FieldViolation(f"{path}.path", "is required"))
    else:
        parts = PurePosixPath(file_path.replace("\\", "/"))
        if parts.is_absolute():
            violations.append(
                FieldViolation(f"{path}.path", "must be relative to the connection's root")
            )
        elif ".." in parts.parts:
            violations.append(
                FieldViolation(f"{path}.path", "must not leave the connection's root ('..')")
            )
    if file_format not in _KNOWN_FORMATS:
        violations.append(FieldViolation(f"{path}.format", "unknown file format"))
    elif (
        file_format == step_pb2.FILE_FORMAT_UNSPECIFIED
        and file_path.strip()
        and infer_format(file_path) == step_pb2.FILE_FORMAT_UNSPECIFIED
    ):
        violations.append(
            FieldViolation(
                f"{path}.format",
                "is unspecified and cannot be inferred from the extension "
                f"(known: {', '.join(FORMAT_BY_EXTENSION)})",
            )
        )
    return violations


def infer_format(file_path: str) -> int:
    """The file format implied by ``file_path``'s extension, or UNSPECIFIED."""
    suffix = PurePosixPath(file_path).suffix.lower()
    return FORMAT_BY_EXTENSION.get(suffix, step_pb2.FILE_FORMAT_UNSPECIFIED)


def _input_violations(
    path: str, step: step_pb2.Step, steps: Sequence[step_pb2.Step], index_of: dict[str, int]
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    kind = step.WhichOneof("kind")
    inputs = list(step.inputs)
    if kind == "source" and inputs:
        violations.append(FieldViolation(f"{path}.inputs", "a source takes no inputs"))
    elif kind in ("transform", "sink"):
        if not inputs:
            violations.append(FieldViolation(f"{path}.inputs", f"a {kind} needs exactly one input"))
        elif len(inputs) > 1:
            violations.append(
                FieldViolation(
                    f"{path}.inputs",
                    f"a {kind} takes exactly one input: several inputs (fan-in) "
                    "are not supported yet",
                )
            )
    for j, name in enumerate(inputs):
        if name not in index_of:
            violations.append(
                FieldViolation(f"{path}.inputs[{j}]", f'"{name}" names no step of this pipeline')
            )
        elif steps[index_of[name]].WhichOneof("kind") == "sink":
            violations.append(
                FieldViolation(f"{path}.inputs[{j}]", f'"{name}" is a sink, which has no output')
            )
    return violations


def _graph_violations(steps: Sequence[step_pb2.Step]) -> list[FieldViolation]:
    """Fan-out, cycles and outputs that flow nowhere."""
    index_of = _index_of_all(steps)
    consumers: dict[int, list[int]] = defaultdict(list)  # producer -> consumers (data flow)
    for i, step in enumerate(steps):
        for name in dict.fromkeys(step.inputs):  # a repeated input is one edge
            if name in index_of:
                consumers[index_of[name]].append(i)
    violations: list[FieldViolation] = []
    for i, step in enumerate(steps):
        users = consumers.get(i, [])
        kind = step.WhichOneof("kind")
        if len(users) > 1:
            names = ", ".join(f'"{steps[u].name}"' for u in users)
            violations.append(
                FieldViolation(
                    f"pipeline.steps[{i}]",
                    f'step "{step.name}" is consumed by several steps ({names}): '
                    "fan-out is not supported yet",
                )
            )
        elif not users and kind in ("source", "transform") and index_of.get(step.name) == i:
            # Only dead ends are reported: every step upstream of one is fixed with it.
            violations.append(
                FieldViolation(
                    f"pipeline.steps[{i}]",
                    f'the output of {kind} step "{step.name}" reaches no sink '
                    "(no step consumes it)",
                )
            )
    for cycle in _cycles(len(steps), consumers):
        first = cycle[0]
        j = list(steps[first].inputs).index(steps[cycle[-1]].name)
        names = " -> ".join(steps[i].name for i in [*cycle, first])
        violations.append(
            FieldViolation(f"pipeline.steps[{first}].inputs[{j}]", f"steps form a cycle: {names}")
        )
    return violations


def _cycles(count: int, edges: dict[int, list[int]]) -> list[list[int]]:
    """One cycle per strongly connected component that has one, as node lists in
    data-flow order starting at the component's lowest index."""
    cycles: list[list[int]] = []
    for component in _strongly_connected(count, edges):
        members = set(component)
        start = min(component)
        if len(component) == 1 and start not in edges.get(start, []):
            continue
        cycles.append(_path_back(start, edges, members))
    cycles.sort(key=lambda c: c[0])
    return cycles


def _path_back(start: int, edges: dict[int, list[int]], members: set[int]) -> list[int]:
    """Shortest path start -> ... -> start inside one component (breadth first)."""
    parent: dict[int, int] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in edges.get(node, []):
            if nxt not in members:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return [start]  # unreachable for a real component


def _strongly_connected(count: int, edges: dict[int, list[int]]) -> Iterable[list[int]]:
    """Tarjan's algorithm, iterative so that long chains do not hit the recursion limit."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    for root in range(count):
        if root in index:
            continue
        work: list[tuple[int, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            successors = edges.get(node, [])
            if child < len(successors):
                work.append((node, child + 1))
                nxt = successors[child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components

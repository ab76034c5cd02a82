"""Templating of step options: ``{{ params.x }}``, ``{{ ds }}``, ``{{ watermark }}``...

Every string field of a step (nested messages, repeated fields, map values and the
strings inside ``google.protobuf.Struct`` values) may be a Jinja2 template, rendered
when a stage is dispatched, in a :class:`~jinja2.sandbox.SandboxedEnvironment` with
:class:`~jinja2.StrictUndefined` (an unknown name is an error, never an empty
string). Only strings containing ``{{`` or ``{%`` are templates; a step's name,
inputs, ``after`` list and watermark are never rendered.

Variables: ``params`` (the run's params, JSON values), ``logical_date``,
``data_interval_start``, ``data_interval_end`` (ISO 8601 in UTC with its offset),
``ds`` (``YYYY-MM-DD`` of the logical date, UTC), ``run_id``, ``watermark`` (in a
step that keeps one: its saved value, or its ``initial``) and ``watermarks`` (step →
value, for every step keeping one).

The sandbox refuses private attributes (``''.__class__``), unsafe calls and huge
``*``/``**`` results; macros, includes and imports are refused at validation time.
Template authors are pipeline operators: the limits stop escapes from the sandbox,
not every way a template can spend memory (e.g. nested ``replace`` filters).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jinja2
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from jinja2 import meta, nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2
from datadog_platform.core.errors import FieldViolation, invalid_argument
from datadog_platform.scheduler.domain import UNKNOWN_PARAM, JsonValue, Run

#: Markers of a template; a string without them is used as is.
_MARKERS = ("{{", "{%")
_MARKER_BYTES = tuple(m.encode() for m in _MARKERS)
#: Step fields that are identifiers or literal settings, never rendered.
_LITERAL_STEP_FIELDS = frozenset({"name", "inputs", "after", "watermark"})
#: Names of the run that every template may use.
RUN_VARIABLES = frozenset(
    {"params", "logical_date", "data_interval_start", "data_interval_end", "ds", "run_id"}
)
#: The most characters one rendered field may have.
MAX_RENDERED_CHARS = 1_000_000
#: Largest sequence a ``*`` may build, and bits of an integer a ``**`` may build.
_MAX_REPEAT = 100_000
_MAX_POWER_BITS = 4096
#: Template tags that reach for other templates or define callables: not for step options.
_FORBIDDEN_NODES: dict[type[nodes.Node], str] = {
    nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
    nodes.Extends: "{% extends %}",
    nodes.Block: "{% block %}",
}
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class TemplateError(Exception):
    """A template of a step could not be rendered (the stage fails with TEMPLATE_ERROR)."""

    def __init__(self, step: str, field: str, message: str) -> None:
        super().__init__(f'step "{step}": {field}: {message}')
        self.step = step
        self.field = field
        self.message = message


class _Names(dict[str, Any]):
    """``params`` and ``watermarks``: in ``params.items`` the param wins over the dict method."""


class _Sandbox(SandboxedEnvironment):
    """The sandbox, with ``*`` and ``**`` bounded so one expression cannot eat the memory."""

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is _Names:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(count, int)
                    and len(seq) * count > _MAX_REPEAT
                ):
                    raise SecurityError(f"a repetition longer than {_MAX_REPEAT} items")
        elif (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right * math.log2(abs(left)) > _MAX_POWER_BITS
        ):
            raise SecurityError(f"a power larger than {_MAX_POWER_BITS} bits")
        return super().call_binop(context, operator, left, right)


_ENV = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
# Stateful helpers (namespace() allows accumulation across loop iterations) are of no
# use in a step option.
for _name in ("lipsum", "cycler", "joiner", "namespace"):
    _ENV.globals.pop(_name, None)
_GLOBALS = frozenset(_ENV.globals)


# --- compiled templates ----------------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    template: jinja2.Template
    #: Top-level names the template reads from the context.
    names: frozenset[str]
    #: Constant keys read from ``params`` / ``watermarks`` (``params.x``, ``params["x"]``).
    params: tuple[str, ...]
    watermarks: tuple[str, ...]
    #: Problems found in the syntax tree (forbidden tags, private attributes).
    problems: tuple[str, ...]


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> _Compiled:
    """Parse and compile ``source`` once (raises :class:`jinja2.TemplateSyntaxError`)."""
    tree = _ENV.parse(source)
    names = frozenset(meta.find_undeclared_variables(tree))
    keys: dict[str, list[str]] = {"params": [], "watermarks": []}
    problems: list[str] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            key: object = node.attr
            if node.attr.startswith("_"):
                problems.append(f'private attribute "{node.attr}" is not allowed')
        else:
            key = node.arg.value if isinstance(node.arg, nodes.Const) else None
        target = node.node
        if isinstance(target, nodes.Name) and target.name in keys and isinstance(key, str):
            keys[target.name].append(key)
    for node_type, tag in _FORBIDDEN_NODES.items():
        if any(True for _ in tree.find_all(node_type)):
            problems.append(f"{tag} is not allowed in step options")
    template = _ENV.from_string(source)
    return _Compiled(
        template=template,
        names=names,
        params=tuple(dict.fromkeys(keys["params"])),
        watermarks=tuple(dict.fromkeys(keys["watermarks"])),
        problems=tuple(dict.fromkeys(problems)),
    )


def is_template(text: str) -> bool:
    """Whether ``text`` is rendered (it contains ``{{`` or ``{%``)."""
    return any(marker in text for marker in _MARKERS)


def template_problems(
    source: str,
    *,
    params: frozenset[str] | set[str],
    watermarks: frozenset[str] | set[str],
    has_watermark: bool,
) -> list[str]:
    """Why ``source`` would not render for any run, as messages (empty: it is fine).

    ``params``: declared param names; ``watermarks``: steps keeping a watermark;
    ``has_watermark``: whether the step holding ``source`` keeps one.
    """
    try:
        compiled = _compile(source)
    except jinja2.TemplateSyntaxError as exc:
        return [f"template syntax error: {exc.message} (line {exc.lineno})"]
    problems = list(compiled.problems)
    allowed = RUN_VARIABLES | {"watermarks"} | _GLOBALS
    for name in sorted(compiled.names - allowed):
        if name == "watermark":
            if not has_watermark:
                problems.append(
                    '"watermark" is only defined in a step that keeps a watermark '
                    "(use watermarks.<step> to read another step's)"
                )
            continue
        problems.append(
            f'unknown name "{name}" (known: {", ".join(sorted(RUN_VARIABLES | {"watermarks"}))}'
            + (", watermark" if has_watermark else "")
            + ")"
        )
    if "params" in compiled.names:
        for key in compiled.params:
            if key not in params:
                declared = ", ".join(sorted(params)) or "none"
                problems.append(f'unknown param "{key}" (declared: {declared})')
    if "watermarks" in compiled.names:
        for key in compiled.watermarks:
            if key not in watermarks:
                problems.append(f'step "{key}" keeps no watermark')
    return problems


# --- walking the string fields of a message --------------------------------------------

_Slot = tuple[str, str, Callable[[str], None]]


def _string_slots(
    message: Message, prefix: str, skip: frozenset[str] = frozenset()
) -> Iterator[_Slot]:
    """Every set string field under ``message``: (path, value, setter)."""
    full_name = message.DESCRIPTOR.full_name
    if full_name == "google.protobuf.Struct":
        for key in sorted(message.fields):  # type: ignore[attr-defined]
            yield from _value_slots(message.fields[key], f"{prefix}[{json.dumps(key)}]")  # type: ignore[attr-defined]
        return
    if full_name == "google.protobuf.ListValue":
        for i, value in enumerate(message.values):  # type: ignore[attr-defined]
            yield from _value_slots(value, f"{prefix}[{i}]")
        return
    if full_name == "google.protobuf.Value":
        yield from _value_slots(message, prefix)
        return
    for field, value in message.ListFields():
        if field.name in skip:
            continue
        path = f"{prefix}.{field.name}" if prefix else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key in sorted(value):
                key_path = f"{path}[{json.dumps(key)}]"
                if value_field.type == FieldDescriptor.TYPE_STRING:
                    yield key_path, value[key], functools.partial(value.__setitem__, key)
                elif value_field.message_type is not None:
                    yield from _string_slots(value[key], key_path)
        elif field.is_repeated:
            if field.type == FieldDescriptor.TYPE_STRING:
                for i, item in enumerate(value):
                    yield f"{path}[{i}]", item, functools.partial(value.__setitem__, i)
            elif field.message_type is not None:
                for i, item in enumerate(value):
                    yield from _string_slots(item, f"{path}[{i}]")
        elif field.type == FieldDescriptor.TYPE_STRING:
            yield path, value, functools.partial(setattr, message, field.name)
        elif field.message_type is not None:
            yield from _string_slots(value, path)


def _value_slots(value: Message, path: str) -> Iterator[_Slot]:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        yield path, value.string_value, functools.partial(setattr, value, "string_value")  # type: ignore[attr-defined]
    elif kind == "struct_value":
        yield from _string_slots(value.struct_value, path)  # type: ignore[attr-defined]
    elif kind == "list_value":
        yield from _string_slots(value.list_value, path)  # type: ignore[attr-defined]


def _may_have_templates(step: step_pb2.Step) -> bool:
    """Cheap pre-check: strings are stored verbatim in the wire format, so a step whose
    bytes hold no marker has no template (a false positive only costs a walk)."""
    data = step.SerializeToString()
    return any(marker in data for marker in _MARKER_BYTES)


def template_fields(step: step_pb2.Step) -> list[tuple[str, str]]:
    """The step's templated string fields: (path relative to the step, source)."""
    if not _may_have_templates(step):
        return []
    return [
        (path, text)
        for path, text, _ in _string_slots(step, "", _LITERAL_STEP_FIELDS)
        if is_template(text)
    ]


# --- validation --------------------------------------------------------------------------


def check_templates(pipeline: pipeline_pb2.Pipeline) -> list[FieldViolation]:
    """One violation per template problem of every step, e.g. on
    ``pipeline.steps[2].source.database.query``."""
    params = frozenset(pipeline.params)
    watermarks = frozenset(s.name for s in pipeline.steps if s.HasField("watermark"))
    violations: list[FieldViolation] = []
    for i, step in enumerate(pipeline.steps):
        violations += step_template_violations(
            f"pipeline.steps[{i}]", step, params=params, watermarks=watermarks
        )
    return violations


def step_template_violations(
    path: str,
    step: step_pb2.Step,
    *,
    params: frozenset[str],
    watermarks: frozenset[str],
) -> list[FieldViolation]:
    """The template problems of one step, its fields prefixed with ``path``."""
    violations: list[FieldViolation] = []
    for field, source in template_fields(step):
        for problem in template_problems(
            source, params=params, watermarks=watermarks, has_watermark=step.HasField("watermark")
        ):
            violations.append(FieldViolation(f"{path}.{field}", problem))
    return violations


# --- params --------------------------------------------------------------------------------


def param_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a param name (it must read as ``params.<name>``), or None."""
    if _PARAM_NAME.fullmatch(name):
        return None
    return (
        f"{name!r} is not a valid param name: it must start with a letter or '_' and "
        "contain only letters, digits and '_' (at most 128)"
    )


def json_value(value: JsonValue) -> JsonValue:
    """``value`` with integral floats as ints (protobuf numbers are doubles: 100 → 100.0,
    which would render as "100.0")."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    return value


def param_defaults(pipeline: pipeline_pb2.Pipeline) -> dict[str, JsonValue]:
    """The pipeline's params with their default JSON values."""
    return {
        name: json_value(json_format.MessageToDict(value))
        for name, value in sorted(pipeline.params.items())
    }


def resolve_params(
    pipeline: pipeline_pb2.Pipeline, overrides: Mapping[str, JsonValue] | None
) -> dict[str, JsonValue]:
    """A run's params: the defaults with ``overrides`` applied.

    INVALID_ARGUMENT (UNKNOWN_PARAM) names every override the pipeline does not declare.
    """
    params = param_defaults(pipeline)
    overrides = overrides or {}
    unknown = sorted(name for name in overrides if name not in params)
    if unknown:
        declared = ", ".join(params) or "none"
        listed = ", ".join(f'"{name}"' for name in unknown)
        raise invalid_argument(
            UNKNOWN_PARAM,
            f'pipeline "{pipeline.name}" declares no param {listed} (declared: {declared})',
            [
                FieldViolation(
                    f"params[{json.dumps(name)}]",
                    f"the pipeline declares no such param (declared: {declared})",
                )
                for name in unknown
            ],
            pipeline=pipeline.name,
        )
    params.update({name: json_value(value) for name, value in overrides.items()})
    return params


# --- rendering -----------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


class TemplateContext:
    """What the templates of one run see (see the module docstring)."""

    __slots__ = ("_variables", "watermarks")

    def __init__(
        self,
        *,
        params: Mapping[str, JsonValue],
        logical_date: datetime,
        data_interval_start: datetime,
        data_interval_end: datetime,
        run_id: str,
        watermarks: Mapping[str, str],
    ) -> None:
        self.watermarks = _Names(watermarks)
        utc_logical = (
            logical_date if logical_date.tzinfo else logical_date.replace(tzinfo=UTC)
        ).astimezone(UTC)
        self._variables: dict[str, Any] = {
            "params": _Names({name: json_value(value) for name, value in params.items()}),
            "logical_date": _iso(logical_date),
            "data_interval_start": _iso(data_interval_start),
            "data_interval_end": _iso(data_interval_end),
            "ds": utc_logical.date().isoformat(),
            "run_id": run_id,
            "watermarks": self.watermarks,
        }

    @classmethod
    def for_run(
        cls, pipeline: pipeline_pb2.Pipeline, run: Run, watermarks: Mapping[str, str]
    ) -> TemplateContext:
        """The context of ``run``; ``watermarks`` are the saved values (step → value),
        a step keeping a watermark without a saved value gets its ``initial``."""
        logical = run.logical_date or run.data_interval_start or run.create_time
        return cls(
            params=run.params,
            logical_date=logical,
            data_interval_start=run.data_interval_start or logical,
            data_interval_end=run.data_interval_end or logical,
            run_id=run.run_id,
            watermarks={
                step.name: watermarks.get(step.name, step.watermark.initial)
                for step in pipeline.steps
                if step.HasField("watermark")
            },
        )

    def variables(self, step: step_pb2.Step) -> dict[str, Any]:
        """The variables of ``step``'s templates."""
        if step.HasField("watermark"):
            watermark = self.watermarks.get(step.name, step.watermark.initial)
            return {**self._variables, "watermark": watermark}
        return self._variables


def render(source: str, variables: Mapping[str, Any]) -> str:
    """Render one template (raises jinja2 errors, SecurityError, or ValueError when too long)."""
    compiled = _compile(source)
    if compiled.problems:  # refused at validation; a spec stored unchecked still cannot
        raise SecurityError(compiled.problems[0])
    parts: list[str] = []
    size = 0
    for part in compiled.template.generate(variables):
        size += len(part)
        if size > MAX_RENDERED_CHARS:
            raise ValueError(f"renders to more than {MAX_RENDERED_CHARS} characters")
        parts.append(part)
    return "".join(parts)


def render_step(step: step_pb2.Step, context: TemplateContext) -> step_pb2.Step:
    """``step`` with every template rendered; ``step`` itself when it has none.

    Raises :class:`TemplateError` naming the step and the field.
    """
    if not _may_have_templates(step):
        return step
    rendered = step_pb2.Step()
    rendered.CopyFrom(step)
    variables: dict[str, Any] | None = None
    changed = False
    for path, text, setter in list(_string_slots(rendered, "", _LITERAL_STEP_FIELDS)):
        if not is_template(text):
            continue
        if variables is None:
            variables = context.variables(step)
        try:
            value = render(text, variables)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                step.name, path, f"template syntax error: {exc.message} (line {exc.lineno})"
            ) from exc
        except Exception as exc:  # any error of the template's own making
            raise TemplateError(step.name, path, f"{type(exc).__name__}: {exc}") from exc
        setter(value)
        changed = True
    return rendered if changed else step

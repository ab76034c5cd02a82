"""Load pipeline files: YAML or JSON documents that are exactly the JSON mapping of ``Pipeline``.

Problems are reported as :class:`SpecError` with one readable message naming the file,
the place and the problem, so the CLI can print it and exit 4 without calling the server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pool, json_format

from datadog_platform.api.scheduler.v1 import pipeline_pb2


class SpecError(Exception):
    """A pipeline file that cannot be read or is not a valid ``Pipeline`` mapping."""


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that keeps dates and times as strings and reads booleans as
    YAML 1.2 does.

    ``Timestamp`` fields and free text take RFC 3339 strings in the JSON mapping;
    PyYAML would otherwise turn ``2026-01-01`` into a ``date`` the parser rejects. And
    PyYAML follows YAML 1.1, where ``on``/``off``/``yes``/``no`` are booleans, so a
    join's ``on:`` key would become ``True``; only true/false are booleans here.
    """


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", _BOOL)
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_pipeline(path: str | Path) -> pipeline_pb2.Pipeline:
    """Read a ``.yaml``/``.yml``/``.json`` pipeline file into a ``Pipeline`` message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not a pipeline file") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    is_json = path.suffix.lower() == ".json"
    document = _parse_json(path, text) if is_json else _parse_yaml(path, text)
    return pipeline_from_dict(document, source=str(path))


def pipeline_from_dict(document: Any, source: str = "pipeline") -> pipeline_pb2.Pipeline:
    """Parse a decoded document (a mapping) into a ``Pipeline``; ``source`` prefixes errors."""
    if document is None:
        raise SpecError(f"{source}: the file is empty")
    if not isinstance(document, dict):
        raise SpecError(
            f"{source}: expected a mapping of Pipeline fields (name, steps, ...), "
            f"got {_kind_of(document)}"
        )
    try:
        return json_format.ParseDict(document, pipeline_pb2.Pipeline())
    except json_format.ParseError as exc:
        raise SpecError(f"{source}: {readable_parse_error(str(exc))}") from None


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or "syntax error"
        context = f" ({exc.context})" if exc.context else ""
        raise SpecError(f"{where}: invalid YAML: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {exc}") from None


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None


_NESTED_PREFIX = re.compile(r"^(Failed to parse \w+ field: )+")
_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "([^"]+)" at "([^"]*)"')
_BAD_ENUM = re.compile(r"Invalid enum value (\S+) for enum type ([\w.]+) at (\S+?)\.*$")
_NOT_A_LIST = re.compile(r"repeated field (\w+) must be in \[\] which is (.*) at (\S+?)\.*$")
_MULTIPLE_ONEOF = re.compile(
    r'Message type "([\w.]+)" should not have multiple "(\w+)" oneof fields at "([^"]*)"'
)


def readable_parse_error(message: str) -> str:
    """Rewrite a protobuf ``json_format.ParseError`` message for people.

    The parser nests "Failed to parse X field:" prefixes and lists known fields in
    camelCase on a second line; say instead what is wrong, where, and what is allowed.
    """
    first_line = message.strip().splitlines()[0] if message.strip() else message
    core = _NESTED_PREFIX.sub("", first_line).strip()
    if match := _UNKNOWN_FIELD.search(core):
        type_name, field, where = match.groups()
        known = _field_names(type_name)
        hint = f"; expected one of: {', '.join(known)}" if known else ""
        return f'unknown field "{field}" at {where}{hint}'
    if match := _BAD_ENUM.search(core):
        value, enum_name, where = match.groups()
        allowed = _enum_values(enum_name)
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f'invalid value "{value}" at {where}{hint}'
    if match := _MULTIPLE_ONEOF.search(core):
        type_name, oneof, where = match.groups()
        members = _oneof_members(type_name, oneof)
        choices = f" ({', '.join(members)})" if members else ""
        return f"{where} sets more than one {oneof}{choices}; set exactly one"
    if match := _NOT_A_LIST.search(core):
        field, value, where = match.groups()
        return f'field "{field}" at {where} must be a list, got {value!r}'
    # Other failures ("expected string ...", "repeated field steps must be in []")
    # read well enough once the nesting is gone; keep the field named by the prefix.
    fields = re.findall(r"Failed to parse (\w+) field: ", first_line)
    where = f"field {'.'.join(fields)}: " if fields else ""
    return f"{where}{core.rstrip('.')}"


# Fields the server sets: a file may carry them (they are ignored) but they are no
# suggestion worth making.
_OUTPUT_ONLY = {
    pipeline_pb2.Pipeline.DESCRIPTOR.full_name: frozenset(
        {"version", "create_time", "update_time", "paused", "next_run_time"}
    ),
}


def _field_names(type_name: str) -> list[str]:
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        return []
    hidden = _OUTPUT_ONLY.get(descriptor.full_name, frozenset())
    return [f.name for f in descriptor.fields if f.name not in hidden]


def _enum_values(enum_name: str) -> list[str]:
    try:
        descriptor = descriptor_pool.Default().FindEnumTypeByName(enum_name)
    except KeyError:
        return []
    return [v.name for v in descriptor.values if not v.name.endswith("_UNSPECIFIED")]


def _oneof_members(type_name: str, oneof: str) -> list[str]:
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        return []
    group = descriptor.oneofs_by_name.get(oneof)
    return [f.name for f in group.fields] if group else []


def _kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__

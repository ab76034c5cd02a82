"""``-o table|json|yaml``: machine-readable output of the read commands.

JSON and YAML are the proto3 JSON mapping of the API's messages, with the proto field
names (``pipeline_version``, as in pipeline files), every field present even when it
holds its default, enums by name, timestamps in RFC 3339 and 64-bit integers as strings
(as the mapping says). Lists are ``{"<items>": [...]}`` with every page collected.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml
from google.protobuf import json_format, message

TABLE, JSON, YAML = "table", "json", "yaml"
FORMATS = (TABLE, JSON, YAML)


def add_output_flag(parser: argparse.ArgumentParser) -> None:
    """``-o/--output table|json|yaml`` (default table)."""
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default=TABLE,
        help="output format: table for people (default), json or yaml for scripts "
        "(the API's proto3 JSON mapping)",
    )


def as_dict(msg: message.Message) -> dict[str, Any]:
    """A message as its proto3 JSON mapping, with field names as in the .proto files."""
    return json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def as_list(items: Iterable[message.Message]) -> list[dict[str, Any]]:
    """Each message as :func:`as_dict`."""
    return [as_dict(item) for item in items]


def document(value: message.Message | Mapping[str, Any]) -> Any:
    """A message or a mapping (which may hold messages and lists of them) as plain data."""
    if isinstance(value, message.Message):
        return as_dict(value)
    if isinstance(value, Mapping):
        return {key: document(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [document(item) for item in value]
    return value


def render(value: message.Message | Mapping[str, Any], fmt: str) -> list[str]:
    """``value`` in ``fmt`` (json or yaml) as output lines."""
    data = document(value)
    if fmt == JSON:
        return json.dumps(data, indent=2, ensure_ascii=False).splitlines()
    if fmt == YAML:
        return yaml_text(data).splitlines()
    raise ValueError(f"not a machine format: {fmt!r}")


def render_stream_item(value: message.Message | Mapping[str, Any], fmt: str) -> list[str]:
    """One item of a stream: a JSON line, or a YAML document (``---`` first)."""
    data = document(value)
    if fmt == JSON:
        return [json.dumps(data, ensure_ascii=False, separators=(",", ":"))]
    return ["---", *yaml_text(data).splitlines()]


def yaml_text(data: Any) -> str:
    """Block-style YAML keeping the mapping's key order."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def is_machine(args: argparse.Namespace) -> bool:
    """Whether ``-o json`` or ``-o yaml`` was asked for."""
    return getattr(args, "output", TABLE) != TABLE


def items(name: str, values: Sequence[message.Message]) -> dict[str, Any]:
    """``{name: [...]}``: the shape of a list response with all its pages."""
    return {name: list(values)}

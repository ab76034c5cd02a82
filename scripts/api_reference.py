"""Writes docs/api.md, the API reference, from the proto comments.

The source is gen/datadog_platform/api/descriptor_set.binpb (generated with source
info by scripts/gen-protos), so the reference says exactly what the contracts say:
every service and RPC (with its REST mapping from the ``google.api.http``
annotation), every message with its fields, every enum with its values.
``tests/unit/test_api_reference.py`` fails when docs/api.md is out of date.

    python scripts/api_reference.py            # rewrite docs/api.md
    python scripts/api_reference.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parents[1]
DESCRIPTOR_SET = REPO / "gen" / "datadog_platform" / "api" / "descriptor_set.binpb"
OUTPUT = REPO / "docs" / "api.md"
PREFIX = "datadog_platform/"

# Field numbers in descriptor.proto, for SourceCodeInfo paths.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM = 2, 3, 4
_VALUE, _METHOD = 2, 2

_SCALARS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
}


def load() -> descriptor_pb2.FileDescriptorSet:
    """The generated descriptor set."""
    return descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())


def http_rule(method: descriptor_pb2.MethodDescriptorProto) -> tuple[str, str, str] | None:
    """(verb, path, body) of a method's google.api.http annotation, if any."""
    options = method.options
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    if verb is None or verb == "custom":
        return None
    return verb.upper(), getattr(rule, verb), rule.body


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(location.path): " ".join(location.leading_comments.split())
        for location in file.source_code_info.location
        if location.leading_comments
    }


def _type(field: descriptor_pb2.FieldDescriptorProto, maps: dict[str, str]) -> str:
    if field.type_name:
        name = field.type_name.lstrip(".")
        if name in maps:
            return maps[name]
        kind = name.rsplit(".", 1)[-1] if name.startswith("datadog_platform.") else name
    else:
        kind = _SCALARS.get(field.type, "?")
    if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
        return f"repeated {kind}"
    return f"optional {kind}" if field.proto3_optional else kind


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _message(
    lines: list[str],
    message: descriptor_pb2.DescriptorProto,
    full_name: str,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
) -> None:
    # Map fields are repeated *Entry messages; show them as map<k, v>.
    maps: dict[str, str] = {}
    for nested in message.nested_type:
        if nested.options.map_entry:
            key, value = nested.field
            maps[f"{full_name}.{nested.name}"] = f"map<{_type(key, {})}, {_type(value, {})}>"
    lines += [f"### {message.name}", "", comments.get(path, ""), ""]
    if message.field:
        lines += ["| field | type | description |", "|---|---|---|"]
        for index, field in enumerate(message.field):
            description = comments.get((*path, _FIELD, index), "")
            lines.append(f"| `{field.name}` | `{_type(field, maps)}` | {_cell(description)} |")
        lines.append("")
    for index, nested in enumerate(message.nested_type):
        if not nested.options.map_entry:
            _message(lines, nested, f"{full_name}.{nested.name}", (*path, _NESTED, index), comments)


def render(files: descriptor_pb2.FileDescriptorSet) -> str:
    """docs/api.md for the project's files of the set."""
    lines = [
        "# API reference",
        "",
        "Generated from the comments of `protos/` by `scripts/api_reference.py` (run",
        "`make docs`); do not edit by hand. REST paths are the `google.api.http` annotations a",
        "gRPC-JSON transcoder serves (see [rest.md](rest.md)).",
        "",
    ]
    for file in sorted(files.file, key=lambda f: f.name):
        if not file.name.startswith(PREFIX):
            continue
        comments = _comments(file)
        lines += [f"## `{file.name}`", "", f"Package `{file.package}`.", ""]
        for s_index, service in enumerate(file.service):
            lines += [f"### service {service.name}", "", comments.get((_SERVICE, s_index), ""), ""]
            lines += ["| RPC | request → response | REST | description |", "|---|---|---|---|"]
            for m_index, method in enumerate(service.method):
                rule = http_rule(method)
                rest = f"`{rule[0]} {rule[1]}`" if rule else ""
                stream = "stream " if method.server_streaming else ""
                request = method.input_type.rsplit(".", 1)[-1]
                response = method.output_type.rsplit(".", 1)[-1]
                description = comments.get((_SERVICE, s_index, _METHOD, m_index), "")
                lines.append(
                    f"| `{method.name}` | `{request}` → `{stream}{response}` | {rest} "
                    f"| {_cell(description)} |"
                )
            lines.append("")
        for e_index, enum in enumerate(file.enum_type):
            lines += [f"### enum {enum.name}", "", comments.get((_ENUM, e_index), ""), ""]
            lines += ["| value | number | description |", "|---|---|---|"]
            for v_index, value in enumerate(enum.value):
                description = comments.get((_ENUM, e_index, _VALUE, v_index), "")
                lines.append(f"| `{value.name}` | {value.number} | {_cell(description)} |")
            lines.append("")
        for m_index, message in enumerate(file.message_type):
            _message(
                lines, message, f"{file.package}.{message.name}", (_MESSAGE, m_index), comments
            )
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md is stale")
    args = parser.parse_args()
    text = render(load())
    if args.check:
        if OUTPUT.read_text() != text:
            print("docs/api.md is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

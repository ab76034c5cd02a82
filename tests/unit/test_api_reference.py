"""The descriptor set in gen/, its REST annotations, and docs/api.md generated from it."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

from datadog_platform.api.scheduler.v1 import scheduler_service_pb2

REPO = Path(__file__).resolve().parents[2]
reference = runpy.run_path(str(REPO / "scripts" / "api_reference.py"))


def _service():
    files = {f.name: f for f in reference["load"]().file}
    file = files["datadog_platform/api/scheduler/v1/scheduler_service.proto"]
    (service,) = file.service
    return files, service


def test_descriptor_set_holds_every_project_file_and_its_imports() -> None:
    files, _ = _service()
    for proto in (REPO / "protos").rglob("*.proto"):
        assert str(proto.relative_to(REPO / "protos")) in files
    # Imports are included, so a transcoder needs nothing else.
    assert "google/api/http.proto" in files
    assert "google/protobuf/timestamp.proto" in files


def test_every_public_rpc_has_a_rest_mapping_naming_real_fields() -> None:
    _, service = _service()
    generated = scheduler_service_pb2.DESCRIPTOR.services_by_name["SchedulerService"]
    assert {m.name for m in service.method} == set(generated.methods_by_name)
    seen: set[tuple[str, str]] = set()
    for method in service.method:
        rule = reference["http_rule"](method)
        assert rule is not None, f"{method.name} has no google.api.http annotation"
        verb, path, body = rule
        assert (verb, path) not in seen, f"{method.name}: {verb} {path} is taken"
        seen.add((verb, path))
        request = generated.methods_by_name[method.name].input_type
        for variable in re.findall(r"{([^}=]+)", path):
            message = request
            for part in variable.split("."):
                assert part in message.fields_by_name, f"{method.name}: {variable}"
                field = message.fields_by_name[part]
                message = field.message_type
        assert body in ("", "*"), method.name
        # Reads and deletes take their fields from the path and query; the rest a body.
        assert (verb in ("GET", "DELETE")) == (body == ""), f"{method.name}: {verb} {body!r}"


def test_docs_api_md_is_up_to_date() -> None:
    expected = reference["render"](reference["load"]())
    assert (REPO / "docs" / "api.md").read_text() == expected, (
        "docs/api.md is out of date: run `make docs`"
    )

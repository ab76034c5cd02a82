"""Which connections a pipeline spec names: shared by the scheduler (checking them at
CreatePipeline) and the CLI (``connector test -f``). Nothing here imports grpc."""

from __future__ import annotations

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2

#: The connection a file source or sink without one uses.
DEFAULT_FILE_CONNECTION = "local"


def connection_references(spec: pipeline_pb2.Pipeline) -> list[tuple[str, str]]:
    """(field path, connection name) of every connection the spec's steps name.

    An empty file connection stands for "local"; empty other names (refused by
    validation) and templated names (known only at run time) are left out.
    """
    found: list[tuple[str, str]] = []
    for index, step in enumerate(spec.steps):
        kind = step.WhichOneof("kind")
        if kind not in ("source", "sink"):
            continue
        container = getattr(step, kind)
        sub = container.WhichOneof("kind")
        if sub is None:
            continue
        options = getattr(container, sub)
        if "connection" not in options.DESCRIPTOR.fields_by_name:
            continue  # inline, discard, artifact: no connection
        name = options.connection
        if not name and isinstance(options, step_pb2.FileSource | step_pb2.FileSink):
            name = DEFAULT_FILE_CONNECTION
        if name and "{{" not in name and "{%" not in name:
            found.append((f"pipeline.steps[{index}].{kind}.{sub}.connection", name))
    return found

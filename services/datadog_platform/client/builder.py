"""The pipeline builder: ``Pipeline("name").add_source(...).add_transformation(...)
.add_sink(...)`` produces the same ``Pipeline`` message as the equivalent YAML file.

Each step kind is a keyword argument named after the field of ``SourceSpec``,
``TransformSpec`` or ``SinkSpec`` (``file=``, ``filter=``, ``discard=``, ...) whose
value is the kind's message or its JSON mapping, exactly as written under that key in
YAML. A transformation or sink without ``inputs`` consumes the step added before it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Self, overload

from google.protobuf import duration_pb2, json_format, message_factory
from google.protobuf.message import Message

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.client import _requests as req
from datadog_platform.client.aio import AsyncClient
from datadog_platform.client.sync import Client

#: A message field given as the message itself or its JSON mapping.
MessageLike = Message | Mapping[str, Any]
#: A duration: seconds, a JSON duration string such as "90s", or the message.
DurationLike = float | int | str | duration_pb2.Duration


class Pipeline:
    """A pipeline spec under construction; every ``add_*`` returns the builder itself.

    Example::

        pipeline = (
            Pipeline("big_orders", description="Orders over 100")
            .add_source("orders", file={"path": "orders.csv", "format": "FILE_FORMAT_CSV"})
            .add_transformation("big", filter={"predicate": "amount > 100"})
            .add_sink("out", file={"path": "out/big.parquet"})
        )
        pipeline.create(client)
        run = pipeline.run(client, wait=True)
    """

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        schedule: str | MessageLike | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        default_retry: MessageLike | None = None,
        max_active_runs: int = 0,
        max_active_tasks: int = 0,
        run_timeout: DurationLike | None = None,
    ) -> None:
        """``schedule`` is a cron expression, a ``Schedule`` or its JSON mapping;
        ``params`` maps names to JSON defaults."""
        spec = pipeline_pb2.Pipeline(
            name=name,
            description=description,
            tags=list(tags),
            labels=dict(labels or {}),
            max_active_runs=max_active_runs,
            max_active_tasks=max_active_tasks,
        )
        if schedule is not None:
            if isinstance(schedule, str):
                schedule = {"cron": schedule}
            spec.schedule.CopyFrom(req.message(schedule, pipeline_pb2.Schedule, "schedule"))
        req.set_params(spec.params, params)
        if default_retry is not None:
            spec.default_retry.CopyFrom(
                req.message(default_retry, step_pb2.RetryPolicy, "default_retry")
            )
        if run_timeout is not None:
            spec.run_timeout.CopyFrom(_duration(run_timeout, "run_timeout"))
        self._spec = spec

    @property
    def name(self) -> str:
        """The pipeline's name."""
        return self._spec.name

    def add_source(
        self,
        name: str,
        *,
        after: Iterable[str] = (),
        retry: MessageLike | None = None,
        timeout: DurationLike | None = None,
        watermark: MessageLike | None = None,
        **kind: MessageLike,
    ) -> Self:
        """Add a source step: one of ``file``, ``database``, ``rest``, ``artifact``,
        ``inline`` (e.g. ``inline={"rows": [{"id": 1}]}``)."""
        step = self._step(name, [], after, retry, timeout, watermark)
        _set_kind(step.source, kind, f"source {name!r}")
        return self._add(step)

    def add_transformation(
        self,
        name: str,
        *,
        inputs: Iterable[str] | None = None,
        after: Iterable[str] = (),
        retry: MessageLike | None = None,
        timeout: DurationLike | None = None,
        watermark: MessageLike | None = None,
        **kind: MessageLike,
    ) -> Self:
        """Add a transform step: one of the ``TransformSpec`` kinds (``filter``,
        ``select``, ``derive``, ``aggregate``, ``join``, ``sql``, ``check``, ...)."""
        step = self._step(name, inputs, after, retry, timeout, watermark)
        _set_kind(step.transform, kind, f"transformation {name!r}")
        return self._add(step)

    def add_sink(
        self,
        name: str,
        *,
        inputs: Iterable[str] | None = None,
        after: Iterable[str] = (),
        retry: MessageLike | None = None,
        timeout: DurationLike | None = None,
        **kind: MessageLike,
    ) -> Self:
        """Add a sink step: one of ``file``, ``database``, ``rest``, ``artifact``,
        ``discard`` (``discard={}``)."""
        step = self._step(name, inputs, after, retry, timeout, None)
        _set_kind(step.sink, kind, f"sink {name!r}")
        return self._add(step)

    def to_proto(self) -> pipeline_pb2.Pipeline:
        """The ``Pipeline`` message (a copy)."""
        copy = pipeline_pb2.Pipeline()
        copy.CopyFrom(self._spec)
        return copy

    def to_dict(self) -> dict[str, Any]:
        """The JSON mapping: what a YAML/JSON pipeline file holds."""
        return json_format.MessageToDict(self._spec, preserving_proto_field_name=True)

    def __repr__(self) -> str:
        steps = ", ".join(step.name for step in self._spec.steps)
        return f"Pipeline({self.name!r}, steps=[{steps}])"

    # -- talking to the scheduler (sync client: results; AsyncClient: awaitables) --
    # Without a client, each call opens a default Client (address from DATADOG_SERVER,
    # else 127.0.0.1:50051) for its duration, so `Pipeline(...).create()` just works.

    @overload
    def create(
        self, client: Client | None = None, *, request_id: str = ""
    ) -> pb.CreatePipelineResponse: ...
    @overload
    def create(
        self, client: AsyncClient, *, request_id: str = ""
    ) -> Awaitable[pb.CreatePipelineResponse]: ...
    def create(self, client: Client | AsyncClient | None = None, *, request_id: str = "") -> Any:
        """Register the pipeline (version 1): it as stored and its plan."""
        if isinstance(client, AsyncClient):
            return client.create_pipeline(self, request_id=request_id)
        with _sync_client(client) as sync:
            return sync.create_pipeline(self, request_id=request_id)

    @overload
    def update(
        self, client: Client | None = None, *, request_id: str = ""
    ) -> pb.UpdatePipelineResponse: ...
    @overload
    def update(
        self, client: AsyncClient, *, request_id: str = ""
    ) -> Awaitable[pb.UpdatePipelineResponse]: ...
    def update(self, client: Client | AsyncClient | None = None, *, request_id: str = "") -> Any:
        """Store the spec as the pipeline's next version."""
        if isinstance(client, AsyncClient):
            return client.update_pipeline(self, request_id=request_id)
        with _sync_client(client) as sync:
            return sync.update_pipeline(self, request_id=request_id)

    @overload
    def validate(self, client: Client | None = None) -> pb.ValidatePipelineResponse: ...
    @overload
    def validate(self, client: AsyncClient) -> Awaitable[pb.ValidatePipelineResponse]: ...
    def validate(self, client: Client | AsyncClient | None = None) -> Any:
        """Check the spec on the server without storing it."""
        if isinstance(client, AsyncClient):
            return client.validate_pipeline(self)
        with _sync_client(client) as sync:
            return sync.validate_pipeline(self)

    @overload
    def run(
        self,
        client: Client | None = None,
        *,
        wait: bool = True,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> run_pb2.Run: ...
    @overload
    def run(
        self,
        client: AsyncClient,
        *,
        wait: bool = True,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Awaitable[run_pb2.Run]: ...
    def run(
        self,
        client: Client | AsyncClient | None = None,
        *,
        wait: bool = True,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run the pipeline's latest stored version; with ``wait`` (the default) return
        the run once final, within ``timeout`` seconds (default 24 hours), else at once."""
        if isinstance(client, AsyncClient):
            return self._run_async(client, wait, params, timeout)
        with _sync_client(client) as sync:
            run = sync.run_pipeline(self.name, params=params)
            return sync.wait_for_run(run.run_id, timeout=timeout) if wait else run

    async def _run_async(
        self,
        client: AsyncClient,
        wait: bool,
        params: Mapping[str, Any] | None,
        timeout: float | None,  # noqa: ASYNC109 - a gRPC deadline, passed on
    ) -> run_pb2.Run:
        run = await client.run_pipeline(self.name, params=params)
        return await client.wait_for_run(run.run_id, timeout=timeout) if wait else run

    @overload
    def status(self, client: Client | None = None, *, limit: int = 10) -> list[run_pb2.Run]: ...
    @overload
    def status(self, client: AsyncClient, *, limit: int = 10) -> Awaitable[list[run_pb2.Run]]: ...
    def status(self, client: Client | AsyncClient | None = None, *, limit: int = 10) -> Any:
        """The pipeline's latest ``limit`` runs, newest first."""
        if isinstance(client, AsyncClient):
            return self._status_async(client, limit)
        with _sync_client(client) as sync:
            return list(sync.list_runs(pipeline=self.name, limit=limit))

    async def _status_async(self, client: AsyncClient, limit: int) -> list[run_pb2.Run]:
        return [run async for run in client.list_runs(pipeline=self.name, limit=limit)]

    # -- internals --------------------------------------------------------------

    def _step(
        self,
        name: str,
        inputs: Iterable[str] | None,
        after: Iterable[str],
        retry: MessageLike | None,
        timeout: DurationLike | None,
        watermark: MessageLike | None,
    ) -> step_pb2.Step:
        if any(step.name == name for step in self._spec.steps):
            raise ValueError(f"pipeline {self.name!r} already has a step named {name!r}")
        if inputs is None:
            previous = self._spec.steps[-1].name if self._spec.steps else None
            inputs = [previous] if previous else []
        step = step_pb2.Step(name=name, inputs=list(inputs), after=list(after))
        if retry is not None:
            step.retry.CopyFrom(req.message(retry, step_pb2.RetryPolicy, f"{name}.retry"))
        if timeout is not None:
            step.timeout.CopyFrom(_duration(timeout, f"{name}.timeout"))
        if watermark is not None:
            step.watermark.CopyFrom(req.message(watermark, step_pb2.Watermark, f"{name}.watermark"))
        return step

    def _add(self, step: step_pb2.Step) -> Self:
        self._spec.steps.append(step)
        return self


def _set_kind(spec: Message, kind: Mapping[str, MessageLike], what: str) -> None:
    """Set the one ``kind`` oneof member of ``spec`` named by the single keyword."""
    members = {f.name: f for f in spec.DESCRIPTOR.oneofs_by_name["kind"].fields}
    if len(kind) != 1 or next(iter(kind)) not in members:
        given = ", ".join(kind) or "none"
        raise TypeError(f"{what}: give exactly one of {', '.join(members)} (got {given})")
    ((field_name, value),) = kind.items()
    cls = message_factory.GetMessageClass(members[field_name].message_type)
    target = getattr(spec, field_name)
    # SetInParent marks an empty kind (``discard={}``) as chosen, which CopyFrom would not.
    target.SetInParent()
    target.MergeFrom(req.message(value, cls, f"{what}: {field_name}"))


def _duration(value: DurationLike, what: str) -> duration_pb2.Duration:
    if isinstance(value, int | float) and not isinstance(value, bool):
        duration = duration_pb2.Duration()
        duration.FromNanoseconds(round(value * 1_000_000_000))
        return duration
    return req.message(value, duration_pb2.Duration, what)


@contextmanager
def _sync_client(client: Client | None) -> Iterator[Client]:
    """``client``, or a default one opened (and closed) around the call."""
    if client is not None:
        yield client
        return
    with Client() as own:
        yield own

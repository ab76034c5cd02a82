"""The shared server runtime: error mapping, health and reflection over a real channel."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.core.channels import insecure_channel
from datadog_platform.core.errors import FieldViolation, invalid_argument, not_found
from datadog_platform.core.server import Server, ServiceRegistration
from datadog_platform.core.status import details_of

SERVICE = pb.DESCRIPTOR.services_by_name["SchedulerService"]


async def get_run(request: pb.GetRunRequest, context: grpc.aio.ServicerContext):
    if request.run_id == "bad":
        raise invalid_argument(
            "BAD_RUN_ID",
            "run_id is malformed",
            [FieldViolation("run_id", "must be hex"), FieldViolation("run_id", "too short")],
            hint="x",
        )
    if request.run_id == "missing":
        raise not_found("RUN_NOT_FOUND", "run missing does not exist", run_id="missing")
    if request.run_id == "boom":
        raise ValueError("password=hunter2 leaked into an exception")
    return pb.GetRunResponse()


async def watch_run(
    request: pb.WatchRunRequest, context: grpc.aio.ServicerContext
) -> AsyncIterator[pb.WatchRunResponse]:
    yield pb.WatchRunResponse()
    raise not_found("RUN_NOT_FOUND", "gone mid-stream")


def _add(servicer: object, server: grpc.aio.Server) -> None:
    handlers = {
        "GetRun": grpc.unary_unary_rpc_method_handler(
            get_run, pb.GetRunRequest.FromString, pb.GetRunResponse.SerializeToString
        ),
        "WatchRun": grpc.unary_stream_rpc_method_handler(
            watch_run, pb.WatchRunRequest.FromString, pb.WatchRunResponse.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server([ServiceRegistration(SERVICE, object(), _add)])
    await srv.start()
    yield srv
    await srv.stop(grace=1)


async def _get_run(address: str, run_id: str) -> grpc.aio.AioRpcError:
    async with insecure_channel(address) as channel:
        call = channel.unary_unary(
            f"/{SERVICE.full_name}/GetRun",
            request_serializer=pb.GetRunRequest.SerializeToString,
            response_deserializer=pb.GetRunResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(pb.GetRunRequest(run_id=run_id), timeout=5)
        return info.value


async def test_bad_input_becomes_invalid_argument_with_field_violations(server: Server) -> None:
    details = details_of(await _get_run(server.address, "bad"))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "BAD_RUN_ID"
    assert details.metadata == {"hint": "x"}
    assert [(v.field, v.description) for v in details.violations] == [
        ("run_id", "must be hex"),
        ("run_id", "too short"),
    ]


async def test_domain_error_keeps_code_reason_and_metadata(server: Server) -> None:
    details = details_of(await _get_run(server.address, "missing"))
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert (details.reason, details.metadata) == ("RUN_NOT_FOUND", {"run_id": "missing"})
    assert details.message == "run missing does not exist"


async def test_unexpected_exception_is_opaque_internal(server: Server) -> None:
    error = await _get_run(server.address, "boom")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in (error.details() or "")
    assert "Traceback" not in (error.details() or "")
    assert details_of(error).reason == "INTERNAL"


async def test_error_after_stream_started_still_maps(server: Server) -> None:
    async with insecure_channel(server.address) as channel:
        call = channel.unary_stream(
            f"/{SERVICE.full_name}/WatchRun",
            request_serializer=pb.WatchRunRequest.SerializeToString,
            response_deserializer=pb.WatchRunResponse.FromString,
        )
        received = []

        async def drain() -> None:
            async for message in call(pb.WatchRunRequest(run_id="x"), timeout=5):
                received.append(message)

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await drain()
    assert len(received) == 1
    assert details_of(info.value).reason == "RUN_NOT_FOUND"


async def test_health_reports_each_service_and_turns_not_serving(server: Server) -> None:
    async with insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE.full_name):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await server.set_serving(False)
        reply = await stub.Check(
            health_pb2.HealthCheckRequest(service=SERVICE.full_name), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_application_and_standard_services(server: Server) -> None:
    async with insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = set()
        async for reply in stub.ServerReflectionInfo(iter([request]), timeout=5):
            names = {s.name for s in reply.list_services_response.service}
    assert {SERVICE.full_name, "grpc.health.v1.Health"} <= names


async def test_a_busy_port_is_refused_not_shared(server: Server) -> None:
    second = Server([ServiceRegistration(SERVICE, object(), _add)], listen=server.address)
    with pytest.raises(OSError, match="cannot listen on"):
        await second.start()

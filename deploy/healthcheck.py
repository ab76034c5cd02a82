"""Container health check: ask a local server's ``grpc.health.v1.Health/Check``.

Usage::

    python healthcheck.py SERVICE PORT [--host HOST] [--timeout SECONDS]

SERVICE is a fully qualified gRPC service name, e.g.
``datadog_platform.api.scheduler.v1.SchedulerService`` (``""`` asks about the whole
server). Exits 0 when it is SERVING; otherwise prints one line on stderr and exits 1,
which is what Docker's HEALTHCHECK and compose's ``healthcheck`` expect.
Kubernetes does not need this script: it uses native gRPC probes.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    """Check one service's health; the process exit code."""
    parser = argparse.ArgumentParser(prog="healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("service", help='fully qualified gRPC service name ("" for the server)')
    parser.add_argument("port", type=int, help="port the service listens on")
    parser.add_argument("--host", default="127.0.0.1", help="host to ask (default 127.0.0.1)")
    parser.add_argument("--timeout", type=float, default=3.0, help="deadline in seconds")
    args = parser.parse_args(argv)
    target = f"{args.host}:{args.port}"
    what = f"{target} {args.service or '(server)'}"
    # A proxy from the environment must not sit between a container and itself.
    options = [("grpc.enable_http_proxy", 0)]
    try:
        with grpc.insecure_channel(target, options=options) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as exc:
        print(f"healthcheck: {what}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        print(f"healthcheck: {what}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

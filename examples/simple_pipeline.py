"""The Python SDK in one screen: build a pipeline, register it, run it, print the result.

Start the services first (``datadog dev`` from the repository root), then::

    python examples/simple_pipeline.py                # the example CSV
    python examples/simple_pipeline.py --inline       # rows written in the spec itself
    python examples/simple_pipeline.py --min-amount 300 --server 127.0.0.1:50051

Paths are relative to the root of the connector's "local" file connection (in dev mode,
the directory ``datadog dev`` was started from). Exits 0 if the run succeeded, else 1.
"""

from __future__ import annotations

import argparse
import sys

import grpc

from datadog_platform.api.scheduler.v1 import run_pb2
from datadog_platform.client import ApiError, Client, Pipeline

INLINE_ORDERS = [
    {"order_id": 1, "customer": "Amélie", "amount": 165.3},
    {"order_id": 2, "customer": "Łukasz", "amount": 27.5},
    {"order_id": 3, "customer": "Noor", "amount": 310.0},
]


def build(args: argparse.Namespace) -> Pipeline:
    """Source (the CSV file, or inline rows) → filter → Parquet file."""
    pipeline = Pipeline(
        args.name,
        description=f"Orders over {args.min_amount:g}, written as Parquet by the SDK example.",
        tags=["example", "sdk"],
    )
    if args.inline:
        pipeline.add_source("orders", inline={"rows": INLINE_ORDERS})
    else:
        pipeline.add_source("orders", file={"path": args.input, "format": "FILE_FORMAT_CSV"})
    return pipeline.add_transformation(
        "big_orders", filter={"predicate": f"amount > {args.min_amount:g}"}
    ).add_sink(
        "out",
        file={
            "path": args.output,
            "format": "FILE_FORMAT_PARQUET",
            "mode": "WRITE_MODE_OVERWRITE",
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", help="scheduler address (default $DATADOG_SERVER or :50051)")
    parser.add_argument("--name", default="sdk_simple_pipeline", help="pipeline name")
    parser.add_argument("--input", default="examples/data/orders.csv", help="CSV to read")
    parser.add_argument("--inline", action="store_true", help="use inline rows, not the CSV")
    parser.add_argument("--min-amount", type=float, default=100, help="keep orders above this")
    parser.add_argument("--output", default="out/sdk_big_orders.parquet", help="Parquet to write")
    args = parser.parse_args(argv)

    pipeline = build(args)
    try:
        with Client(args.server) as client:
            try:
                stored = pipeline.create(client).pipeline
                print(f"created pipeline {stored.name} version {stored.version}")
            except ApiError as exc:
                if exc.code != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                stored = pipeline.update(client).pipeline  # run this spec, not an older one
                print(f"updated pipeline {stored.name} to version {stored.version}")
            run = pipeline.run(client, wait=True, timeout=600)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    print(f"run {run.run_id}: {run_pb2.RunState.Name(run.state).removeprefix('RUN_STATE_')}")
    for stage in run.stages:
        for output in stage.outputs:
            print(f"  {output.step}: {output.rows_written} rows -> {output.location}")
        if stage.error_message:
            print(f"  {stage.stage_id}: {stage.error_reason}: {stage.error_message}")
    return 0 if run.state == run_pb2.RUN_STATE_SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())

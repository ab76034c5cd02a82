"""How fast the scheduler drives stages, with durable state, on each store.

Starts the connector, executor and scheduler as separate processes (real gRPC, real
store) and, for the SQLite store and the PostgreSQL store in turn, measures:

(a) a fan-out: one root stage, ``--fanout`` no-op stages that each wait for it
    (``after``), and one join stage that waits for all of them;
(b) a chain of ``--chain`` no-op stages, each waiting for the previous one;
(c) the latency from ``RunPipeline`` to the first stage RUNNING, over ``--latency-runs``
    runs of a one-stage pipeline (p50, p95): the stage's ``start_time`` (set when the
    executor reports it started) minus the wall-clock time just before the call.

A no-op stage is the smallest real stage: an ``inline`` one-row source into a
``discard`` sink, both evaluated by the executor. Trigger-to-finish is timed from just
before ``RunPipeline`` to the ``WatchRun`` snapshot that shows the run finished.

Baseline, in the same run: the same number of no-op stages sent straight to the
executor's ``ExecuteTask`` (no scheduler, no store), with the scheduler's parallelism
for the fan-out and one at a time for the chain: the floor of the data plane, so the
ratio shows what orchestration with durable state adds. Not part of the test suite::

    .venv/bin/python bench/scheduler_throughput.py
    .venv/bin/python bench/scheduler_throughput.py --fanout 200 --chain 50   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import grpc

# Same directory: python puts bench/ on sys.path when running this script.
from service_process import Service

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.executor.v1 import executor_service_pb2 as exec_pb
from datadog_platform.api.executor.v1 import executor_service_pb2_grpc as exec_grpc
from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2_grpc as pb_grpc

TARGET_FANOUT_STAGES_PER_S = 500.0
TARGET_CHAIN_MS_PER_STAGE = 10.0
TARGET_P50_TRIGGER_MS = 50.0
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
TERMINAL = {run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED}


def log(message: str) -> None:
    print(message, flush=True)


def noop_steps(name: str, after: Sequence[str] = ()) -> list[step_pb2.Step]:
    """An inline one-row source into a discard sink; the stage id is ``name``."""
    source = step_pb2.Step(name=f"{name}_src", after=list(after))
    source.source.inline.rows.add().update({"x": 1})
    sink = step_pb2.Step(name=name, inputs=[source.name])
    sink.sink.discard.SetInParent()
    return [source, sink]


def fanout_pipeline(name: str, width: int) -> pipeline_pb2.Pipeline:
    steps = noop_steps("root")
    middle = [f"s{i:04d}" for i in range(width)]
    for stage in middle:
        steps += noop_steps(stage, after=["root"])
    steps += noop_steps("join", after=middle)
    return pipeline_pb2.Pipeline(name=name, steps=steps)


def chain_pipeline(name: str, length: int) -> pipeline_pb2.Pipeline:
    steps: list[step_pb2.Step] = []
    previous: list[str] = []
    for i in range(length):
        steps += noop_steps(f"c{i:04d}", after=previous)
        previous = [f"c{i:04d}"]
    return pipeline_pb2.Pipeline(name=name, steps=steps)


async def run_to_end(stub: pb_grpc.SchedulerServiceStub, name: str) -> tuple[float, run_pb2.Run]:
    """Trigger a run and watch it to the end; (wall seconds, final run)."""
    started = time.perf_counter()
    run = (await stub.RunPipeline(pb.RunPipelineRequest(pipeline=name), timeout=30)).run
    async for update in stub.WatchRun(pb.WatchRunRequest(run_id=run.run_id), timeout=600):
        if update.run.state in TERMINAL:
            elapsed = time.perf_counter() - started
            if update.run.state != run_pb2.RUN_STATE_SUCCEEDED:
                raise SystemExit(f"run {run.run_id} ended {update.run.state}: {update.run}")
            return elapsed, update.run
    raise SystemExit(f"WatchRun of {run.run_id} ended before the run did")


async def trigger_latencies(
    stub: pb_grpc.SchedulerServiceStub, name: str, count: int
) -> list[float]:
    latencies: list[float] = []
    for _ in range(count):
        before = time.time()
        _, run = await run_to_end(stub, name)
        first = min(s.start_time.ToMicroseconds() for s in run.stages) / 1e6
        latencies.append((first - before) * 1000)
    return latencies


async def direct_executor(address: str, stages: int, parallel: int) -> float:
    """Seconds to run ``stages`` no-op stages straight on the executor."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = exec_grpc.ExecutorServiceStub(channel)
        gate = asyncio.Semaphore(parallel)
        run_id = uuid.uuid4().hex

        async def one(i: int) -> None:
            request = exec_pb.ExecuteTaskRequest(
                run_id=run_id, stage_id=f"s{i}", attempt=1, steps=noop_steps(f"s{i}")
            )
            async with gate:
                async for event in stub.ExecuteTask(request, timeout=60):
                    if event.WhichOneof("event") == "failed":
                        raise SystemExit(f"direct stage failed: {event.failed}")

        await one(-1)  # warm the channel
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(stages)))
        return time.perf_counter() - started


async def bench_store(args: argparse.Namespace, store: str, label: str, workdir: Path) -> dict:
    connector = Service(
        "datadog_platform.connector.main", "--root", str(workdir), logfile=workdir / "connector.log"
    )
    executor = Service(
        "datadog_platform.executor.main",
        "--connector",
        connector.address,
        "--slots",
        str(args.parallel),
        logfile=workdir / "executor.log",
    )
    scheduler = Service(
        "datadog_platform.scheduler.main",
        "--store",
        store,
        "--executor",
        executor.address,
        "--connector",
        connector.address,
        "--max-parallel-stages",
        str(args.parallel),
        logfile=workdir / f"scheduler-{label}.log",
    )
    try:
        async with grpc.aio.insecure_channel(scheduler.address) as channel:
            stub = pb_grpc.SchedulerServiceStub(channel)
            suffix = uuid.uuid4().hex[:6]
            specs = {
                "fanout": fanout_pipeline(f"fanout_{suffix}", args.fanout),
                "chain": chain_pipeline(f"chain_{suffix}", args.chain),
                "single": chain_pipeline(f"single_{suffix}", 1),
            }
            for spec in specs.values():
                await stub.CreatePipeline(pb.CreatePipelineRequest(pipeline=spec), timeout=60)
            await run_to_end(stub, specs["single"].name)  # warm-up: channels, caches
            fanout = min(
                [(await run_to_end(stub, specs["fanout"].name))[0] for _ in range(args.repeat)]
            )
            chain = min(
                [(await run_to_end(stub, specs["chain"].name))[0] for _ in range(args.repeat)]
            )
            latencies = await trigger_latencies(stub, specs["single"].name, args.latency_runs)
        direct_fanout = await direct_executor(executor.address, args.fanout + 2, args.parallel)
        direct_chain = await direct_executor(executor.address, args.chain, 1)
    finally:
        scheduler.stop()
        executor.stop()
        connector.stop()
    fanout_stages = args.fanout + 2
    result = {
        "fanout_s": fanout,
        "fanout_rate": fanout_stages / fanout,
        "chain_s": chain,
        "chain_ms": chain / args.chain * 1000,
        "p50": statistics.median(latencies),
        "p95": statistics.quantiles(latencies, n=20)[18]
        if len(latencies) >= 20
        else max(latencies),
        "direct_fanout_rate": fanout_stages / direct_fanout,
        "direct_chain_ms": direct_chain / args.chain * 1000,
    }
    log(
        f"[{label}] fan-out {fanout_stages} stages: {fanout:.2f} s = {result['fanout_rate']:.0f}"
        f" stages/s (target >= {TARGET_FANOUT_STAGES_PER_S:.0f}; executor alone"
        f" {result['direct_fanout_rate']:.0f}/s, ratio"
        f" {result['fanout_rate'] / result['direct_fanout_rate']:.2f})"
    )
    log(
        f"[{label}] chain {args.chain} stages: {chain:.2f} s = {result['chain_ms']:.1f} ms/stage"
        f" (target <= {TARGET_CHAIN_MS_PER_STAGE:.0f}; executor alone"
        f" {result['direct_chain_ms']:.1f} ms/stage)"
    )
    log(
        f"[{label}] RunPipeline -> first stage RUNNING over {len(latencies)} runs:"
        f" p50 {result['p50']:.1f} ms, p95 {result['p95']:.1f} ms"
        f" (target p50 <= {TARGET_P50_TRIGGER_MS:.0f})"
    )
    return result


async def fresh_pg_database(dsn: str) -> tuple[str, str]:
    name = f"datadog_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, re.sub(r"/[^/]*$", f"/{name}", dsn)


async def drop_pg_database(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fanout", type=int, default=1000, help="stages between root and join")
    parser.add_argument("--chain", type=int, default=100, help="stages in the chain")
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2, help="runs per shape; the fastest counts")
    parser.add_argument("--parallel", type=int, default=64, help="scheduler and executor slots")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL server for the PG store")
    parser.add_argument("--stores", default="sqlite,postgresql")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="datadog-bench-") as tmp:
        workdir = Path(tmp)
        log(f"{os.cpu_count()} CPUs; logs in {workdir} while running")
        for store in args.stores.split(","):
            if store == "sqlite":
                await bench_store(args, str(workdir / "scheduler.db"), "sqlite", workdir)
            else:
                name, url = await fresh_pg_database(args.pg)
                try:
                    await bench_store(args, url, "postgresql", workdir)
                finally:
                    await drop_pg_database(args.pg, name)


if __name__ == "__main__":
    asyncio.run(main())

"""TPC-H Q1 and a streaming pipeline through the three services, against in-process engines.

On TPC-H ``lineitem`` (``tpchgen-cli``; scale factor 1 is 6,001,215 rows), as Parquet
and in PostgreSQL (the table ``bench_lineitem`` of ``connector_postgres.py``, loaded the
same way), with the connector, executor and scheduler started as separate processes
(real gRPC, a SQLite store), in one run:

Q1      (a) the pipeline file source (Parquet) -> filter ``l_shipdate <= date
            '1998-12-01' - interval 90 day`` -> aggregate by ``l_returnflag,
            l_linestatus`` (the eight Q1 aggregates) -> sort -> Parquet file sink,
            timed from just before ``RunPipeline`` to the ``WatchRun`` snapshot showing
            the run finished; and the same pipeline from PostgreSQL (database source);
        (b) DuckDB alone, in this process, running the Q1 SQL on the same Parquet;
        (c) pandas as a typical user script: ``read_parquet`` of the columns Q1 uses,
            decimals to float, filter, two derived columns, ``groupby().agg()``, sort;
stream  (d) the pipeline file source (Parquet) -> filter -> derive (two columns) ->
            Parquet file sink, in input rows/s, versus pyarrow doing the same in this
            process (``ParquetFile.iter_batches`` -> ``pc`` filter and arithmetic ->
            ``ParquetWriter``).

Every Q1 result is checked against DuckDB's (same rows, values within a relative 1e-9),
the streaming pipeline's file against pyarrow's (row count and sums). The streaming
pipeline also runs into a discard sink and as a plain copy, to show where its time goes.
Prints each timing and the ratios the targets are stated in: Q1 end to end <= 3x DuckDB
alone on the Parquet, faster than pandas, the streaming pipeline >= 0.7x pyarrow's rate.
A pipeline the services refuse or fail is reported, not measured. Not part of the test suite::

    .venv/bin/python bench/executor_tpch.py              # scale factor 1
    .venv/bin/python bench/executor_tpch.py --scale 0.1  # quicker

The generated Parquet is cached under ``--data-dir`` (a temporary directory by
default, never the repository); ``bench_lineitem`` is reused when its row count is
right. ``--dsn ''`` skips PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

# Same directory: python puts bench/ on sys.path when running this script.
from connector_postgres import TABLE, ensure_loaded, generate, load_table
from service_process import Service

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.scheduler.v1 import pipeline_pb2, run_pb2
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2 as pb
from datadog_platform.api.scheduler.v1 import scheduler_service_pb2_grpc as pb_grpc
from datadog_platform.connector.parquet_writer import dictionary_columns

TARGET_Q1_VS_DUCKDB = 3.0  # end to end at most this many times DuckDB alone
TARGET_STREAM_VS_PYARROW = 0.7  # streaming pipeline rate at least this share of pyarrow's
RPC_TIMEOUT = 3600
TERMINAL = {run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED}

# TPC-H Q1 with its default substitution parameter (DELTA = 90).
CUTOFF = date(1998, 12, 1) - timedelta(days=90)
Q1_PREDICATE = "l_shipdate <= DATE '1998-12-01' - INTERVAL 90 DAY"
Q1_GROUP = ("l_returnflag", "l_linestatus")
Q1_AGGREGATES = (
    ("sum_qty", "sum(l_quantity)"),
    ("sum_base_price", "sum(l_extendedprice)"),
    ("sum_disc_price", "sum(l_extendedprice * (1 - l_discount))"),
    ("sum_charge", "sum(l_extendedprice * (1 - l_discount) * (1 + l_tax))"),
    ("avg_qty", "avg(l_quantity)"),
    ("avg_price", "avg(l_extendedprice)"),
    ("avg_disc", "avg(l_discount)"),
    ("count_order", "count(*)"),
)
Q1_COLUMNS = (
    "l_returnflag",
    "l_linestatus",
    "l_quantity",
    "l_extendedprice",
    "l_discount",
    "l_tax",
    "l_shipdate",
)
# The streaming pipeline: Q1's filter and its two derived amounts, every column kept.
STREAM_DERIVED = (
    ("disc_price", "l_extendedprice * (1 - l_discount)"),
    ("charge", "l_extendedprice * (1 - l_discount) * (1 + l_tax)"),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def q1_sql(relation: str) -> str:
    aggregates = ",\n  ".join(f"{expr} AS {name}" for name, expr in Q1_AGGREGATES)
    group = ", ".join(Q1_GROUP)
    return (
        f"SELECT {group},\n  {aggregates}\nFROM {relation}\nWHERE {Q1_PREDICATE}\n"
        f"GROUP BY {group}\nORDER BY {group}"
    )


@dataclass
class Timing:
    """One measured path: the fastest of its runs."""

    name: str
    rows: int  # input rows
    seconds: float
    error: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


def show(timing: Timing) -> Timing:
    if timing.error:
        print(f"  {timing.name:<58} NOT MEASURED: {timing.error}", flush=True)
    else:
        print(
            f"  {timing.name:<58} {timing.seconds:8.3f} s "
            f"{timing.rows_per_second / 1e6:7.2f} M input rows/s",
            flush=True,
        )
    return timing


def ratio(label: str, value: float | None, target: str = "", met: bool = False) -> None:
    """One ratio line; ``value`` None when a side was not measured, no ``target`` for info."""
    if value is None:
        verdict = f"  (target {target}: not measured)" if target else ""
        print(f"  {label:<58}     n/a{verdict}", flush=True)
        return
    verdict = f"  (target {target}: {'met' if met else 'NOT met'})" if target else ""
    print(f"  {label:<58} {value:7.2f}x{verdict}", flush=True)


# --------------------------------------------------------------------------- services


class Services:
    """Connector (connections ``data``, ``out``, ``pg``, ``artifacts``), executor, scheduler."""

    def __init__(
        self, data_dir: Path, dsn: str, workdir: Path, executor_args: tuple[str, ...] = ()
    ) -> None:
        self.out_dir = workdir / "out"
        self.out_dir.mkdir(exist_ok=True)
        connections: dict[str, dict] = {
            "data": {"type": "file", "root": str(data_dir)},
            "out": {"type": "file", "root": str(self.out_dir)},
            "artifacts": {"type": "artifact", "root": str(workdir / "artifacts")},
        }
        if dsn:
            connections["pg"] = {"type": "postgres", "dsn": dsn, "pool_size": 4}
        config = workdir / "connector.yaml"
        config.write_text(yaml.safe_dump({"connections": connections}))
        self.connector = Service(
            "datadog_platform.connector.main",
            *("--config", str(config)),
            logfile=workdir / "connector.log",
        )
        self.executor = Service(
            "datadog_platform.executor.main",
            *("--connector", self.connector.address),
            *executor_args,
            logfile=workdir / "executor.log",
        )
        self.scheduler = Service(
            "datadog_platform.scheduler.main",
            *("--store", str(workdir / "scheduler.db")),
            *("--executor", self.executor.address, "--connector", self.connector.address),
            logfile=workdir / "scheduler.log",
        )

    def stop(self) -> None:
        for service in (self.scheduler, self.executor, self.connector):
            service.stop()


# --------------------------------------------------------------------------- pipelines


def _transform(name: str, **kind: object) -> step_pb2.Step:
    return step_pb2.Step(name=name, transform=step_pb2.TransformSpec(**kind))


def _parquet_sink(path: str) -> step_pb2.Step:
    sink = step_pb2.FileSink(
        connection="out",
        path=path,
        format=step_pb2.FILE_FORMAT_PARQUET,
        mode=step_pb2.WRITE_MODE_OVERWRITE,
    )
    return step_pb2.Step(name="sink", sink=step_pb2.SinkSpec(file=sink))


def _chain(*steps: step_pb2.Step) -> list[step_pb2.Step]:
    """The steps, each consuming the one before it."""
    for previous, step in itertools.pairwise(steps):
        step.inputs.append(previous.name)
    return list(steps)


def _source(spec: step_pb2.SourceSpec) -> step_pb2.Step:
    return step_pb2.Step(name="lineitem", source=spec)


def parquet_source(path: str) -> step_pb2.SourceSpec:
    return step_pb2.SourceSpec(
        file=step_pb2.FileSource(connection="data", path=path, format=step_pb2.FILE_FORMAT_PARQUET)
    )


def pg_source() -> step_pb2.SourceSpec:
    return step_pb2.SourceSpec(database=step_pb2.DatabaseSource(connection="pg", table=TABLE))


def q1_pipeline(name: str, source: step_pb2.SourceSpec, out: str) -> pipeline_pb2.Pipeline:
    """Source -> filter -> aggregate -> sort -> Parquet sink (one fused stage)."""
    aggregate = step_pb2.AggregateTransform(
        group_by=list(Q1_GROUP),
        aggregates=[step_pb2.NamedAggregate(name=n, expr=e) for n, e in Q1_AGGREGATES],
    )
    sort = step_pb2.SortTransform(keys=[step_pb2.SortKey(column=c) for c in Q1_GROUP])
    steps = _chain(
        _source(source),
        _transform("shipped", filter=step_pb2.FilterTransform(predicate=Q1_PREDICATE)),
        _transform("pricing", aggregate=aggregate),
        _transform("ordered", sort=sort),
        _parquet_sink(out),
    )
    return pipeline_pb2.Pipeline(name=name, steps=steps)


def stream_pipeline(
    name: str, source: step_pb2.SourceSpec, out: str, *, transforms: bool = True
) -> pipeline_pb2.Pipeline:
    """Source -> filter -> derive -> Parquet sink: row-wise steps only, streamed.

    ``out`` empty writes to a discard sink; without ``transforms`` it is a plain copy.
    Both variants tell where the streaming pipeline's time goes.
    """
    derive = step_pb2.DeriveTransform(
        columns=[step_pb2.DerivedColumn(name=n, expr=e) for n, e in STREAM_DERIVED]
    )
    steps = [_source(source)]
    if transforms:
        steps.append(_transform("shipped", filter=step_pb2.FilterTransform(predicate=Q1_PREDICATE)))
        steps.append(_transform("amounts", derive=derive))
    if out:
        steps.append(_parquet_sink(out))
    else:
        steps.append(step_pb2.Step(name="sink", sink=step_pb2.SinkSpec(discard={})))
    return pipeline_pb2.Pipeline(name=name, steps=_chain(*steps))


def _describe(error: grpc.aio.AioRpcError) -> str:
    return f"{error.code().name}: {error.details()}"


async def create(stub: pb_grpc.SchedulerServiceStub, pipeline: pipeline_pb2.Pipeline) -> str:
    """Create the pipeline; the refusal as text, or ""."""
    try:
        await stub.CreatePipeline(pb.CreatePipelineRequest(pipeline=pipeline), timeout=60)
    except grpc.aio.AioRpcError as error:
        return f"CreatePipeline refused it ({_describe(error)})"
    return ""


async def run_to_end(stub: pb_grpc.SchedulerServiceStub, name: str) -> float:
    """Trigger a run and watch it to the end: wall seconds; raises RuntimeError on failure."""
    started = time.perf_counter()
    request = pb.RunPipelineRequest(pipeline=name)
    run = (await stub.RunPipeline(request, timeout=30)).run
    async for update in stub.WatchRun(pb.WatchRunRequest(run_id=run.run_id), timeout=RPC_TIMEOUT):
        if update.run.state not in TERMINAL:
            continue
        elapsed = time.perf_counter() - started
        if update.run.state != run_pb2.RUN_STATE_SUCCEEDED:
            failed = [s for s in update.run.stages if s.error_message]
            detail = "; ".join(f"{s.error_reason}: {s.error_message}" for s in failed)
            state = run_pb2.RunState.Name(update.run.state)
            raise RuntimeError(f"run {state}: {detail or update.run.error_message}")
        return elapsed
    raise RuntimeError(f"WatchRun of {run.run_id} ended before the run did")


async def measure_pipeline(
    stub: pb_grpc.SchedulerServiceStub,
    pipeline: pipeline_pb2.Pipeline,
    label: str,
    *,
    rows: int,
    repeat: int,
) -> Timing:
    """The fastest of ``repeat`` runs, or the reason there is none."""
    refused = await create(stub, pipeline)
    if refused:
        return show(Timing(label, rows, math.nan, refused))
    best = math.inf
    for _ in range(repeat):
        try:
            best = min(best, await run_to_end(stub, pipeline.name))
        except (RuntimeError, grpc.aio.AioRpcError) as error:
            text = _describe(error) if isinstance(error, grpc.aio.AioRpcError) else str(error)
            return show(Timing(label, rows, math.nan, text))
    return show(Timing(label, rows, best))


# --------------------------------------------------------------------------- baselines


def best_of(
    repeat: int, label: str, rows: int, work: Callable[[], object]
) -> tuple[Timing, object]:
    """The fastest of ``repeat`` runs of ``work`` and its last result."""
    best = math.inf
    result: object = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return show(Timing(label, rows, best)), result


def duckdb_q1(parquet: Path) -> pa.Table:
    """Q1 by DuckDB alone, in this process, on all cores."""
    with duckdb.connect() as con:
        return con.sql(q1_sql(f"read_parquet('{parquet}')")).to_arrow_table()


def pandas_q1(parquet: Path) -> pa.Table:
    """Q1 as a typical pandas script (the result back as Arrow, for the check)."""
    import pandas as pd

    frame = pd.read_parquet(parquet, columns=list(Q1_COLUMNS))
    for column in ("l_quantity", "l_extendedprice", "l_discount", "l_tax"):
        frame[column] = frame[column].astype("float64")  # decimal.Decimal objects otherwise
    frame = frame[frame["l_shipdate"] <= CUTOFF]
    frame["disc_price"] = frame["l_extendedprice"] * (1 - frame["l_discount"])
    frame["charge"] = frame["disc_price"] * (1 + frame["l_tax"])
    result = (
        frame.groupby(list(Q1_GROUP))
        .agg(
            sum_qty=("l_quantity", "sum"),
            sum_base_price=("l_extendedprice", "sum"),
            sum_disc_price=("disc_price", "sum"),
            sum_charge=("charge", "sum"),
            avg_qty=("l_quantity", "mean"),
            avg_price=("l_extendedprice", "mean"),
            avg_disc=("l_discount", "mean"),
            count_order=("l_quantity", "size"),
        )
        .reset_index()
        .sort_values(list(Q1_GROUP))
    )
    return pa.Table.from_pandas(result, preserve_index=False)


def pyarrow_stream(parquet: Path, out: Path, *, our_encodings: bool = False) -> int:
    """Filter + derive Parquet -> Parquet batch by batch in this process; rows written.

    ``our_encodings`` writes with the connector's Parquet choices (decimals as integers,
    dictionaries only where values repeat) instead of pyarrow's defaults, so the
    comparison does not credit the pipeline with a cheaper encoding alone.
    """
    source = pq.ParquetFile(parquet)
    # tpchgen writes string_view, which pyarrow's filter (take) has no kernel for.
    plain = pa.schema(
        pa.field(f.name, pa.string() if f.type == pa.string_view() else f.type, f.nullable)
        for f in source.schema_arrow
    )
    cutoff = pa.scalar(CUTOFF, pa.date32())
    one = pa.scalar(Decimal(1), pa.decimal128(15, 2))
    writer: pq.ParquetWriter | None = None
    written = 0
    try:
        for batch in source.iter_batches():
            batch = batch.cast(plain)
            kept = batch.filter(pc.less_equal(batch["l_shipdate"], cutoff))
            price = kept["l_extendedprice"]
            # Narrowed to the types DuckDB gives these expressions (decimal precision
            # adds up on every product and would pass Arrow's 38 digits).
            disc_price = pc.multiply(price, pc.subtract(one, kept["l_discount"]))
            disc_price = disc_price.cast(pa.decimal128(18, 4))
            charge = pc.multiply(disc_price, pc.add(one, kept["l_tax"]))
            charge = charge.cast(pa.decimal128(18, 6))
            arrays = [*kept.columns, disc_price, charge]
            names = [*kept.schema.names, "disc_price", "charge"]
            output = pa.RecordBatch.from_arrays(arrays, names=names)
            if writer is None:
                options: dict[str, object] = {}
                if our_encodings:
                    options["use_dictionary"] = dictionary_columns(output)
                    options["store_decimal_as_integer"] = True
                writer = pq.ParquetWriter(out, output.schema, **options)
            writer.write_batch(output)
            written += output.num_rows
    finally:
        if writer is not None:
            writer.close()
    return written


# --------------------------------------------------------------------------- checks


def _number(value: object) -> object:
    return float(value) if isinstance(value, Decimal | int | float) else value


def same_result(label: str, got: pa.Table, expected: pa.Table) -> bool:
    """Same columns, same rows in the same order, numbers within a relative 1e-9."""
    problem = ""
    if got.column_names != expected.column_names:
        problem = f"columns {got.column_names} != {expected.column_names}"
    elif got.num_rows != expected.num_rows:
        problem = f"{got.num_rows} rows != {expected.num_rows}"
    else:
        for i, (a, b) in enumerate(zip(got.to_pylist(), expected.to_pylist(), strict=True)):
            for column in expected.column_names:
                x, y = _number(a[column]), _number(b[column])
                if isinstance(x, float) and isinstance(y, float):
                    if math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9):
                        continue
                elif x == y:
                    continue
                problem = f"row {i} column {column}: {a[column]!r} != {b[column]!r}"
                break
            if problem:
                break
    verdict = f"DIFFERS: {problem}" if problem else "equal"
    print(f"  {label:<58} {verdict}", flush=True)
    return not problem


def stream_summary(path: Path) -> pa.Table:
    """Row count and sums of the streaming output, to compare two writers' files."""
    query = (
        "SELECT count(*) AS n, sum(l_quantity) AS qty, sum(disc_price) AS disc_price, "
        f"sum(charge) AS charge, max(l_shipdate) AS last FROM read_parquet('{path}')"
    )
    with duckdb.connect() as con:
        return con.sql(query).to_arrow_table()


# --------------------------------------------------------------------------- main


def report_ratios(
    duck: Timing,
    pandas: Timing,
    arrow: Timing,
    arrow_ours: Timing,
    q1_file: Timing,
    q1_pg: Timing | None,
    stream: Timing,
) -> None:
    """The ratios the targets are stated in (times for Q1, rates for streaming)."""

    def times(top: Timing | None, bottom: Timing | None) -> float | None:
        if top is None or bottom is None or top.error or bottom.error:
            return None
        return top.seconds / bottom.seconds

    print("ratios", flush=True)
    value = times(q1_file, duck)
    target = TARGET_Q1_VS_DUCKDB
    met = value is not None and value <= target
    ratio("pipeline Q1 (Parquet) time / DuckDB alone", value, f"<= {target:g}", met)
    value = times(pandas, q1_file)
    met = value is not None and value > 1
    ratio("pandas time / pipeline Q1 (Parquet) time", value, "> 1", met)
    if q1_pg is not None:
        ratio("pipeline Q1 (PostgreSQL) time / DuckDB alone on Parquet", times(q1_pg, duck))
        ratio("pandas time / pipeline Q1 (PostgreSQL) time", times(pandas, q1_pg))
    # Same input rows: the inverse time ratio is the rate ratio. The target is judged
    # against pyarrow writing the same Parquet encodings as the connector (the stricter).
    ratio("streaming pipeline / pyarrow rate (its defaults)", times(arrow, stream))
    value = times(arrow_ours, stream)
    target = TARGET_STREAM_VS_PYARROW
    met = value is not None and value >= target
    ratio("streaming pipeline / pyarrow rate (same encodings)", value, f">= {target:g}", met)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="TPC-H scale factor (1 = 6M rows)")
    parser.add_argument(
        "--dsn",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL holding bench_lineitem; '' skips the PostgreSQL pipeline",
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs per path; the fastest counts")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "datadog-bench",
        help="where the generated Parquet is cached (never inside the repository)",
    )
    args = parser.parse_args()

    parquet = generate(args.scale, args.data_dir)
    rows = pq.ParquetFile(parquet).metadata.num_rows
    if args.dsn:
        ensure_loaded(args.dsn, load_table(parquet))
    print(
        f"\nTPC-H lineitem SF{args.scale:g}: {rows:,} rows, Parquet "
        f"{parquet.stat().st_size / 1e6:,.0f} MB; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start\n",
        flush=True,
    )
    parquet.read_bytes()  # into the page cache for everyone

    with tempfile.TemporaryDirectory(prefix="datadog-bench-") as tmp:
        workdir = Path(tmp)
        print("in this process", flush=True)
        duck, expected = best_of(
            args.repeat, "DuckDB alone, in process, Parquet", rows, lambda: duckdb_q1(parquet)
        )
        pandas, pandas_result = best_of(
            args.repeat, "pandas read_parquet + groupby", rows, lambda: pandas_q1(parquet)
        )
        pyarrow_out = workdir / "pyarrow-stream.parquet"
        arrow, _ = best_of(
            args.repeat,
            "pyarrow filter + derive, in process",
            rows,
            lambda: pyarrow_stream(parquet, pyarrow_out),
        )
        arrow_ours, _ = best_of(
            args.repeat,
            "  same, with the connector's Parquet encodings",
            rows,
            lambda: pyarrow_stream(parquet, pyarrow_out, our_encodings=True),
        )
        print("through the services (connector, executor, scheduler processes)", flush=True)
        services = Services(parquet.parent, args.dsn, workdir)
        try:
            async with grpc.aio.insecure_channel(services.scheduler.address) as channel:
                stub = pb_grpc.SchedulerServiceStub(channel)
                measure = functools.partial(measure_pipeline, stub, rows=rows, repeat=args.repeat)
                source = parquet_source(parquet.name)
                q1_file = await measure(
                    q1_pipeline("q1_parquet", source, "q1_parquet.parquet"),
                    "pipeline Q1, Parquet source, end to end",
                )
                q1_pg = None
                if args.dsn:
                    q1_pg = await measure(
                        q1_pipeline("q1_postgres", pg_source(), "q1_postgres.parquet"),
                        "pipeline Q1, PostgreSQL source, end to end",
                    )
                stream = await measure(
                    stream_pipeline("stream_parquet", source, "stream.parquet"),
                    "pipeline filter + derive, Parquet -> Parquet",
                )
                print("  where the streaming pipeline's time goes:", flush=True)
                await measure(
                    stream_pipeline("stream_discard", source, ""),
                    "  pipeline filter + derive, Parquet -> discard",
                )
                await measure(
                    stream_pipeline("copy_parquet", source, "copy.parquet", transforms=False),
                    "  pipeline copy, Parquet -> Parquet (no transform)",
                )
        finally:
            services.stop()
        # The same services reading the Parquet as Arrow batches the connector decoded.
        arrow_frames = Services(
            parquet.parent, "", workdir, executor_args=("--no-parquet-passthrough",)
        )
        try:
            async with grpc.aio.insecure_channel(arrow_frames.scheduler.address) as channel:
                stub = pb_grpc.SchedulerServiceStub(channel)
                pipeline = q1_pipeline("q1_arrow", parquet_source(parquet.name), "q1_arrow.parquet")
                await measure_pipeline(
                    stub,
                    pipeline,
                    "pipeline Q1, Parquet decoded by the connector (--no-parquet-passthrough)",
                    rows=rows,
                    repeat=args.repeat,
                )
        finally:
            arrow_frames.stop()

        print("results", flush=True)
        same_result("pandas Q1 vs DuckDB", pandas_result, expected)
        for timing, out in ((q1_file, "q1_parquet.parquet"), (q1_pg, "q1_postgres.parquet")):
            if timing is not None and not timing.error:
                same_result(
                    f"{timing.name} vs DuckDB", pq.read_table(services.out_dir / out), expected
                )
        if not stream.error:
            same_result(
                "streaming pipeline output vs pyarrow's (count, sums)",
                stream_summary(services.out_dir / "stream.parquet"),
                stream_summary(pyarrow_out),
            )

        report_ratios(duck, pandas, arrow, arrow_ours, q1_file, q1_pg, stream)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

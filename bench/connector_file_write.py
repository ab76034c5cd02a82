"""Arrow -> Parquet through the connector's Write, against pyarrow's ParquetWriter.

On TPC-H ``lineitem`` (``tpchgen-cli``; scale factor 1 is 6,001,215 rows), in one run:

(a) the connector service started as a separate process (one ``file`` connection),
    written to through a ``Write`` client stream: header, schema, one frame per
    ~1 MiB batch (as the executor sends them), completion; the call returns once
    the file is committed (fsynced and renamed into place). The frames are encoded
    before the clock starts, so the figure is the connector's cost, not the client's;
(b) ``pyarrow.parquet.ParquetWriter`` in this process writing the same batches to
    a local file (default options), then closing it.

Prints rows/s for each, the ratio (connector / pyarrow rate) and the row groups of
both files. Not part of the test suite::

    .venv/bin/python bench/connector_file_write.py              # scale factor 1
    .venv/bin/python bench/connector_file_write.py --scale 0.1  # quicker

The generated Parquet is cached under ``--data-dir`` (as bench/executor_tpch.py does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from connector_postgres import generate
from service_process import Service

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.core.arrow_frames import (
    StreamCounter,
    encode_batch,
    encode_schema,
    split_by_bytes,
)
from datadog_platform.core.channels import insecure_channel

RPC_TIMEOUT = 3600


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load(parquet: Path) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """The table as ~1 MiB batches with plain strings and no field metadata.

    That is what the executor sends: DuckDB exports ``string``, not tpchgen's
    ``string_view``, and frames are cut near 1 MiB.
    """
    table = pq.read_table(parquet)
    schema = pa.schema(
        pa.field(f.name, pa.string() if f.type == pa.string_view() else f.type, f.nullable)
        for f in table.schema
    )
    table = table.cast(schema)
    return schema, list(split_by_bytes(table.to_batches(max_chunksize=65_536)))


def start_connector(out_dir: Path, workdir: Path) -> Service:
    """The connector service as a process, with one file connection ``out``."""
    config = workdir / "connector.yaml"
    connections = {"out": {"type": "file", "root": str(out_dir)}}
    config.write_text(yaml.safe_dump({"connections": connections}))
    return Service(
        "datadog_platform.connector.main",
        "--config",
        str(config),
        logfile=workdir / "connector.log",
    )


def frames(
    schema: pa.Schema, batches: list[pa.RecordBatch], path: str, key: str
) -> list[pb.WriteRequest]:
    """Every frame of one Write call, encoded up front."""
    sink = step_pb2.SinkSpec(
        file=step_pb2.FileSink(
            connection="out",
            path=path,
            format=step_pb2.FILE_FORMAT_PARQUET,
            mode=step_pb2.WRITE_MODE_OVERWRITE,
        )
    )
    out = [
        pb.WriteRequest(header=pb.WriteHeader(sink=sink, idempotency_key=key)),
        pb.WriteRequest(schema=encode_schema(schema)),
    ]
    counter = StreamCounter()
    for batch in batches:
        request = pb.WriteRequest()
        encode_batch(batch, counter, into=request.record_batch)
        out.append(request)
    out.append(pb.WriteRequest(complete=counter.complete()))
    return out


async def connector_write(address: str, requests: list[pb.WriteRequest]) -> int:
    """One Write call sending ``requests``; the rows the connector committed."""
    async with insecure_channel(address) as channel:
        stub = pb_grpc.ConnectorServiceStub(channel)
        call = stub.Write(timeout=RPC_TIMEOUT)
        for request in requests:
            await call.write(request)
        await call.done_writing()
        response: pb.WriteResponse = await call
    return response.rows_written


def pyarrow_write(schema: pa.Schema, batches: list[pa.RecordBatch], out: Path) -> int:
    """The same batches through ParquetWriter in this process (default options)."""
    with pq.ParquetWriter(out, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sum(b.num_rows for b in batches)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux), robust to a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def best_of(repeat: int, label: str, run: Callable[[], int]) -> float:
    """The fastest of ``repeat`` runs, in seconds; prints each."""
    best = float("inf")
    for attempt in range(repeat):
        started = time.perf_counter()
        cpu = time.process_time()
        rows = run()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        best = min(best, seconds)
        print(
            f"  {label:<44} run {attempt + 1}: {seconds:6.2f} s  "
            f"{rows / seconds:12,.0f} rows/s  (CPU {cpu:.2f} s)"
        )
    return best


def describe(path: Path) -> str:
    meta = pq.ParquetFile(path).metadata
    return (
        f"{meta.num_rows:,} rows, {meta.num_row_groups} row groups, "
        f"{path.stat().st_size / 1e6:,.0f} MB, {meta.row_group(0).column(0).compression}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="TPC-H scale factor (1 = 6M rows)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; the fastest counts")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "datadog-bench",
        help="where the generated Parquet is cached (never inside the repository)",
    )
    args = parser.parse_args()
    schema, batches = load(generate(args.scale, args.data_dir))
    rows = sum(b.num_rows for b in batches)
    nbytes = sum(b.nbytes for b in batches)
    print(
        f"\nlineitem SF{args.scale:g}: {rows:,} rows in {len(batches):,} batches, "
        f"{nbytes / 1e6:,.0f} MB of Arrow; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}\n",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="datadog-bench-write-") as tmp:
        workdir = Path(tmp)
        out_dir = workdir / "out"
        out_dir.mkdir()
        baseline_out = workdir / "pyarrow.parquet"
        arrow = best_of(
            args.repeat,
            "pyarrow ParquetWriter, in process",
            lambda: pyarrow_write(schema, batches, baseline_out),
        )
        connector = start_connector(out_dir, workdir)
        try:
            best = float("inf")
            for attempt in range(args.repeat):
                requests = frames(schema, batches, "write.parquet", f"bench-{attempt}")
                cpu = cpu_seconds(connector.process.pid)
                started = time.perf_counter()  # after encoding: the client's cost stays out
                written = asyncio.run(connector_write(connector.address, requests))
                seconds = time.perf_counter() - started
                cpu = cpu_seconds(connector.process.pid) - cpu
                best = min(best, seconds)
                print(
                    f"  {'connector Write (service process)':<44} run {attempt + 1}: "
                    f"{seconds:6.2f} s  {written / seconds:12,.0f} rows/s  "
                    f"(connector CPU {cpu:.2f} s)"
                )
        finally:
            connector.stop()
        print(f"\n  pyarrow file:   {describe(baseline_out)}")
        print(f"  connector file: {describe(out_dir / 'write.parquet')}")
        print(f"\n  pyarrow   {rows / arrow:12,.0f} rows/s  ({arrow:.2f} s)")
        print(f"  connector {rows / best:12,.0f} rows/s  ({best:.2f} s)")
        print(f"  connector / pyarrow rate: {arrow / best:.2f}x (target >= 0.7x)", flush=True)


if __name__ == "__main__":
    main()

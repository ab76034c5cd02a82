"""PostgreSQL <-> Arrow through the connector service, against the in-process baselines.

On TPC-H ``lineitem`` (``tpchgen-cli``; scale factor 1 is 6,001,215 rows) loaded into
the table ``bench_lineitem``, in one run:

reads   (a) the connector service (a separate process): PlanRead + Read with 1 split
            and with N splits (tickets read concurrently over gRPC, every batch
            decoded by the client);
        (b) the fastest in-process Arrow readers: ADBC (``adbc-driver-postgresql``)
            as the driver returns it, and with the connector's own conversions
            (numeric -> decimal128), on one connection and on N threads;
        (c) ``pandas.read_sql`` (SQLAlchemy + psycopg 3), the typical user script,
            on the first ``--pandas-rows`` rows (its rate does not depend on size);
        (d) ``COPY (SELECT ...) TO STDOUT (FORMAT binary)`` drained to nowhere
            (asyncpg ``copy_from_query``, and ``psql`` into /dev/null, a C client):
            PostgreSQL's own ceiling;
writes  Arrow -> PostgreSQL through the connector's Write (a gRPC client stream)
        versus in-process ADBC ingest (``COPY ... FROM STDIN (FORMAT binary)``).

Prints rows/s, MB/s (Arrow in-memory bytes of the result; raw COPY bytes for (d))
and the ratios the targets are stated in. Not part of the test suite::

    .venv/bin/python bench/connector_postgres.py              # scale factor 1
    .venv/bin/python bench/connector_postgres.py --scale 0.1  # quicker

The generated Parquet is cached under ``--data-dir`` (a temporary directory by
default, never the repository); ``bench_lineitem`` is reused when its row count is
right. Needs PostgreSQL at ``--dsn`` (default the local test server).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from datadog_platform.api.common.v1 import step_pb2
from datadog_platform.api.connector.v1 import connector_service_pb2 as pb
from datadog_platform.api.connector.v1 import connector_service_pb2_grpc as pb_grpc
from datadog_platform.core.arrow_frames import (
    StreamCounter,
    decode_batch,
    decode_schema,
    encode_batch,
    encode_schema,
    split_by_bytes,
)
from datadog_platform.core.channels import insecure_channel

TABLE = "bench_lineitem"
RPC_TIMEOUT = 3600
DDL = f"""
CREATE TABLE {TABLE} (
  l_orderkey bigint NOT NULL, l_partkey bigint NOT NULL, l_suppkey bigint NOT NULL,
  l_linenumber integer NOT NULL, l_quantity numeric(15,2) NOT NULL,
  l_extendedprice numeric(15,2) NOT NULL, l_discount numeric(15,2) NOT NULL,
  l_tax numeric(15,2) NOT NULL, l_returnflag text NOT NULL, l_linestatus text NOT NULL,
  l_shipdate date NOT NULL, l_commitdate date NOT NULL, l_receiptdate date NOT NULL,
  l_shipinstruct text NOT NULL, l_shipmode text NOT NULL, l_comment text NOT NULL
)
"""
NUMERIC_COLUMNS = ("l_quantity", "l_extendedprice", "l_discount", "l_tax")


@dataclass
class Result:
    """One measured path."""

    name: str
    rows: int
    nbytes: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds

    @property
    def mb_per_second(self) -> float:
        return self.nbytes / self.seconds / 1e6


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def generate(scale: float, data_dir: Path) -> Path:
    """lineitem at ``scale`` as Parquet (cached in ``data_dir``)."""
    out = data_dir / f"tpch-sf{scale:g}"
    path = out / "lineitem.parquet"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        log(f"generating TPC-H lineitem at scale {scale:g} into {out} ...")
        tpchgen = Path(sys.executable).with_name("tpchgen-cli")
        command = [str(tpchgen) if tpchgen.exists() else "tpchgen-cli", "parquet"]
        command += ["-s", f"{scale:g}", "--tables=lineitem", f"--output-dir={out}"]
        subprocess.run(command, check=True)
    return path


def load_table(parquet: Path) -> pa.Table:
    """The Parquet as Arrow with plain strings (tpchgen writes string_view)."""
    table = pq.read_table(parquet)
    fields = [
        pa.field(f.name, pa.string() if f.type == pa.string_view() else f.type, f.nullable)
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def ensure_loaded(dsn: str, data: pa.Table) -> None:
    """``bench_lineitem`` holding ``data`` (reused when the row count matches)."""
    with adbc.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT to_regclass($1) IS NOT NULL", (TABLE,))
        if cursor.fetchone()[0]:
            cursor.execute(f"SELECT count(*) FROM {TABLE}")
            if cursor.fetchone()[0] == data.num_rows:
                log(f"reusing {TABLE} ({data.num_rows:,} rows)")
                return
            cursor.execute(f"DROP TABLE {TABLE}")
        log(f"loading {data.num_rows:,} rows into {TABLE} ...")
        cursor.execute(DDL)
        cursor.adbc_ingest(TABLE, data, mode="append")
        conn.commit()
    with adbc.connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {TABLE}")


# --------------------------------------------------------------------------- connector


class ConnectorProcess:
    """The connector service as its own process, serving one postgres connection."""

    def __init__(self, dsn: str, pool_size: int, workdir: Path) -> None:
        config = workdir / "connector.yaml"
        connection = {"type": "postgres", "dsn": dsn, "pool_size": pool_size}
        config.write_text(yaml.safe_dump({"connections": {"pg": connection}}))
        self.log_path = workdir / "connector.log"
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "datadog_platform.connector.main"),
                *("--listen", "127.0.0.1:0", "--config", str(config), "--log-level", "WARNING"),
            ],
            stdout=subprocess.PIPE,
            stderr=self.log_path.open("w"),
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if match is None:
            self.process.kill()
            raise SystemExit(f"the connector did not start:\n{self.log_path.read_text()}")
        self.address = match.group(1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _source(table: str) -> step_pb2.SourceSpec:
    return step_pb2.SourceSpec(database=step_pb2.DatabaseSource(connection="pg", table=table))


async def connector_read(address: str, splits: int) -> Result:
    """PlanRead + concurrent Reads over gRPC, every batch decoded."""
    async with insecure_channel(address) as channel:
        stub = pb_grpc.ConnectorServiceStub(channel)
        started = time.perf_counter()
        plan = await stub.PlanRead(
            pb.PlanReadRequest(source=_source(TABLE), max_splits=splits), timeout=RPC_TIMEOUT
        )

        async def read(ticket: bytes) -> tuple[int, int]:
            rows = nbytes = 0
            schema = None
            request = pb.ReadRequest(source=_source(TABLE), ticket=ticket)
            async for frame in stub.Read(request, timeout=RPC_TIMEOUT):
                kind = frame.WhichOneof("frame")
                if kind == "schema":
                    schema = decode_schema(frame.schema)
                elif kind == "record_batch":
                    batch = decode_batch(frame.record_batch, schema)
                    rows += batch.num_rows
                    nbytes += batch.nbytes
            return rows, nbytes

        parts = await asyncio.gather(*(read(t.ticket) for t in plan.tickets))
        seconds = time.perf_counter() - started
    name = f"connector PlanRead+Read, {len(plan.tickets)} split(s)"
    return Result(name, sum(p[0] for p in parts), sum(p[1] for p in parts), seconds)


async def connector_write(address: str, data: pa.Table, table: str) -> Result:
    """Arrow -> PostgreSQL through Write (a new table, created from the schema)."""
    batches = list(split_by_bytes(data.to_batches()))
    sink = step_pb2.SinkSpec(
        database=step_pb2.DatabaseSink(
            connection="pg", table=table, mode=step_pb2.WRITE_MODE_APPEND
        )
    )

    async def frames() -> AsyncIterator[pb.WriteRequest]:
        key = f"bench/{uuid.uuid4().hex}"
        yield pb.WriteRequest(header=pb.WriteHeader(sink=sink, idempotency_key=key))
        yield pb.WriteRequest(schema=encode_schema(data.schema))
        counter = StreamCounter()
        for batch in batches:
            request = pb.WriteRequest()
            encode_batch(batch, counter, into=request.record_batch)
            yield request
        yield pb.WriteRequest(complete=counter.complete())

    async with insecure_channel(address) as channel:
        stub = pb_grpc.ConnectorServiceStub(channel)
        started = time.perf_counter()
        response = await stub.Write(frames(), timeout=RPC_TIMEOUT)
        seconds = time.perf_counter() - started
    assert response.rows_written == data.num_rows, response
    return Result("connector Write", data.num_rows, data.nbytes, seconds)


# --------------------------------------------------------------------------- baselines


def _select(converted: bool, where: str = "") -> str:
    """The benchmark query; ``converted`` reads numerics as the connector does (as text)."""
    if not converted:
        return f"SELECT * FROM {TABLE}{where}"
    names = re.findall(r"\b(l_\w+) ", DDL)
    columns = [f"{n}::text AS {n}" if n in NUMERIC_COLUMNS else n for n in names]
    return f"SELECT {', '.join(columns)} FROM {TABLE}{where}"


def _adbc_read(dsn: str, sql: str, convert: bool) -> tuple[int, int]:
    rows = nbytes = 0
    with adbc.connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(4 << 20)})
        cursor.execute(sql)
        reader = cursor.fetch_record_batch()
        for batch in reader:
            if convert:
                arrays = [
                    column.cast(pa.decimal128(15, 2)) if name in NUMERIC_COLUMNS else column
                    for name, column in zip(batch.schema.names, batch.columns, strict=True)
                ]
                batch = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
            rows += batch.num_rows
            nbytes += batch.nbytes
    return rows, nbytes


def adbc_read(dsn: str, converted: bool, threads: int, pages: int) -> Result:
    """In-process ADBC: one connection, or ``threads`` connections on ctid page ranges."""
    if threads == 1:
        sqls = [_select(converted)]
    else:
        bounds = [pages * i // threads for i in range(threads + 1)]
        sqls = []
        for i in range(threads):
            low = "" if i == 0 else f"ctid >= '({bounds[i]},0)'::tid"
            high = "" if i == threads - 1 else f"ctid < '({bounds[i + 1]},0)'::tid"
            where = " AND ".join(c for c in (low, high) if c)
            sqls.append(_select(converted, f" WHERE {where}" if where else ""))
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def work(sql: str) -> None:
        part = _adbc_read(dsn, sql, converted)
        with lock:
            results.append(part)

    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(sql,)) for sql in sqls]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    what = "numeric -> decimal128 as the connector" if converted else "numeric as driver gives"
    name = f"in-process ADBC, {threads} connection(s), {what}"
    return Result(name, sum(r[0] for r in results), sum(r[1] for r in results), seconds)


def pandas_read(dsn: str, rows: int) -> Result:
    """``pandas.read_sql`` through SQLAlchemy + psycopg 3."""
    import pandas as pd
    import sqlalchemy

    engine = sqlalchemy.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    started = time.perf_counter()
    frame = pd.read_sql(f"SELECT * FROM {TABLE} LIMIT {rows}", engine)
    seconds = time.perf_counter() - started
    engine.dispose()
    nbytes = int(frame.memory_usage(deep=True).sum())
    return Result(f"pandas.read_sql (first {rows:,} rows)", len(frame), nbytes, seconds)


async def copy_drain(dsn: str, rows: int) -> Result:
    """``COPY (SELECT ...) TO STDOUT (FORMAT binary)`` drained to nowhere."""
    conn = await asyncpg.connect(dsn)
    nbytes = 0

    async def sink(chunk: bytes) -> None:
        nonlocal nbytes
        nbytes += len(chunk)

    try:
        started = time.perf_counter()
        await conn.copy_from_query(f"SELECT * FROM {TABLE}", output=sink, format="binary")
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return Result("COPY TO STDOUT (FORMAT binary), drained", rows, nbytes, seconds)


def psql_drain(dsn: str, rows: int) -> Result:
    """The same COPY through ``psql`` (a C client) into /dev/null."""
    psql = shutil.which("psql") or "psql"
    command = f"COPY (SELECT * FROM {TABLE}) TO STDOUT (FORMAT binary)"
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run([psql, dsn, "-X", "-q", "-c", command], stdout=sink, check=True)
    seconds = time.perf_counter() - started
    return Result("COPY TO STDOUT (FORMAT binary) via psql > /dev/null", rows, 0, seconds)


def adbc_ingest(dsn: str, data: pa.Table, table: str) -> Result:
    """In-process ADBC ingest (binary COPY) into a new table."""
    with adbc.connect(dsn) as conn, conn.cursor() as cursor:
        started = time.perf_counter()
        cursor.adbc_ingest(table, data, mode="create")
        conn.commit()
        seconds = time.perf_counter() - started
    return Result("in-process ADBC ingest", data.num_rows, data.nbytes, seconds)


def drop(dsn: str, *tables: str) -> None:
    with adbc.connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        for table in tables:
            cursor.execute(f'DROP TABLE IF EXISTS "{table}"')


# --------------------------------------------------------------------------- report


def show(result: Result) -> Result:
    rate = f"{result.mb_per_second:7.1f} MB/s" if result.nbytes else ""
    print(
        f"  {result.name:<66} {result.rows:>10,} rows {result.seconds:7.2f} s "
        f"{result.rows_per_second / 1e6:6.3f} M rows/s {rate}",
        flush=True,
    )
    return result


def ratio(label: str, top: Result, bottom: Result, target: float | None = None) -> None:
    value = top.rows_per_second / bottom.rows_per_second
    verdict = ""
    if target is not None:
        verdict = f"  (target >= {target:g}: {'met' if value >= target else 'NOT met'})"
    print(f"  {label:<66} {value:6.2f}x{verdict}", flush=True)


async def best_of(repeat: int, step: Callable[[], Awaitable[Result] | Result]) -> Result:
    """The fastest of ``repeat`` runs (this machine is shared: the best run is the cleanest)."""
    best: Result | None = None
    for _ in range(repeat):
        outcome = step()
        result = await outcome if inspect.isawaitable(outcome) else outcome
        if best is None or result.seconds < best.seconds:
            best = result
    assert best is not None
    return show(best)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="TPC-H scale factor (1 = 6M rows)")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--splits", type=int, default=4, help="splits of the parallel reads")
    parser.add_argument("--pandas-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs per path; the best counts")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "datadog-bench",
        help="where the generated Parquet is cached (never inside the repository)",
    )
    args = parser.parse_args()

    data = load_table(generate(args.scale, args.data_dir))
    ensure_loaded(args.dsn, data)
    with adbc.connect(args.dsn) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT (pg_relation_size($1::regclass) / current_setting('block_size')::int)::int8",
            (TABLE,),
        )
        pages = int(cursor.fetchone()[0])
    rows = data.num_rows
    print(
        f"\nTPC-H lineitem SF{args.scale:g}: {rows:,} rows, {data.nbytes / 1e6:,.0f} MB as Arrow; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start\n",
        flush=True,
    )

    workdir = Path(tempfile.mkdtemp(prefix="datadog-bench-"))
    connector = ConnectorProcess(args.dsn, max(4, args.splits), workdir)
    try:
        # A warm-up read so that the table is in the page cache for everyone.
        await copy_drain(args.dsn, rows)
        print("reads", flush=True)
        measure = functools.partial(best_of, args.repeat)
        one = await measure(lambda: connector_read(connector.address, 1))
        many = await measure(lambda: connector_read(connector.address, args.splits))
        raw = await measure(lambda: adbc_read(args.dsn, False, 1, pages))
        converted = await measure(lambda: adbc_read(args.dsn, True, 1, pages))
        parallel = await measure(lambda: adbc_read(args.dsn, True, args.splits, pages))
        pandas = await measure(lambda: pandas_read(args.dsn, min(args.pandas_rows, rows)))
        copy = await measure(lambda: copy_drain(args.dsn, rows))
        if shutil.which("psql"):
            await measure(lambda: psql_drain(args.dsn, rows))
        fastest_single = max(raw, converted, key=lambda r: r.rows_per_second)
        fastest = max(raw, converted, parallel, key=lambda r: r.rows_per_second)
        best = max(one, many, key=lambda r: r.rows_per_second)
        print("read ratios", flush=True)
        ratio("connector 1 split / fastest in-process on 1 connection", one, fastest_single, 0.8)
        ratio(
            f"connector {args.splits} splits / in-process ADBC on {args.splits} threads",
            many,
            parallel,
            0.8,
        )
        ratio("connector best / fastest in-process", best, fastest, 0.8)
        ratio("connector best / pandas.read_sql", best, pandas, 5)
        ratio(f"connector {args.splits} splits / 1 split", many, one, 1)
        ratio("connector best / COPY binary drained (ceiling)", best, copy)

        print("writes", flush=True)

        async def through_connector() -> Result:
            target = f"bench_write_{uuid.uuid4().hex[:8]}"
            try:
                return await connector_write(connector.address, data, target)
            finally:
                drop(args.dsn, target)

        def in_process() -> Result:
            target = f"bench_write_{uuid.uuid4().hex[:8]}"
            try:
                return adbc_ingest(args.dsn, data, target)
            finally:
                drop(args.dsn, target)

        written = await measure(through_connector)
        ingest = await measure(in_process)
        print("write ratios", flush=True)
        ratio("connector Write / in-process ADBC ingest", written, ingest, 0.8)
    finally:
        connector.stop()
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

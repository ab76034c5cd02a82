"""Engine choice for the executor: DuckDB over Arrow streams vs pyarrow Acero vs pyarrow.compute.

Two workloads over ~5M rows of TPC-H-like ``lineitem`` generated in memory with numpy,
fed as a stream of record batches (as the executor gets them from the connector):

- streaming: filter (``l_shipdate <= 1998-09-02 AND l_discount > 0.05``) + derive
  (``disc_price = l_extendedprice * (1 - l_discount)``, ``charge = disc_price * (1 + l_tax)``),
  every input column passed through;
- Q1-like: the same filter on ``l_shipdate``, group by ``l_returnflag, l_linestatus``,
  sums, averages and a count.

Prints rows/s of each engine and its ratio to DuckDB. Run:
``.venv/bin/python bench/engine_choice.py [ROWS] [THREADS]``.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.acero as ac
import pyarrow.compute as pc

BATCH_ROWS = 64 * 1024
CUTOFF = dt.date(1998, 9, 2)


def lineitem(rows: int) -> pa.Table:
    """TPC-H-like lineitem columns (the ones Q1 uses, plus keys and a comment)."""
    rng = np.random.default_rng(1)
    start = np.datetime64("1992-01-02")
    shipdate = start + rng.integers(0, 2526, rows).astype("timedelta64[D]")
    return pa.table(
        {
            "l_orderkey": pa.array(np.arange(rows, dtype=np.int64)),
            "l_quantity": pa.array(rng.integers(1, 51, rows).astype(np.float64)),
            "l_extendedprice": pa.array(np.round(rng.uniform(900, 105000, rows), 2)),
            "l_discount": pa.array(rng.integers(0, 11, rows) / 100.0),
            "l_tax": pa.array(rng.integers(0, 9, rows) / 100.0),
            "l_returnflag": pa.array(rng.choice(np.array(["A", "N", "R"]), rows)),
            "l_linestatus": pa.array(rng.choice(np.array(["F", "O"]), rows)),
            "l_shipdate": pa.array(shipdate.astype("datetime64[D]"), pa.date32()),
            "l_comment": pa.array(rng.choice(np.array(["quick brown", "lazy dog", "fox"]), rows)),
        }
    )


def reader(table: pa.Table) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(BATCH_ROWS))


# --- streaming filter + derive ------------------------------------------------------------

STREAM_SQL = """
SELECT *, l_extendedprice * (1 - l_discount) AS disc_price,
       l_extendedprice * (1 - l_discount) * (1 + l_tax) AS charge
FROM input WHERE l_shipdate <= DATE '1998-09-02' AND l_discount > 0.05
"""


def duckdb_stream(table: pa.Table, threads: int) -> int:
    con = duckdb.connect(":memory:")
    con.execute(f"SET threads = {threads}")
    con.register("input", reader(table))
    out = con.sql(STREAM_SQL).to_arrow_reader(BATCH_ROWS)
    return sum(batch.num_rows for batch in out)


def acero_stream(table: pa.Table, threads: int) -> int:
    pa.set_cpu_count(threads)
    source = ac.Declaration(
        "record_batch_reader_source", ac.RecordBatchReaderSourceNodeOptions(reader(table))
    )
    condition = (pc.field("l_shipdate") <= pa.scalar(CUTOFF, pa.date32())) & (
        pc.field("l_discount") > 0.05
    )
    disc = pc.field("l_extendedprice") * (pc.scalar(1.0) - pc.field("l_discount"))
    names = table.schema.names
    project = ac.ProjectNodeOptions(
        [pc.field(n) for n in names] + [disc, disc * (pc.scalar(1.0) + pc.field("l_tax"))],
        [*names, "disc_price", "charge"],
    )
    plan = ac.Declaration.from_sequence(
        [
            source,
            ac.Declaration("filter", ac.FilterNodeOptions(condition)),
            ac.Declaration("project", project),
        ]
    )
    out = plan.to_reader(use_threads=threads > 1)
    return sum(batch.num_rows for batch in out)


def compute_stream(table: pa.Table, threads: int) -> int:
    pa.set_cpu_count(threads)
    cutoff = pa.scalar(CUTOFF, pa.date32())
    rows = 0
    for batch in reader(table):
        mask = pc.and_(
            pc.less_equal(batch["l_shipdate"], cutoff), pc.greater(batch["l_discount"], 0.05)
        )
        kept = batch.filter(mask)
        disc = pc.multiply(kept["l_extendedprice"], pc.subtract(1, kept["l_discount"]))
        charge = pc.multiply(disc, pc.add(1, kept["l_tax"]))
        out = pa.RecordBatch.from_arrays(
            [*kept.columns, disc, charge], names=[*kept.schema.names, "disc_price", "charge"]
        )
        rows += out.num_rows
    return rows


# --- Q1-like aggregate ------------------------------------------------------------------------

Q1_SQL = """
SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty,
       sum(l_extendedprice) AS sum_base_price,
       sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
       sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
       avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price,
       avg(l_discount) AS avg_disc, count(*) AS count_order
FROM input WHERE l_shipdate <= DATE '1998-09-02'
GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus
"""


def duckdb_q1(table: pa.Table, threads: int) -> int:
    con = duckdb.connect(":memory:")
    con.execute(f"SET threads = {threads}")
    con.register("input", reader(table))
    return con.sql(Q1_SQL).to_arrow_table().num_rows


def acero_q1(table: pa.Table, threads: int) -> int:
    pa.set_cpu_count(threads)
    source = ac.Declaration(
        "record_batch_reader_source", ac.RecordBatchReaderSourceNodeOptions(reader(table))
    )
    condition = pc.field("l_shipdate") <= pa.scalar(CUTOFF, pa.date32())
    disc = pc.field("l_extendedprice") * (pc.scalar(1.0) - pc.field("l_discount"))
    keep = ["l_returnflag", "l_linestatus", "l_quantity", "l_extendedprice", "l_discount"]
    project = ac.ProjectNodeOptions(
        [pc.field(n) for n in keep] + [disc, disc * (pc.scalar(1.0) + pc.field("l_tax"))],
        [*keep, "disc_price", "charge"],
    )
    aggregate = ac.AggregateNodeOptions(
        [
            ("l_quantity", "hash_sum", None, "sum_qty"),
            ("l_extendedprice", "hash_sum", None, "sum_base_price"),
            ("disc_price", "hash_sum", None, "sum_disc_price"),
            ("charge", "hash_sum", None, "sum_charge"),
            ("l_quantity", "hash_mean", None, "avg_qty"),
            ("l_extendedprice", "hash_mean", None, "avg_price"),
            ("l_discount", "hash_mean", None, "avg_disc"),
            ("l_quantity", "hash_count", None, "count_order"),
        ],
        keys=["l_returnflag", "l_linestatus"],
    )
    plan = ac.Declaration.from_sequence(
        [
            source,
            ac.Declaration("filter", ac.FilterNodeOptions(condition)),
            ac.Declaration("project", project),
            ac.Declaration("aggregate", aggregate),
        ]
    )
    return plan.to_table(use_threads=threads > 1).num_rows


def compute_q1(table: pa.Table, threads: int) -> int:
    """Per batch partial aggregates (Table.group_by), then a final merge."""
    pa.set_cpu_count(threads)
    cutoff = pa.scalar(CUTOFF, pa.date32())
    partials = []
    for batch in reader(table):
        kept = batch.filter(pc.less_equal(batch["l_shipdate"], cutoff))
        disc = pc.multiply(kept["l_extendedprice"], pc.subtract(1, kept["l_discount"]))
        charge = pc.multiply(disc, pc.add(1, kept["l_tax"]))
        part = (
            pa.table(
                {
                    "f": kept["l_returnflag"],
                    "s": kept["l_linestatus"],
                    "q": kept["l_quantity"],
                    "p": kept["l_extendedprice"],
                    "d": kept["l_discount"],
                    "dp": disc,
                    "c": charge,
                }
            )
            .group_by(["f", "s"])
            .aggregate(
                [
                    ("q", "sum"),
                    ("p", "sum"),
                    ("d", "sum"),
                    ("dp", "sum"),
                    ("c", "sum"),
                    ("q", "count"),
                ]
            )
        )
        partials.append(part)
    merged = (
        pa.concat_tables(partials)
        .group_by(["f", "s"])
        .aggregate([(c, "sum") for c in ("q_sum", "p_sum", "d_sum", "dp_sum", "c_sum", "q_count")])
    )
    return merged.num_rows


def measure(name: str, run: Callable[[pa.Table, int], int], table: pa.Table, threads: int) -> float:
    run(table.slice(0, 100_000), threads)  # warm-up
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        run(table, threads)
        best = min(best, time.perf_counter() - started)
    rate = table.num_rows / best
    print(f"  {name:<22} {best * 1000:8.0f} ms  {rate / 1e6:7.1f} M rows/s")
    return rate


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000_000
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    table = lineitem(rows)
    print(
        f"{rows} rows, {table.nbytes / 1e6:.0f} MB in memory, batches of {BATCH_ROWS} rows, "
        f"{threads} thread(s); best of 3"
    )
    for title, runs in (
        ("filter + derive (streaming)", (duckdb_stream, acero_stream, compute_stream)),
        ("Q1-like group-by", (duckdb_q1, acero_q1, compute_q1)),
    ):
        print(title)
        rates = {
            name: measure(name, run, table, threads)
            for name, run in zip(("duckdb", "pyarrow.acero", "pyarrow.compute"), runs, strict=True)
        }
        ratios = ", ".join(f"{n} {rates[n] / rates['duckdb']:.2f}x" for n in rates)
        print(f"  ratio to duckdb: {ratios}")


if __name__ == "__main__":
    main()

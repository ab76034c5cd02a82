"""End to end with a database: PostgreSQL → filter → Parquet and Parquet → PostgreSQL.

The three services run as separate processes; the connector's config file declares
a ``warehouse`` postgres connection (the real server on this machine) whose password
comes from the environment, and every pipeline is created and run through the CLI.
Results are checked against SQL queries on the same server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from service_process import ServiceProcess

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DSN = "postgresql://postgres@127.0.0.1:5432/test"
# Trust authentication ignores it, so the connection works while the test checks
# that this value never leaves the connector service.
PASSWORD = f"not-shown-{uuid.uuid4().hex}"
ROWS = 300
COLUMNS = ("order_id", "customer", "country", "amount", "ordered_at", "paid")


def sql(query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the test database (fails loudly when PostgreSQL is down)."""
    with psycopg.connect(DSN, connect_timeout=5, autocommit=True) as conn:
        cursor = conn.execute(query, params or None)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def source_table() -> Iterator[str]:
    """A uniquely named table of ``ROWS`` orders, with NULLs and unicode; dropped afterwards."""
    name = f"e2e_orders_{uuid.uuid4().hex[:12]}"
    base = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        (
            i,
            f"customer {i} — ünïcode ✓" if i % 7 == 0 else f"customer {i}",
            None if i % 41 == 0 else ("FR", "DE", "US", "JP")[i % 4],
            None if i % 50 == 0 else Decimal(i * 37 % 250) + Decimal("0.25"),
            base + timedelta(hours=i, microseconds=i),
            i % 3 == 0,
        )
        for i in range(1, ROWS + 1)
    ]
    with psycopg.connect(DSN, connect_timeout=5, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE public.{name} (order_id bigint PRIMARY KEY, customer text, "
            "country text, amount numeric(10, 2), ordered_at timestamptz, paid boolean)"
        )
        try:
            with conn.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO public.{name} VALUES (%s, %s, %s, %s, %s, %s)", rows
                )
            yield name
        finally:
            conn.execute(f"DROP TABLE IF EXISTS public.{name}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with the examples and a connector config of two connections."""
    root = tmp_path_factory.mktemp("dbpipe")
    (root / "examples").mkdir()
    (root / "examples" / "postgres_to_parquet.yaml").write_text(
        (REPO / "examples" / "postgres_to_parquet.yaml").read_text()
    )
    (root / "connectors.yaml").write_text(
        "connections:\n"
        "  local: {type: file, root: .}\n"
        f'  warehouse: {{type: postgres, dsn: "{DSN}", password: "${{env:PG_PASSWORD}}"}}\n'
    )
    return root


@pytest.fixture(scope="module")
def services(workdir: Path) -> Iterator[dict[str, ServiceProcess]]:
    """Connector (with the config file), executor and scheduler as separate processes."""
    logs = workdir / "logs"
    logs.mkdir()
    env = {**os.environ, "PG_PASSWORD": PASSWORD, "NO_COLOR": "1"}
    procs: dict[str, ServiceProcess] = {}
    try:
        procs["connector"] = ServiceProcess(
            "datadog_platform.connector.main",
            "--config",
            str(workdir / "connectors.yaml"),
            cwd=workdir,
            log=logs / "connector.log",
            env=env,
        )
        procs["executor"] = ServiceProcess(
            "datadog_platform.executor.main",
            "--connector",
            procs["connector"].address,
            cwd=workdir,
            log=logs / "executor.log",
            env=env,
        )
        procs["scheduler"] = ServiceProcess(
            "datadog_platform.scheduler.main",
            "--db",
            str(workdir / "state" / "scheduler.db"),
            "--executor",
            procs["executor"].address,
            "--connector",
            procs["connector"].address,
            cwd=workdir,
            log=logs / "scheduler.log",
            env=env,
        )
        yield procs
        for name in ("scheduler", "executor", "connector"):
            assert procs[name].terminate() == 0, name
        logged = "".join(p.read_text() for p in logs.iterdir())
        assert PASSWORD not in logged
    finally:
        for proc in procs.values():
            proc.stop()


def cli(server: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``datadog`` console script."""
    result = subprocess.run(
        [str(BIN / "datadog"), "--server", server, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert PASSWORD not in result.stdout + result.stderr
    return result


def run_pipeline(server: str, name: str, cwd: Path) -> str:
    """``pipeline run --wait``; returns its output after checking it succeeded."""
    run = cli(server, "pipeline", "run", name, "--wait", cwd=cwd)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCEEDED" in run.stdout, run.stdout
    return run.stdout


def normalized(row: dict[str, Any]) -> tuple[Any, ...]:
    """A row in comparable form (Parquet and psycopg agree on types except offsets)."""
    return tuple(row[c] for c in COLUMNS)


def test_postgres_table_filtered_into_parquet(
    workdir: Path, services: dict[str, ServiceProcess], source_table: str
) -> None:
    server = services["scheduler"].address
    spec = (workdir / "examples" / "postgres_to_parquet.yaml").read_text()
    assert "table: public.orders" in spec
    (workdir / "pg.yaml").write_text(spec.replace("public.orders", f"public.{source_table}"))

    created = cli(server, "pipeline", "create", "-f", "pg.yaml", cwd=workdir)
    assert created.returncode == 0, created.stdout + created.stderr
    got = cli(server, "pipeline", "get", "postgres_to_parquet", cwd=workdir)
    assert got.returncode == 0, got.stderr
    assert f"connection=warehouse, table=public.{source_table}" in got.stdout

    connections = cli(server, "connector", "list", cwd=workdir)
    assert connections.returncode == 0, connections.stderr
    assert "warehouse" in connections.stdout
    assert "postgres" in connections.stdout

    expected = sql(
        f"SELECT {', '.join(COLUMNS)} FROM public.{source_table} "
        "WHERE amount > 100 ORDER BY order_id"
    )
    assert 0 < len(expected) < ROWS  # the filter keeps some rows and drops others

    output = run_pipeline(server, "postgres_to_parquet", workdir)
    assert f"wrote {len(expected)} rows" in output

    parquet = pq.read_table(workdir / "out" / "big_orders_from_postgres.parquet")
    assert parquet.column_names == list(COLUMNS)
    assert parquet.schema.field("amount").type == pa.decimal128(10, 2)
    assert pa.types.is_timestamp(parquet.schema.field("ordered_at").type)
    rows = sorted((normalized(r) for r in parquet.to_pylist()), key=lambda r: r[0])
    assert rows == expected


def test_parquet_appended_to_postgres_twice_doubles_the_rows(
    workdir: Path, services: dict[str, ServiceProcess], source_table: str
) -> None:
    server = services["scheduler"].address
    rows = sql(
        f"SELECT {', '.join(COLUMNS)} FROM public.{source_table} "
        "WHERE country = 'FR' ORDER BY order_id"
    )
    (workdir / "in").mkdir(exist_ok=True)
    table = pa.Table.from_pylist(
        [dict(zip(COLUMNS, r, strict=True)) for r in rows],
        schema=pa.schema(
            [
                ("order_id", pa.int64()),
                ("customer", pa.string()),
                ("country", pa.string()),
                ("amount", pa.decimal128(10, 2)),
                ("ordered_at", pa.timestamp("us", tz="UTC")),
                ("paid", pa.bool_()),
            ]
        ),
    )
    pq.write_table(table, workdir / "in" / "fr_orders.parquet")
    target = f"e2e_appended_{uuid.uuid4().hex[:12]}"
    (workdir / "append.yaml").write_text(
        "name: parquet_to_postgres\n"
        "steps:\n"
        "  - {name: orders, source: {file: {path: in/fr_orders.parquet}}}\n"
        "  - name: paid\n"
        "    inputs: [orders]\n"
        "    transform: {filter: {predicate: 'paid'}}\n"
        "  - name: load\n"
        "    inputs: [paid]\n"
        "    sink:\n"
        "      database:\n"
        f"        {{connection: warehouse, table: public.{target}, mode: WRITE_MODE_APPEND}}\n"
    )
    try:
        created = cli(server, "pipeline", "create", "-f", "append.yaml", cwd=workdir)
        assert created.returncode == 0, created.stdout + created.stderr
        paid = [r for r in rows if r[COLUMNS.index("paid")]]
        assert 0 < len(paid) < len(rows)

        # Each run is a new idempotency key (run, stage), so APPEND adds the rows again:
        # exactly-once holds per run attempt, not across runs.
        first = run_pipeline(server, "parquet_to_postgres", workdir)
        assert f"wrote {len(paid)} rows" in first
        assert sql(f"SELECT count(*) FROM public.{target}") == [(len(paid),)]
        second = run_pipeline(server, "parquet_to_postgres", workdir)
        assert f"wrote {len(paid)} rows" in second
        run_ids = {re.search(r"\b([0-9a-f]{32})\b", out).group(1) for out in (first, second)}
        assert len(run_ids) == 2

        back = sql(f"SELECT {', '.join(COLUMNS)} FROM public.{target} ORDER BY order_id")
        assert back == sorted(paid * 2, key=lambda r: r[0])
        # The target was created from the Arrow schema with faithful types.
        types = dict(
            sql(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = %s",
                target,
            )
        )
        assert types["amount"] == "numeric"
        assert types["ordered_at"] == "timestamp with time zone"
        assert types["order_id"] == "bigint"
    finally:
        sql(f"DROP TABLE IF EXISTS public.{target}")

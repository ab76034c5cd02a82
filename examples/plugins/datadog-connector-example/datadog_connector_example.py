"""An example DataDog connector plugin: ``sequence``, a read-only source of generated rows.

A connection ``{type: sequence, rows: 1000000}`` serves database sources; reading
it yields one int64 column (named by the source's ``table``, default ``n``) with
the values ``start, start + step, ...`` (``rows`` of them). It shows everything a
plugin implements: a :class:`ConnectorType` documenting its options and
capabilities, and a :class:`Connection` that tests, describes, splits, reads and
(here) refuses to write. Register it with one entry point (see pyproject.toml)::

    [project.entry-points."datadog_platform.connectors"]
    sequence = "datadog_connector_example:SEQUENCE_CONNECTOR_TYPE"
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from datadog_platform.connector.base import (
    Capability,
    Connection,
    ConnectorType,
    OptionSpec,
    ReadPlan,
    ReadScope,
    RecordStream,
    SourceDescription,
    Ticket,
    TypeInfo,
    WriteOutcome,
    project_schema,
)
from datadog_platform.core.errors import DomainError, FieldViolation, invalid_argument

DEFAULT_COLUMN = "n"


class SequenceConnection(Connection):
    """``rows`` integers from ``start`` by ``step``, in batches of ``batch_rows``."""

    def __init__(self, name: str, rows: int, start: int, step: int, batch_rows: int) -> None:
        super().__init__(name, "sequence")
        self.rows, self.start, self.step, self.batch_rows = rows, start, step, batch_rows

    def public_options(self) -> dict[str, str]:
        return {"rows": str(self.rows), "start": str(self.start), "step": str(self.step)}

    async def test(self) -> str:
        return f"generates {self.rows} rows"

    def _schema(self, source: Any) -> pa.Schema:
        if source.query:
            raise invalid_argument(
                "INVALID_QUERY",
                "a sequence source takes no query; name its column in source.database.table",
                [FieldViolation("source.database.query", "not supported by sequence")],
            )
        return pa.schema([pa.field(source.table or DEFAULT_COLUMN, pa.int64(), nullable=False)])

    async def describe(self, source: Any) -> SourceDescription:
        return SourceDescription(self._schema(source), estimated_rows=self.rows)

    async def plan_read(self, source: Any, scope: ReadScope, max_splits: int) -> ReadPlan:
        schema = project_schema(self._schema(source), scope.columns)
        splits = max(1, min(max_splits or 4, self.rows or 1))
        bounds = [self.rows * i // splits for i in range(splits + 1)]
        tickets = tuple(
            Ticket(
                json.dumps({"from": lo, "to": hi}).encode(),
                f"rows [{lo}, {hi})",
                estimated_rows=hi - lo,
            )
            for lo, hi in itertools.pairwise(bounds)
        )
        return ReadPlan(schema, tickets)

    @contextlib.asynccontextmanager
    async def read(
        self, source: Any, scope: ReadScope, ticket: bytes
    ) -> AsyncIterator[RecordStream]:
        schema = project_schema(self._schema(source), scope.columns)
        lo, hi = 0, self.rows
        if ticket:
            try:
                bounds = json.loads(ticket)
                lo, hi = int(bounds["from"]), int(bounds["to"])
            except (ValueError, KeyError, TypeError):
                raise invalid_argument(
                    "INVALID_TICKET",
                    "ticket is not one returned by PlanRead for this source",
                    [FieldViolation("ticket", "not a sequence ticket")],
                ) from None

        async def batches() -> AsyncIterator[pa.RecordBatch]:
            for offset in range(lo, hi, self.batch_rows):
                await asyncio.sleep(0)  # a cancellation point between batches
                count = min(self.batch_rows, hi - offset)
                first = self.start + offset * self.step
                values = pa.array(range(first, first + count * self.step, self.step), pa.int64())
                columns = [values] * len(schema)
                yield pa.RecordBatch.from_arrays(columns, schema=schema)

        yield RecordStream(schema, batches())

    async def write(
        self,
        sink: Any,
        idempotency_key: str,
        schema: pa.Schema,
        batches: AsyncIterator[pa.RecordBatch],
    ) -> WriteOutcome:
        raise invalid_argument(
            "SINK_UNSUPPORTED",
            f"connection {self.name!r} is a read-only sequence",
            [FieldViolation("header.sink.database.connection", "read-only connection")],
        )


class SequenceConnectorType(ConnectorType):
    """The ``sequence`` connector type."""

    spec_kind = "database"
    info = TypeInfo(
        type="sequence",
        description="Generated integers (example plugin): a read-only database-like source",
        capabilities=frozenset(
            {
                Capability.READ,
                Capability.DESCRIBE,
                Capability.SPLITS,
                Capability.PROJECTION_PUSHDOWN,
            }
        ),
        options=(
            OptionSpec("rows", "integer", "how many rows to generate", required=True),
            OptionSpec("start", "integer", "first value", default="0"),
            OptionSpec("step", "integer", "difference between consecutive values", default="1"),
            OptionSpec("batch_rows", "integer", "rows per record batch", default="65536"),
        ),
    )

    def create(self, name: str, options: Mapping[str, Any], base_dir: Path) -> Connection:
        # The config loader already checked option names and types.
        rows = int(options["rows"])
        batch_rows = int(options.get("batch_rows", 65_536))
        for option, value, minimum in (("rows", rows, 0), ("batch_rows", batch_rows, 1)):
            if value < minimum:
                raise _config_error(name, option, f"must be at least {minimum}")
        return SequenceConnection(
            name,
            rows,
            int(options.get("start", 0)),
            int(options.get("step", 1)),
            batch_rows,
        )


def _config_error(name: str, option: str, problem: str) -> DomainError:
    """CONFIG_INVALID naming the connection and option."""
    return invalid_argument("CONFIG_INVALID", f"connection {name!r} option {option!r} {problem}")


#: The entry point object: a ConnectorType instance.
SEQUENCE_CONNECTOR_TYPE = SequenceConnectorType()

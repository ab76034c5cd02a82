"""The DataDog Python SDK: typed clients of the scheduler's public API and a pipeline
builder.

``Client`` (blocking) and ``AsyncClient`` (asyncio) have one method per
``SchedulerService`` RPC, returning the protobuf messages; failures raise
:class:`ApiError`. ``Pipeline`` builds the same ``Pipeline`` message as a YAML file::

    from datadog_platform.client import Client, Pipeline

    with Client("127.0.0.1:50051") as client:
        pipeline = (
            Pipeline("big_orders")
            .add_source("orders", file={"path": "orders.csv", "format": "FILE_FORMAT_CSV"})
            .add_transformation("big", filter={"predicate": "amount > 100"})
            .add_sink("out", file={"path": "out/big.parquet"})
        )
        pipeline.create(client)
        print(pipeline.run(client, wait=True).state)
"""

from datadog_platform.client.aio import AsyncClient
from datadog_platform.client.builder import Pipeline
from datadog_platform.client.connection import (
    DEFAULT_ADDRESS,
    DEFAULT_TIMEOUT,
    DEFAULT_WATCH_TIMEOUT,
    ConnectionSettings,
)
from datadog_platform.client.errors import ApiError
from datadog_platform.client.sync import Client

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WATCH_TIMEOUT",
    "ApiError",
    "AsyncClient",
    "Client",
    "ConnectionSettings",
    "Pipeline",
]

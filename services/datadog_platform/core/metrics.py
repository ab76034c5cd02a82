"""Prometheus metrics: the HTTP endpoint every service serves, the metric types the
services count with, and the RPC latency histogram.

Every metric is in prometheus_client's process-wide default registry (so the
process and GC collectors come for free); each service defines its own in its
``metrics`` module, and only those modules and the servicer-side wrappers touch
them: the domain code knows nothing of metrics.

Counting is on hot paths (the scheduler drives ~1000 stages/s), and
prometheus_client's own types take a lock and validate on every call (2-3 µs an
increment). :class:`LoopCounter`, :class:`LoopGauge` and :class:`LoopHistogram` are
plain Python numbers updated only from the event loop's thread, turned into
Prometheus families when scraped: an increment is a few tens of nanoseconds. Label
children are bound once (``labels()`` caches them) and kept by the caller.

The endpoint is aiohttp on the service's own event loop rather than
prometheus_client's threaded HTTP server: a scrape can await async refreshers
(the scheduler's run counts come from its store) without handing coroutines
across threads, reads the loop-only metrics on their own thread, a bind failure
surfaces at start like the gRPC port's, and the endpoint stops with the server.
"""

from __future__ import annotations

import asyncio
import bisect
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Generic, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from datadog_platform.core.logging import get_logger

log = get_logger(__name__)

#: Latency buckets (seconds) from sub-millisecond unary calls to hour-long stage streams.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
    7200.0,
)


# --- loop-only metric types ------------------------------------------------------------


class CounterChild:
    """One counter series: only ever goes up."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (not negative)."""
        self.value += amount


class GaugeChild:
    """One gauge series: set, or moved up and down."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        """Make it ``value``."""
        self.value = value

    def inc(self, amount: float = 1) -> None:
        """Add ``amount``."""
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        """Subtract ``amount``."""
        self.value -= amount


class HistogramChild:
    """One histogram series: observation counts per bucket and their sum."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation of ``value``."""
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value


C = TypeVar("C", CounterChild, GaugeChild, HistogramChild)


class _LoopFamily(Collector, Generic[C]):
    """Series by label values, exported when the registry is collected."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> C:
        """The series of these label values (created on first use, then the same object)."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
            child = self._children[values] = self._new()
        return child

    def _new(self) -> C:
        raise NotImplementedError

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def _family(self) -> Metric:
        raise NotImplementedError

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        # A copy: a scrape renders on a worker thread while the loop adds series.
        for values, child in list(self._children.items()):
            self._add(family, list(values), child)
        yield family

    def _add(self, family: Metric, values: list[str], child: C) -> None:
        raise NotImplementedError


class LoopCounter(_LoopFamily[CounterChild]):
    """A counter family updated from the event loop only (``name`` ends in ``_total``)."""

    def _new(self) -> CounterChild:
        return CounterChild()

    def _family(self) -> Metric:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, values: list[str], child: CounterChild) -> None:
        family.add_metric(values, child.value)  # type: ignore[attr-defined]


class LoopGauge(_LoopFamily[GaugeChild]):
    """A gauge family updated from the event loop only."""

    def _new(self) -> GaugeChild:
        return GaugeChild()

    def _family(self) -> Metric:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, values: list[str], child: GaugeChild) -> None:
        family.add_metric(values, child.value)  # type: ignore[attr-defined]


class LoopHistogram(_LoopFamily[HistogramChild]):
    """A histogram family updated from the event loop only."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.bounds = tuple(sorted(float(b) for b in buckets))
        super().__init__(name, documentation, labelnames, registry)

    def _new(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def _family(self) -> Metric:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, values: list[str], child: HistogramChild) -> None:
        counts, total = list(child.counts), child.sum
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        family.add_metric(values, buckets, total)  # type: ignore[attr-defined]


# --- the RPC histogram (the shared interceptor records every call) ---------------------

RPC_DURATION = LoopHistogram(
    "datadog_grpc_server_handling_seconds",
    "Time a gRPC call took on the server (streams: until their last message), "
    "by service, method and status code.",
    ("grpc_service", "grpc_method", "grpc_code"),
)

# (full method, code) -> its series: methods are the registered ones only, so bounded.
_RPC_CHILDREN: dict[tuple[str, str], HistogramChild] = {}


def observe_rpc(method: str, code: str, seconds: float) -> None:
    """Record one call of ``method`` (``/pkg.Service/Method``) that ended with ``code``."""
    child = _RPC_CHILDREN.get((method, code))
    if child is None:
        service, _, name = method.lstrip("/").rpartition("/")
        child = _RPC_CHILDREN[(method, code)] = RPC_DURATION.labels(service, name, code)
    child.observe(seconds)


# --- the endpoint ----------------------------------------------------------------------

#: A coroutine run before each scrape to bring gauges up to date (e.g. from a store).
Refresher = Callable[[], Awaitable[None]]

#: The longest a scrape waits for its refreshers; past it, it serves the last values.
REFRESH_TIMEOUT_SECONDS = 5.0


def split_host_port(listen: str) -> tuple[str, int]:
    """``("127.0.0.1", 9451)`` of ``127.0.0.1:9451`` (IPv6 as ``[::]:9451``)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise OSError(f"cannot serve metrics on {listen!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


class MetricsEndpoint:
    """``GET /metrics`` in the Prometheus text format, on ``listen`` (port 0: a free one)."""

    def __init__(
        self,
        listen: str,
        refreshers: Sequence[Refresher] = (),
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._listen = listen
        self._refreshers = list(refreshers)
        self._registry = registry
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """``host:port`` of the bound listener."""
        return f"{self._listen.rsplit(':', 1)[0]}:{self.port}"

    def add_refresher(self, refresher: Refresher) -> None:
        """Run ``refresher`` before every scrape."""
        self._refreshers.append(refresher)

    async def start(self) -> str:
        """Bind and serve; returns the bound ``host:port``. Raises OSError if it cannot bind."""
        host, port = split_host_port(self._listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family)
        except OSError as exc:
            raise OSError(
                f"cannot serve metrics on {self._listen}: {exc.strerror or exc} "
                '(--metrics-listen; "" disables the endpoint)'
            ) from None
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = sock.getsockname()[1]
        log.info("metrics.started", address=self.address)
        return self.address

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _scrape(self, _request: web.Request) -> web.Response:
        if self._refreshers:
            await self._refresh()
        body = await asyncio.to_thread(generate_latest, self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _refresh(self) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_SECONDS):
                await asyncio.gather(*(refresh() for refresh in self._refreshers))
        except Exception as exc:
            # A scrape still answers (with the last values); the failure is the news.
            log.warning(
                "metrics.refresh_failed",
                error=str(exc) or type(exc).__name__,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )


class CachedRefresher:
    """Runs ``refresh`` at most once per ``min_interval`` seconds, however often scraped.

    Bounds what several scrapers (or an impatient one) cost the service.
    """

    def __init__(self, refresh: Refresher, min_interval: float) -> None:
        self._refresh = refresh
        self._min_interval = min_interval
        self._last = float("-inf")
        self._lock = asyncio.Lock()

    async def __call__(self) -> None:
        async with self._lock:
            if time.monotonic() - self._last < self._min_interval:
                return
            await self._refresh()
            self._last = time.monotonic()

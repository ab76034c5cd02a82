"""Platform counters: what ``GetMetrics`` answers and the Prometheus gauges show."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PlatformCounts:
    """Counts over the whole store, plus what this scheduler is dispatching now.

    ``runs`` and ``stages`` map a state name (e.g. ``"RUNNING"``) to a count; states
    with nothing in them are absent. Rows and bytes are those written by succeeded
    stages (their final attempt's metrics).
    """

    pipelines: int = 0
    runs: Mapping[str, int] = field(default_factory=dict)
    stages: Mapping[str, int] = field(default_factory=dict)
    rows_written: int = 0
    bytes_written: int = 0
    stages_in_flight: int = 0

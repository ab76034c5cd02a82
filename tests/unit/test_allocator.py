"""glibc malloc thresholds for streaming services (core.allocator)."""

from __future__ import annotations

import platform

from datadog_platform.core.allocator import tune_allocator


def test_thresholds_apply_on_glibc() -> None:
    # This machine (and CI's) runs glibc: the settings must take, or services lose
    # half their streaming throughput to page faults without anyone noticing.
    assert platform.libc_ver()[0] == "glibc"
    assert tune_allocator() is True

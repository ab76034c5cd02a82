"""glibc malloc thresholds for streaming services (core.allocator)."""

from __future__ import annotations

import platform

import pyarrow as pa

from datadog_platform.core.allocator import arrow_jemalloc, tune_allocator


def test_thresholds_apply_on_glibc() -> None:
    # This machine (and CI's) runs glibc: the settings must take, or services lose
    # half their streaming throughput to page faults without anyone noticing.
    assert platform.libc_ver()[0] == "glibc"
    assert tune_allocator() is True


def test_arrow_uses_jemalloc_where_pyarrow_has_it() -> None:
    previous = pa.default_memory_pool()
    try:
        assert arrow_jemalloc() is True  # the manylinux wheels CI installs have it
        assert pa.default_memory_pool().backend_name == "jemalloc"
    finally:
        pa.set_memory_pool(previous)

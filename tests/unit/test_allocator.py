"""glibc malloc thresholds for streaming services (core.allocator)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pyarrow as pa

from datadog_platform.core.allocator import arrow_jemalloc, tune_allocator


def test_thresholds_apply_on_glibc() -> None:
    # This machine (and CI's) runs glibc: the settings must take, or services lose
    # half their streaming throughput to page faults without anyone noticing.
    assert platform.libc_ver()[0] == "glibc"
    assert tune_allocator() is True


# Twelve threads each hold a malloc'ed block at once; glibc's arenas live in heaps
# aligned to 64 MiB, so the distinct 64 MiB regions of the blocks count the arenas.
_COUNT_ARENAS = """
import ctypes, threading
from datadog_platform.core.allocator import tune_allocator
assert tune_allocator()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
regions, held = set(), threading.Barrier(12)
def work():
    regions.add(libc.malloc(1000) >> 26)
    held.wait()
threads = [threading.Thread(target=work) for _ in range(12)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(len(regions))
"""


def test_threads_share_one_arena_per_cpu() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_ARENAS], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) <= max(2, os.cpu_count() or 1)


def test_arrow_uses_jemalloc_where_pyarrow_has_it() -> None:
    previous = pa.default_memory_pool()
    try:
        assert arrow_jemalloc() is True  # the manylinux wheels CI installs have it
        assert pa.default_memory_pool().backend_name == "jemalloc"
    finally:
        pa.set_memory_pool(previous)

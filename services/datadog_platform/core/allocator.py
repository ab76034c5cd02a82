"""glibc malloc settings for processes that stream MiB-sized messages (DESIGN.md §3).

gRPC's C core and Python's ``bytes`` take every message from glibc malloc. With
glibc's defaults a 1 MiB block sits on the dynamic mmap threshold and every arena
gives memory back once 2 MiB at its top are free, so a stream of 1 MiB messages
maps, faults in, and unmaps (or mprotects and trims) its memory once per message:
measured here, 490 MB streamed over loopback cost the receiving process 0.75 CPU-s,
two thirds of it in the kernel, and 0.6 s; with the thresholds below, 0.33 CPU-s and
0.3 s. Arrow buffers are not affected (pyarrow uses its own allocator).

The fixed thresholds keep message-sized blocks in the heap and let each arena keep up
to ``TRIM_THRESHOLD`` free before trimming: a stage's working set is bounded by its
queues, so that memory is reused by the next messages rather than accumulating. As
each arena keeps its own, there is one arena per CPU (glibc's default is eight per
CPU, and a stage allocates on many threads: gRPC's, DuckDB's, the decoders'):
streaming 9M rows through an executor limited to 64 MB, its RSS grew 86-129 MiB with
glibc's default and 58-84 MiB with two arenas, at the same speed. glibc fixes its
arena limit once more than eight arenas exist, so :func:`tune_allocator` must run
before the process starts threads (a service's ``main`` calls it first).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import pyarrow as pa

# mallopt(3) parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: Blocks up to this size come from the heap (glibc's ceiling for it is 32 MiB).
MMAP_THRESHOLD = 16 << 20
#: Free memory an arena keeps at its top before giving it back to the system.
TRIM_THRESHOLD = 32 << 20


def tune_allocator() -> bool:
    """Apply the thresholds and the arena limit (unless ``MALLOC_ARENA_MAX`` sets one);
    False where the C library is not glibc (nothing changes)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt, other allocators
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = [(_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    if not os.environ.get("MALLOC_ARENA_MAX"):
        settings.append((_M_ARENA_MAX, max(2, os.cpu_count() or 1)))
    return all([bool(mallopt(parameter, value)) for parameter, value in settings])


def arrow_jemalloc() -> bool:
    """Make jemalloc Arrow's default pool; False where pyarrow was built without it.

    For the executor, which decodes Parquet on one thread per read stream and frees
    the batches on DuckDB's threads: over a 9M-row read its RSS grew 104-108 MiB with
    pyarrow's default mimalloc pool against 91-96 MiB with jemalloc, at the same speed
    (TPC-H Q1).
    """
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:
        return False
    return True

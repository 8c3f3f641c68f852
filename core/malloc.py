"""Allocator settings for CPU training, applied once when a run's process starts.

glibc's malloc serves blocks above ``M_MMAP_THRESHOLD`` (128 KiB at first, growing up to 32 MiB)
with ``mmap`` and gives them back on ``free``, and trims the heap top above
``M_TRIM_THRESHOLD``: every meta-training step then maps its activations afresh and takes a page
fault for each of their pages. Raising both thresholds to 1 GiB keeps freed memory in the process
for the next step. Measured by ``python -m metazoo.benchmarks.conv4`` (``results/speed.md``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30  # 1 GiB

_applied: str | None = None


def tune_malloc() -> str:
    """Raise glibc's mmap and trim thresholds to 1 GiB (once per process); returns what was done,
    for records and messages. Elsewhere (not Linux, not glibc) nothing is changed."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = "default allocator"
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        if libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD) == 1:
            _applied = "glibc malloc, mmap and trim thresholds 1 GiB"
    return _applied


def release_free_memory() -> None:
    """Give the heap's free memory back to the system (glibc's ``malloc_trim``), so that a
    run's peak resident size starts from what is really in use; no-op elsewhere."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None

"""The process's memory allocator, set for the compute paths' pattern of allocation.

A stacked training step allocates and frees the same few-megabyte tensors every step ((S, n, m) floats are 4 MiB
at S = 32). glibc's malloc serves blocks above its mmap threshold (dynamic, from 128 KiB) with fresh pages and
gives freed memory at the top of its heap back to the kernel once more than its trim threshold is free, so such a
step touches thousands of new pages, each a page fault, and an elementwise pass over fresh memory runs several
times slower than over reused memory (``python -m benchmarks.train_step`` prints the faults per step of each
path). :func:`keep_freed_memory` raises both thresholds, so freed blocks are reused instead.

It is a setting of the whole process, so only processes robinherit owns make it: the command line and the workers
of sweeps and ``reproduce`` (and the benchmarks). A library call (``robinherit.run`` in a notebook) leaves the
caller's allocator as it was; its numbers are the same either way.

The cost is memory the process keeps after it freed it: at most ``TRIM_BYTES`` beyond its peak use. A setting of
the C library, not of PyTorch (whose CPU allocator is ``posix_memalign``); on other C libraries, or with
``ROBINHERIT_MALLOC=default`` in the environment, it does nothing. ``LD_PRELOAD`` of jemalloc or tcmalloc, which
PyTorch's CPU tuning guide suggests, has the same aim and takes precedence (mallopt is then not glibc's).
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's malloc.h: mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# glibc's upper limit for the mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): blocks up to this size
# come from the heap, larger ones (a full-batch attack's iterates) still from mmap
MMAP_BYTES = 32 * 2**20
# freed memory kept for reuse at the heap's top before any is given back to the kernel
TRIM_BYTES = 1 * 2**30

_state: bool | None = None  # None: not tried yet; else whether the settings took


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process (see the module docstring); True where they are
    set. robinherit's own processes call it at their start (see the module docstring); it changes no number a
    run produces, only where its memory comes from."""
    global _state
    if _state is not None:
        return _state
    _state = False
    if not sys.platform.startswith("linux") or os.environ.get("ROBINHERIT_MALLOC", "").strip().lower() == "default":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _state = mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES) == 1
    return _state

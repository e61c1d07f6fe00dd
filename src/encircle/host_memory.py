"""Keep freed host memory for reuse, so that a CPU training step does not page-fault.

glibc's ``malloc`` serves a request above its mmap threshold with fresh pages from the
kernel and unmaps them again on ``free``. The threshold starts at 128 KiB and rises as
such blocks are freed, up to 32 MiB on 64-bit systems, and memory freed at the top of the
heap goes back to the kernel once more than twice the threshold is free. A training step
allocates and frees activations of the same sizes every step, so with the defaults a step
can pay the kernel's page faults on every large activation again, depending on the order
in which blocks happened to be freed (which also makes timings vary from run to run).

:func:`keep_freed_memory` fixes both thresholds (``mallopt``), once per process, so freed
blocks stay in the heap for the next step: what PyTorch's CPU performance guide gets by
preloading jemalloc or tcmalloc, without a native dependency. The cost is that the process
keeps up to ``KEPT_BYTES`` of freed memory instead of handing it back. It does nothing off
glibc, or when the user has tuned malloc through the environment (``GLIBC_TUNABLES`` or
glibc's ``MALLOC_*_`` variables). The engine calls it before training on a CPU unless
``train.keep_host_memory`` is false (``docs/scaling.md`` has the measured effect).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: Allocations up to this size come from the heap, and up to this much freed memory stays there.
KEPT_BYTES = 1 << 30
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_applied: bool | None = None


def _user_tuned_malloc() -> bool:
    return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "") or any(name in os.environ for name in _ENVIRONMENT)


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds at ``KEPT_BYTES`` (the first call does it);
    whether they are set."""
    global _applied
    if _applied is None:
        _applied = False
        if sys.platform.startswith("linux") and not _user_tuned_malloc():
            try:
                mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
            except (OSError, AttributeError):  # no C library to load, or one without mallopt
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _applied = bool(mallopt(_M_MMAP_THRESHOLD, KEPT_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEPT_BYTES))
    return _applied

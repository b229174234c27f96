"""Keep freed heap memory for the next GOP instead of handing it back to the kernel.

A stage allocates the same large buffers for every GOP: a 720p GOP decodes to 30 frames of
1.4 MB, a frame batch is half a megabyte, a segment a few hundred kilobytes. glibc's
defaults give such memory back as soon as it is freed: blocks above the mmap threshold
(dynamic, from 128 KiB) are unmapped, and the heap's top is trimmed once 128 KiB of it is
free. The next GOP then faults every page in again, and the kernel zeroes each one. On a
2-core node that was a third of the decoder's CPU: about 10,000 page faults per 720p GOP,
and 14 real-time 720p cameras no longer kept up (``bench.density_cpu``, docs/density.md).

:func:`tune_allocator` fixes both thresholds, so a process's heap stays at the size of its
largest GOP and is reused. It is called by the process commands (``framepipe stage`` and
``framepipe gateway``) before they load anything. An operator who sets glibc's own knobs
(``MALLOC_*_`` variables or ``GLIBC_TUNABLES``) keeps them: this then changes nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping
from dataclasses import dataclass

# mallopt(3) parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: blocks up to this size come from the heap (glibc's maximum on 64-bit: HEAP_MAX_SIZE / 2).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: free memory at the heap's top is given back only above this (several GOPs of 1080p frames).
TRIM_THRESHOLD = 256 * 1024 * 1024


@dataclass(frozen=True)
class AllocatorTuning:
    """What :func:`tune_allocator` did, and why not when it did nothing."""

    tuned: bool
    reason: str = ""


def operator_settings(environ: Mapping[str, str]) -> list[str]:
    """The glibc malloc settings an operator put in the environment (names only)."""
    names = [name for name in environ if name.startswith("MALLOC_") and name.endswith("_")]
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return sorted(names)


def tune_allocator(environ: Mapping[str, str] | None = None) -> AllocatorTuning:
    """Fix glibc's mmap and trim thresholds for this process (see the module's docstring)."""
    own = operator_settings(os.environ if environ is None else environ)
    if own:
        return AllocatorTuning(False, f"the operator's own settings apply: {', '.join(own)}")
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return AllocatorTuning(False, f"no glibc mallopt in {name or 'this process'}")
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; musl and other C libraries have no such function.
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return AllocatorTuning(False, "mallopt refused the thresholds")
    return AllocatorTuning(True)

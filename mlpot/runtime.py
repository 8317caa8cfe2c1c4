"""Process-wide settings under which mlpot models run fast on CPU; applied when a model is loaded or compiled.

Both were measured on a 2-core CPU (see the README's performance notes):

* **No TensorExpr fusion.** TorchScript's TensorExpr fuser compiles kernels specialised to the
  input shapes it has seen and compiles again for every new shape (1–3 s each for a NequIP model).
  In MD the number of neighbour pairs changes every few steps, so with the fuser on a simulation
  spends most of its time recompiling.
* **Freed memory stays in the heap** (glibc only). A model call allocates per-edge buffers of tens
  of MB; by default glibc maps each one fresh from the kernel and unmaps it on release, so every call
  pays page faults and zeroing, which grows faster than the number of atoms. Raising glibc's mmap and
  trim thresholds keeps those pages for reuse: water-1536 with the default NequIP-style model went from
  1450 to 660–860 ms per call and its cost ratio to water-192 from 12x to 7x (linear is 8x).
  Set ``MLPOT_TUNE_MALLOC=0`` to leave glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's maximum on 64-bit
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024
TOP_PAD_BYTES = 512 * 1024 * 1024

_configured = False


def _keep_freed_memory_in_the_heap() -> bool:
    """Raise glibc's mmap/trim thresholds; returns whether it was applied (False off glibc)."""
    if os.environ.get("MLPOT_TUNE_MALLOC", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
    return all(
        mallopt(parameter, value) == 1
        for parameter, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
            (_M_TOP_PAD, TOP_PAD_BYTES),
        )
    )


def configure() -> None:
    """Apply the settings above once per process (later calls do nothing)."""
    global _configured
    if _configured:
        return
    torch._C._jit_set_texpr_fuser_enabled(False)
    _keep_freed_memory_in_the_heap()
    _configured = True

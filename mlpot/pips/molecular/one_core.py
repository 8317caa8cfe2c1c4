"""Keep a single-threaded rollout and OpenMM's CPU worker thread on one core while it steps.

OpenMM's CPU platform hands every force evaluation (and every per-degree-of-freedom step of a
``CustomIntegrator``) to a worker thread, even with ``Threads`` = 1, and waits for it. When the
scheduler puts the worker on another, idle core, each hand-over wakes that core, which on a virtual
machine costs more than a small peptide's forces. Measured on the 2-core machine (2026-12-06,
chignolin in OBC2, one Context, the controlled integrator with the non-bonded forces every 2nd step,
ms per step, nothing else running): 0.72 free to move, 0.41 with every thread of the process on
one core (Reference platform: 0.63). :func:`on_one_core` does that for the duration of a rollout: every
thread of this process is confined to the core the caller runs on now (the one the scheduler chose,
so usually the least busy), and the affinity each thread had is restored afterwards, so the loss and
the update are free to move again. Linux only; elsewhere, or where the process may use one core
anyway, it does nothing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Dict, Iterator, Optional, Set


def current_cpu() -> Optional[int]:
    """The core the calling thread runs on (``/proc/thread-self/stat``, field 39), None where unknown."""
    try:
        fields = Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[36])  # fields[0] is field 3 (state); field 39 is the processor
    except (OSError, IndexError, ValueError):
        return None


def _thread_ids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return []


@contextlib.contextmanager
def on_one_core(enabled: bool = True) -> Iterator[Optional[int]]:
    """Confine every thread of this process to the caller's current core inside the block (yields it, or None
    when nothing was changed); each thread's earlier affinity is restored on the way out."""
    cpu = current_cpu() if enabled and hasattr(os, "sched_setaffinity") else None
    previous: Dict[int, Set[int]] = {}
    if cpu is not None:
        try:
            if len(os.sched_getaffinity(0)) > 1 and cpu in os.sched_getaffinity(0):
                for thread in _thread_ids():
                    try:
                        previous[thread] = os.sched_getaffinity(thread)
                        os.sched_setaffinity(thread, {cpu})
                    except OSError:  # the thread ended meanwhile, or may not be moved
                        previous.pop(thread, None)
        except OSError:
            pass
    try:
        yield cpu if previous else None
    finally:
        for thread, cores in previous.items():
            try:
                os.sched_setaffinity(thread, cores)
            except OSError:
                pass

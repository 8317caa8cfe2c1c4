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
* **As many torch threads as there are free cores.** Torch starts one intra-op thread per physical core
  of the machine, and OpenMP threads spin while they wait for each other; when another program keeps a
  core busy, every parallel region waits for a thread that is not running. On a 2-core machine with one
  other CPU-bound job, ``mlpot demo`` trained 1 epoch in its 3 minutes instead of 33 and its MD ran at
  18 instead of 195 steps/s. So the thread count is the number of cores this process may use
  (affinity and cgroup quota), lowered to the cores left free when other processes keep some busy
  (sampled from ``/proc/stat`` over a quarter second, else the load average), with a one-line warning
  on stderr. ``MLPOT_NUM_THREADS`` (or ``mlpot --threads``) sets the count; ``OMP_NUM_THREADS``,
  ``MKL_NUM_THREADS`` or an earlier ``torch.set_num_threads`` leave torch's choice alone. ``mlpot``'s
  threads keep libgomp's wait policy: the passive one (``MLPOT_PASSIVE_WAIT=1``, set by ``mlpot``'s
  ``__init__`` before torch loads) made training and MD 3x slower on an idle 2-core machine, while one
  thread beside a busy core ran as fast as two on an idle machine (``benchmarks/contention.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

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


# ---- threads

THREAD_ENV_OVERRIDES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
BUSY_THRESHOLD_CORES = 0.5  # other processes using less than this many cores leave the machine "idle"
SAMPLE_SECONDS = 0.25

_threads_configured = False


@dataclass(frozen=True)
class ThreadDecision:
    """What :func:`decide_threads` chose: ``threads`` for ``torch.set_num_threads`` (None: leave torch's
    choice alone) and ``warning``, a line for the user when the count was lowered because of other load."""

    threads: Optional[int]
    warning: Optional[str] = None


def decide_threads(
    available_cores: int,
    busy_cores: Optional[float],
    env: Mapping[str, str],
    torch_threads: int,
    torch_default_threads: int,
) -> ThreadDecision:
    """The torch intra-op thread count for this process; a pure function of what was measured.

    ``available_cores``: cores this process may run on; ``busy_cores``: how many of them other processes
    keep busy (None if unknown); ``env``: the environment; ``torch_threads``: torch's current count and
    ``torch_default_threads`` the count torch picks by itself (a difference means someone called
    ``torch.set_num_threads``). Raises ValueError for an ``MLPOT_NUM_THREADS`` that is not a positive integer.
    """
    requested = env.get("MLPOT_NUM_THREADS", "").strip()
    if requested:
        if not requested.isdigit() or int(requested) < 1:
            raise ValueError(f"MLPOT_NUM_THREADS (mlpot --threads) must be a positive integer, got {requested!r}")
        return ThreadDecision(int(requested))
    if any(env.get(name, "").strip() for name in THREAD_ENV_OVERRIDES) or torch_threads != torch_default_threads:
        return ThreadDecision(None)
    usable = max(1, min(available_cores, torch_default_threads))
    if busy_cores is None or busy_cores < BUSY_THRESHOLD_CORES:
        return ThreadDecision(usable)
    free = max(1, math.floor(available_cores - busy_cores + 0.5))
    if free >= usable:
        return ThreadDecision(usable)
    return ThreadDecision(free, (
        f"mlpot: other processes keep {min(busy_cores, available_cores):.1f} of the {available_cores} cores "
        "available to this one busy; "
        f"using {free} torch thread{'s' if free > 1 else ''} instead of {usable} "
        "(set MLPOT_NUM_THREADS, OMP_NUM_THREADS or mlpot --threads to choose)"
    ))


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup-v2 CPU quota if there is one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as handle:
            quota, period = handle.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def physical_cores() -> int:
    """The machine's physical cores (distinct (physical id, core id) in /proc/cpuinfo), what torch defaults to."""
    try:
        with open("/proc/cpuinfo") as handle:
            text = handle.read()
    except OSError:
        return os.cpu_count() or 1
    cores, physical = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            physical = value.strip()
        elif key.strip() == "core id":
            cores.add((physical, value.strip()))
    return len(cores) or os.cpu_count() or 1


def _cpu_times(cpus: List[int]) -> Optional[Dict[int, tuple]]:
    """(busy, total) jiffies per CPU in ``cpus`` from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    wanted, times = set(cpus), {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in wanted:
            values = [int(v) for v in fields[:8]]
            idle = values[3] + values[4]  # idle + iowait
            times[int(name[3:])] = (sum(values) - idle, sum(values))
    return times or None


def busy_cores_of_other_processes(sample_seconds: float = SAMPLE_SECONDS) -> Optional[float]:
    """How many of this process's cores other processes keep busy: a /proc/stat sample over ``sample_seconds``
    minus this process's own CPU time, else the 1-minute load average minus this process; None if neither."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    before, own_before, started = _cpu_times(cpus), resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    if before is not None:
        time.sleep(sample_seconds)
        after, own_after = _cpu_times(cpus), resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - started
        if after is not None:
            busy = sum((after[c][0] - before[c][0]) / max(after[c][1] - before[c][1], 1) for c in before if c in after)
            own = (own_after.ru_utime + own_after.ru_stime - own_before.ru_utime - own_before.ru_stime) / wall
            return max(0.0, busy - own)
    try:
        return max(0.0, os.getloadavg()[0] - 1.0)  # this process is one of the runnable tasks counted
    except (AttributeError, OSError):
        return None


def configure_threads(env: Optional[Mapping[str, str]] = None) -> ThreadDecision:
    """Choose torch's thread count once per process (see the module docstring) and return the decision;
    later calls change nothing and return ``ThreadDecision(None)``."""
    global _threads_configured
    if _threads_configured:
        return ThreadDecision(None)
    env = os.environ if env is None else env
    user_chose = env.get("MLPOT_NUM_THREADS") or any(env.get(name) for name in THREAD_ENV_OVERRIDES)
    default = physical_cores()
    measure = not user_chose and torch.get_num_threads() == default
    decision = decide_threads(
        available_cores(), busy_cores_of_other_processes() if measure else None, env, torch.get_num_threads(), default
    )
    if decision.threads is not None and decision.threads != torch.get_num_threads():
        torch.set_num_threads(decision.threads)
    if decision.warning:
        print(decision.warning, file=sys.stderr, flush=True)
    _threads_configured = True
    return decision


def configure() -> None:
    """Apply the settings above once per process (later calls do nothing)."""
    global _configured
    if _configured:
        return
    torch._C._jit_set_texpr_fuser_enabled(False)
    _keep_freed_memory_in_the_heap()
    configure_threads()
    _configured = True

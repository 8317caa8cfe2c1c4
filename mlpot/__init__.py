"""mlpot: learned E(3)-equivariant interatomic potentials for OpenMM and ASE.

Inside the core everything is in Å and eV; conversions to engine units happen once,
in :mod:`mlpot.units`, called by the plugins.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# OpenMP threads that sleep instead of spinning while they wait, on request (MLPOT_PASSIVE_WAIT=1): measured on
# an idle 2-core machine it made training and MD 3x slower (benchmarks/results/contention_passive_wait.json),
# so the default is libgomp's own; the thread count (mlpot/runtime.py) is what keeps a busy machine fast.
# libgomp reads the policy once, when torch is imported, so it can only be set from here.
if "torch" not in _sys.modules and _os.environ.get("MLPOT_PASSIVE_WAIT", "0") == "1":
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

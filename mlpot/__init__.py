"""mlpot: learned E(3)-equivariant interatomic potentials for OpenMM and ASE.

Inside the core everything is in Å and eV; conversions to engine units happen once,
in :mod:`mlpot.units`, called by the plugins.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# OpenMP threads that sleep instead of spinning while they wait: on a machine where another program keeps
# a core busy, spinning threads make every parallel region wait for one that is not running (see
# mlpot/runtime.py). libgomp reads this once, when torch is imported, so it can only be set from here.
if "torch" not in _sys.modules and _os.environ.get("MLPOT_PASSIVE_WAIT", "1") != "0":
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

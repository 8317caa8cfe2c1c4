"""mlpot: learned E(3)-equivariant interatomic potentials for OpenMM and ASE.

Inside the core everything is in Å and eV; conversions to engine units happen once,
in :mod:`mlpot.units`, called by the plugins.
"""

__version__ = "0.1.0"

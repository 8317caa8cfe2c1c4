"""Batched replica molecular dynamics and observables (Å, eV, amu, fs, K).

- :mod:`mlpot.md.potential` — energies/forces of R replicas as one graph through ``Potential.atom_energies``
- :mod:`mlpot.md.state` — replica state, masses, Maxwell–Boltzmann velocities
- :mod:`mlpot.md.integrators` — velocity Verlet, Nosé–Hoover chain, Langevin BAOAB
- :mod:`mlpot.md.simulator` — the replica simulator and its recorded trajectory
- :mod:`mlpot.md.observables` — h(r), bonds, g(r), VACF
- :mod:`mlpot.md.reference` — reference observables from labelled data
- :mod:`mlpot.md.stability` — instability criteria and resetting unstable replicas
"""

from mlpot.md.integrators import Integrator, LangevinBAOAB, NoseHooverChain, VelocityVerlet
from mlpot.md.potential import ReplicaPotential
from mlpot.md.simulator import ReplicaSimulator, Trajectory
from mlpot.md.state import ReplicaState

__all__ = ["Integrator", "LangevinBAOAB", "NoseHooverChain", "ReplicaPotential", "ReplicaSimulator", "ReplicaState",
           "Trajectory", "VelocityVerlet"]

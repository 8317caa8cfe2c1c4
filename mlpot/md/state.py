"""The dynamical state of R replicas, and Maxwell–Boltzmann velocities for it.

Units (all of :mod:`mlpot.md`): positions Å, velocities Å/fs, masses amu, energies eV, time fs,
temperature K. Conversions go through :mod:`mlpot.units`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Dict, Optional

import torch

from mlpot.units import BOLTZMANN_EV_PER_K, EV_PER_AMU_A2_PER_FS2


def masses_of(atomic_numbers, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standard atomic masses ``(n_atoms,)`` in amu (ASE's table) for atomic numbers ``(n_atoms,)``."""
    from ase.data import atomic_masses

    numbers = torch.as_tensor(atomic_numbers, dtype=torch.long).cpu()
    if numbers.numel() == 0 or bool(((numbers < 1) | (numbers >= len(atomic_masses))).any()):
        raise ValueError(f"atomic numbers must lie in 1..{len(atomic_masses) - 1}, got {numbers.tolist()}")
    return torch.as_tensor(atomic_masses[numbers.numpy()], dtype=dtype, device=device)


@dataclass
class ReplicaState:
    """Where R replicas are and how they move.

    Attributes:
        positions: ``(R, n_atoms, 3)`` Å.
        velocities: ``(R, n_atoms, 3)`` Å/fs.
        forces: ``(R, n_atoms, 3)`` eV/Å at ``positions``.
        potential_energies: ``(R,)`` eV at ``positions``.
        thermostat: the integrator's own per-replica variables (e.g. Nosé–Hoover chain ``(R, M)``).
    """

    positions: torch.Tensor
    velocities: torch.Tensor
    forces: torch.Tensor
    potential_energies: torch.Tensor
    thermostat: Dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n_replicas(self) -> int:
        return int(self.positions.shape[0])

    def clone(self) -> ReplicaState:
        """An independent copy (for resetting replicas to it later)."""
        return ReplicaState(
            **{f.name: getattr(self, f.name).clone() for f in fields(self) if f.name != "thermostat"},
            thermostat={name: value.clone() for name, value in self.thermostat.items()},
        )

    def replace_replicas(self, replicas: torch.Tensor, source: ReplicaState) -> None:
        """Overwrite, in place, the replicas where the ``(R,)`` bool mask ``replicas`` is True with ``source``'s."""
        if replicas.shape != (self.n_replicas,) or replicas.dtype != torch.bool:
            raise ValueError(f"the replica mask must be a bool tensor of shape ({self.n_replicas},)")
        if source.n_replicas != self.n_replicas or set(source.thermostat) != set(self.thermostat):
            raise ValueError("the source state must have as many replicas and the same thermostat variables")
        mask = replicas.to(self.positions.device)
        for f in fields(self):
            if f.name != "thermostat":
                getattr(self, f.name)[mask] = getattr(source, f.name)[mask]
        for name, value in self.thermostat.items():
            value[mask] = source.thermostat[name][mask]


def kinetic_energies(velocities: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """Kinetic energy per replica, ``(R,)`` eV, of velocities ``(R, n_atoms, 3)`` Å/fs, masses ``(n_atoms,)`` amu."""
    return 0.5 * (masses[:, None] * velocities**2).sum(dim=(1, 2)) * EV_PER_AMU_A2_PER_FS2


def maxwell_boltzmann_velocities(
    masses: torch.Tensor,
    n_replicas: int,
    temperature_K: float,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Velocities ``(R, n_atoms, 3)`` Å/fs drawn at ``temperature_K``, with zero centre-of-mass momentum,
    then rescaled per replica so that the kinetic energy is exactly (3 n_atoms − 3)/2 · kT."""
    if temperature_K < 0:
        raise ValueError(f"temperature must be >= 0 K, got {temperature_K}")
    n_atoms = int(masses.shape[0])
    kT_eV = BOLTZMANN_EV_PER_K * temperature_K
    noise = torch.randn(n_replicas, n_atoms, 3, generator=generator, dtype=masses.dtype, device=masses.device)
    velocities = noise * torch.sqrt(kT_eV / EV_PER_AMU_A2_PER_FS2 / masses)[None, :, None]
    momentum = (masses[None, :, None] * velocities).sum(dim=1, keepdim=True)
    velocities = velocities - momentum / masses.sum()
    degrees_of_freedom = 3 * n_atoms - 3
    if degrees_of_freedom == 0 or temperature_K == 0:
        return torch.zeros_like(velocities)
    target = 0.5 * degrees_of_freedom * kT_eV
    scale = torch.sqrt(target / kinetic_energies(velocities, masses))
    return velocities * scale[:, None, None]

"""Baselines for molecular PIPS: unbiased MD and steered MD, run exactly as the policy's paths are.

Both are *controls* u(x, v, t/T) in kJ/mol/nm handed to the same
:class:`~mlpot.pips.molecular.rollout.ReplicaRunner` as the policy (same integrator, start structure,
number of steps, thermalised start velocities and random-number stream for a given seed), through
:meth:`~mlpot.pips.molecular.trainer.MolecularTrainer.evaluate_control`, so their metrics
(:mod:`mlpot.pips.molecular.path_metrics`) compare one to one with the policy's:

- **unbiased MD**: u ≡ 0;
- **steered MD**: a pull toward the target, u = −k(t) ∂RMSD²/∂x, RMSD over the heavy atoms after
  Kabsch superposition on them (so the pull exerts no net force or torque and acts on the heavy
  atoms only). k is in kJ/mol/nm² (RMSD² in nm² makes k·RMSD² an energy in kJ/mol). By default k is
  constant, 10⁴ kJ/mol/nm²: on alanine dipeptide (16 paths × 500 fs, 300 K, friction 1/ps) it takes
  ~15 of 16 paths into C7ax. With ``ramp`` k grows linearly from 0 at t = 0 to k at t = T.

The pull is part of the recorded control, so the bias work (Σ u·Δx) counts it like a policy's force.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mlpot.pips.geometry import atom_subset_squared_deviation_gradient
from mlpot.pips.molecular.path_metrics import EvaluatedPaths

DEFAULT_SPRING_KJ_MOL_NM2 = 1e4


def unbiased_control(positions_nm: torch.Tensor, velocities_nm_ps: torch.Tensor,
                     time_fraction: torch.Tensor) -> torch.Tensor:
    """No control: zeros like the positions (n_paths, n_atoms, 3), kJ/mol/nm."""
    return torch.zeros_like(positions_nm)


class SteeredPull:
    """u = −k(t) ∂RMSD²_atoms/∂x toward ``target_nm`` (n_atoms, 3), RMSD over ``atoms`` after Kabsch
    superposition on them; ``spring_kj_mol_nm2`` k, constant or (``ramp``) k · t/T."""

    def __init__(self, target_nm: torch.Tensor, atoms: Sequence[int],
                 spring_kj_mol_nm2: float = DEFAULT_SPRING_KJ_MOL_NM2, ramp: bool = False):
        if not spring_kj_mol_nm2 > 0 or spring_kj_mol_nm2 == float("inf"):
            raise ValueError(f"the steered-MD spring constant must be positive and finite (kJ/mol/nm²), "
                             f"got {spring_kj_mol_nm2}")
        if len(atoms) < 3:
            raise ValueError(f"steered MD needs at least 3 atoms to superpose on, got {len(atoms)}")
        self.target_nm = torch.as_tensor(target_nm, dtype=torch.float64)
        self.atoms = list(atoms)
        self.spring_kj_mol_nm2 = float(spring_kj_mol_nm2)
        self.ramp = ramp

    def spring_at(self, time_fraction: torch.Tensor) -> torch.Tensor:
        """k(t) in kJ/mol/nm² at t/T ``time_fraction`` (n_paths,) → (n_paths,)."""
        if self.ramp:
            return self.spring_kj_mol_nm2 * time_fraction.to(torch.float64)
        return torch.full(time_fraction.shape, self.spring_kj_mol_nm2, dtype=torch.float64)

    def __call__(self, positions_nm: torch.Tensor, velocities_nm_ps: torch.Tensor,
                 time_fraction: torch.Tensor) -> torch.Tensor:
        """The pull (n_paths, n_atoms, 3) kJ/mol/nm at positions (n_paths, n_atoms, 3) nm."""
        gradient_nm = atom_subset_squared_deviation_gradient(positions_nm, self.target_nm.to(positions_nm.dtype),
                                                             self.atoms)
        spring = self.spring_at(time_fraction).to(positions_nm.dtype)
        return -spring[:, None, None] * gradient_nm


def unbiased_md(trainer, n_paths: int, seed: int) -> EvaluatedPaths:
    """``n_paths`` unbiased paths of ``trainer``'s system and settings (a MolecularTrainer), with metrics."""
    return trainer.evaluate_control(unbiased_control, n_paths, seed)


def steered_md(trainer, n_paths: int, seed: int, spring_kj_mol_nm2: float = DEFAULT_SPRING_KJ_MOL_NM2,
               ramp: bool = False) -> EvaluatedPaths:
    """``n_paths`` steered-MD paths toward ``trainer``'s target over its heavy atoms, with metrics."""
    pull = SteeredPull(trainer.target, trainer.heavy_atoms, spring_kj_mol_nm2, ramp)
    return trainer.evaluate_control(pull, n_paths, seed)

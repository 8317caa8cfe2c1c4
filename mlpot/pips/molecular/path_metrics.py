"""Metrics of a set of molecular paths: the one place they are computed, for the training log, the
evaluation of a policy and the baselines (:mod:`mlpot.pips.molecular.baselines`), so that all are comparable.

Inputs are in OpenMM's units (positions nm, control forces kJ/mol/nm, time ps). The metrics:

- ``thp``: fraction of *all* paths (blown-up ones count as misses) whose final frame lies in the
  target basin of the transition (:mod:`mlpot.pips.molecular.peptides`);
- ``thp_literature``: the same fraction by the published codes' hit test (alanine dipeptide:
  final (φ, ψ) within 0.75 rad of the target's, √(Δφ² + Δψ²), angles wrapped; polyproline and
  chignolin: the TICA-free stand-ins of :mod:`mlpot.pips.molecular.peptides`);
- ``rmsd_A`` (``rmsd_std_A``): mean (standard deviation) over finite paths of the final
  heavy-atom RMSD to the target after Kabsch superposition, Å (as TPS-DPS reports it);
- ``epd``: mean over finite paths of 1000 × the mean squared pairwise-distance error at the final
  frame, nm², all atoms (:func:`mlpot.pips.metrics.pairwise_distance_error_x1000`);
- ``ets_kj_mol``: mean over hit paths of the maximum *unbiased* potential energy along the path,
  kJ/mol (NaN when no path hit); ``mean_max_energy_kj_mol``: the same over all finite paths;
  ``ets_literature_kj_mol``: over the paths that hit by the literature test;
  ``start_energy_kj_mol``: the energy of the minimised start structure, and ``ets_relative_kj_mol``,
  ``ets_literature_relative_kj_mol``: the ETS values minus it (the barrier the paths crossed;
  independent of any constant offset of the force field, such as a cutoff's);
- ``bias_work_kj_mol``: mean over finite paths of the work done by the control force,
  Σ_s u_s · (x_{s+1} − x_s), kJ/mol (0 for unbiased MD);
- ``wall_seconds`` of the rollout (energies not included) and its split ``openmm_seconds``,
  ``policy_seconds``, ``python_seconds``; ``blown_up`` (paths dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Dict, Optional, Sequence

import numpy as np
import openmm
import torch

from mlpot import units
from mlpot.pips.dynamics import Rollout
from mlpot.pips.geometry import aligned_rmsd
from mlpot.pips.metrics import control_work, pairwise_distance_error_x1000, transition_state_energy
from mlpot.pips.molecular.peptides import PeptideTransition
from mlpot.pips.molecular.replicas import potential_energies_kj_mol
from mlpot.pips.molecular.rollout import OpenMMRollout


@dataclass
class EvaluatedPaths:
    """A rollout with its metrics (module docstring) and what plots need: ``energies_kj_mol``
    (n_finite, n_steps + 1), the unbiased potential energy of every frame of the finite paths, and
    ``hits`` (n_finite,) bool, whether each finite path ended in the target basin;
    ``literature_hits`` (n_finite,) bool, the same by the literature test; ``start_energy_kj_mol``
    of the minimised start structure."""

    rollout: Rollout
    metrics: Dict[str, float]
    energies_kj_mol: torch.Tensor
    hits: torch.Tensor
    literature_hits: Optional[torch.Tensor] = None
    start_energy_kj_mol: float = float("nan")

    @property
    def finite_positions_nm(self) -> torch.Tensor:
        """Positions (n_finite, n_steps + 1, n_atoms, 3) nm of the paths that did not blow up."""
        return self.rollout.positions[self.rollout.finite_paths()]


class MolecularPathMetrics:
    """Judges paths of ``transition``: target positions (n_atoms, 3) nm, RMSD over ``heavy_atoms``,
    energies from ``unbiased_system`` (one copy of the molecule, no bias) on ``platform``; E₀ at ``start_nm``
    (default: the shipped start; a run's relaxed start, :mod:`mlpot.pips.molecular.endpoints`)."""

    def __init__(self, transition: PeptideTransition, target_nm: torch.Tensor, heavy_atoms: Sequence[int],
                 unbiased_system: openmm.System, platform: str = "CPU", threads: int = 1,
                 start_nm: Optional[np.ndarray] = None):
        self.transition = transition
        self.target_nm = target_nm
        self.start_nm = transition.start_positions_nm if start_nm is None else start_nm
        self.heavy_atoms = list(heavy_atoms)
        self.unbiased_system = unbiased_system
        self.platform, self.threads = platform, threads

    @cached_property
    def start_energy_kj_mol(self) -> float:
        """Unbiased energy (kJ/mol) of the run's start structure: the shipped minimum, or its relaxation on the
        run's potential (:mod:`mlpot.pips.molecular.endpoints`)."""
        return float(self.energies_kj_mol(torch.from_numpy(np.array(self.start_nm, dtype=float))))

    def final_frames(self, rollout: Rollout) -> Dict[str, float]:
        """``thp``, ``thp_literature``, ``rmsd_A``, ``rmsd_std_A`` and ``epd`` from the last frames
        (cheap: no energies)."""
        final = rollout.final_positions[rollout.finite_paths()]
        heavy = self.heavy_atoms
        hits = self.transition.in_target_basin(final, self.target_nm)
        literature_hits = self.transition.in_literature_basin(final, self.target_nm)
        rmsd_A = aligned_rmsd(final[:, heavy], self.target_nm[heavy]) * units.ANGSTROM_PER_NM
        return {"thp": float(hits.double().sum()) / rollout.n_paths,
                "thp_literature": float(literature_hits.double().sum()) / rollout.n_paths,
                "rmsd_A": float(rmsd_A.mean()), "rmsd_std_A": float(rmsd_A.std()) if len(rmsd_A) > 1 else float("nan"),
                "epd": float(pairwise_distance_error_x1000(final, self.target_nm).mean())}

    def energies_kj_mol(self, paths_nm: torch.Tensor) -> torch.Tensor:
        """Unbiased potential energy (kJ/mol) of every frame of paths (..., n_atoms, 3) nm → (...)."""
        return torch.from_numpy(potential_energies_kj_mol(self.unbiased_system, paths_nm.numpy(),
                                                          self.platform, self.threads))

    def evaluate(self, result: OpenMMRollout) -> EvaluatedPaths:
        """All metrics of the module docstring for one batch of rollouts."""
        rollout = result.rollout
        finite = rollout.finite_paths()
        paths = rollout.positions[finite]
        energies = self.energies_kj_mol(paths)
        hits = self.transition.in_target_basin(paths[:, -1], self.target_nm)
        literature_hits = self.transition.in_literature_basin(paths[:, -1], self.target_nm)
        start_energy = self.start_energy_kj_mol
        ets = transition_state_energy(energies, hits)
        ets_literature = transition_state_energy(energies, literature_hits)
        metrics = {
            **self.final_frames(rollout),
            "ets_kj_mol": ets, "ets_relative_kj_mol": ets - start_energy,
            "ets_literature_kj_mol": ets_literature, "ets_literature_relative_kj_mol": ets_literature - start_energy,
            "start_energy_kj_mol": start_energy,
            "mean_max_energy_kj_mol": float(energies.max(dim=1).values.mean()),
            "bias_work_kj_mol": float(control_work(paths, rollout.controls[finite]).mean()),
            "wall_seconds": result.timings.total, **result.bookkeeping(),
        }
        return EvaluatedPaths(rollout=rollout, metrics=metrics, energies_kj_mol=energies, hits=hits,
                              literature_hits=literature_hits, start_energy_kj_mol=start_energy)

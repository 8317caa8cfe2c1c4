"""The start and target structures of a transition, relaxed on the physics a PIPS run actually uses.

The shipped structures (:mod:`mlpot.systems`) are minima of the force field they were prepared with (amber14).
A learned potential has its own minima, a few degrees away: the alanine-dipeptide xTB model's C7ax minimum lies
at (φ, ψ) = (71°, −60°) and amber14's at (61°, −41°). Aimed at the force-field geometry, a policy is pulled
towards a point that is no minimum of its physics, and the literature hit test (final (φ, ψ) within 0.75 rad
of the target's) is centred on the wrong point. So a run with a learned potential (``endpoints: minimised``,
the default when ``potential`` is set) first relaxes both structures on it: OpenMM's L-BFGS minimiser on the
single copy, Reference platform (double precision, the same result on every machine), to a force tolerance of
``tolerance_kj_mol_nm``. The relaxed target must still be in the transition's target basin and the relaxed
start outside it; otherwise the potential has no minimum where the transition needs one, and the run is
refused with the (φ, ψ) it found.

Units: nm, kJ/mol (OpenMM's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openmm
import torch

from mlpot.pips.molecular.peptides import PeptideTransition

ENDPOINTS = ("as-shipped", "minimised")


@dataclass(frozen=True)
class Endpoints:
    """Start and target positions (n_atoms, 3) nm, and how far relaxing moved them (RMSD over all atoms, nm)."""

    start_nm: np.ndarray
    target_nm: np.ndarray
    start_moved_nm: float = 0.0
    target_moved_nm: float = 0.0


def _minimised(system: openmm.System, positions_nm: np.ndarray, tolerance_kj_mol_nm: float) -> np.ndarray:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_nm)
    openmm.LocalEnergyMinimizer.minimize(context, tolerance_kj_mol_nm, 0)
    return np.asarray(context.getState(getPositions=True).getPositions(asNumpy=True)._value, dtype=float)


def _rmsd_nm(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(axis=1).mean()))


def transition_endpoints(transition: PeptideTransition, system: openmm.System, mode: str = "as-shipped",
                         tolerance_kj_mol_nm: float = 1.0) -> Endpoints:
    """The transition's start and target for a run in ``system`` (one copy of the molecule, the run's physics):
    as shipped, or ``"minimised"`` on ``system`` (module docstring). ValueError in one line when the relaxed
    structures no longer make the transition."""
    if mode not in ENDPOINTS:
        raise ValueError(f"endpoints must be one of {', '.join(ENDPOINTS)}, got {mode!r}")
    _, start_nm, target_nm = transition.load()
    if mode == "as-shipped":
        return Endpoints(start_nm, target_nm)
    start, target = (_minimised(system, positions, tolerance_kj_mol_nm) for positions in (start_nm, target_nm))
    relaxed_target = torch.from_numpy(target)
    if not bool(transition.in_target_basin(relaxed_target, relaxed_target)):
        phi, psi = (float(angle) for angle in transition.dihedrals_deg(relaxed_target))
        raise ValueError(f"relaxed on this potential, the {transition.target} structure leaves the target basin "
                         f"(it ends at phi {phi:.0f}, psi {psi:.0f} deg): the potential has no {transition.target} "
                         "minimum there; use endpoints: as-shipped or another potential")
    relaxed_start = torch.from_numpy(start)
    if bool(transition.in_target_basin(relaxed_start, relaxed_target)):
        raise ValueError(f"relaxed on this potential, the {transition.start} structure falls into the target basin; "
                         "there is no transition to sample (use endpoints: as-shipped or another potential)")
    return Endpoints(start, target, _rmsd_nm(start, start_nm), _rmsd_nm(target, target_nm))

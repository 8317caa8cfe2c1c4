"""Molecular PIPS systems: start and target structures from :mod:`mlpot.systems`, the dihedrals
that name their states, and the target basin that decides whether a path hit.

Only alanine dipeptide is defined so far (C5 → C7ax, amber14 vacuum); polyproline and chignolin
need implicit-solvent replicas, which :mod:`mlpot.pips.replicas` does not support yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import torch

from mlpot.pips.geometry import dihedral_degrees

Quadruple = Tuple[int, int, int, int]


@dataclass(frozen=True)
class PeptideTransition:
    """A transition between two registered structures (same atoms, same order).

    ``phi``/``psi`` are 0-based atom quadruples; the target basin is the (φ, ψ) box
    ``phi_range_deg`` × ``psi_range_deg`` (degrees, open intervals)."""

    name: str
    start: str
    target: str
    phi: Quadruple
    psi: Quadruple
    phi_range_deg: Tuple[float, float]
    psi_range_deg: Tuple[float, float]

    def load(self):
        """(topology, start positions (n_atoms, 3) nm, target positions (n_atoms, 3) nm)."""
        from mlpot.systems import load_openmm

        topology, start = load_openmm(self.start)
        target_topology, target = load_openmm(self.target)
        if [a.name for a in topology.atoms()] != [a.name for a in target_topology.atoms()]:
            raise ValueError(f"{self.start} and {self.target} do not have the same atoms in the same order")
        return topology, np.asarray(start._value), np.asarray(target._value)

    def dihedrals_deg(self, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(φ, ψ) in degrees of positions (..., n_atoms, 3)."""
        return dihedral_degrees(positions, self.phi), dihedral_degrees(positions, self.psi)

    def in_target_basin(self, positions: torch.Tensor) -> torch.Tensor:
        """bool (...): (φ, ψ) of positions (..., n_atoms, 3) lies in the target box."""
        phi, psi = self.dihedrals_deg(positions)
        (phi_low, phi_high), (psi_low, psi_high) = self.phi_range_deg, self.psi_range_deg
        return (phi > phi_low) & (phi < phi_high) & (psi > psi_low) & (psi < psi_high)


PEPTIDE_TRANSITIONS: Dict[str, PeptideTransition] = {
    # C7ax: 0 < φ < 120°, ψ < 0 (shared/reference/data.md); φ = C(ACE)–N–CA–C, ψ = N–CA–C–N(NME)
    "alanine-dipeptide": PeptideTransition(
        name="alanine-dipeptide", start="alanine-dipeptide", target="alanine-dipeptide-c7ax",
        phi=(4, 6, 8, 14), psi=(6, 8, 14, 16), phi_range_deg=(0.0, 120.0), psi_range_deg=(-180.0, 0.0),
    ),
}


def peptide_transition(name: str) -> PeptideTransition:
    """The transition called ``name``; a KeyError lists the known ones."""
    if name not in PEPTIDE_TRANSITIONS:
        raise KeyError(f"no PIPS transition defined for {name!r}; known: {', '.join(PEPTIDE_TRANSITIONS)} and the 2D "
                       "toys (polyproline and chignolin need implicit-solvent replicas, not written yet)")
    return PEPTIDE_TRANSITIONS[name]

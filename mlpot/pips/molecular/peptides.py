"""Molecular PIPS systems: start and target structures from :mod:`mlpot.systems`, the target
basin that decides whether a path hit, and the (φ, ψ) of one residue to plot paths by.

Each system's basin is its own kind of region (atom indices 0-based, angles in degrees):

- **alanine dipeptide** (C5 → C7ax, amber14 vacuum): a (φ, ψ) box, :class:`DihedralBox`.
- **polyproline** ACE-(PRO)3-NME (PPII → PPI, amber14 + GBn2): every X–Pro peptide bond cis,
  :class:`CisPeptideBonds`. The ACE–Pro1 bond counts as well as the two Pro–Pro bonds: PPI has
  all three cis (the target is built so), the acetyl–prolyl bond isomerises over the same
  ~80 kJ/mol barrier as a prolyl–prolyl one, and a path that flips only the Pro–Pro bonds ends in
  a mixed cis/trans state, not in PPI. The Pro3–NME bond is trans in both states and is not part
  of the criterion.
- **chignolin** GYDPETGTWG (extended → β-hairpin, amber14 + GBn2): CA RMSD to the folded target
  below 2 Å after superposition, :class:`CloseToTarget`. 2 Å accepts the hairpin as it fluctuates
  at 300 K (two unbiased 3 ps runs from the folded target, GBn2, friction 1/ps: at most 1.44 Å,
  0.68 Å on average) with a margin, and is a quarter of the distance of the extended start
  (8.3 Å); the same order as the ~1 Å by which the minimised rebuild departs from its 1UAO angles.

**The literature's hit criterion** (``literature_basin``, :class:`DihedralDistance`), reported
next to the basin above as ``thp_literature``: the published codes count a hit when the final
frame's two slow coordinates lie within 0.75 of the target's, as a Euclidean norm of the wrapped
differences, √(Δ₁² + Δ₂²) < 0.75 (the TPS-DPS evaluation of Seong et al., ICLR 2025, which also
scores PIPS). For alanine dipeptide the coordinates are (φ, ψ) in radians, so our number is the
published one. For polyproline and chignolin they are the first two TICA components of a model
fitted to long unbiased MD of each system (backbone-torsion cos/sin features), which is not
available here (and the PIPS paper's code has no hit test for them); the same 0.75-rad norm is
applied instead to the dihedrals that carry each transition: the three X–Pro ω of polyproline
(the coordinates TICA finds slow there: cis/trans isomerisation), and (φ, ψ) of Gly7 for
chignolin (the turn residue whose φ changes sign on folding; the plotted pair). Those two are
therefore *TICA-free stand-ins* in the published form, not the published numbers.

The force field of a transition is its start structure's, as registered in :mod:`mlpot.systems`
(one place); ``run_defaults`` are the training settings a system starts from unless overridden
(:func:`mlpot.pips.runs.new_run`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Dict, Mapping, Optional, Protocol, Tuple

import numpy as np
import torch

from mlpot import units
from mlpot.pips.geometry import aligned_rmsd, dihedral_degrees, dihedral_distance_rad

Quadruple = Tuple[int, int, int, int]


class TargetBasin(Protocol):
    """A region of configuration space around a transition's target."""

    def contains(self, positions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """bool (...): positions (..., n_atoms, 3) nm lie in the basin of ``target`` (n_atoms, 3) nm."""


@dataclass(frozen=True)
class DihedralBox:
    """(φ, ψ) of the quadruples ``phi``/``psi`` inside ``phi_range_deg`` × ``psi_range_deg``
    (degrees, open intervals)."""

    phi: Quadruple
    psi: Quadruple
    phi_range_deg: Tuple[float, float]
    psi_range_deg: Tuple[float, float]

    def contains(self, positions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        phi, psi = dihedral_degrees(positions, self.phi), dihedral_degrees(positions, self.psi)
        (phi_low, phi_high), (psi_low, psi_high) = self.phi_range_deg, self.psi_range_deg
        return (phi > phi_low) & (phi < phi_high) & (psi > psi_low) & (psi < psi_high)


@dataclass(frozen=True)
class CisPeptideBonds:
    """Every peptide bond ω = CA_{i-1}–C_{i-1}–N_i–CA_i in ``omegas`` is cis: |ω| < ``max_abs_deg``."""

    omegas: Tuple[Quadruple, ...]
    max_abs_deg: float = 90.0

    def contains(self, positions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cis = [dihedral_degrees(positions, omega).abs() < self.max_abs_deg for omega in self.omegas]
        return torch.stack(cis, dim=-1).all(dim=-1)


@dataclass(frozen=True)
class CloseToTarget:
    """RMSD of ``atoms`` to the target after optimal superposition below ``max_rmsd_A`` (Å)."""

    atoms: Tuple[int, ...]
    max_rmsd_A: float

    def contains(self, positions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        atoms = list(self.atoms)
        rmsd_A = aligned_rmsd(positions[..., atoms, :], target[atoms]) * units.ANGSTROM_PER_NM
        return rmsd_A < self.max_rmsd_A


@dataclass(frozen=True)
class DihedralDistance:
    """√Σ_k Δ_k² < ``radius_rad`` over the ``dihedrals``, Δ_k the difference (radians, wrapped onto
    the circle) between a configuration's dihedral k and the target's: the published codes' hit
    test (module docstring)."""

    dihedrals: Tuple[Quadruple, ...]
    radius_rad: float = 0.75

    def contains(self, positions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dihedral_distance_rad(positions, target, self.dihedrals) < self.radius_rad


@cache
def _positions_nm(system: str) -> np.ndarray:
    from mlpot.systems import load_openmm

    positions = np.array(load_openmm(system)[1]._value)
    positions.flags.writeable = False
    return positions


@dataclass(frozen=True)
class PeptideTransition:
    """A transition between two registered structures (same atoms, same order).

    ``basin`` decides whether a configuration reached the target; ``phi``/``psi`` are the 0-based
    atom quadruples of one residue's backbone dihedrals (what :meth:`dihedrals_deg` reports, e.g.
    for plots); ``run_defaults`` are per-system :class:`~mlpot.pips.molecular.trainer.MolecularTrainConfig`
    settings. ``literature_basin`` is the published codes' hit test (or its stand-in, module
    docstring) and ``literature_criterion`` says in words which one it is."""

    name: str
    start: str
    target: str
    basin: TargetBasin
    phi: Quadruple
    psi: Quadruple
    run_defaults: Mapping[str, object] = field(default_factory=dict)
    literature_basin: Optional[DihedralDistance] = None
    literature_criterion: str = ""

    def load(self):
        """(topology, start positions (n_atoms, 3) nm, target positions (n_atoms, 3) nm)."""
        from mlpot.systems import load_openmm

        topology, start = load_openmm(self.start)
        target_topology, target = load_openmm(self.target)
        if [a.name for a in topology.atoms()] != [a.name for a in target_topology.atoms()]:
            raise ValueError(f"{self.start} and {self.target} do not have the same atoms in the same order")
        return topology, np.asarray(start._value), np.asarray(target._value)

    @property
    def forcefield_files(self) -> Tuple[str, ...]:
        """The OpenMM force field files of the start structure (:mod:`mlpot.systems`), also the target's."""
        from mlpot.systems import get_system

        start, target = get_system(self.start), get_system(self.target)
        if start.forcefield_files != target.forcefield_files:
            raise ValueError(f"{self.start} ({', '.join(start.forcefield_files)}) and {self.target} "
                             f"({', '.join(target.forcefield_files)}) are registered with different force fields")
        if not start.forcefield_files:
            raise ValueError(f"{self.start} has no registered force field")
        return start.forcefield_files

    @property
    def phi_range_deg(self) -> Optional[Tuple[float, float]]:
        """The basin's φ interval (degrees) when it is a :class:`DihedralBox` on this transition's
        (φ, ψ), else None (the basin is no box in that plane)."""
        return self._plotted_box().phi_range_deg if self._plotted_box() else None

    @property
    def psi_range_deg(self) -> Optional[Tuple[float, float]]:
        """The basin's ψ interval (degrees), as :attr:`phi_range_deg`."""
        return self._plotted_box().psi_range_deg if self._plotted_box() else None

    def _plotted_box(self) -> Optional[DihedralBox]:
        box = self.basin
        return box if isinstance(box, DihedralBox) and (box.phi, box.psi) == (self.phi, self.psi) else None

    def dihedrals_deg(self, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(φ, ψ) in degrees of the chosen residue, positions (..., n_atoms, 3)."""
        return dihedral_degrees(positions, self.phi), dihedral_degrees(positions, self.psi)

    def _target(self, positions: torch.Tensor, target_nm: Optional[torch.Tensor]) -> torch.Tensor:
        """The target structure (n_atoms, 3) nm: ``target_nm`` (a run's relaxed target,
        :mod:`mlpot.pips.molecular.endpoints`) or the shipped file's."""
        if target_nm is None:
            return torch.tensor(_positions_nm(self.target), dtype=positions.dtype)
        return torch.as_tensor(target_nm, dtype=positions.dtype)

    def in_target_basin(self, positions: torch.Tensor, target_nm: Optional[torch.Tensor] = None) -> torch.Tensor:
        """bool (...): positions (..., n_atoms, 3) nm lie in the target basin (of ``target_nm``, default the
        shipped target)."""
        target = self._target(positions, target_nm)
        if positions.shape[-2:] != target.shape:
            raise ValueError(f"positions of shape {tuple(positions.shape)} do not end in the {self.name} "
                             f"molecule's {tuple(target.shape)}")
        return self.basin.contains(positions, target)

    @property
    def start_positions_nm(self) -> np.ndarray:
        """The start structure's positions (n_atoms, 3) nm, as shipped (minimised; read-only)."""
        return _positions_nm(self.start)

    def in_literature_basin(self, positions: torch.Tensor, target_nm: Optional[torch.Tensor] = None) -> torch.Tensor:
        """bool (...): positions (..., n_atoms, 3) nm pass the published codes' hit test
        (:attr:`literature_basin`, around ``target_nm``, default the shipped target); all False when the
        transition has none."""
        if self.literature_basin is None:
            return torch.zeros(positions.shape[:-2], dtype=torch.bool)
        return self.literature_basin.contains(positions, self._target(positions, target_nm))

    @property
    def literature_circle_rad(self) -> Optional[float]:
        """The radius (rad) of the literature test when it is a distance in this transition's
        plotted (φ, ψ) plane (a circle around the target there), else None."""
        basin = self.literature_basin
        return basin.radius_rad if basin is not None and basin.dihedrals == (self.phi, self.psi) else None


# PIPS runs the implicit-solvent peptides in OBC2 as OpenMM's native GBSAOBCForce, on the single-copy System (no
# cutoff; then with one Context per replica): per iteration of 16 x 1000 steps, 4.3x (chignolin, 53.5 -> 12.4 s) and
# 2.6x (polyproline, 15.5 -> 5.9 s) cheaper than GBn2 in one Context under a cutoff, timed interleaved on a loaded
# 2-core machine (benchmarks/pips_speed.py --solvents gbn2 obc2; mlpot/pips/molecular/implicit_solvent.py). GBn2, the
# force field the structures were built in, stays available: implicit_solvent: gbn2.
_OBC2_RUNS = {"implicit_solvent": "obc2", "replica_layout": "single-copy"}
# their policy networks (54 and 138 atoms: 325 and 829 inputs) run in float32: half the weights' memory and half the
# matrix-product time, about 0.4 s of a chignolin iteration; geometry, forces, kicks and path weights stay float64
_FLOAT32_NETWORK = {"network_dtype": "float32"}

_ALANINE_LITERATURE = "√(Δφ² + Δψ²) < 0.75 rad vs the target's (φ, ψ), as the PIPS and TPS-DPS codes count"

# atom indices below are those of the files in systems/ (tests check their names)
PEPTIDE_TRANSITIONS: Dict[str, PeptideTransition] = {
    # C7ax: 0 < φ < 120°, ψ < 0 (docs/peptides.md); φ = C(ACE)–N–CA–C, ψ = N–CA–C–N(NME)
    "alanine-dipeptide": PeptideTransition(
        name="alanine-dipeptide", start="alanine-dipeptide", target="alanine-dipeptide-c7ax",
        basin=DihedralBox(phi=(4, 6, 8, 14), psi=(6, 8, 14, 16), phi_range_deg=(0.0, 120.0),
                          psi_range_deg=(-180.0, 0.0)),
        phi=(4, 6, 8, 14), psi=(6, 8, 14, 16),
        literature_basin=DihedralDistance(dihedrals=((4, 6, 8, 14), (6, 8, 14, 16))),
        literature_criterion=_ALANINE_LITERATURE,
        # 1 ps paths, λ 1e-6, lr 3e-4 decaying as over 1500 iterations to 3e-5 but stopped at 1150: THP 0.94 by the
        # 0.75-rad test (512 fresh paths) against 0.90 at λ 2e-6 and 0.69 at 500 fs, λ 2e-5, lr 1e-3; past ~1150 both
        # λ began to trade hits for cheaper control (0.90 at 1500)
        # (benchmarks/results/pips_alanine_dipeptide/README.md)
        run_defaults={"n_steps": 1000, "lam": 1e-6, "lr": 3e-4, "final_lr": 5.1e-5, "iterations": 1150},
    ),
    # the same target from C7eq (φ ≈ −83°, ψ ≈ 73°), the other start the issue names
    "alanine-dipeptide-c7eq": PeptideTransition(
        name="alanine-dipeptide-c7eq", start="alanine-dipeptide-c7eq", target="alanine-dipeptide-c7ax",
        basin=DihedralBox(phi=(4, 6, 8, 14), psi=(6, 8, 14, 16), phi_range_deg=(0.0, 120.0),
                          psi_range_deg=(-180.0, 0.0)),
        phi=(4, 6, 8, 14), psi=(6, 8, 14, 16),
        literature_basin=DihedralDistance(dihedrals=((4, 6, 8, 14), (6, 8, 14, 16))),
        literature_criterion=_ALANINE_LITERATURE,
    ),
    # PPII → PPI: ACE–Pro1, Pro1–Pro2, Pro2–Pro3 cis; φ/ψ of the middle proline. 16 × 1 ps by default
    # (the reference code: 16 × 10 ps at 2 fs with constraints; cost per iteration: benchmarks/pips_speed.py)
    "polyproline": PeptideTransition(
        name="polyproline", start="polyproline", target="polyproline-ppi",
        basin=CisPeptideBonds(omegas=((0, 4, 6, 7), (7, 9, 20, 21), (21, 23, 34, 35))),
        phi=(9, 20, 21, 23), psi=(20, 21, 23, 34),
        # three cis-trans isomerisations need a stronger start pull than alanine's: steered MD
        # (8 paths × 1 ps) at 1e4 kJ/mol/nm² hits 0/8, at 3e4 7/8 (through ~1000 kJ/mol: brute force).
        # λ 10x below alanine's: at 2e-5 a miss cost less than the control and PICE traded the hits away (THP
        # 0.9 -> 0.5 in 776 iterations); at 2e-6 the shipped policy reached THP 0.94
        # (benchmarks/results/pips_polyproline/README.md)
        # non-bonded forces and OBC2 every 2nd step (r-RESPA): 4.7 against 5.9 s per 16 x 1000 iteration, the same
        # temperature and mean potential energy within 0.8 +- 2.4 K and 0.2 +- 1.6 kJ/mol
        # (benchmarks/results/pips_mts.json)
        run_defaults={"n_paths": 16, "n_steps": 1000, "guide_strength_kj_mol_nm2": 3e4, "lam": 2e-6,
                      "slow_force_interval": 2, **_OBC2_RUNS, **_FLOAT32_NETWORK},
        literature_basin=DihedralDistance(dihedrals=((0, 4, 6, 7), (7, 9, 20, 21), (21, 23, 34, 35))),
        literature_criterion="√Σ Δω² < 0.75 rad over the three X–Pro ω vs the target's (TICA-free stand-in: "
                             "TPS-DPS counts tic1/tic2 within 0.75 of the target's)",
    ),
    # extended → hairpin: CA RMSD < 2 Å; φ/ψ of Gly7 (φ −68° extended, +73° in the hairpin's turn).
    # 8 × 1 ps by default (the reference code: 16 × 5 ps). Non-bonded forces and OBC2 every 2nd step (r-RESPA,
    # mlpot/pips/molecular/integrator.py): 0.55 against 0.77 ms per replica-step, with the same temperature and mean
    # potential energy as every step to within 1.4 ± 1.5 K and 1.3 ± 2.9 kJ/mol (benchmarks/results/pips_mts.json)
    "chignolin": PeptideTransition(
        name="chignolin", start="chignolin", target="chignolin-folded",
        basin=CloseToTarget(atoms=(4, 11, 32, 43, 58, 73, 87, 94, 108, 132), max_rmsd_A=2.0),
        phi=(75, 85, 87, 90), psi=(85, 87, 90, 92),
        run_defaults={"n_paths": 8, "n_steps": 1000, "slow_force_interval": 2, **_OBC2_RUNS, **_FLOAT32_NETWORK},
        literature_basin=DihedralDistance(dihedrals=((75, 85, 87, 90), (85, 87, 90, 92))),
        literature_criterion="√(Δφ² + Δψ²) < 0.75 rad for Gly7 vs the target's (TICA-free stand-in: "
                             "TPS-DPS counts tic1/tic2 within 0.75 of the target's)",
    ),
}


def peptide_transition(name: str) -> PeptideTransition:
    """The transition called ``name``; a KeyError lists the known ones."""
    if name not in PEPTIDE_TRANSITIONS:
        raise KeyError(f"no PIPS transition defined for {name!r}; known: {', '.join(PEPTIDE_TRANSITIONS)} and the "
                       "2D toys")
    return PEPTIDE_TRANSITIONS[name]

"""Per-replica instability criteria, and resetting unstable replicas to their last stable state.

A criterion looks at the frames of one segment, ``(F, R, n_atoms, 3)`` Å, and says for each
replica whether it went unphysical somewhere in them:

* :class:`BondLengthCriterion` — max over bonds and frames of |d − d_ref| above a threshold
  (StABlE: 0.25 Å while training, deliberately strict; 0.5 Å at evaluation);
* :class:`MinimumDistanceCriterion` — two atoms of different molecules closer than a threshold
  (StABlE's water training criterion, 1.2 Å), minimum image for periodic cells;
* :class:`AnyCriterion` — unstable when any of several criteria fires; :func:`molecule_criterion` is the
  bond criterion plus a contact check (any two atoms closer than 0.7 Å), which catches atoms that
  collapse onto each other without stretching a bond (seen with under-trained models: methyl
  hydrogens merging at 500 K while every C–H bond stays in its band).

Non-finite positions always count as unstable. For an error message, :meth:`BondLengthCriterion.worst_bond` and
:meth:`MinimumDistanceCriterion.closest_contact` name the atoms of one structure (``mlpot md`` stops a run with them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Protocol, Tuple

import torch

from mlpot.md.observables import bond_lengths
from mlpot.md.simulator import ReplicaSimulator, Trajectory
from mlpot.md.state import ReplicaState
from mlpot.validation import positive_number

TRAINING_BOND_THRESHOLD_A = 0.25
EVALUATION_BOND_THRESHOLD_A = 0.5
MINIMUM_INTERMOLECULAR_DISTANCE_A = 1.2
MINIMUM_CONTACT_DISTANCE_A = 0.7  # no two atoms of a molecule come this close at any physical temperature


def _check_frames(positions: torch.Tensor) -> None:
    if positions.dim() != 4 or positions.shape[-1] != 3:
        raise ValueError(f"segment positions must have shape (n_frames, n_replicas, n_atoms, 3) Å, "
                         f"got {tuple(positions.shape)}")


def _threshold(value: float) -> float:
    return positive_number("the instability threshold", value, "Å")


@dataclass
class BondLengthCriterion:
    """Unstable when some bond deviates from its reference length by more than ``threshold_A``.

    Attributes:
        bonds: ``(n_bonds, 2)`` atom indices (e.g. :func:`mlpot.md.observables.covalent_bonds`).
        reference_lengths_A: ``(n_bonds,)`` Å (e.g. mean lengths over the DFT frames).
        threshold_A: Å (default 0.25, StABlE's training value; evaluation uses 0.5).
    """

    bonds: torch.Tensor
    reference_lengths_A: torch.Tensor
    threshold_A: float = TRAINING_BOND_THRESHOLD_A

    def __post_init__(self):
        self.threshold_A = _threshold(self.threshold_A)
        if self.bonds.dim() != 2 or self.bonds.shape[1] != 2:
            raise ValueError(f"bonds must have shape (n_bonds, 2), got {tuple(self.bonds.shape)}")
        if self.reference_lengths_A.shape != (self.bonds.shape[0],):
            raise ValueError(f"need one reference length per bond: {self.reference_lengths_A.numel()} "
                             f"lengths for {self.bonds.shape[0]} bonds")

    def deviations_A(self, positions: torch.Tensor) -> torch.Tensor:
        """|d − d_ref| per bond, ``(..., n_bonds)`` Å, of ``positions`` ``(..., n_atoms, 3)`` Å (inf where a
        position is not finite)."""
        deviation = (bond_lengths(positions, self.bonds) - self.reference_lengths_A.to(positions)).abs()
        return torch.nan_to_num(deviation, nan=math.inf)

    def max_deviation_A(self, positions: torch.Tensor) -> torch.Tensor:
        """Max |d − d_ref| over bonds and frames per replica, ``(R,)`` Å (inf for non-finite positions)."""
        _check_frames(positions)
        return self.deviations_A(positions).amax(dim=(0, 2))

    def worst_bond(self, frame: torch.Tensor) -> Tuple[int, int, float, float]:
        """The bond of one structure ``(n_atoms, 3)`` Å that deviates most from its reference length:
        ``(atom i, atom j, length Å, reference length Å)``; this is what an error message names."""
        worst = int(torch.argmax(self.deviations_A(frame)))
        i, j = (int(k) for k in self.bonds[worst])
        length = float(torch.linalg.norm(frame[j] - frame[i]))
        return i, j, length, float(self.reference_lengths_A[worst])

    def unstable(self, positions: torch.Tensor) -> torch.Tensor:
        """``(R,)`` bool: replicas whose bonds left the band in any of the frames ``(F, R, n_atoms, 3)`` Å."""
        return self.max_deviation_A(positions) > self.threshold_A


@dataclass
class MinimumDistanceCriterion:
    """Unstable when two atoms of different molecules come closer than ``threshold_A``.

    Attributes:
        molecule_of_atom: ``(n_atoms,)`` molecule index of each atom.
        threshold_A: Å (default 1.2, StABlE's water value).
        cell: ``(3, 3)`` Å, periodic along all three axes (minimum image); None for a molecule in vacuum.
            Only orthorhombic cells are supported for the minimum image.
    """

    molecule_of_atom: torch.Tensor
    threshold_A: float = MINIMUM_INTERMOLECULAR_DISTANCE_A
    cell: Optional[torch.Tensor] = None

    def __post_init__(self):
        self.threshold_A = _threshold(self.threshold_A)
        if self.cell is not None:
            cell = torch.as_tensor(self.cell, dtype=torch.float64)
            if cell.shape != (3, 3) or bool((cell - torch.diag(torch.diagonal(cell))).abs().max() > 1e-9):
                raise ValueError("the minimum-distance criterion supports only orthorhombic (diagonal) cells")
            self.cell = cell

    def minimum_distance_A(self, positions: torch.Tensor) -> torch.Tensor:
        """Smallest intermolecular distance over frames per replica, ``(R,)`` Å (0 for non-finite positions)."""
        _check_frames(positions)
        molecules = self.molecule_of_atom.to(positions.device)
        if molecules.shape != (positions.shape[2],):
            raise ValueError(f"molecule_of_atom needs one entry per atom ({positions.shape[2]})")
        other = molecules[:, None] != molecules[None, :]
        minimum = torch.full((positions.shape[1],), math.inf, dtype=positions.dtype, device=positions.device)
        for frame in positions:  # one frame at a time: (R, n, n) distances
            differences = frame[:, None, :, :] - frame[:, :, None, :]
            if self.cell is not None:
                lengths = torch.diagonal(self.cell).to(positions)
                differences = differences - lengths * torch.round(differences / lengths)
            distances = torch.linalg.norm(differences, dim=-1)
            distances = torch.where(other, distances, torch.full_like(distances, math.inf))
            minimum = torch.minimum(minimum, torch.nan_to_num(distances, nan=0.0).amin(dim=(1, 2)))
        return minimum

    def closest_contact(self, frame: torch.Tensor) -> Optional[Tuple[int, int, float]]:
        """The two atoms of different molecules closest to each other in one structure ``(n_atoms, 3)`` Å
        (finite), among those closer than the threshold: ``(atom i, atom j, distance Å)`` with i < j, or None.
        Found with the neighbour list, so it costs O(n_atoms), not O(n_atoms²); this is what an error message names.
        """
        from mlpot.neighbors import neighbor_pairs

        n_atoms = self.molecule_of_atom.numel()
        if frame.shape != (n_atoms, 3):
            raise ValueError(f"a structure must have shape ({n_atoms}, 3) Å, got {tuple(frame.shape)}")
        frame = frame.to(torch.float64)
        periodic = self.cell is not None
        cell = self.cell.to(frame) if periodic else torch.zeros(3, 3, dtype=frame.dtype)
        pairs, shifts = neighbor_pairs(frame, cell, torch.full((3,), periodic), self.threshold_A)
        molecules = self.molecule_of_atom.to(pairs.device)
        keep = molecules[pairs[0]] != molecules[pairs[1]]
        if not bool(keep.any()):
            return None
        pairs, shifts = pairs[:, keep], shifts[keep]
        distances = torch.linalg.norm(frame[pairs[1]] - frame[pairs[0]] + shifts @ cell, dim=-1)
        closest = int(torch.argmin(distances))
        i, j = sorted((int(pairs[0, closest]), int(pairs[1, closest])))
        return i, j, float(distances[closest])

    def unstable(self, positions: torch.Tensor) -> torch.Tensor:
        """``(R,)`` bool: replicas with two molecules closer than the threshold in any frame."""
        return self.minimum_distance_A(positions) < self.threshold_A


@dataclass
class AnyCriterion:
    """Unstable when any of ``criteria`` (each with ``unstable(positions) -> (R,) bool``) says so."""

    criteria: Tuple[Criterion, ...]

    def __post_init__(self):
        if not self.criteria:
            raise ValueError("AnyCriterion needs at least one criterion")

    def unstable(self, positions: torch.Tensor) -> torch.Tensor:
        """``(R,)`` bool: replicas that some criterion flags in the frames ``(F, R, n_atoms, 3)`` Å."""
        flags = [criterion.unstable(positions) for criterion in self.criteria]
        return torch.stack(flags).any(dim=0)


def molecule_criterion(n_atoms: int, bonds: torch.Tensor, reference_lengths_A: torch.Tensor, threshold_A: float,
                       contact_A: Optional[float] = MINIMUM_CONTACT_DISTANCE_A) -> Criterion:
    """The bond-length criterion (``threshold_A``) of a molecule of ``n_atoms``, plus, unless ``contact_A`` is
    None, any two of its atoms closer than ``contact_A`` Å."""
    bond_criterion = BondLengthCriterion(bonds, reference_lengths_A, threshold_A)
    if contact_A is None:
        return bond_criterion
    contact = MinimumDistanceCriterion(torch.arange(n_atoms, device=bonds.device), threshold_A=contact_A)
    return AnyCriterion((bond_criterion, contact))


def reset_unstable(state: ReplicaState, last_stable: ReplicaState, unstable: torch.Tensor) -> int:
    """Put the ``unstable`` replicas ``(R,)`` bool of ``state`` back to ``last_stable`` (positions, velocities,
    forces, thermostat), in place; the others keep going. Returns how many were reset."""
    state.replace_replicas(unstable, last_stable)
    return int(unstable.sum())


class Criterion(Protocol):
    def unstable(self, positions: torch.Tensor) -> torch.Tensor: ...


def run_checked_segment(simulator: ReplicaSimulator, n_steps: int, record_every: int,
                        criterion: Criterion) -> Tuple[Trajectory, torch.Tensor]:
    """Run one segment, check every recorded frame, and put the replicas that went unstable back to
    the state they had at the start of the segment (their last stable state).

    The recorded frames and the final state are checked. Returns the segment's trajectory (unstable
    replicas' frames included, as simulated) and the ``(R,)`` bool mask of replicas found unstable.
    """
    start = simulator.state.clone()
    trajectory = simulator.run(n_steps, record_every)
    checked = torch.cat([trajectory.positions.to(simulator.state.positions), simulator.state.positions[None]])
    unstable = criterion.unstable(checked).to(simulator.state.positions.device)
    reset_unstable(simulator.state, start, unstable)
    return trajectory, unstable

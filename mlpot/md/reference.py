"""Reference observables of a molecule from labelled reference data (e.g. ``systems/ethanol/dft.extxyz``).

The bond graph comes from one reference structure by covalent radii; the reference bond lengths are
their means over all reference frames; the reference h(r) is the mean of the same Gaussian-smoothed
per-frame histogram the simulations are measured with (:func:`mlpot.md.observables.distance_histogram`).
Units: Å.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mlpot.data.frames import Frame
from mlpot.md.observables import DistanceBins, bond_lengths, covalent_bonds, distance_histogram


@dataclass
class MoleculeReference:
    """What a molecule's simulations are compared against.

    Attributes:
        atomic_numbers: ``(n_atoms,)``.
        bonds: ``(n_bonds, 2)`` atom indices.
        bond_lengths_A: ``(n_bonds,)`` mean bond lengths over the reference frames, Å.
        bins: the h(r) bins.
        distance_histogram: ``(n_bins,)`` mean h(r) of the reference frames, 1/Å.
        n_frames: how many reference frames went into the means.
    """

    atomic_numbers: torch.Tensor
    bonds: torch.Tensor
    bond_lengths_A: torch.Tensor
    bins: DistanceBins
    distance_histogram: torch.Tensor
    n_frames: int


def frame_positions(frames: Sequence[Frame]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positions (F, n_atoms, 3) Å, atomic numbers (n_atoms,))`` of frames of one molecule, same atom order."""
    if len(frames) == 0:
        raise ValueError("no reference frames given")
    numbers = frames[0].numbers
    for frame in frames:
        if frame.numbers.shape != numbers.shape or not np.array_equal(frame.numbers, numbers):
            raise frame.error("its atoms differ from the first frame's "
                              "(reference frames must be one molecule, same order)")
    positions = torch.from_numpy(np.stack([frame.positions for frame in frames]))
    return positions, torch.from_numpy(numbers.astype(np.int64))


def molecule_reference(frames: Sequence[Frame], bins: DistanceBins = DistanceBins(),
                       bond_structure: int = 0, bond_tolerance: float = 1.2) -> MoleculeReference:
    """Reference bonds, bond lengths and h(r) from frames of one molecule; bonds from frame ``bond_structure``."""
    positions, numbers = frame_positions(frames)
    if not 0 <= bond_structure < positions.shape[0]:
        raise ValueError(f"bond_structure must be a frame index in 0..{positions.shape[0] - 1}, got {bond_structure}")
    bonds = covalent_bonds(numbers, positions[bond_structure], tolerance=bond_tolerance)
    return MoleculeReference(
        atomic_numbers=numbers,
        bonds=bonds,
        bond_lengths_A=bond_lengths(positions, bonds).mean(dim=0),
        bins=bins,
        distance_histogram=distance_histogram(positions, bins).mean(dim=0),
        n_frames=int(positions.shape[0]),
    )


def molecule_reference_from_file(path: str | Path, bins: DistanceBins = DistanceBins(),
                                 bond_structure: int = 0) -> MoleculeReference:
    """:func:`molecule_reference` of every frame of a labelled file (extxyz, ASE db, npz; see
    :func:`mlpot.data.readers.read_frames`)."""
    from mlpot.data.readers import read_frames

    return molecule_reference(read_frames(path), bins, bond_structure)

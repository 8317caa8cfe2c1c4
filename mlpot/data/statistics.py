"""Dataset statistics that set a model's fixed scales, computed once on the training split.

* per-species reference energies ``e_s`` (eV) with ``E ≈ sum_s n_s e_s``: isolated-atom energies
  where the data has single-atom frames, least squares for the other species. For data with a
  single composition this is under-determined; the minimum-norm solution is used (it spreads the
  mean energy over the species), which is harmless because only ``sum_s n_s e_s`` matters then.
* force RMS (eV/Å): the scale of the network's output, so that the network learns O(1) numbers.
* average neighbour count within the cutoff: the normalisation of the message sums.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence

import numpy as np
import torch

from mlpot.data.frames import Frame
from mlpot.data.validate import force_rms
from mlpot.neighbors import neighbor_pairs


@dataclass
class DatasetStatistics:
    """What training stores in the model file. Energies eV, forces eV/Å."""

    atomic_numbers: List[int]
    energy_references: List[float]
    isolated_atom_species: List[int]
    force_rms: float
    avg_num_neighbors: float
    residual_energy_rms_per_atom: float
    n_frames: int

    def to_dict(self) -> Dict:
        return asdict(self)


def composition_matrix(frames: Sequence[Frame], atomic_numbers: Sequence[int]) -> np.ndarray:
    """``(n_frames, n_species)`` atom counts per species."""
    column = {int(z): k for k, z in enumerate(atomic_numbers)}
    counts = np.zeros((len(frames), len(atomic_numbers)))
    for row, frame in enumerate(frames):
        for z in frame.numbers:
            counts[row, column[int(z)]] += 1
    return counts


def fit_energy_references(frames: Sequence[Frame], atomic_numbers: Sequence[int]) -> tuple[np.ndarray, List[int]]:
    """Per-species reference energies (eV) and the species fixed by isolated-atom frames."""
    counts = composition_matrix(frames, atomic_numbers)
    energies = np.array([f.energy for f in frames], dtype=np.float64)
    references = np.zeros(len(atomic_numbers))
    fixed = np.zeros(len(atomic_numbers), dtype=bool)
    for k, z in enumerate(atomic_numbers):
        isolated = [f.energy for f in frames if f.n_atoms == 1 and int(f.numbers[0]) == int(z)]
        if isolated:
            references[k] = float(np.mean(isolated))
            fixed[k] = True
    free = ~fixed
    if free.any():
        residual = energies - counts[:, fixed] @ references[fixed]
        solution, *_ = np.linalg.lstsq(counts[:, free], residual, rcond=None)
        references[free] = solution
    return references, [int(z) for z, f in zip(atomic_numbers, fixed) if f]


def average_neighbor_count(frames: Sequence[Frame], cutoff: float, max_frames: int = 1000) -> float:
    """Mean number of neighbours within ``cutoff`` Å per atom (over at most ``max_frames`` frames)."""
    step = max(1, len(frames) // max_frames)
    edges, atoms = 0, 0
    for frame in frames[::step]:
        edge_index, _ = neighbor_pairs(
            torch.from_numpy(frame.positions), torch.from_numpy(frame.cell), torch.from_numpy(frame.pbc), cutoff
        )
        edges += edge_index.shape[1]
        atoms += frame.n_atoms
    return edges / max(atoms, 1)


def compute_statistics(frames: Sequence[Frame], atomic_numbers: Sequence[int], cutoff: float) -> DatasetStatistics:
    """All statistics of the (training) frames; see the module docstring."""
    references, isolated = fit_energy_references(frames, atomic_numbers)
    counts = composition_matrix(frames, atomic_numbers)
    energies = np.array([f.energy for f in frames])
    n_atoms = counts.sum(axis=1)
    residual = (energies - counts @ references) / n_atoms
    rms = force_rms(frames)
    return DatasetStatistics(
        atomic_numbers=[int(z) for z in atomic_numbers],
        energy_references=[float(x) for x in references],
        isolated_atom_species=isolated,
        force_rms=rms if rms > 0 else 1.0,
        avg_num_neighbors=max(average_neighbor_count(frames, cutoff), 1.0),
        residual_energy_rms_per_atom=float(np.sqrt(np.mean(residual**2))),
        n_frames=len(frames),
    )

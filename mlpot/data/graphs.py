"""Frames as graphs with precomputed neighbour lists, and batches of them for training.

A dataset's positions do not move during training, so each frame's neighbour pairs are found once
(with the one neighbour list, :func:`mlpot.neighbors.neighbor_pairs`) and kept as integer pairs
and cell shifts. Edge vectors are rebuilt from positions and cell in every step, so forces
(d/dpositions) and stress (d/dstrain) flow through them.

A :class:`Batch` concatenates frames into one disconnected graph: atom indices of frame k are
offset by the atoms of frames 0..k-1, ``atom_frame`` / ``edge_frame`` say which frame an atom or
edge belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch

from mlpot.data.frames import Frame
from mlpot.neighbors import concatenate_edges, neighbor_pairs


@dataclass
class Graph:
    """One frame, as float64 CPU tensors; species are atomic numbers until :func:`collate` maps them."""

    positions: torch.Tensor  # (n, 3) Å
    numbers: torch.Tensor  # (n,)
    cell: torch.Tensor  # (3, 3) Å
    pbc: torch.Tensor  # (3,) bool
    edge_index: torch.Tensor  # (2, e)
    cell_shifts: torch.Tensor  # (e, 3)
    energy: torch.Tensor  # () eV
    forces: torch.Tensor  # (n, 3) eV/Å
    stress: torch.Tensor | None  # (3, 3) eV/Å^3


def frame_to_graph(frame: Frame, cutoff: float) -> Graph:
    """Neighbour list of one frame (raises ``ValueError`` naming the frame for e.g. a too-small box)."""
    positions = torch.from_numpy(frame.positions)
    cell = torch.from_numpy(frame.cell)
    pbc = torch.from_numpy(frame.pbc)
    try:
        edge_index, cell_shifts = neighbor_pairs(positions, cell, pbc, cutoff)
    except (ValueError, RuntimeError) as error:
        raise frame.error(str(error).replace("mlpot: ", "")) from None
    return Graph(
        positions=positions,
        numbers=torch.from_numpy(frame.numbers),
        cell=cell,
        pbc=pbc,
        edge_index=edge_index,
        cell_shifts=cell_shifts,
        energy=torch.tensor(float(frame.energy), dtype=torch.float64),
        forces=torch.from_numpy(frame.forces),
        stress=None if frame.stress is None else torch.from_numpy(frame.stress),
    )


def frames_to_graphs(frames: Sequence[Frame], cutoff: float) -> List[Graph]:
    return [frame_to_graph(frame, cutoff) for frame in frames]


@dataclass
class Batch:
    """Several graphs as one; tensors in the model's dtype on one device."""

    positions: torch.Tensor  # (N, 3) Å
    species: torch.Tensor  # (N,) species indices of the model
    edge_index: torch.Tensor  # (2, E)
    cell_shifts: torch.Tensor  # (E, 3)
    cell: torch.Tensor  # (B, 3, 3) Å
    atom_frame: torch.Tensor  # (N,) frame of each atom
    edge_frame: torch.Tensor  # (E,) frame of each edge
    n_atoms: torch.Tensor  # (B,) atoms per frame
    energy: torch.Tensor  # (B,) eV
    forces: torch.Tensor  # (N, 3) eV/Å
    stress: torch.Tensor  # (B, 3, 3) eV/Å^3 (zeros where absent)
    has_stress: torch.Tensor  # (B,) bool

    @property
    def n_frames(self) -> int:
        return int(self.n_atoms.shape[0])


def collate(graphs: Sequence[Graph], species_table: torch.Tensor, dtype: torch.dtype, device) -> Batch:
    """Concatenate graphs; ``species_table[Z]`` gives the model's species index of element Z."""
    offsets = torch.cumsum(torch.tensor([0] + [g.positions.shape[0] for g in graphs[:-1]]), 0)
    n_atoms = torch.tensor([g.positions.shape[0] for g in graphs])
    frames = torch.arange(len(graphs))
    has_stress = torch.tensor([g.stress is not None for g in graphs])
    stress = torch.stack([g.stress if g.stress is not None else torch.zeros(3, 3, dtype=torch.float64) for g in graphs])
    numbers = torch.cat([g.numbers for g in graphs])
    edge_index, cell_shifts, edge_frame = concatenate_edges(
        [g.edge_index for g in graphs], [g.cell_shifts for g in graphs], offsets.tolist()
    )
    batch = Batch(
        positions=torch.cat([g.positions for g in graphs]),
        species=species_table.cpu()[numbers],
        edge_index=edge_index,
        cell_shifts=cell_shifts,
        cell=torch.stack([g.cell for g in graphs]),
        atom_frame=torch.repeat_interleave(frames, n_atoms),
        edge_frame=edge_frame,
        n_atoms=n_atoms,
        energy=torch.stack([g.energy for g in graphs]),
        forces=torch.cat([g.forces for g in graphs]),
        stress=stress,
        has_stress=has_stress,
    )
    for name, value in vars(batch).items():
        if value.is_floating_point():
            value = value.to(dtype)
        setattr(batch, name, value.to(device))
    return batch

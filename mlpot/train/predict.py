"""Energies, forces and stress of a whole :class:`~mlpot.data.graphs.Batch` in one pass (eager, for training).

The deployed model computes one structure at a time through ``Potential.compute``; training runs
many at once. Both go through the same ``Potential.atom_energies``, so what is trained is what is
deployed. Stress follows ``Potential.compute``: a symmetric strain per frame, stress = (1/V) dE/dstrain.
"""

from __future__ import annotations

from typing import Dict

import torch

from mlpot.data.graphs import Batch
from mlpot.models.potential import Potential


def predict_batch(
    model: Potential, batch: Batch, compute_stress: bool = False, create_graph: bool = True
) -> Dict[str, torch.Tensor]:
    """``energy`` (B,) eV, ``forces`` (N, 3) eV/Å and, if asked, ``stress`` (B, 3, 3) eV/Å^3.

    ``create_graph=True`` keeps the graph so a loss on the forces can be backpropagated to the
    parameters; evaluation passes False.
    """
    with torch.enable_grad():
        positions = batch.positions.detach().requires_grad_(True)
        cell = batch.cell
        inputs = [positions]
        if compute_stress:
            strain = torch.zeros_like(cell).requires_grad_(True)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            positions_used = positions + torch.bmm(positions.unsqueeze(1), symmetric[batch.atom_frame]).squeeze(1)
            cell = cell + torch.bmm(cell, symmetric)
            inputs.append(strain)
        else:
            positions_used = positions
        edge_cells = cell[batch.edge_frame]
        vectors = (
            positions_used[batch.edge_index[1]]
            - positions_used[batch.edge_index[0]]
            + torch.bmm(batch.cell_shifts.unsqueeze(1), edge_cells).squeeze(1)
        )
        atom_energies = model.atom_energies(batch.species, batch.edge_index, vectors)
        energy = torch.zeros(batch.n_frames, dtype=atom_energies.dtype, device=atom_energies.device)
        energy = energy.index_add(0, batch.atom_frame, atom_energies)
        gradients = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph)
    results = {"energy": energy, "forces": -gradients[0]}
    if compute_stress:
        volume = torch.abs(torch.linalg.det(batch.cell))
        volume = torch.where(volume > 0, volume, torch.ones_like(volume))  # molecules: no stress label anyway
        results["stress"] = gradients[1] / volume[:, None, None]
    if not create_graph:
        results = {key: value.detach() for key, value in results.items()}
    return results

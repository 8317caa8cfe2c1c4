"""The one neighbour list: agreement with ASE's, and clear errors for bad geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list as ase_neighbor_list

from conftest import as_tensors
from mlpot.neighbors import edge_vectors, neighbor_pairs


def _sorted_pairs(i, j, distances):
    order = np.lexsort((np.round(distances, 8), j, i))
    return i[order], j[order], distances[order]


@pytest.mark.parametrize("system", ["alanine_dipeptide", "water_box"])
def test_pairs_and_distances_match_ase_neighbor_list(system, request):
    atoms = request.getfixturevalue(system)
    positions, _, cell, pbc = as_tensors(atoms)
    edge_index, shifts = neighbor_pairs(positions, cell, pbc, 5.0)
    distances = torch.linalg.norm(edge_vectors(positions, cell, edge_index, shifts), dim=1).numpy()
    i, j, d = ase_neighbor_list("ijd", atoms, 5.0)
    ours = _sorted_pairs(edge_index[0].numpy(), edge_index[1].numpy(), distances)
    theirs = _sorted_pairs(i, j, d)
    assert len(ours[0]) == len(theirs[0]) > 0
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])
    np.testing.assert_allclose(ours[2], theirs[2], atol=1e-10)


def test_box_smaller_than_twice_the_cutoff_is_refused_with_the_numbers(water_box):
    positions, _, cell, pbc = as_tensors(water_box)
    with pytest.raises(ValueError, match=r"periodic box too small for the cutoff.*at least 2 x cutoff = 14.0"):
        neighbor_pairs(positions, cell, pbc, 7.0)


def test_nan_position_is_refused_naming_the_atom(alanine_dipeptide):
    positions, _, cell, pbc = as_tensors(alanine_dipeptide)
    positions[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite .*first bad atom index 3"):
        neighbor_pairs(positions, cell, pbc, 5.0)


def test_atoms_beyond_the_cutoff_have_no_edges():
    positions = torch.tensor([[0.0, 0.0, 0.0], [6.0, 0.0, 0.0]], dtype=torch.float64)
    no_cell, no_pbc = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool)
    edge_index, _ = neighbor_pairs(positions, no_cell, no_pbc, 5.0)
    assert edge_index.shape == (2, 0)

"""The one neighbour list, used inside every compiled model (ASE and OpenMM paths alike).

Lengths are in Å. The search itself is done by vesin-torch (a cell list for large systems,
brute force for small ones, both exact), which returns integer pairs and integer cell shifts;
the edge vectors are then built here from the positions and the cell so that gradients with
respect to positions (forces) and cell (stress) flow through ordinary torch operations.

Everything a model calls here is TorchScript-compatible: OpenMM's ``TorchForce`` runs it in C++.
"""

from typing import List, Tuple

import torch
from vesin_torch import NeighborList


def number_text(value: float) -> str:
    """``value`` rounded to 4 decimals as plain text ("9.0", "0.1", "1234.5678"), where TorchScript's
    ``str`` would write "9." or "0.10000000000000001"; magnitudes from 1e15 on keep ``str``'s form."""
    magnitude = abs(value)
    if not magnitude < 1.0e15:
        return str(value)
    scaled = int(round(magnitude * 10000.0))
    fraction = str(scaled % 10000 + 10000)[1:].rstrip("0")
    sign = "-" if value < 0 and scaled > 0 else ""
    return sign + str(scaled // 10000) + "." + (fraction if len(fraction) > 0 else "0")


def centred_positions(positions: torch.Tensor, max_coordinate_A: float = 1.0e6) -> torch.Tensor:
    """``positions`` ``(n_atoms, 3)`` Å minus the first atom's, after refusing empty, non-finite or huge input.

    A rigid translation leaves energies, forces and stress unchanged (with or without a periodic cell),
    so callers centre in the input's dtype before casting to a float32 model: a molecule 1e4 Å from the
    origin then keeps the precision of one at the origin. Raises ``ValueError`` ("mlpot: ...") for no atoms,
    NaN/infinite coordinates (naming the first bad atom) and coordinates beyond ``max_coordinate_A``
    (no chemistry needs them, and in float32 they leave no digits for interatomic distances).
    """
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError("mlpot: positions must have shape (n_atoms, 3)")
    if positions.shape[0] == 0:
        raise ValueError("mlpot: the structure has no atoms")
    largest = float(positions.detach().abs().max())
    if not largest <= max_coordinate_A:
        _check_finite(positions)
        raise ValueError(
            "mlpot: coordinates reach " + number_text(largest) + " Å, beyond the " + number_text(max_coordinate_A)
            + " Å mlpot accepts; check the length unit (Å) or wrap the structure into its cell"
        )
    return positions - positions[0].detach()


def _check_finite(positions: torch.Tensor) -> None:
    """Raise ``ValueError`` naming the first atom with a NaN or infinite coordinate."""
    if not bool(torch.isfinite(positions).all()):
        bad = torch.nonzero(~torch.isfinite(positions).all(dim=1)).flatten()
        raise ValueError(
            "mlpot: positions contain NaN or infinite values (first bad atom index "
            + str(int(bad[0]))
            + "); the simulation or input structure is broken"
        )


def perpendicular_widths(cell: torch.Tensor) -> torch.Tensor:
    """Distances between opposite faces of the cell, shape ``(3,)``, Å.

    ``cell`` holds the lattice vectors as rows, shape ``(3, 3)``, Å. For axis k the width is
    ``volume / |a_{k+1} x a_{k+2}|``; a cutoff sphere fits in the cell iff ``2 * cutoff <= width``.
    """
    cross = torch.stack(
        [
            torch.linalg.cross(cell[1], cell[2]),
            torch.linalg.cross(cell[2], cell[0]),
            torch.linalg.cross(cell[0], cell[1]),
        ]
    )
    volume = torch.abs(torch.dot(cell[0], cross[0]))
    return volume / torch.linalg.norm(cross, dim=1)


def check_positions_and_cell(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float) -> None:
    """Raise ``ValueError`` naming the problem for non-finite input or a box too small for the cutoff.

    A periodic axis narrower than ``2 * cutoff`` would let an atom see two images of the same
    neighbour, which the minimum-image convention used by OpenMM and by most training data does not
    describe; mlpot refuses it rather than compute something the user did not mean.
    """
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError("mlpot: positions must have shape (n_atoms, 3)")
    _check_finite(positions)
    if bool(pbc.any()):
        if not bool(torch.isfinite(cell).all()):
            raise ValueError("mlpot: the periodic cell contains NaN or infinite values")
        widths = perpendicular_widths(cell.detach().to(torch.float64))
        for axis in range(3):
            if bool(pbc[axis]) and not float(widths[axis]) >= 2.0 * cutoff:  # NaN for a cell of zero volume
                if not bool(torch.isfinite(widths[axis])) or float(widths[axis]) == 0.0:
                    raise ValueError(
                        "mlpot: the structure is periodic along axis " + str(axis) + " but its cell has zero "
                        "volume (lattice vectors zero or in one plane); set the cell, or pbc=False for a molecule"
                    )
                raise ValueError(
                    "mlpot: periodic box too small for the cutoff: the width along axis "
                    + str(axis)
                    + " is "
                    + number_text(float(widths[axis]))
                    + " Å but must be at least 2 x cutoff = "
                    + number_text(2.0 * cutoff)
                    + " Å (replicate the cell, e.g. ase.Atoms.repeat, or use a smaller cutoff)"
                )


def neighbor_pairs(
    positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """All ordered pairs (i, j), i != j or different image, closer than ``cutoff``.

    Args:
        positions: ``(n_atoms, 3)`` Å.
        cell: ``(3, 3)`` Å, lattice vectors as rows (ignored on non-periodic axes).
        pbc: ``(3,)`` bool, periodicity per axis.
        cutoff: Å.

    Returns:
        edge_index: ``(2, n_edges)`` int64, rows (centre i, neighbour j); both directions are listed,
        in mirrored halves: with ``h = n_edges // 2``, edge ``k + h`` is edge ``k`` reversed (models use
        this to compute what depends only on the distance once per pair).
        cell_shifts: ``(n_edges, 3)`` in units of the lattice vectors (positions dtype), so that
        the vector from i to j is ``positions[j] - positions[i] + cell_shifts @ cell``.
    """
    check_positions_and_cell(positions, cell, pbc, cutoff)
    calculator = NeighborList(cutoff=cutoff, full_list=False)
    # vesin searches in float64 on the tensors' own device (CPU or CUDA)
    points = positions.detach().to(torch.float64)
    box = cell.detach().to(torch.float64)
    if not bool(pbc.any()):
        box = torch.zeros(3, 3, dtype=torch.float64, device=positions.device)
    result: List[torch.Tensor] = calculator.compute(points, box, pbc.cpu(), "ijS")
    first, second = result[0], result[1]
    edge_index = torch.stack([torch.cat([first, second]), torch.cat([second, first])]).to(positions.device)
    half_shifts = result[2].to(dtype=positions.dtype, device=positions.device)
    return edge_index, torch.cat([half_shifts, -half_shifts])


def mirrored_halves(edge_index: torch.Tensor) -> bool:
    """Whether ``edge_index`` ``(2, n_edges)`` lists edge ``k`` reversed at ``k + n_edges // 2`` for every k,
    as :func:`neighbor_pairs` returns it (a batch of several structures concatenated is not)."""
    num_edges = edge_index.shape[1]
    half = num_edges // 2
    if num_edges == 0 or num_edges != 2 * half:
        return False
    return torch.equal(edge_index[0, :half], edge_index[1, half:]) and torch.equal(
        edge_index[1, :half], edge_index[0, half:]
    )


def concatenate_edges(
    edge_indices: List[torch.Tensor], cell_shifts: List[torch.Tensor], atom_offsets: List[int]
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The edges of several structures as one disconnected graph, in mirrored halves when each part is.

    Args:
        edge_indices: per structure ``(2, e_s)`` as :func:`neighbor_pairs` returns them.
        cell_shifts: per structure ``(e_s, 3)``.
        atom_offsets: index of each structure's first atom in the concatenated positions.

    Returns:
        ``edge_index (2, E)``, ``cell_shifts (E, 3)`` and ``edge_structure (E,)`` (which structure each
        edge belongs to). Every structure's first halves come first, then every second half, so that the
        batch keeps the property :func:`mirrored_halves` tests (and the per-pair saving with it).
    """
    shifted = [edges + offset for edges, offset in zip(edge_indices, atom_offsets)]
    owner = [torch.full((edges.shape[1],), k, dtype=torch.long, device=edges.device) for k, edges in enumerate(shifted)]
    if len(shifted) > 1 and all(edges.shape[1] == 0 or mirrored_halves(edges) for edges in edge_indices):
        halves = [edges.shape[1] // 2 for edges in shifted]
        first = [edges[:, :h] for edges, h in zip(shifted, halves)]
        order = first + [edges[:, h:] for edges, h in zip(shifted, halves)]
        shift_order = [s[:h] for s, h in zip(cell_shifts, halves)] + [s[h:] for s, h in zip(cell_shifts, halves)]
        owner_order = [o[:h] for o, h in zip(owner, halves)] + [o[h:] for o, h in zip(owner, halves)]
        return torch.cat(order, dim=1), torch.cat(shift_order), torch.cat(owner_order)
    return torch.cat(shifted, dim=1), torch.cat(cell_shifts), torch.cat(owner)


def edge_vectors(
    positions: torch.Tensor, cell: torch.Tensor, edge_index: torch.Tensor, cell_shifts: torch.Tensor
) -> torch.Tensor:
    """Vectors from centre i to neighbour j, ``(n_edges, 3)`` Å, differentiable in positions and cell."""
    return positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]) + cell_shifts @ cell

"""The energy model every architecture plugs into.

``Potential`` turns (positions Å, atomic numbers, cell Å, pbc) into per-atom energies in eV:

    atomic numbers --species table--> species indices
    positions, cell, pbc --mlpot.neighbors--> edges and edge vectors
    representation(species, edges, edge vectors) --> one scalar per atom
    scale * scalar + shift[species] --> per-atom energy (eV)

``compute`` adds forces ``-dE/dr`` and the stress ``(1/V) dE/d(strain)`` by autograd. It is exported
to TorchScript, so the ASE calculator and OpenMM's TorchForce run the same compiled code.

Before anything else the positions are translated so that the first atom sits at the origin, in the
caller's dtype (a rigid translation changes nothing physical): a float32 model then sees a molecule
1e4 Å from the origin as precisely as one at the origin. Structures with no atoms, coordinates beyond
1e6 Å, or two atoms closer than 0.01 Å are refused with a named error.
"""

from typing import Dict, List

import torch
from torch import nn

from mlpot.neighbors import centred_positions, edge_vectors, neighbor_pairs, number_text

MAX_ATOMIC_NUMBER = 118


class Potential(nn.Module):
    """An interatomic potential: a representation plus species handling, scale and shift.

    Args:
        representation: module mapping ``(species (n,), edge_index (2, e), edge_vectors (e, 3) Å)``
            to one scalar per atom, shape ``(n,)``.
        atomic_numbers: the elements the model knows, e.g. ``[1, 6, 7, 8]``; species index k is
            ``atomic_numbers[k]``.
        cutoff: neighbour cutoff in Å.
        energy_shift: per-species reference energy in eV, length ``len(atomic_numbers)``
            (defaults to zeros; training fits it by least squares).
        energy_scale: global scale of the representation's output, eV.
    """

    def __init__(
        self,
        representation: nn.Module,
        atomic_numbers: List[int],
        cutoff: float,
        energy_shift: List[float],
        energy_scale: float = 1.0,
    ):
        super().__init__()
        if len(energy_shift) != len(atomic_numbers):
            raise ValueError("energy_shift needs one value per species")
        self.representation = representation
        self.cutoff = float(cutoff)
        table = torch.full((MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.long)
        for index, number in enumerate(atomic_numbers):
            table[number] = index
        self.register_buffer("species_table", table)
        self.register_buffer("atomic_numbers", torch.tensor(atomic_numbers, dtype=torch.long))
        self.register_buffer("energy_shift", torch.tensor(energy_shift, dtype=torch.get_default_dtype()))
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale), dtype=torch.get_default_dtype()))

    def species_of(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Species indices ``(n,)`` for atomic numbers ``(n,)``; raises ``ValueError`` for unknown elements."""
        valid = (atomic_numbers >= 0) & (atomic_numbers < self.species_table.shape[0])
        if not bool(valid.all()):
            raise ValueError("mlpot: atomic numbers must lie in 0..118")
        species = self.species_table[atomic_numbers]
        if bool((species < 0).any()):
            unknown: List[int] = torch.unique(atomic_numbers[species < 0]).tolist()
            known: List[int] = self.atomic_numbers.tolist()
            raise ValueError(
                "mlpot: atomic number(s) " + str(unknown) + " not in this model's species " + str(known)
            )
        return species

    def forward(
        self, positions: torch.Tensor, atomic_numbers: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor
    ) -> torch.Tensor:
        """Per-atom energies, shape ``(n_atoms,)``, eV.

        Args:
            positions: ``(n_atoms, 3)`` Å (cast to the model's dtype).
            atomic_numbers: ``(n_atoms,)`` int64.
            cell: ``(3, 3)`` Å, lattice vectors as rows; any value when no axis is periodic.
            pbc: ``(3,)`` bool.
        """
        dtype = self.energy_shift.dtype
        return self.structure_energies(centred_positions(positions).to(dtype), atomic_numbers, cell.to(dtype), pbc)

    def structure_energies(
        self, positions: torch.Tensor, atomic_numbers: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`forward` for positions already centred and cast to the model's dtype."""
        species = self.species_of(atomic_numbers)
        edge_index, cell_shifts = neighbor_pairs(positions, cell, pbc, self.cutoff)
        vectors = edge_vectors(positions, cell, edge_index, cell_shifts)
        self.check_pair_distances(edge_index, vectors)
        return self.atom_energies(species, edge_index, vectors)

    def check_pair_distances(
        self, edge_index: torch.Tensor, vectors: torch.Tensor, min_distance_A: float = 0.01
    ) -> None:
        """Raise ``ValueError`` naming the closest pair when it is nearer than ``min_distance_A``: two atoms
        that close are a broken structure (e.g. an atom listed twice), not chemistry."""
        if vectors.shape[0] == 0:
            return
        lengths = torch.linalg.norm(vectors.detach(), dim=1)
        closest = int(torch.argmin(lengths))
        distance = float(lengths[closest])
        if distance < min_distance_A:
            raise ValueError(
                "mlpot: atoms " + str(int(edge_index[0, closest])) + " and " + str(int(edge_index[1, closest]))
                + " are " + number_text(distance) + " Å apart (closer than " + number_text(min_distance_A)
                + " Å): the structure is broken, e.g. an atom listed twice or a collapsed simulation"
            )

    # ---- layer by layer: engines that split a structure over processes (LAMMPS over MPI ranks) run the layers one
    # at a time and exchange the node states of the atoms at their borders in between
    @torch.jit.export
    def graph_state_widths(self) -> List[int]:
        """Columns of the node state before the first layer and after each one (:meth:`graph_layer`)."""
        return self.representation.state_widths()

    @torch.jit.export
    def graph_layer(self, layer: int, state: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                    vectors: torch.Tensor) -> torch.Tensor:
        """The node state after layer ``layer`` (0-based; -1: the first state, from the species alone), from the
        state before it, on directed edges ``(2, e)`` with vectors ``(e, 3)`` Å. Composing -1, 0, ..., and
        :meth:`graph_energies` gives :meth:`atom_energies` on the same graph."""
        return self.representation.layer_state(layer, state, species, edge_index, vectors.to(self.energy_shift.dtype))

    @torch.jit.export
    def graph_energies(self, state: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-node energies (eV) from the state after the last layer."""
        return self.energy_scale * self.representation.state_scalars(state) + self.energy_shift[species]

    def atom_energies(self, species: torch.Tensor, edge_index: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (eV) of a graph: species indices ``(n,)``, edges ``(2, e)``, edge vectors ``(e, 3)`` Å.

        The graph may hold several disconnected structures (a training batch).
        """
        scalars = self.representation(species, edge_index, vectors)
        return self.energy_scale * scalars + self.energy_shift[species]

    @torch.jit.export
    def compute(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Energy, per-atom energies, forces and stress in one pass.

        Returns a dict with ``energy`` (scalar, eV), ``energies`` ``(n_atoms,)`` eV, and when asked
        ``forces`` ``(n_atoms, 3)`` eV/Å = -dE/dpositions and ``stress`` ``(3, 3)`` eV/Å^3 =
        (1/V) dE/d(strain) (ASE's sign convention: positive under tension) with ``virial`` = -dE/d(strain), eV.
        ``create_graph`` keeps the graph of the forces for training on them.
        """
        dtype = self.energy_shift.dtype
        positions = centred_positions(positions).to(dtype)
        cell = cell.to(dtype)
        if compute_forces:
            positions = positions.detach().requires_grad_(True)
        displacement = torch.zeros(3, 3, dtype=dtype, device=positions.device)
        if compute_stress:
            if not bool(pbc.all()):
                raise ValueError("mlpot: stress needs a cell that is periodic along all three axes")
            displacement.requires_grad_(True)
            symmetric = 0.5 * (displacement + displacement.transpose(0, 1))
            strained_positions = positions + positions @ symmetric
            strained_cell = cell + cell @ symmetric
        else:
            strained_positions = positions
            strained_cell = cell
        energies = self.structure_energies(strained_positions, atomic_numbers, strained_cell, pbc)
        energy = energies.sum()
        results: Dict[str, torch.Tensor] = {"energy": energy, "energies": energies}
        inputs: List[torch.Tensor] = []
        if compute_forces:
            inputs.append(positions)
        if compute_stress:
            inputs.append(displacement)
        if len(inputs) > 0:
            gradients = torch.autograd.grad(
                [energy], inputs, create_graph=create_graph, allow_unused=True
            )
            k = 0
            if compute_forces:
                gradient = gradients[k]
                if gradient is None:
                    results["forces"] = torch.zeros_like(positions)
                else:
                    results["forces"] = -gradient
                k += 1
            if compute_stress:
                gradient = gradients[k]
                if gradient is None:
                    gradient = torch.zeros_like(displacement)
                volume = torch.abs(torch.linalg.det(cell))
                results["virial"] = -gradient
                results["stress"] = gradient / volume
        if not create_graph:
            for key in list(results.keys()):
                results[key] = results[key].detach()
        return results

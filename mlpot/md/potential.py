"""Energies and forces of R replicas of one system, evaluated as one batched graph.

The replicas are R copies of the same atoms (same elements, same cell), each at its own positions.
Their neighbour pairs are found replica by replica with the one neighbour list
(:func:`mlpot.neighbors.neighbor_pairs`) and concatenated into one disconnected graph, whose
per-atom energies come from ``Potential.atom_energies`` — the same function the deployed model's
``compute`` and the trainer's ``predict_batch`` call, so simulation, training and deployment share
one source of forces.

The model may be an eager :class:`~mlpot.models.potential.Potential` (for training through the
energies), the compiled module of a model file (``mlpot.deploy.load_model(path).module``), or a compiled
(``.pt2``) file (``mlpot.compiled.load_compiled(path)``), which gives energies and forces only: the replicas'
pairs, each listed once, go to its native code as one graph.

Units: positions Å, energies eV, forces eV/Å.

A replica whose positions are no longer finite (it blew up) gets no edges: its energy is the sum of
its atoms' isolated-atom energies and its forces are zero, so it cannot stop the other replicas;
instability detection (:mod:`mlpot.md.stability`) flags it.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from mlpot.neighbors import concatenate_edges, edge_vectors, mirrored_halves, neighbor_pairs


class ReplicaPotential:
    """Batched energies and forces of R replicas of one system.

    Args:
        model: a ``Potential`` or its TorchScript module (anything with ``species_of``,
            ``atom_energies``, ``cutoff`` and ``energy_shift``), or a :class:`~mlpot.compiled.CompiledModel`.
        atomic_numbers: ``(n_atoms,)`` of one replica.
        cell: ``(3, 3)`` Å, lattice vectors as rows, shared by all replicas (default: no cell).
        pbc: ``(3,)`` bool (default: not periodic).
        device: where the graph and the model run; the model is not moved (put it there yourself).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        atomic_numbers,
        cell: Optional[torch.Tensor] = None,
        pbc: Optional[torch.Tensor] = None,
        device: torch.device | str = "cpu",
    ):
        self.model = model
        self.device = torch.device(device)
        # a compiled file (mlpot.compiled.CompiledModel) runs prepared graphs; not imported here, it loads e3nn
        self.compiled = callable(getattr(model, "run_graph", None))
        self.dtype = model.dtype if self.compiled else model.energy_shift.dtype
        numbers = torch.as_tensor(atomic_numbers, dtype=torch.long, device=self.device)
        if numbers.dim() != 1 or numbers.numel() == 0:
            raise ValueError("atomic_numbers must be a non-empty 1-d list of atomic numbers of one replica")
        self.atomic_numbers = numbers
        self.species = model.species_of(numbers)
        self.cutoff = float(model.cutoff)
        self.cell = (
            torch.zeros(3, 3, dtype=self.dtype, device=self.device)
            if cell is None
            else torch.as_tensor(cell, dtype=self.dtype, device=self.device)
        )
        self.pbc = (
            torch.zeros(3, dtype=torch.bool, device=self.device)
            if pbc is None
            else torch.as_tensor(pbc, dtype=torch.bool, device=self.device)
        )
        if self.cell.shape != (3, 3) or self.pbc.shape != (3,):
            raise ValueError("cell must have shape (3, 3) Å and pbc shape (3,)")

    @property
    def n_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])

    def _check(self, positions: torch.Tensor) -> None:
        if positions.dim() != 3 or positions.shape[1:] != (self.n_atoms, 3):
            raise ValueError(
                f"replica positions must have shape (n_replicas, {self.n_atoms}, 3), got {tuple(positions.shape)}"
            )

    def graph(self, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Edges ``(2, E)`` into the flattened ``(R * n_atoms, 3)`` positions and their cell shifts ``(E, 3)``."""
        self._check(positions)
        n_replicas, n_atoms = positions.shape[0], positions.shape[1]
        edges, shifts, offsets = [], [], []
        finite = torch.isfinite(positions).flatten(1).all(dim=1).tolist()
        for replica in range(n_replicas):
            if not finite[replica]:
                continue
            edge_index, cell_shifts = neighbor_pairs(positions[replica].detach(), self.cell, self.pbc, self.cutoff)
            edges.append(edge_index)
            shifts.append(cell_shifts)
            offsets.append(replica * n_atoms)
        if not edges:
            return (
                torch.zeros(2, 0, dtype=torch.long, device=self.device),
                torch.zeros(0, 3, dtype=self.dtype, device=self.device),
            )
        edge_index, cell_shifts, _ = concatenate_edges(edges, shifts, offsets)
        return edge_index, cell_shifts

    def energies(self, positions: torch.Tensor) -> torch.Tensor:
        """Potential energy of each replica, ``(R,)`` eV, for ``positions`` ``(R, n_atoms, 3)`` Å.

        Differentiable in the model's parameters and in ``positions`` (the Boltzmann estimator
        backpropagates a weighted sum of these to the parameters).
        """
        if self.compiled:
            raise TypeError("a compiled (.pt2) model gives energies and forces, not a graph to differentiate: "
                            "train with the TorchScript model file or the eager model")
        positions = positions.to(device=self.device, dtype=self.dtype)
        edge_index, cell_shifts = self.graph(positions)
        flat = positions.reshape(-1, 3)
        flat = torch.nan_to_num(flat)  # blown-up replicas have no edges; keep their atoms out of any NaN arithmetic
        vectors = edge_vectors(flat, self.cell, edge_index, cell_shifts)
        species = self.species.repeat(positions.shape[0])
        atom_energies = self.model.atom_energies(species, edge_index, vectors)
        return atom_energies.reshape(positions.shape[0], self.n_atoms).sum(dim=1)

    def energies_and_forces(self, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(energies (R,) eV, forces (R, n_atoms, 3) eV/Å)``, both detached, in the model's dtype."""
        if self.compiled:
            return self._compiled_energies_and_forces(positions)
        with torch.enable_grad():
            positions = positions.detach().to(device=self.device, dtype=self.dtype).requires_grad_(True)
            energies = self.energies(positions)
            (gradient,) = torch.autograd.grad(energies.sum(), [positions])
        return energies.detach(), -gradient.detach()

    def _compiled_energies_and_forces(self, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """:meth:`energies_and_forces` through a compiled file: every replica's pairs once (the first halves of
        :meth:`graph`'s mirrored edges) with their periodic offsets, in one call."""
        positions = positions.detach().to(device=self.device, dtype=self.dtype)
        edge_index, cell_shifts = self.graph(positions)
        if edge_index.shape[1] > 0 and not mirrored_halves(edge_index):
            raise RuntimeError("mlpot: the replicas' edges are not in mirrored halves, which a compiled model needs")
        half = edge_index.shape[1] // 2
        flat = torch.nan_to_num(positions.reshape(-1, 3))
        species = self.species.repeat(positions.shape[0])
        energies, forces, _ = self.model.run_graph(
            flat, species, edge_index[:, :half].contiguous(), (cell_shifts[:half] @ self.cell).contiguous()
        )
        n_replicas = positions.shape[0]
        return energies.reshape(n_replicas, self.n_atoms).sum(dim=1), forces.reshape(n_replicas, self.n_atoms, 3)

"""E(n)-equivariant graph neural network (Satorras, Hoogeboom & Welling, ICML 2021).

Each layer l computes, for an edge from neighbour j to centre i with vector r_ij (Å):

    m_ij   = f_cut(|r_ij^0|) * phi_e(h_i, h_j, |r_ij^l|^2 / r_c^2, a_ij)
    x_i   <- x_i + sum_j (x_i - x_j) phi_x(m_ij) / avg_num_neighbors      (optional coordinate update)
    h_i   <- h_i + phi_h(h_i, sum_j m_ij / avg_num_neighbors)

Messages depend only on invariants (squared distances and the Bessel expansion a_ij of the input
distance), so the per-atom energy read out from h is E(3)-invariant. Coordinates are tracked as
per-atom displacements added to the input edge vectors, which keeps periodic images consistent.
f_cut (a polynomial envelope) makes every message vanish smoothly at the cutoff.

With ``edge_chunk_size`` > 0 each layer takes the edges that many at a time on a CPU, which keeps large
systems' per-edge tensors in cache (``chunking.py``); the results are the same.
"""

from typing import Final, List, Tuple

import torch
from torch import nn

from mlpot.models import chunking
from mlpot.models.radial import BesselBasis, PolynomialCutoff


def _mlp(sizes: list, final_activation: bool = False) -> nn.Sequential:
    layers: list = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2 or final_activation:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class EGNNLayer(nn.Module):
    edge_chunk_size: Final[int]

    def __init__(
        self,
        hidden: int,
        num_basis: int,
        cutoff: float,
        avg_num_neighbors: float,
        update_coords: bool,
        edge_chunk_size: int = 0,
    ):
        super().__init__()
        self.edge_chunk_size = edge_chunk_size
        self.inverse_cutoff_squared = 1.0 / (cutoff * cutoff)
        self.inverse_avg_neighbors = 1.0 / avg_num_neighbors
        self.update_coords = update_coords
        self.edge_mlp = _mlp([2 * hidden + 1 + num_basis, hidden, hidden], final_activation=True)
        self.node_mlp = _mlp([2 * hidden, hidden, hidden])
        self.coord_mlp = _mlp([hidden, hidden, 1])

    def forward(
        self,
        features: torch.Tensor,
        displacements: torch.Tensor,
        edge_index: torch.Tensor,
        input_vectors: torch.Tensor,
        radial_features: torch.Tensor,
        cutoff_weights: torch.Tensor,
    ):
        if self.edge_chunk_size > 0:  # a compile-time constant: the other path is not in the compiled graph
            return self.forward_in_chunks(
                features, displacements, edge_index, input_vectors, radial_features, cutoff_weights
            )
        centre = edge_index[0]
        messages, vectors = self.edge_messages(
            self.node_terms(features), displacements, edge_index, input_vectors, radial_features, cutoff_weights
        )
        aggregated = torch.zeros_like(features).index_add_(0, centre, messages) * self.inverse_avg_neighbors
        features = features + self.node_mlp(torch.cat([features, aggregated], dim=1))
        if self.update_coords:
            terms = self.coordinate_terms(messages, vectors, cutoff_weights)
            shift = torch.zeros_like(displacements).index_add_(0, centre, terms)
            displacements = displacements + shift * self.inverse_avg_neighbors
        return features, displacements

    def forward_in_chunks(
        self,
        features: torch.Tensor,
        displacements: torch.Tensor,
        edge_index: torch.Tensor,
        input_vectors: torch.Tensor,
        radial_features: torch.Tensor,
        cutoff_weights: torch.Tensor,
    ):
        """``forward`` with the edges taken ``edge_chunk_size`` at a time on a CPU (see ``chunking.py``)."""
        node_terms = self.node_terms(features)
        aggregated, shift = torch.zeros_like(features), torch.zeros_like(displacements)
        for start, end in chunking.edge_chunks(edge_index.shape[1], self.edge_chunk_size, features.device):
            centre = edge_index[0, start:end]
            cutoff = cutoff_weights[start:end]
            messages, vectors = self.edge_messages(
                node_terms, displacements, edge_index[:, start:end], input_vectors[start:end],
                radial_features[start:end], cutoff,
            )
            aggregated.index_add_(0, centre, messages)
            if self.update_coords:
                shift.index_add_(0, centre, self.coordinate_terms(messages, vectors, cutoff))
        features = features + self.node_mlp(torch.cat([features, aggregated * self.inverse_avg_neighbors], dim=1))
        if self.update_coords:
            displacements = displacements + shift * self.inverse_avg_neighbors
        return features, displacements

    def coordinate_terms(self, messages: torch.Tensor, vectors: torch.Tensor, cutoff_weights: torch.Tensor):
        """``(x_i - x_j) phi_x(m_ij)`` per edge: x_i - x_j = -r_ij; tanh keeps the update bounded, the cutoff
        weight keeps it smooth."""
        return -vectors * (torch.tanh(self.coord_mlp(messages)) * cutoff_weights)

    def node_terms(self, features: torch.Tensor) -> torch.Tensor:
        """``[W_c h, W_n h]``, ``(n_atoms, 2 hidden)``: the per-atom parts of phi_e's first linear layer."""
        weight = self.edge_mlp[0].weight  # (out, 2 hidden + 1 + num_basis)
        hidden = features.shape[1]
        return features @ torch.cat([weight[:, :hidden].t(), weight[:, hidden : 2 * hidden].t()], dim=1)

    def edge_messages(
        self,
        node_terms: torch.Tensor,
        displacements: torch.Tensor,
        edge_index: torch.Tensor,
        input_vectors: torch.Tensor,
        radial_features: torch.Tensor,
        cutoff_weights: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``m_ij = f_cut * phi_e(h_i, h_j, |r_ij|^2 / r_c^2, a_ij)``, ``(n_edges, hidden)``, and the current edge
        vectors r_ij, ``(n_edges, 3)`` Å.

        The first linear layer of phi_e is split by its input blocks, ``W [h_i, h_j, e_ij] =
        W_c h_i + W_n h_j + W_e e_ij``: ``W_c h`` and ``W_n h`` (``node_terms``) are computed once per atom and
        gathered onto the edges, so no ``(n_edges, 2 hidden + ...)`` input is ever built. Same weights, same
        function.
        """
        centre, neighbour = edge_index[0], edge_index[1]
        vectors = input_vectors + displacements.index_select(0, neighbour) - displacements.index_select(0, centre)
        squared = (vectors * vectors).sum(dim=1, keepdim=True) * self.inverse_cutoff_squared
        first = self.edge_mlp[0]
        out = first.weight.shape[0]
        # the edge attributes are the columns after [h_i, h_j], and h has phi_e's output width
        edge_terms = torch.nn.functional.linear(torch.cat([squared, radial_features], dim=1),
                                                first.weight[:, 2 * out :], first.bias)
        x = node_terms[:, :out].index_select(0, centre) + node_terms[:, out:].index_select(0, neighbour) + edge_terms
        for k, module in enumerate(self.edge_mlp):
            if k > 0:  # the rest of phi_e after its first linear layer
                x = module(x)
        return x * cutoff_weights, vectors


class EGNN(nn.Module):
    """EGNN representation: ``(species, edge_index, edge_vectors) -> one scalar per atom``.

    Args:
        num_species: number of elements the model knows.
        cutoff: Å.
        hidden: width of node features and MLPs.
        num_layers: message-passing layers.
        num_basis: Bessel functions encoding the input distance (edge attribute a_ij).
        avg_num_neighbors: normalisation of the sums over neighbours.
        update_coords: apply the equivariant coordinate update of the paper.
        edge_chunk_size: 0 (off), or edges per chunk on a CPU, about ``2**19 // hidden`` (``chunking.py``). Speed
            only, not results: thousands of atoms at ``hidden`` 128 get 2× faster, small systems ~10 % slower.
    """

    def __init__(
        self,
        num_species: int,
        cutoff: float,
        hidden: int = 64,
        num_layers: int = 4,
        num_basis: int = 8,
        avg_num_neighbors: float = 10.0,
        update_coords: bool = True,
        polynomial_p: int = 6,
        edge_chunk_size: int = 0,
    ):
        super().__init__()
        if edge_chunk_size < 0:
            raise ValueError(f"edge_chunk_size must be 0 (off) or a number of edges, got {edge_chunk_size}")
        self.embedding = nn.Embedding(num_species, hidden)
        self.basis = BesselBasis(cutoff, num_basis)
        self.cutoff_fn = PolynomialCutoff(cutoff, polynomial_p)
        self.layers = nn.ModuleList(
            [
                EGNNLayer(hidden, num_basis, cutoff, avg_num_neighbors, update_coords, edge_chunk_size)
                for _ in range(num_layers)
            ]
        )
        self.readout = _mlp([hidden, hidden, 1])

    def forward(self, species: torch.Tensor, edge_index: torch.Tensor, edge_vectors: torch.Tensor) -> torch.Tensor:
        distances = torch.linalg.norm(edge_vectors, dim=1)
        radial_features = self.basis(distances)
        cutoff_weights = self.cutoff_fn(distances).unsqueeze(-1)
        features = self.embedding(species).to(edge_vectors.dtype)
        displacements = torch.zeros(species.shape[0], 3, dtype=edge_vectors.dtype, device=edge_vectors.device)
        for layer in self.layers:
            features, displacements = layer(
                features, displacements, edge_index, edge_vectors, radial_features, cutoff_weights
            )
        return self.readout(features).squeeze(-1)

    # ---- layer by layer, for engines that exchange node states between layers (LAMMPS over MPI ranks)
    @torch.jit.export
    def state_widths(self) -> List[int]:
        """Columns of the node state (features, then the 3 coordinate displacements, Å) before the first layer
        and after each layer (:meth:`layer_state`)."""
        return [self.embedding.embedding_dim + 3] * (len(self.layers) + 1)

    @torch.jit.export
    def layer_state(self, layer: int, state: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                    edge_vectors: torch.Tensor) -> torch.Tensor:
        """The node state after layer ``layer`` (0-based) from the state before it; ``layer`` -1: the first state
        (embedding, zero displacements; ``state`` unused). Composing -1, 0, ..., num_layers - 1 and
        :meth:`state_scalars` gives :meth:`forward` on the same graph."""
        if layer < 0:
            features = self.embedding(species).to(edge_vectors.dtype)
            zeros = torch.zeros(species.shape[0], 3, dtype=edge_vectors.dtype, device=edge_vectors.device)
            return torch.cat([features, zeros], dim=1)
        hidden = self.embedding.embedding_dim
        features, displacements = state[:, :hidden], state[:, hidden:]
        distances = torch.linalg.norm(edge_vectors, dim=1)
        radial_features = self.basis(distances)
        cutoff_weights = self.cutoff_fn(distances).unsqueeze(-1)
        for index, block in enumerate(self.layers):
            if index == layer:
                features, displacements = block(
                    features, displacements, edge_index, edge_vectors, radial_features, cutoff_weights
                )
                return torch.cat([features, displacements], dim=1)
        raise ValueError("mlpot: no such layer")

    @torch.jit.export
    def state_scalars(self, state: torch.Tensor) -> torch.Tensor:
        """One scalar per node from the state after the last layer (the readout of :meth:`forward`)."""
        return self.readout(state[:, : self.embedding.embedding_dim]).squeeze(-1)

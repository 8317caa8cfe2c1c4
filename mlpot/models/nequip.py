"""NequIP-style tensor-field network on e3nn (Batzner et al., Nat. Commun. 2022).

Node features are e3nn irreps, e.g. ``32x0e + 32x1o`` (lmax 1, natural parity) or with
``parity=True`` every parity ``32x0e + 32x0o + 32x1o + 32x1e``. One interaction layer:

    self-connection   sc_i = FCTP(h_i, one_hot(species_i))
    convolution       c_i  = Linear( sum_j  TP_w(|r_ij|)( Linear(h)_j , Y(r_ij/|r_ij|) ) / sqrt(avg_num_neighbors) )
    gate              h_i <- Gate(c_i + sc_i)  (+ h_i when the irreps match: residual)

where Y are spherical harmonics up to ``lmax`` and the tensor-product weights w come from an MLP
of a Bessel expansion of |r_ij| times a polynomial cutoff envelope (so messages vanish smoothly at
the cutoff). A linear readout of the scalars gives one number per atom.

With ``prune_irreps`` (NequIP's own layout, the presets' choice) a layer carries only the irreps its
input can reach through the spherical harmonics (the first layer, fed scalars, makes no 0o or 1e),
and the last layer makes only the scalars the readout uses. That removes work, not expressivity:
the dropped channels are identically zero or never read. Without it every layer carries every
irreps of ``hidden_irreps`` (models made before the option existed).
"""

from typing import List

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from e3nn.util.jit import compile_mode
from torch import nn

from mlpot.models import convolution, gating, linear, mlp, self_connection
from mlpot.models.radial import BesselBasis, PolynomialCutoff
from mlpot.neighbors import mirrored_halves


def hidden_irreps(num_features: int, lmax: int, parity: bool) -> o3.Irreps:
    """``num_features`` channels of every l <= lmax; both parities when ``parity`` else (-1)^l only."""
    irreps = []
    for l in range(lmax + 1):  # noqa: E741  (l: the angular momentum, as in e3nn)
        natural = (-1) ** l
        irreps.append((num_features, (l, natural)))
        if parity:
            irreps.append((num_features, (l, -natural)))
    return o3.Irreps(irreps)


def reachable_irreps(target: o3.Irreps, irreps_in: o3.Irreps, irreps_sh: o3.Irreps) -> o3.Irreps:
    """The part of ``target`` that a convolution of ``irreps_in`` features with ``irreps_sh`` can produce."""
    products = {ir_out for _, ir_in in irreps_in for _, ir_sh in irreps_sh for ir_out in ir_in * ir_sh}
    return o3.Irreps([(mul, ir) for mul, ir in target if ir in products])


@compile_mode("script")
class InteractionBlock(nn.Module):
    """One NequIP convolution + self-connection + gate, with residual when shapes allow."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_target: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_species: o3.Irreps,
        num_basis: int,
        radial_width: int,
        radial_depth: int,
        avg_num_neighbors: float,
    ):
        super().__init__()
        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_target if ir.l == 0]).simplify()
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_target if ir.l > 0]).simplify()
        gates = o3.Irreps([(mul, "0e") for mul, _ in gated]).simplify()
        self.gate = Gate(
            scalars,
            [torch.nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars],
            gates,
            [torch.sigmoid for _ in gates],
            gated,
        )
        self.scalar_gate = gating.ScalarGate(self.gate) if gating.supports(self.gate) else None
        irreps_pre_gate = self.gate.irreps_in

        self.linear_up = o3.Linear(irreps_in, irreps_in)
        self.linear_up_matrix = linear.DenseLinear(self.linear_up) if linear.supports(self.linear_up) else None
        mid: List[tuple] = []
        instructions: List[tuple] = []
        for i_in, (mul, ir_in) in enumerate(irreps_in):
            for i_sh, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in irreps_pre_gate:
                        instructions.append((i_in, i_sh, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        irreps_mid = o3.Irreps(mid)
        irreps_mid_sorted, permutation, _ = irreps_mid.sort()
        instructions = [
            (i_in, i_sh, permutation[i_out], mode, train) for i_in, i_sh, i_out, mode, train in instructions
        ]
        self.tensor_product = o3.TensorProduct(
            irreps_in, irreps_sh, irreps_mid_sorted, instructions, shared_weights=False, internal_weights=False
        )
        # the same arithmetic without e3nn's generic contractions where l <= 1 (see convolution.py)
        self.l1_convolution = (
            convolution.L1Convolution(self.tensor_product) if convolution.supports(self.tensor_product) else None
        )
        self.radial_mlp = FullyConnectedNet(
            [num_basis] + [radial_width] * radial_depth + [self.tensor_product.weight_numel], torch.nn.functional.silu
        )
        self.folded_radial_mlp = mlp.FoldedMLP(self.radial_mlp)
        self.linear_down = o3.Linear(irreps_mid_sorted.simplify(), irreps_pre_gate)
        self.inverse_sqrt_neighbors = avg_num_neighbors ** -0.5
        # the neighbour-sum normalisation folded into linear_down's matrix
        self.linear_down_matrix = (
            linear.DenseLinear(self.linear_down, scale=self.inverse_sqrt_neighbors)
            if linear.supports(self.linear_down) else None
        )
        self.self_connection = o3.FullyConnectedTensorProduct(irreps_in, irreps_species, irreps_pre_gate)
        self.scalar_self_connection = (
            self_connection.ScalarTensorProduct(self.self_connection)
            if self_connection.supports(self.self_connection) else None
        )
        self.residual = irreps_in == self.gate.irreps_out
        self.irreps_out = self.gate.irreps_out

    def forward(
        self,
        features: torch.Tensor,
        one_hot: torch.Tensor,
        edge_index: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_basis: torch.Tensor,
        mirrored: bool,
    ) -> torch.Tensor:
        """``edge_basis`` has one row per edge, or with ``mirrored`` one per pair (edge k + h = edge k reversed)."""
        weights = self.radial_weights(edge_basis)
        if mirrored:
            weights = torch.cat([weights, weights])
        aggregated = self.convolve(self.mix_up(features), edge_index, edge_sh, weights)
        convolved = self.mix_down(aggregated)
        updated = self.activate(convolved + self.connect_self(features, one_hot))
        if self.residual:
            updated = updated + features
        return updated

    def radial_weights(self, edge_basis: torch.Tensor) -> torch.Tensor:
        """The tensor-product weights ``(rows of edge_basis, weight_numel)`` from ``radial_mlp``; for the fast
        convolution with its path constants folded in."""
        layer_weights: List[torch.Tensor] = []
        for layer in self.radial_mlp:
            layer_weights.append(layer.weight)
        l1_convolution = self.l1_convolution
        path_constants = l1_convolution.weight_scale if l1_convolution is not None else None
        return self.folded_radial_mlp(edge_basis, layer_weights, path_constants)

    def mix_up(self, features: torch.Tensor) -> torch.Tensor:
        """``linear_up`` (as one matrix product when it is small enough)."""
        dense = self.linear_up_matrix
        if dense is not None:
            return dense(features, self.linear_up.weight)
        return self.linear_up(features)

    def mix_down(self, aggregated: torch.Tensor) -> torch.Tensor:
        """``linear_down`` of the neighbour sum over sqrt(avg_num_neighbors) (one matrix product when small)."""
        dense = self.linear_down_matrix
        if dense is not None:
            return dense(aggregated, self.linear_down.weight)
        return self.linear_down(aggregated * self.inverse_sqrt_neighbors)

    def activate(self, features: torch.Tensor) -> torch.Tensor:
        """The gate nonlinearity (the fast form when it applies)."""
        scalar_gate = self.scalar_gate
        if scalar_gate is not None:
            return scalar_gate(features)
        return self.gate(features)

    def connect_self(self, features: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        """The self-connection ``FCTP(h_i, one_hot(species_i))`` (the fast form when it applies)."""
        scalar_self_connection = self.scalar_self_connection
        if scalar_self_connection is not None:
            return scalar_self_connection(features, one_hot, self.self_connection.weight)
        return self.self_connection(features, one_hot)

    def convolve(
        self, features: torch.Tensor, edge_index: torch.Tensor, edge_sh: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """``sum_j TP_w(x_j, Y(r_ij))`` onto each centre atom, ``(n_atoms, irreps_mid.dim)``."""
        l1_convolution = self.l1_convolution
        if l1_convolution is not None:
            return l1_convolution(features, edge_index, edge_sh, weights)
        messages = self.tensor_product(features.index_select(0, edge_index[1]), edge_sh, weights)
        return torch.zeros(
            features.shape[0], messages.shape[1], dtype=messages.dtype, device=messages.device
        ).index_add_(0, edge_index[0], messages)


@compile_mode("script")
class NequIP(nn.Module):
    """NequIP representation: ``(species, edge_index, edge_vectors) -> one scalar per atom``.

    Args:
        num_species: number of elements the model knows.
        cutoff: Å.
        num_features: channels per irrep.
        lmax: highest angular momentum of features and spherical harmonics.
        parity: carry both parities of every l (as NequIP's ``parity: true``), else (-1)^l only.
        num_layers: interaction layers.
        num_basis: Bessel functions; ``polynomial_p``: envelope exponent.
        radial_width, radial_depth: MLP making tensor-product weights from the radial basis.
        avg_num_neighbors: normalisation of the neighbour sum.
        prune_irreps: NequIP's layout (see the module docstring); False for models made before it.
    """

    def __init__(
        self,
        num_species: int,
        cutoff: float,
        num_features: int = 32,
        lmax: int = 1,
        parity: bool = False,
        num_layers: int = 3,
        num_basis: int = 8,
        polynomial_p: int = 6,
        radial_width: int = 64,
        radial_depth: int = 2,
        avg_num_neighbors: float = 10.0,
        prune_irreps: bool = False,
    ):
        super().__init__()
        self.num_species = num_species
        irreps_species = o3.Irreps(f"{num_species}x0e")
        irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.spherical_harmonics = o3.SphericalHarmonics(irreps_sh, normalize=True, normalization="component")
        self.basis = BesselBasis(cutoff, num_basis)
        self.cutoff_fn = PolynomialCutoff(cutoff, polynomial_p)
        self.embedding = o3.Linear(irreps_species, o3.Irreps(f"{num_features}x0e"))
        self.embedding_matrix = linear.DenseLinear(self.embedding)
        hidden = hidden_irreps(num_features, lmax, parity)
        scalars = o3.Irreps(f"{num_features}x0e")
        irreps = scalars
        blocks = []
        for index in range(num_layers):
            target = hidden
            if prune_irreps:
                target = scalars if index == num_layers - 1 else reachable_irreps(hidden, irreps, irreps_sh)
            block = InteractionBlock(
                irreps, target, irreps_sh, irreps_species, num_basis, radial_width, radial_depth, avg_num_neighbors
            )
            blocks.append(block)
            irreps = block.irreps_out
        self.layers = nn.ModuleList(blocks)
        self.layer_widths: List[int] = [num_features] + [block.irreps_out.dim for block in blocks]
        self.readout_hidden = o3.Linear(irreps, o3.Irreps(f"{max(num_features // 2, 1)}x0e"))
        self.readout = o3.Linear(o3.Irreps(f"{max(num_features // 2, 1)}x0e"), o3.Irreps("1x0e"))
        # the embedding and the last readout map scalars to scalars, which DenseLinear always computes; the first
        # readout reads every irreps of an unpruned last layer, which may be too large a matrix to pay
        self.readout_hidden_matrix = (
            linear.DenseLinear(self.readout_hidden) if linear.supports(self.readout_hidden) else None
        )
        self.readout_matrix = linear.DenseLinear(self.readout)

    def forward(self, species: torch.Tensor, edge_index: torch.Tensor, edge_vectors: torch.Tensor) -> torch.Tensor:
        # the radial weights depend only on |r_ij|: once per pair when the edges come in mirrored halves
        return self.atom_scalars(species, edge_index, edge_vectors, mirrored_halves(edge_index))

    def atom_scalars(
        self, species: torch.Tensor, edge_index: torch.Tensor, edge_vectors: torch.Tensor, mirrored: bool
    ) -> torch.Tensor:
        """:meth:`forward` told whether the edges come in mirrored halves (edge k + h = edge k reversed), as a
        compiled graph with its own neighbour list is, which cannot test it (``mlpot.compiled``)."""
        one_hot = torch.nn.functional.one_hot(species, self.num_species).to(edge_vectors.dtype)
        edge_sh = self.spherical_harmonics(edge_vectors)
        pair_vectors = edge_vectors[: edge_index.shape[1] // 2] if mirrored else edge_vectors
        distances = torch.linalg.norm(pair_vectors, dim=1)
        edge_basis = self.basis(distances) * self.cutoff_fn(distances).unsqueeze(-1)
        features = self.embedding_matrix(one_hot, self.embedding.weight)
        for layer in self.layers:
            features = layer(features, one_hot, edge_index, edge_sh, edge_basis, mirrored)
        return self.readout_matrix(self.read_out_hidden(features), self.readout.weight).squeeze(-1)

    # ---- layer by layer, for engines that exchange node states between layers (LAMMPS over MPI ranks)
    @torch.jit.export
    def state_widths(self) -> List[int]:
        """Columns of the node state before the first layer and after each layer (:meth:`layer_state`)."""
        return self.layer_widths

    @torch.jit.export
    def layer_state(self, layer: int, state: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                    edge_vectors: torch.Tensor) -> torch.Tensor:
        """The node state after layer ``layer`` (0-based) from the state before it; ``layer`` -1: the first state
        (the species embedding; ``state`` unused). Directed edges, no mirrored halves: composing -1, 0, ...,
        num_layers - 1 and :meth:`state_scalars` gives :meth:`forward` on the same graph."""
        one_hot = torch.nn.functional.one_hot(species, self.num_species).to(edge_vectors.dtype)
        if layer < 0:
            return self.embedding_matrix(one_hot, self.embedding.weight)
        edge_sh = self.spherical_harmonics(edge_vectors)
        distances = torch.linalg.norm(edge_vectors, dim=1)
        edge_basis = self.basis(distances) * self.cutoff_fn(distances).unsqueeze(-1)
        for index, block in enumerate(self.layers):
            if index == layer:
                return block(state, one_hot, edge_index, edge_sh, edge_basis, False)
        raise ValueError("mlpot: no such layer")

    @torch.jit.export
    def state_scalars(self, state: torch.Tensor) -> torch.Tensor:
        """One scalar per node from the state after the last layer (the readout of :meth:`forward`)."""
        return self.readout_matrix(self.read_out_hidden(state), self.readout.weight).squeeze(-1)

    def read_out_hidden(self, features: torch.Tensor) -> torch.Tensor:
        """``readout_hidden`` (as one matrix product when it is small enough)."""
        dense = self.readout_hidden_matrix
        if dense is not None:
            return dense(features, self.readout_hidden.weight)
        return self.readout_hidden(features)

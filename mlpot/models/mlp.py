"""Fast radial network: e3nn's ``FullyConnectedNet`` with its constants folded into its matrices.

e3nn's network (NequIP's radial MLP) computes, layer by layer,

    x <- c_act * act(x @ (W / sqrt(h_in var_in))) * sqrt(var_out)      (hidden layers)
    x <- x @ (W / sqrt(h_in var_in / var_out))                        (last layer)

with ``c_act`` the constant that normalises the activation's second moment. Every one of those
constants is a scalar on a matrix or on the next layer's input, so the network equals

    x <- act(x @ M_k)  ...  x @ M_last,   M_k = f_k W_k

with one factor ``f_k`` per matrix (``c_act sqrt(var_out)`` of the layer before moves into it). An optional
per-column ``output_scale`` goes into ``M_last``: the fast convolution's path constants
(:class:`mlpot.models.convolution.L1Convolution`) cost one product on the weight matrix instead of one
on every edge. :class:`FoldedMLP` uses the e3nn network's own weights, so checkpoints do not depend on
which one ran, and a test compares their numbers. With ``constant_weights`` (set only on deployed copies,
see :func:`mlpot.models.for_inference`) the matrices are built once and reused.
"""

from typing import List, Optional

import torch
from e3nn.nn import FullyConnectedNet
from e3nn.util.jit import compile_mode

from mlpot.models.linear import cache_is_stale


def supports(network: FullyConnectedNet) -> bool:
    """Whether :class:`FoldedMLP` can compute ``network``: silu on every hidden layer, none on the output."""
    layers = list(network)
    hidden_silu = all(
        layer.act is not None and getattr(layer.act, "f", None) is torch.nn.functional.silu for layer in layers[:-1]
    )
    return len(layers) > 0 and hidden_silu and layers[-1].act is None


@compile_mode("script")
class FoldedMLP(torch.nn.Module):
    """``network(x) * output_scale`` for ``x`` of shape ``(n, hs[0])``, given the network's layer weights
    (in order) at call time."""

    factors: List[float]  # per layer: the scalar on its weight matrix
    matrix_cache: List[torch.Tensor]  # with constant_weights: the matrices, built on the first call

    def __init__(self, network: FullyConnectedNet):
        super().__init__()
        if not supports(network):
            raise ValueError(f"FoldedMLP computes silu networks without an output activation, not {network}")
        layers = list(network)
        factors = []
        carried = 1.0  # the previous hidden layer's output constant, moved into this layer's matrix
        for layer in layers[:-1]:
            factors.append(carried / (layer.h_in * layer.var_in) ** 0.5)
            activation_constant = 1.0 if layer.act._is_id else layer.act.cst
            carried = activation_constant * layer.var_out**0.5
        last = layers[-1]
        factors.append(carried / (last.h_in * last.var_in / last.var_out) ** 0.5)
        self.factors = factors
        self.constant_weights = False
        self.matrix_cache = []

    def matrices(self, weights: List[torch.Tensor], output_scale: Optional[torch.Tensor]) -> List[torch.Tensor]:
        """The folded matrices ``M_k`` from the network's weights ``W_k`` ``(h_in, h_out)``."""
        matrices: List[torch.Tensor] = []
        for weight, factor in zip(weights, self.factors):
            matrices.append(weight * factor)
        if output_scale is not None:
            matrices[-1] = matrices[-1] * output_scale
        return matrices

    def forward(
        self, x: torch.Tensor, weights: List[torch.Tensor], output_scale: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``(n, hs[-1])`` from ``x`` ``(n, hs[0])``; ``output_scale`` ``(hs[-1],)`` multiplies the outputs."""
        if self.constant_weights:
            cache = self.matrix_cache
            if len(cache) == 0 or cache_is_stale(cache[0], weights[0]):
                cache = [matrix.detach() for matrix in self.matrices(weights, output_scale)]
                self.matrix_cache = cache
            matrices = cache
        else:
            matrices = self.matrices(weights, output_scale)
        last = len(matrices) - 1
        for k, matrix in enumerate(matrices):
            x = x @ matrix
            if k < last:
                x = torch.nn.functional.silu(x)
        return x

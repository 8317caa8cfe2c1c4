"""Fast equivariant linear map: e3nn's ``o3.Linear`` as one matrix product.

An ``o3.Linear`` mixes the channels of each irrep type:

    out[w, m] (block i_out) = sum_paths  alpha * sum_u W[u, w] x[u, m] (block i_in)

which in e3nn's flat layout (channel-major, the 2l + 1 components inner) is ``x @ M`` with a sparse
``(irreps_in.dim, irreps_out.dim)`` matrix ``M``: block (i_in, i_out) of every path is
``alpha * kron(W, I_{2l+1})`` and everything else is zero. e3nn evaluates the paths one by one with
reshapes and einsums, a dozen small operations and their gradients per call; on a CPU at peptide size
those dominate. :class:`DenseLinear` assembles ``M`` from the e3nn module's own weight with one
gather (a fixed int32 table says which alpha-scaled weight, or zero, is each entry of ``M``) and
applies it with one matrix product. Checkpoints are unchanged (it owns no parameters; a deployed file
carries the table), and a test compares its numbers with e3nn's. With ``constant_weights`` (set only on
deployed copies, see :func:`mlpot.models.for_inference`) ``M`` is built on the first call and reused.
Matrices above ``MAX_MATRIX_ENTRIES`` (large irreps, lmax 2+) are left to e3nn: there the dense product
wastes more arithmetic than the saved operations are worth.
"""

import torch
from e3nn import o3
from e3nn.util.jit import compile_mode

# the largest matrix DenseLinear builds (entries): its index table then takes 1 MiB; every lmax 1 layer of the
# presets fits (at most 184k), larger irreps keep e3nn's per-path evaluation, where a dense matrix stops paying
MAX_MATRIX_ENTRIES = 1 << 18


def cache_is_stale(cache: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a matrix cached from ``weight`` must be built again: never built (empty), or ``weight`` has since
    moved to another device or dtype. The one rule of every ``constant_weights`` cache."""
    return cache.numel() == 0 or cache.device != weight.device or cache.dtype != weight.dtype


def supports(linear: o3.Linear) -> bool:
    """Whether :class:`DenseLinear` can replace ``linear``: internal shared weights, no biases, and a matrix of
    at most ``MAX_MATRIX_ENTRIES`` entries."""
    small = linear.irreps_in.dim * linear.irreps_out.dim <= MAX_MATRIX_ENTRIES
    return (small or _is_scalar_matrix(linear)) and linear.internal_weights and linear.shared_weights \
        and linear.bias_numel == 0


def _is_scalar_matrix(linear: o3.Linear) -> bool:
    """Whether ``linear`` maps one block of scalars to one block of scalars: its weight already is ``M``."""
    return len(linear.instructions) == 1 and len(linear.irreps_in) == 1 and len(linear.irreps_out) == 1 \
        and linear.irreps_in[0].ir.l == 0


@compile_mode("script")
class DenseLinear(torch.nn.Module):
    """``scale * o3.Linear(x)`` for ``x`` of shape ``(n, irreps_in.dim)``, given the e3nn module's weight
    at call time (``scale`` folds a constant factor on the input or output into the matrix)."""

    def __init__(self, linear: o3.Linear, scale: float = 1.0):
        super().__init__()
        if not supports(linear):
            raise ValueError(f"DenseLinear cannot compute {linear}")
        dim_in, dim_out = linear.irreps_in.dim, linear.irreps_out.dim
        self.dim_in = dim_in
        self.dim_out = dim_out
        self.scale = float(scale)
        # scalars to scalars: M is the weight times one constant, no table needed
        self.scalar_matrix = _is_scalar_matrix(linear)
        self.scalar_alpha = linear.instructions[0].path_weight * self.scale if self.scalar_matrix else 0.0
        self.constant_weights = False
        # with constant_weights: M, built on the first call (empty until then)
        self.register_buffer("matrix_cache", torch.zeros(0), persistent=False)
        if self.scalar_matrix:
            self.register_buffer("weight_index", torch.zeros(0, dtype=torch.int32), persistent=False)
            self.register_buffer("alpha", torch.zeros(0), persistent=False)
            return
        # weight_index[a, b]: which entry of [alpha * weight, 0] is M[a, b] (the appended zero where M is zero);
        # int32, so a deployed file carries 4 bytes per matrix entry
        weight_numel = sum(instruction.path_shape[0] * instruction.path_shape[1] for instruction in linear.instructions)
        weight_index = torch.full((dim_in, dim_out), weight_numel, dtype=torch.long)
        weight_alpha = torch.zeros(weight_numel, dtype=torch.float64)
        offset = 0
        for instruction in linear.instructions:
            mul_in, ir = linear.irreps_in[instruction.i_in]
            mul_out, _ = linear.irreps_out[instruction.i_out]
            start_in = linear.irreps_in[: instruction.i_in].dim
            start_out = linear.irreps_out[: instruction.i_out].dim
            path_index = torch.arange(offset, offset + mul_in * mul_out).reshape(mul_in, mul_out)
            identity = torch.eye(ir.dim, dtype=torch.bool)
            block = torch.where(torch.kron(torch.ones(mul_in, mul_out, dtype=torch.bool), identity),
                                torch.kron(path_index, torch.ones(ir.dim, ir.dim, dtype=torch.long)), weight_numel)
            rows = slice(start_in, start_in + mul_in * ir.dim)
            columns = slice(start_out, start_out + mul_out * ir.dim)
            if bool((weight_index[rows, columns] != weight_numel).any()):
                raise ValueError("DenseLinear needs at most one path per pair of irreps blocks")
            weight_index[rows, columns] = block
            weight_alpha[offset : offset + mul_in * mul_out] = instruction.path_weight * scale
            offset += mul_in * mul_out
        self.register_buffer("weight_index", weight_index.flatten().to(torch.int32), persistent=False)
        self.register_buffer("alpha", weight_alpha.to(torch.get_default_dtype()), persistent=False)

    def forward(self, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``(n, irreps_out.dim)`` from ``(n, irreps_in.dim)`` and the e3nn module's flat ``weight``."""
        if self.constant_weights:
            cache = self.matrix_cache
            if cache_is_stale(cache, weight):
                cache = self.matrix(weight).detach()
                self.matrix_cache = cache
            return features @ cache
        return features @ self.matrix(weight)

    def matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """``M``, ``(irreps_in.dim, irreps_out.dim)``, from the e3nn module's flat ``weight``."""
        if weight.shape[0] == 0:
            return weight.new_zeros(self.dim_in, self.dim_out)
        if self.scalar_matrix:
            return weight.reshape(self.dim_in, self.dim_out) * self.scalar_alpha
        scaled = torch.cat([weight * self.alpha, weight.new_zeros(1)])
        return scaled.index_select(0, self.weight_index).reshape(self.dim_in, self.dim_out)

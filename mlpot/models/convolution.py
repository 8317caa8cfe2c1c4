"""Fast NequIP convolution for features and spherical harmonics up to l = 1.

The convolution of one interaction layer is

    c_i = sum_j  TP_w(r_ij)( x_j , Y(r_ij) )        (e3nn ``TensorProduct``, "uvu" paths, per-edge weights)

With l <= 1 every path of that tensor product is one of five elementary operations on a channel's
scalar s or vector v and the unit bond direction n (e3nn's component-normalised Y_0 = 1 and
Y_1 = sqrt(3) n):

    (0 x 0 -> 0)  s        (0 x 1 -> 1)  s Y_1     (1 x 0 -> 1)  v
    (1 x 1 -> 0)  v . Y_1  (1 x 1 -> 1)  v x Y_1

each times the edge's weight for that channel and a constant (e3nn's Wigner-3j coefficient times
its path normalisation). e3nn computes them through generic Wigner-3j contractions on slices of one
wide tensor, which on a CPU spends most of its time allocating and zero-filling slice gradients.
:class:`L1Convolution` does the same arithmetic per path on channels-last blocks ``(n, 2l+1, mul)``
(so the products broadcast over the contiguous channel axis) and sums the messages onto the centre atoms
path by path. It expects edge weights that already carry every path's constant (``weight_scale``): the
network that makes them folds it into its last matrix (:class:`mlpot.models.mlp.FoldedMLP`).

It reads its paths and constants from the e3nn ``TensorProduct`` it replaces and gives the same
numbers (a test compares them), in e3nn's output layout, so model weights do not depend on which
one ran.
"""

from typing import List, Tuple

import torch
from e3nn import o3
from e3nn.util.jit import compile_mode

# elementary operation of each path, by (l_in, l_sh, l_out): "scale" x * w, "along-bond" x * w * Y_1,
# "dot" (x . Y_1) * w, "cross" (x x Y_1) * w
_OPERATION = {(0, 0, 0): "scale", (1, 0, 1): "scale", (0, 1, 1): "along-bond", (1, 1, 0): "dot", (1, 1, 1): "cross"}


def _unit_coefficients(ls: tuple) -> torch.Tensor:
    """The coupling tensor (l_in, l_sh, l_out) of each operation up to one constant: delta or Levi-Civita."""
    eye = torch.eye(3)
    if ls == (1, 1, 1):
        epsilon = torch.zeros(3, 3, 3)
        for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
            epsilon[i, j, k] = 1.0
            epsilon[i, k, j] = -1.0
        return epsilon
    shapes = {(0, 0, 0): (1, 1, 1), (1, 0, 1): (3, 1, 3), (0, 1, 1): (1, 3, 3), (1, 1, 0): (3, 3, 1)}
    return torch.ones(1, 1, 1) if ls == (0, 0, 0) else eye.reshape(shapes[ls])


def coupling_constant(ls: Tuple[int, int, int], path_weight: float, unit: torch.Tensor) -> float:
    """The number c with ``wigner_3j(*ls) * path_weight == c * unit``: what an e3nn path multiplies by once
    its Wigner-3j tensor is known to be ``unit`` (a delta or Levi-Civita) up to scale; ``ValueError`` if not."""
    coefficients = o3.wigner_3j(*ls, dtype=torch.float64) * path_weight
    unit = unit.to(torch.float64)
    constant = float((coefficients * unit).sum() / unit.square().sum())
    if not torch.allclose(coefficients, constant * unit, atol=1e-9):
        raise ValueError(f"the coupling coefficients of path l = {ls} are not a multiple of the expected tensor")
    return constant


def supports(tensor_product: o3.TensorProduct) -> bool:
    """Whether :class:`L1Convolution` can replace ``tensor_product``: "uvu" paths with per-edge weights,
    features and harmonics of l <= 1, the harmonics ``1x0e + 1x1o`` (component normalisation)."""
    if tensor_product.irreps_in2 != o3.Irreps("1x0e+1x1o") or tensor_product.shared_weights:
        return False
    for instruction in tensor_product.instructions:
        ls = (
            tensor_product.irreps_in1[instruction.i_in1].ir.l,
            tensor_product.irreps_in2[instruction.i_in2].ir.l,
            tensor_product.irreps_out[instruction.i_out].ir.l,
        )
        if instruction.connection_mode != "uvu" or not instruction.has_weight or ls not in _OPERATION:
            return False
    return True


@compile_mode("script")
class L1Convolution(torch.nn.Module):
    """``sum_j TP_w(x_j, Y(r_ij))`` for an e3nn "uvu" ``TensorProduct`` with l <= 1 (see the module docstring).

    Holds no parameters; every constant comes from ``tensor_product`` at construction.
    """

    input_sizes: List[int]  # per input irreps block: mul * (2l + 1)
    input_shapes: List[List[int]]  # per input irreps block: [mul, 2l + 1]
    weight_sizes: List[int]  # per path (instruction order): its number of edge weights
    operations: List[str]  # per path: "scale", "along-bond", "dot" or "cross"
    inputs: List[int]  # per path: its input irreps block
    output_order: List[int]  # paths in the order of their output blocks

    def __init__(self, tensor_product: o3.TensorProduct):
        super().__init__()
        if not supports(tensor_product):
            raise ValueError(f"L1Convolution cannot compute {tensor_product}")
        irreps_in, irreps_out = tensor_product.irreps_in1, tensor_product.irreps_out
        self.input_sizes = [mul * ir.dim for mul, ir in irreps_in]
        self.input_shapes = [[mul, ir.dim] for mul, ir in irreps_in]
        weight_sizes, operations, inputs, constants, outputs = [], [], [], [], []
        for instruction in tensor_product.instructions:
            ir_in = irreps_in[instruction.i_in1].ir
            ir_sh = tensor_product.irreps_in2[instruction.i_in2].ir
            ir_out = irreps_out[instruction.i_out].ir
            ls = (ir_in.l, ir_sh.l, ir_out.l)
            operations.append(_OPERATION[ls])
            inputs.append(instruction.i_in1)
            constants.append(coupling_constant(ls, instruction.path_weight, _unit_coefficients(ls)))
            outputs.append(instruction.i_out)
            weight_sizes.append(instruction.path_shape[0] * instruction.path_shape[1])
        # paths are computed in instruction order (the weights' order) and laid out in output order
        self.weight_sizes = weight_sizes
        self.operations = operations
        self.inputs = inputs
        # per edge weight: its path's coupling coefficient x path normalisation (the caller applies it)
        scale = torch.cat([torch.full((size,), constant) for size, constant in zip(weight_sizes, constants)])
        self.register_buffer("weight_scale", scale.to(torch.get_default_dtype()), persistent=False)
        self.output_order = sorted(range(len(outputs)), key=lambda k: outputs[k])
        if sorted(outputs) != list(range(len(irreps_out))):
            raise ValueError("L1Convolution needs one path per output irreps block")

    def forward(
        self,
        features: torch.Tensor,
        edge_index: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_weights: torch.Tensor,
    ) -> torch.Tensor:
        """Aggregated messages ``(n_atoms, irreps_out.dim)`` in e3nn layout.

        Args:
            features: ``(n_atoms, irreps_in.dim)`` node features (e3nn layout).
            edge_index: ``(2, n_edges)``: row 0 receives the message built from row 1's features.
            edge_sh: ``(n_edges, 4)`` component-normalised spherical harmonics ``1x0e + 1x1o``.
            edge_weights: ``(n_edges, weight_numel)`` per-edge path weights times ``weight_scale``, in the
                tensor product's order.
        """
        num_atoms = features.shape[0]
        centre, neighbour = edge_index[0], edge_index[1]
        bond = edge_sh[:, 1:].unsqueeze(2)  # (e, 3, 1) = Y_1
        bond_next, bond_next_next = bond.roll(-1, 1), bond.roll(-2, 1)
        blocks: List[torch.Tensor] = []
        for block, shape in zip(features.split(self.input_sizes, dim=1), self.input_shapes):
            # channels last, gathered onto the edges: (e, 2l+1, mul)
            per_atom = block.reshape(num_atoms, shape[0], shape[1]).transpose(1, 2).contiguous()
            blocks.append(per_atom.index_select(0, neighbour))
        summed: List[torch.Tensor] = []
        for k, weights in enumerate(edge_weights.split(self.weight_sizes, dim=1)):
            x = blocks[self.inputs[k]]
            w = weights.unsqueeze(1)
            operation = self.operations[k]
            if operation == "scale":
                message = x * w
            elif operation == "along-bond":
                message = (x * w) * bond
            elif operation == "dot":
                message = (x * bond).sum(dim=1, keepdim=True) * w
            else:  # (x x Y_1)_i = x_{i+1} Y_{i+2} - x_{i+2} Y_{i+1}; cheaper than linalg.cross's broadcast
                message = (x.roll(-1, 1) * bond_next_next - x.roll(-2, 1) * bond_next) * w
            total = torch.zeros(
                num_atoms, message.shape[1], message.shape[2], dtype=message.dtype, device=message.device
            ).index_add_(0, centre, message)
            summed.append(total.transpose(1, 2).reshape(num_atoms, -1))
        return torch.cat([summed[k] for k in self.output_order], dim=1)

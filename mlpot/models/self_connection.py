"""Fast NequIP self-connection: e3nn's ``FullyConnectedTensorProduct(features, species one-hot)``.

The self-connection of a NequIP layer is a tensor product of each atom's features with per-atom
scalars (the one-hot species vector). With only scalars on the second side every path is a
channel-mixing linear map whose weights depend bilinearly on those scalars:

    out[n, w, i] = c * sum_{u, v} W[u, v, w] x[n, u, i] s[n, v]

(c: e3nn's Wigner-3j coefficient of l x 0 -> l times its path normalisation). e3nn evaluates it with
generic contractions and many small operations; :class:`ScalarTensorProduct` does one matrix product
per path, ``(x^T W)`` for every species at once, and contracts the species axis with ``s``. It reads
its paths, constants and weight layout from the e3nn module and uses that module's own ``weight``, so
model files and checkpoints are unchanged by which one runs (a test compares their numbers).
"""

from typing import List

import torch
from e3nn import o3
from e3nn.util.jit import compile_mode

from mlpot.models.convolution import coupling_constant


def supports(tensor_product: o3.FullyConnectedTensorProduct) -> bool:
    """Whether ``tensor_product`` has only scalars on its second input and internal "uvw" weights."""
    second_scalars = all(ir.l == 0 and ir.p == 1 for _, ir in tensor_product.irreps_in2)
    return (
        second_scalars
        and len(tensor_product.irreps_in2) == 1
        and tensor_product.internal_weights
        and all(ins.connection_mode == "uvw" and ins.has_weight for ins in tensor_product.instructions)
    )


@compile_mode("script")
class ScalarTensorProduct(torch.nn.Module):
    """``FullyConnectedTensorProduct(x, s)`` with ``s`` scalars, given the e3nn module's weight at call time."""

    input_sizes: List[int]  # per input irreps block: mul * (2l + 1)
    weight_sizes: List[int]  # per path: mul_in * num_scalars * mul_out
    paths_in: List[int]  # per path: its input block
    path_shapes: List[List[int]]  # per path: [mul_in, 2l + 1, num_scalars, mul_out]
    constants: List[float]  # per path: coefficient x path normalisation
    paths_of_output: List[List[int]]  # per output block: the paths summed into it
    output_sizes: List[int]  # per output block: mul * (2l + 1)

    def __init__(self, tensor_product: o3.FullyConnectedTensorProduct):
        super().__init__()
        if not supports(tensor_product):
            raise ValueError(f"ScalarTensorProduct cannot compute {tensor_product}")
        irreps_in, irreps_out = tensor_product.irreps_in1, tensor_product.irreps_out
        num_scalars = tensor_product.irreps_in2.dim
        self.input_sizes = [mul * ir.dim for mul, ir in irreps_in]
        self.output_sizes = [mul * ir.dim for mul, ir in irreps_out]
        weight_sizes, paths_in, path_shapes, constants = [], [], [], []
        paths_of_output: List[List[int]] = [[] for _ in irreps_out]
        for k, instruction in enumerate(tensor_product.instructions):
            mul_in, ir_in = irreps_in[instruction.i_in1]
            mul_out, ir_out = irreps_out[instruction.i_out]
            if ir_in != ir_out:
                raise ValueError(f"unexpected self-connection path {ir_in} x 0e -> {ir_out}")
            identity = torch.eye(ir_in.dim).reshape(ir_in.dim, 1, ir_in.dim)
            constant = coupling_constant((ir_in.l, 0, ir_out.l), instruction.path_weight, identity)
            weight_sizes.append(mul_in * num_scalars * mul_out)
            paths_in.append(instruction.i_in1)
            path_shapes.append([mul_in, ir_in.dim, num_scalars, mul_out])
            constants.append(constant)
            paths_of_output[instruction.i_out].append(k)
        self.weight_sizes = weight_sizes
        self.paths_in = paths_in
        self.path_shapes = path_shapes
        self.constants = constants
        self.paths_of_output = paths_of_output

    def forward(self, features: torch.Tensor, scalars: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``(n, irreps_out.dim)`` from features ``(n, irreps_in.dim)``, scalars ``(n, num_scalars)`` and
        the e3nn module's flat ``weight``."""
        num_atoms = features.shape[0]
        inputs = features.split(self.input_sizes, dim=1)
        weights = weight.split(self.weight_sizes)
        outputs: List[torch.Tensor] = []
        for block, paths in enumerate(self.paths_of_output):
            total = torch.zeros(num_atoms, self.output_sizes[block], dtype=features.dtype, device=features.device)
            for k in paths:
                mul_in, dim, num_scalars, mul_out = self.path_shapes[k]
                x = inputs[self.paths_in[k]].reshape(num_atoms, mul_in, dim).transpose(1, 2)  # (n, i, u)
                mixed = torch.matmul(x, weights[k].reshape(mul_in, num_scalars * mul_out))  # (n, i, v * w)
                mixed = mixed.reshape(num_atoms, dim, num_scalars, mul_out)
                selected = (mixed * scalars.reshape(num_atoms, 1, num_scalars, 1)).sum(dim=2)  # (n, i, w)
                total = total + selected.transpose(1, 2).reshape(num_atoms, -1) * self.constants[k]
            outputs.append(total)
        return torch.cat(outputs, dim=1)

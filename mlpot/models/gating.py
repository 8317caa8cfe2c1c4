"""Fast NequIP gate: e3nn's ``Gate`` in a handful of tensor operations.

e3nn's gate nonlinearity takes ``scalars + gates + gated`` (its sorted input layout) and returns

    act(scalars)  ++  gated * sigmoid(gates)        (each gate scales one channel of the gated irreps)

where every activation carries e3nn's second-moment normalisation constant (``normalize2mom``).
e3nn computes it with a generated extraction into zero-filled buffers, one activation per irreps
block and an ``ElementwiseTensorProduct``; on a CPU at peptide size those small operations and their
gradients cost more than the arithmetic. :class:`ScalarGate` reads the same layout and constants from
the e3nn module and computes the same numbers (a test compares them) with narrows of the input, one
activation per block and one broadcast product per run of gated channels.
"""

from typing import List

import torch
from e3nn import o3
from e3nn.nn import Gate
from e3nn.util.jit import compile_mode

from mlpot.models.convolution import coupling_constant

# the activations ScalarGate knows, by the function e3nn's normalize2mom wraps
_ACTIVATIONS = {torch.nn.functional.silu: "silu", torch.tanh: "tanh", torch.sigmoid: "sigmoid"}


def _activation_name(activation: torch.nn.Module) -> str:
    """``"silu"``, ``"tanh"`` or ``"sigmoid"`` for an e3nn ``normalize2mom`` wrapper, else ``""``."""
    return _ACTIVATIONS.get(getattr(activation, "f", None), "")


def _normalisation(activation: torch.nn.Module) -> float:
    """The constant e3nn's ``normalize2mom`` multiplies the activation by (1 when it skips it)."""
    return 1.0 if activation._is_id else float(activation.cst)


def supports(gate: Gate) -> bool:
    """Whether :class:`ScalarGate` can replace ``gate``: known activations (silu, tanh, sigmoid) and a
    gated product that is a plain channel-wise multiplication."""
    if (len(gate.act_scalars.acts) != len(gate.sc.irreps_outs[0])
            or len(gate.irreps_gated) != len(gate.sc.irreps_outs[2])):
        return False
    activations = list(gate.act_scalars.acts) + list(gate.act_gates.acts)
    if any(activation is None or _activation_name(activation) == "" for activation in activations):
        return False
    product = gate.mul
    for instruction in product.instructions:
        ir_gated = product.irreps_in1[instruction.i_in1].ir
        ir_gate = product.irreps_in2[instruction.i_in2].ir
        if ir_gate != o3.Irrep("0e") or instruction.connection_mode != "uuu":
            return False
        identity = torch.eye(ir_gated.dim).reshape(ir_gated.dim, 1, ir_gated.dim)
        try:
            constant = coupling_constant((ir_gated.l, 0, ir_gated.l), instruction.path_weight, identity)
        except ValueError:
            return False
        if abs(constant - 1.0) > 1e-6:
            return False
    return True


def _input_ranges(gate: Gate, output: int) -> List[List[int]]:
    """``[start, length]`` in the gate's input of each irreps block of its ``output``-th part
    (0 scalars, 1 gates, 2 gated), as e3nn's extraction reads them."""
    extract = gate.sc.cut
    ranges = []
    for i_in in extract.instructions[output]:
        ranges.append([extract.irreps_in[:i_in].dim, extract.irreps_in[i_in].dim])
    return ranges


@compile_mode("script")
class ScalarGate(torch.nn.Module):
    """e3nn's ``Gate`` for inputs ``(n_atoms, irreps_in.dim)``, with the same layout and numbers."""

    scalar_ranges: List[List[int]]  # per scalar block: [input start, size]
    scalar_activations: List[str]  # per scalar block: "silu" or "tanh"
    scalar_constants: List[float]  # per scalar block: normalize2mom constant
    gate_ranges: List[List[int]]  # per gate block: [input start, size], in gated-channel order
    gate_activations: List[str]
    gate_constants: List[float]
    gated_runs: List[List[int]]  # per run of gated channels: [input start, channels, 2l + 1, first gate]

    def __init__(self, gate: Gate):
        super().__init__()
        if not supports(gate):
            raise ValueError(f"ScalarGate cannot compute {gate}")
        self.scalar_ranges = _input_ranges(gate, 0)
        self.scalar_activations = [_activation_name(act) for act in gate.act_scalars.acts]
        self.scalar_constants = [_normalisation(act) for act in gate.act_scalars.acts]
        self.gate_ranges = _input_ranges(gate, 1)
        self.gate_activations = [_activation_name(act) for act in gate.act_gates.acts]
        self.gate_constants = [_normalisation(act) for act in gate.act_gates.acts]
        # gated blocks adjacent in the input with the same 2l + 1 become one run (one product)
        runs: List[List[int]] = []
        first_gate = 0
        for (start, size), (mul, ir) in zip(_input_ranges(gate, 2), gate.sc.irreps_outs[2]):
            previous = runs[-1] if runs else None
            if previous is not None and previous[0] + previous[1] * previous[2] == start and previous[2] == ir.dim:
                previous[1] += mul
            else:
                runs.append([start, mul, ir.dim, first_gate])
            first_gate += mul
        self.gated_runs = runs

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        num_atoms = features.shape[0]
        outputs: List[torch.Tensor] = []
        for (start, size), name, constant in zip(self.scalar_ranges, self.scalar_activations, self.scalar_constants):
            outputs.append(_activate(features.narrow(1, start, size), name) * constant)
        if len(self.gated_runs) > 0:
            gate_blocks: List[torch.Tensor] = []
            for (start, size), name, constant in zip(self.gate_ranges, self.gate_activations, self.gate_constants):
                gate_blocks.append(_activate(features.narrow(1, start, size), name) * constant)
            gates = gate_blocks[0] if len(gate_blocks) == 1 else torch.cat(gate_blocks, dim=1)
            for start, channels, dim, first_gate in self.gated_runs:
                gated = features.narrow(1, start, channels * dim).reshape(num_atoms, channels, dim)
                scale = gates.narrow(1, first_gate, channels).unsqueeze(2)
                outputs.append((gated * scale).reshape(num_atoms, channels * dim))
        if len(outputs) == 1:
            return outputs[0]
        return torch.cat(outputs, dim=1)


def _activate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "silu":
        return torch.nn.functional.silu(x)
    if name == "tanh":
        return torch.tanh(x)
    return torch.sigmoid(x)

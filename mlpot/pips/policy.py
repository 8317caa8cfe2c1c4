"""Control policies u_θ(x, v, t): a force added to the momentum equation of every path.

Every policy is an ``nn.Module`` called as ``policy(positions, velocities, time_fraction)`` with
positions and velocities (n, *dof) and time_fraction (n,) = t / T ∈ [0, 1], returning the force
(n, *dof) in the caller's force unit. The time input lets a policy learn a control that depends
on how much of the horizon is left (the optimal control does; the reference code has none).

Two kinds, as in the PIPS paper:

- **force** policies output u directly;
- **energy** policies output a scalar E_θ and u = −∂E_θ/∂x (a conservative control; the loss then
  needs second derivatives, which :func:`mlpot.pips.gradients.negative_gradient` keeps).

**Recorded inputs.** A policy may split itself into a part that does not depend on its parameters θ and one that
does: ``policy.invariant_inputs(x, v, t)`` returns a dict of tensors (batch first; e.g. the superposed coordinates
and the rotation), ``policy.controls_from_inputs(inputs)`` the control from them, with a graph to θ, and
``policy(x, v, t)`` is the two in turn (:func:`splits_inputs` tells whether a policy does). A rollout then records the
inputs at every step, and the loss evaluates the policy again from them instead of from the raw states
(:func:`mlpot.pips.loss.recorded_inputs`), which saves the superpositions over all recorded states: 0.4 s of a
16 × 1000-step chignolin iteration. The inputs are functions of the state alone, so recording them changes no number.

This module holds the network every policy is built from; the 2D toy policies are in
:mod:`mlpot.pips.toy.policy`, the invariant molecular ones in :mod:`mlpot.pips.molecular.policy`.
The last layer is initialised to zero, so training starts from the uncontrolled dynamics (u = 0),
the natural start of PICE's iterative importance sampling.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn

PolicyInputs = Dict[str, torch.Tensor]  # a policy's θ-independent inputs, each (batch, ...): see the module docstring


def splits_inputs(policy) -> bool:
    """Whether ``policy`` (any control function) has ``invariant_inputs`` and ``controls_from_inputs``
    (module docstring): its ``splits_inputs()`` says so; functions and other policies do not."""
    splits = getattr(policy, "splits_inputs", None)
    return bool(splits()) if callable(splits) else False


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """SiLU multilayer perceptron ``sizes[0] → … → sizes[-1]`` with a zero-initialised last layer."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(width_in, width_out))
        if index < len(sizes) - 2:
            layers.append(nn.SiLU())
    last = layers[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers)

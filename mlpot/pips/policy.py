"""Control policies u_θ(x, v, t): a force added to the momentum equation of every path.

Every policy is an ``nn.Module`` called as ``policy(positions, velocities, time_fraction)`` with
positions and velocities (n, *dof) and time_fraction (n,) = t / T ∈ [0, 1], returning the force
(n, *dof) in the caller's force unit. The time input lets a policy learn a control that depends
on how much of the horizon is left (the optimal control does; the reference code has none).

Two kinds, as in the PIPS paper:

- **force** policies output u directly;
- **energy** policies output a scalar E_θ and u = −∂E_θ/∂x (a conservative control; the loss then
  needs second derivatives, which :func:`mlpot.pips.gradients.negative_gradient` keeps).

This module holds the network every policy is built from; the 2D toy policies are in
:mod:`mlpot.pips.toy.policy`, the invariant molecular ones in :mod:`mlpot.pips.molecular.policy`.
The last layer is initialised to zero, so training starts from the uncontrolled dynamics (u = 0),
the natural start of PICE's iterative importance sampling.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn


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

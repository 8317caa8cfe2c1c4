"""Control policies u_θ(x, v, t): a force added to the momentum equation of every path.

Every policy is an ``nn.Module`` called as ``policy(positions, velocities, time_fraction)`` with
positions and velocities (n, *dof) and time_fraction (n,) = t / T ∈ [0, 1], returning the force
(n, *dof) in the caller's force unit. The time input lets a policy learn a control that depends
on how much of the horizon is left (the optimal control does; the reference code has none).

Two kinds, as in the PIPS paper:

- **force** policies output u directly;
- **energy** policies output a scalar E_θ and u = −∂E_θ/∂x (a conservative control; the loss then
  needs second derivatives, which :func:`mlpot.pips.gradients.negative_gradient` keeps).

This module holds the generic pieces and the 2D toy policies; invariant molecular policies are in
:mod:`mlpot.pips.molecular_policy`. The last layer is initialised to zero, so training starts from
the uncontrolled dynamics (u = 0) — the natural start of PICE's iterative importance sampling.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mlpot.pips.gradients import negative_gradient


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


class _ToyPolicyBase(nn.Module):
    """An MLP over (x, [v,] t/T) of a point particle in ``dimension`` dimensions with ``n_outputs`` outputs."""

    def __init__(self, dimension: int, hidden: Sequence[int], use_velocities: bool, n_outputs: int):
        super().__init__()
        self.use_velocities = use_velocities
        n_inputs = dimension * (2 if use_velocities else 1) + 1
        self.network = mlp([n_inputs, *hidden, n_outputs])

    def features(self, positions: torch.Tensor, velocities: torch.Tensor, time_fraction: torch.Tensor) -> torch.Tensor:
        parts = [positions, velocities] if self.use_velocities else [positions]
        return torch.cat([*parts, time_fraction[:, None].to(positions.dtype)], dim=1)


class ToyForcePolicy(_ToyPolicyBase):
    """u = MLP(x, [v,] t/T) for a point particle (the 2D toys)."""

    def __init__(self, dimension: int = 2, hidden: Sequence[int] = (64, 64), use_velocities: bool = True):
        super().__init__(dimension, hidden, use_velocities, n_outputs=dimension)

    def forward(self, positions: torch.Tensor, velocities: torch.Tensor, time_fraction: torch.Tensor) -> torch.Tensor:
        return self.network(self.features(positions, velocities, time_fraction))


class ToyEnergyPolicy(_ToyPolicyBase):
    """u = −∂E/∂x with E = MLP(x, [v,] t/T) a scalar: a conservative control force."""

    def __init__(self, dimension: int = 2, hidden: Sequence[int] = (64, 64), use_velocities: bool = True):
        super().__init__(dimension, hidden, use_velocities, n_outputs=1)

    def energy(self, positions: torch.Tensor, velocities: torch.Tensor, time_fraction: torch.Tensor) -> torch.Tensor:
        """E_θ (n,)."""
        return self.network(self.features(positions, velocities, time_fraction))[:, 0]

    def forward(self, positions: torch.Tensor, velocities: torch.Tensor, time_fraction: torch.Tensor) -> torch.Tensor:
        return negative_gradient(lambda x: self.energy(x, velocities, time_fraction), positions)


class MirrorSymmetrizedPolicy(nn.Module):
    """u_sym(x, v, t) = ½ [u(x, v, t) + M u(Mx, Mv, t)] for a mirror M = diag(``mirror``).

    When the potential, the start and the target are unchanged by M (the double well under
    y → −y), so is the optimal control: u*(Mx, Mv, t) = M u*(x, v, t). Restricting the policy to
    such functions, as molecular policies are restricted to rotation-equivariant ones, loses
    nothing and keeps the policy from settling into one of two mirror-image channels. Symmetrising
    the force of an energy policy is the same as symmetrising its energy, ½ [E(x) + E(Mx)].
    """

    def __init__(self, policy: nn.Module, mirror: Sequence[float]):
        super().__init__()
        self.policy = policy
        self.register_buffer("mirror", torch.tensor(mirror, dtype=torch.float64))

    def forward(self, positions: torch.Tensor, velocities: torch.Tensor, time_fraction: torch.Tensor) -> torch.Tensor:
        mirror = self.mirror.to(positions.dtype)
        both = self.policy(torch.cat([positions, positions * mirror]), torch.cat([velocities, velocities * mirror]),
                           torch.cat([time_fraction, time_fraction]))  # one batched call for u(z) and u(Mz)
        direct, mirrored = both.chunk(2)
        return 0.5 * (direct + mirrored * mirror)


TOY_POLICIES = {"force": ToyForcePolicy, "energy": ToyEnergyPolicy}


def toy_policy(kind: str, dimension: int = 2, hidden: Sequence[int] = (64, 64), use_velocities: bool = True,
               mirror: Sequence[float] | None = None) -> nn.Module:
    """A toy policy of ``kind`` ``force`` or ``energy``, symmetrised under ``mirror`` if given."""
    if kind not in TOY_POLICIES:
        raise ValueError(f"unknown policy kind {kind!r}; known: {', '.join(TOY_POLICIES)}")
    policy = TOY_POLICIES[kind](dimension, tuple(hidden), use_velocities)
    return policy if mirror is None else MirrorSymmetrizedPolicy(policy, mirror)

"""Control policies of the 2D toy systems (:mod:`mlpot.pips.toy.systems`): MLPs over (x, [v,] t/T)
of a point particle, either outputting the force u directly (**force**) or a scalar E_θ with
u = −∂E_θ/∂x (**energy**), optionally symmetrised under the system's mirror. The calling
convention every policy follows is in :mod:`mlpot.pips.policy`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mlpot.pips.gradients import negative_gradient
from mlpot.pips.policy import mlp


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

"""Controlled second-order (underdamped) Langevin dynamics with recorded noise: the scheme, its
settings, the control-cost weight and the :class:`Rollout` every system records.

The equations of motion of every path (mass m, friction γ, temperature kT, potential V):

    dx = (p / m) dt
    dp = [−∇V(x) − γ p] dt + u(x, v, t) dt + dW_c + dW_th

The policy's control u is a force added to the momentum equation. The thermal noise of the
Langevin thermostat is split into two independent parts whose variances add up to the
fluctuation–dissipation value, so that the *uncontrolled* dynamics (u = 0) is exactly Langevin
dynamics at temperature kT whatever the split:

- the **controlled channel** dW_c carries the fraction ``controlled_noise_fraction`` of it; it is
  generated here and **recorded** for every step, because the importance weights and the PICE
  gradient need it (Girsanov: the control shifts the mean of this channel's kick);
- the thermal rest dW_th (fraction 1 − f) is not recorded; it does not enter the weights
  (importance sampling on the extended path space of (x, dW_c) stays exact; f = 1, the default,
  gives the lowest-variance weights).

One step is BAOAB (Leimkuhler–Matthews) with the control kick in the O part:

    B: p += ½ dt F(x)        A: x += ½ dt p/m
    O: u = u(x, p/m, t_s);  p = c p + dW_th + u dt + dW_c,    c = exp(−γ dt)
    A: x += ½ dt p/m         B: p += ½ dt F(x)

with Var(dW_c) = f (1 − c²) m kT and Var(dW_th) = (1 − f)(1 − c²) m kT per degree of freedom
(exact Ornstein–Uhlenbeck variances). The control is evaluated at the mid-step position, with the
velocity after the first half kick and at time t_s = (s + ½) dt, before the kick it shifts: that
makes each step's control a function of the past only, which the path-space importance weights
require. Per step, the controlled kick is u dt + dW_c with dW_c ~ N(0, ν dt) and

    ν = f (1 − c²) m kT / dt        (force² × time per degree of freedom),

so the PICE control-cost weight that makes λ = R ν is R = λ / ν (:func:`control_weight`).

The scheme is integrated in torch for the toy systems (:mod:`mlpot.pips.toy.dynamics`, reduced
units) and by an OpenMM integrator for molecules (:mod:`mlpot.pips.molecular.integrator`, nm, ps,
kJ/mol); units are those of the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

ControlFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LangevinSettings:
    """Langevin parameters: ``timestep`` (time), ``friction`` γ (1/time), ``kT`` (energy), the
    share ``controlled_noise_fraction`` f ∈ (0, 1] of the thermal noise carried by the recorded
    controlled channel."""

    timestep: float
    friction: float
    kT: float
    controlled_noise_fraction: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.controlled_noise_fraction <= 1.0:
            raise ValueError(f"controlled_noise_fraction must be in (0, 1], got {self.controlled_noise_fraction}")
        if self.timestep <= 0 or self.friction <= 0 or self.kT <= 0:
            raise ValueError(f"timestep, friction and kT must be positive, got {self}")

    @property
    def velocity_damping(self) -> float:
        """c = exp(−γ dt), the momentum kept by one O step."""
        return math.exp(-self.friction * self.timestep)

    def kick_variances(self, mass: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(controlled, thermal) variance of one step's momentum kick per degree of freedom.

        ``mass`` broadcasts against the positions (a scalar, or per atom (n_atoms, 1))."""
        total = (1.0 - self.velocity_damping ** 2) * mass * self.kT
        fraction = self.controlled_noise_fraction
        return fraction * total, (1.0 - fraction) * total


def noise_rate(settings: LangevinSettings, mass: torch.Tensor) -> torch.Tensor:
    """ν: the controlled channel's noise variance per unit time, Var(dW_c) = ν dt (force² × time)."""
    controlled, _ = settings.kick_variances(mass)
    return controlled / settings.timestep


def control_weight(settings: LangevinSettings, mass: torch.Tensor, lam: float) -> torch.Tensor:
    """R = λ / ν, the control-cost weight for which λ = R ν holds (diagonal, broadcasts like ``mass``)."""
    return lam / noise_rate(settings, mass)


@dataclass
class Rollout:
    """A batch of controlled paths and everything the PICE estimator needs.

    Shapes: n paths, s steps, ``*dof`` the shape of one configuration ((2,) for the toys,
    (n_atoms, 3) for molecules).

    - ``positions`` (n, s + 1, *dof): x at every full step, x_0 … x_T;
    - ``control_positions``, ``control_velocities`` (n, s, *dof) and ``control_times`` (s,): where
      and when each step's control was evaluated (the policy's inputs, kept so that the loss can
      evaluate the policy again with gradients);
    - ``controls`` (n, s, *dof): the control force u that was applied (no graph);
    - ``noises`` (n, s, *dof): the recorded controlled-channel kicks dW_c (momentum units);
    - ``final_velocities`` (n, *dof);
    - ``policy_inputs`` (optional): the policy's θ-independent inputs at every control evaluation, each
      (n, s, ...) (:func:`mlpot.pips.policy.splits_inputs`), so that the loss need not compute them again.
    """

    positions: torch.Tensor
    control_positions: torch.Tensor
    control_velocities: torch.Tensor
    control_times: torch.Tensor
    controls: torch.Tensor
    noises: torch.Tensor
    final_velocities: torch.Tensor
    timestep: float
    policy_inputs: Optional[Dict[str, torch.Tensor]] = None

    @property
    def n_paths(self) -> int:
        return self.positions.shape[0]

    @property
    def n_steps(self) -> int:
        return self.controls.shape[1]

    @property
    def duration(self) -> float:
        return self.n_steps * self.timestep

    @property
    def final_positions(self) -> torch.Tensor:
        return self.positions[:, -1]

    def finite_paths(self) -> torch.Tensor:
        """(n_paths,) bool: paths whose positions, controls and noises are all finite (not blown up).

        Tested on each path's sum, which is finite exactly when every entry is, unless finite entries
        add up past the float range (~1e308; such a path counts as blown up too). One reduction is
        ~25× faster than ``isfinite().all()`` (0.2 s → 8 ms for 16 chignolin paths × 1000 steps)."""
        return torch.stack([tensor.flatten(start_dim=1).sum(dim=1).isfinite() for tensor in
                            (self.positions, self.controls, self.noises, self.final_velocities)]).all(dim=0)

    def subset(self, keep: torch.Tensor) -> Rollout:
        """The paths selected by ``keep`` (bool mask or indices over paths); this Rollout itself (no
        copy) when a mask keeps every path."""
        if isinstance(keep, torch.Tensor) and keep.dtype == torch.bool and bool(keep.all()):
            return self
        inputs = None if self.policy_inputs is None else \
            {name: value[keep] for name, value in self.policy_inputs.items()}
        return Rollout(positions=self.positions[keep], control_positions=self.control_positions[keep],
                       control_velocities=self.control_velocities[keep], control_times=self.control_times,
                       controls=self.controls[keep], noises=self.noises[keep],
                       final_velocities=self.final_velocities[keep], timestep=self.timestep, policy_inputs=inputs)

"""Two-dimensional toy systems for validating PIPS: potentials in torch, start and target states.

Reduced units throughout: lengths, energies and times are dimensionless, the particle mass is 1.
Each :class:`ToySystem` carries the temperature and Langevin settings at which its transition is a
rare event for plain dynamics (a barrier of about 10 kT), so a trained policy has something to do.

- ``double-well``: the symmetric two-channel double well of the TPS-DPS notebook,
  V = [4(1−x²−y²)² + 2(x²−2)² + ((x+y)²−1)² + ((x−y)²−1)² − 2] / 6. Minima at (±√5/2, 0) with
  V = −1/12, saddles at (0, ±1) with V = 1, a maximum at the origin (V = 2). By symmetry the
  transition path ensemble uses the upper (y > 0) and lower channel equally often. kT = 0.1
  (barrier 10.8 kT), friction 5 (close to the overdamped dynamics of the TPS-DPS notebook; at
  friction 1 the same PICE training was slower and a plain MLP policy ended up using one channel
  only), 500 steps of 0.01.
- ``mueller-brown``: the Müller–Brown potential (Müller & Brown 1979), divided by 10 so that
  the barrier from the deepest minimum is ≈10.6 energy units; from the deepest minimum
  (−0.558, 1.442) to the minimum at (0.623, 0.028), through the shallow intermediate (−0.050, 0.467).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

PotentialFunction = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ToySystem:
    """A 2D potential with a start and a target state and the dynamics settings it is meant for.

    ``potential`` maps positions ``(..., 2)`` to energies ``(...)`` and ``gradient`` to ∇V
    ``(..., 2)`` (written out by hand: autograd on these few-term formulas costs more than the
    rest of a rollout step; a test checks one against the other). ``target_radius`` defines the
    target basin (a path "hits" when it ends within this distance of ``target``). ``channel`` (if
    any) labels the transition channel a path used, see :func:`double_well_channel`. ``mirror``
    (if any) is the diagonal of a reflection that leaves potential, start and target unchanged.
    """

    name: str
    potential: PotentialFunction
    gradient: PotentialFunction
    start: tuple
    target: tuple
    target_radius: float
    kT: float
    friction: float
    timestep: float
    n_steps: int
    channel: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    mirror: Optional[tuple] = None
    mass: float = 1.0

    def start_tensor(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.tensor(self.start, dtype=dtype)

    def target_tensor(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.tensor(self.target, dtype=dtype)

    def forces(self, positions: torch.Tensor) -> torch.Tensor:
        """−∇V at ``positions`` (..., 2), same shape."""
        return -self.gradient(positions)


def double_well_potential(positions: torch.Tensor) -> torch.Tensor:
    """The symmetric two-channel double well; positions (..., 2) → energies (...)."""
    x, y = positions[..., 0], positions[..., 1]
    r2 = x * x + y * y
    return (4 * (1 - r2) ** 2 + 2 * (x * x - 2) ** 2 + ((x + y) ** 2 - 1) ** 2 + ((x - y) ** 2 - 1) ** 2 - 2) / 6


def double_well_gradient(positions: torch.Tensor) -> torch.Tensor:
    """∇V of :func:`double_well_potential`; positions (..., 2) → (..., 2)."""
    x, y = positions[..., 0], positions[..., 1]
    ring = -16 * (1 - x * x - y * y)
    plus, minus = x + y, x - y
    plus_term, minus_term = 4 * plus * (plus * plus - 1), 4 * minus * (minus * minus - 1)
    d_x = ring * x + 8 * x * (x * x - 2) + plus_term + minus_term
    d_y = ring * y + plus_term - minus_term
    return torch.stack([d_x, d_y], dim=-1) / 6


# Müller–Brown parameters (A, a, b, c, x0, y0 per Gaussian-like term), energies divided by 10.
_MB_A = (-200.0, -100.0, -170.0, 15.0)
_MB_a = (-1.0, -1.0, -6.5, 0.7)
_MB_b = (0.0, 0.0, 11.0, 0.6)
_MB_c = (-10.0, -10.0, -6.5, 0.7)
_MB_x0 = (1.0, 0.0, -0.5, -1.0)
_MB_y0 = (0.0, 0.5, 1.5, 1.0)
MUELLER_BROWN_ENERGY_SCALE = 0.1


def mueller_brown_potential(positions: torch.Tensor) -> torch.Tensor:
    """The Müller–Brown potential times 0.1; positions (..., 2) → energies (...)."""
    x, y = positions[..., 0], positions[..., 1]
    energy = torch.zeros_like(x)
    for A, a, b, c, x0, y0 in zip(_MB_A, _MB_a, _MB_b, _MB_c, _MB_x0, _MB_y0):
        dx, dy = x - x0, y - y0
        energy = energy + A * torch.exp(a * dx * dx + b * dx * dy + c * dy * dy)
    return MUELLER_BROWN_ENERGY_SCALE * energy


def mueller_brown_gradient(positions: torch.Tensor) -> torch.Tensor:
    """∇V of :func:`mueller_brown_potential`; positions (..., 2) → (..., 2)."""
    x, y = positions[..., 0], positions[..., 1]
    d_x, d_y = torch.zeros_like(x), torch.zeros_like(y)
    for A, a, b, c, x0, y0 in zip(_MB_A, _MB_a, _MB_b, _MB_c, _MB_x0, _MB_y0):
        dx, dy = x - x0, y - y0
        term = A * torch.exp(a * dx * dx + b * dx * dy + c * dy * dy)
        d_x = d_x + term * (2 * a * dx + b * dy)
        d_y = d_y + term * (b * dx + 2 * c * dy)
    return MUELLER_BROWN_ENERGY_SCALE * torch.stack([d_x, d_y], dim=-1)


def double_well_channel(path_positions: torch.Tensor) -> torch.Tensor:
    """Which channel each path took: +1 upper (y > 0), −1 lower, 0 if it never crossed x = 0.

    ``path_positions`` (n_paths, n_frames, 2). The channel is the sign of y at the last crossing of
    x = 0 from x < 0 to x ≥ 0 (the crossing that completed the transition; earlier crossings that
    fell back do not count). Returns (n_paths,) int64.
    """
    x, y = path_positions[..., 0], path_positions[..., 1]
    crossing = (x[:, :-1] < 0) & (x[:, 1:] >= 0)  # (n_paths, n_frames - 1)
    frames = torch.arange(crossing.shape[1], device=x.device).expand_as(crossing)
    last = torch.where(crossing, frames, torch.full_like(frames, -1)).max(dim=1).values
    y_at_crossing = y.gather(1, (last.clamp(min=0) + 1)[:, None])[:, 0]
    channel = torch.where(y_at_crossing >= 0, 1, -1)
    return torch.where(last >= 0, channel, torch.zeros_like(channel))


_HALF_SQRT5 = math.sqrt(5.0) / 2

TOY_SYSTEMS: Dict[str, ToySystem] = {
    "double-well": ToySystem(
        name="double-well", potential=double_well_potential, gradient=double_well_gradient,
        start=(-_HALF_SQRT5, 0.0), target=(_HALF_SQRT5, 0.0), target_radius=0.5,
        kT=0.1, friction=5.0, timestep=0.01, n_steps=500, channel=double_well_channel,
        mirror=(1.0, -1.0),
    ),
    "mueller-brown": ToySystem(
        name="mueller-brown", potential=mueller_brown_potential, gradient=mueller_brown_gradient,
        start=(-0.5582, 1.4417), target=(0.6235, 0.0280), target_radius=0.35,
        kT=1.0, friction=5.0, timestep=0.002, n_steps=1000,
    ),
}


def toy_system(name: str) -> ToySystem:
    """The toy system called ``name`` (``double-well`` or ``mueller-brown``)."""
    if name not in TOY_SYSTEMS:
        raise KeyError(f"unknown toy system {name!r}; known: {', '.join(TOY_SYSTEMS)}")
    return TOY_SYSTEMS[name]

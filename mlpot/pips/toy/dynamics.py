"""Controlled Langevin rollouts of the 2D toys, batched in torch: the BAOAB scheme of
:mod:`mlpot.pips.dynamics` integrated step by step, with the controlled channel's noise recorded."""

from __future__ import annotations

from typing import Callable

import torch

from mlpot.pips.dynamics import ControlFunction, LangevinSettings, Rollout

ForceFunction = Callable[[torch.Tensor], torch.Tensor]


def maxwell_boltzmann_velocities(n_paths: int, shape: torch.Size, mass: torch.Tensor, kT: float,
                                 generator: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Velocities (n_paths, *shape) drawn from the Maxwell–Boltzmann distribution at kT."""
    standard = torch.randn((n_paths, *shape), generator=generator, dtype=dtype)
    return standard * torch.sqrt(kT / torch.as_tensor(mass, dtype=dtype))


def controlled_langevin_rollout(
    forces: ForceFunction,
    control: ControlFunction,
    start_positions: torch.Tensor,
    start_velocities: torch.Tensor,
    settings: LangevinSettings,
    n_steps: int,
    generator: torch.Generator,
    mass: torch.Tensor | float = 1.0,
) -> Rollout:
    """Integrate n paths for ``n_steps`` BAOAB steps under ``control`` and record the noise.

    ``forces(x)`` → −∇V(x), x (n, *dof). ``control(x, v, t_fraction)`` → u (n, *dof) with
    t_fraction (n,) = t / (n_steps · dt) ∈ (0, 1); it is called without gradients.
    ``start_positions``/``start_velocities`` (n, *dof). All random numbers come from ``generator``.
    """
    dt = settings.timestep
    dtype = start_positions.dtype
    mass = torch.as_tensor(mass, dtype=dtype)
    controlled_var, thermal_var = settings.kick_variances(mass)
    controlled_std, thermal_std = torch.sqrt(controlled_var), torch.sqrt(thermal_var)
    damping = settings.velocity_damping
    n_paths, dof = start_positions.shape[0], start_positions.shape[1:]

    positions = torch.empty((n_paths, n_steps + 1, *dof), dtype=dtype)
    control_positions = torch.empty((n_paths, n_steps, *dof), dtype=dtype)
    control_velocities = torch.empty_like(control_positions)
    controls = torch.empty_like(control_positions)
    noises = torch.empty_like(control_positions)
    control_times = (torch.arange(n_steps, dtype=dtype) + 0.5) * dt

    x = start_positions.clone()
    p = start_velocities * mass
    positions[:, 0] = x
    with torch.no_grad():
        force = forces(x)
        for step in range(n_steps):
            p = p + 0.5 * dt * force
            x = x + 0.5 * dt * p / mass
            velocity = p / mass
            time_fraction = torch.full((n_paths,), float(control_times[step]) / (n_steps * dt), dtype=dtype)
            u = control(x, velocity, time_fraction)
            kick = controlled_std * torch.randn(x.shape, generator=generator, dtype=dtype)
            p = damping * p + u * dt + kick
            if settings.controlled_noise_fraction < 1.0:
                p = p + thermal_std * torch.randn(x.shape, generator=generator, dtype=dtype)
            control_positions[:, step], control_velocities[:, step] = x, velocity
            controls[:, step], noises[:, step] = u, kick
            x = x + 0.5 * dt * p / mass
            force = forces(x)
            p = p + 0.5 * dt * force
            positions[:, step + 1] = x
    return Rollout(positions=positions, control_positions=control_positions, control_velocities=control_velocities,
                   control_times=control_times, controls=controls, noises=noises, final_velocities=p / mass,
                   timestep=dt)

"""Integrators for R independent replicas: velocity Verlet (NVE), Nosé–Hoover chain (NVT, training
segments) and Langevin BAOAB (NVT, evaluation).

Units: time fs, positions Å, velocities Å/fs, masses amu, forces eV/Å, energies eV, temperature K.
An acceleration is ``F / m * ACCELERATION_A_PER_FS2`` (:mod:`mlpot.units`).

Every thermostat variable is per replica, so replicas never feel each other. Each integrator makes
exactly one force call per step (``potential.energies_and_forces``) and keeps the forces in the
state, so a state restored from a snapshot carries the forces at its own positions.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Optional

import torch

from mlpot.md.state import ReplicaState, kinetic_energies
from mlpot.units import ACCELERATION_A_PER_FS2, BOLTZMANN_EV_PER_K
from mlpot.validation import positive_number


def _refresh_forces(state: ReplicaState, potential) -> None:
    energies, forces = potential.energies_and_forces(state.positions)
    state.forces = forces.to(state.positions.dtype)
    state.potential_energies = energies.to(state.positions.dtype)


def _kick(state: ReplicaState, masses: torch.Tensor, dt_fs: float) -> None:
    state.velocities = state.velocities + dt_fs * ACCELERATION_A_PER_FS2 * state.forces / masses[None, :, None]


def _drift(state: ReplicaState, dt_fs: float) -> None:
    state.positions = state.positions + dt_fs * state.velocities


class Integrator(ABC):
    """What the replica simulator needs from an integrator. ``timestep_fs`` is the step in fs."""

    timestep_fs: float

    def degrees_of_freedom(self, n_atoms: int) -> int:
        """Degrees of freedom per replica: 3 n_atoms − 3 by default, since the centre-of-mass momentum
        starts at zero and the forces of a translation-invariant model keep it there."""
        return 3 * n_atoms - 3

    def init_state(self, state: ReplicaState, masses: torch.Tensor) -> None:
        """Add the integrator's per-replica variables to ``state.thermostat`` (none by default)."""

    def conserved_energies(self, state: ReplicaState, masses: torch.Tensor) -> torch.Tensor:
        """The integrator's conserved quantity per replica ``(R,)`` eV; by default the total energy
        U + K (conserved by NVE; for a stochastic thermostat only reported)."""
        return state.potential_energies + kinetic_energies(state.velocities, masses)

    @abstractmethod
    def step(self, state: ReplicaState, potential, masses: torch.Tensor) -> None:
        """Advance ``state`` in place by one timestep, with one call of ``potential.energies_and_forces``."""


class VelocityVerlet(Integrator):
    """Microcanonical (NVE) velocity Verlet; ``timestep_fs`` in fs."""

    def __init__(self, timestep_fs: float):
        self.timestep_fs = positive_number("timestep_fs", timestep_fs)

    def step(self, state: ReplicaState, potential, masses: torch.Tensor) -> None:
        dt = self.timestep_fs
        _kick(state, masses, 0.5 * dt)
        _drift(state, dt)
        _refresh_forces(state, potential)
        _kick(state, masses, 0.5 * dt)


class NoseHooverChain(Integrator):
    """Nosé–Hoover chain thermostat (Martyna–Klein–Tuckerman), one chain per replica.

    A step is ``chain(dt/2) · kick(dt/2) · drift(dt) · kick(dt/2) · chain(dt/2)``. The first thermostat
    mass is ``Q1 = N_f kT τ²``, the others ``kT τ²``, with ``τ = time_constant_fs`` (the StABlE code
    uses a single thermostat and τ = 20 dt). ``chain_length=1`` is plain Nosé–Hoover.

    Args:
        timestep_fs: fs.
        temperature_K: K.
        time_constant_fs: thermostat period τ, fs (default 20 timesteps).
        chain_length: number of thermostats in the chain (default 3).
    """

    def __init__(
        self,
        timestep_fs: float,
        temperature_K: float,
        time_constant_fs: Optional[float] = None,
        chain_length: int = 3,
    ):
        self.timestep_fs = positive_number("timestep_fs", timestep_fs)
        self.temperature_K = positive_number("temperature_K", temperature_K)
        self.time_constant_fs = positive_number(
            "time_constant_fs", 20.0 * self.timestep_fs if time_constant_fs is None else time_constant_fs
        )
        if not isinstance(chain_length, int) or chain_length < 1:
            raise ValueError(f"chain_length must be an integer >= 1, got {chain_length!r}")
        self.chain_length = chain_length
        self.kT_eV = BOLTZMANN_EV_PER_K * self.temperature_K

    def _masses(self, n_atoms: int) -> torch.Tensor:
        """Thermostat masses ``(M,)`` in eV·fs²."""
        base = self.kT_eV * self.time_constant_fs**2
        masses = torch.full((self.chain_length,), base, dtype=torch.float64)
        masses[0] = self.degrees_of_freedom(n_atoms) * base
        return masses

    def init_state(self, state: ReplicaState, masses: torch.Tensor) -> None:
        """Thermostat positions ``chain_positions`` (dimensionless) and velocities ``chain_velocities``
        (1/fs), ``(R, M)``, start at zero."""
        shape = (state.n_replicas, self.chain_length)
        zeros = torch.zeros(shape, dtype=state.positions.dtype, device=state.positions.device)
        state.thermostat = {"chain_positions": zeros.clone(), "chain_velocities": zeros.clone()}

    def conserved_energies(self, state: ReplicaState, masses: torch.Tensor) -> torch.Tensor:
        """The extended-system energy per replica ``(R,)`` eV, conserved by the exact dynamics:
        U + K + Σ Q_j v_j²/2 + N_f kT ξ_1 + kT Σ_{j>1} ξ_j."""
        n_atoms = int(masses.shape[0])
        q = self._masses(n_atoms).to(state.positions)
        xi = state.thermostat["chain_positions"]
        v_xi = state.thermostat["chain_velocities"]
        thermostat = 0.5 * (q * v_xi**2).sum(dim=1)
        thermostat = thermostat + self.degrees_of_freedom(n_atoms) * self.kT_eV * xi[:, 0]
        thermostat = thermostat + self.kT_eV * xi[:, 1:].sum(dim=1)
        return state.potential_energies + kinetic_energies(state.velocities, masses) + thermostat

    def _chain_half_step(self, state: ReplicaState, masses: torch.Tensor) -> None:
        """Propagate the chain and rescale the velocities over dt/2."""
        n_atoms = int(masses.shape[0])
        q = self._masses(n_atoms).to(state.positions)
        n_f = self.degrees_of_freedom(n_atoms)
        kT = self.kT_eV
        M = self.chain_length
        delta = 0.5 * self.timestep_fs
        v = [column.clone() for column in state.thermostat["chain_velocities"].unbind(dim=1)]
        kinetic = kinetic_energies(state.velocities, masses)

        def force(j: int) -> torch.Tensor:
            if j == 0:
                return (2.0 * kinetic - n_f * kT) / q[0]
            return (q[j - 1] * v[j - 1] ** 2 - kT) / q[j]

        v[M - 1] = v[M - 1] + 0.5 * delta * force(M - 1)
        for j in range(M - 2, -1, -1):
            damping = torch.exp(-0.25 * delta * v[j + 1])
            v[j] = (v[j] * damping + 0.5 * delta * force(j)) * damping
        scale = torch.exp(-delta * v[0])
        state.velocities = state.velocities * scale[:, None, None]
        kinetic = kinetic * scale**2
        state.thermostat["chain_positions"] = state.thermostat["chain_positions"] + delta * torch.stack(v, dim=1)
        for j in range(M - 1):
            damping = torch.exp(-0.25 * delta * v[j + 1])
            v[j] = (v[j] * damping + 0.5 * delta * force(j)) * damping
        v[M - 1] = v[M - 1] + 0.5 * delta * force(M - 1)
        state.thermostat["chain_velocities"] = torch.stack(v, dim=1)

    def step(self, state: ReplicaState, potential, masses: torch.Tensor) -> None:
        dt = self.timestep_fs
        self._chain_half_step(state, masses)
        _kick(state, masses, 0.5 * dt)
        _drift(state, dt)
        _refresh_forces(state, potential)
        _kick(state, masses, 0.5 * dt)
        self._chain_half_step(state, masses)


class LangevinBAOAB(Integrator):
    """Langevin dynamics, BAOAB splitting (Leimkuhler–Matthews): kick, half drift, exact
    Ornstein–Uhlenbeck velocity update with friction γ, half drift, kick.

    Args:
        timestep_fs: fs.
        temperature_K: K.
        friction_per_fs: γ in 1/fs (StABlE's evaluation uses 1e-4 /fs = 0.1 /ps; default 1e-3 /fs).
        generator: random numbers for the noise (seed it for reproducible runs); on the state's device.
    """

    def __init__(
        self,
        timestep_fs: float,
        temperature_K: float,
        friction_per_fs: float = 1e-3,
        generator: Optional[torch.Generator] = None,
    ):
        self.timestep_fs = positive_number("timestep_fs", timestep_fs)
        self.temperature_K = positive_number("temperature_K", temperature_K)
        self.friction_per_fs = positive_number("friction_per_fs", friction_per_fs)
        self.generator = generator
        self.kT_eV = BOLTZMANN_EV_PER_K * self.temperature_K

    def degrees_of_freedom(self, n_atoms: int) -> int:
        """3 n_atoms: the noise also moves the centre of mass."""
        return 3 * n_atoms

    def step(self, state: ReplicaState, potential, masses: torch.Tensor) -> None:
        dt = self.timestep_fs
        _kick(state, masses, 0.5 * dt)
        _drift(state, 0.5 * dt)
        damping = math.exp(-self.friction_per_fs * dt)
        thermal_speed = torch.sqrt(self.kT_eV * ACCELERATION_A_PER_FS2 / masses)[None, :, None]  # Å/fs
        noise = torch.randn(
            state.velocities.shape, generator=self.generator, dtype=state.velocities.dtype,
            device=state.velocities.device,
        )
        state.velocities = damping * state.velocities + math.sqrt(1.0 - damping**2) * thermal_speed * noise
        _drift(state, 0.5 * dt)
        _refresh_forces(state, potential)
        _kick(state, masses, 0.5 * dt)

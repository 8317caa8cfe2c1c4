"""The batched replica simulator: R independent copies of one system, stepped together.

    simulator = ReplicaSimulator.from_positions(
        ReplicaPotential(model, numbers, device=device), start_positions_A,  # (R, n_atoms, 3) Å
        NoseHooverChain(timestep_fs=0.5, temperature_K=500.0), temperature_K=500.0, seed=0)
    trajectory = simulator.run(n_steps=2000, record_every=100)   # 1 ps, a frame every 50 fs

Units: Å, Å/fs, amu, eV, fs, K (see :mod:`mlpot.md.state`). The state lives in float64 on the
potential's device; forces are evaluated in the model's dtype and cast back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from mlpot.md.integrators import Integrator
from mlpot.md.potential import ReplicaPotential
from mlpot.md.state import ReplicaState, kinetic_energies, masses_of, maxwell_boltzmann_velocities
from mlpot.units import BOLTZMANN_EV_PER_K


@dataclass
class Trajectory:
    """Frames recorded during a run: F frames of R replicas.

    Attributes:
        times_fs: ``(F,)`` fs since the simulator was made.
        positions: ``(F, R, n_atoms, 3)`` Å.
        velocities: ``(F, R, n_atoms, 3)`` Å/fs.
        potential_energies, kinetic_energies, conserved_energies: ``(F, R)`` eV (conserved: the
            integrator's conserved quantity, e.g. the Nosé–Hoover extended energy).
    """

    times_fs: torch.Tensor
    positions: torch.Tensor
    velocities: torch.Tensor
    potential_energies: torch.Tensor
    kinetic_energies: torch.Tensor
    conserved_energies: torch.Tensor

    @property
    def n_frames(self) -> int:
        return int(self.times_fs.shape[0])


class ReplicaSimulator:
    """Steps a :class:`ReplicaState` with an integrator and a :class:`ReplicaPotential`.

    Args:
        potential: the batched model.
        integrator: ``VelocityVerlet``, ``NoseHooverChain`` or ``LangevinBAOAB`` (:mod:`mlpot.md.integrators`).
        state: the starting state (positions, velocities; forces are recomputed here).
        masses: ``(n_atoms,)`` amu (default: standard masses of the potential's elements).
    """

    def __init__(self, potential: ReplicaPotential, integrator: Integrator, state: ReplicaState,
                 masses: Optional[torch.Tensor] = None):
        self.potential = potential
        self.integrator = integrator
        dtype = state.positions.dtype
        self.masses = (
            masses_of(potential.atomic_numbers, device=potential.device, dtype=dtype)
            if masses is None
            else torch.as_tensor(masses, dtype=dtype, device=potential.device)
        )
        if self.masses.shape != (potential.n_atoms,) or not bool((self.masses > 0).all()):
            raise ValueError(f"masses must be {potential.n_atoms} positive values in amu")
        if state.velocities.shape != state.positions.shape:
            raise ValueError("velocities must have the same shape as positions, (R, n_atoms, 3)")
        self.restart_from(state)
        integrator.init_state(state, self.masses)
        self.time_fs = 0.0

    def restart_from(self, state: ReplicaState) -> None:
        """Continue from ``state`` (used as is, thermostat variables included), with its forces and
        energies recomputed at its positions by the potential's current model (e.g. after the model's
        parameters changed, or when restoring a checkpoint)."""
        if state.positions.shape != (state.n_replicas, self.potential.n_atoms, 3):
            raise ValueError(f"the state must have positions of shape (n_replicas, {self.potential.n_atoms}, 3) Å")
        energies, forces = self.potential.energies_and_forces(state.positions)
        state.forces = forces.to(state.positions.dtype)
        state.potential_energies = energies.to(state.positions.dtype)
        self.state = state

    @classmethod
    def from_positions(
        cls,
        potential: ReplicaPotential,
        positions_A: torch.Tensor,
        integrator: Integrator,
        temperature_K: float,
        seed: Optional[int] = None,
        masses: Optional[torch.Tensor] = None,
    ) -> ReplicaSimulator:
        """A simulator starting at ``positions_A`` ``(R, n_atoms, 3)`` Å with Maxwell–Boltzmann velocities
        at ``temperature_K`` (zero centre-of-mass momentum, kinetic energy exactly (3n − 3)/2 kT)."""
        positions = torch.as_tensor(positions_A, dtype=torch.float64).to(potential.device)
        if positions.dim() != 3 or positions.shape[1:] != (potential.n_atoms, 3):
            raise ValueError(
                f"start positions must have shape (n_replicas, {potential.n_atoms}, 3) Å, got {tuple(positions.shape)}"
            )
        if not bool(torch.isfinite(positions).all()):
            raise ValueError("start positions contain NaN or infinite values")
        generator = torch.Generator(device=potential.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        mass = masses_of(potential.atomic_numbers, potential.device) if masses is None else torch.as_tensor(
            masses, dtype=torch.float64, device=potential.device)
        velocities = maxwell_boltzmann_velocities(mass, positions.shape[0], temperature_K, generator)
        empty = torch.zeros(0)
        state = ReplicaState(positions=positions, velocities=velocities, forces=empty, potential_energies=empty)
        return cls(potential, integrator, state, mass)

    @property
    def n_replicas(self) -> int:
        return self.state.n_replicas

    def temperatures_K(self, kinetic_energies_eV: torch.Tensor) -> torch.Tensor:
        """Instantaneous temperature (K) of kinetic energies (eV), with the integrator's degrees of freedom."""
        dof = self.integrator.degrees_of_freedom(self.potential.n_atoms)
        return 2.0 * kinetic_energies_eV / (dof * BOLTZMANN_EV_PER_K)

    def run(self, n_steps: int, record_every: int) -> Trajectory:
        """Advance ``n_steps`` steps; record the state every ``record_every`` steps (after the step),
        so ``n_steps // record_every`` frames. Runs without building a graph for the parameters."""
        if not isinstance(n_steps, int) or n_steps < 0:
            raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
        if not isinstance(record_every, int) or record_every < 1:
            raise ValueError(f"record_every must be a positive integer (steps), got {record_every!r}")
        frames = {name: [] for name in ("times_fs", "positions", "velocities", "potential_energies",
                                        "kinetic_energies", "conserved_energies")}
        with torch.no_grad():
            for step in range(1, n_steps + 1):
                self.integrator.step(self.state, self.potential, self.masses)
                self.time_fs += self.integrator.timestep_fs
                if step % record_every == 0:
                    frames["times_fs"].append(torch.tensor(self.time_fs, dtype=torch.float64))
                    frames["positions"].append(self.state.positions.clone())
                    frames["velocities"].append(self.state.velocities.clone())
                    frames["potential_energies"].append(self.state.potential_energies.clone())
                    frames["kinetic_energies"].append(kinetic_energies(self.state.velocities, self.masses))
                    frames["conserved_energies"].append(self.integrator.conserved_energies(self.state, self.masses))
        n_atoms = self.potential.n_atoms
        empty_shapes = {"times_fs": (0,), "positions": (0, self.n_replicas, n_atoms, 3),
                        "velocities": (0, self.n_replicas, n_atoms, 3)}
        stacked = {
            name: torch.stack(values) if values else torch.zeros(empty_shapes.get(name, (0, self.n_replicas)),
                                                                 dtype=torch.float64)
            for name, values in frames.items()
        }
        return Trajectory(**stacked)

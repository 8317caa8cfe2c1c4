"""Batched controlled rollouts of a molecule in OpenMM, recorded as a :class:`~mlpot.pips.dynamics.Rollout`.

The N replicas are integrated by the controlled LangevinMiddle integrator of
:mod:`mlpot.pips.molecular.integrator`, in one of two layouts (:func:`replica_runner` picks the one
:func:`~mlpot.pips.molecular.replicas.build_replicas` chose):

- :class:`OneContextRunner` (layout ``"one-context"``, the default): the N copies of a
  :class:`~mlpot.pips.molecular.replicas.ReplicaSystem` in one Context (one ``step`` call advances all of
  them); vacuum force fields, mlpot models, and implicit solvent under a non-periodic cutoff.
- :class:`SingleCopyRunner` (layout ``"single-copy"``): the single-copy System without cutoff in one Context, the
  replicas stepped in turn (each replica's state set before its step and read after it). Each replica is exactly
  the single-copy System; the per-replica OpenMM calls cost N times the Python overhead.

Both share :meth:`ReplicaRunner.run`, the loop below; only the engine calls differ. Per step:

1. read positions and velocities of all copies;
2. evaluate the policy once for all replicas, u(x_s, v_s, t_s / T) with t_s = s dt, the state at
   the start of the step (a function of the past only, as the path weights require);
3. draw the controlled-channel kick dW_c ~ N(0, f (1 − a²) m kT) per degree of freedom from the
   torch generator, record u and dW_c, and set ``control_force = u + dW_c / dt``;
4. take one step.

**Units, end to end: OpenMM's.** Positions in nm, velocities in nm/ps, time in ps, control forces
in kJ/mol/nm, kicks dW_c in amu·nm/ps, masses in amu, kT in kJ/mol. The policy is called with
and returns these units (its ``length_scale``/``force_scale`` set what one network unit means),
so the Rollout, :func:`~mlpot.pips.dynamics.control_weight` and the path cost need no conversion.

Start velocities are Maxwell–Boltzmann at the temperature (``setVelocitiesToTemperature`` with a
seed drawn from the generator), not 0 K. With ``controlled_noise_fraction`` = 1 (default) the
integrator has no noise of its own and every random number comes from the torch generator, so a
rollout is reproducible from the generator's state.

A replica blows up when its positions or velocities stop being finite, its kinetic energy
exceeds ``blowup_kinetic_factor`` × its equipartition value, or (one Context under a cutoff) it
leaves its slot among the copies (:meth:`~mlpot.pips.molecular.replicas.ReplicaSystem.left_slot`): it
is reset to its start (so that it cannot disturb the others), receives no control any more, its
recorded entries from then on are NaN (so :meth:`Rollout.finite_paths` drops it) and a warning
names it; the count is :attr:`OpenMMRollout.dropped`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import openmm
import torch
from openmm import app

from mlpot.pips.dynamics import LangevinSettings, Rollout
from mlpot.pips.molecular.integrator import (
    MOLAR_GAS_CONSTANT_KJ_PER_MOL_PER_K,
    integrator_for,
    restart,
    set_control_forces,
    slow_step_variable,
    split_force_groups,
)
from mlpot.pips.molecular.one_core import on_one_core
from mlpot.pips.molecular.replicas import (
    DEFAULT_IMPLICIT_CUTOFF_NM,
    PlatformChoice,
    Replicas,
    ReplicaSystem,
    build_replicas,
    choose_platform,
    openmm_platform,
)
from mlpot.pips.policy import splits_inputs

ControlFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
STATE_ARRAY_COPY = "_getVectorAsNumpy"  # openmm.State's array copy (positions_and_velocities), private in OpenMM 8


@dataclass
class RolloutTimings:
    """Wall seconds of one rollout: inside OpenMM (step + getState + setting forces), inside the
    policy, and the rest (Python, numpy/torch conversion, noise, records)."""

    openmm: float = 0.0
    policy: float = 0.0
    total: float = 0.0

    @property
    def overhead(self) -> float:
        return self.total - self.openmm - self.policy


@dataclass
class OpenMMRollout:
    """The recorded paths (units in the module docstring), the number of replicas that blew up
    and the time spent where."""

    rollout: Rollout
    dropped: int
    timings: RolloutTimings = field(default_factory=RolloutTimings)

    def bookkeeping(self) -> Dict[str, float]:
        """Where the time went (wall seconds) and how many replicas blew up, as log entries."""
        return {"openmm_seconds": self.timings.openmm, "policy_seconds": self.timings.policy,
                "python_seconds": self.timings.overhead, "blown_up": self.dropped}


def concatenated(results: list[OpenMMRollout]) -> OpenMMRollout:
    """Batches of paths with the same steps as one batch: paths in order, drops and times summed."""
    first = results[0].rollout
    per_path = ("positions", "control_positions", "control_velocities", "controls", "noises", "final_velocities")
    inputs = [result.rollout.policy_inputs for result in results]
    policy_inputs = None if any(batch is None for batch in inputs) else \
        {name: torch.cat([batch[name] for batch in inputs]) for name in inputs[0]}
    rollout = Rollout(control_times=first.control_times, timestep=first.timestep, policy_inputs=policy_inputs,
                      **{name: torch.cat([getattr(result.rollout, name) for result in results]) for name in per_path})
    timings = RolloutTimings(*(sum(getattr(result.timings, name) for result in results)
                               for name in ("openmm", "policy", "total")))
    return OpenMMRollout(rollout=rollout, dropped=sum(result.dropped for result in results), timings=timings)


class ReplicaRunner:
    """Controlled rollouts of ``replicas`` (the loop, the records, blow-up handling, timings);
    subclasses hold the Context(s) and implement the four engine calls. ``mass`` (n_atoms, 1) amu."""

    def __init__(self, replicas: Replicas, settings: LangevinSettings, blowup_kinetic_factor: float = 50.0):
        self.replicas = replicas
        self.settings = settings
        self.blowup_kinetic_factor = blowup_kinetic_factor
        self.mass = torch.tensor(replicas.masses_amu, dtype=torch.float64)[:, None]  # (n_atoms, 1)
        self.platform_choice: Optional[PlatformChoice] = None  # set by replica_runner
        self.one_core = False  # step on one core (single-threaded runs; set by replica_runner; one_core.py)

    # ---- engine calls (positions (n_copies, n_atoms, 3) nm, velocities nm/ps, forces kJ/mol/nm)
    def _start(self, positions_nm: np.ndarray, temperature_K: float, seed: int) -> None:
        """Set every copy's positions and draw Maxwell–Boltzmann velocities from ``seed``."""
        raise NotImplementedError

    def _state(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions and velocities of every copy, each (n_copies, n_atoms, 3)."""
        raise NotImplementedError

    def _step(self, control_forces: np.ndarray) -> None:
        """One step of every copy with the extra forces (n_copies, n_atoms, 3)."""
        raise NotImplementedError

    def _reset(self, copies: np.ndarray, positions_nm: np.ndarray, velocities: np.ndarray) -> None:
        """Put the copies flagged in ``copies`` (n_copies,) bool at these positions and velocities."""
        raise NotImplementedError

    def _left_slot(self, positions: np.ndarray) -> np.ndarray:
        """bool (n_copies,): the copy could feel another one (never, unless copies share a Context);
        ``positions`` may hold NaN."""
        return np.zeros(len(positions), dtype=bool)

    # ---- the loop
    def _blown_up(self, positions: np.ndarray, velocities: np.ndarray) -> np.ndarray:
        kinetic = 0.5 * np.einsum("a,nad,nad->n", self.replicas.masses_amu, velocities, velocities)
        finite = np.isfinite(positions.sum(axis=(1, 2)) + kinetic)  # NaN or inf anywhere makes the sum so
        limit = self.blowup_kinetic_factor * 1.5 * self.replicas.n_atoms * self.settings.kT
        return ~finite | (kinetic > limit) | self._left_slot(positions)

    def run(self, control: ControlFunction, start_positions_nm: np.ndarray, n_steps: int,
            generator: torch.Generator, record_policy_inputs: bool = False) -> OpenMMRollout:
        """``n_steps`` controlled steps of every replica from ``start_positions_nm`` (n_atoms, 3), on one core
        if :attr:`one_core` (:mod:`mlpot.pips.molecular.one_core`). ``record_policy_inputs``: also record the
        control's θ-independent inputs at every step (:attr:`Rollout.policy_inputs`), if it
        :func:`~mlpot.pips.policy.splits_inputs`, so that the loss need not compute them again."""
        with on_one_core(self.one_core):
            return self._run(control, start_positions_nm, n_steps, generator, record_policy_inputs)

    def _run(self, control: ControlFunction, start_positions_nm: np.ndarray, n_steps: int,
             generator: torch.Generator, record_policy_inputs: bool) -> OpenMMRollout:
        timings = RolloutTimings()
        started = time.perf_counter()
        replicas, settings, dt = self.replicas, self.settings, self.settings.timestep
        n_paths, n_atoms = replicas.n_copies, replicas.n_atoms
        if np.shape(start_positions_nm) != (n_atoms, 3):
            raise ValueError(f"start positions have shape {np.shape(start_positions_nm)}; the molecule needs "
                             f"({n_atoms}, 3) in nm")
        start = np.broadcast_to(start_positions_nm, (n_paths, n_atoms, 3))
        kick_std = torch.sqrt(settings.kick_variances(self.mass)[0])  # (n_atoms, 1)
        seed = int(torch.randint(1, 2**30, (1,), generator=generator))
        # every entry is written below (NaN for a replica from its blow-up on), so no NaN fill of ~50 MB per record
        shape = (n_paths, n_steps, n_atoms, 3)
        record = {name: torch.empty(shape, dtype=torch.float64)
                  for name in ("control_positions", "control_velocities", "controls", "noises")}
        positions_record = torch.empty((n_paths, n_steps + 1, n_atoms, 3), dtype=torch.float64)
        inputs_record: Dict[str, torch.Tensor] = {}
        splits = splits_inputs(control)
        record_inputs = record_policy_inputs and splits
        control_times = torch.arange(n_steps, dtype=torch.float64) * dt
        alive = np.ones(n_paths, dtype=bool)
        dead: Optional[torch.Tensor] = None  # (n_paths,) bool once a replica has blown up

        clock = time.perf_counter()
        self._start(start, settings.kT / MOLAR_GAS_CONSTANT_KJ_PER_MOL_PER_K, seed)
        positions, velocities = self._state()
        timings.openmm += time.perf_counter() - clock
        positions_record[:, 0] = torch.from_numpy(positions)
        for step in range(n_steps):
            x, v = torch.from_numpy(positions), torch.from_numpy(velocities)
            time_fraction = torch.full((n_paths,), step / n_steps, dtype=torch.float64)
            clock = time.perf_counter()
            # inference mode keeps no autograd bookkeeping at all (~0.1 ms less per step for 16 chignolin replicas); a
            # policy that does not split may differentiate inside (the distance-energy one does), so it runs in no_grad
            with torch.inference_mode() if splits else torch.no_grad():
                if record_inputs:
                    inputs = control.invariant_inputs(x, v, time_fraction)
                    u = control.controls_from_inputs(inputs)
                else:
                    u = control(x, v, time_fraction)
            timings.policy += time.perf_counter() - clock
            kick = kick_std * torch.randn(x.shape, generator=generator, dtype=torch.float64)
            push = (u + kick / dt).numpy() if dead is None else (u + kick / dt).numpy() * alive[:, None, None]
            for name, value in (("control_positions", x), ("control_velocities", v), ("controls", u),
                                ("noises", kick)):
                record[name][:, step] = _blanked(value, dead)
            if record_inputs:
                for name, value in inputs.items():
                    if name not in inputs_record:
                        inputs_record[name] = torch.empty((n_paths, n_steps, *value.shape[1:]), dtype=value.dtype)
                    inputs_record[name][:, step] = _blanked(value, dead)
            clock = time.perf_counter()
            self._step(push)
            positions, velocities = self._state()
            timings.openmm += time.perf_counter() - clock
            blown = self._blown_up(positions, velocities) & alive
            if blown.any():
                clock = time.perf_counter()
                self._drop(blown, step, start, positions, velocities)
                timings.openmm += time.perf_counter() - clock
                alive &= ~blown
                dead = torch.from_numpy(~alive)
            positions_record[:, step + 1] = _blanked(torch.from_numpy(positions), dead)
        final_velocities = _blanked(torch.from_numpy(velocities.copy()), dead)
        rollout = Rollout(positions=positions_record, control_times=control_times,
                          final_velocities=final_velocities, timestep=dt, policy_inputs=inputs_record or None,
                          **record)
        timings.total = time.perf_counter() - started
        return OpenMMRollout(rollout=rollout, dropped=int((~alive).sum()), timings=timings)

    def _drop(self, blown: np.ndarray, step: int, start: np.ndarray, positions: np.ndarray,
              velocities: np.ndarray) -> None:
        """Reset the blown-up replicas to their start at rest (positions/velocities updated in place)."""
        warnings.warn(f"PIPS rollout: replica(s) {np.flatnonzero(blown).tolist()} blew up at step {step + 1} "
                      "(non-finite, exploding kinetic energy or out of its slot among the copies); dropped from this "
                      "iteration", RuntimeWarning)
        positions[blown] = start[blown]
        velocities[blown] = 0.0
        self._reset(blown, positions, velocities)


def _blanked(values: torch.Tensor, dead: Optional[torch.Tensor]) -> torch.Tensor:
    """``values`` (n_paths, ...) with the rows of ``dead`` (n_paths,) bool replicas NaN (``values`` itself if None)."""
    if dead is None:
        return values
    return values.masked_fill(dead.view(-1, *[1] * (values.dim() - 1)), torch.nan)


def positions_and_velocities(context: openmm.Context, n_particles: int, positions_nm: Optional[np.ndarray] = None,
                              velocities_nm_ps: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """The Context's positions (nm) and velocities (nm/ps), each (n_particles, 3), written into the
    given arrays if any. ``State.getPositions(asNumpy=True)`` lists the State's attributes and wraps
    the array in units on every call (~25 µs for 54 atoms, as much again for velocities: 0.4 s of a
    16 × 1000-step iteration with one Context per replica); the State's own array copy is ~1 µs. Falls
    back to the public calls where that copy is missing."""
    positions_nm = np.empty((n_particles, 3)) if positions_nm is None else positions_nm
    velocities_nm_ps = np.empty((n_particles, 3)) if velocities_nm_ps is None else velocities_nm_ps
    state = context.getState(getPositions=True, getVelocities=True)
    copy_into = getattr(state, STATE_ARRAY_COPY, None)
    if copy_into is None:
        positions_nm[...] = state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer)
        velocities_nm_ps[...] = state.getVelocities(asNumpy=True).value_in_unit(openmm.unit.nanometer
                                                                               / openmm.unit.picosecond)
    else:
        copy_into(openmm.State.Positions, positions_nm)
        copy_into(openmm.State.Velocities, velocities_nm_ps)
    return positions_nm, velocities_nm_ps


class OneContextRunner(ReplicaRunner):
    """One Context over a :class:`ReplicaSystem` with the controlled integrator, reused for every rollout."""

    def __init__(self, replicas: ReplicaSystem, settings: LangevinSettings, platform: str = "CPU",
                 threads: int = 1, blowup_kinetic_factor: float = 50.0, slow_force_interval: int = 1):
        super().__init__(replicas, settings, blowup_kinetic_factor)
        if slow_force_interval > 1:
            split_force_groups(replicas.system)
        self.integrator = integrator_for(replicas.system, settings, slow_force_interval)
        self.integrator.setRandomNumberSeed(1)
        chosen, properties = openmm_platform(platform, threads)
        self.context = openmm.Context(replicas.system, self.integrator, chosen, properties)

    def _start(self, positions_nm: np.ndarray, temperature_K: float, seed: int) -> None:
        restart(self.integrator)
        self.context.setPositions(self.replicas.stacked_positions(positions_nm))
        self.context.setVelocitiesToTemperature(temperature_K, seed)

    def _state(self) -> tuple[np.ndarray, np.ndarray]:
        n_particles = self.replicas.n_copies * self.replicas.n_atoms
        positions, velocities = positions_and_velocities(self.context, n_particles)
        positions = self.replicas.per_copy(positions)
        return positions, velocities.reshape(positions.shape)

    def _step(self, control_forces: np.ndarray) -> None:
        set_control_forces(self.integrator, control_forces.reshape(-1, 3))
        self.integrator.step(1)

    def _reset(self, copies: np.ndarray, positions_nm: np.ndarray, velocities: np.ndarray) -> None:
        self.context.setPositions(self.replicas.stacked_positions(positions_nm))
        self.context.setVelocities(velocities.reshape(-1, 3))

    def _left_slot(self, positions: np.ndarray) -> np.ndarray:
        return self.replicas.left_slot(np.nan_to_num(positions))


class SingleCopyRunner(ReplicaRunner):
    """The replicas as copies of the single-copy System (no cutoff), stepped in turn through one Context and one
    controlled integrator, reused for every rollout: before its step a replica's positions and velocities (and the
    r-RESPA step counter) are set, after it they are read back. Copy k's velocities are drawn from seed + k.

    The CPU and Reference platforms keep positions and velocities in double precision, so this is exactly one Context
    per replica (the same trajectories, bit for bit: tested; a GPU platform in single precision rounds a replica's
    state to float32 when it is set, as its own steps do) at a fraction of the cost: setting a 138-atom state takes
    ~2 µs, while 16 Contexts, each with the CPU platform's worker thread, take turns in the caches (chignolin,
    16 × 1000 steps: 0.4 s less per iteration). With a thermal-noise fraction (``controlled_noise_fraction`` < 1), the
    integrator's own Gaussian stream runs on from replica to replica, so no two replicas draw the same numbers."""

    def __init__(self, replicas: Replicas, settings: LangevinSettings, platform: str = "CPU",
                 threads: int = 1, blowup_kinetic_factor: float = 50.0, slow_force_interval: int = 1):
        super().__init__(replicas, settings, blowup_kinetic_factor)
        chosen, properties = openmm_platform(platform, threads)
        if slow_force_interval > 1:
            split_force_groups(replicas.single_system)
        self.integrator = integrator_for(replicas.single_system, settings, slow_force_interval)
        self.integrator.setRandomNumberSeed(1)
        self.context = openmm.Context(replicas.single_system, self.integrator, chosen, properties)
        self.slow_step_index = slow_step_variable(self.integrator)  # None without r-RESPA
        shape = (replicas.n_copies, replicas.n_atoms, 3)
        self.positions_nm, self.velocities_nm_ps = np.zeros(shape), np.zeros(shape)  # every replica's state

    def _start(self, positions_nm: np.ndarray, temperature_K: float, seed: int) -> None:
        restart(self.integrator)
        for copy in range(self.replicas.n_copies):
            self.context.setPositions(positions_nm[copy])
            self.context.setVelocitiesToTemperature(temperature_K, seed + copy)
            positions_and_velocities(self.context, self.replicas.n_atoms, self.positions_nm[copy],
                                     self.velocities_nm_ps[copy])

    def _state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.positions_nm.copy(), self.velocities_nm_ps.copy()

    def _step(self, control_forces: np.ndarray) -> None:
        index = self.slow_step_index
        steps_since_slow = None if index is None else self.integrator.getGlobalVariable(index)
        for copy, forces in enumerate(control_forces):
            self.context.setPositions(self.positions_nm[copy])
            self.context.setVelocities(self.velocities_nm_ps[copy])
            if index is not None:  # every replica takes this step's place in the r-RESPA cycle
                self.integrator.setGlobalVariable(index, steps_since_slow)
            set_control_forces(self.integrator, forces)
            self.integrator.step(1)
            positions_and_velocities(self.context, self.replicas.n_atoms, self.positions_nm[copy],
                                     self.velocities_nm_ps[copy])

    def _reset(self, copies: np.ndarray, positions_nm: np.ndarray, velocities: np.ndarray) -> None:
        self.positions_nm[copies] = positions_nm[copies]
        self.velocities_nm_ps[copies] = velocities[copies]


def replica_runner(topology: app.Topology, start_positions_nm: np.ndarray, n_copies: int,
                   settings: LangevinSettings, forcefield_files=("amber14-all.xml",), model: Optional[Path] = None,
                   platform: str = "auto", threads: int = 1, layout: str = "one-context",
                   cutoff_nm: float = DEFAULT_IMPLICIT_CUTOFF_NM, slow_force_interval: int = 1) -> ReplicaRunner:
    """The runner for ``n_copies`` replicas of ``topology`` in the force field ``forcefield_files``
    (or the mlpot ``model`` file) in ``layout``: ``"one-context"`` (implicit solvent under
    ``CutoffNonPeriodic`` at ``cutoff_nm``) or ``"single-copy"`` (no cutoff); see
    :func:`~mlpot.pips.molecular.replicas.build_replicas`. ``start_positions_nm`` (n_atoms, 3) sizes the molecule.
    ``platform``: an OpenMM platform name, or ``"auto"`` for the fastest one for these replicas here
    (:func:`~mlpot.pips.molecular.replicas.choose_platform`; the runner's ``platform_choice`` says which).
    ``slow_force_interval``: the non-bonded forces act every n-th step (:mod:`mlpot.pips.molecular.integrator`).
    With ``threads`` = 1 the rollouts (and the platform trial) run on one core
    (:mod:`mlpot.pips.molecular.one_core`)."""
    replicas = build_replicas(topology, start_positions_nm, n_copies, forcefield_files, model, layout=layout,
                              cutoff_nm=cutoff_nm)
    start = np.asarray(start_positions_nm, dtype=float)
    system = replicas.system if isinstance(replicas, ReplicaSystem) else replicas.single_system
    if slow_force_interval > 1:
        split_force_groups(system)  # so that the platform trial times the integrator the rollouts use
    trial_integrator = lambda: integrator_for(system, settings, slow_force_interval)  # noqa: E731
    if isinstance(replicas, ReplicaSystem):
        choice = choose_platform(system, replicas.stacked_positions(np.broadcast_to(start, (n_copies, *start.shape))),
                                 platform, threads, integrator=trial_integrator)
        runner = OneContextRunner(replicas, settings, choice.name, threads, slow_force_interval=slow_force_interval)
    else:
        choice = choose_platform(system, start, platform, threads, integrator=trial_integrator)
        runner = SingleCopyRunner(replicas, settings, choice.name, threads,
                                         slow_force_interval=slow_force_interval)
    runner.platform_choice = choice
    runner.one_core = threads == 1
    return runner

"""Run molecular dynamics with an mlpot model through an engine (OpenMM or ASE).

``run_md`` is what ``mlpot md`` calls. Both engines integrate Langevin dynamics at a given
temperature, write a DCD trajectory (OpenMM's DCD writer, read with mdtraj) with a PDB topology beside it, show a progress bar,
and report speed in ns/day. Every ``report_interval`` steps the state is checked; a non-finite
energy or position, or a temperature far above the target, stops the run with
:class:`SimulationUnstableError` naming the step, after the frames so far have been written.
With OpenMM, a checkpoint is written at each report so ``resume=True`` continues an interrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from mlpot.units import BOLTZMANN_EV_PER_K

ENGINES = ("openmm", "ase")


class SimulationUnstableError(RuntimeError):
    """The simulated system blew up (non-finite energy or positions, or runaway temperature)."""


@dataclass
class MDResult:
    engine: str
    system: str
    n_atoms: int
    steps: int
    timestep_fs: float
    wall_seconds: float
    steps_per_second: float
    ns_per_day: float
    final_potential_energy_eV: float
    final_temperature_K: float
    trajectory: str
    topology: str

    def as_dict(self) -> dict:
        return asdict(self)


def ns_per_day(steps: int, timestep_fs: float, seconds: float) -> float:
    """Simulated nanoseconds per day of wall time."""
    return steps * timestep_fs * 1e-6 / seconds * 86400.0 if seconds > 0 else float("nan")


def _check_stable(step: int, energy_eV: float, positions: np.ndarray, temperature_K: float, max_temperature_K: float) -> None:
    if not math.isfinite(energy_eV) or not np.all(np.isfinite(positions)):
        raise SimulationUnstableError(
            f"simulation blew up at step {step}: the potential energy or positions are no longer finite "
            f"(energy {energy_eV} eV); try a smaller time step or check the model on this system"
        )
    if temperature_K > max_temperature_K:
        raise SimulationUnstableError(
            f"simulation blew up at step {step}: the temperature reached {temperature_K:.0f} K "
            f"(limit {max_temperature_K:.0f} K); try a smaller time step or check the model on this system"
        )


def run_md(
    model: Union[str, Path],
    system: str,
    engine: str = "openmm",
    steps: int = 1000,
    temperature_K: float = 300.0,
    timestep_fs: float = 0.5,
    friction_per_ps: float = 1.0,
    out: Union[str, Path] = "traj.dcd",
    report_interval: int = 100,
    seed: int = 0,
    platform: Optional[str] = None,
    device: str = "cpu",
    max_temperature_K: Optional[float] = None,
    resume: bool = False,
    progress: bool = True,
) -> MDResult:
    """Simulate the named system (or a PDB path) with the model; see the module docstring.

    Args:
        model: model file.
        system: a name from :mod:`mlpot.systems` or a PDB path.
        engine: ``openmm`` (TorchForce; no Python in the force loop) or ``ase`` (MLPotCalculator).
        steps, timestep_fs, temperature_K, friction_per_ps: Langevin dynamics settings.
        out: DCD path; the topology goes to the same path with suffix ``.pdb``.
        report_interval: steps between frames, stability checks and checkpoints.
        platform: OpenMM platform name (default: CUDA if available, else CPU).
        device: torch device for the ASE engine.
        max_temperature_K: above this the run is stopped as unstable (default max(10 T, 3000 K)).
        resume: continue from the checkpoint ``out.chk`` written by an earlier OpenMM run.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    if steps <= 0 or report_interval <= 0:
        raise ValueError("steps and report_interval must be positive")
    if max_temperature_K is None:
        max_temperature_K = max(10.0 * temperature_K, 3000.0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runner = _run_openmm if engine == "openmm" else _run_ase
    return runner(
        model=model, system=system, steps=steps, temperature_K=temperature_K, timestep_fs=timestep_fs,
        friction_per_ps=friction_per_ps, out=out, report_interval=report_interval, seed=seed,
        platform=platform, device=device, max_temperature_K=max_temperature_K, resume=resume, progress=progress,
    )


class TrajectoryWriter:
    """DCD frames (OpenMM's DCD writer: readable by mdtraj, VMD, MDAnalysis; it can append on resume)."""

    def __init__(self, path: Path, topology, timestep_fs: float, interval: int, append: bool = False):
        from openmm import app, unit

        self._unit = unit
        self._handle = open(path, "r+b" if append else "wb")
        self._dcd = app.DCDFile(self._handle, topology, timestep_fs * unit.femtosecond, interval=interval,
                                append=append)

    def write(self, positions_A: np.ndarray, cell_A: Optional[np.ndarray] = None) -> None:
        """One frame: positions ``(n_atoms, 3)`` Å and, for periodic systems, the cell ``(3, 3)`` Å."""
        from openmm import Vec3

        unit = self._unit
        box = None if cell_A is None else [Vec3(*row) for row in np.asarray(cell_A) * 0.1] * unit.nanometer
        self._dcd.writeModel(np.asarray(positions_A) * unit.angstrom, periodicBoxVectors=box)

    def close(self) -> None:
        self._handle.close()


@dataclass
class Snapshot:
    """The state after a chunk of steps, in model units."""

    energy_eV: float
    temperature_K: float
    positions_A: np.ndarray
    cell_A: Optional[np.ndarray]


def _drive(engine: str, system_name: str, topology, advance: Callable[[int], Snapshot], *, steps: int, first_step: int,
           report_interval: int, timestep_fs: float, out: Path, append: bool, max_temperature_K: float,
           progress: bool, after_report: Callable[[], None] = lambda: None) -> MDResult:
    """The loop both engines share: advance a chunk, check stability, write a frame, report, repeat."""
    from tqdm import tqdm

    writer = TrajectoryWriter(out, topology, timestep_fs, report_interval, append=append)
    bar = tqdm(total=steps, initial=first_step, unit="step", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    done = first_step
    snapshot = Snapshot(float("nan"), float("nan"), np.empty((0, 3)), None)
    try:
        while done < steps:
            chunk = min(report_interval, steps - done)
            snapshot = advance(chunk)
            done += chunk
            _check_stable(done, snapshot.energy_eV, snapshot.positions_A, snapshot.temperature_K, max_temperature_K)
            writer.write(snapshot.positions_A, snapshot.cell_A)
            after_report()
            bar.set_postfix(E_eV=f"{snapshot.energy_eV:.3f}", T_K=f"{snapshot.temperature_K:.0f}")
            bar.update(chunk)
    finally:
        bar.close()
        writer.close()
    seconds = time.perf_counter() - start
    ran = done - first_step
    return MDResult(engine, system_name, topology.getNumAtoms(), ran, timestep_fs, seconds, ran / seconds,
                    ns_per_day(ran, timestep_fs, seconds), snapshot.energy_eV, snapshot.temperature_K, str(out),
                    str(out.with_suffix(".pdb")))


def _write_topology(path: Path, topology, positions) -> None:
    from openmm import app

    with open(path, "w") as handle:
        app.PDBFile.writeFile(topology, positions, handle)


def _run_openmm(*, model, system, steps, temperature_K, timestep_fs, friction_per_ps, out, report_interval, seed,
                platform, device, max_temperature_K, resume, progress) -> MDResult:
    import openmm
    from openmm import app, unit

    from mlpot.plugins.openmm import create_system
    from mlpot.systems import get_system, load_openmm
    from mlpot.units import KJ_PER_MOL_PER_EV

    spec = get_system(system)
    topology, positions = load_openmm(system)
    omm_system = create_system(model, topology)
    integrator = openmm.LangevinMiddleIntegrator(
        temperature_K * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed)
    if platform is None:
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        platform = "CUDA" if "CUDA" in names else "CPU"
    simulation = app.Simulation(topology, omm_system, integrator, openmm.Platform.getPlatformByName(platform))
    checkpoint = out.with_suffix(out.suffix + ".chk")
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"cannot resume: no checkpoint {checkpoint} from an earlier run")
        simulation.loadCheckpoint(str(checkpoint))
    else:
        simulation.context.setPositions(positions)
        simulation.context.setVelocitiesToTemperature(temperature_K * unit.kelvin, seed)
        simulation.currentStep = 0
        _write_topology(out.with_suffix(".pdb"), topology, positions)
    if simulation.currentStep >= steps:
        raise ValueError(f"the checkpoint is already at step {simulation.currentStep} >= requested {steps} steps")
    n_dof = 3 * topology.getNumAtoms() - 3
    periodic = topology.getPeriodicBoxVectors() is not None

    def advance(chunk: int) -> Snapshot:
        simulation.step(chunk)
        state = simulation.context.getState(getEnergy=True, getPositions=True)
        kinetic_eV = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL_PER_EV
        return Snapshot(
            energy_eV=state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL_PER_EV,
            temperature_K=2.0 * kinetic_eV / (n_dof * BOLTZMANN_EV_PER_K),
            positions_A=state.getPositions(asNumpy=True).value_in_unit(unit.angstrom),
            cell_A=state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom) if periodic else None,
        )

    return _drive("openmm", spec.name, topology, advance, steps=steps, first_step=simulation.currentStep,
                  report_interval=report_interval, timestep_fs=timestep_fs, out=out, append=resume and out.exists(),
                  max_temperature_K=max_temperature_K, progress=progress,
                  after_report=lambda: simulation.saveCheckpoint(str(checkpoint)))


def _run_ase(*, model, system, steps, temperature_K, timestep_fs, friction_per_ps, out, report_interval, seed,
             platform, device, max_temperature_K, resume, progress) -> MDResult:
    from ase import units as ase_units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    from mlpot.plugins.ase import MLPotCalculator
    from mlpot.systems import get_system, load_atoms, load_openmm

    if resume:
        raise NotImplementedError("resume is supported with engine='openmm' only")
    spec = get_system(system)
    atoms = load_atoms(system)
    atoms.calc = MLPotCalculator(model, device=device)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())
    dynamics = Langevin(atoms, timestep_fs * ase_units.fs, temperature_K=temperature_K,
                        friction=friction_per_ps / (1000.0 * ase_units.fs), fixcm=False, rng=rng)
    topology, positions = load_openmm(system)
    _write_topology(out.with_suffix(".pdb"), topology, positions)

    def advance(chunk: int) -> Snapshot:
        dynamics.run(chunk)
        return Snapshot(
            energy_eV=float(atoms.get_potential_energy()),
            temperature_K=float(atoms.get_temperature()),
            positions_A=atoms.positions.copy(),
            cell_A=np.asarray(atoms.cell) if atoms.pbc.any() else None,
        )

    return _drive("ase", spec.name, topology, advance, steps=steps, first_step=0, report_interval=report_interval,
                  timestep_fs=timestep_fs, out=out, append=False, max_temperature_K=max_temperature_K,
                  progress=progress)

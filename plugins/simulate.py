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
from typing import Optional, Union

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


def _ns_per_day(steps: int, timestep_fs: float, seconds: float) -> float:
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


def _progress_bar(total: int, enabled: bool, initial: int = 0):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", disable=not enabled, dynamic_ncols=True)


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
    topology_path = out.with_suffix(".pdb")
    if resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"cannot resume: no checkpoint {checkpoint} from an earlier run")
        simulation.loadCheckpoint(str(checkpoint))
    else:
        simulation.context.setPositions(positions)
        simulation.context.setVelocitiesToTemperature(temperature_K * unit.kelvin, seed)
        simulation.currentStep = 0
        with open(topology_path, "w") as handle:
            app.PDBFile.writeFile(topology, positions, handle)
    done = simulation.currentStep
    if done >= steps:
        raise ValueError(f"the checkpoint is already at step {done} >= requested {steps} steps")
    writer = TrajectoryWriter(out, topology, timestep_fs, report_interval, append=resume and out.exists())
    n_dof = 3 * topology.getNumAtoms() - 3
    bar = _progress_bar(steps, progress, initial=done)
    start = time.perf_counter()
    start_step = done
    energy_eV = temperature = float("nan")
    try:
        while done < steps:
            chunk = min(report_interval, steps - done)
            simulation.step(chunk)
            done += chunk
            state = simulation.context.getState(getEnergy=True, getPositions=True)
            energy_eV = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL_PER_EV
            kinetic_eV = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL_PER_EV
            temperature = 2.0 * kinetic_eV / (n_dof * BOLTZMANN_EV_PER_K)
            positions_A = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
            _check_stable(done, energy_eV, positions_A, temperature, max_temperature_K)
            cell_A = None
            if topology.getPeriodicBoxVectors() is not None:
                cell_A = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom)
            writer.write(positions_A, cell_A)
            simulation.saveCheckpoint(str(checkpoint))
            bar.set_postfix(E_eV=f"{energy_eV:.3f}", T_K=f"{temperature:.0f}")
            bar.update(chunk)
    finally:
        bar.close()
        writer.close()
    seconds = time.perf_counter() - start
    ran = done - start_step
    return MDResult("openmm", spec.name, topology.getNumAtoms(), ran, timestep_fs, seconds, ran / seconds,
                    _ns_per_day(ran, timestep_fs, seconds), energy_eV, temperature, str(out), str(topology_path))


def _run_ase(*, model, system, steps, temperature_K, timestep_fs, friction_per_ps, out, report_interval, seed,
             platform, device, max_temperature_K, resume, progress) -> MDResult:
    from ase import units as ase_units
    from ase.md.langevin import Langevin
    from ase.constraints import FixCom
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
    topology_path = out.with_suffix(".pdb")
    from openmm import app

    with open(topology_path, "w") as handle:
        app.PDBFile.writeFile(topology, positions, handle)
    bar = _progress_bar(steps, progress)
    start = time.perf_counter()
    done = 0
    energy_eV = temperature = float("nan")
    writer = TrajectoryWriter(out, topology, timestep_fs, report_interval)
    try:
        while done < steps:
            chunk = min(report_interval, steps - done)
            dynamics.run(chunk)
            done += chunk
            energy_eV = float(atoms.get_potential_energy())
            temperature = float(atoms.get_temperature())
            _check_stable(done, energy_eV, atoms.positions, temperature, max_temperature_K)
            writer.write(atoms.positions, np.asarray(atoms.cell) if atoms.pbc.any() else None)
            bar.set_postfix(E_eV=f"{energy_eV:.3f}", T_K=f"{temperature:.0f}")
            bar.update(chunk)
    finally:
        bar.close()
        writer.close()
    seconds = time.perf_counter() - start
    return MDResult("ase", spec.name, len(atoms), done, timestep_fs, seconds, done / seconds,
                    _ns_per_day(done, timestep_fs, seconds), energy_eV, temperature, str(out), str(topology_path))

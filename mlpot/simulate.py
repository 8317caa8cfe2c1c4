"""Run molecular dynamics with an mlpot model through an engine (OpenMM or ASE).

``run_md`` is what ``mlpot md`` calls. Both engines integrate Langevin dynamics at a given temperature,
write a DCD trajectory (OpenMM's DCD writer, read with mdtraj) with a PDB topology beside it, show a progress
bar, and report speed in ns/day. Positions are Å and energies eV here; the engines' own units stay inside them.

Blow-ups. A thermostat can make a blown-up run look healthy (atoms hundreds of Å apart, reheated to 300 K),
so the run is judged on positions against the start structure (:class:`BlowUpCheck`), every
:data:`CHECK_EVERY_STEPS` steps and at each report:

* every position finite;
* no covalent bond of the start structure longer or shorter than at the start by more than
  :data:`BOND_CHANGE_LIMIT_A` (1 Å: no bond of a molecule survives that; :mod:`mlpot.md.stability`'s criterion,
  which StABlE uses with its stricter 0.25/0.5 Å);
* no atom faster, on average since the last check, than :data:`SPEED_LIMIT_FACTOR` × its rms thermal speed
  at the temperature limit (an H atom: 0.35 Å/fs at 3000 K);
* at reports: no two atoms closer than :data:`CONTACT_LIMIT_A` (0.5 Å; minimum image in orthorhombic boxes),
  a finite energy, and a temperature below the limit (default max(10 T, 3000 K)).

The first failed test stops the run with :class:`SimulationUnstableError` naming the step, the time, the atoms
and what went wrong; the trajectory keeps the frames written before it. A time step above
:func:`max_sane_timestep_fs` (1 fs with hydrogen, up to 4 fs for heavier lightest atoms) gets a
:class:`TimestepWarning`.

Run files, beside the trajectory ``traj.dcd``: ``traj.pdb`` (topology), ``traj.dcd.run.json`` (the run record:
the settings a resume must keep, the model file's sha256, steps and frames done, and the sha256 of the last two
checkpoints), ``traj.dcd.chk`` (OpenMM checkpoint, replaced atomically at each report) and ``.traj.dcd.lock``
(held while a process writes them). A new run refuses to replace an earlier one unless ``overwrite=True``;
``resume=True`` refuses changed settings (listing every difference), a checkpoint that matches neither
checkpoint of the record (truncated, empty, foreign), and a trajectory shorter than the checkpoint; frames
written after the checkpoint (or a partial last frame) are cut off, so the resumed file reads as one trajectory.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from mlpot.units import BOLTZMANN_EV_PER_K, EV_PER_AMU_A2_PER_FS2, FS_PER_PS, NM_PER_ANGSTROM

ENGINES = ("openmm", "ase")

CHECK_EVERY_STEPS = 10  # positions-only checks between reports (cheap: one copy of the positions)
BOND_CHANGE_LIMIT_A = 1.0
CONTACT_LIMIT_A = 0.5  # the shortest bond there is, H2's, is 0.74 Å
SPEED_LIMIT_FACTOR = 4.0
HYDROGEN_MASS_AMU = 1.008
MAX_TIMESTEP_FS = 4.0
RECORD_KIND = "mlpot md run"
RECORD_VERSION = 1


class SimulationUnstableError(RuntimeError):
    """The simulated system blew up (non-finite values, broken bonds, collapsed atoms, runaway atoms or
    temperature)."""


class TimestepWarning(UserWarning):
    """The time step is too long for the lightest atom's vibrations."""


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


def max_sane_timestep_fs(masses_amu: np.ndarray) -> float:
    """The longest time step, fs, that resolves the fastest bond vibration without constraints: 1 fs for
    hydrogen, scaled by sqrt(lightest mass / 1.008 amu) for heavier lightest atoms, at most 4 fs."""
    lightest = float(np.min(masses_amu))
    return min(MAX_TIMESTEP_FS, math.sqrt(lightest / HYDROGEN_MASS_AMU))


def rms_thermal_speed_A_per_fs(masses_amu: np.ndarray, temperature_K: float) -> np.ndarray:
    """sqrt(3 k T / m) per atom, Å/fs, for masses ``(n_atoms,)`` amu."""
    return np.sqrt(3.0 * BOLTZMANN_EV_PER_K * temperature_K / (np.asarray(masses_amu) * EV_PER_AMU_A2_PER_FS2))


# ------------------------------------------------------------------------------------------ blow-ups
@dataclass
class Snapshot:
    """The state after a chunk of steps, in model units."""

    energy_eV: float
    temperature_K: float
    positions_A: np.ndarray
    cell_A: Optional[np.ndarray]


class BlowUpCheck:
    """Whether a run has blown up, judged against its start structure (see the module docstring).

    Args:
        atoms: the start structure (``ase.Atoms``, Å; cell and pbc as simulated).
        timestep_fs: the integration time step.
        max_temperature_K: the temperature limit; also sets the speed limit.
        bond_change_limit_A: largest allowed |bond length − start length|; None: no bond check (reactive runs).
    """

    def __init__(self, atoms, timestep_fs: float, max_temperature_K: float,
                 bond_change_limit_A: Optional[float] = BOND_CHANGE_LIMIT_A):
        from mlpot.md.observables import bond_lengths, covalent_bonds
        from mlpot.md.stability import BondLengthCriterion, MinimumDistanceCriterion

        self.timestep_fs = timestep_fs
        self.max_temperature_K = max_temperature_K
        self.symbols = atoms.get_chemical_symbols()
        start = torch.tensor(atoms.positions, dtype=torch.float64)
        self.bonds: Optional[BondLengthCriterion] = None
        if bond_change_limit_A is not None:
            try:
                bonds = covalent_bonds(atoms.numbers, start)
            except ValueError:  # no covalent bonds (noble gas, ions): nothing to check
                bonds = None
            if bonds is not None:
                self.bonds = BondLengthCriterion(bonds, bond_lengths(start, bonds), bond_change_limit_A)
        self.contacts = MinimumDistanceCriterion(torch.arange(len(atoms)), threshold_A=CONTACT_LIMIT_A,
                                                 cell=_orthorhombic_cell(atoms))
        self.speed_limit_A_per_fs = SPEED_LIMIT_FACTOR * rms_thermal_speed_A_per_fs(atoms.get_masses(),
                                                                                    max_temperature_K)
        self._last_positions_A = np.asarray(atoms.positions, dtype=np.float64)
        self._last_step = 0

    def start_from(self, step: int, positions_A: np.ndarray) -> None:
        """Measure displacements from these positions ``(n_atoms, 3)`` Å at ``step`` (a run's start or resume)."""
        self._last_positions_A = np.array(positions_A, dtype=np.float64)
        self._last_step = step

    def _atom(self, index: int) -> str:
        return f"{index} ({self.symbols[index]})"

    def problem_in_positions(self, step: int, positions_A: np.ndarray) -> Optional[str]:
        """What is wrong with the positions ``(n_atoms, 3)`` Å at ``step`` (finite, bonds, speeds), or None."""
        positions_A = np.asarray(positions_A, dtype=np.float64)
        bad = np.flatnonzero(~np.all(np.isfinite(positions_A), axis=1))
        if len(bad):
            listed = ", ".join(self._atom(int(i)) for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
            return f"the positions of {len(bad)} atom(s) are no longer finite (atoms {listed})"
        if self.bonds is not None:
            i, j, length, reference = self.bonds.worst_bond(torch.from_numpy(positions_A))
            if abs(length - reference) > self.bonds.threshold_A:
                return (f"the bond between atoms {self._atom(i)} and {self._atom(j)} is {length:.3g} Å long "
                        f"(start: {reference:.3g} Å; limit ±{self.bonds.threshold_A:g} Å): the molecule came apart")
        problem = self._problem_in_speeds(step, positions_A)
        if problem is None:
            self.start_from(step, positions_A)
        return problem

    def _problem_in_speeds(self, step: int, positions_A: np.ndarray) -> Optional[str]:
        elapsed_fs = (step - self._last_step) * self.timestep_fs
        if elapsed_fs <= 0:
            return None
        moved_A = np.linalg.norm(positions_A - self._last_positions_A, axis=1)
        ratio = moved_A / (elapsed_fs * self.speed_limit_A_per_fs)
        worst = int(np.argmax(ratio))
        if ratio[worst] <= 1.0:
            return None
        return (f"atom {self._atom(worst)} moved {moved_A[worst]:.3g} Å in {elapsed_fs:g} fs "
                f"({moved_A[worst] / elapsed_fs:.3g} Å/fs; limit {self.speed_limit_A_per_fs[worst]:.3g} Å/fs, "
                f"{SPEED_LIMIT_FACTOR:g} x the rms speed of {self.symbols[worst]} at {self.max_temperature_K:.0f} K)")

    def problem_at_report(self, step: int, snapshot: Snapshot) -> Optional[str]:
        """Everything :meth:`problem_in_positions` tests, plus close contacts, a finite energy and the temperature."""
        problem = self.problem_in_positions(step, snapshot.positions_A)
        if problem is not None:
            return problem
        contact = self.contacts.closest_contact(torch.from_numpy(np.asarray(snapshot.positions_A, dtype=np.float64)))
        if contact is not None:
            i, j, distance = contact
            return (f"atoms {self._atom(i)} and {self._atom(j)} are {distance:.3g} Å apart "
                    f"(limit {self.contacts.threshold_A:.3g} Å): atoms collapsed onto each other")
        if not math.isfinite(snapshot.energy_eV):
            return f"the potential energy is no longer finite ({snapshot.energy_eV} eV)"
        if not snapshot.temperature_K <= self.max_temperature_K:
            return (f"the temperature reached {snapshot.temperature_K:.0f} K "
                    f"(limit {self.max_temperature_K:.0f} K)")
        return None


def _orthorhombic_cell(atoms):
    """The cell as a ``(3, 3)`` Å tensor for a box periodic along all axes with a diagonal cell, else None
    (other boxes: contacts are measured without images, which can only miss one)."""
    if not atoms.pbc.all():
        return None
    cell = np.asarray(atoms.cell, dtype=np.float64)
    if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-9:
        return None
    return torch.tensor(cell)


# ---------------------------------------------------------------------------------------- run files
@dataclass(frozen=True)
class RunFiles:
    """The files of one run, named after its trajectory (see the module docstring)."""

    trajectory: Path

    @property
    def topology(self) -> Path:
        return self.trajectory.with_suffix(".pdb")

    @property
    def checkpoint(self) -> Path:
        return self.trajectory.with_name(self.trajectory.name + ".chk")

    @property
    def record(self) -> Path:
        return self.trajectory.with_name(self.trajectory.name + ".run.json")

    @property
    def lock_name(self) -> str:
        return f".{self.trajectory.name}.lock"

    def existing(self) -> List[Path]:
        """The run files already on disk."""
        return [p for p in (self.trajectory, self.topology, self.checkpoint, self.record) if p.exists()]


def _refuse_existing(files: RunFiles, overwrite: bool) -> None:
    """A new run: refuse to replace an earlier one's files unless ``overwrite`` (then :func:`_start` removes them
    all, so that no stale checkpoint or record is left for a later resume)."""
    existing = files.existing()
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing)
        raise FileExistsError(f"an earlier run's files are in the way: {names}; continue that run with --resume, or "
                              "replace it with --overwrite (or choose another --out)")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_record(files: RunFiles, record: Dict[str, Any]) -> None:
    from mlpot.runs import atomic_write_text

    atomic_write_text(json.dumps(record, indent=1) + "\n", files.record)


def _read_record(files: RunFiles) -> Dict[str, Any]:
    """The run record of ``files``; FileNotFoundError or ValueError with the reason when there is none to use."""
    if not files.record.exists():
        raise FileNotFoundError(f"--resume: no run record {files.record} beside the trajectory, so there is no run "
                                "of this mlpot to continue (start a new one, or --overwrite)")
    try:
        record = json.loads(files.record.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"--resume: the run record {files.record} is not readable JSON ({error})") from None
    if (not isinstance(record, dict) or record.get("kind") != RECORD_KIND
            or not isinstance(record.get("settings"), dict)):
        raise ValueError(f"--resume: {files.record} is not an mlpot md run record")
    if record.get("version") != RECORD_VERSION:
        raise ValueError(f"--resume: {files.record} has record version {record.get('version')!r}; this mlpot reads "
                         f"version {RECORD_VERSION}")
    return record


def _read_checkpoint(files: RunFiles, record: Dict[str, Any]) -> Tuple[bytes, Dict[str, Any]]:
    """The checkpoint bytes and the record's entry they match (the last or the one before: a run killed between
    writing the record and the checkpoint left the one before)."""
    path = files.checkpoint
    if not path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint {path} (only --engine openmm writes one, at each report)")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"--resume: the checkpoint {path} is empty (a run killed before its first report?)")
    digest = _sha256(data)
    for key in ("checkpoint", "previous_checkpoint"):
        entry = record.get(key)
        if isinstance(entry, dict) and entry.get("sha256") == digest:
            return data, entry
    expected = (record.get("checkpoint") or {}).get("bytes")
    raise ValueError(f"--resume: the checkpoint {path} ({len(data)} bytes) is truncated or corrupt: it matches no "
                     f"checkpoint of the run record {files.record} (expected {expected} bytes with the sha256 "
                     "recorded there); it cannot be continued")


# ---------------------------------------------------------------------------------------------- DCD
_DCD_FRAME_COUNT_OFFSET = 8
_DCD_FIRST_STEP_OFFSET = 12
_DCD_INTERVAL_OFFSET = 16
_DCD_LAST_STEP_OFFSET = 20
_DCD_BOX_FLAG_OFFSET = 48
_DCD_TITLE_SIZE_OFFSET = 92


def dcd_layout(path: Path, n_atoms: int) -> Tuple[int, int]:
    """``(header bytes, bytes per frame)`` of a DCD file in the layout OpenMM's DCD writer produces."""
    with open(path, "rb") as handle:
        head = handle.read(_DCD_TITLE_SIZE_OFFSET + 4)
        if len(head) < _DCD_TITLE_SIZE_OFFSET + 4 or head[4:8] != b"CORD" or struct.unpack("<i", head[:4])[0] != 84:
            raise ValueError(f"{path} is not a DCD trajectory (its header is missing or damaged)")
        (title_bytes,) = struct.unpack("<i", head[_DCD_TITLE_SIZE_OFFSET:])
        handle.seek(_DCD_TITLE_SIZE_OFFSET + 4 + title_bytes + 4 + 4)
        atoms_field = handle.read(4)
    if len(atoms_field) < 4 or struct.unpack("<i", atoms_field)[0] != n_atoms:
        found = struct.unpack("<i", atoms_field)[0] if len(atoms_field) == 4 else "no"
        raise ValueError(f"{path} holds frames of {found} atoms, not of this system's {n_atoms}")
    header_bytes = _DCD_TITLE_SIZE_OFFSET + 4 + title_bytes + 4 + 12
    has_box = struct.unpack("<i", head[_DCD_BOX_FLAG_OFFSET:_DCD_BOX_FLAG_OFFSET + 4])[0] != 0
    frame_bytes = (4 + 48 + 4 if has_box else 0) + 3 * (4 + 4 * n_atoms + 4)
    return header_bytes, frame_bytes


def truncate_trajectory(path: Path, n_frames: int, n_atoms: int) -> int:
    """Cut the DCD at ``path`` to its first ``n_frames`` frames (dropping later and partial ones) and set its
    header to match; returns how many complete frames were dropped.

    Raises:
        ValueError: the file holds fewer than ``n_frames`` complete frames, or is not a DCD of ``n_atoms``.
    """
    header_bytes, frame_bytes = dcd_layout(path, n_atoms)
    complete = (path.stat().st_size - header_bytes) // frame_bytes
    if complete < n_frames:
        raise ValueError(f"--resume: the trajectory {path} holds {complete} complete frames, but the checkpoint was "
                         f"saved after frame {n_frames}: it was cut short or replaced, so the run cannot be continued "
                         "as one trajectory")
    with open(path, "r+b") as handle:
        handle.truncate(header_bytes + n_frames * frame_bytes)
        handle.seek(_DCD_FIRST_STEP_OFFSET)
        first_step, interval = struct.unpack("<2i", handle.read(8))
        handle.seek(_DCD_FRAME_COUNT_OFFSET)
        handle.write(struct.pack("<i", n_frames))
        handle.seek(_DCD_LAST_STEP_OFFSET)
        handle.write(struct.pack("<i", first_step + (n_frames - 1) * interval if n_frames else 0))
        handle.flush()
        os.fsync(handle.fileno())
    return complete - n_frames


class TrajectoryWriter:
    """DCD frames (OpenMM's DCD writer: readable by mdtraj, VMD, MDAnalysis; it can append on resume).
    Each frame is flushed to disk before :meth:`write` returns, so a run record written after it never
    counts a frame the file lacks."""

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
        box = None if cell_A is None else [Vec3(*row) for row in np.asarray(cell_A) * NM_PER_ANGSTROM] * unit.nanometer
        self._dcd.writeModel(np.asarray(positions_A) * unit.angstrom, periodicBoxVectors=box)
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


# -------------------------------------------------------------------------------------------- engines
class _OpenMMEngine:
    """LangevinMiddleIntegrator with the model as a force: on the CPU and Reference platforms the model's compiled
    twin in a PythonForce (:mod:`mlpot.compile_cache`, unless ``compile`` is ``"off"``), else a TorchForce."""

    name = "openmm"

    def __init__(self, model, system, temperature_K, timestep_fs, friction_per_ps, seed, platform, compile=None):
        import openmm
        from openmm import app, unit

        from mlpot.compile_cache import compile_mode, load_for_inference
        from mlpot.plugins.openmm import create_system
        from mlpot.systems import load_openmm
        from mlpot.units import KJ_PER_MOL_PER_EV

        self._unit = unit
        self._kj_per_mol_per_ev = KJ_PER_MOL_PER_EV
        # OpenMM takes a seed of 0 to mean "choose one at random": seed s is passed as s + 1, so every seed,
        # the default 0 included, repeats its run
        self.temperature_K, self.seed = temperature_K, seed % (2**31 - 2) + 1
        self.topology, self.start_positions = load_openmm(system)
        integrator = openmm.LangevinMiddleIntegrator(
            temperature_K * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtosecond
        )
        integrator.setRandomNumberSeed(self.seed)
        if platform in ("CPU", "Reference") and compile_mode(compile) != "off":
            model = load_for_inference(model, "cpu", compile)
        self.simulation = app.Simulation(self.topology, create_system(model, self.topology), integrator,
                                         openmm.Platform.getPlatformByName(platform))
        self.n_dof = 3 * self.topology.getNumAtoms() - 3
        self.periodic = self.topology.getPeriodicBoxVectors() is not None

    def start(self) -> None:
        self.simulation.context.setPositions(self.start_positions)
        self.simulation.context.setVelocitiesToTemperature(self.temperature_K * self._unit.kelvin, self.seed)
        self.simulation.currentStep = 0

    def load_checkpoint(self, data: bytes) -> int:
        """Continue from checkpoint bytes; returns the step they hold."""
        self.simulation.context.loadCheckpoint(data)
        return self.simulation.currentStep

    def checkpoint(self) -> Optional[bytes]:
        return self.simulation.context.createCheckpoint()

    def step(self, n: int) -> None:
        self.simulation.step(n)

    def positions_A(self) -> np.ndarray:
        state = self.simulation.context.getState(getPositions=True)
        return state.getPositions(asNumpy=True).value_in_unit(self._unit.angstrom)

    def snapshot(self) -> Snapshot:
        unit = self._unit
        state = self.simulation.context.getState(getEnergy=True, getPositions=True)
        kinetic_eV = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / self._kj_per_mol_per_ev
        return Snapshot(
            energy_eV=state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / self._kj_per_mol_per_ev,
            temperature_K=2.0 * kinetic_eV / (self.n_dof * BOLTZMANN_EV_PER_K),
            positions_A=state.getPositions(asNumpy=True).value_in_unit(unit.angstrom),
            cell_A=state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom) if self.periodic else None,
        )


class _ASEEngine:
    """ASE's Langevin with the model as an MLPotCalculator (centre of mass fixed)."""

    name = "ase"

    def __init__(self, model, system, temperature_K, timestep_fs, friction_per_ps, seed, device, compile=None):
        from ase import units as ase_units
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import Stationary, thermalize_momenta

        from mlpot.plugins.ase import MLPotCalculator
        from mlpot.systems import load_atoms, load_openmm

        self.topology, self.start_positions = load_openmm(system)
        atoms = load_atoms(system)
        atoms.calc = MLPotCalculator(model, device=device, compile=compile)
        rng = np.random.default_rng(seed)
        thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
        Stationary(atoms)
        atoms.set_constraint(FixCom())
        self.atoms = atoms
        self.dynamics = Langevin(atoms, timestep_fs * ase_units.fs, temperature_K=temperature_K,
                                 friction=friction_per_ps / (FS_PER_PS * ase_units.fs), fixcm=False, rng=rng)

    def start(self) -> None:
        pass  # thermalised in __init__

    def checkpoint(self) -> Optional[bytes]:
        return None

    def step(self, n: int) -> None:
        self.dynamics.run(n)

    def positions_A(self) -> np.ndarray:
        return self.atoms.positions.copy()

    def snapshot(self) -> Snapshot:
        return Snapshot(
            energy_eV=float(self.atoms.get_potential_energy()),
            temperature_K=float(self.atoms.get_temperature()),
            positions_A=self.atoms.positions.copy(),
            cell_A=np.asarray(self.atoms.cell) if self.atoms.pbc.any() else None,
        )


# ---------------------------------------------------------------------------------------------- inputs
def _check_inputs(engine: str, steps: Any, temperature_K: Any, timestep_fs: Any, friction_per_ps: Any,
                  report_interval: Any, max_temperature_K: Any, seed: Any, resume: bool) -> None:
    from mlpot.validation import positive_number

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    for name, value in (("steps", steps), ("report_interval", report_interval)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"the seed must be an integer >= 0, got {seed!r}")
    positive_number("the temperature", temperature_K, "K")
    positive_number("the time step", timestep_fs, "fs")
    positive_number("the friction", friction_per_ps, "1/ps")
    if max_temperature_K is not None:
        positive_number("max_temperature_K", max_temperature_K, "K")
    if resume and engine != "openmm":
        raise NotImplementedError("--resume needs --engine openmm (the ASE engine writes no checkpoint)")


def _platform_name(platform: Optional[str]) -> str:
    """The OpenMM platform to use: ``platform`` if OpenMM has it (else ValueError listing those it has), or
    CUDA if present, else CPU."""
    from mlpot.plugins.openmm import checked_platform_name, platform_names

    if platform is None:
        return "CUDA" if "CUDA" in platform_names() else "CPU"
    return checked_platform_name(platform)


def _model_digest(model: Union[str, Path]) -> str:
    from mlpot.runs import file_digest

    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    return file_digest(str(path))


# ------------------------------------------------------------------------------------------------- run
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
    overwrite: bool = False,
    progress: bool = True,
    bond_change_limit_A: Optional[float] = BOND_CHANGE_LIMIT_A,
    compile: Optional[str] = None,
) -> MDResult:
    """Simulate the named system (or a PDB path) with the model; see the module docstring.

    Args:
        model: model file.
        system: a name from :mod:`mlpot.systems` or a PDB path.
        engine: ``openmm`` (the compiled twin in a PythonForce on CPU, a TorchForce on a GPU) or ``ase``
            (MLPotCalculator).
        steps: total steps of the run (a resumed run continues up to it).
        timestep_fs, temperature_K, friction_per_ps: Langevin dynamics settings (fs, K, 1/ps).
        out: DCD path; the topology goes to the same path with suffix ``.pdb``, the run record and checkpoint
            beside it.
        report_interval: steps between frames, full stability checks, checkpoints and run-record updates.
        platform: OpenMM platform name (default: CUDA if available, else CPU).
        device: torch device for the ASE engine.
        max_temperature_K: above this the run is stopped as unstable (default max(10 T, 3000 K)).
        resume: continue the run of ``out`` from its checkpoint (OpenMM), with the same settings.
        overwrite: a new run may replace the files of an earlier one at ``out``.
        bond_change_limit_A: the bond check's limit, Å; None switches it off (for runs meant to break bonds).
        compile: ``auto`` (default, or ``$MLPOT_COMPILE``), ``on`` or ``off``: run the model's compiled twin
            (:mod:`mlpot.compile_cache`) with the ASE engine and on OpenMM's CPU/Reference platforms.

    Raises:
        SimulationUnstableError: the run blew up (the trajectory keeps the frames before it).
        FileExistsError: a new run would replace an earlier one's files, without ``overwrite``.
        RunLockedError: another process is writing the same trajectory.
        ValueError, FileNotFoundError: bad settings, unknown system, missing model, or a run that cannot be
            resumed (the message says why).
        KeyboardInterrupt: after Ctrl-C or SIGTERM, once the current report is saved (resume continues it).
    """
    from mlpot.runs import RunLock, refuse_changed_settings
    from mlpot.systems import get_system, load_atoms

    _check_inputs(engine, steps, temperature_K, timestep_fs, friction_per_ps, report_interval, max_temperature_K,
                  seed, resume)
    if max_temperature_K is None:
        max_temperature_K = max(10.0 * temperature_K, 3000.0)
    spec = get_system(system)
    files = RunFiles(Path(out))
    if files.topology == files.trajectory:
        raise ValueError(f"--out {files.trajectory} is where the topology (.pdb) goes; name the trajectory .dcd")
    if files.topology.resolve() == Path(spec.pdb_path).resolve():
        raise ValueError(f"--out {files.trajectory} would write the topology over the system's own file "
                         f"{spec.pdb_path}; choose another --out")
    settings = {
        "model_sha256": _model_digest(model), "system": spec.name, "engine": engine, "timestep_fs": timestep_fs,
        "temperature_K": temperature_K, "friction_per_ps": friction_per_ps, "seed": seed,
        "report_interval": report_interval,
        "platform": _platform_name(platform) if engine == "openmm" else None,
    }
    atoms = load_atoms(system)
    _warn_if_too_long(timestep_fs, atoms)
    check = BlowUpCheck(atoms, timestep_fs, max_temperature_K, bond_change_limit_A)
    with RunLock(files.trajectory.parent, files.lock_name):
        if resume:
            record = _read_record(files)
            refuse_changed_settings(record["settings"], settings, f"the run of {files.trajectory}")
        else:
            _refuse_existing(files, overwrite)
        if engine == "openmm":
            runner = _OpenMMEngine(model, system, temperature_K, timestep_fs, friction_per_ps, seed,
                                   settings["platform"], compile)
        else:
            runner = _ASEEngine(model, system, temperature_K, timestep_fs, friction_per_ps, seed, device, compile)
        if resume:
            first_step, frames = _resume(runner, files, record, steps, len(atoms))
        else:
            record = _start(runner, files, settings, model, len(atoms))
            first_step, frames = 0, 0
        check.start_from(first_step, runner.positions_A())
        return _drive(runner, spec.name, files, record, check, steps=steps, first_step=first_step, frames=frames,
                      report_interval=report_interval, timestep_fs=timestep_fs, progress=progress)


def _warn_if_too_long(timestep_fs: float, atoms) -> None:
    masses = atoms.get_masses()
    limit = max_sane_timestep_fs(masses)
    if timestep_fs > limit:
        lightest = atoms.get_chemical_symbols()[int(np.argmin(masses))]
        warnings.warn(f"a time step of {timestep_fs:g} fs is longer than {limit:.2g} fs, the most that resolves the "
                      f"vibrations of {lightest} without constraints; expect the run to blow up", TimestepWarning,
                      stacklevel=3)


def _start(runner, files: RunFiles, settings: Dict[str, Any], model, n_atoms: int) -> Dict[str, Any]:
    """A new run, once its engine is built (so a model that fails to load leaves an earlier run's files alone):
    remove those files (``overwrite`` was checked), start the engine, write the topology and the first record."""
    for path in files.existing():
        path.unlink()
    runner.start()
    record = {"kind": RECORD_KIND, "version": RECORD_VERSION, "settings": settings, "model": str(model),
              "n_atoms": n_atoms, "steps_done": 0, "frames": 0, "checkpoint": None, "previous_checkpoint": None}
    _write_topology(files.topology, runner.topology, runner.start_positions)
    _write_record(files, record)
    return record


def _resume(runner: _OpenMMEngine, files: RunFiles, record: Dict[str, Any], steps: int,
            n_atoms: int) -> Tuple[int, int]:
    """Load the checkpoint that matches the record, cut the trajectory back to it, and make the record say so;
    returns (step, frames)."""
    data, entry = _read_checkpoint(files, record)
    if entry["step"] >= steps:
        raise ValueError(f"--resume: the run of {files.trajectory} is already at step {entry['step']}; ask for more "
                         f"than {entry['step']} --steps to continue it")
    if not files.trajectory.exists():
        raise FileNotFoundError(f"--resume: the trajectory {files.trajectory} is gone; it cannot be continued")
    try:
        step = runner.load_checkpoint(data)
    except Exception as error:  # OpenMMException: another platform or OpenMM version
        raise ValueError(f"--resume: OpenMM cannot load the checkpoint {files.checkpoint} "
                         f"({' '.join(str(error).split())})") from None
    if step != entry["step"]:
        raise ValueError(f"--resume: the checkpoint {files.checkpoint} is at step {step}, its record says "
                         f"{entry['step']}")
    truncate_trajectory(files.trajectory, entry["frames"], n_atoms)
    record.update(checkpoint=entry, previous_checkpoint=None, steps_done=step, frames=entry["frames"])
    return step, entry["frames"]


def _save_progress(runner, files: RunFiles, record: Dict[str, Any], done: int, frames: int) -> None:
    """After a frame: the record (with the new checkpoint's sha256, the previous one kept) and then the
    checkpoint, each atomically; a run killed between the two resumes from the previous checkpoint."""
    from mlpot.runs import atomic_write_bytes

    record["steps_done"], record["frames"] = done, frames
    data = runner.checkpoint()
    if data is None:
        _write_record(files, record)
        return
    record["previous_checkpoint"] = record.get("checkpoint")
    record["checkpoint"] = {"step": done, "frames": frames, "sha256": _sha256(data), "bytes": len(data)}
    _write_record(files, record)
    atomic_write_bytes(data, files.checkpoint)


def _unstable(problem: str, step: int, timestep_fs: float, files: RunFiles, frames: int) -> SimulationUnstableError:
    return SimulationUnstableError(
        f"simulation blew up at step {step} (t = {step * timestep_fs / FS_PER_PS:.4g} ps): {problem}. The run is "
        f"unstable; {files.trajectory} keeps the {frames} frame(s) written before it. Try a smaller time step "
        f"(now {timestep_fs:g} fs) or check the model on this system"
    )


def _drive(runner, system_name: str, files: RunFiles, record: Dict[str, Any], check: BlowUpCheck, *, steps: int,
           first_step: int, frames: int, report_interval: int, timestep_fs: float, progress: bool) -> MDResult:
    """The loop both engines share: advance a chunk (checking positions every CHECK_EVERY_STEPS steps), check
    the report, write a frame, save progress, repeat; Ctrl-C and SIGTERM stop it after a saved report."""
    from tqdm import tqdm

    from mlpot.runs import StopRequests

    writer = TrajectoryWriter(files.trajectory, runner.topology, timestep_fs, report_interval, append=first_step > 0)
    bar = tqdm(total=steps, initial=first_step, unit="step", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    done = first_step
    snapshot = Snapshot(float("nan"), float("nan"), np.empty((0, 3)), None)
    try:
        with StopRequests() as stops:
            while done < steps:
                chunk_end = min(done + report_interval, steps)
                while done < chunk_end:
                    part = min(CHECK_EVERY_STEPS, chunk_end - done)
                    runner.step(part)
                    done += part
                    bar.update(part)
                    if done < chunk_end:
                        problem = check.problem_in_positions(done, runner.positions_A())
                        if problem is not None:
                            raise _unstable(problem, done, timestep_fs, files, frames)
                snapshot = runner.snapshot()
                problem = check.problem_at_report(done, snapshot)
                if problem is not None:
                    raise _unstable(problem, done, timestep_fs, files, frames)
                writer.write(snapshot.positions_A, snapshot.cell_A)
                frames += 1
                _save_progress(runner, files, record, done, frames)
                bar.set_postfix(E_eV=f"{snapshot.energy_eV:.3f}", T_K=f"{snapshot.temperature_K:.0f}")
                if stops.requested and done < steps:
                    raise KeyboardInterrupt(f"stopped at step {done} ({stops.requested}); the trajectory and "
                                            "checkpoint are saved: continue with --resume")
    finally:
        bar.close()
        writer.close()
    seconds = time.perf_counter() - start
    ran = done - first_step
    return MDResult(runner.name, system_name, runner.topology.getNumAtoms(), ran, timestep_fs, seconds,
                    ran / seconds, ns_per_day(ran, timestep_fs, seconds), snapshot.energy_eV, snapshot.temperature_K,
                    str(files.trajectory), str(files.topology))


def _write_topology(path: Path, topology, positions) -> None:
    from openmm import app

    from mlpot.runs import atomic_write_text

    text = io.StringIO()
    app.PDBFile.writeFile(topology, positions, text)
    atomic_write_text(text.getvalue(), path)

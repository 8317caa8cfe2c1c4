"""Generate the ethanol DFT dataset: GFN2-xTB molecular dynamics, labelled with B3LYP/6-31G*.

What it makes (all files in this folder)

* ``candidates.extxyz``: geometries of ethanol (C2H5OH, 9 atoms, Angstrom) taken from GFN2-xTB
  Langevin dynamics at 300, 400, 500 and 600 K. No energies or forces. ``info`` per frame:
  ``candidate_index`` (0, 1, 2, ... = position in the file), ``trajectory``, ``seed``,
  ``temperature_K``, ``step`` (MD step within its trajectory, 0.5 fs each).
* ``dft.extxyz``: candidates labelled with DFT, ordered by ``candidate_index``, no duplicates.
  Energy (eV) and forces (eV/Angstrom) are ASE ``SinglePointCalculator`` results (``energy`` in
  the header, ``forces`` columns); ``info`` adds ``level_of_theory``, ``software``, ``source``
  and keeps the candidate's keys.
* ``parts/dft.part<k>.extxyz``: what labelling worker ``k`` has computed, append-only. The
  ``merge`` stage combines them (and the existing ``dft.extxyz``) into ``dft.extxyz``.
* ``fd_check.json``: finite-difference check of the DFT forces against the DFT energy.

Level of theory (the labels)

B3LYP/6-31G*, restricted Kohn-Sham, PySCF, with density fitting (RI-J/RI-K) in the
cc-pVDZ-JKFIT auxiliary basis (what PySCF picks for 6-31G* by default; set explicitly here).
PySCF's ``b3lyp`` is libxc's HYB_GGA_XC_B3LYP (VWN-RPA correlation, the Gaussian/ORCA
definition). 6-31G* with spherical d functions (54 basis functions for ethanol); PySCF's default
grid (level 3, Treutler-Ahlrichs radial, about 100k points); SCF ``conv_tol`` 1e-9 Hartree; no
dispersion correction; neutral singlet. Forces are the analytic gradient *including the
grid-response term* (``grid_response=True``), so they are the exact derivative of the stored
energy: without it they differ from finite differences of the energy by ~2 meV/Angstrom. On
ethanol it costs no extra time (gradient ~1.4 s either way), so it is always on.

Sampling (the geometries)

GFN2-xTB (tblite, ASE calculator), starting from ASE's G2 ethanol relaxed with GFN2-xTB
(BFGS, fmax 0.01 eV/Angstrom). Each trajectory: Maxwell-Boltzmann velocities at T, centre of
mass fixed (``FixCom``), Langevin dynamics with a 0.5 fs step and friction 0.01/fs; 2000 steps
(1 ps) of equilibration, then a frame every 100 steps (50 fs), 50 frames. Trajectory ``i`` runs
at ``temperatures[i % n_T]`` with its own random stream ``numpy.random.default_rng([seed, i])``,
so temperatures are interleaved through the file. Default plan: 4 temperatures x 10 trajectories
x 50 frames = 2000 candidates.

How to run (from the repository root; needs ``pip install pyscf tblite`` besides mlpot)::

    python systems/ethanol/generate.py sample              # ~7 min: 2000 candidates
    python systems/ethanol/generate.py check               # ~1 min: writes fd_check.json
    python systems/ethanol/generate.py label               # ~4 s per frame, one core
    python systems/ethanol/generate.py merge               # parts/ -> dft.extxyz
    python systems/ethanol/generate.py status              # counts so far

Two workers on two cores (each labels the candidates with ``candidate_index % 2 == k``)::

    nohup python -u systems/ethanol/generate.py label --worker 0 --workers 2 > label0.log 2>&1 &
    nohup python -u systems/ethanol/generate.py label --worker 1 --workers 2 > label1.log 2>&1 &

How to resume

Run the same command again. Every stage is append-only and skips what is already done:
``sample`` continues the plan (a partly written trajectory is re-run from its seed and only
the missing frames are appended; more candidates: raise ``--trajectories-per-temperature``);
``label`` skips every candidate already present in ``dft.extxyz`` or any part file; ``merge``
can be run at any time, also while workers run (``label`` also merges every 20 frames and at
the end). Each frame is written with one ``write`` + flush + fsync while Ctrl-C/SIGTERM are held
back, so stopping a run (Ctrl-C, ``kill PID``) never leaves half a frame; after a hard kill the
truncated last frame is detected on the next start and cut off. A file lock on each output file
stops two processes from appending to the same file; pause and continue a worker with
``kill -STOP PID`` / ``kill -CONT PID``.

Cost per frame (measured on the project's 2-core box, one thread): GFN2-xTB MD 1.5 ms per
step, 10.6 s per trajectory of 7000 steps and 50 frames, 7 min for all 2000 candidates; DFT
label 3.7 s with the other core free, 4-5 s when the box is busy (9 SCF cycles, then the
gradient, ~1.4 s of it). 2000 frames: about 2 h on one core, half that with two workers.

Units: the files are in Angstrom, eV, eV/Angstrom. PySCF works in Hartree and Bohr; the
conversion uses the constants in :mod:`mlpot.units`. Threads: ``OMP_NUM_THREADS`` defaults to 1
(one thread per worker is faster than two on this box; run workers side by side instead).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/pyscf start their thread pools

import argparse
import fcntl
import io
import json
import signal
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Iterator

import numpy as np

from mlpot.units import ANGSTROM_PER_BOHR, EV_PER_HARTREE

HERE = Path(__file__).resolve().parent
CANDIDATES_PATH = HERE / "candidates.extxyz"
DFT_PATH = HERE / "dft.extxyz"
PARTS_DIR = HERE / "parts"
FD_CHECK_PATH = HERE / "fd_check.json"

# info keys, declared once
INDEX_KEY = "candidate_index"
TRAJECTORY_KEY = "trajectory"
SEED_KEY = "seed"
TEMPERATURE_KEY = "temperature_K"
STEP_KEY = "step"
LEVEL_KEY = "level_of_theory"
SOFTWARE_KEY = "software"
SOURCE_KEY = "source"

LEVEL_OF_THEORY = "B3LYP/6-31G* (density fitting)"
SOURCE = "GFN2-xTB MD"

# DFT settings (see the module docstring)
XC = "b3lyp"
BASIS = "6-31g*"
AUXBASIS = "cc-pvdz-jkfit"
CONV_TOL_HARTREE = 1e-9
MAX_SCF_CYCLES = 100
GRID_RESPONSE = True
EV_PER_ANGSTROM_PER_HARTREE_PER_BOHR = EV_PER_HARTREE / ANGSTROM_PER_BOHR

# Sampling defaults
TEMPERATURES_K = (300.0, 400.0, 500.0, 600.0)
TIMESTEP_FS = 0.5
FRICTION_PER_FS = 0.01
EQUILIBRATION_STEPS = 2000
INTERVAL_STEPS = 100
FRAMES_PER_TRAJECTORY = 50
TRAJECTORIES_PER_TEMPERATURE = 10
SEED = 2026
RELAX_FMAX_EV_PER_A = 0.01

MERGE_EVERY = 20


# --------------------------------------------------------------------------------------------
# Append-only extxyz files


def _complete_frames(data: bytes) -> tuple[list[bytes], int]:
    """Split extxyz bytes into whole frames.

    Returns the frames (each its count line, comment line and atom lines, newline-terminated)
    and the number of bytes they span; anything after that is an incomplete last frame.
    """
    frames, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            break
        try:
            n_atoms = int(data[start:end])
        except ValueError:
            break
        cursor = end + 1
        for _ in range(n_atoms + 1):
            end = data.find(b"\n", cursor)
            if end < 0:
                return frames, start
            cursor = end + 1
        frames.append(data[start:cursor])
        start = cursor
    return frames, start


def read_frames(path: Path) -> list:
    """All complete frames of an extxyz file as ``ase.Atoms`` ([] if the file does not exist).

    An incomplete last frame (a writer stopped mid-write, or is writing now) is ignored.
    """
    import ase.io

    if not path.exists():
        return []
    frames, _ = _complete_frames(path.read_bytes())
    if not frames:
        return []
    text = b"".join(frames).decode()
    return ase.io.read(io.StringIO(text), index=":", format="extxyz")


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM inside the block; they are delivered when it ends."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class AppendOnlyExtxyz:
    """An extxyz file that one process appends whole frames to.

    Opening takes an exclusive lock (another process appending to the same file is an error)
    and cuts off an incomplete last frame left by a killed run. Use as a context manager.
    """

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> "AppendOnlyExtxyz":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise SystemExit(f"{self.path} is locked: another process is writing it") from None
        self._drop_incomplete_tail()
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def _drop_incomplete_tail(self) -> None:
        data = self.path.read_bytes()
        frames, n_complete = _complete_frames(data)
        tail = data[n_complete:]
        if not tail:
            return
        largest_frame = max((f.count(b"\n") for f in frames), default=0)
        if tail.count(b"\n") > max(largest_frame, 2):
            raise SystemExit(
                f"{self.path}: {len(tail)} unreadable bytes after frame {len(frames)}, more than "
                "one frame's worth; not a half-written frame, so not cutting it; inspect by hand"
            )
        with _signals_held():
            os.truncate(self.path, n_complete)
        print(f"{self.path.name}: dropped an incomplete last frame ({len(tail)} bytes)", flush=True)

    def append(self, atoms) -> None:
        """Append one frame with a single write, then flush and fsync."""
        import ase.io

        buffer = io.StringIO()
        ase.io.write(buffer, atoms, format="extxyz")
        data = buffer.getvalue().encode()
        with _signals_held():
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


# --------------------------------------------------------------------------------------------
# Stage 1: sample candidates with GFN2-xTB Langevin dynamics


@dataclass(frozen=True)
class SamplingPlan:
    """Which trajectories make up ``candidates.extxyz``; trajectory ``i`` runs at
    ``temperatures_K[i % len(temperatures_K)]`` with random stream ``default_rng([seed, i])``."""

    temperatures_K: tuple[float, ...]
    trajectories_per_temperature: int
    frames_per_trajectory: int
    equilibration_steps: int
    interval_steps: int
    seed: int

    @property
    def n_trajectories(self) -> int:
        return self.trajectories_per_temperature * len(self.temperatures_K)

    def temperature_K(self, trajectory: int) -> float:
        return self.temperatures_K[trajectory % len(self.temperatures_K)]

    def step(self, frame: int) -> int:
        """MD step of a trajectory's ``frame``-th saved frame (0-based)."""
        return self.equilibration_steps + (frame + 1) * self.interval_steps


def gfn2_calculator():
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", verbosity=0)


def relaxed_ethanol():
    """ASE's G2 ethanol (anti conformer) relaxed with GFN2-xTB; positions in Angstrom."""
    from ase.build import molecule
    from ase.optimize import BFGS

    atoms = molecule("CH3CH2OH")
    atoms.calc = gfn2_calculator()
    BFGS(atoms, logfile=None).run(fmax=RELAX_FMAX_EV_PER_A)
    return atoms


def run_trajectory(start, plan: SamplingPlan, trajectory: int) -> Iterator[tuple[int, np.ndarray]]:
    """Langevin MD of one trajectory; yields ``(frame, positions_A)`` for each saved frame."""
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ase < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    temperature_K = plan.temperature_K(trajectory)
    rng = np.random.default_rng([plan.seed, trajectory])
    atoms = start.copy()
    atoms.calc = gfn2_calculator()
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())
    dynamics = Langevin(
        atoms,
        TIMESTEP_FS * units.fs,
        temperature_K=temperature_K,
        friction=FRICTION_PER_FS / units.fs,
        fixcm=False,
        rng=rng,
    )
    dynamics.run(plan.equilibration_steps)
    for frame in range(plan.frames_per_trajectory):
        dynamics.run(plan.interval_steps)
        yield frame, atoms.get_positions()


def _existing_frames_by_trajectory(candidates: list, plan: SamplingPlan) -> dict[int, list]:
    """Group existing candidates by trajectory and check they belong to ``plan``."""
    by_trajectory: dict[int, list] = {}
    for index, atoms in enumerate(candidates):
        info = atoms.info
        trajectory = int(info[TRAJECTORY_KEY])
        frame = len(by_trajectory.setdefault(trajectory, []))
        expected = {
            INDEX_KEY: index,
            SEED_KEY: plan.seed,
            TEMPERATURE_KEY: plan.temperature_K(trajectory),
            STEP_KEY: plan.step(frame),
        }
        found = {key: np.asarray(info.get(key)).tolist() for key in expected}
        if any(found[key] != value for key, value in expected.items()):
            raise SystemExit(
                f"candidate {index} (trajectory {trajectory}) has {found}, but this plan expects "
                f"{expected}: {CANDIDATES_PATH.name} was made with other sampling options"
            )
        by_trajectory[trajectory].append(atoms)
    return by_trajectory


def sample(plan: SamplingPlan) -> None:
    """Run the trajectories of ``plan`` that are missing from ``candidates.extxyz``, appending each frame."""
    from ase import Atoms

    with AppendOnlyExtxyz(CANDIDATES_PATH) as out:
        candidates = read_frames(CANDIDATES_PATH)
        by_trajectory = _existing_frames_by_trajectory(candidates, plan)
        n_written = len(candidates)
        print(f"{n_written} candidates present; plan: {plan}", flush=True)
        start = relaxed_ethanol()
        symbols = start.get_chemical_symbols()
        for trajectory in range(plan.n_trajectories):
            existing = by_trajectory.get(trajectory, [])
            if len(existing) >= plan.frames_per_trajectory:
                continue
            temperature_K = plan.temperature_K(trajectory)
            t0 = time.perf_counter()
            for frame, positions_A in run_trajectory(start, plan, trajectory):
                if frame < len(existing):
                    if frame == len(existing) - 1:
                        deviation = np.abs(existing[frame].positions - positions_A).max()
                        if deviation > 1e-4:
                            print(
                                f"trajectory {trajectory}: re-run differs from the stored frame "
                                f"{frame} by {deviation:.2g} Angstrom (other machine or versions); "
                                "continuing: the new frames are equally valid samples at "
                                f"{temperature_K:g} K",
                                flush=True,
                            )
                    continue
                candidate = Atoms(symbols, positions=positions_A)
                candidate.info.update(
                    {
                        INDEX_KEY: n_written,
                        TRAJECTORY_KEY: trajectory,
                        SEED_KEY: plan.seed,
                        TEMPERATURE_KEY: temperature_K,
                        STEP_KEY: plan.step(frame),
                    }
                )
                out.append(candidate)
                n_written += 1
            print(
                f"trajectory {trajectory} ({temperature_K:g} K) done in {time.perf_counter() - t0:.1f} s; "
                f"{n_written} candidates",
                flush=True,
            )
    print(f"sampling complete: {n_written} candidates in {CANDIDATES_PATH}", flush=True)


# --------------------------------------------------------------------------------------------
# Stage 2: label candidates with B3LYP/6-31G* (PySCF)


def software_versions() -> str:
    return f"pyscf {version('pyscf')}, tblite {version('tblite')}"


def run_scf(symbols: list[str], positions_A: np.ndarray, dm0: np.ndarray | None = None):
    """Converged (or not: check ``.converged``) B3LYP/6-31G* density-fitted RKS object."""
    from pyscf import dft, gto

    mol = gto.M(
        atom=list(zip(symbols, positions_A.tolist())),
        basis=BASIS,
        unit="Angstrom",
        charge=0,
        spin=0,
        verbose=0,
    )
    mf = dft.RKS(mol).density_fit(auxbasis=AUXBASIS)
    mf.xc = XC
    mf.conv_tol = CONV_TOL_HARTREE
    mf.max_cycle = MAX_SCF_CYCLES
    mf.kernel(dm0=dm0)
    return mf


def energy_eV(mf) -> float:
    return float(mf.e_tot) * EV_PER_HARTREE


def forces_eV_per_A(mf, grid_response: bool = GRID_RESPONSE) -> np.ndarray:
    """Analytic forces, shape (n_atoms, 3), eV/Angstrom, from a converged SCF object."""
    gradient = mf.nuc_grad_method()
    gradient.grid_response = grid_response
    gradient.verbose = 0
    return -np.asarray(gradient.kernel()) * EV_PER_ANGSTROM_PER_HARTREE_PER_BOHR


def part_path(worker: int) -> Path:
    return PARTS_DIR / f"dft.part{worker}.extxyz"


def labelled_files() -> list[Path]:
    return [DFT_PATH, *sorted(PARTS_DIR.glob("dft.part*.extxyz"))]


def labelled_indices() -> set[int]:
    return {int(atoms.info[INDEX_KEY]) for path in labelled_files() for atoms in read_frames(path)}


def label(worker: int, workers: int, max_frames: int | None, merge_every: int) -> None:
    """Label this worker's share of the unlabelled candidates, appending to its part file."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    candidates = read_frames(CANDIDATES_PATH)
    if not candidates:
        raise SystemExit(f"no candidates in {CANDIDATES_PATH}; run the sample stage first")
    software = software_versions()
    with AppendOnlyExtxyz(part_path(worker)) as out:
        done = labelled_indices()
        todo = [
            c
            for c in candidates
            if int(c.info[INDEX_KEY]) % workers == worker and int(c.info[INDEX_KEY]) not in done
        ]
        if max_frames is not None:
            todo = todo[:max_frames]
        print(
            f"worker {worker}/{workers}: {len(candidates)} candidates, {len(done)} labelled, "
            f"{len(todo)} to do now -> {out.path}; {software}; pid {os.getpid()}",
            flush=True,
        )
        wall_total, n_done = 0.0, 0
        for candidate in todo:
            index = int(candidate.info[INDEX_KEY])
            wall0, cpu0 = time.perf_counter(), time.process_time()
            symbols = candidate.get_chemical_symbols()
            mf = run_scf(symbols, candidate.positions)
            if not mf.converged:
                print(
                    f"candidate {index}: SCF did not converge in {MAX_SCF_CYCLES} cycles; skipped",
                    flush=True,
                )
                continue
            energy, forces = energy_eV(mf), forces_eV_per_A(mf)
            labelled = Atoms(symbols, positions=candidate.positions)
            labelled.info.update(candidate.info)
            labelled.info.update({LEVEL_KEY: LEVEL_OF_THEORY, SOFTWARE_KEY: software, SOURCE_KEY: SOURCE})
            labelled.calc = SinglePointCalculator(labelled, energy=energy, forces=forces)
            out.append(labelled)
            wall = time.perf_counter() - wall0
            wall_total += wall
            n_done += 1
            print(
                f"candidate {index} ({candidate.info[TEMPERATURE_KEY]:g} K): E = {energy:.6f} eV, "
                f"max|F| = {np.abs(forces).max():.3f} eV/A, {mf.cycles} SCF cycles, "
                f"{wall:.2f} s wall, {time.process_time() - cpu0:.2f} s CPU; "
                f"{n_done}/{len(todo)}, mean {wall_total / n_done:.2f} s/frame",
                flush=True,
            )
            if merge_every and n_done % merge_every == 0:
                merge(quiet=True)
    merge()


def merge(quiet: bool = False) -> None:
    """Rewrite ``dft.extxyz`` as the union of itself and all part files, by candidate index.

    The first copy of a candidate index wins (``dft.extxyz`` first, then parts in name order).
    The new file replaces the old one atomically; the part files are left as they are.
    """
    import ase.io

    by_index: dict[int, object] = {}
    for path in labelled_files():
        for atoms in read_frames(path):
            by_index.setdefault(int(atoms.info[INDEX_KEY]), atoms)
    if not by_index:
        print("nothing labelled yet", flush=True)
        return
    frames = [by_index[i] for i in sorted(by_index)]
    tmp = DFT_PATH.with_name(f".{DFT_PATH.name}.{os.getpid()}.tmp")
    try:
        ase.io.write(tmp, frames, format="extxyz")
        with _signals_held():
            os.replace(tmp, DFT_PATH)
    finally:
        tmp.unlink(missing_ok=True)
    if not quiet:
        print(f"merged {len(frames)} labelled frames into {DFT_PATH}", flush=True)


# --------------------------------------------------------------------------------------------
# Stage 3: finite-difference check of the DFT forces


def check(indices: list[int] | None, components_per_frame: int, step_A: float, seed: int) -> dict:
    """Central finite differences of the DFT energy against the analytic forces; writes fd_check.json."""
    candidates = read_frames(CANDIDATES_PATH)
    if not candidates:
        raise SystemExit(f"no candidates in {CANDIDATES_PATH}; run the sample stage first")
    if indices is None:  # the first frame at the lowest and at the highest temperature
        temperatures = [float(c.info[TEMPERATURE_KEY]) for c in candidates]
        indices = [temperatures.index(min(temperatures)), temperatures.index(max(temperatures))]
    rng = np.random.default_rng(seed)
    frames = []
    for index in indices:
        candidate = candidates[index]
        symbols, positions = candidate.get_chemical_symbols(), candidate.positions
        t0 = time.perf_counter()
        mf = run_scf(symbols, positions)
        forces = forces_eV_per_A(mf, grid_response=True)
        forces_no_grid_response = forces_eV_per_A(mf, grid_response=False)
        dm = mf.make_rdm1()
        picks = rng.choice(positions.size, size=components_per_frame, replace=False)
        rows = []
        for flat in sorted(int(p) for p in picks):
            atom, axis = divmod(flat, 3)
            energies = []
            for sign in (+1, -1):
                displaced = positions.copy()
                displaced[atom, axis] += sign * step_A
                displaced_mf = run_scf(symbols, displaced, dm0=dm)
                if not displaced_mf.converged:
                    raise RuntimeError(f"candidate {index}: SCF did not converge at a displaced geometry")
                energies.append(displaced_mf.e_tot)
            fd = -(energies[0] - energies[1]) * EV_PER_HARTREE / (2 * step_A)
            rows.append(
                {
                    "atom": atom,
                    "element": symbols[atom],
                    "axis": "xyz"[axis],
                    "fd_force_eV_per_A": fd,
                    "analytic_force_eV_per_A": float(forces[atom, axis]),
                    "analytic_force_without_grid_response_eV_per_A": float(
                        forces_no_grid_response[atom, axis]
                    ),
                    "error_eV_per_A": float(forces[atom, axis]) - fd,
                    "error_without_grid_response_eV_per_A": float(forces_no_grid_response[atom, axis]) - fd,
                }
            )
        frames.append(
            {
                INDEX_KEY: index,
                TEMPERATURE_KEY: float(candidate.info[TEMPERATURE_KEY]),
                "max_abs_force_eV_per_A": float(np.abs(forces).max()),
                "components": rows,
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
        print(json.dumps(frames[-1], indent=1), flush=True)
    errors = [abs(r["error_eV_per_A"]) for f in frames for r in f["components"]]
    errors_ngr = [abs(r["error_without_grid_response_eV_per_A"]) for f in frames for r in f["components"]]
    result = {
        "what": "central finite differences of the DFT energy vs analytic forces, Cartesian components",
        LEVEL_KEY: LEVEL_OF_THEORY,
        SOFTWARE_KEY: software_versions(),
        "settings": {
            "xc": XC,
            "basis": BASIS,
            "auxbasis": AUXBASIS,
            "conv_tol_hartree": CONV_TOL_HARTREE,
            "grid_level": 3,
            "grid_response_in_labels": GRID_RESPONSE,
        },
        "step_A": step_A,
        "max_abs_error_eV_per_A": max(errors),
        "max_abs_error_without_grid_response_eV_per_A": max(errors_ngr),
        "frames": frames,
    }
    FD_CHECK_PATH.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"max |F_analytic - F_fd| = {max(errors):.2e} eV/A with grid response, "
        f"{max(errors_ngr):.2e} eV/A without; written to {FD_CHECK_PATH}",
        flush=True,
    )
    return result


# --------------------------------------------------------------------------------------------
# status and command line


def status() -> None:
    candidates = read_frames(CANDIDATES_PATH)
    print(f"{CANDIDATES_PATH.name}: {len(candidates)} candidates", flush=True)
    per_t = Counter(float(c.info[TEMPERATURE_KEY]) for c in candidates)
    labelled: dict[int, object] = {}
    for path in labelled_files():
        frames = read_frames(path)
        if path.exists():
            print(f"{path.relative_to(HERE)}: {len(frames)} frames", flush=True)
        for atoms in frames:
            labelled.setdefault(int(atoms.info[INDEX_KEY]), atoms)
    done_t = Counter(float(a.info[TEMPERATURE_KEY]) for a in labelled.values())
    print(f"labelled (distinct candidate indices): {len(labelled)}", flush=True)
    for temperature in sorted(per_t):
        print(f"  {temperature:g} K: {done_t[temperature]} of {per_t[temperature]} labelled", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    stages = parser.add_subparsers(dest="stage", required=True)

    p = stages.add_parser("sample", help="GFN2-xTB Langevin MD -> candidates.extxyz")
    p.add_argument("--temperatures", type=float, nargs="+", default=list(TEMPERATURES_K), metavar="K")
    p.add_argument("--trajectories-per-temperature", type=int, default=TRAJECTORIES_PER_TEMPERATURE)
    p.add_argument("--frames-per-trajectory", type=int, default=FRAMES_PER_TRAJECTORY)
    p.add_argument("--equilibration-steps", type=int, default=EQUILIBRATION_STEPS)
    p.add_argument("--interval-steps", type=int, default=INTERVAL_STEPS)
    p.add_argument("--seed", type=int, default=SEED)

    p = stages.add_parser("label", help="B3LYP/6-31G* energies and forces -> parts/dft.part<k>.extxyz")
    p.add_argument("--worker", type=int, default=0, help="this worker's number k, 0 <= k < n")
    p.add_argument("--workers", type=int, default=1, help="n: worker k labels candidate indices = k mod n")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument(
        "--merge-every", type=int, default=MERGE_EVERY, help="merge after every N frames (0: only at the end)"
    )

    stages.add_parser("merge", help="dft.extxyz + parts/*.extxyz -> dft.extxyz, by candidate index")

    p = stages.add_parser("check", help="finite-difference check of the DFT forces -> fd_check.json")
    p.add_argument("--indices", type=int, nargs="+", default=None, help="candidate indices to check")
    p.add_argument("--components", type=int, default=4, help="Cartesian components per frame")
    p.add_argument("--step", type=float, default=1e-3, help="displacement, Angstrom")
    p.add_argument("--seed", type=int, default=0, help="seed for picking the components")

    stages.add_parser("status", help="count candidates and labelled frames")

    args = parser.parse_args(argv)
    # Ctrl-C and `kill PID` both stop cleanly (also in background jobs, where a shell may have
    # set SIGINT to be ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        if args.stage == "sample":
            plan = SamplingPlan(
                temperatures_K=tuple(args.temperatures),
                trajectories_per_temperature=args.trajectories_per_temperature,
                frames_per_trajectory=args.frames_per_trajectory,
                equilibration_steps=args.equilibration_steps,
                interval_steps=args.interval_steps,
                seed=args.seed,
            )
            sample(plan)
        elif args.stage == "label":
            if not 0 <= args.worker < args.workers:
                parser.error("need 0 <= --worker < --workers")
            label(args.worker, args.workers, args.max_frames, args.merge_every)
        elif args.stage == "merge":
            merge()
        elif args.stage == "check":
            check(args.indices, args.components, args.step, args.seed)
        elif args.stage == "status":
            status()
    except KeyboardInterrupt:
        print(
            "interrupted; every frame written so far is complete; run the same command to continue",
            flush=True,
        )
        sys.exit(130)


if __name__ == "__main__":
    main()

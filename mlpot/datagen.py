"""Shared machinery of the reference-data generators in ``systems/<molecule>/``.

The generators (``systems/ethanol/generate.py``, ``systems/alanine-dipeptide/generate_data.py``)
sample geometries, label them with a quantum-chemistry method and keep everything in extended
XYZ files that grow by appending, so generation can be stopped and continued at any time. What
does not depend on the molecule lives here:

* :class:`AppendOnlyExtxyz` and :func:`read_frames`: append-only extxyz files (one locked writer,
  whole frames written with one write + flush + fsync while Ctrl-C/SIGTERM are held back, an
  incomplete last frame from a hard kill cut off on the next start).
* :func:`append_trajectories`: the resumable sampling loop (trajectory ``i`` is re-run from its
  seed and only its missing frames are appended); :func:`xtb_langevin_positions`: GFN2-xTB
  Langevin dynamics with ASE.
* :class:`LabelledSet`: a labelled dataset made by ``k``-of-``n`` worker part files
  (``parts/<name>.part<k>.extxyz``) merged into one file (``.extxyz`` or ``.extxyz.gz``).
* :class:`PySCFLevel` (Kohn-Sham DFT with density fitting) and :class:`GFN2xTB` (tblite):
  energy in eV and forces in eV/Angstrom for a frame.
* :func:`finite_difference_rows` and :func:`write_fd_check`: central finite differences of a
  level's energy against its analytic forces, written to JSON.

Units: files and everything here are in Angstrom, eV and eV/Angstrom; PySCF's Hartree and Bohr
are converted with the constants of :mod:`mlpot.units`.

The labelling and sampling parts need the ``data`` extra (``pip install mlpot[data]``: PySCF and
tblite); they are imported where they are used, so the rest of this module imports without them.
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import importlib
import io
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Optional

import numpy as np

from mlpot.units import ANGSTROM_PER_BOHR, EV_PER_HARTREE

# info keys, declared once
INDEX_KEY = "candidate_index"
TRAJECTORY_KEY = "trajectory"
SEED_KEY = "seed"
TEMPERATURE_KEY = "temperature_K"
STEP_KEY = "step"
LEVEL_KEY = "level_of_theory"
SOFTWARE_KEY = "software"
SOURCE_KEY = "source"

EV_PER_ANGSTROM_PER_HARTREE_PER_BOHR = EV_PER_HARTREE / ANGSTROM_PER_BOHR


def _data_extra_missing(package: str) -> ImportError:
    return ImportError(f"{package} is needed to sample or label reference data: pip install mlpot[data]")


def import_data_extra(module: str):
    """Import ``module`` (``"pyscf.dft"``, ``"tblite.ase"``, ...) of the ``data`` extra; if it is
    missing, an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise _data_extra_missing(module.split(".")[0]) from error


def software_versions(*packages: str) -> str:
    """``"pyscf 2.14.0, tblite 0.8.0"`` for ``software_versions("pyscf", "tblite")``; a package
    that is not installed is an ImportError that names the ``data`` extra."""
    try:
        return ", ".join(f"{name} {version(name)}" for name in packages)
    except PackageNotFoundError as error:
        raise _data_extra_missing(error.name or str(error)) from None


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
    """All complete frames of an extxyz file (``.gz`` too) as ``ase.Atoms``; [] if there is no file.

    An incomplete last frame (a writer stopped mid-write, or is writing now) is ignored.
    """
    import ase.io

    if not path.exists():
        return []
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    frames, _ = _complete_frames(data)
    if not frames:
        return []
    text = b"".join(frames).decode()
    return ase.io.read(io.StringIO(text), index=":", format="extxyz")


def read_candidates(path: Path, required: bool = True) -> list:
    """The frames of a candidates file, after printing how many there are; if ``required``,
    no frames is an error that says to run the sample stage."""
    candidates = read_frames(path)
    print(f"{path.name}: {len(candidates)} candidates", flush=True)
    if required and not candidates:
        raise SystemExit(f"no candidates in {path}; run the sample stage first")
    return candidates


def write_frames_atomically(path: Path, frames: list) -> None:
    """Replace ``path`` by an extxyz file of ``frames`` in one rename (gzip-compressed if it ends in ``.gz``)."""
    import ase.io

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.suffix == ".gz":
            buffer = io.StringIO()
            ase.io.write(buffer, frames, format="extxyz")
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as zipped:
                zipped.write(buffer.getvalue().encode())
        else:
            ase.io.write(tmp, frames, format="extxyz")
        with signals_held():
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM inside the block; they are delivered when it ends."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


INTERRUPTED_MESSAGE = "interrupted; every frame written so far is complete; run the same command to continue"


class AppendOnlyExtxyz:
    """An extxyz file that one process appends whole frames to.

    Opening takes an exclusive lock (another process appending to the same file is an error)
    and cuts off an incomplete last frame left by a killed run. Use as a context manager.
    """

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> AppendOnlyExtxyz:
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
        with signals_held():
            os.truncate(self.path, n_complete)
        print(f"{self.path.name}: dropped an incomplete last frame ({len(tail)} bytes)", flush=True)

    def append(self, atoms) -> None:
        """Append one frame with a single write, then flush and fsync."""
        import ase.io

        buffer = io.StringIO()
        ase.io.write(buffer, atoms, format="extxyz")
        data = buffer.getvalue().encode()
        with signals_held():
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())


# --------------------------------------------------------------------------------------------
# Sampling: trajectories appended frame by frame, resumable


def append_trajectories(
    path: Path,
    symbols: list[str],
    n_trajectories: int,
    frames_per_trajectory: Callable[[int], int],
    expected_info: Callable[[int, int], dict],
    run: Callable[[int], Iterator[tuple[int, np.ndarray]]],
    describe: Callable[[int], str],
    measure: Optional[Callable[[np.ndarray], dict]] = None,
) -> int:
    """Append the missing frames of trajectories ``0 .. n_trajectories-1`` to ``path``.

    Args:
        path: the candidates file (append-only extxyz).
        symbols: chemical symbols of the molecule, in file order.
        n_trajectories: how many trajectories the plan has.
        frames_per_trajectory: trajectory -> number of saved frames.
        expected_info: (trajectory, frame) -> the ``info`` keys that identify the frame (seed,
            temperature, step, ...); stored with it and checked against what is in the file.
        run: trajectory -> iterator of ``(frame, positions_A)`` for every saved frame, in
            order, from the start (a partly written trajectory is re-run from its seed and only
            the missing frames are appended).
        describe: trajectory -> a few words for the log, e.g. ``"400 K"``.
        measure: positions_A -> further ``info`` keys computed from the geometry (angles, ...).

    Each frame's ``info`` is ``candidate_index`` (its position in the file), ``trajectory``,
    then ``expected_info`` and ``measure``. Returns the number of candidates in the file.
    """
    from ase import Atoms

    with AppendOnlyExtxyz(path) as out:
        candidates = read_frames(path)
        by_trajectory: dict[int, list] = {}
        for index, atoms in enumerate(candidates):
            trajectory = int(atoms.info[TRAJECTORY_KEY])
            frame = len(by_trajectory.setdefault(trajectory, []))
            expected = {INDEX_KEY: index, **expected_info(trajectory, frame)}
            found = {key: np.asarray(atoms.info.get(key)).tolist() for key in expected}
            if any(found[key] != value for key, value in expected.items()):
                raise SystemExit(
                    f"candidate {index} (trajectory {trajectory}) has {found}, but this plan expects "
                    f"{expected}: {path.name} was made with other sampling options"
                )
            by_trajectory[trajectory].append(atoms)
        n_written = len(candidates)
        print(f"{n_written} candidates present in {path.name}", flush=True)
        for trajectory in range(n_trajectories):
            existing = by_trajectory.get(trajectory, [])
            if len(existing) >= frames_per_trajectory(trajectory):
                continue
            t0 = time.perf_counter()
            for frame, positions_A in run(trajectory):
                if frame < len(existing):
                    if frame == len(existing) - 1:
                        deviation = np.abs(existing[frame].positions - positions_A).max()
                        if deviation > 1e-4:
                            print(
                                f"trajectory {trajectory}: re-run differs from the stored frame "
                                f"{frame} by {deviation:.2g} Angstrom (other machine or versions); "
                                "continuing: the new frames are equally valid samples of "
                                f"{describe(trajectory)}",
                                flush=True,
                            )
                    continue
                candidate = Atoms(symbols, positions=positions_A)
                candidate.info.update({INDEX_KEY: n_written, TRAJECTORY_KEY: trajectory})
                candidate.info.update(expected_info(trajectory, frame))
                if measure is not None:
                    candidate.info.update(measure(positions_A))
                out.append(candidate)
                n_written += 1
            print(
                f"trajectory {trajectory} ({describe(trajectory)}) done in "
                f"{time.perf_counter() - t0:.1f} s; {n_written} candidates",
                flush=True,
            )
    print(f"sampling complete: {n_written} candidates in {path}", flush=True)
    return n_written


def xtb_langevin_positions(
    start,
    temperature_K: float,
    rng: np.random.Generator,
    timestep_fs: float,
    friction_per_fs: float,
    equilibration_steps: int,
    interval_steps: int,
    n_frames: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """GFN2-xTB Langevin dynamics (ASE) from ``start`` (``ase.Atoms``, not modified).

    Maxwell-Boltzmann velocities at ``temperature_K`` drawn from ``rng``, centre of mass fixed,
    ``equilibration_steps`` steps, then ``n_frames`` frames ``interval_steps`` apart; yields
    ``(frame, positions_A)`` for each saved frame.
    """
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ase < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    atoms = start.copy()
    atoms.calc = GFN2xTB.calculator()
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())
    dynamics = Langevin(
        atoms,
        timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )
    dynamics.run(equilibration_steps)
    for frame in range(n_frames):
        dynamics.run(interval_steps)
        yield frame, atoms.get_positions()


# --------------------------------------------------------------------------------------------
# Levels of theory: energy (eV) and forces (eV/Angstrom) of one geometry


class Label(NamedTuple):
    energy_eV: float
    forces_eV_per_A: np.ndarray  # (n_atoms, 3)
    note: str  # for the log, e.g. "9 SCF cycles"


@dataclass(frozen=True)
class PySCFLevel:
    """Restricted Kohn-Sham DFT in PySCF with density fitting; neutral singlet, no dispersion.

    ``grid_level`` is PySCF's ``grids.level`` (3 is PySCF's default); ``grid_response`` adds
    the moving-grid term to the analytic gradient, which makes the forces the exact
    derivative of the energy (without it they differ from finite differences by ~2 meV/A).
    """

    name: str  # the ``level_of_theory`` written to each frame
    xc: str
    basis: str
    auxbasis: str
    grid_level: int = 3
    grid_response: bool = True
    conv_tol_hartree: float = 1e-9
    max_scf_cycles: int = 100

    software = ("pyscf", "tblite")

    def run_scf(self, symbols: list[str], positions_A: np.ndarray, dm0: Optional[np.ndarray] = None):
        """Converged (or not: check ``.converged``) density-fitted RKS object."""
        dft, gto = import_data_extra("pyscf.dft"), import_data_extra("pyscf.gto")

        mol = gto.M(
            atom=list(zip(symbols, np.asarray(positions_A).tolist())),
            basis=self.basis,
            unit="Angstrom",
            charge=0,
            spin=0,
            verbose=0,
        )
        mf = dft.RKS(mol).density_fit(auxbasis=self.auxbasis)
        mf.xc = self.xc
        mf.grids.level = self.grid_level
        mf.conv_tol = self.conv_tol_hartree
        mf.max_cycle = self.max_scf_cycles
        mf.kernel(dm0=dm0)
        return mf

    @staticmethod
    def energy_eV(mf) -> float:
        return float(mf.e_tot) * EV_PER_HARTREE

    def forces_eV_per_A(self, mf, grid_response: Optional[bool] = None) -> np.ndarray:
        """Analytic forces, shape (n_atoms, 3), eV/Angstrom, from a converged SCF object."""
        gradient = mf.nuc_grad_method()
        gradient.grid_response = self.grid_response if grid_response is None else grid_response
        gradient.verbose = 0
        return -np.asarray(gradient.kernel()) * EV_PER_ANGSTROM_PER_HARTREE_PER_BOHR

    def label(self, symbols: list[str], positions_A: np.ndarray) -> Optional[Label]:
        """Energy and forces, or None (with a message) if the SCF does not converge."""
        mf = self.run_scf(symbols, positions_A)
        if not mf.converged:
            print(f"SCF did not converge in {self.max_scf_cycles} cycles", flush=True)
            return None
        return Label(self.energy_eV(mf), self.forces_eV_per_A(mf), f"{mf.cycles} SCF cycles")

    def settings(self) -> dict:
        return {
            "xc": self.xc,
            "basis": self.basis,
            "auxbasis": self.auxbasis,
            "conv_tol_hartree": self.conv_tol_hartree,
            "grid_level": self.grid_level,
            "grid_response_in_labels": self.grid_response,
        }

    def fd_check_frame(
        self, symbols: list[str], positions_A: np.ndarray, components: Iterable[int], step_A: float
    ) -> tuple[list[dict], np.ndarray]:
        """Finite-difference rows (see :func:`finite_difference_rows`) for the forces with and
        without grid response; each displaced SCF starts from the undisplaced density.
        Returns the rows and the analytic forces."""
        mf = self.run_scf(symbols, positions_A)
        forces = self.forces_eV_per_A(mf, grid_response=True)
        forces_no_grid_response = self.forces_eV_per_A(mf, grid_response=False)
        dm = mf.make_rdm1()

        def energy(displaced_A: np.ndarray) -> float:
            displaced_mf = self.run_scf(symbols, displaced_A, dm0=dm)
            if not displaced_mf.converged:
                raise RuntimeError("SCF did not converge at a displaced geometry")
            return self.energy_eV(displaced_mf)

        analytic = {"": forces, "_without_grid_response": forces_no_grid_response}
        return finite_difference_rows(symbols, positions_A, components, step_A, energy, analytic), forces


@dataclass(frozen=True)
class GFN2xTB:
    """GFN2-xTB (tblite's ASE calculator), neutral, no solvent, default electronic temperature."""

    name: str = "GFN2-xTB"

    software = ("tblite", "ase")

    @staticmethod
    def calculator():
        return import_data_extra("tblite.ase").TBLite(method="GFN2-xTB", verbosity=0)

    def energy_forces(self, symbols: list[str], positions_A: np.ndarray) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces (n_atoms, 3) in eV/Angstrom."""
        from ase import Atoms

        atoms = Atoms(symbols, positions=positions_A)
        atoms.calc = self.calculator()
        return float(atoms.get_potential_energy()), atoms.get_forces()

    def label(self, symbols: list[str], positions_A: np.ndarray) -> Optional[Label]:
        try:
            energy, forces = self.energy_forces(symbols, positions_A)
        except ImportError:
            raise
        except Exception as error:  # tblite raises on a failed SCC; the frame is skipped
            print(f"GFN2-xTB failed: {error}", flush=True)
            return None
        return Label(energy, forces, "")

    def settings(self) -> dict:
        return {"method": "GFN2-xTB", "charge": 0, "multiplicity": 1, "solvation": None}

    def fd_check_frame(
        self, symbols: list[str], positions_A: np.ndarray, components: Iterable[int], step_A: float
    ) -> tuple[list[dict], np.ndarray]:
        _, forces = self.energy_forces(symbols, positions_A)
        rows = finite_difference_rows(
            symbols,
            positions_A,
            components,
            step_A,
            lambda displaced_A: self.energy_forces(symbols, displaced_A)[0],
            {"": forces},
        )
        return rows, forces


# --------------------------------------------------------------------------------------------
# Labelled sets: worker part files merged into one dataset file


@dataclass(frozen=True)
class LabelledSet:
    """A dataset file (``path``, ``.extxyz`` or ``.extxyz.gz``) made from worker part files
    ``parts_dir/<name>.part<k>.extxyz``; frames are identified by ``candidate_index``."""

    path: Path
    parts_dir: Path
    name: str

    def part_path(self, worker: int) -> Path:
        return self.parts_dir / f"{self.name}.part{worker}.extxyz"

    def files(self) -> list[Path]:
        return [self.path, *sorted(self.parts_dir.glob(f"{self.name}.part*.extxyz"))]

    def by_index(self, report_relative_to: Optional[Path] = None) -> dict[int, object]:
        """Labelled frames by candidate index, from the dataset file and all part files; the
        first copy of an index wins (the dataset file first, then parts in name order).
        With ``report_relative_to``, prints each existing file's frame count."""
        by_index: dict[int, object] = {}
        for path in self.files():
            frames = read_frames(path)
            if report_relative_to is not None and path.exists():
                print(f"{path.relative_to(report_relative_to)}: {len(frames)} frames", flush=True)
            for atoms in frames:
                by_index.setdefault(int(atoms.info[INDEX_KEY]), atoms)
        return by_index

    def indices(self) -> set[int]:
        return set(self.by_index())

    def merge(self, quiet: bool = False) -> None:
        """Rewrite the dataset file as the union of itself and all part files, by candidate index.

        The first copy of a candidate index wins (see :meth:`by_index`). The new file replaces
        the old one atomically; the part files are left as they are.
        """
        by_index = self.by_index()
        if not by_index:
            print("nothing labelled yet", flush=True)
            return
        frames = [by_index[i] for i in sorted(by_index)]
        write_frames_atomically(self.path, frames)
        if not quiet:
            print(f"merged {len(frames)} labelled frames into {self.path}", flush=True)

    def label(
        self,
        share: list,
        level,
        worker: int,
        workers: int,
        extra_info: dict,
        describe: Callable[[object], str],
        max_frames: Optional[int] = None,
        merge_every: int = 20,
        log_every: int = 1,
        round_forces_decimals: Optional[int] = None,
    ) -> None:
        """Label the frames of ``share`` (this worker's candidates, in order) not labelled yet.

        Each labelled frame keeps the candidate's ``info``, adds ``extra_info`` (level of
        theory, software, ...) and is appended to this worker's part file; the dataset file
        is re-merged every ``merge_every`` frames and at the end. ``level`` is a
        :class:`PySCFLevel` or :class:`GFN2xTB`; ``describe(candidate)`` gives a few words
        for the log line.
        """
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        if not 0 <= worker < workers:
            raise SystemExit(f"worker {worker} of {workers}: need 0 <= --worker < --workers")
        with AppendOnlyExtxyz(self.part_path(worker)) as out:
            done = self.indices()
            todo = [c for c in share if int(c.info[INDEX_KEY]) not in done]
            if max_frames is not None:
                todo = todo[:max_frames]
            print(
                f"worker {worker}/{workers}: {len(share)} candidates in this share, {len(done)} labelled, "
                f"{len(todo)} to do now -> {out.path}; {extra_info.get(SOFTWARE_KEY)}; pid {os.getpid()}",
                flush=True,
            )
            wall_total, n_done = 0.0, 0
            for candidate in todo:
                index = int(candidate.info[INDEX_KEY])
                wall0, cpu0 = time.perf_counter(), time.process_time()
                symbols = candidate.get_chemical_symbols()
                result = level.label(symbols, candidate.positions)
                if result is None:
                    print(f"candidate {index}: no {level.name} label; skipped", flush=True)
                    continue
                forces = result.forces_eV_per_A
                if round_forces_decimals is not None:
                    forces = np.round(forces, round_forces_decimals)
                labelled = Atoms(symbols, positions=candidate.positions)
                labelled.info.update(candidate.info)
                labelled.info.update(extra_info)
                labelled.calc = SinglePointCalculator(labelled, energy=result.energy_eV, forces=forces)
                out.append(labelled)
                wall = time.perf_counter() - wall0
                wall_total += wall
                n_done += 1
                if n_done % log_every == 0 or n_done == len(todo):
                    note = f"{result.note}, " if result.note else ""
                    print(
                        f"candidate {index} ({describe(candidate)}): E = {result.energy_eV:.6f} eV, "
                        f"max|F| = {np.abs(forces).max():.3f} eV/A, {note}"
                        f"{wall:.2f} s wall, {time.process_time() - cpu0:.2f} s CPU; "
                        f"{n_done}/{len(todo)}, mean {wall_total / n_done:.3f} s/frame",
                        flush=True,
                    )
                if merge_every and n_done % merge_every == 0:
                    self.merge(quiet=True)
        self.merge()


# --------------------------------------------------------------------------------------------
# Finite-difference check of the forces


def finite_difference_rows(
    symbols: list[str],
    positions_A: np.ndarray,
    components: Iterable[int],
    step_A: float,
    energy_eV: Callable[[np.ndarray], float],
    analytic: dict[str, np.ndarray],
) -> list[dict]:
    """Central differences ``-(E(x+h) - E(x-h)) / 2h`` for the flat Cartesian ``components``.

    ``analytic`` maps a key suffix (``""``, ``"_without_grid_response"``, ...) to analytic
    forces (n_atoms, 3) in eV/Angstrom; each row holds ``analytic_force<suffix>_eV_per_A`` and
    ``error<suffix>_eV_per_A`` (analytic minus finite difference) for each of them.
    """
    rows = []
    for flat in sorted(int(c) for c in components):
        atom, axis = divmod(flat, 3)
        energies = []
        for sign in (+1, -1):
            displaced = np.array(positions_A, dtype=float)
            displaced[atom, axis] += sign * step_A
            energies.append(energy_eV(displaced))
        fd = -(energies[0] - energies[1]) / (2 * step_A)
        row = {"atom": atom, "element": symbols[atom], "axis": "xyz"[axis], "fd_force_eV_per_A": fd}
        row.update({f"analytic_force{s}_eV_per_A": float(f[atom, axis]) for s, f in analytic.items()})
        row.update({f"error{s}_eV_per_A": float(f[atom, axis]) - fd for s, f in analytic.items()})
        rows.append(row)
    return rows


@dataclass(frozen=True)
class FDCheckOptions:
    """How to check: ``components_per_frame`` random Cartesian components per frame, drawn
    from ``default_rng(seed)``, displaced by +-``step_A`` Angstrom."""

    components_per_frame: int = 4
    step_A: float = 1e-3
    seed: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FDCheckOptions:
        """From the options added by :func:`add_fd_check_arguments`."""
        return cls(args.components, args.step, args.seed)


def fd_check(path: Path, level, candidates: list, describe: Callable[[object], dict], options: FDCheckOptions) -> dict:
    """Finite-difference check of ``level``'s forces on ``candidates`` (``ase.Atoms`` with a
    ``candidate_index``); ``describe(candidate)`` adds keys to each frame's entry. Writes
    ``path`` (see :func:`write_fd_check`) and returns its content."""
    rng = np.random.default_rng(options.seed)
    frames = []
    for candidate in candidates:
        t0 = time.perf_counter()
        picks = rng.choice(candidate.positions.size, size=options.components_per_frame, replace=False)
        symbols, positions_A = candidate.get_chemical_symbols(), candidate.positions
        rows, forces = level.fd_check_frame(symbols, positions_A, picks, options.step_A)
        frames.append(
            {
                INDEX_KEY: int(candidate.info[INDEX_KEY]),
                **describe(candidate),
                "max_abs_force_eV_per_A": float(np.abs(forces).max()),
                "components": rows,
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
        print(json.dumps(frames[-1], indent=1), flush=True)
    return write_fd_check(path, level, options.step_A, frames)


def write_fd_check(path: Path, level, step_A: float, frames: list[dict]) -> dict:
    """Write the finite-difference check of ``level`` (frames with ``components`` rows) to JSON.

    Adds ``max_abs_error<suffix>_eV_per_A`` over all rows for every error column; returns the dict.
    """
    rows = [row for frame in frames for row in frame["components"]]
    suffixes = [key[len("error") : -len("_eV_per_A")] for key in rows[0] if key.startswith("error")]
    result = {
        "what": f"central finite differences of the {level.name} energy vs analytic forces, Cartesian components",
        LEVEL_KEY: level.name,
        SOFTWARE_KEY: software_versions(*level.software),
        "settings": level.settings(),
        "step_A": step_A,
    }
    for s in suffixes:
        result[f"max_abs_error{s}_eV_per_A"] = max(abs(row[f"error{s}_eV_per_A"]) for row in rows)
    result["frames"] = frames
    path.write_text(json.dumps(result, indent=1) + "\n")
    summary = ", ".join(f"{result[f'max_abs_error{s}_eV_per_A']:.2e} eV/A{s.replace('_', ' ')}" for s in suffixes)
    print(f"{level.name}: max |F_analytic - F_fd| = {summary}; written to {path}", flush=True)
    return result


# --------------------------------------------------------------------------------------------
# Command line pieces shared by the generators


def add_worker_arguments(parser: argparse.ArgumentParser, merge_every: int, share: str) -> None:
    """``--worker``, ``--workers``, ``--max-frames``, ``--merge-every`` of a labelling stage;
    ``share`` says which candidates worker k of n takes."""
    parser.add_argument("--worker", type=int, default=0, help="this worker's number k, 0 <= k < n")
    parser.add_argument("--workers", type=int, default=1, help=f"n: worker k labels {share}")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument(
        "--merge-every", type=int, default=merge_every, help="merge after every N frames (0: only at the end)"
    )


def add_fd_check_arguments(parser: argparse.ArgumentParser) -> None:
    """``--indices``, ``--components``, ``--step``, ``--seed`` of a finite-difference check stage."""
    parser.add_argument("--indices", type=int, nargs="+", default=None, help="candidate indices to check")
    default = FDCheckOptions()
    parser.add_argument(
        "--components", type=int, default=default.components_per_frame, help="Cartesian components per frame"
    )
    parser.add_argument("--step", type=float, default=default.step_A, help="displacement, Angstrom")
    parser.add_argument("--seed", type=int, default=default.seed, help="seed for picking the components")


def run_stage(stage: Callable[[], None]) -> None:
    """Run ``stage()`` so that Ctrl-C and ``kill PID`` stop it cleanly (also in background jobs,
    where a shell may have set SIGINT to be ignored): a message, exit status 130."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        stage()
    except KeyboardInterrupt:
        print(INTERRUPTED_MESSAGE, flush=True)
        sys.exit(130)

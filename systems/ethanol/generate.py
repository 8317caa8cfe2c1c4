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

How to run (from the repository root; needs ``pip install mlpot[data]``: PySCF and tblite)::

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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from mlpot import datagen
from mlpot.datagen import INDEX_KEY, LEVEL_KEY, SEED_KEY, SOFTWARE_KEY, SOURCE_KEY, STEP_KEY, TEMPERATURE_KEY

HERE = Path(__file__).resolve().parent
CANDIDATES_PATH = HERE / "candidates.extxyz"
FD_CHECK_PATH = HERE / "fd_check.json"
DFT_SET = datagen.LabelledSet(path=HERE / "dft.extxyz", parts_dir=HERE / "parts", name="dft")

SOURCE = "GFN2-xTB MD"

# DFT settings (see the module docstring)
DFT = datagen.PySCFLevel(
    name="B3LYP/6-31G* (density fitting)",
    xc="b3lyp",
    basis="6-31g*",
    auxbasis="cc-pvdz-jkfit",
    grid_level=3,  # PySCF's default
    grid_response=True,
    conv_tol_hartree=1e-9,
    max_scf_cycles=100,
)

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

    def info(self, trajectory: int, frame: int) -> dict:
        """The ``info`` keys that identify a candidate of this plan."""
        return {SEED_KEY: self.seed, TEMPERATURE_KEY: self.temperature_K(trajectory), STEP_KEY: self.step(frame)}


def relaxed_ethanol():
    """ASE's G2 ethanol (anti conformer) relaxed with GFN2-xTB; positions in Angstrom."""
    from ase.build import molecule
    from ase.optimize import BFGS

    atoms = molecule("CH3CH2OH")
    atoms.calc = datagen.GFN2xTB.calculator()
    BFGS(atoms, logfile=None).run(fmax=RELAX_FMAX_EV_PER_A)
    return atoms


def run_trajectory(start, plan: SamplingPlan, trajectory: int) -> Iterator[tuple[int, np.ndarray]]:
    """Langevin MD of one trajectory; yields ``(frame, positions_A)`` for each saved frame."""
    return datagen.xtb_langevin_positions(
        start,
        plan.temperature_K(trajectory),
        np.random.default_rng([plan.seed, trajectory]),
        TIMESTEP_FS,
        FRICTION_PER_FS,
        plan.equilibration_steps,
        plan.interval_steps,
        plan.frames_per_trajectory,
    )


def sample(plan: SamplingPlan) -> None:
    """Run the trajectories of ``plan`` that are missing from ``candidates.extxyz``, appending each frame."""
    print(f"plan: {plan}", flush=True)
    start = relaxed_ethanol()
    datagen.append_trajectories(
        CANDIDATES_PATH,
        start.get_chemical_symbols(),
        plan.n_trajectories,
        frames_per_trajectory=lambda trajectory: plan.frames_per_trajectory,
        expected_info=plan.info,
        run=lambda trajectory: run_trajectory(start, plan, trajectory),
        describe=lambda trajectory: f"{plan.temperature_K(trajectory):g} K",
    )


# --------------------------------------------------------------------------------------------
# Stage 2: label candidates with B3LYP/6-31G* (PySCF)


def label(worker: int, workers: int, max_frames: int | None, merge_every: int) -> None:
    """Label this worker's share of the unlabelled candidates, appending to its part file."""
    candidates = datagen.read_candidates(CANDIDATES_PATH)
    DFT_SET.label(
        [c for c in candidates if int(c.info[INDEX_KEY]) % workers == worker],
        DFT,
        worker,
        workers,
        extra_info={LEVEL_KEY: DFT.name, SOFTWARE_KEY: datagen.software_versions(*DFT.software), SOURCE_KEY: SOURCE},
        describe=lambda candidate: f"{candidate.info[TEMPERATURE_KEY]:g} K",
        max_frames=max_frames,
        merge_every=merge_every,
    )


# --------------------------------------------------------------------------------------------
# Stage 3: finite-difference check of the DFT forces


def check(indices: list[int] | None, options: datagen.FDCheckOptions) -> dict:
    """Central finite differences of the DFT energy against the analytic forces; writes fd_check.json."""
    candidates = datagen.read_candidates(CANDIDATES_PATH)
    if indices is None:  # the first frame at the lowest and at the highest temperature
        temperatures = [float(c.info[TEMPERATURE_KEY]) for c in candidates]
        indices = [temperatures.index(min(temperatures)), temperatures.index(max(temperatures))]
    return datagen.fd_check(
        FD_CHECK_PATH,
        DFT,
        [candidates[index] for index in indices],
        lambda candidate: {TEMPERATURE_KEY: float(candidate.info[TEMPERATURE_KEY])},
        options,
    )


# --------------------------------------------------------------------------------------------
# status and command line


def status() -> None:
    candidates = datagen.read_candidates(CANDIDATES_PATH, required=False)
    per_t = Counter(float(c.info[TEMPERATURE_KEY]) for c in candidates)
    labelled = DFT_SET.by_index(report_relative_to=HERE)
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
    datagen.add_worker_arguments(p, MERGE_EVERY, share="candidate indices = k mod n")

    stages.add_parser("merge", help="dft.extxyz + parts/*.extxyz -> dft.extxyz, by candidate index")

    p = stages.add_parser("check", help="finite-difference check of the DFT forces -> fd_check.json")
    datagen.add_fd_check_arguments(p)

    stages.add_parser("status", help="count candidates and labelled frames")

    args = parser.parse_args(argv)
    actions = {
        "sample": lambda: sample(
            SamplingPlan(
                temperatures_K=tuple(args.temperatures),
                trajectories_per_temperature=args.trajectories_per_temperature,
                frames_per_trajectory=args.frames_per_trajectory,
                equilibration_steps=args.equilibration_steps,
                interval_steps=args.interval_steps,
                seed=args.seed,
            )
        ),
        "label": lambda: label(args.worker, args.workers, args.max_frames, args.merge_every),
        "merge": DFT_SET.merge,
        "check": lambda: check(args.indices, datagen.FDCheckOptions.from_args(args)),
        "status": status,
    }
    datagen.run_stage(actions[args.stage])

if __name__ == "__main__":
    main()

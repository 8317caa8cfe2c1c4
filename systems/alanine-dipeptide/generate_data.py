"""Generate the alanine-dipeptide reference data: GFN2-xTB labels (training) and B3LYP/6-31G* DFT (test).

What it makes (all files in this folder)

* ``candidates.extxyz`` (working file, not committed; every candidate is also in
  ``xtb.extxyz.gz``): geometries of ACE-ALA-NME (22 atoms, Angstrom, positions rounded to
  1e-5 Angstrom, the values that are labelled), no energies or forces. ``info`` per frame:
  ``candidate_index`` (position in the file), ``trajectory``, ``sampler``
  (``"amber14 metadynamics"`` or ``"GFN2-xTB MD"``), ``source`` (sampler and temperature),
  ``start_structure`` (``c5``, ``c7eq`` or ``c7ax``), ``seed``, ``temperature_K``, ``step``
  (MD step within the trajectory), ``timestep_fs``, ``phi_deg``, ``psi_deg``.
* ``xtb.extxyz.gz``: every candidate labelled with GFN2-xTB, ordered by ``candidate_index``.
  Energy (eV) and forces (eV/Angstrom, rounded to 1e-6) are ASE ``SinglePointCalculator``
  results; ``info`` adds ``level_of_theory`` (``"GFN2-xTB"``) and ``software``.
* ``dft.extxyz``: a subset labelled with B3LYP/6-31G* (held-out "real DFT" test data), same
  layout, ``level_of_theory`` ``"B3LYP/6-31G* (density fitting, grid level 1)"``.
* ``parts/{xtb,dft}.part<k>.extxyz``: append-only output of labelling worker ``k`` (not
  committed); ``merge`` combines them with the dataset files.
* ``fd_check_xtb.json``, ``fd_check_dft.json``: finite-difference checks of the forces.

Sampling (the geometries), trajectory by trajectory, each with its own seed
``numpy.random.default_rng([seed, trajectory])``:

* Trajectories 0-3: **well-tempered metadynamics on (phi, psi)** with OpenMM's
  ``app.Metadynamics`` (two ``BiasVariable`` on ``CustomTorsionForce`` phi = atoms 4-6-8-14,
  psi = 6-8-14-16, periodic, Gaussian width 0.35 rad, height 1.5 kJ/mol every 250 steps, bias
  factor 8), amber14-all.xml in vacuum (NoCutoff, no constraints, flexible X-H bonds),
  ``LangevinMiddleIntegrator`` 1 fs, friction 1/ps, CPU platform with one thread. Run ``i``
  starts from ``[c5, c7eq, c7ax, c5][i]`` at ``[400, 500, 400, 500][i]`` K; 5 ps (bias already
  deposited) before the first frame, then 1100 frames 250 fs apart (275 ps).
* Trajectories 4-9: **GFN2-xTB Langevin MD** (tblite + ASE, 0.5 fs, friction 0.01/fs, centre
  of mass fixed) from the amber14 minima C5, C7eq, C7ax (``alanine-dipeptide.pdb``,
  ``c7eq.pdb``, ``c7ax.pdb``) at 300 and 500 K: 0.5 ps to relax to GFN2-xTB bond lengths, then
  180 frames 15 fs apart. These give the model QM-relaxed bond lengths; amber geometries carry
  amber bond lengths, so their QM forces are large (RMS 1-2 eV/Angstrom).

4400 + 1080 = 5480 candidates, 20 % of them from GFN2-xTB MD.

Levels of theory (the labels)

* GFN2-xTB: tblite's ASE calculator, neutral, no solvation, tblite defaults (electronic
  temperature 300 K, SCC accuracy 1). Forces are the analytic gradient.
* B3LYP/6-31G*: restricted Kohn-Sham in PySCF with density fitting (cc-pVDZ-JKFIT), libxc's
  HYB_GGA_XC_B3LYP (VWN-RPA), spherical d, **grid level 1** (PySCF ``grids.level = 1``; about
  3x cheaper than the default 3 and 1-2 meV different in total energy), SCF ``conv_tol``
  1e-9 Hartree, no dispersion, neutral singlet. Forces include the grid-response term
  (``grid_response=True``), so they are the exact derivative of the stored energy at this
  grid. Same settings as ``systems/ethanol`` apart from the grid level.

Which candidates get DFT labels: the ``label-dft`` stage orders the xTB-labelled candidates
by farthest-point sampling in (phi, psi) (periodic distance in degrees), separately for each
``sampler``, and interleaves the two orders in proportion to their sizes (about 4 metadynamics
frames to 1 xTB-MD frame). Every prefix of this order spreads over the visited Ramachandran
plane, so the set is useful at any size; it is labelled in this order.

How to run (from the repository root; needs ``pip install mlpot[data]``: PySCF and tblite)::

    python systems/alanine-dipeptide/generate_data.py sample       # ~14 min: 5480 candidates
    python systems/alanine-dipeptide/generate_data.py label-xtb    # ~2-3 min: xtb.extxyz.gz
    python systems/alanine-dipeptide/generate_data.py check        # ~5 min: fd_check_{xtb,dft}.json
    OMP_NUM_THREADS=1 nohup python -u systems/alanine-dipeptide/generate_data.py label-dft \\
        > systems/alanine-dipeptide/label-dft.log 2>&1 &           # ~30-45 s per frame, one core
    python systems/alanine-dipeptide/generate_data.py status       # counts and basin coverage

``label-dft --frames N`` sets how many of the ordered candidates to label (default 100;
raise it to grow the set: the first N of the order do not change). Two workers on two
cores: ``label-dft --worker 0 --workers 2`` and ``--worker 1 --workers 2`` (worker k takes
ranks k, k+n, ... of the order).

How to resume: run the same command again. Every stage is append-only and skips what is
done: ``sample`` re-runs a partly written trajectory from its seed and appends only the
missing frames; ``label-*`` skip candidates already in the dataset file or any part file;
``merge`` may run at any time (``label-dft`` merges every 5 frames and at the end). Frames are
written with one write + flush + fsync while Ctrl-C/SIGTERM are held back, so stopping a run
(Ctrl-C, ``kill PID``) never leaves half a frame; a truncated frame after a hard kill is cut
off on the next start. File locks stop two processes appending to the same file. Pause and
continue a labeller with ``kill -STOP PID`` / ``kill -CONT PID`` (PID in the log's first line).

Measured cost (2-core box, one thread, other jobs on the box, load 3-7): metadynamics ~0.45 ms
per 1 fs step (116-153 s per 280 ps trajectory); GFN2-xTB MD 7-9 ms per 0.5 fs step (46-58 s
per trajectory); ``sample`` 14 min in all; GFN2-xTB label 0.016 s per frame (5480 in 1.9 min);
B3LYP/6-31G* grid-1 label 28-29 s CPU per frame (11-13 SCF cycles + gradient), 40-44 s wall
with one other job beside it, ~75 s at load 5; FD check 144 s per DFT frame (9 SCFs).

Units: files are in Angstrom, eV, eV/Angstrom; OpenMM's nm and PySCF's Hartree/Bohr are
converted with :mod:`mlpot.units`. ``OMP_NUM_THREADS`` defaults to 1.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/pyscf start their thread pools

import argparse
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from mlpot import datagen
from mlpot.datagen import INDEX_KEY, LEVEL_KEY, SEED_KEY, SOFTWARE_KEY, SOURCE_KEY, STEP_KEY, TEMPERATURE_KEY
from mlpot.units import ANGSTROM_PER_NM

HERE = Path(__file__).resolve().parent
CANDIDATES_PATH = HERE / "candidates.extxyz"
PARTS_DIR = HERE / "parts"
XTB_SET = datagen.LabelledSet(path=HERE / "xtb.extxyz.gz", parts_dir=PARTS_DIR, name="xtb")
DFT_SET = datagen.LabelledSet(path=HERE / "dft.extxyz", parts_dir=PARTS_DIR, name="dft")
FD_CHECK_PATHS = {"xtb": HERE / "fd_check_xtb.json", "dft": HERE / "fd_check_dft.json"}

# info keys of this dataset (the shared ones come from datagen)
SAMPLER_KEY = "sampler"
START_KEY = "start_structure"
TIMESTEP_KEY = "timestep_fs"
PHI_KEY = "phi_deg"
PSI_KEY = "psi_deg"

XTB = datagen.GFN2xTB()
DFT = datagen.PySCFLevel(
    name="B3LYP/6-31G* (density fitting, grid level 1)",
    xc="b3lyp",
    basis="6-31g*",
    auxbasis="cc-pvdz-jkfit",
    grid_level=1,
    grid_response=True,
    conv_tol_hartree=1e-9,
    max_scf_cycles=100,
)
LEVELS = {"xtb": (XTB, XTB_SET), "dft": (DFT, DFT_SET)}

# phi = C(ACE)-N-CA-C, psi = N-CA-C-N(NME); 0-based atom indices in the tleap order of the PDBs
PHI_ATOMS = (4, 6, 8, 14)
PSI_ATOMS = (6, 8, 14, 16)
START_FILES = {"c5": "alanine-dipeptide.pdb", "c7eq": "c7eq.pdb", "c7ax": "c7ax.pdb"}

# Sampling plan
SEED = 2026
POSITION_DECIMALS = 5  # candidates are stored (and labelled) at 1e-5 Angstrom
FORCE_DECIMALS = 6  # forces stored to 1e-6 eV/Angstrom

METAD_SAMPLER = "amber14 metadynamics"
METAD_RUNS = (("c5", 400.0), ("c7eq", 500.0), ("c7ax", 400.0), ("c5", 500.0))  # (start, K)
METAD_TIMESTEP_FS = 1.0
METAD_FRICTION_PER_PS = 1.0
METAD_EQUILIBRATION_STEPS = 5000
METAD_INTERVAL_STEPS = 250
METAD_FRAMES = 1100
METAD_SIGMA_RAD = 0.35
METAD_HEIGHT_KJ_PER_MOL = 1.5
METAD_DEPOSIT_STEPS = 250
METAD_BIAS_FACTOR = 8.0

XTB_MD_SAMPLER = "GFN2-xTB MD"
XTB_MD_RUNS = (("c5", 300.0), ("c7eq", 300.0), ("c7ax", 300.0), ("c5", 500.0), ("c7eq", 500.0), ("c7ax", 500.0))
XTB_MD_TIMESTEP_FS = 0.5
XTB_MD_FRICTION_PER_FS = 0.01
XTB_MD_EQUILIBRATION_STEPS = 1000
XTB_MD_INTERVAL_STEPS = 30
XTB_MD_FRAMES = 180

DFT_FRAMES = 100
DFT_MERGE_EVERY = 5
XTB_MERGE_EVERY = 1000

# Ramachandran regions for the coverage report, degrees: (name, phi range, psi ranges)
REGIONS = (
    ("C5", (-180.0, -110.0), ((110.0, 180.0), (-180.0, -150.0))),
    ("C7eq", (-110.0, -40.0), ((20.0, 180.0), (-180.0, -150.0))),
    ("alphaR", (-180.0, -40.0), ((-90.0, 20.0),)),
    ("C7ax", (20.0, 120.0), ((-130.0, 0.0),)),
    ("alphaL", (20.0, 120.0), ((0.0, 120.0),)),
)
BARRIER = "barrier/other"


# --------------------------------------------------------------------------------------------
# Geometry helpers


def dihedral_deg(positions_A: np.ndarray, atoms: tuple[int, int, int, int]) -> np.ndarray:
    """Dihedral angle(s) in degrees (IUPAC sign, as mdtraj); positions (..., n_atoms, 3)."""
    p = np.asarray(positions_A)
    b0 = p[..., atoms[1], :] - p[..., atoms[0], :]
    b1 = p[..., atoms[2], :] - p[..., atoms[1], :]
    b2 = p[..., atoms[3], :] - p[..., atoms[2], :]
    n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
    y = np.linalg.norm(b1, axis=-1) * np.sum(b0 * n2, axis=-1)
    x = np.sum(n1 * n2, axis=-1)
    return np.degrees(np.arctan2(y, x))


def phi_psi_info(positions_A: np.ndarray) -> dict:
    return {
        PHI_KEY: round(float(dihedral_deg(positions_A, PHI_ATOMS)), 2),
        PSI_KEY: round(float(dihedral_deg(positions_A, PSI_ATOMS)), 2),
    }


def region(phi_deg: float, psi_deg: float) -> str:
    """Name of the Ramachandran region of (phi, psi) in :data:`REGIONS`, else :data:`BARRIER`."""
    for name, (phi_lo, phi_hi), psi_ranges in REGIONS:
        if phi_lo <= phi_deg < phi_hi and any(lo <= psi_deg <= hi for lo, hi in psi_ranges):
            return name
    return BARRIER


def coverage(frames: list) -> dict:
    """Fractions of frames per region, phi > 0 fraction and visited 30x30 degree bins."""
    phi = np.array([float(a.info[PHI_KEY]) for a in frames])
    psi = np.array([float(a.info[PSI_KEY]) for a in frames])
    counts = Counter(region(f, s) for f, s in zip(phi, psi))
    bins = {(int((f + 180) // 30) % 12, int((s + 180) // 30) % 12) for f, s in zip(phi, psi)}
    names = [name for name, _, _ in REGIONS] + [BARRIER]
    return {
        "frames": len(frames),
        "fractions": {name: round(counts[name] / max(len(frames), 1), 3) for name in names},
        "phi_positive_fraction": round(float(np.mean(phi > 0)) if len(frames) else 0.0, 3),
        "ramachandran_bins_30deg_visited": f"{len(bins)}/144",
    }


def start_atoms(name: str):
    """An amber14 minimum from this folder as ``ase.Atoms`` (Angstrom)."""
    from mlpot.systems import load_atoms

    return load_atoms(HERE / START_FILES[name])


# --------------------------------------------------------------------------------------------
# Stage 1: sample candidates


@dataclass(frozen=True)
class Run:
    """One trajectory of the sampling plan."""

    sampler: str
    start: str
    temperature_K: float
    timestep_fs: float
    equilibration_steps: int
    interval_steps: int
    frames: int

    @property
    def source(self) -> str:
        return f"{self.sampler} {self.temperature_K:g} K"


PLAN: tuple[Run, ...] = tuple(
    Run(METAD_SAMPLER, start, t, METAD_TIMESTEP_FS, METAD_EQUILIBRATION_STEPS, METAD_INTERVAL_STEPS, METAD_FRAMES)
    for start, t in METAD_RUNS
) + tuple(
    Run(XTB_MD_SAMPLER, start, t, XTB_MD_TIMESTEP_FS, XTB_MD_EQUILIBRATION_STEPS, XTB_MD_INTERVAL_STEPS, XTB_MD_FRAMES)
    for start, t in XTB_MD_RUNS
)


def expected_info(trajectory: int, frame: int, seed: int = SEED) -> dict:
    run = PLAN[trajectory]
    return {
        SAMPLER_KEY: run.sampler,
        SOURCE_KEY: run.source,
        START_KEY: run.start,
        SEED_KEY: seed,
        TEMPERATURE_KEY: run.temperature_K,
        STEP_KEY: run.equilibration_steps + (frame + 1) * run.interval_steps,
        TIMESTEP_KEY: run.timestep_fs,
    }


def run_metadynamics(run: Run, rng: np.random.Generator) -> Iterator[tuple[int, np.ndarray]]:
    """Well-tempered metadynamics on (phi, psi) with amber14 in vacuum; yields (frame, positions_A)."""
    import openmm
    from openmm import app, unit

    from mlpot.systems import load_openmm

    topology, positions_nm = load_openmm(HERE / START_FILES[run.start])
    system = app.ForceField("amber14-all.xml").createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    variables = []
    for atoms in (PHI_ATOMS, PSI_ATOMS):
        torsion = openmm.CustomTorsionForce("theta")
        torsion.addTorsion(*atoms)
        variables.append(app.BiasVariable(torsion, -np.pi, np.pi, METAD_SIGMA_RAD, periodic=True))
    temperature = run.temperature_K * unit.kelvin
    metadynamics = app.Metadynamics(
        system,
        variables,
        temperature,
        METAD_BIAS_FACTOR,
        METAD_HEIGHT_KJ_PER_MOL * unit.kilojoule_per_mole,
        METAD_DEPOSIT_STEPS,
    )
    integrator = openmm.LangevinMiddleIntegrator(
        temperature, METAD_FRICTION_PER_PS / unit.picosecond, run.timestep_fs * unit.femtosecond
    )
    openmm_seed = int(rng.integers(1, 2**31 - 1))
    integrator.setRandomNumberSeed(openmm_seed)
    platform = openmm.Platform.getPlatformByName("CPU")
    simulation = app.Simulation(topology, system, integrator, platform, {"Threads": "1"})
    simulation.context.setPositions(positions_nm)
    simulation.context.setVelocitiesToTemperature(temperature, openmm_seed)
    metadynamics.step(simulation, run.equilibration_steps)
    for frame in range(run.frames):
        metadynamics.step(simulation, run.interval_steps)
        state = simulation.context.getState(getPositions=True)
        yield frame, state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * ANGSTROM_PER_NM


def run_trajectory(trajectory: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """Frames of trajectory ``trajectory`` of :data:`PLAN`, positions rounded as stored."""
    run = PLAN[trajectory]
    rng = np.random.default_rng([seed, trajectory])
    if run.sampler == METAD_SAMPLER:
        frames = run_metadynamics(run, rng)
    else:
        frames = datagen.xtb_langevin_positions(
            start_atoms(run.start),
            run.temperature_K,
            rng,
            run.timestep_fs,
            XTB_MD_FRICTION_PER_FS,
            run.equilibration_steps,
            run.interval_steps,
            run.frames,
        )
    for frame, positions_A in frames:
        yield frame, np.round(positions_A, POSITION_DECIMALS)


def sample(seed: int, trajectories: int) -> None:
    """Run the trajectories of :data:`PLAN` missing from ``candidates.extxyz``, appending each frame."""
    for i, run in enumerate(PLAN[:trajectories]):
        print(f"trajectory {i}: {run}", flush=True)
    datagen.append_trajectories(
        CANDIDATES_PATH,
        start_atoms("c5").get_chemical_symbols(),
        min(trajectories, len(PLAN)),
        frames_per_trajectory=lambda trajectory: PLAN[trajectory].frames,
        expected_info=lambda trajectory, frame: expected_info(trajectory, frame, seed),
        run=lambda trajectory: run_trajectory(trajectory, seed),
        describe=lambda trajectory: f"{PLAN[trajectory].source} from {PLAN[trajectory].start}",
        measure=phi_psi_info,
    )


# --------------------------------------------------------------------------------------------
# Stage 2: labels


def label_software(level) -> str:
    sampling = datagen.software_versions("openmm", "tblite", "ase")
    return f"{datagen.software_versions(*level.software[:1])} (labels); {sampling} (sampling)"


def describe(candidate) -> str:
    info = candidate.info
    return f"{info[SOURCE_KEY]}, phi {float(info[PHI_KEY]):.0f}, psi {float(info[PSI_KEY]):.0f}"


def label(name: str, share: list, worker: int, workers: int, max_frames: int | None, merge_every: int) -> None:
    """Label the frames of ``share`` not labelled yet with level ``name`` ("xtb" or "dft")."""
    level, dataset = LEVELS[name]
    dataset.label(
        share,
        level,
        worker,
        workers,
        extra_info={LEVEL_KEY: level.name, SOFTWARE_KEY: label_software(level)},
        describe=describe,
        max_frames=max_frames,
        merge_every=merge_every,
        log_every=250 if name == "xtb" else 1,
        round_forces_decimals=FORCE_DECIMALS,
    )


def label_xtb(max_frames: int | None) -> None:
    """GFN2-xTB energies and forces for every candidate -> xtb.extxyz.gz."""
    candidates = datagen.read_candidates(CANDIDATES_PATH)
    label("xtb", candidates, 0, 1, max_frames, XTB_MERGE_EVERY)


def farthest_point_order(phi_psi_deg: np.ndarray, n: int) -> list[int]:
    """Greedy farthest-point order (first ``n`` rows) in (phi, psi), periodic, starting at row 0."""
    n = min(n, len(phi_psi_deg))
    order = [0]
    distance = np.full(len(phi_psi_deg), np.inf)
    while len(order) < n:
        delta = np.abs(phi_psi_deg - phi_psi_deg[order[-1]])
        delta = np.minimum(delta, 360.0 - delta)
        distance = np.minimum(distance, np.hypot(delta[:, 0], delta[:, 1]))
        distance[order[-1]] = -1.0
        order.append(int(np.argmax(distance)))
    return order


def dft_order(frames: list, n: int) -> list:
    """The first ``n`` frames to label with DFT: farthest-point order in (phi, psi) per
    ``sampler``, interleaved in proportion to the samplers' sizes (prefix-stable in ``n``)."""
    groups: dict[str, list] = {}
    for atoms in frames:
        groups.setdefault(str(atoms.info[SAMPLER_KEY]), []).append(atoms)
    orders = {}
    for name, group in groups.items():
        angles = np.array([[float(a.info[PHI_KEY]), float(a.info[PSI_KEY])] for a in group])
        orders[name] = [group[i] for i in farthest_point_order(angles, n)]
    taken = dict.fromkeys(groups, 0)
    picked = []
    while len(picked) < min(n, len(frames)):
        open_groups = [g for g in groups if taken[g] < len(orders[g])]
        name = min(open_groups, key=lambda g: ((taken[g] + 1) / len(groups[g]), g))
        picked.append(orders[name][taken[name]])
        taken[name] += 1
    return picked


def xtb_frames_as_candidates() -> list:
    frames = datagen.read_frames(XTB_SET.path)
    if not frames:
        raise SystemExit(f"no frames in {XTB_SET.path}; run the sample and label-xtb stages first")
    return frames


def label_dft(n_frames: int, worker: int, workers: int, max_frames: int | None, merge_every: int) -> None:
    """B3LYP/6-31G* labels for this worker's share of the first ``n_frames`` of :func:`dft_order`."""
    order = dft_order(xtb_frames_as_candidates(), n_frames)
    label("dft", order[worker::workers], worker, workers, max_frames, merge_every)


def merge(levels: list[str]) -> None:
    """parts/<level>.part*.extxyz -> the level's dataset file, for each of ``levels``."""
    for name in levels:
        LEVELS[name][1].merge()


# --------------------------------------------------------------------------------------------
# Stage 3: finite-difference check of the forces


def fd_check_keys(candidate) -> dict:
    """What the finite-difference JSON records about a checked frame besides its index."""
    return {key: candidate.info[key] for key in (SOURCE_KEY, PHI_KEY, PSI_KEY)}


def check(levels: list[str], indices: list[int] | None, options: datagen.FDCheckOptions) -> None:
    """Central finite differences of each level's energy against its forces -> fd_check_<level>.json."""
    frames = xtb_frames_as_candidates()
    by_index = {int(a.info[INDEX_KEY]): a for a in frames}
    if indices is None:  # the first two DFT picks: a metadynamics and a far-away frame
        indices = [int(a.info[INDEX_KEY]) for a in dft_order(frames, 2)]
    checked = [by_index[index] for index in indices]
    for name in levels:
        datagen.fd_check(FD_CHECK_PATHS[name], LEVELS[name][0], checked, fd_check_keys, options)


# --------------------------------------------------------------------------------------------
# status and command line


def status() -> None:
    candidates = datagen.read_candidates(CANDIDATES_PATH, required=False)
    per_source = Counter(str(c.info[SOURCE_KEY]) for c in candidates)
    for source in sorted(per_source):
        print(f"  {source}: {per_source[source]}", flush=True)
    for name, (_, dataset) in LEVELS.items():
        labelled = dataset.by_index(report_relative_to=HERE)
        print(f"{name}: {len(labelled)} labelled candidates", flush=True)
        if labelled:
            frames = list(labelled.values())
            print(f"  coverage: {json.dumps(coverage(frames))}", flush=True)
            sources = Counter(str(a.info[SAMPLER_KEY]) for a in frames)
            print(f"  samplers: {dict(sources)}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    stages = parser.add_subparsers(dest="stage", required=True)

    p = stages.add_parser("sample", help="amber14 metadynamics + GFN2-xTB MD -> candidates.extxyz")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--trajectories", type=int, default=len(PLAN), help="run only the first N of the plan")

    p = stages.add_parser("label-xtb", help="GFN2-xTB energies and forces -> xtb.extxyz.gz")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")

    p = stages.add_parser("label-dft", help="B3LYP/6-31G* energies and forces -> dft.extxyz")
    p.add_argument("--frames", type=int, default=DFT_FRAMES, help="size of the DFT set to reach")
    datagen.add_worker_arguments(p, DFT_MERGE_EVERY, share="ranks k, k+n, ... of the DFT order")

    p = stages.add_parser("merge", help="parts/*.extxyz -> xtb.extxyz.gz and dft.extxyz")
    p.add_argument("--levels", nargs="+", choices=sorted(LEVELS), default=sorted(LEVELS))

    p = stages.add_parser("check", help="finite-difference force checks -> fd_check_<level>.json")
    p.add_argument("--levels", nargs="+", choices=sorted(LEVELS), default=["xtb", "dft"])
    datagen.add_fd_check_arguments(p)

    stages.add_parser("status", help="counts and Ramachandran coverage of candidates and labels")

    args = parser.parse_args(argv)
    actions = {
        "sample": lambda: sample(args.seed, args.trajectories),
        "label-xtb": lambda: label_xtb(args.max_frames),
        "label-dft": lambda: label_dft(args.frames, args.worker, args.workers, args.max_frames, args.merge_every),
        "merge": lambda: merge(args.levels),
        "check": lambda: check(args.levels, args.indices, datagen.FDCheckOptions.from_args(args)),
        "status": status,
    }
    datagen.run_stage(actions[args.stage])


if __name__ == "__main__":
    main()

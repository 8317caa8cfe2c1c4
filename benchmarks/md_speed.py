"""MD speed of mlpot models: the raw compiled call, an ASE MD step and an OpenMM MD step.

For every architecture x size x system it measures, on the CPU with a fixed number of torch threads:

* **raw**: ``deployed.module.compute(...)`` with forces (forward + backward), positions slightly
  perturbed every call, ms per call;
* **ase**: one ``ase.md.langevin.Langevin`` step with :class:`mlpot.plugins.ase.MLPotCalculator`, ms per step;
* **openmm**: one ``openmm.LangevinMiddleIntegrator`` step on the CPU platform with the system from
  :func:`mlpot.plugins.openmm.create_system` (TorchForce), ms per step, steps/s and ns/day.

Both MD engines run Langevin dynamics at 300 K, friction 1/ps, time step 0.5 fs. Every timing is the
median of single calls/steps measured with ``time.perf_counter`` after warm-up calls (TorchScript's
profiling executor optimises the graph over the first calls). Models are randomly initialised with a
small energy scale so the short MD stays sane; speed does not depend on the weights.

    python benchmarks/md_speed.py --quick                  # smoke test: fewer calls, no water-1536
    python benchmarks/md_speed.py                          # everything (long: run on a quiet machine)
    python benchmarks/md_speed.py --arch nequip --size nequip-matched --systems water-192 water-1536
    python benchmarks/md_speed.py --arch egnn --size nequip-matched --hp edge_chunk_size=4096   # EGNN in edge chunks

It prints markdown tables and writes ``benchmarks/results/md_speed.json`` (``md_speed_quick.json`` with
``--quick``), whose first section says whether the targets below were met.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from mlpot.cli import parse_hyperparameters
from mlpot.deploy import load_model, save_model
from mlpot.models import PRESETS, build_model, describe
from mlpot.neighbors import neighbor_pairs
from mlpot.simulate import ns_per_day
from mlpot.systems import UnknownSystemError, get_system, load_atoms, load_openmm

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SYSTEMS = ("alanine-dipeptide", "water-192", "water-1536")
QUICK_SYSTEMS = ("alanine-dipeptide", "water-192")
ENGINES = ("raw", "ase", "openmm")
SIZES = sorted({size for sizes in PRESETS.values() for size in sizes})

SPECIES = ("H", "C", "N", "O")
CUTOFF_A = 5.0
DTYPE = "float32"
ENERGY_SCALE_EV = 0.01  # keeps forces of an untrained model small, so the short MD stays sane
SEED = 0

TEMPERATURE_K = 300.0
FRICTION_PER_PS = 1.0
TIMESTEP_FS = 0.5
PERTURBATION_A = 0.005  # standard deviation of the noise added to the positions of each raw call
PERTURBED_COPIES = 16  # raw calls cycle through this many perturbed copies of the positions

QUIET_LOAD = 0.5  # a 1-minute load average at or above this at start means the machine is busy
LARGE_SYSTEM_ATOMS = 1000  # systems this big get fewer timed calls (they take seconds per call)

# a ratio at or below its limit meets the target
OPENMM_OVER_RAW_LIMIT = 1.10
SCALING_SYSTEMS = ("water-192", "water-1536")
SCALING_LIMIT = 8.0


@dataclass(frozen=True)
class Budget:
    """How many calls to make: untimed warm-up calls, then timed ones (fewer for large systems)."""

    warmup: int
    repeats: int

    def repeats_for(self, n_atoms: int) -> int:
        """Timed calls for a system of ``n_atoms`` atoms."""
        return self.repeats if n_atoms < LARGE_SYSTEM_ATOMS else max(3, self.repeats // 4)


@dataclass
class Timing:
    """Wall times: setup (loading, compiling, building the simulation), s; single calls, ms: the warm-up
    calls in order (the first ones include TorchScript's optimisation) and the timed ones."""

    setup_s: float
    warmup_ms: List[float]
    samples_ms: List[float]
    median_ms: float = field(init=False)
    min_ms: float = field(init=False)  # less sensitive than the median to other processes on a busy machine

    def __post_init__(self) -> None:
        self.median_ms = statistics.median(self.samples_ms)
        self.min_ms = min(self.samples_ms)


def time_calls(make_step: Callable[[], Callable[[], Any]], warmup: int, repeats: int) -> Timing:
    """Time ``step = make_step()``, then call ``step()`` ``warmup`` times and ``repeats`` times, timing each
    call with ``perf_counter``."""
    start = time.perf_counter()
    step = make_step()
    setup_s = time.perf_counter() - start

    def one_call_ms() -> float:
        start = time.perf_counter()
        step()
        return 1000.0 * (time.perf_counter() - start)

    warmup_ms = [one_call_ms() for _ in range(warmup)]
    return Timing(setup_s, warmup_ms, [one_call_ms() for _ in range(repeats)])


def raw_stepper(model_path: Path, system: str, threads: int) -> Callable[[], Any]:
    """One forward + backward (energy and forces) of the compiled model on perturbed positions."""
    deployed = load_model(model_path)
    atoms = load_atoms(system)
    generator = torch.Generator().manual_seed(SEED)
    positions_A = torch.tensor(atoms.positions, dtype=deployed.dtype)
    perturbed_A = [
        positions_A + PERTURBATION_A * torch.randn(positions_A.shape, generator=generator, dtype=deployed.dtype)
        for _ in range(PERTURBED_COPIES)
    ]
    numbers = torch.tensor(atoms.numbers, dtype=torch.long)
    cell_A = torch.tensor(np.asarray(atoms.cell), dtype=deployed.dtype)
    pbc = torch.tensor(atoms.pbc, dtype=torch.bool)
    copies = itertools.cycle(perturbed_A)
    return lambda: deployed.module.compute(next(copies), numbers, cell_A, pbc, True, False, False)


def ase_stepper(model_path: Path, system: str, threads: int) -> Callable[[], Any]:
    """One ASE Langevin step (one model call) with :class:`MLPotCalculator`."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    from mlpot.plugins.ase import MLPotCalculator

    atoms = load_atoms(system)
    atoms.calc = MLPotCalculator(model_path, device="cpu")
    rng = np.random.default_rng(SEED)
    thermalize_momenta(atoms, temperature_K=TEMPERATURE_K, rng=rng)
    Stationary(atoms)
    dynamics = Langevin(atoms, TIMESTEP_FS * units.fs, temperature_K=TEMPERATURE_K,
                        friction=FRICTION_PER_PS / (1000.0 * units.fs), fixcm=False, rng=rng)
    return dynamics.step


def openmm_stepper(model_path: Path, system: str, threads: int) -> Callable[[], Any]:
    """One OpenMM ``LangevinMiddleIntegrator`` step on the CPU platform (TorchForce, no Python in the step)."""
    import openmm
    from openmm import unit

    from mlpot.plugins.openmm import create_system

    topology, positions_nm = load_openmm(system)
    integrator = openmm.LangevinMiddleIntegrator(
        TEMPERATURE_K * unit.kelvin, FRICTION_PER_PS / unit.picosecond, TIMESTEP_FS * unit.femtosecond
    )
    integrator.setRandomNumberSeed(SEED)
    context = openmm.Context(create_system(model_path, topology), integrator,
                             openmm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)})
    context.setPositions(positions_nm)
    context.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, SEED)

    def step() -> None:
        context.getIntegrator().step(1)

    return step


STEPPERS: Dict[str, Callable[[Path, str, int], Callable[[], Any]]] = {
    "raw": raw_stepper, "ase": ase_stepper, "openmm": openmm_stepper,
}


def make_model(arch: str, size: str, directory: Path, hyperparameters: Dict[str, Any]) -> Dict[str, Any]:
    """Build and save a random-init model (the size's preset, then ``hyperparameters``); returns its path,
    parameter count and hyperparameters."""
    description = describe(arch, SPECIES, CUTOFF_A, dtype=DTYPE, size=size, hyperparameters=hyperparameters,
                           energy_scale=ENERGY_SCALE_EV)
    model = build_model(description, seed=SEED)
    path = directory / f"{arch}-{size}.pt"
    save_model(model, description, path, provenance={"created_by": "benchmarks/md_speed.py", "trained": False})
    return {
        "path": path,
        "parameters": sum(p.numel() for p in model.parameters()),
        "hyperparameters": description["hyperparameters"],
    }


def count_edges(system: str) -> int:
    """Directed neighbour pairs (i, j) closer than the cutoff in the system's stored structure."""
    atoms = load_atoms(system)
    edge_index, _ = neighbor_pairs(
        torch.tensor(atoms.positions, dtype=torch.float64),
        torch.tensor(np.asarray(atoms.cell), dtype=torch.float64),
        torch.tensor(atoms.pbc, dtype=torch.bool),
        CUTOFF_A,
    )
    return int(edge_index.shape[1])


def measure_case(model: Dict[str, Any], system: str, n_atoms: int, budget: Budget, threads: int) -> Dict[str, Any]:
    """All engines for one model on one system: per-engine timings plus steps/s, ns/day and OpenMM/raw."""
    repeats = budget.repeats_for(n_atoms)
    timings = {
        engine: asdict(time_calls(functools.partial(STEPPERS[engine], model["path"], system, threads),
                                  budget.warmup, repeats))
        for engine in ENGINES
    }
    for timing in timings.values():
        timing["steps_per_s"] = 1000.0 / timing["median_ms"]
    for engine in ("ase", "openmm"):
        timings[engine]["ns_per_day"] = ns_per_day(1, TIMESTEP_FS, timings[engine]["median_ms"] / 1000.0)
    return {
        **timings,
        "openmm_over_raw": timings["openmm"]["median_ms"] / timings["raw"]["median_ms"],
        "ase_over_raw": timings["ase"]["median_ms"] / timings["raw"]["median_ms"],
    }


def scaling_ratios(cases: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """time(water-1536) / time(water-192) for each model and engine that ran on both boxes."""
    small, large = SCALING_SYSTEMS
    by_key = {(c["arch"], c["size"], c["system"]): c for c in cases}
    ratios = []
    for (arch, size, system), case in by_key.items():
        if system != small or (arch, size, large) not in by_key:
            continue
        big = by_key[(arch, size, large)]
        ratios.append({
            "arch": arch, "size": size, "atoms_ratio": big["n_atoms"] / case["n_atoms"],
            "edges_ratio": big["n_edges"] / case["n_edges"],
            **{engine: big[engine]["median_ms"] / case[engine]["median_ms"] for engine in ENGINES},
        })
    return ratios


def check_target(description: str, limit: float, values: Dict[str, float]) -> Dict[str, Any]:
    """A target: met when every measured ratio is at most ``limit``; ``met`` is None when nothing was measured."""
    worst = max(values, key=values.get) if values else None
    return {
        "target": description,
        "limit": limit,
        "met": None if worst is None else values[worst] <= limit,
        "worst": None if worst is None else {"case": worst, "ratio": values[worst]},
        "ratios": values,
    }


def targets(cases: Sequence[Dict[str, Any]], scaling: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Whether OpenMM stays within 10% of the raw call, and whether cost grows at most linearly with size."""
    overhead = {f"{c['arch']}/{c['size']}/{c['system']}": c["openmm_over_raw"] for c in cases}
    growth = {f"{s['arch']}/{s['size']}/{engine}": s[engine] for s in scaling for engine in ENGINES}
    return {
        "openmm_within_10pct_of_raw": check_target(
            "OpenMM ms/step divided by raw compute ms/call, every model and system", OPENMM_OVER_RAW_LIMIT, overhead
        ),
        "linear_scaling": check_target(
            f"time({SCALING_SYSTEMS[1]}) divided by time({SCALING_SYSTEMS[0]}), every model and engine "
            "(8 x the atoms, so 8 is linear)", SCALING_LIMIT, growth
        ),
    }


def machine_info(threads: int) -> Dict[str, Any]:
    """CPU model, core count, load, torch threads, package versions and the date."""

    def first_line_with(path: str, prefix: str) -> Optional[str]:
        try:
            with open(path) as handle:
                return next((line.split(":", 1)[1].strip() for line in handle if line.startswith(prefix)), None)
        except OSError:
            return None

    versions = {}
    for package in ("mlpot", "torch", "openmm", "openmmtorch", "ase", "e3nn", "vesin-torch", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu_model": first_line_with("/proc/cpuinfo", "model name") or platform.processor(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "openmm_cpu_threads": threads,
        "python": platform.python_version(),
        "versions": versions,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def format_tables(cases: Sequence[Dict[str, Any]], scaling: Sequence[Dict[str, Any]], threads: int) -> str:
    """Markdown tables: one row per model and system, then the size-scaling ratios."""
    lines = [
        f"MD speed, CPU, {threads} torch threads, {DTYPE}, cutoff {CUTOFF_A} Å, Langevin {TIMESTEP_FS} fs; "
        "medians, ms per call (raw) or per MD step",
        "",
        "| arch | size | params | system | atoms | edges | raw ms | ASE ms/step | OpenMM ms/step | OpenMM steps/s "
        "| OpenMM ns/day | OpenMM/raw |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        lines.append(
            f"| {c['arch']} | {c['size']} | {c['parameters']:,} | {c['system']} | {c['n_atoms']} | {c['n_edges']:,} "
            f"| {c['raw']['median_ms']:.1f} | {c['ase']['median_ms']:.1f} | {c['openmm']['median_ms']:.1f} "
            f"| {c['openmm']['steps_per_s']:.2f} | {c['openmm']['ns_per_day']:.3f} | {c['openmm_over_raw']:.2f} |"
        )
    if scaling:
        small, large = SCALING_SYSTEMS
        lines += ["", f"time({large}) / time({small}) (atoms ratio 8; 8 = linear)", "",
                  "| arch | size | edges ratio | raw | ASE | OpenMM |", "|---|---|---:|---:|---:|---:|"]
        for s in scaling:
            lines.append(f"| {s['arch']} | {s['size']} | {s['edges_ratio']:.2f} | {s['raw']:.2f} | {s['ase']:.2f} "
                         f"| {s['openmm']:.2f} |")
    return "\n".join(lines)


def format_targets(summary: Dict[str, Any]) -> str:
    """One line per target: met / not met / not measured, with the worst case."""
    lines = []
    for name, target in summary.items():
        if target["met"] is None:
            verdict = "not measured"
        else:
            worst = target["worst"]
            verdict = f"{'met' if target['met'] else 'NOT met'} (worst {worst['case']}: {worst['ratio']:.2f})"
        lines.append(f"target {name} (ratio <= {target['limit']}): {verdict}")
    return "\n".join(lines)


def run(archs: Sequence[str], sizes: Sequence[str], systems: Sequence[str], budget: Budget,
        threads: int, hyperparameters: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Measure every model on every system; progress goes to stderr."""
    atoms_in = {system: len(load_atoms(system)) for system in systems}
    edges_in = {system: count_edges(system) for system in systems}
    cases = []
    with tempfile.TemporaryDirectory(prefix="mlpot-md-speed-") as directory:
        for arch, size in itertools.product(archs, sizes):
            model = make_model(arch, size, Path(directory), hyperparameters)
            for system in systems:
                print(f"measuring {arch}/{size} on {system} ...", file=sys.stderr, flush=True)
                cases.append({
                    "arch": arch, "size": size, "parameters": model["parameters"],
                    "hyperparameters": model["hyperparameters"], "system": system,
                    "periodic": get_system(system).periodic, "n_atoms": atoms_in[system], "n_edges": edges_in[system],
                    **measure_case(model, system, atoms_in[system], budget, threads),
                })
    return cases


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 5 warm-up and 5 timed calls, size default, "
                        f"systems {', '.join(QUICK_SYSTEMS)}")
    parser.add_argument("--arch", nargs="+", choices=sorted(PRESETS), default=sorted(PRESETS))
    parser.add_argument("--size", nargs="+", choices=SIZES, default=None,
                        help=f"model sizes (default: {' '.join(SIZES)}; with --quick: default)")
    parser.add_argument("--systems", nargs="+", default=None,
                        help=f"system names (default: {' '.join(SYSTEMS)}; with --quick: {' '.join(QUICK_SYSTEMS)})")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed calls per engine (default 20, --quick 5); systems of {LARGE_SYSTEM_ATOMS}+ atoms "
                             "get a quarter (at least 3)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed warm-up calls per engine (default 10, --quick 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads and OpenMM CPU threads")
    parser.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                        help="override one hyperparameter of every model, e.g. --hp edge_chunk_size=4096 (repeatable)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default benchmarks/results/md_speed.json, "
                        "or md_speed_quick.json with --quick)")
    args = parser.parse_args(argv)
    if args.size is None:
        args.size = ["default"] if args.quick else SIZES
    if args.systems is None:
        args.systems = list(QUICK_SYSTEMS if args.quick else SYSTEMS)
    if args.repeats is None:
        args.repeats = 5 if args.quick else 20
    if args.warmup is None:
        args.warmup = 5 if args.quick else 10
    if args.out is None:
        args.out = RESULTS_DIR / ("md_speed_quick.json" if args.quick else "md_speed.json")
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1 and --warmup at least 0")
    for system in args.systems:
        try:
            get_system(system)
        except (UnknownSystemError, FileNotFoundError) as error:
            parser.error(str(error))
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = Budget(warmup=args.warmup, repeats=args.repeats)
    machine = machine_info(args.threads)
    if machine["load_average_at_start"][0] >= QUIET_LOAD:
        print(f"warning: load average {machine['load_average_at_start'][0]:.1f} at start: something else is running, "
              "so the timings will be slow and noisy", file=sys.stderr)
    cases = run(args.arch, args.size, args.systems, budget, args.threads, parse_hyperparameters(args.hp))
    machine["load_average_at_end"] = os.getloadavg()
    scaling = scaling_ratios(cases)
    summary = targets(cases, scaling)
    print(format_tables(cases, scaling, args.threads))
    print()
    print(format_targets(summary))
    settings = {
        "quick": args.quick, "warmup_calls": budget.warmup, "timed_calls": budget.repeats,
        "timed_calls_large_systems": budget.repeats_for(LARGE_SYSTEM_ATOMS), "large_system_atoms": LARGE_SYSTEM_ATOMS,
        "dtype": DTYPE, "cutoff_A": CUTOFF_A, "species": list(SPECIES), "energy_scale_eV": ENERGY_SCALE_EV,
        "seed": SEED, "temperature_K": TEMPERATURE_K, "friction_per_ps": FRICTION_PER_PS, "timestep_fs": TIMESTEP_FS,
        "raw_position_noise_A": PERTURBATION_A, "openmm_platform": "CPU",
        "statistic": "median of single calls (time.perf_counter); steps_per_s = 1000 / median_ms",
    }
    report = {"targets": summary, "machine": machine, "settings": settings, "results": cases, "scaling": scaling}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

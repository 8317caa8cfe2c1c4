"""TorchScript model file vs compiled (.pt2, AOTInductor) file: ASE energy + forces per call, 1 thread.

    python benchmarks/compiled_speed.py                               # nequip-matched, alanine dipeptide, water-192
    python benchmarks/compiled_speed.py --arch egnn --rounds 3 --block-s 0.5   # a quick check
    python benchmarks/compiled_speed.py --openmm alanine-dipeptide    # also OpenMM: TorchForce vs PythonForce

Builds a random-initialised model (seed 0, float32, cutoff 5 Å, H C N O) of ``--arch`` and ``--size``, writes it
as a TorchScript model file, compiles it with ``mlpot compile`` (timed: export, AOTInductor and the check against
the model file; torch's inductor cache, on by default, makes a repeated compile of the same model faster, so the
first run's time is the one to quote) and notes both files' sizes. Then, per system, both ASE calculators are
warmed up and timed in interleaved blocks (the first route rotates every round; a block is single calls on
slightly moved positions, timed one by one, until ``--block-s`` seconds have passed): a route's number is the
median over all its calls, and the speed-up is the median over rounds of the two routes' per-round medians, so a
burst of load from other processes hits both sides of a ratio alike.

With ``--openmm SYSTEM`` it also times one LangevinMiddleIntegrator step (300 K, 1/ps, 1 fs, CPU platform, 1
thread) of SYSTEM two ways: openmm-torch's ``TorchForce`` running the TorchScript file (what ``mlpot md`` and
openmm-ml use), and OpenMM 8.6's ``PythonForce`` calling the compiled file through
:meth:`mlpot.compiled.CompiledModel.compute` (positions nm -> Å, energy eV -> kJ/mol, forces eV/Å -> kJ/mol/nm
through :mod:`mlpot.units`).

Writes ``benchmarks/results/compiled_speed.json`` (``--out`` for another file) with the machine's load average
before and after: numbers taken on a busy machine say that the route works, not how fast it is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "compiled_speed.json"
SYSTEMS = ("alanine-dipeptide", "water-192")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=["nequip", "egnn"], default="nequip", help="architecture")
    parser.add_argument("--size", default="nequip-matched", help="hyperparameter preset (mlpot new-model --size)")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), help="named systems (mlpot systems)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per system")
    parser.add_argument("--block-s", type=float, default=2.0, help="seconds of calls per route and round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per route before timing")
    parser.add_argument("--openmm", nargs="*", default=[], metavar="SYSTEM",
                        help="also time OpenMM steps on these systems: TorchForce vs PythonForce")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write")
    return parser.parse_args(argv)


def time_block(calculator, atoms, seconds: float, rng) -> List[float]:
    """Single energy + forces calls on slightly moved positions until ``seconds`` have passed; ms per call."""
    samples: List[float] = []
    start = time.perf_counter()
    while not samples or time.perf_counter() - start < seconds:
        atoms.positions += rng.normal(scale=1e-4, size=atoms.positions.shape)
        began = time.perf_counter()
        calculator.calculate(atoms, ["energy", "forces"])
        samples.append((time.perf_counter() - began) * 1e3)
    return samples


def openmm_simulations(source: Path, compiled: Path, system: str) -> Dict[str, Any]:
    """route -> an ``openmm.Context`` of ``system`` on the CPU platform, 1 thread: "torchforce" (the TorchScript
    file in openmm-torch) and "pythonforce" (the compiled file called from OpenMM 8.6's PythonForce)."""
    import openmm
    import torch
    from openmm import unit

    from mlpot.compiled import load_compiled
    from mlpot.plugins.openmm import create_system
    from mlpot.systems import load_openmm
    from mlpot.units import ANGSTROM_PER_NM, KJ_PER_MOL_PER_EV

    topology, positions = load_openmm(system)
    model = load_compiled(compiled)
    numbers = torch.tensor([atom.element.atomic_number for atom in topology.atoms()])
    periodic = topology.getPeriodicBoxVectors() is not None
    pbc = torch.tensor([periodic] * 3)

    def computation(state):
        positions_A = torch.from_numpy(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)) * ANGSTROM_PER_NM
        cell_A = torch.zeros(3, 3, dtype=torch.float64)
        if periodic:
            box_nm = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
            cell_A = torch.from_numpy(box_nm) * ANGSTROM_PER_NM
        results = model.compute(positions_A, numbers, cell_A, pbc)
        forces_kj_per_mol_nm = results["forces"].double().numpy() * (KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM)
        return float(results["energy"]) * KJ_PER_MOL_PER_EV, forces_kj_per_mol_nm

    torch_system = create_system(source, topology)
    python_system = openmm.System()  # the same masses, box and centre-of-mass remover, the compiled file for the model
    for index in range(torch_system.getNumParticles()):
        python_system.addParticle(torch_system.getParticleMass(index))
    if periodic:
        python_system.setDefaultPeriodicBoxVectors(*torch_system.getDefaultPeriodicBoxVectors())
    python_system.addForce(openmm.CMMotionRemover())
    force = openmm.PythonForce(computation)
    force.setUsesPeriodicBoundaryConditions(periodic)
    python_system.addForce(force)
    contexts = {}
    for route, openmm_system in (("torchforce", torch_system), ("pythonforce", python_system)):
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
        integrator.setRandomNumberSeed(1)
        platform = openmm.Platform.getPlatformByName("CPU")
        context = openmm.Context(openmm_system, integrator, platform, {"Threads": "1"})
        context.setPositions(positions)
        contexts[route] = context
    return contexts


def time_steps(context, seconds: float) -> List[float]:
    """Single integrator steps until ``seconds`` have passed; ms per step."""
    samples: List[float] = []
    start = time.perf_counter()
    while not samples or time.perf_counter() - start < seconds:
        began = time.perf_counter()
        context.getIntegrator().step(1)
        samples.append((time.perf_counter() - began) * 1e3)
    return samples


def measure_system(system: str, calculators: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    """ASE calls (``calculators``: route -> calculator, "torchscript" and "compiled") on ``system``."""
    import numpy as np

    from mlpot.systems import load_atoms

    atoms = load_atoms(system)
    rng = np.random.default_rng(0)
    for calculator in calculators.values():
        for _ in range(args.warmup):
            calculator.calculate(atoms, ["energy", "forces"])
    return interleaved(system, calculators, lambda calculator: time_block(calculator, atoms, args.block_s, rng),
                       args, len(atoms), ("torchscript", "compiled"))


def interleaved(system: str, targets: Dict[str, Any], block, args: argparse.Namespace, n_atoms: int,
                pair: Sequence[str]) -> Dict[str, Any]:
    """``block(target)`` for every route in turn, ``args.rounds`` times (the first route rotating); per-route
    medians and the median over rounds of ``pair[0]``'s median over ``pair[1]``'s."""
    routes = list(targets)
    rounds: Dict[str, List[List[float]]] = {route: [] for route in routes}
    for r in range(args.rounds):
        for route in routes[r % len(routes):] + routes[:r % len(routes)]:
            rounds[route].append(block(targets[route]))
        print(f"  {system} round {r + 1}/{args.rounds}: " + ", ".join(
            f"{route} {statistics.median(rounds[route][-1]):.2f} ms" for route in routes), file=sys.stderr, flush=True)
    record: Dict[str, Any] = {"n_atoms": n_atoms}
    for route in routes:
        samples = [s for timed in rounds[route] for s in timed]
        record[route] = {"median_ms": statistics.median(samples), "min_ms": min(samples), "calls": len(samples)}
    ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(rounds[pair[0]], rounds[pair[1]])]
    record[f"speedup_{pair[1]}_vs_{pair[0]}"] = statistics.median(ratios)
    return record


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    os.environ["MLPOT_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from mlpot.cli.models import new_model
    from mlpot.compiled import compile_model_file
    from mlpot.plugins.ase import MLPotCalculator

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        source, compiled = Path(folder) / "model.pt", Path(folder) / "model.pt2"
        new_model(args.arch, ["H", "C", "N", "O"], 5.0, source, size=args.size, seed=0)
        started = time.perf_counter()
        metadata = compile_model_file(source, compiled)
        compile_s = time.perf_counter() - started
        print(f"compiled {args.arch} {args.size} in {compile_s:.1f} s: {compiled.stat().st_size / 1e6:.2f} MB "
              f"(TorchScript file {source.stat().st_size / 1e6:.2f} MB)", file=sys.stderr, flush=True)
        calculators = {"torchscript": MLPotCalculator(source), "compiled": MLPotCalculator(compiled)}
        model = {"arch": args.arch, "size": args.size, "dtype": "float32", "cutoff_A": 5.0,
                 "hyperparameters": metadata["hyperparameters"],
                 "compile_s": round(compile_s, 1), "compiled_file_bytes": compiled.stat().st_size,
                 "torchscript_file_bytes": source.stat().st_size}
        systems = {system: measure_system(system, calculators, args) for system in args.systems}
        openmm_steps = {}
        for system in args.openmm:
            contexts = openmm_simulations(source, compiled, system)
            for context in contexts.values():
                context.getIntegrator().step(args.warmup)
            openmm_steps[system] = interleaved(system, contexts, lambda context: time_steps(context, args.block_s),
                                               args, contexts["torchforce"].getSystem().getNumParticles(),
                                               ("torchforce", "pythonforce"))
    with open("/proc/cpuinfo") as handle:
        cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    report = {
        "what": "ASE energy + forces per call, 1 thread: TorchScript model file vs mlpot compile (.pt2)",
        "machine": {"cpu_model": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "load_average_before": load_before,
                    "load_average_after": os.getloadavg(),
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
        "settings": {"rounds": args.rounds, "block_s": args.block_s, "warmup": args.warmup},
        "model": model,
        "systems": systems,
        "openmm_step": openmm_steps,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'system':<20} {'atoms':>6} {'TorchScript ms':>15} {'compiled ms':>12} {'speed-up':>9}")
    for system, record in systems.items():
        print(f"{system:<20} {record['n_atoms']:>6} {record['torchscript']['median_ms']:>15.2f} "
              f"{record['compiled']['median_ms']:>12.2f} {record['speedup_compiled_vs_torchscript']:>8.2f}x")
    for system, record in openmm_steps.items():
        print(f"OpenMM step, {system}: TorchForce {record['torchforce']['median_ms']:.2f} ms, PythonForce + compiled "
              f"{record['pythonforce']['median_ms']:.2f} ms ({record['speedup_pythonforce_vs_torchforce']:.2f}x)")
    print(f"compile {model['compile_s']} s, {model['compiled_file_bytes'] / 1e6:.2f} MB; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

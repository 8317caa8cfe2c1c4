"""One package's side of the peer benchmark: a long-lived process that times what the driver asks for.

    <venv>/bin/python benchmarks/peers/worker.py mace        # started by run.py, never by hand

It runs in the package's own virtualenv (``.venvs/<package>``, or our ``.venv`` for mlpot), so it must
not import mlpot unless the package *is* mlpot. The package-specific part lives in ``peer_<package>.py``
beside this file: a class with ``build(size)``, ``raw_step(atoms)``, ``calculator()``,
``openmm_system(topology)`` and ``train_step(xyz)`` (whose ``calculator()`` gives the trained model), and for
the ``ase-compiled`` engine ``compile_key()``, ``compile(path, example_xyz)`` and ``compiled_calculator(path)``
with the file suffix in ``COMPILED_SUFFIX`` (``None``, and ``compiled_calculator()`` alone, for a calculator that
compiles itself at its first call); everything timed the same way for every package (the perturbed positions, the
ASE calls, the OpenMM integrator and context) and the cache of compiled files is here.

Protocol: one JSON object per line on stdin, one JSON answer per line on the process's original stdout
(anything the libraries print goes to stderr):

    {"cmd": "build", "size": "small", "threads": 2, "workdir": ..., "compiled_dir": ..., "example_xyz": ...}
                                              -> model hyperparameters, parameters
    {"cmd": "prepare", "engine": "openmm", "system": "water-192", "xyz": ..., "pdb": ..., "warmup": 5}
                                              -> setup_s, warmup_ms; for ase-compiled also "compiled" (file,
                                                 bytes, compile_s, cached)
    {"cmd": "time", "engine": "openmm", "system": "water-192", "seconds": 3, "max_calls": 50}
                                              -> samples_ms (at least one call), cpu_per_wall
    {"cmd": "evaluate", "engine": "fit", "system": ..., "xyz": test frames}  -> energy and force MAE (meV)
    {"cmd": "release", "engine": ..., "system": ...}
    {"cmd": "quit"}

Units at this boundary: positions in Å (extxyz), OpenMM in nm/kJ/mol, times in ms.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import itertools
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent

SEED = 0
TEMPERATURE_K = 300.0
FRICTION_PER_PS = 1.0
TIMESTEP_FS = 1.0
PERTURBATION_A = 0.005  # raw and ASE calls see the positions plus this much Gaussian noise, cycled
PERTURBED_COPIES = 16
TRAIN_BATCH = 5  # frames per training step (mlpot's default batch size)
TRAIN_FRAMES = 200  # training steps cycle through the first this many frames of the data set

VERSIONS_OF = ("torch", "e3nn", "ase", "openmm", "openmmtorch", "openmmml", "numpy", "mace-torch", "nequip",
               "mlpot", "vesin-torch", "matscipy")


def versions() -> Dict[str, str]:
    found = {}
    for name in VERSIONS_OF:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def perturbed_copies(positions_A: np.ndarray) -> list:
    """The same ``PERTURBED_COPIES`` noisy copies of the positions in every package (seeded)."""
    rng = np.random.default_rng(SEED)
    return [positions_A + PERTURBATION_A * rng.standard_normal(positions_A.shape) for _ in range(PERTURBED_COPIES)]


def energy_statistics(frames, atomic_numbers) -> Dict[str, Any]:
    """Per-element reference energies (least squares of frame energies on element counts, eV; 0 for an element
    the frames lack) and the RMS force component (eV/Å): how every peer's model is initialised before training."""
    counts = np.array([[np.count_nonzero(atoms.numbers == z) for z in atomic_numbers] for atoms in frames], float)
    energies = np.array([atoms.get_potential_energy() for atoms in frames])
    e0_eV = np.linalg.lstsq(counts, energies, rcond=None)[0]
    forces = np.concatenate([atoms.get_forces().ravel() for atoms in frames])
    return {"e0_eV": [float(e) for e in e0_eV], "forces_rms_eV_per_A": float(np.sqrt(np.mean(forces ** 2)))}


def errors_on(calculator, xyz: str) -> Dict[str, Any]:
    """Energy MAE per atom (meV/atom) and force-component MAE (meV/Å) of an ASE calculator on the frames of ``xyz``."""
    import ase.io

    energy_errors, force_errors = [], []
    for atoms in ase.io.read(xyz, index=":"):
        energy_eV, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = calculator
        energy_errors.append(abs(atoms.get_potential_energy() - energy_eV) / len(atoms))
        force_errors.append(np.abs(atoms.get_forces() - forces).ravel())
    return {"frames": len(energy_errors), "energy_mae_meV_per_atom": 1000.0 * float(np.mean(energy_errors)),
            "forces_mae_meV_per_A": 1000.0 * float(np.mean(np.concatenate(force_errors)))}


def ase_stepper(atoms, calculator) -> Callable[[], Any]:
    """One energy + forces evaluation through the package's ASE calculator on new positions."""
    atoms = atoms.copy()
    atoms.calc = calculator
    copies = itertools.cycle(perturbed_copies(atoms.positions))

    def step() -> None:
        atoms.positions = next(copies)
        atoms.get_potential_energy()
        atoms.get_forces()

    return step


def openmm_stepper(system, pdb_path: str, threads: int) -> Callable[[], Any]:
    """One ``LangevinMiddleIntegrator`` step on OpenMM's CPU platform."""
    import openmm
    from openmm import app, unit

    pdb = app.PDBFile(pdb_path)
    integrator = openmm.LangevinMiddleIntegrator(
        TEMPERATURE_K * unit.kelvin, FRICTION_PER_PS / unit.picosecond, TIMESTEP_FS * unit.femtosecond
    )
    integrator.setRandomNumberSeed(SEED)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)})
    if pdb.topology.getPeriodicBoxVectors() is not None:
        context.setPeriodicBoxVectors(*pdb.topology.getPeriodicBoxVectors())
    context.setPositions(pdb.positions)
    context.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, SEED)

    def step() -> None:
        integrator.step(1)

    step.context = context  # keep it alive with the closure
    return step


def compiled_file(peer, package: str, folder: Path, example_xyz: str) -> Dict[str, Any]:
    """The peer's compiled model file, from ``folder`` when one with the same key is there, else compiled now.

    The key is the peer's ``compile_key()`` (what fixes the model and the compilation: hyperparameters, seed,
    package versions) plus torch's version; the file is ``<package>-<size>-<hash of the key><suffix>``, with a
    ``.json`` beside it that keeps the key, the compile seconds of the run that made it and the date. Compiling
    writes under a temporary name first, so an interrupted compile leaves no file that a rerun would trust.
    Returns ``path``, ``file_bytes``, ``compile_s`` (of the run that compiled it), ``cached`` and ``key``."""
    key = {"package": package, "torch": versions().get("torch"), **peer.compile_key()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = folder / f"{package}-{peer.size}-{digest}{peer.COMPILED_SUFFIX}"
    record_path = path.with_name(path.name + ".json")
    cached = path.exists() and record_path.exists()
    if cached:
        record = json.loads(record_path.read_text())
    else:
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name[:-len(peer.COMPILED_SUFFIX)]}.partial{peer.COMPILED_SUFFIX}")
        started = time.perf_counter()
        peer.compile(partial, example_xyz)
        compile_s = time.perf_counter() - started
        os.replace(partial, path)
        record = {"key": key, "compile_s": compile_s, "example_xyz": Path(example_xyz).name,
                  "compiled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        record_path.write_text(json.dumps(record, indent=1) + "\n")
    return {"path": str(path), "file_bytes": path.stat().st_size, "compile_s": record["compile_s"], "cached": cached,
            "compiled_at": record["compiled_at"], "key": key}


def compiled_in_process(atoms, calculator) -> Tuple[Callable[[], Any], Dict[str, Any]]:
    """The ASE stepper of a calculator that compiles itself at its first call (``torch.compile``), after that first
    call; ``compile_s`` is its duration. ``cached``: whether Inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``,
    set by the driver) held anything before, which spares code generation but not tracing."""
    cache = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]) if os.environ.get("TORCHINDUCTOR_CACHE_DIR") else None
    cached = bool(cache and cache.is_dir() and any(cache.iterdir()))
    step = ase_stepper(atoms, calculator)
    started = time.perf_counter()
    step()
    return step, {"path": None, "file_bytes": None, "compile_s": time.perf_counter() - started, "cached": cached,
                  "inductor_cache": str(cache) if cache else None,
                  "note": "torch.compile inside the process at the first call; no file"}


class Worker:
    """Holds the package's model and the prepared steppers, keyed by (engine, system)."""

    def __init__(self, package: str):
        self.package = package
        self.module = importlib.import_module(f"peer_{package}")
        self.peer = None
        self.threads = 1
        self.steppers: Dict[Tuple[str, str], Callable[[], Any]] = {}
        self.compiled_dir: Optional[Path] = None
        self.example_xyz = ""
        self.compiled: Optional[Dict[str, Any]] = None  # the current model's compiled file, once asked for

    def build(self, size: str, threads: int, workdir: str, compiled_dir: Optional[str] = None,
              example_xyz: str = "") -> Dict[str, Any]:
        import torch

        self.threads = threads
        self.compiled_dir = Path(compiled_dir) if compiled_dir else Path(workdir) / "compiled"
        self.example_xyz = example_xyz
        self.compiled = None
        torch.set_num_threads(threads)
        self.steppers.clear()
        started = time.perf_counter()
        torch.manual_seed(SEED)
        self.peer = self.module.Peer(size=size, workdir=Path(workdir), threads=threads)
        return {"setup_s": time.perf_counter() - started, "torch_threads": torch.get_num_threads(),
                "versions": versions(), **self.peer.describe()}

    def prepare(self, engine: str, system: str, xyz: str, pdb: str, warmup: int) -> Dict[str, Any]:
        import ase.io

        started = time.perf_counter()
        atoms = ase.io.read(xyz, index=0)
        if engine in ("train", "fit"):  # xyz holds the training frames
            step = self.peer.train_step(xyz)
        elif engine == "raw":
            step = self.peer.raw_step(atoms)
        elif engine == "ase":
            step = ase_stepper(atoms, self.peer.calculator())
        elif engine == "ase-compiled":
            if self.peer.COMPILED_SUFFIX is None:  # compiled in this process by its first call (MACE)
                step, self.compiled = compiled_in_process(atoms, self.peer.compiled_calculator())
            else:
                if self.compiled is None:
                    self.compiled = compiled_file(self.peer, self.package, self.compiled_dir, self.example_xyz)
                step = ase_stepper(atoms, self.peer.compiled_calculator(Path(self.compiled["path"])))
        elif engine == "openmm":
            from openmm import app

            step = openmm_stepper(self.peer.openmm_system(app.PDBFile(pdb).topology), pdb, self.threads)
        else:
            raise ValueError(f"unknown engine {engine!r}")
        setup_s = time.perf_counter() - started
        self.steppers[(engine, system)] = step
        answer = {"setup_s": setup_s, "warmup_ms": self.time_calls(step, warmup)["samples_ms"]}
        if engine == "ase-compiled":
            answer["compiled"] = self.compiled
        return answer

    @staticmethod
    def time_calls(step: Callable[[], Any], calls: int, seconds: float = 0.0, max_calls: int = 0) -> Dict[str, Any]:
        """``calls`` single calls, then more until ``seconds`` have passed (at most ``max_calls`` in all)."""
        samples = []
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        while len(samples) < calls or (time.perf_counter() - wall_start < seconds and len(samples) < max_calls):
            started = time.perf_counter()
            step()
            samples.append(1000.0 * (time.perf_counter() - started))
        wall = time.perf_counter() - wall_start
        # CPU seconds this process got per wall second: about the thread count on a quiet machine
        return {"samples_ms": samples, "cpu_per_wall": (time.process_time() - cpu_start) / wall if wall else None}

    def handle(self, request: Dict[str, Any]) -> Dict[str, Any]:
        command = request["cmd"]
        if command == "build":
            return self.build(request["size"], request["threads"], request["workdir"], request.get("compiled_dir"),
                              request.get("example_xyz", ""))
        if command == "prepare":
            return self.prepare(request["engine"], request["system"], request["xyz"], request["pdb"],
                                request.get("warmup", 0))
        if command == "time":
            return self.time_calls(self.steppers[(request["engine"], request["system"])], request.get("calls", 1),
                                   request.get("seconds", 0.0), request.get("max_calls", 0))
        if command == "evaluate":  # the trained model (EMA weights) through the package's ASE calculator
            step = self.steppers[(request["engine"], request["system"])]
            return errors_on(step.calculator(), request["xyz"])
        if command == "release":
            self.steppers.pop((request["engine"], request["system"]), None)
            return {}
        raise ValueError(f"unknown command {command!r}")


def main() -> int:
    package = sys.argv[1]
    # answers go to the original stdout; whatever the libraries print (also from C++) goes to stderr
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.path.insert(0, str(HERE))
    worker = Worker(package)
    answers.write(json.dumps({"ok": True, "ready": package}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] == "quit":
            break
        try:
            answer = {"ok": True, **worker.handle(request)}
        except Exception as error:  # reported to the driver, which decides whether to go on
            traceback.print_exc()
            answer = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

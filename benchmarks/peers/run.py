"""mlpot side by side with MACE and NequIP: interleaved timings on the same machine and the same inputs.

    bash benchmarks/peers/setup_envs.sh                       # once: the peers' own virtualenvs (~10 min each)
    python benchmarks/peers/run.py                            # MD speed, small models, 2 then 1 threads
    python benchmarks/peers/run.py --quick                    # alanine dipeptide and water-192, 2 threads, 3 rounds
    python benchmarks/peers/run.py --engines ase ase-compiled # ASE: eager/TorchScript against compiled files
    python benchmarks/peers/run.py --sizes small default --train
    python benchmarks/peers/run.py --engines --accuracy 20    # accuracy only: 20 min of training each, default size

Every package runs in its own long-lived worker process (``worker.py``) under its own virtualenv
(mlpot under this one, the peers under ``benchmarks/peers/.venvs/<package>``). For each thread count,
model size, system and engine, every worker first prepares and warms up, then the driver asks the
workers in turn, round-robin (the first one rotates every round), to time a block of calls; only one
worker computes at a time. A block is single calls, timed one by one, until ``--block-s`` seconds have
passed (at least one call). A package's number is
the median over all its timed calls; the headline ratio ours/theirs (steps/s, so > 1 means mlpot is
faster) is the median over rounds of the ratio of the two packages' medians *in the same round*, so a
burst of load from other processes hits both sides of a ratio alike.

Engines (``--engines``): ``raw`` (the model's forward + backward on prepared inputs), ``ase`` (one
energy + forces call through the package's ASE calculator on new positions), ``ase-compiled`` (the same call
through the package's compiled deployment, where it has one: NequIP's ``nequip-compile --mode aotinductor
--target ase`` file in ``NequIPCalculator.from_compiled_model``, mlpot's ``mlpot compile`` ``.pt2`` file in our
calculator, and MACE's ``MACECalculator(compile_mode="default")``, which runs ``torch.compile`` at its first
call: mace-torch has no compiled file, see ``peer_mace.py``), ``openmm`` (one
LangevinMiddleIntegrator step, 300 K, 1/ps, 1 fs, CPU platform; mlpot through openmm-ml's
``MLPotential('mlpot')``, which is openmm-torch's TorchForce, the peers through ``MLPotential('mace')`` and
``MLPotential('nequip')``), and with ``--train`` ``train`` (one training step, batch 5, on the ethanol
DFT set: forward, force loss, double backward, Adam). Models are random-initialised (seed 0), float32,
cutoff 5 Å, elements H C N O; their hyperparameters and parameter counts are in the output.

Compiled files are built from the same random-init models, traced on the first frame of the ethanol DFT set where
the compiler takes an example, and kept in ``--compiled-dir`` (default ``benchmarks/peers/.venvs/compiled``, beside
the venvs whose torch they are tied to), named by a hash of what fixes them (package and torch versions, model
hyperparameters, seed, options), so a rerun loads them instead of compiling again; the output records each file's
size, the seconds its compile took (in the run that made it) and whether it came from the cache. MACE compiles in
its worker at the first call on each system (no file); Inductor's cache for every worker lives in the same folder
(``inductor-<package>``), so MACE's reruns skip code generation. The ASE routes of
one system (``ase``, ``ase-compiled``) are prepared together and timed in the same interleaved rounds, so every
package's *fastest* ASE route can be paired with ours round by round: the table "fastest ASE route" and the JSON's
``fastest`` give mlpot's fastest route ÷ each peer's fastest route per system, next to the per-route ratios.

``--accuracy MINUTES`` trains every package's ``--accuracy-size`` model (default ``default``; ``mlpot=small`` and
the like set one package's size, e.g. ``--accuracy-size default mlpot=small``) from scratch on the
same split of the ethanol set (mlpot's default split: 5 % validation, 10 % test, seed 0) for the same number of
seconds of training steps, in interleaved 30 s blocks, and reports energy and force MAE on the test frames through
each package's ASE calculator with the EMA weights.

Writes ``benchmarks/results/peers.json`` and ``peers.md`` and ``peers.png`` (``--out`` for another stem),
and prints the markdown. Worker logs go to a temporary folder named in the output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
VENVS = Path(os.environ.get("MLPOT_PEER_VENVS", HERE / ".venvs"))

PACKAGES = ("mlpot", "mace", "nequip")
OURS = "mlpot"
LABELS = {"mlpot": "mlpot", "mace": "MACE", "nequip": "NequIP"}
SYSTEMS = ("alanine-dipeptide", "water-192", "water-1536")
SIZES = ("small", "default")
QUICK_SYSTEMS = ("alanine-dipeptide", "water-192")
ENGINES = ("raw", "ase", "ase-compiled", "openmm")
ASE_ROUTES = ("ase", "ase-compiled")  # timed together per system; a package's fastest of them is its best ASE route
TRAIN_SYSTEM = "ethanol-dft"
TRAIN_DATA = ROOT / "systems" / "ethanol" / "dft.extxyz"
ACCURACY_SPLIT = {"val_fraction": 0.05, "test_fraction": 0.1, "seed": 0}  # mlpot train's defaults
LARGE_SYSTEM_ATOMS = 1000

sys.path.insert(0, str(HERE))
from worker import TIMESTEP_FS, TRAIN_BATCH, TRAIN_FRAMES  # noqa: E402  (the workers' settings, stdlib + numpy only)


def repository_path(path: str) -> str:
    """``path`` relative to the repository root where it lies inside it (as the outputs name files)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def python_of(package: str) -> Path:
    """The interpreter a package's worker runs under."""
    if package == OURS:
        return Path(sys.executable)
    python = VENVS / package / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} not found: run `bash benchmarks/peers/setup_envs.sh {package}` first")
    return python


class WorkerProcess:
    """A ``worker.py`` subprocess under the package's interpreter, spoken to in JSON lines."""

    def __init__(self, package: str, threads: int, log_dir: Path, compiled_dir: Optional[Path] = None):
        self.package = package
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   PYTHONPATH=str(HERE), PYTHONUNBUFFERED="1")
        if compiled_dir is not None:  # Inductor's on-disk cache with the compiled files (what MACE's route reuses)
            env["TORCHINDUCTOR_CACHE_DIR"] = str(compiled_dir / f"inductor-{package}")
        self.log_path = log_dir / f"{package}-{threads}threads.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [str(python_of(package)), str(HERE / "worker.py"), package], cwd=str(log_dir), env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1,
        )
        self.read()  # the "ready" line, after the imports

    def read(self) -> Dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.package} worker died; see {self.log_path}")
        return json.loads(line)

    def ask(self, **request) -> Dict[str, Any]:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
        self.log.close()


def write_inputs(systems: Sequence[str], folder: Path) -> Dict[str, Dict[str, Any]]:
    """Each system as extxyz (Å, cell, pbc) for ASE and the raw calls, plus its PDB for OpenMM."""
    import ase.io

    from mlpot.systems import get_system, load_atoms

    inputs = {}
    for name in systems:
        atoms = load_atoms(name)
        xyz = folder / f"{name}.extxyz"
        ase.io.write(xyz, atoms, format="extxyz")
        inputs[name] = {"xyz": str(xyz), "pdb": str(get_system(name).pdb_path), "n_atoms": len(atoms),
                        "periodic": bool(atoms.pbc.all())}
    return inputs


def count_edges(xyz: str, cutoff_A: float = 5.0) -> int:
    """Directed pairs closer than the cutoff (what the cost scales with)."""
    import ase.io
    import numpy as np
    import torch

    from mlpot.neighbors import neighbor_pairs

    atoms = ase.io.read(xyz)
    edge_index, _ = neighbor_pairs(torch.tensor(atoms.positions), torch.tensor(np.asarray(atoms.cell)),
                                   torch.tensor(atoms.pbc), cutoff_A)
    return int(edge_index.shape[1])


def machine_info() -> Dict[str, Any]:
    with open("/proc/cpuinfo") as handle:
        cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                   platform.processor())
    return {"cpu_model": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def measure_case(workers: Dict[str, WorkerProcess], engines: Sequence[str], system: str, inputs: Dict[str, Any],
                 args: argparse.Namespace) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Prepare and warm up every package on every engine of ``engines``, then time interleaved blocks, each round
    every (package, engine) once; per-engine, per-package records. Engines timed together share rounds, so their
    per-round medians can be paired across engines (what :func:`fastest_routes` does for the ASE routes)."""
    large = inputs["n_atoms"] >= LARGE_SYSTEM_ATOMS
    warmup = args.warmup_large if large else args.warmup
    records: Dict[str, Dict[str, Dict[str, Any]]] = {engine: {} for engine in engines}
    for engine in engines:
        for package, worker in workers.items():
            print(f"  {package}: preparing {engine} on {system} ...", file=sys.stderr, flush=True)
            answer = worker.ask(cmd="prepare", engine=engine, system=system, xyz=inputs["xyz"], pdb=inputs["pdb"],
                                warmup=warmup)
            if not answer["ok"]:
                print(f"  {package}: {answer['error']}", file=sys.stderr, flush=True)
                records[engine][package] = {"error": answer["error"]}
                continue
            records[engine][package] = {"setup_s": answer["setup_s"], "warmup_ms": answer["warmup_ms"], "rounds": []}
            if "compiled" in answer:
                compiled = answer["compiled"]
                records[engine][package]["compiled"] = {
                    **compiled, **({"path": repository_path(compiled["path"])} if compiled["path"] else {}),
                    **({"inductor_cache": repository_path(compiled["inductor_cache"])}
                       if compiled.get("inductor_cache") else {})}
    live = [(package, engine) for engine in engines for package in workers if "rounds" in records[engine][package]]
    rounds = args.rounds_large if large else args.rounds
    for r in range(rounds):
        order = live[r % len(live):] + live[:r % len(live)] if live else []
        for package, engine in order:
            record = records[engine][package]
            if "error" in record:
                continue
            load = os.getloadavg()[0]
            answer = workers[package].ask(cmd="time", engine=engine, system=system, calls=1,
                                          seconds=args.block_s, max_calls=args.max_calls)
            if not answer["ok"]:
                record["error"] = answer["error"]
                continue
            record["rounds"].append(
                {"samples_ms": answer["samples_ms"], "cpu_per_wall": answer["cpu_per_wall"], "load1_before": load}
            )
        print(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{p if len(engines) == 1 else p + ' ' + e} "
            f"{statistics.median(records[e][p]['rounds'][-1]['samples_ms']):.1f} ms"
            for p, e in live if records[e][p]["rounds"]), file=sys.stderr, flush=True)
    for engine in engines:
        for package in workers:
            workers[package].ask(cmd="release", engine=engine, system=system)
            record = records[engine][package]
            samples = [s for block in record.get("rounds", []) for s in block["samples_ms"]]
            if samples:
                record["median_ms"] = statistics.median(samples)
                record["min_ms"] = min(samples)
                record["per_s"] = 1000.0 / record["median_ms"]
                if engine == "openmm":
                    record["ns_per_day"] = record["per_s"] * 86400 * TIMESTEP_FS * 1e-6
                if engine == "train":
                    record["frames_per_s"] = TRAIN_BATCH * record["per_s"]
                record["cpu_per_wall"] = statistics.median(b["cpu_per_wall"] for b in record["rounds"])
    return records


def accuracy_sizes(entries: Sequence[str], packages: Sequence[str]) -> Dict[str, str]:
    """The model size each package trains with ``--accuracy``: a bare size applies to every package, ``package=size``
    to one (later entries win)."""
    sizes = {package: "default" for package in packages}
    for entry in entries:
        package, _, size = entry.rpartition("=")
        if size not in SIZES or (package and package not in PACKAGES):
            raise SystemExit(f"--accuracy-size: {entry!r} is not a size ({', '.join(SIZES)}) or "
                             f"package=size with a package among {', '.join(PACKAGES)}")
        for name in ([package] if package else packages):
            if name in sizes:
                sizes[name] = size
    return sizes


def measure_accuracy(args: argparse.Namespace, log_dir: Path, models: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Train every package's ``--accuracy-size`` model for the same wall-clock budget on the same split of the
    ethanol set (interleaved blocks of training steps), then its energy and force MAE on the test frames."""
    import ase.io

    from mlpot.data.split import random_split

    frames = ase.io.read(TRAIN_DATA, index=":")
    split = random_split(len(frames), ACCURACY_SPLIT["val_fraction"], ACCURACY_SPLIT["test_fraction"],
                         ACCURACY_SPLIT["seed"])
    paths = {}
    for name in ("train", "test"):
        paths[name] = log_dir / f"ethanol-{name}.extxyz"
        ase.io.write(paths[name], [frames[i] for i in split[name]], format="extxyz")
    budget_s = 60.0 * args.accuracy
    size_of = accuracy_sizes(args.accuracy_size, args.packages)
    workers = {p: WorkerProcess(p, args.accuracy_threads, log_dir) for p in args.packages}
    results: Dict[str, Dict[str, Any]] = {}
    try:
        for package, worker in workers.items():
            model = worker.ask(cmd="build", size=size_of[package], threads=args.accuracy_threads, workdir=str(log_dir))
            answer = worker.ask(cmd="prepare", engine="fit", system="ethanol", xyz=str(paths["train"]), pdb="",
                                warmup=0)
            if not (model["ok"] and answer["ok"]):
                results[package] = {"error": model.get("error") or answer.get("error")}
                continue
            results[package] = {"size": size_of[package], "parameters": model["parameters"],
                                "setup_s": answer["setup_s"], "train_s": 0.0, "steps": 0, "loads": []}
            if not any(m["package"] == package and m["size"] == size_of[package] for m in models):
                models.append({"package": package, "size": size_of[package],
                               **{k: v for k, v in model.items() if k != "ok"}})
        live = [p for p in workers if "error" not in results[p]]
        turn = 0
        while any(results[p]["train_s"] < budget_s for p in live):
            order = live[turn % len(live):] + live[:turn % len(live)]
            turn += 1
            for package in order:
                left = budget_s - results[package]["train_s"]
                if left <= 0:
                    continue
                results[package]["loads"].append(os.getloadavg()[0])
                answer = workers[package].ask(cmd="time", engine="fit", system="ethanol", calls=1,
                                              seconds=min(args.accuracy_block_s, left), max_calls=10 ** 9)
                results[package]["train_s"] += sum(answer["samples_ms"]) / 1000.0
                results[package]["steps"] += len(answer["samples_ms"])
            print("  training: " + ", ".join(f"{p} {results[p]['train_s']:.0f}/{budget_s:.0f} s" for p in live),
                  file=sys.stderr, flush=True)
        for package in live:
            answer = workers[package].ask(cmd="evaluate", engine="fit", system="ethanol", xyz=str(paths["test"]))
            record = results[package]
            outcome = {k: v for k, v in answer.items() if k != "ok"} if answer["ok"] else {"error": answer["error"]}
            record.update(outcome)
            record["epochs"] = record["steps"] * TRAIN_BATCH / len(split["train"])
            record["frames_per_s"] = record["steps"] * TRAIN_BATCH / record["train_s"]
    finally:
        for worker in workers.values():
            worker.close()
    return {"sizes": size_of, "threads": args.accuracy_threads, "budget_s": budget_s,
            "split": {**ACCURACY_SPLIT, **{name: len(indices) for name, indices in split.items()}},
            "data": str(TRAIN_DATA.relative_to(ROOT)), "batch": TRAIN_BATCH,
            "note": "wall-clock budget counts training steps only (not graph building or evaluation); constant "
                    "learning rate 0.005, loss weights energy 1 / forces 10, EMA 0.99 for every package",
            "packages": results}


def paired_ratios(records: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """ours/theirs in calls per second, round by round (their median ms / our median ms in the same round)."""
    ratios = {}
    ours = records.get(OURS, {}).get("rounds", [])
    for package, record in records.items():
        if package == OURS or not record.get("rounds") or not ours:
            continue
        per_round = [statistics.median(theirs["samples_ms"]) / statistics.median(mine["samples_ms"])
                     for mine, theirs in zip(ours, record["rounds"])]
        fastest = min(s for block in record["rounds"] for s in block["samples_ms"]) / min(
            s for block in ours for s in block["samples_ms"])
        ratios[package] = {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round),
                           "per_round": per_round, "of_fastest_calls": fastest}
    return ratios


def fastest_routes(cases: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per thread count, size and system: each package's fastest ASE route (the lowest median ms among
    ``ASE_ROUTES``) and ours/theirs between those routes (mlpot's fastest ÷ each peer's fastest), paired round by
    round as :func:`paired_ratios` does (the ASE routes of a system are timed in the same rounds)."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for case in cases:
        if case["engine"] in ASE_ROUTES:
            groups.setdefault((case["threads"], case["size"], case["system"]), []).append(case)
    summaries = []
    for (threads, size, system), group in groups.items():
        best: Dict[str, Dict[str, Any]] = {}
        routes: Dict[str, str] = {}
        for case in group:
            for package, record in case["packages"].items():
                if "median_ms" in record and (package not in best or record["median_ms"] < best[package]["median_ms"]):
                    best[package], routes[package] = record, case["engine"]
        summaries.append({"threads": threads, "size": size, "system": system, "n_atoms": group[0]["n_atoms"],
                          "routes": routes, "median_ms": {p: r["median_ms"] for p, r in best.items()},
                          "ratios": paired_ratios(best)})
    return summaries


def format_markdown(report: Dict[str, Any]) -> str:
    packages = report["settings"]["packages"]
    peers = [p for p in packages if p != OURS]
    load = report["machine"]
    lines = [
        f"Peer benchmark, {report['machine']['date']}, {load['cpu_model']} ({load['cpu_count']} cores). "
        f"Load average (1 min) at start {load['load_average_at_start'][0]:.1f}, at end "
        f"{load['load_average_at_end'][0]:.1f}, "
        f"median before the timed blocks {report['load_during_blocks']['median']:.1f} "
        f"(max {report['load_during_blocks']['max']:.1f}). Random-init models, float32, cutoff 5 Å. "
        "Medians of single calls; ratio = mlpot's calls/s ÷ the peer's, median over rounds of paired blocks "
        "(> 1: mlpot faster); in brackets the ratio of the fastest single calls, closer to what an idle machine "
        "would show.",
        "",
        "| threads | size | engine | system | atoms | " + " | ".join(f"{LABELS[p]} /s (ms)" for p in packages)
        + " | " + " | ".join(f"mlpot/{LABELS[p]}" for p in peers) + " |",
        "|---:|---|---|---|---:|" + "---:|" * (len(packages) + len(peers)),
    ]
    for case in report["results"]:
        cells = []
        for package in packages:
            record = case["packages"].get(package, {})
            if "median_ms" in record:
                unit = "frames" if case["engine"] == "train" else ""
                value = record.get("frames_per_s", record["per_s"])
                cells.append(f"{value:.3g}{' ' + unit if unit else ''} ({record['median_ms']:.4g})")
            else:
                cells.append("failed" if "error" in record else "–")
        ratios = [f"{case['ratios'][p]['median']:.2f} ({case['ratios'][p]['of_fastest_calls']:.2f})"
                  if p in case["ratios"] else "–" for p in peers]
        lines.append(f"| {case['threads']} | {case['size']} | {case['engine']} | {case['system']} | "
                     f"{case['n_atoms']} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    fastest = [f for f in report.get("fastest", []) if len(f["routes"]) > 1]
    if any(case["engine"] == "ase-compiled" for case in report["results"]) and fastest:
        lines += ["", "Fastest ASE route of each package (eager/TorchScript `ase` or compiled `ase-compiled`, by "
                  "median ms): ratio = mlpot's fastest route ÷ the peer's fastest, paired by round as above "
                  "(in brackets the fastest single calls).", "",
                  "| threads | size | system | atoms | " + " | ".join(f"{LABELS[p]} route (ms)" for p in packages)
                  + " | " + " | ".join(f"mlpot/{LABELS[p]}" for p in peers) + " |",
                  "|---:|---|---|---:|" + "---|" * len(packages) + "---:|" * len(peers)]
        for summary in fastest:
            cells = [f"{summary['routes'][p]} ({summary['median_ms'][p]:.4g})" if p in summary["routes"] else "–"
                     for p in packages]
            ratios = [f"{summary['ratios'][p]['median']:.2f} ({summary['ratios'][p]['of_fastest_calls']:.2f})"
                      if p in summary["ratios"] else "–" for p in peers]
            lines.append(f"| {summary['threads']} | {summary['size']} | {summary['system']} | {summary['n_atoms']} | "
                         + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    compiled: Dict[tuple, Dict[str, Any]] = {}  # one row per file, or per system where the route compiles in-process
    for case in report["results"]:
        for package, record in case["packages"].items():
            info = record.get("compiled")
            if info is not None:
                compiled.setdefault((package, case["size"], info["path"] or case["system"]), info)
    if compiled:
        lines += ["", "Compiled routes (compile s: in the run that built the file, or the first call where the "
                  "package compiles in its process; cached: the file was loaded from "
                  f"`{repository_path(report['settings'].get('compiled_dir', ''))}`, or Inductor's cache there "
                  "held code):", "",
                  "| package | size | compiled file | MB | compile s | cached |", "|---|---|---|---:|---:|---|"]
        for (package, size, where), info in sorted(compiled.items(), key=lambda item: packages.index(item[0][0])):
            name = Path(info["path"]).name if info["path"] else f"none (torch.compile in the process, {where})"
            megabytes = f"{info['file_bytes'] / 1e6:.2f}" if info["file_bytes"] else "–"
            lines.append(f"| {LABELS[package]} | {size} | {name} | {megabytes} | {info['compile_s']:.0f} | "
                         f"{'yes' if info['cached'] else 'no'} |")
    if any(case["engine"] == "openmm" for case in report["results"]):
        lines += ["", "OpenMM ns/day (1 fs):", "",
                  "| threads | size | system | " + " | ".join(LABELS[p] for p in packages) + " |",
                  "|---:|---|---|" + "---:|" * len(packages)]
    for case in report["results"]:
        if case["engine"] == "openmm":
            lines.append(f"| {case['threads']} | {case['size']} | {case['system']} | " + " | ".join(
                f"{case['packages'][p]['ns_per_day']:.3g}" if "ns_per_day" in case["packages"].get(p, {}) else "–"
                for p in packages) + " |")
    accuracy = report.get("accuracy")
    if accuracy:
        lines += ["", f"Accuracy after {accuracy['budget_s'] / 60:.3g} min of training steps each "
                  f"({accuracy['threads']} thread(s), {accuracy['data']}, split train/val/test "
                  f"{accuracy['split']['train']}/{accuracy['split']['val']}/{accuracy['split']['test']}, batch "
                  f"{accuracy['batch']}); test MAE:", "",
                  "| package | size | params | steps | epochs | frames/s | E MAE meV/atom | F MAE meV/Å |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for package, r in accuracy["packages"].items():
            if "error" in r:
                error = " ".join(r["error"].split())[:100]
                lines.append(f"| {LABELS[package]} | {r.get('size', '')} | failed: {error} | | | | | |")
            else:
                size = r.get("size", accuracy.get("size", ""))
                lines.append(f"| {LABELS[package]} | {size} | {r['parameters']:,} | {r['steps']} | {r['epochs']:.2f} | "
                             f"{r['frames_per_s']:.1f} | {r['energy_mae_meV_per_atom']:.2f} | "
                             f"{r['forces_mae_meV_per_A']:.1f} |")
    lines += ["", "Models:", "", "| package | size | model | parameters | hyperparameters |", "|---|---|---|---:|---|"]
    for model in report["models"]:
        hyper = ", ".join(f"{k}={v}" for k, v in model["hyperparameters"].items())
        lines.append(f"| {LABELS[model['package']]} | {model['size']} | {model['model']} | "
                     f"{model['parameters']:,} | {hyper} |")
    return "\n".join(lines)


def plot(report: Dict[str, Any], path: Path) -> bool:
    """OpenMM steps/s against atoms, log-log, one line per package (and per size/threads)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in report["results"] if c["engine"] == "openmm"]
    if not cases:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    styles = {1: ":", 2: "-"}
    markers = {"small": "o", "default": "s"}
    colours = {"mlpot": "tab:blue", "mace": "tab:red", "nequip": "tab:green"}
    for package in report["settings"]["packages"]:
        for size in report["settings"]["sizes"]:
            for threads in report["settings"]["threads"]:
                points = sorted((c["n_atoms"], c["packages"][package]["per_s"]) for c in cases
                                if c["size"] == size and c["threads"] == threads
                                and "per_s" in c["packages"].get(package, {}))
                if points:
                    ax.plot(*zip(*points), styles.get(threads, "--"), marker=markers.get(size, "^"),
                            color=colours.get(package), label=f"{LABELS[package]} {size}, {threads} thr.")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms")
    ax.set_ylabel("OpenMM MD steps/s (CPU)")
    ax.set_title(f"MD speed, random-init models, cutoff 5 Å (load ~{report['load_during_blocks']['median']:.1f})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES), choices=PACKAGES)
    parser.add_argument("--sizes", nargs="+", default=["small"], choices=SIZES)
    parser.add_argument("--systems", nargs="+", default=None, help=f"default: {' '.join(SYSTEMS)}")
    parser.add_argument("--engines", nargs="*", default=list(ENGINES), choices=ENGINES,
                        help="speed engines; none (`--engines` alone) with --accuracy for accuracy only")
    parser.add_argument("--threads", nargs="+", type=int, default=None, help="default: 2 1 (--quick: 2)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per case (default 5, --quick 3)")
    parser.add_argument("--rounds-large", type=int, default=3,
                        help=f"rounds for systems of {LARGE_SYSTEM_ATOMS}+ atoms")
    parser.add_argument("--warmup", type=int, default=10,
                        help="untimed calls after preparing (default 10: TorchScript optimises over the first calls)")
    parser.add_argument("--warmup-large", type=int, default=4, help=f"warm-up calls for {LARGE_SYSTEM_ATOMS}+ atoms")
    parser.add_argument("--block-s", type=float, default=3.0,
                        help="seconds per timed block: calls until this much time has passed (at least 1)")
    parser.add_argument("--max-calls", type=int, default=50, help="most calls in one block")
    parser.add_argument("--train", action="store_true", help="also time training steps on the ethanol DFT set")
    parser.add_argument("--accuracy", type=float, default=None, metavar="MINUTES",
                        help="also train every package for MINUTES of steps on the same ethanol split and report "
                             "test MAE (expensive: 3 x MINUTES)")
    parser.add_argument("--accuracy-size", nargs="+", default=["default"], metavar="[PACKAGE=]SIZE",
                        help="model size for --accuracy: a size for every package and/or package=size for one")
    parser.add_argument("--accuracy-threads", type=int, default=1)
    parser.add_argument("--accuracy-block-s", type=float, default=30.0,
                        help="seconds of training per interleaved block in --accuracy")
    parser.add_argument("--quick", action="store_true",
                        help="alanine dipeptide and water-192, 2 threads, 3 rounds (unless given)")
    parser.add_argument("--compiled-dir", type=Path, default=VENVS / "compiled",
                        help="cache of compiled model files for ase-compiled "
                             "(default: benchmarks/peers/.venvs/compiled)")
    parser.add_argument("--render", type=Path, default=None,
                        help="only rewrite the table and plot from this results JSON (e.g. an interrupted run's)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "peers",
                        help="output stem: writes <stem>.json, <stem>.md, <stem>.png")
    args = parser.parse_args(argv)
    if args.quick:
        args.systems = args.systems or list(QUICK_SYSTEMS)
        args.threads = args.threads or [2]
        args.rounds = args.rounds or 3
    args.systems = args.systems or list(SYSTEMS)
    args.threads = args.threads or [2, 1]
    args.rounds = args.rounds or 5
    if OURS not in args.packages:
        parser.error("mlpot must be one of the packages (the ratios are relative to it)")
    return args


def render(path: Path, stem: Path) -> None:
    """Table and plot from a results JSON (partial ones too: their load at end is the last case's)."""
    report = json.loads(path.read_text())
    for case in report["results"]:
        case["ratios"] = paired_ratios(case["packages"])
    report["fastest"] = fastest_routes(report["results"])
    markdown = format_markdown(report)
    print(markdown)
    Path(f"{stem}.md").write_text(markdown + "\n")
    plot(report, Path(f"{stem}.png"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        render(args.render, args.out)
        return 0
    for package in args.packages:
        python_of(package)
    machine = machine_info()
    log_dir = Path(tempfile.mkdtemp(prefix="mlpot-peers-"))
    print(f"worker logs in {log_dir}; load average {machine['load_average_at_start']}", file=sys.stderr)
    inputs = write_inputs(args.systems, log_dir)
    for name in inputs:
        inputs[name]["n_edges"] = count_edges(inputs[name]["xyz"])
    cases: List[Dict[str, Any]] = []
    models: List[Dict[str, Any]] = []
    loads: List[float] = []
    started = time.perf_counter()

    def report() -> Dict[str, Any]:
        machine["load_average_at_end"] = os.getloadavg()
        return {
            "benchmark": "peers",
            "complete": False,
            "machine": machine,
            "load_during_blocks": {"median": statistics.median(loads) if loads else float("nan"),
                                   "max": max(loads) if loads else float("nan"),
                                   "note": "1-minute load average read before each timed block; 2 cores"},
            "wall_s": time.perf_counter() - started,
            "settings": {**{k: (repository_path(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                         "timestep_fs": TIMESTEP_FS, "temperature_K": 300.0, "friction_per_ps": 1.0,
                         "train_batch": TRAIN_BATCH, "train_frames": TRAIN_FRAMES, "seed": 0,
                         "worker_logs": str(log_dir),
                         "statistic": "median of single calls; ratio = median over rounds of paired per-round medians"},
            "inputs": inputs,
            "models": models,
            "results": cases,
            "fastest": fastest_routes(cases),
        }

    json_path = Path(f"{args.out}.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    plan = []  # (engines timed together, system): the ASE routes of a system as one case, the others alone
    for system in args.systems:
        for engine in args.engines:
            if engine not in ASE_ROUTES:
                plan.append(((engine,), system))
            elif engine == next(e for e in args.engines if e in ASE_ROUTES):
                plan.append((tuple(e for e in args.engines if e in ASE_ROUTES), system))
    if args.train:
        import ase.io

        first = log_dir / f"ethanol-first{TRAIN_FRAMES}.extxyz"
        ase.io.write(first, ase.io.read(TRAIN_DATA, index=f":{TRAIN_FRAMES}"), format="extxyz")
        inputs[TRAIN_SYSTEM] = {"xyz": str(first), "pdb": "", "n_atoms": 9, "n_edges": None, "periodic": False}
        plan.append((("train",), TRAIN_SYSTEM))
    for threads in args.threads if plan else []:
        workers = {p: WorkerProcess(p, threads, log_dir, args.compiled_dir) for p in args.packages}
        try:
            for size in args.sizes:
                for package, worker in workers.items():
                    answer = worker.ask(cmd="build", size=size, threads=threads, workdir=str(log_dir),
                                        compiled_dir=str(args.compiled_dir), example_xyz=str(TRAIN_DATA))
                    if not answer.pop("ok"):
                        raise RuntimeError(f"{package} could not build its {size} model: {answer['error']}")
                    if threads == args.threads[0]:
                        models.append({"package": package, "size": size, **answer})
                for engines, system in plan:
                    print(f"[{threads} threads, {size}] {' + '.join(engines)} on {system}", file=sys.stderr,
                          flush=True)
                    by_engine = measure_case(workers, engines, system, inputs[system], args)
                    for engine, records in by_engine.items():
                        loads += [b["load1_before"] for r in records.values() for b in r.get("rounds", [])]
                        cases.append({"threads": threads, "size": size, "engine": engine, "system": system,
                                      "n_atoms": inputs[system]["n_atoms"], "n_edges": inputs[system]["n_edges"],
                                      "packages": records, "ratios": paired_ratios(records)})
                    json_path.write_text(json.dumps(report(), indent=1) + "\n")  # partial results survive a crash
        finally:
            for worker in workers.values():
                worker.close()
    if args.accuracy:
        accuracy = measure_accuracy(args, log_dir, models)
    final = {**report(), "complete": True, **({"accuracy": accuracy} if args.accuracy else {})}
    markdown = format_markdown(final)
    print(markdown)
    json_path.write_text(json.dumps(final, indent=1) + "\n")
    Path(f"{args.out}.md").write_text(markdown + "\n")
    if plot(final, Path(f"{args.out}.png")):
        print(f"\nwrote {args.out}.json, .md, .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

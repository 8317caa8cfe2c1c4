"""Accuracy benchmark: train on the shipped ethanol DFT set and report errors on its held-out test split.

Issue 3's target: NequIP-style model, force MAE <= 40 meV/Å and energy MAE <= 1 meV/atom on the test
split after <= 60 minutes of training on the 2-core CPU box; the EGNN is reported alongside.

Each architecture is trained with ``mlpot train`` from ``benchmarks/configs/ethanol_<arch>.yaml``
(time limit ``--minutes``, default 55, so that data loading, statistics, test and export fit in
the hour), then the *deployed model file* is evaluated on the test frames with ``mlpot.evaluate``
(the numbers a user of the file gets). ``--parallel`` trains the architectures side by side with one
torch thread each (the 2 cores shared between them); otherwise one after the other with all threads.

    python benchmarks/train_ethanol.py                      # both, one after the other (2 x 55 min)
    python benchmarks/train_ethanol.py --parallel           # both at once, one core each (55 min)
    python benchmarks/train_ethanol.py --archs nequip --minutes 10

Writes ``benchmarks/results/train_ethanol.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_ethanol.json"
TARGETS = {"forces_mae": 40.0, "energy_per_atom_mae": 1.0}  # meV/Å, meV/atom (NequIP-style model)


def train_command(arch: str, minutes: float, out: Path, threads: int | None) -> list[str]:
    config = ROOT / "benchmarks" / "configs" / f"ethanol_{arch}.yaml"
    command = [sys.executable, "-m", "mlpot.cli", "train", str(config),
               "--out", str(out), "--max-time", str(minutes), "--quiet", "--set", "training.device=cpu"]
    if threads:
        command += ["--set", f"training.threads={threads}"]
    return command


def evaluate_test_split(run: Path) -> dict:
    """Errors of the deployed model file on the run's own test split."""
    import ase.io

    from mlpot.evaluate import evaluate_model_file, write_evaluation

    config = json.loads((run / "metrics.json").read_text())
    split = json.loads((run / "split.json").read_text())
    data_file = ROOT / "systems" / "ethanol" / "dft.extxyz"
    frames = ase.io.read(data_file, index=":")
    with tempfile.TemporaryDirectory() as folder:
        test_file = Path(folder) / "test.extxyz"
        ase.io.write(test_file, [frames[i] for i in split["test"]])
        metrics, accumulator = evaluate_model_file(run / "model.pt", [test_file])
    write_evaluation(metrics, accumulator, run / "eval_test", title=f"{run.name}: test split")
    return {"test": metrics, "training": {k: config[k] for k in ("epochs", "best_epoch", "steps", "training_time_s",
                                                                  "stopped_because")},
            "val": config["metrics"].get("val", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["nequip", "egnn"])
    parser.add_argument("--minutes", type=float, default=55.0, help="training time limit per model")
    parser.add_argument("--parallel", action="store_true", help="train the models at once, one thread each")
    parser.add_argument("--runs", default=str(ROOT / "runs"), help="where the run directories go")
    args = parser.parse_args()

    runs = {arch: Path(args.runs) / f"bench-ethanol-{arch}" for arch in args.archs}
    for run in runs.values():
        if (run / "checkpoint.pt").exists():
            sys.exit(f"{run} exists; remove it or continue it with mlpot train --resume")
    started = time.time()
    threads = 1 if args.parallel else None
    processes = []
    for arch, run in runs.items():
        command = train_command(arch, args.minutes, run, threads)
        print("$", " ".join(command), flush=True)
        process = subprocess.Popen(command, cwd=ROOT)
        if args.parallel:
            processes.append(process)
        elif process.wait() != 0:
            sys.exit(f"training {arch} failed")
    for process in processes:
        if process.wait() != 0:
            sys.exit("a training run failed")
    wall_minutes = (time.time() - started) / 60.0

    results = {}
    for arch, run in runs.items():
        results[arch] = evaluate_test_split(run)
    nequip = results.get("nequip", {}).get("test", {})
    report = {
        "benchmark": "train_ethanol",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "mode": "parallel, 1 thread per model" if args.parallel else "sequential, all threads"},
        "minutes_limit": args.minutes,
        "wall_minutes_all": round(wall_minutes, 1),
        "targets_nequip": TARGETS,
        "targets_met_nequip": {k: (nequip.get(k, float("inf")) <= v) for k, v in TARGETS.items()} if nequip else None,
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    print("\n| model | epochs | train time (min) | test frames | E MAE (meV/atom) | E RMSE | F MAE (meV/Å) | F RMSE |")
    print("|---|---|---|---|---|---|---|---|")
    for arch, result in results.items():
        t, tr = result["test"], result["training"]
        print(f"| {arch} | {tr['epochs']} | {tr['training_time_s'] / 60:.1f} | {t['frames']} | "
              f"{t['energy_per_atom_mae']:.3f} | {t['energy_per_atom_rmse']:.3f} | {t['forces_mae']:.1f} | "
              f"{t['forces_rmse']:.1f} |")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()

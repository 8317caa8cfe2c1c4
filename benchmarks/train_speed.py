"""Training throughput (frames/s) of both architectures, on the CPU and on a GPU when there is one.

One "step" is exactly what ``mlpot train`` does per batch (``Trainer.train_step``): collate the
batch, energies and forces with the graph kept for the force loss, loss, backward (double
backward through the forces), gradient clipping, Adam step and EMA update. Timings are the median
over ``--steps`` steps after ``--warmup`` steps; frames/s = batch size / median step time.

Datasets: the shipped ethanol B3LYP set (9 atoms) and, if present, the alanine-dipeptide GFN2-xTB
set (22 atoms).

    python benchmarks/train_speed.py                   # CPU (and CUDA if available)
    python benchmarks/train_speed.py --devices cpu --batch-sizes 5 --steps 10

Writes ``benchmarks/results/train_speed.json`` (``train_speed_<device>.json`` with ``--tag``) and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mlpot.train import TrainConfig
from mlpot.train.metrics import ErrorAccumulator
from mlpot.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    "ethanol (9 atoms)": ROOT / "systems" / "ethanol" / "dft.extxyz",
    "alanine dipeptide (22 atoms)": ROOT / "systems" / "alanine-dipeptide" / "xtb.extxyz.gz",
}


def measure(arch: str, size: str, data: Path, batch_size: int, device: str, steps: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig.from_dict({
            "data": {"files": [str(data)], "index": f":{max(200, batch_size * (steps + warmup))}",
                     "val_fraction": 0.0, "test_fraction": 0.0},
            "model": {"arch": arch, "size": size},
            "training": {"batch_size": batch_size, "device": device, "warmup_steps": 0},
            "out": folder,
        })
        trainer = Trainer(config, quiet=True)
        trainer._build(None)
        batches = trainer._epoch_batches(0)
        accumulator = ErrorAccumulator()
        times = []
        for k in range(warmup + steps):
            indices = batches[k % len(batches)]
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            trainer.train_step(indices, accumulator)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if k >= warmup:
                times.append(time.perf_counter() - started)
        step = statistics.median(times)
        return {"arch": arch, "size": size, "batch_size": batch_size, "device": device,
                "parameters": sum(p.numel() for p in trainer.model.parameters()),
                "median_step_ms": 1000 * step, "frames_per_s": batch_size / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--archs", nargs="+", default=["nequip", "egnn"])
    parser.add_argument("--sizes", nargs="+", default=["default"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[5, 32])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args()

    rows = []
    for name, path in DATASETS.items():
        if not path.exists():
            print(f"skipping {name}: {path} not found")
            continue
        for device in args.devices:
            for arch in args.archs:
                for size in args.sizes:
                    for batch_size in args.batch_sizes:
                        row = measure(arch, size, path, batch_size, device, args.steps, args.warmup)
                        row["dataset"] = name
                        rows.append(row)
                        print(f"{name:<30} {device:<5} {arch:<7} {size:<15} batch {batch_size:>3}: "
                              f"{row['median_step_ms']:8.1f} ms/step  {row['frames_per_s']:8.1f} frames/s", flush=True)
    report = {
        "benchmark": "train_speed",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "rows": rows,
    }
    out = ROOT / "benchmarks" / "results" / f"train_speed{('_' + args.tag) if args.tag else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print("\n| dataset | device | model | batch | ms/step | frames/s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['device']} | {r['arch']} {r['size']} ({r['parameters']} params) | "
              f"{r['batch_size']} | {r['median_step_ms']:.1f} | {r['frames_per_s']:.1f} |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

"""StABlE on alanine dipeptide: a parent that fits a few dozen 300 K GFN2-xTB frames but falls apart at
500 K, StABlE-trained against the xTB 500 K h(r), over several seeds, with the energy/force control.

1. **Data** (``--out``/data): the shipped ``systems/alanine-dipeptide/xtb.extxyz.gz`` holds 540 frames of
   GFN2-xTB MD at 300 K and 540 at 500 K (``source`` in each frame's info). ``xtb_md.extxyz`` keeps those
   1080 frames; ``xtb_md_500K.extxyz`` the 500 K ones, the reference observable (h(r)) of StABlE and of the
   stability measurement.
2. **Parent**: ``--arch`` (default an EGNN, 16 channels, 2 layers, cutoff 5 Å) trained with ``mlpot train`` on
   ``--parent-frames`` (default 40) random 300 K frames, 20 other 300 K frames for validation, every other
   frame (the rest of 300 K and all of 500 K) as the test split, for ``--parent-epochs`` epochs.
3. **Measure** (:func:`mlpot.stable.evaluation.measure_model_file_stability`): Langevin replicas at 500 K
   from the 500 K xTB frames, 0.5 Å bond criterion; mean time to instability, h(r) MAE against the 500 K
   xTB h(r); force and energy MAE on the parent's test split.
4. **StABlE** at the defaults of :mod:`mlpot.stable.config` (Nosé–Hoover at 500 K) with
   ``data.file: xtb_md.extxyz`` and ``data.observable_file: xtb_md_500K.extxyz``, one run per ``--seeds``
   (``run.seed``: start frames, velocities, QM frames per step), each with its control: the same number of
   plain energy/force steps.
5. Writes ``benchmarks/results/stable_alanine_dipeptide.json`` (every seed, and mean ± std over seeds) and
   prints a markdown table.

    python benchmarks/stable_peptide.py                         # 3 seeds, ~1 h on 1 thread
    python benchmarks/stable_peptide.py --seeds 0 --eval-time 2 --out /tmp/quick

Steps already done in ``--out`` are reused; an interrupted StABlE run resumes.
Targets (issue 19): time to instability ≥ 5× the parent's, better than the energy/force control, force MAE
within 20 % of the parent's, over 3 seeds.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from stable_ethanol import energy_force_control, measure, run_stable, table, test_graphs, unit_costs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "stable_alanine_dipeptide.json"
XTB = ROOT / "systems" / "alanine-dipeptide" / "xtb.extxyz.gz"
SOURCES = {300: 'source="GFN2-xTB MD 300 K"', 500: 'source="GFN2-xTB MD 500 K"'}
ARCHS = {"egnn": {"arch": "egnn", "hyperparameters": {"hidden": 16, "num_layers": 2}},
         "nequip": {"arch": "nequip", "size": "default", "hyperparameters": {"num_features": 16, "num_layers": 2}}}


def md_frames(out: Path) -> tuple[Path, Path, np.ndarray]:
    """Write the xTB MD frames (300 K, then 500 K) and the 500 K ones alone; the temperature of each frame
    of the first file. Frames are copied as text, so they are the shipped ones bit for bit."""
    out.mkdir(parents=True, exist_ok=True)
    both, hot = out / "xtb_md.extxyz", out / "xtb_md_500K.extxyz"
    blocks = {300: [], 500: []}
    with gzip.open(XTB, "rt") as handle:
        lines = handle.readlines()
    start = 0
    while start < len(lines):
        n_atoms = int(lines[start])
        block = lines[start:start + n_atoms + 2]
        for temperature, source in SOURCES.items():
            if source in block[1]:
                blocks[temperature].append("".join(block))
        start += n_atoms + 2
    if not both.exists():
        both.write_text("".join(blocks[300] + blocks[500]))
        hot.write_text("".join(blocks[500]))
    return both, hot, np.array([300] * len(blocks[300]) + [500] * len(blocks[500]))


def train_parent(out: Path, data: Path, temperatures: np.ndarray, n_train: int, epochs: int, arch: str) -> Path:
    """The parent model file (trained once, then reused) on ``n_train`` random 300 K frames."""
    from mlpot.train import TrainConfig, train

    model_path = out / "model.pt"
    if model_path.exists():
        return model_path
    cold = np.random.default_rng(0).permutation(np.flatnonzero(temperatures == 300))
    train_indices, val_indices = cold[:n_train], cold[n_train:n_train + 20]
    test_indices = np.setdiff1d(np.arange(len(temperatures)), np.concatenate([train_indices, val_indices]))
    out.mkdir(parents=True, exist_ok=True)
    keys = {}
    for name, values in (("train", train_indices), ("val", val_indices), ("test", test_indices)):
        path = out / f"{name}_indices.txt"
        path.write_text("\n".join(str(int(k)) for k in values) + "\n")
        keys[f"{name}_indices"] = str(path)
    config = TrainConfig.from_dict({
        "data": {"files": [str(data)], **keys},
        "model": {"cutoff": 5.0, **ARCHS[arch]},
        "training": {"epochs": epochs, "early_stopping_patience": None, "device": "cpu", "threads": 1},
        "out": str(out),
    })
    return train(config, quiet=True).model_path


def mean_std(values) -> dict:
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "stable_alanine"), help="working folder")
    parser.add_argument("--arch", choices=tuple(ARCHS), default="egnn", help="the parent's architecture")
    parser.add_argument("--parent-frames", type=int, default=40, help="300 K training frames of the parent")
    parser.add_argument("--parent-epochs", type=int, default=300, help="epochs of the parent (default 300)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="StABlE run.seed values")
    parser.add_argument("--eval-replicas", type=int, default=16, help="Langevin replicas per measurement")
    parser.add_argument("--eval-time", type=float, default=5.0, help="ps per measurement (default 5)")
    parser.add_argument("--eval-seed", type=int, default=0, help="random stream of every measurement")
    parser.add_argument("--results", default=str(RESULTS), help="JSON to write")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    started = time.perf_counter()
    data, hot, temperatures = md_frames(out / "data")
    parent = train_parent(out / f"parent-{args.arch}-{args.parent_frames}-{args.parent_epochs}", data, temperatures,
                          args.parent_frames, args.parent_epochs, args.arch)
    graphs = test_graphs(parent, data)

    def evaluate(path: Path) -> dict:
        return measure(path, graphs, args.eval_replicas, args.eval_time, 0.5, args.eval_seed,
                       system="alanine-dipeptide", temperature_K=500.0, reference_path=hot)

    parent_row = evaluate(parent)
    print(f"parent: {parent_row['time_to_instability_ps']['mean']:.2f} ps, "
          f"F MAE {parent_row['test_forces_mae_meV_A']:.1f} meV/Å", flush=True)
    seeds = {}
    for seed in args.seeds:
        work = parent.parent / f"stable_seed{seed}"
        stable, config = run_stable(parent, work, seed, {"file": str(data), "observable_file": str(hot)})
        steps = stable.metrics.get("selected_learning_steps", stable.learning_steps)
        control = energy_force_control(parent, parent.parent / f"energy_force_seed{seed}", steps, config, data)
        rows = {"after StABlE": evaluate(stable.model_path), f"control: {steps} energy/force steps": evaluate(control)}
        seeds[seed] = {"rows": rows, "learning_steps": steps, "cycles": stable.cycles_done,
                       "wall_s": stable.metrics["wall_s"], **unit_costs(work / "log.csv")}
        print(f"seed {seed}:\n{table({'parent': parent_row, **rows})}", flush=True)

    def per_seed(label: str, value) -> np.ndarray:
        """``value(row)`` of the row whose name starts with ``label``, for every seed."""
        return np.array([value(next(row for name, row in s["rows"].items() if name.startswith(label)))
                         for s in seeds.values()])

    def times(label: str) -> np.ndarray:
        return per_seed(label, lambda row: row["time_to_instability_ps"]["mean"])

    def force_maes(label: str) -> np.ndarray:
        return per_seed(label, lambda row: row["test_forces_mae_meV_A"])

    parent_time = parent_row["time_to_instability_ps"]["mean"]
    summary = {
        "stability_ratio": mean_std(times("after StABlE") / parent_time),
        "control_stability_ratio": mean_std(times("control") / parent_time),
        "force_mae_change": mean_std(force_maes("after StABlE") / parent_row["test_forces_mae_meV_A"] - 1),
        "control_force_mae_change": mean_std(force_maes("control") / parent_row["test_forces_mae_meV_A"] - 1),
    }
    summary["passed"] = bool(summary["stability_ratio"]["mean"] >= 5.0
                             and summary["stability_ratio"]["mean"] > summary["control_stability_ratio"]["mean"]
                             and abs(summary["force_mae_change"]["mean"]) <= 0.2)
    result = {
        "benchmark": "stable_alanine_dipeptide",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform()},
        "command": "python benchmarks/stable_peptide.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k not in ("out", "results")),
        "data": {"file": str(XTB.relative_to(ROOT)), "md_frames_300K": int((temperatures == 300).sum()),
                 "md_frames_500K": int((temperatures == 500).sum()), "level_of_theory": "GFN2-xTB"},
        "parent": {"arch": args.arch, **ARCHS[args.arch], "training_frames": args.parent_frames,
                   "epochs": args.parent_epochs, "row": parent_row},
        "evaluation": {"integrator": "Langevin BAOAB, friction 1/ps", "temperature_K": 500.0, "threshold_A": 0.5,
                       "replicas": args.eval_replicas, "time_ps": args.eval_time, "seed": args.eval_seed,
                       "start_frames": "xTB MD frames at 500 K", "reference_h_r": "xTB MD frames at 500 K"},
        "seeds": {str(k): v for k, v in seeds.items()}, "summary": summary,
        "total_minutes": round((time.perf_counter() - started) / 60.0, 1),
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=1))
    ratio, control_ratio, change = (summary[k] for k in ("stability_ratio", "control_stability_ratio",
                                                          "force_mae_change"))
    print(f"over {len(seeds)} seeds: stability x{ratio['mean']:.1f} ± {ratio['std']:.1f} "
          f"(control x{control_ratio['mean']:.1f} ± {control_ratio['std']:.1f}), force MAE change "
          f"{change['mean']:+.0%} ± {change['std']:.0%}; passed: {summary['passed']}; wrote {args.results}")


if __name__ == "__main__":
    main()

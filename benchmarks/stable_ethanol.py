"""StABlE end to end on ethanol: a parent that fits its few DFT frames but falls apart at 500 K, its
stability, fine-tuning, and two controls.

1. **Parent.** An EGNN with 16 channels and 2 layers is trained with ``mlpot train`` on 11 of the shipped
   B3LYP frames (``test_fraction`` 0.94, 52 validation frames) for ``--parent-epochs`` 300 epochs: its
   training force error (183 meV/Å) is close to its test error (210 meV/Å), so more fitting to those
   frames has little left to learn, but its replicas leave the bond band within about 0.5 ps at 500 K.
   ``--parent-test-fraction 0.85 --parent-epochs 20`` gives the earlier under-trained parent (105 frames);
   ``--parent-data 300K`` one trained on the 300 K trajectories only (it stays stable at 500 K).
2. **Measure** (:func:`mlpot.stable.evaluation.measure_model_file_stability`): Langevin replicas at 500 K
   from the parent's test split, 0.5 Å bond criterion; mean time to instability, h(r) MAE of the stable
   frames; force and energy MAE on the test split (~980 frames).
3. **StABlE** at the default settings of :mod:`mlpot.stable.config` (``mlpot stable``).
4. **Controls:** (i) the same number of plain energy/force fine-tuning steps (same optimiser, learning
   rate, λ, frames per step, clipping and energy reference re-fit, no observable term); (ii) the parent
   at half the time step.
5. Writes ``benchmarks/results/stable_ethanol.json`` and prints a markdown table.

    python benchmarks/stable_ethanol.py                  # ~7 minutes on 1 thread
    python benchmarks/stable_ethanol.py --eval-time 2 --eval-replicas 4 --out /tmp/quick

Steps already done in ``--out`` (parent model, StABlE run) are reused; an interrupted StABlE run resumes.
Acceptance (issue 5): time to instability ≥ 5× the parent's, h(r) MAE lower, force MAE within 20 % of the parent's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "stable_ethanol.json"
DATA = ROOT / "systems" / "ethanol" / "dft.extxyz"


def low_temperature_split(out: Path, seed: int = 0) -> dict:
    """Index files for a parent that sees only 300 K frames: the 300 K trajectories but one for training,
    that one for validation, every 400-600 K frame (shuffled) for testing. Returns the data-config keys."""
    from mlpot.data.readers import read_frames

    frames = read_frames(DATA)
    temperature = np.array([float(f.info["temperature_K"]) for f in frames])
    trajectory = np.array([int(f.info["trajectory"]) for f in frames])
    cold = temperature == 300.0
    held_out = max(trajectory[cold])
    indices = {"train": np.flatnonzero(cold & (trajectory != held_out)),
               "val": np.flatnonzero(cold & (trajectory == held_out)),
               "test": np.random.default_rng(seed).permutation(np.flatnonzero(~cold))}
    out.mkdir(parents=True, exist_ok=True)
    keys = {}
    for name, values in indices.items():
        path = out / f"{name}_indices.txt"
        path.write_text("\n".join(str(int(k)) for k in values) + "\n")
        keys[f"{name}_indices"] = str(path)
    return keys


def train_parent(out: Path, epochs: int, test_fraction: float, data: str = "random") -> Path:
    """The parent model file (trained once, then reused): on a random ``1 - test_fraction`` of the frames
    (``data="random"``) or on the 300 K frames only (``data="300K"``)."""
    from mlpot.train import TrainConfig, train

    model_path = out / "model.pt"
    if model_path.exists():
        return model_path
    split = {"val_fraction": 0.05, "test_fraction": test_fraction} if data == "random" else low_temperature_split(out)
    config = TrainConfig.from_dict({
        "data": {"files": [str(DATA)], **split},
        "model": {"arch": "egnn", "cutoff": 5.0, "hyperparameters": {"hidden": 16, "num_layers": 2}},
        "training": {"epochs": epochs, "early_stopping_patience": None, "device": "cpu", "threads": 1},
        "out": str(out),
    })
    return train(config, quiet=True).model_path


def test_graphs(model_path: Path, data: Path = DATA):
    """The parent's test split of the frames of ``data`` (default: ethanol's), as graphs."""
    from mlpot.data import frames_to_graphs
    from mlpot.data.readers import read_frames
    from mlpot.deploy import read_metadata
    from mlpot.stable.evaluation import training_split

    frames = read_frames(data)
    metadata = read_metadata(model_path)
    split = training_split(metadata, data, len(frames))
    return frames_to_graphs([frames[k] for k in split["test"]], metadata["cutoff"])


def measure(model_path: Path, graphs, replicas: int, time_ps: float, timestep_fs: float, seed: int,
            system: str = "ethanol", temperature_K: float = 500.0, reference_path: Path | None = None) -> dict:
    """Stability (Langevin at ``temperature_K``, 0.5 Å) and test force MAE of a model file; replicas start from
    ``system``'s reference frames, or ``reference_path``'s, whose h(r) is the reference."""
    from mlpot.stable.energy_force import force_errors
    from mlpot.stable.evaluation import StabilitySettings, measure_model_file_stability
    from mlpot.stable.parent import load_parent

    settings = StabilitySettings(replicas=replicas, time_ps=time_ps, temperature_K=temperature_K,
                                 timestep_fs=timestep_fs, seed=seed)
    result = measure_model_file_stability(model_path, system, settings, reference_path=reference_path)
    errors = force_errors(load_parent(model_path).model, graphs).result()
    return {
        "model": str(model_path), "timestep_fs": timestep_fs,
        "time_to_instability_ps": {"mean": result.mean_ps, "std": result.std_ps,
                                   "median": float(np.median(result.times_to_instability_ps)),
                                   "per_replica": result.times_to_instability_ps},
        "stable_fraction": 1.0 - float(np.mean(result.became_unstable)),
        "distance_histogram_mae": result.distance_histogram_mae,
        "test_forces_mae_meV_A": errors["forces_mae"], "test_energy_per_atom_mae_meV": errors["energy_per_atom_mae"],
        "unstable_fraction_curve": {"time_ps": result.check_times_ps, "fraction": result.unstable_fraction},
        "seconds": round(result.seconds, 1), "ms_per_step": round(1e3 * result.seconds_per_step, 2),
    }


def run_stable(parent: Path, out: Path, seed: int = 0, data: dict | None = None):
    """StABlE at its defaults from ``parent`` (``data``: the config's data section, default ethanol's)."""
    from mlpot.stable.config import StableConfig
    from mlpot.stable.trainer import stable_train

    config = StableConfig.from_dict({"parent": str(parent), "out": str(out), "run": {"threads": 1, "seed": seed},
                                     **({"data": data} if data else {})})
    return stable_train(config, resume=(out / "checkpoint.pt").exists(), quiet=True), config


def energy_force_control(parent: Path, out: Path, steps: int, config, data: Path = DATA) -> Path:
    """The parent fine-tuned by ``steps`` plain energy/force steps with StABlE's optimiser settings on the
    training split of ``data``."""
    from mlpot.data import frames_to_graphs
    from mlpot.data.readers import read_frames
    from mlpot.deploy import save_model
    from mlpot.stable.energy_force import backward_energy_force_loss, refit_energy_references
    from mlpot.stable.evaluation import training_split
    from mlpot.stable.parent import load_parent
    from mlpot.train.loss import LossWeights

    path = out / "model.pt"
    if path.exists():
        return path
    learning = config.learning
    loaded = load_parent(parent)
    frames = read_frames(data)
    split = training_split({"provenance": loaded.provenance}, data, len(frames))
    graphs = frames_to_graphs([frames[k] for k in split["train"]], loaded.description["cutoff"])
    training = loaded.provenance["training"]["config"]["training"]
    weights = LossWeights(energy=training["energy_weight"], forces=training["forces_weight"], kind=training["loss"])
    model = loaded.model
    optimizer = torch.optim.Adam(model.parameters(), lr=learning.lr)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        chosen = rng.choice(len(graphs), min(learning.qm_frames_per_step or len(graphs), len(graphs)), replace=False)
        frames_of_step = [graphs[k] for k in chosen]
        backward_energy_force_loss(model, frames_of_step, weights, learning.energy_force_weight, learning.qm_batch_size)
        torch.nn.utils.clip_grad_norm_(model.parameters(), learning.grad_clip or math.inf)
        optimizer.step()
        if learning.refit_energy_references:
            refit_energy_references(model, frames_of_step, learning.qm_batch_size)
    provenance = dict(loaded.provenance)
    provenance["energy_force_control"] = {"parent_sha256": loaded.sha256, "steps": steps, "lr": learning.lr}
    save_model(model.eval(), loaded.description, path, provenance=provenance)
    return path


def unit_costs(log_csv: Path) -> dict:
    """Mean wall seconds of a simulation segment and of a learning step, from the run's log (``wall_s`` is
    the run's elapsed time when a row's unit started)."""
    import csv

    rows = list(csv.DictReader(open(log_csv)))
    durations = {"simulate": [], "learn": []}
    for row, following in zip(rows, rows[1:]):
        durations[row["phase"]].append(float(following["wall_s"]) - float(row["wall_s"]))
    return {f"seconds_per_{'segment' if k == 'simulate' else 'learning_step'}": round(float(np.mean(v)), 2)
            for k, v in durations.items() if v}


def table(rows: dict) -> str:
    lines = ["| model | time to instability (ps), mean ± std | median | stable replicas | h(r) MAE "
             "| test force MAE (meV/Å) | test energy MAE (meV/atom) |",
             "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        t = row["time_to_instability_ps"]
        mae = "n/a" if row["distance_histogram_mae"] is None else f"{row['distance_histogram_mae']:.3f}"
        lines.append(f"| {name} | {t['mean']:.2f} ± {t['std']:.2f} | {t['median']:.2f} | "
                     f"{row['stable_fraction']:.0%} | "
                     f"{mae} | {row['test_forces_mae_meV_A']:.1f} | {row['test_energy_per_atom_mae_meV']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="working folder (default: runs/stable_ethanol/<parent settings>)")
    parser.add_argument("--parent-data", choices=("random", "300K"), default="random",
                        help="the parent's training frames: random ones (random, default) or the 300 K "
                             "trajectories only (300K; tested on the 400-600 K frames)")
    parser.add_argument("--parent-epochs", type=int, default=300, help="epochs of the parent (default 300)")
    parser.add_argument("--parent-test-fraction", type=float, default=0.94,
                        help="with --parent-data random: fraction of the 1044 frames held out as test; 5%% are "
                             "validation, the rest training (default 0.94: 11 training frames)")
    parser.add_argument("--eval-replicas", type=int, default=16, help="Langevin replicas per measurement (default 16)")
    parser.add_argument("--eval-time", type=float, default=5.0, help="ps per measurement (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="random stream of the evaluation (default 0)")
    parser.add_argument("--stable-seed", type=int, default=0,
                        help="run.seed of the StABlE run (start frames, velocities, DFT frames per step; default 0)")
    parser.add_argument("--results", default=str(RESULTS), help="JSON to write")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out) if args.out else ROOT / "runs" / "stable_ethanol" / (
        f"{args.parent_data}-{args.parent_test_fraction if args.parent_data == 'random' else ''}-{args.parent_epochs}")
    started = time.perf_counter()
    timings = {}

    def timed(name, function, *arguments):
        t0 = time.perf_counter()
        value = function(*arguments)
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {timings[name]:.0f} s", flush=True)
        return value

    parent = timed("train parent", train_parent, out / "parent", args.parent_epochs, args.parent_test_fraction,
                   args.parent_data)
    graphs = test_graphs(parent)
    evaluate = lambda path, dt=0.5: measure(path, graphs, args.eval_replicas, args.eval_time, dt, args.seed)  # noqa: E731
    rows = {"parent": timed("measure parent", evaluate, parent)}
    suffix = f"_seed{args.stable_seed}" if args.stable_seed else ""
    stable, config = timed("StABlE", run_stable, parent, out / f"stable{suffix}", args.stable_seed)
    rows["after StABlE"] = timed("measure StABlE", evaluate, stable.model_path)
    # the control gets as many plain steps as the exported (selected) model had learning steps
    control_steps = stable.metrics.get("selected_learning_steps", stable.learning_steps)
    control = timed("energy/force control", energy_force_control, parent, out / f"energy_force{suffix}", control_steps,
                    config)
    rows[f"control: {control_steps} energy/force steps"] = timed("measure control", evaluate, control)
    rows["control: parent at 0.25 fs"] = timed("measure half time step", evaluate, parent, 0.25)

    before, after = rows["parent"], rows["after StABlE"]
    acceptance = {
        "stability_ratio": after["time_to_instability_ps"]["mean"] / before["time_to_instability_ps"]["mean"],
        "distance_histogram_mae_lower": (after["distance_histogram_mae"] is not None
                                         and before["distance_histogram_mae"] is not None
                                         and after["distance_histogram_mae"] < before["distance_histogram_mae"]),
        "force_mae_change": after["test_forces_mae_meV_A"] / before["test_forces_mae_meV_A"] - 1.0,
    }
    acceptance["passed"] = (acceptance["stability_ratio"] >= 5.0 and acceptance["distance_histogram_mae_lower"]
                            and abs(acceptance["force_mae_change"]) <= 0.2)
    result = {
        "benchmark": "stable_ethanol",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform()},
        "parent": {"data": args.parent_data, "epochs": args.parent_epochs,
                   "test_fraction": args.parent_test_fraction if args.parent_data == "random" else None},
        "evaluation": {"integrator": "Langevin BAOAB, friction 1/ps", "temperature_K": 500.0, "threshold_A": 0.5,
                       "replicas": args.eval_replicas, "time_ps": args.eval_time, "seed": args.seed,
                       "start_frames": "the parent's test split"},
        "stable": {"config": config.to_dict(), "cycles": stable.cycles_done, "learning_steps": stable.learning_steps,
                   "wall_s": stable.metrics["wall_s"], "metrics": stable.metrics,
                   "seconds_per_cycle": stable.metrics["wall_s"] / max(stable.cycles_done, 1),
                   **unit_costs(out / f"stable{suffix}" / "log.csv")},
        "models": rows, "acceptance": acceptance, "timings_s": timings,
        "total_minutes": round((time.perf_counter() - started) / 60.0, 1),
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=1))
    print(table(rows))
    print(f"stability x{acceptance['stability_ratio']:.1f}, "
          f"h(r) MAE lower: {acceptance['distance_histogram_mae_lower']}, "
          f"force MAE change {acceptance['force_mae_change']:+.0%}; StABlE {stable.cycles_done} cycles, "
          f"{stable.learning_steps} learning steps, {stable.metrics['wall_s'] / 60:.1f} min; wrote {args.results}")


if __name__ == "__main__":
    main()

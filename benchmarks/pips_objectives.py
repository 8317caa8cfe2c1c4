"""PICE against the log-variance objective with a replay buffer, at equal wall time.

Both objectives train the same system from the same seed and settings (the system's defaults,
``mlpot/pips/molecular/peptides.py``; for log-variance also ``--log-variance-set`` keys), iterations
interleaved (PICE, log-variance, PICE, ...) so that a shared machine's load hits both alike, each
until it has spent ``--minutes`` of its own wall time in training iterations. Then, for each:

- THP of ``--eval-paths`` fresh paths of the averaged policy (same seed for both): by the target
  basin (``thp``) and by the published 0.75-rad (φ, ψ) criterion (``thp_literature``, the report's
  literature THP), ETS and ETS − E₀ over the hits of either test (kJ/mol);
- ESS: of the training batches (mean over the last 10 iterations) and of the evaluation paths
  under their exact PICE weights (the averaged policy as sampler);
- gradient variance: the objective's gradient on ``--gradient-batches`` fresh batches of the
  training size from the current policy (log-variance: on those paths alone, no buffer), reported
  as the relative variance E|g − ḡ|² / |ḡ|² (noise over signal; comparable across objectives) and |ḡ|.

    python benchmarks/pips_objectives.py --minutes 3                # alanine dipeptide, 3 + 3 minutes
    python benchmarks/pips_objectives.py --minutes 30 --log-variance-set replay_updates=4
    python benchmarks/pips_objectives.py --minutes 30 --runs runs/objectives --out results/pips_objectives_30min.json

Writes ``benchmarks/results/pips_objectives.json`` and prints a markdown table. Short runs on a
loaded machine say little about the end of training; the JSON records the load average.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
import yaml

from mlpot.pips.cost import path_cost
from mlpot.pips.runs import new_run
from mlpot.pips.weights import effective_sample_size, importance_weights

OBJECTIVES = ("pice", "log-variance")


def gradient_statistics(trainer, n_batches: int, seed: int) -> dict:
    """Relative variance and norm of the mean of the objective's gradient over fresh batches."""
    gradients = []
    for batch in range(n_batches):
        rollout, _ = trainer.rollout(generator=torch.Generator().manual_seed(seed + batch))
        gradients.append(trainer.objective_gradient(rollout))
    stacked = torch.stack(gradients)
    mean = stacked.mean(dim=0)
    spread = float(((stacked - mean) ** 2).sum(dim=1).mean())
    return {"relative_gradient_variance": spread / float((mean * mean).sum()),
            "mean_gradient_norm": float(mean.norm()), "gradient_batches": n_batches}


def evaluation_ess(trainer, rollout) -> float:
    """ESS (count) of fresh paths under their exact PICE weights."""
    cost = path_cost(trainer.terminal_cost(rollout), rollout.controls, rollout.noises, rollout.timestep,
                     trainer.control_weight, trainer.config.lam).total
    finite = rollout.finite_paths() & torch.isfinite(cost)
    return effective_sample_size(importance_weights(torch.where(finite, cost, torch.inf))).count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", default="alanine-dipeptide")
    parser.add_argument("--minutes", type=float, default=3.0, help="training wall time per objective")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-paths", type=int, default=64)
    parser.add_argument("--eval-seed", type=int, default=1)
    parser.add_argument("--gradient-batches", type=int, default=4)
    parser.add_argument("--log-variance-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting of the log-variance run only, value read as YAML")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=100_000,
                        help="iteration cap of both runs (default: so many that --minutes decides)")
    parser.add_argument("--runs", default=None, help="keep both runs, resumable and exportable, in RUNS/pice and "
                                                     "RUNS/log-variance (default: not kept)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pips_objectives.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    extra = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.log_variance_set)}
    trainers = {objective: new_run(args.system, None if args.runs is None else Path(args.runs) / objective,
                                   seed=args.seed, objective=objective, iterations=args.iterations,
                                   **(extra if objective == "log-variance" else {})) for objective in OBJECTIVES}
    spent = {objective: 0.0 for objective in OBJECTIVES}
    budget = 60.0 * args.minutes
    while any(spent[o] < budget and trainers[o].iteration < trainers[o].config.iterations for o in OBJECTIVES):
        for objective, trainer in trainers.items():
            if spent[objective] < budget and trainer.iteration < trainer.config.iterations:
                started = time.perf_counter()
                trainer.step()
                spent[objective] += time.perf_counter() - started

    results = []
    for objective, trainer in trainers.items():
        evaluation = trainer.evaluate(args.eval_paths, seed=args.eval_seed)
        metrics, log = evaluation.metrics, trainer.log
        recent = log[-10:]
        results.append({
            "objective": objective, "iterations": trainer.iteration, "training_seconds": spent[objective],
            "settings": {key: value for key, value in trainer.config.to_dict().items()
                         if key in ("objective", "replay_iterations", "replay_batch", "replay_updates", "lr",
                                    "n_paths", "n_steps", "lam")},
            "thp": metrics["thp"], "thp_literature": metrics["thp_literature"],
            "ets_kj_mol": metrics["ets_kj_mol"], "ets_relative_kj_mol": metrics["ets_relative_kj_mol"],
            "ets_literature_relative_kj_mol": metrics["ets_literature_relative_kj_mol"],
            "rmsd_A": metrics["rmsd_A"],
            "training_ess_last10": sum(row["ess"] for row in recent) / len(recent),
            "training_thp_last10": sum(row["thp"] for row in recent) / len(recent),
            "evaluation_ess": evaluation_ess(trainer, evaluation.rollout),
            **gradient_statistics(trainer, args.gradient_batches, seed=10_000 + args.seed),
        })

    def cell(value, form):
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else form.format(value)

    print(f"{args.system}, {args.minutes:g} min of training each, {args.eval_paths} evaluation paths")
    print("| objective | iterations | THP | THP lit. | ETS − E₀ kJ/mol | ETS lit. − E₀ | ESS train (last 10) | "
          "ESS eval | rel. grad. variance | |ḡ| |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['objective']} | {r['iterations']} | {cell(r['thp'], '{:.2f}')} | "
              f"{cell(r['thp_literature'], '{:.2f}')} | {cell(r['ets_relative_kj_mol'], '{:.1f}')} | "
              f"{cell(r['ets_literature_relative_kj_mol'], '{:.1f}')} | "
              f"{r['training_ess_last10']:.1f} / {r['settings']['n_paths']} | {r['evaluation_ess']:.1f} / "
              f"{args.eval_paths} | {r['relative_gradient_variance']:.2f} | {r['mean_gradient_norm']:.3g} |")
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(), "threads": args.threads,
        "load_average_1min": os.getloadavg()[0], "system": args.system, "minutes_per_objective": args.minutes,
        "eval_paths": args.eval_paths, "eval_seed": args.eval_seed, "seed": args.seed,
        "results": [{key: (None if isinstance(value, float) and math.isnan(value) else value)
                     for key, value in r.items()} for r in results],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()

"""PIPS cost per training iteration on alanine dipeptide, and where the time goes.

One iteration is exactly ``MolecularTrainer.step``: 16 controlled rollouts × 500 steps of 1 fs in
OpenMM (16 replicas in one Context, CPU platform), path costs, weights, the PICE surrogate loss
over all 8000 recorded states (one batched forward + backward), Adam and EMA updates, checkpoint
skipped. Reported: seconds per iteration and per path, and the rollout's split into time inside
OpenMM (step, getState, setting the control force), inside the policy, and the rest (Python,
numpy/torch conversions, noise, records). For comparison, the same 16 × 500 uncontrolled steps
with one Context per replica (the reference code's layout) are timed too.

    python benchmarks/pips_speed.py                     # both policies, 3 iterations each
    python benchmarks/pips_speed.py --iterations 5 --threads 1

Writes ``benchmarks/results/pips_speed.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def separate_contexts_seconds(n_paths: int, n_steps: int, threads: int) -> float:
    """Wall seconds for ``n_steps`` uncontrolled steps of ``n_paths`` single-replica Contexts, with
    the per-step work of a rollout (set the control force, step, read positions and velocities)."""
    from mlpot.pips.molecular_trainer import MolecularTrainConfig, PS_PER_FS
    from mlpot.pips.openmm_integrator import langevin_settings
    from mlpot.pips.openmm_rollout import ReplicaRunner
    from mlpot.pips.peptides import peptide_transition
    from mlpot.pips.replicas import build_replica_system

    config = MolecularTrainConfig()
    topology, start_nm, _ = peptide_transition(config.system).load()
    settings = langevin_settings(config.timestep_fs * PS_PER_FS, config.friction_per_ps, config.temperature_K)
    runners = [ReplicaRunner(build_replica_system(topology, start_nm, 1), settings, "CPU", threads)
               for _ in range(n_paths)]
    zero = np.zeros((start_nm.shape[0], 3))
    started = time.perf_counter()
    for runner in runners:
        runner.context.setPositions(start_nm)
        runner.context.setVelocitiesToTemperature(config.temperature_K, 1)
    for _ in range(n_steps):
        for runner in runners:
            runner.integrator.setPerDofVariableByName("control_force", zero)
            runner.integrator.step(1)
            runner.context.getState(getPositions=True, getVelocities=True)
    return time.perf_counter() - started


def measure_policy(policy: str, iterations: int, threads: int) -> dict:
    from mlpot.pips.molecular_trainer import MolecularTrainConfig, MolecularTrainer

    # after the first update the controls are non-zero; their cost does not depend on their values anyway
    trainer = MolecularTrainer(MolecularTrainConfig(policy=policy), threads=threads)
    rows = [trainer.step() for _ in range(iterations + 1)][1:]  # the first includes one-off set-up
    median = {key: statistics.median(row[key] for row in rows)
              for key in ("seconds", "rollout_seconds", "openmm_seconds", "policy_seconds", "python_seconds")}
    n_paths = trainer.config.n_paths
    return {
        "policy": policy, "n_paths": n_paths, "n_steps": trainer.config.n_steps, "iterations_timed": iterations,
        "seconds_per_iteration": median["seconds"], "seconds_per_path": median["seconds"] / n_paths,
        "rollout_seconds": median["rollout_seconds"],
        "loss_and_update_seconds": median["seconds"] - median["rollout_seconds"],
        "rollout_fraction_openmm": median["openmm_seconds"] / median["rollout_seconds"],
        "rollout_fraction_policy": median["policy_seconds"] / median["rollout_seconds"],
        "rollout_fraction_python": median["python_seconds"] / median["rollout_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenMM CPU threads (default 1)")
    parser.add_argument("--policies", nargs="+", default=["distance-energy", "aligned-force"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pips_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = [measure_policy(policy, args.iterations, args.threads) for policy in args.policies]
    separate = separate_contexts_seconds(16, 500, args.threads)
    print("| system | policy | paths × steps | s / iteration | s / path | rollout s | loss+update s | "
          "OpenMM | policy | Python |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| alanine-dipeptide | {r['policy']} | {r['n_paths']} × {r['n_steps']} | "
              f"{r['seconds_per_iteration']:.2f} | {r['seconds_per_path']:.3f} | {r['rollout_seconds']:.2f} | "
              f"{r['loss_and_update_seconds']:.2f} | {r['rollout_fraction_openmm']:.0%} | "
              f"{r['rollout_fraction_policy']:.0%} | {r['rollout_fraction_python']:.0%} |")
    print(f"\n16 × 500 uncontrolled steps in 16 separate Contexts (step + set force + getState): {separate:.2f} s")
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(), "threads": args.threads,
        "results": results, "separate_contexts_16x500_seconds": separate,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

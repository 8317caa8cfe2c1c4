"""PIPS cost per training iteration, per molecular system, and where the time goes.

One iteration is exactly ``MolecularTrainer.step`` with the system's default batch
(``run_defaults`` in ``mlpot/pips/molecular/peptides.py``; alanine dipeptide 16 × 500 steps, polyproline
16 × 1000, chignolin 8 × 1000, all 1 fs, CPU platform): controlled rollouts in OpenMM, path costs,
weights, the PICE surrogate loss over all recorded states (one batched forward + backward), Adam
and EMA updates, checkpoint skipped. Every system runs in its default replica layout and solvent
(``run_defaults``: alanine dipeptide in vacuum, all copies in one Context; polyproline and chignolin in
OBC2 implicit solvent as OpenMM's native ``GBSAOBCForce``, the single-copy System stepped replica by replica, no
cutoff: ``mlpot/pips/molecular/implicit_solvent.py``, ``mlpot/pips/molecular/replicas.py``).
``--layouts one-context single-copy`` times both layouts and ``--solvents gbn2 obc2`` both
implicit solvents, iterations interleaved (A, B, A, B, ...) so that a shared machine's load hits
all alike. ``--n-paths`` overrides the system's batch size. Reported: seconds
per iteration and per path, and the rollout's split into time inside OpenMM (step, getState,
setting the control force), inside the policy, and the rest (Python, numpy/torch conversions,
noise, records). For alanine dipeptide the same 16 × 500 uncontrolled steps are also timed with
the single-copy layout (ours for implicit solvent; until 2026-12 one Context per replica, the reference code's
layout).

    python benchmarks/pips_speed.py                                   # alanine dipeptide, both policies
    python benchmarks/pips_speed.py --systems polyproline --iterations 2
    python benchmarks/pips_speed.py --systems chignolin --policies aligned-force --iterations 1 --warmup 0
    python benchmarks/pips_speed.py --systems polyproline chignolin --policies aligned-force --n-paths 16 \
        --layouts one-context single-copy --iterations 1
    python benchmarks/pips_speed.py --systems polyproline chignolin --policies aligned-force --n-paths 16 \
        --solvents gbn2 obc2 --layouts one-context single-copy --iterations 2
    python benchmarks/pips_speed.py --systems polyproline chignolin --policies aligned-force --n-paths 16 \
        --slow-force-intervals 1 2 --iterations 2                      # r-RESPA: non-bonded every 2nd step
    python benchmarks/pips_speed.py --policies aligned-force \
        --potentials systems/alanine-dipeptide/model_xtb.pt model_xtb.pt2 --iterations 2   # learned potential

Updates ``benchmarks/results/pips_speed.json`` (the entries of the systems and policies measured
are replaced, the others kept) and prints a markdown table of what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform as host
import statistics
from pathlib import Path

import torch


def single_copy_seconds(n_paths: int, n_steps: int, threads: int) -> float:
    """Wall seconds of an uncontrolled alanine-dipeptide rollout of ``n_paths`` × ``n_steps`` in the single-copy
    layout (:class:`SingleCopyRunner` on the vacuum System)."""
    import torch

    from mlpot.pips.molecular.integrator import langevin_settings
    from mlpot.pips.molecular.peptides import peptide_transition
    from mlpot.pips.molecular.replicas import SeparateReplicas, build_replica_system
    from mlpot.pips.molecular.rollout import SingleCopyRunner
    from mlpot.pips.molecular.trainer import PS_PER_FS, MolecularTrainConfig

    config = MolecularTrainConfig(system="alanine-dipeptide")
    topology, start_nm, _ = peptide_transition(config.system).load()
    settings = langevin_settings(config.timestep_fs * PS_PER_FS, config.friction_per_ps, config.temperature_K)
    single = build_replica_system(topology, start_nm, 1)
    replicas = SeparateReplicas(single_system=single.single_system, topology=topology, n_copies=n_paths,
                                n_atoms=single.n_atoms, masses_amu=single.masses_amu)
    runner = SingleCopyRunner(replicas, settings, "CPU", threads)
    result = runner.run(lambda x, v, t: torch.zeros_like(x), start_nm, n_steps, torch.Generator().manual_seed(0))
    return result.timings.total


def trainer_with_layout(system: str, policy: str, threads: int, layout: str | None, n_paths: int | None = None,
                        solvent: str | None = None, potential: str | None = None, platform: str = "auto",
                        slow_force_interval: int | None = None, network_dtype: str | None = None):
    """A :class:`MolecularTrainer` with the system's default batch (``n_paths`` if given) whose
    rollouts run in replica ``layout``, in implicit ``solvent`` (None: the system's default for either)."""
    from mlpot.pips.molecular.peptides import peptide_transition
    from mlpot.pips.molecular.trainer import MolecularTrainConfig, MolecularTrainer

    defaults = dict(peptide_transition(system).run_defaults)
    if n_paths is not None:
        defaults["n_paths"] = n_paths
    if layout is not None:
        defaults["replica_layout"] = layout
    if solvent is not None:
        defaults["implicit_solvent"] = solvent
    if slow_force_interval is not None:
        defaults["slow_force_interval"] = slow_force_interval
    if network_dtype is not None:
        defaults["network_dtype"] = network_dtype
    return MolecularTrainer(MolecularTrainConfig(system=system, policy=policy, potential=potential, **defaults),
                            platform=platform, threads=threads)


def measure(system: str, policy: str, iterations: int, threads: int, warmup: int = 1,
            layouts=(None,), n_paths: int | None = None, solvents=(None,), potentials=(None,),
            platforms=("auto",), intervals=(None,), network_dtypes=(None,)) -> list[dict]:
    """One result per (potential, solvent, layout, platform, slow-force interval, network dtype); their iterations
    interleaved, so load hits all alike."""
    # after the first update the controls are non-zero (their cost does not depend on their values anyway)
    trainers = [trainer_with_layout(system, policy, threads, layout, n_paths, solvent, potential, platform, interval,
                                    network_dtype)
                for potential in potentials for solvent in solvents for layout in layouts for platform in platforms
                for interval in intervals for network_dtype in network_dtypes]
    rows = [[] for _ in trainers]
    for _ in range(iterations + warmup):
        for trainer_rows, trainer in zip(rows, trainers):
            trainer_rows.append(trainer.step())
    return [summary(system, policy, trainer, trainer_rows[warmup:], iterations, warmup)  # the first: one-off set-up
            for trainer, trainer_rows in zip(trainers, rows)]


def summary(system: str, policy: str, trainer, rows: list, iterations: int, warmup: int) -> dict:
    median = {key: statistics.median(row[key] for row in rows)
              for key in ("seconds", "rollout_seconds", "openmm_seconds", "policy_seconds", "python_seconds")}
    n_paths, n_steps = trainer.config.n_paths, trainer.config.n_steps
    return {
        "system": system, "policy": policy, "layout": type(trainer.runner(n_paths)).__name__,
        "platform": trainer.runner(n_paths).platform_choice.name,
        "forcefield": (" + ".join(trainer.forcefield_files) if trainer.potential is None
                       else f"mlpot model {trainer.potential.name}"),
        "n_atoms": trainer.topology.getNumAtoms(), "n_paths": n_paths, "n_steps": n_steps,
        "slow_force_interval": trainer.config.slow_force_interval, "network_dtype": trainer.config.network_dtype,
        "iterations_timed": iterations, "warmup_iterations": warmup,
        "seconds_per_iteration": median["seconds"], "seconds_per_path": median["seconds"] / n_paths,
        "ms_per_replica_step": 1e3 * median["rollout_seconds"] / (n_paths * n_steps),
        "rollout_seconds": median["rollout_seconds"],
        "loss_and_update_seconds": median["seconds"] - median["rollout_seconds"],
        "rollout_fraction_openmm": median["openmm_seconds"] / median["rollout_seconds"],
        "rollout_fraction_policy": median["policy_seconds"] / median["rollout_seconds"],
        "rollout_fraction_python": median["python_seconds"] / median["rollout_seconds"],
    }


def _key(result: dict) -> tuple:
    """What a result measured: system, policy, layout, batch and force field (older records: default layout and
    the system's force field)."""
    return (result.get("system", "alanine-dipeptide"), result["policy"], result.get("layout"), result.get("n_paths"),
            result.get("forcefield"), result.get("platform", "CPU"), result.get("slow_force_interval", 1),
            result.get("network_dtype", "float64"))


def _layout_ratios(results: list[dict]) -> list[dict]:
    """Seconds per iteration of the single-copy layout over one-context, where both were timed together."""
    by_key = {(r["system"], r["policy"], r["n_paths"], r.get("forcefield"), r["layout"]): r for r in results}
    ratios = []
    for (system, policy, n_paths, forcefield, layout), result in by_key.items():
        other = by_key.get((system, policy, n_paths, forcefield, "SingleCopyRunner"))
        if layout == "OneContextRunner" and other is not None:
            ratios.append({"system": system, "policy": policy, "n_paths": n_paths, "forcefield": forcefield,
                           "per_replica_over_one_context":
                               other["seconds_per_iteration"] / result["seconds_per_iteration"]})
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed iterations first (default 1; the first one builds the Contexts)")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenMM CPU threads (default 1)")
    parser.add_argument("--systems", nargs="+", default=["alanine-dipeptide"],
                        help="alanine-dipeptide, polyproline, chignolin (default alanine-dipeptide)")
    parser.add_argument("--policies", nargs="+", default=["distance-energy", "aligned-force"])
    parser.add_argument("--layouts", nargs="+", default=[None],
                        help="replica layouts to time, interleaved: one-context, single-copy (default: the "
                             "system's)")
    parser.add_argument("--n-paths", type=int, default=None, help="paths per iteration (default: the system's)")
    parser.add_argument("--potentials", nargs="+", default=[None],
                        help="mlpot model files (.pt: TorchForce, .pt2: PythonForce) as the physics, timed "
                             "interleaved (default: the force field)")
    parser.add_argument("--solvents", nargs="+", default=[None],
                        help="implicit solvents to time: gbn2, obc2 (native GBSAOBCForce), vacuum (default: the "
                             "system's)")
    parser.add_argument("--platforms", nargs="+", default=["auto"],
                        help="OpenMM platforms to time, interleaved: CPU, Reference, CUDA, ... (default auto: the "
                             "fastest one for the replicas, timed at start-up)")
    parser.add_argument("--slow-force-intervals", type=int, nargs="+", default=[None],
                        help="non-bonded forces every n-th step (r-RESPA), timed interleaved, e.g. 1 2 (default: the "
                             "system's)")
    parser.add_argument("--network-dtypes", nargs="+", default=[None],
                        help="policy network dtypes to time, interleaved: float64 float32 (default: the system's)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pips_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = [result for system in args.systems for policy in args.policies
               for result in measure(system, policy, args.iterations, args.threads, args.warmup, args.layouts,
                                     args.n_paths, args.solvents, args.potentials, args.platforms,
                                     args.slow_force_intervals, args.network_dtypes)]
    print("| system | force field | policy | network | replicas | platform | slow forces every | paths × steps | "
          "s / iteration | "
          "s / path | ms / replica-step | rollout s | loss+update s | OpenMM | policy | Python |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['system']} ({r['n_atoms']} atoms) | {r['forcefield']} | {r['policy']} | {r['network_dtype']} | "
              f"{r['layout']} | "
              f"{r['platform']} | {r['slow_force_interval']} | {r['n_paths']} × {r['n_steps']} | "
              f"{r['seconds_per_iteration']:.2f} | {r['seconds_per_path']:.3f} | {r['ms_per_replica_step']:.2f} | "
              f"{r['rollout_seconds']:.2f} | {r['loss_and_update_seconds']:.2f} | {r['rollout_fraction_openmm']:.0%} | "
              f"{r['rollout_fraction_policy']:.0%} | {r['rollout_fraction_python']:.0%} |")
    for r in results:
        r["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        r["load_average_1min"] = os.getloadavg()[0]
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.exists() else {}
    measured = {_key(r) for r in results}
    kept = [r for r in record.get("results", []) if _key(r) not in measured]
    ratios = _layout_ratios(results)
    for ratio in ratios:
        print(f"{ratio['system']} {ratio['policy']} {ratio['n_paths']} paths: single-copy / one-context "
              f"= {ratio['per_replica_over_one_context']:.2f} (s per iteration, same run, interleaved)")
    record.update({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": host.processor() or host.machine(), "threads": args.threads,
        "load_average_1min": os.getloadavg()[0], "results": kept + results,
    })
    if ratios:
        record["layout_ratios"] = [ratio for ratio in record.get("layout_ratios", [])
                                   if (ratio["system"], ratio["policy"], ratio["n_paths"]) not in
                                   {(r["system"], r["policy"], r["n_paths"]) for r in ratios}] + ratios
    if "alanine-dipeptide" in args.systems:
        single_copy = single_copy_seconds(16, 500, args.threads)
        print(f"\nalanine dipeptide, 16 × 500 uncontrolled steps, single-copy layout: {single_copy:.2f} s")
        record["single_copy_16x500_seconds"] = single_copy
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()

"""Does r-RESPA (non-bonded forces every n-th step) keep the peptides' equilibrium, and what does it save?

Unbiased (zero-control) Langevin dynamics of the implicit-solvent peptides in their PIPS set-up (OBC2 as
OpenMM's native ``GBSAOBCForce``, the single-copy layout, 1 fs, 300 K, friction 1/ps), run with
``slow_force_interval`` 1 (every force every step: the exact integrator) and each n asked for, with the same
seed (the same start velocities and kicks), one after the other. Reported per n, over
``--paths`` replicas × ``--steps`` steps after ``--discard`` steps of relaxation from the minimised start:

- the kinetic temperature (K) from the velocities the policy sees (3N degrees of freedom, no constraints);
- the mean potential energy (kJ/mol, every 20th frame, the NoCutoff single-copy System), and its standard
  error over the replicas;
- their paired differences from the first interval asked for (per replica, same seed; mean ± standard error);
- wall milliseconds per replica-step of the rollout (the integrator plus the rollout loop, 1 thread; a quiet
  machine's numbers come from ``benchmarks/pips_speed.py --slow-force-intervals``).

    python benchmarks/pips_mts.py --steps 8000 --discard 3000     # chignolin and polyproline, n = 1, 2, 3
    python benchmarks/pips_mts.py --systems chignolin --intervals 1 2 --steps 3000

Writes ``benchmarks/results/pips_mts.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import numpy as np
import torch


def runner_for(system: str, interval: int, n_paths: int):
    from mlpot.pips.molecular.peptides import peptide_transition
    from mlpot.pips.molecular.trainer import MolecularTrainConfig, MolecularTrainer

    defaults = dict(peptide_transition(system).run_defaults)
    defaults.update(n_paths=n_paths, slow_force_interval=interval)
    trainer = MolecularTrainer(MolecularTrainConfig(system=system, **defaults), platform="auto", threads=1)
    return trainer, trainer.runner(n_paths)


def measure(system: str, intervals: list[int], n_paths: int, n_steps: int, discard: int, seed: int) -> list[dict]:
    from mlpot.pips.molecular.integrator import MOLAR_GAS_CONSTANT_KJ_PER_MOL_PER_K
    from mlpot.pips.molecular.replicas import potential_energies_kj_mol

    setups = [(interval, *runner_for(system, interval, n_paths)) for interval in intervals]
    results = []
    for interval, trainer, runner in setups:  # one after the other, each alone on its core
        zero = lambda x, v, t: torch.zeros_like(x)  # noqa: E731
        outcome = runner.run(zero, trainer.start_nm, n_steps, torch.Generator().manual_seed(seed))
        rollout = outcome.rollout
        masses = runner.mass.numpy()[None, None]  # (1, 1, n_atoms, 1)
        velocities = rollout.control_velocities[:, discard:].numpy()
        n_dof = 3 * runner.replicas.n_atoms
        kT_kj_mol = (masses * velocities ** 2).sum(axis=(2, 3)) / n_dof  # (paths, steps)
        temperature = kT_kj_mol / MOLAR_GAS_CONSTANT_KJ_PER_MOL_PER_K
        frames = rollout.positions[:, discard::20].numpy()
        energies = potential_energies_kj_mol(runner.replicas.single_system, frames, platform="Reference")
        per_path_energy = energies.mean(axis=1)
        per_path_temperature = temperature.mean(axis=1)
        if not results:  # the first interval is the reference of the paired differences (same seed, same kicks)
            reference_energy, reference_temperature = per_path_energy, per_path_temperature
        energy_difference = per_path_energy - reference_energy
        temperature_difference = per_path_temperature - reference_temperature
        results.append({
            "system": system, "slow_force_interval": interval, "n_paths": n_paths, "n_steps": n_steps,
            "discarded_steps": discard, "seed": seed, "dropped_paths": outcome.dropped,
            "temperature_K": float(temperature.mean()),
            "temperature_standard_error_K": float(temperature.mean(axis=1).std(ddof=1) / np.sqrt(n_paths)),
            "potential_energy_kj_mol": float(per_path_energy.mean()),
            "potential_energy_standard_error_kj_mol": float(per_path_energy.std(ddof=1) / np.sqrt(n_paths)),
            "paired_temperature_difference_K": float(temperature_difference.mean()),
            "paired_temperature_difference_standard_error_K": float(temperature_difference.std(ddof=1)
                                                                    / np.sqrt(n_paths)),
            "paired_energy_difference_kj_mol": float(energy_difference.mean()),
            "paired_energy_difference_standard_error_kj_mol": float(energy_difference.std(ddof=1) / np.sqrt(n_paths)),
            "ms_per_replica_step": 1e3 * outcome.timings.total / (n_paths * n_steps),
            "openmm_ms_per_replica_step": 1e3 * outcome.timings.openmm / (n_paths * n_steps),
        })
    return results


def write_results(out: Path, results: list[dict]) -> None:
    """``results`` (rows of one 1-thread measurement) as JSON in ``out``, with the date and the load average."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                               "load_average_1min": os.getloadavg()[0], "threads": 1, "results": results},
                              indent=1) + "\n")
    print(f"written {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["chignolin", "polyproline"])
    parser.add_argument("--intervals", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--paths", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--discard", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pips_mts.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [row for system in args.systems
               for row in measure(system, args.intervals, args.paths, args.steps, args.discard, args.seed)]
    print("| system | non-bonded every | T (K) | ⟨E_pot⟩ kJ/mol | ΔT vs the first (paired) | "
          "ΔE vs the first (paired) | ms / replica-step | OpenMM ms | dropped |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['system']} | {r['slow_force_interval']} | {r['temperature_K']:.1f} ± "
              f"{r['temperature_standard_error_K']:.1f} | {r['potential_energy_kj_mol']:.1f} ± "
              f"{r['potential_energy_standard_error_kj_mol']:.1f} | {r['paired_temperature_difference_K']:+.2f} ± "
              f"{r['paired_temperature_difference_standard_error_K']:.2f} | "
              f"{r['paired_energy_difference_kj_mol']:+.2f} ± "
              f"{r['paired_energy_difference_standard_error_kj_mol']:.2f} | {r['ms_per_replica_step']:.3f} | "
              f"{r['openmm_ms_per_replica_step']:.3f} | {r['dropped_paths']} |")
    write_results(Path(args.out), results)


if __name__ == "__main__":
    main()

"""How large a slow-force interval can r-RESPA take on the PIPS peptides? Energy conservation without a thermostat.

The Langevin check (``benchmarks/pips_mts.py``) compares temperatures and mean energies, which a thermostat keeps
close even when the integrator errs. Without friction, the error of a multiple-time-step splitting shows directly:
the total energy fluctuates more, and drifts once the slow impulses resonate with the fast bond vibrations.

For each peptide in its PIPS set-up (the System of ``mlpot pips train --system NAME``: OBC2 as OpenMM's native
``GBSAOBCForce``, no cutoff, no constraints) the forces are split as the PIPS integrator splits them
(:func:`mlpot.pips.molecular.integrator.split_force_groups`: bonded terms in group 0, everything else in group 1).
Each of ``--replicas`` starts from the run's start structure after 3 ps of Langevin dynamics at 300 K (its own
seed), then runs ``--ps`` picoseconds of NVE with OpenMM's ``MTSIntegrator`` for every interval n: bonded forces
every 1 fs, the rest every n fs (velocity-Verlet impulse r-RESPA: the same splitting and impulses as the PIPS
integrator, without its Langevin step). The total energy is read every ~30 fs. Reported per n, over the replicas:
the drift (slope of a linear fit, kJ/mol/ps; mean ± standard error, and the mean of its magnitude), the RMS
fluctuation of the total energy (kJ/mol), and replicas that blew up (total energy more than
:data:`BLOWN_UP_KJ_MOL` from its first reading, or not finite; left out of the other columns).

``--solvent-intervals m ...`` puts the implicit solvent into a group of its own, every m fs, with Coulomb and
Lennard-Jones every n fs (m a multiple of n): could the solvent, most of a step's cost, take a longer step alone?

    python benchmarks/pips_mts_nve.py                                 # chignolin and polyproline, n = 1 2 3 4
    python benchmarks/pips_mts_nve.py --systems chignolin --intervals 1 2 --replicas 4 --ps 5
    python benchmarks/pips_mts_nve.py --intervals 1 2 --solvent-intervals 1 2 3 4 \
        --out benchmarks/results/pips_mts_nve_solvent.json

Writes ``benchmarks/results/pips_mts_nve.json`` (or ``--out``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import openmm
import torch
from pips_mts import write_results  # the sibling script: one JSON layout for both r-RESPA checks

EQUILIBRATION_STEPS = 3000  # 3 ps of 1 fs Langevin steps at 300 K before each NVE run
ENERGY_EVERY_FS = 30
IMPLICIT_SOLVENT_FORCES = (openmm.GBSAOBCForce, openmm.CustomGBForce)
SOLVENT_GROUP = 2  # the implicit solvent's group when it takes a step of its own (--solvent-intervals)
BLOWN_UP_KJ_MOL = 1000.0  # a replica whose total energy strays further than this from its first reading blew up


def pips_system(system: str) -> tuple[openmm.System, np.ndarray]:
    """The single-copy System a PIPS run of ``system`` integrates (its defaults), forces split, and its start (nm)."""
    from mlpot.pips.molecular.integrator import split_force_groups
    from mlpot.pips.molecular.peptides import peptide_transition
    from mlpot.pips.molecular.trainer import MolecularTrainConfig, MolecularTrainer

    defaults = dict(peptide_transition(system).run_defaults, n_paths=1)
    trainer = MolecularTrainer(MolecularTrainConfig(system=system, **defaults), platform="Reference", threads=1)
    single = trainer.runner(1).replicas.single_system
    split_force_groups(single)
    return single, trainer.start_nm


def energy_trace(system: openmm.System, state: openmm.State, interval: int, picoseconds: float,
                 platform: openmm.Platform, solvent_interval: int | None = None) -> tuple[np.ndarray, float]:
    """Total energy (kJ/mol) every ~:data:`ENERGY_EVERY_FS` fs of NVE r-RESPA from ``state``, and the time between
    readings (ps). ``solvent_interval``: the implicit solvent every that many fs in a group of its own (None: with the
    rest of group 1); the implicit solvent's force group in ``system`` is set accordingly."""
    apart = solvent_interval is not None
    for force in system.getForces():
        if isinstance(force, IMPLICIT_SOLVENT_FORCES):
            force.setForceGroup(SOLVENT_GROUP if apart else 1)
    outer = solvent_interval if apart else interval
    groups = [(0, outer), (1, outer // interval)] + ([(SOLVENT_GROUP, 1)] if apart else [])
    integrator = openmm.MTSIntegrator(outer * 0.001, groups)
    context = openmm.Context(system, integrator, platform, {"Threads": "1"})
    context.setPositions(state.getPositions())
    context.setVelocities(state.getVelocities())
    every = max(1, ENERGY_EVERY_FS // outer)
    energies = []
    for _ in range(int(round(picoseconds * 1000 / outer)) // every):
        integrator.step(every)
        energy = context.getState(getEnergy=True)
        energies.append((energy.getPotentialEnergy() + energy.getKineticEnergy()).value_in_unit(
            openmm.unit.kilojoule_per_mole))
        if not abs(energies[-1] - energies[0]) < BLOWN_UP_KJ_MOL:  # (NaN included)
            break
    return np.asarray(energies), every * outer * 1e-3


def measure(name: str, intervals: list[int], replicas: int, picoseconds: float,
            solvent_intervals: list[int] | None = None) -> list[dict]:
    """One row per scheme: every interval n of ``intervals`` (the solvent with the rest), or with
    ``solvent_intervals`` every nestable pair (n, m), m a multiple of n."""
    system, start_nm = pips_system(name)
    platform = openmm.Platform.getPlatformByName("CPU")
    schemes = [(n, None) for n in intervals] if not solvent_intervals else \
        [(n, m) for n in intervals for m in solvent_intervals if m >= n and m % n == 0]
    traces: dict[tuple, list[tuple[np.ndarray, float]]] = {scheme: [] for scheme in schemes}
    for replica in range(replicas):
        thermostat = openmm.LangevinMiddleIntegrator(300.0, 1.0, 0.001)
        thermostat.setRandomNumberSeed(100 + replica)
        context = openmm.Context(system, thermostat, platform, {"Threads": "1"})
        context.setPositions(start_nm)
        context.setVelocitiesToTemperature(300.0, 100 + replica)
        thermostat.step(EQUILIBRATION_STEPS)
        state = context.getState(getPositions=True, getVelocities=True)
        for scheme in schemes:
            traces[scheme].append(energy_trace(system, state, scheme[0], picoseconds, platform, scheme[1]))
    rows = []
    for interval, solvent_interval in schemes:
        finite = [(trace, every_ps) for trace, every_ps in traces[(interval, solvent_interval)]
                  if (np.abs(trace - trace[0]) < BLOWN_UP_KJ_MOL).all()]
        drifts = np.array([np.polyfit(np.arange(1, len(trace) + 1) * every_ps, trace, 1)[0]
                           for trace, every_ps in finite])
        fluctuations = np.array([trace.std() for trace, _ in finite])
        rows.append({
            "system": name, "slow_force_interval": interval,
            "solvent_interval": interval if solvent_interval is None else solvent_interval,
            "inner_step_fs": 1.0, "replicas": replicas,
            "picoseconds": picoseconds, "blown_up": replicas - len(finite),
            "drift_kj_mol_ps": float(drifts.mean()) if len(drifts) else float("nan"),
            "drift_standard_error_kj_mol_ps": float(drifts.std(ddof=1) / np.sqrt(len(drifts)))
            if len(drifts) > 1 else float("nan"),
            "mean_absolute_drift_kj_mol_ps": float(np.abs(drifts).mean()) if len(drifts) else float("nan"),
            "energy_fluctuation_kj_mol": float(fluctuations.mean()) if len(fluctuations) else float("nan"),
            "per_replica_drift_kj_mol_ps": drifts.tolist(),
            "per_replica_fluctuation_kj_mol": fluctuations.tolist(),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["chignolin", "polyproline"])
    parser.add_argument("--intervals", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--ps", type=float, default=10.0, help="NVE picoseconds per replica and interval")
    parser.add_argument("--solvent-intervals", type=int, nargs="+", default=None,
                        help="the implicit solvent in its own group, every m fs (default: with the non-bonded forces)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pips_mts_nve.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [row for system in args.systems
               for row in measure(system, args.intervals, args.replicas, args.ps, args.solvent_intervals)]
    print("| system | non-bonded every (fs) | solvent every (fs) | drift kJ/mol/ps | mean abs drift | "
          "energy fluctuation kJ/mol | blown up |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['system']} | {r['slow_force_interval']} | {r['solvent_interval']} | {r['drift_kj_mol_ps']:+.3f} ± "
              f"{r['drift_standard_error_kj_mol_ps']:.3f} | {r['mean_absolute_drift_kj_mol_ps']:.3f} | "
              f"{r['energy_fluctuation_kj_mol']:.2f} | {r['blown_up']} of {r['replicas']} |")
    write_results(Path(args.out), results)


if __name__ == "__main__":
    main()

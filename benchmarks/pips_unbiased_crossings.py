"""The energy that *unbiased* dynamics crosses on its way from the start to the target basin.

PIPS's ETS (mean over successful paths of the highest unbiased potential energy along the path)
is to be compared with the same maximum along **unbiased crossing paths**. Plain MD does not
produce them: 16 replicas × 1 ns of unbiased alanine dipeptide (300 K, friction 1/ps, amber14
vacuum, from C5) never reached C7ax (this script's first version; `results/pips_tuning/cross1.log`). So the
crossing paths are made the transition-path-sampling way, by shooting from the barrier:

1. a relaxed scan of φ (C(ACE)–N–CA–C) from the start to the target value, both ways round
   (through φ = 0 and through φ = 180°), restraining φ with a harmonic torsion restraint and
   minimising everything else: the 0 K barrier of each route (kJ/mol);
2. restrained MD at the temperature with φ held at the lower route's barrier value (thermalises
   all other degrees of freedom), one configuration saved every ``--spacing`` ps;
3. from each configuration, with fresh Maxwell–Boltzmann velocities, ``--half-steps`` of
   *unrestrained* Langevin dynamics forward and as many backward (velocities reversed); the two
   halves joined make a path of 2 × half-steps that is **reactive** when one end lies in the
   start basin (φ < 0) and the other in the target basin (the transition's box);
4. the maximum unbiased potential energy along each reactive path, and their mean.

The dynamics are OpenMM's LangevinMiddleIntegrator with the PIPS run's temperature, friction and
time step (the controlled integrator with zero control is the same scheme).

    python benchmarks/pips_unbiased_crossings.py                      # alanine dipeptide, defaults
    python benchmarks/pips_unbiased_crossings.py --shots 64 --friction 5

Writes ``benchmarks/results/pips_unbiased_crossings.json`` (one entry per system and friction,
others kept) and prints the barrier of each route and the reactive paths' maximum energies.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np
import openmm
import torch
from openmm import unit

RESULTS = Path(__file__).resolve().parent / "results" / "pips_unbiased_crossings.json"
RESTRAINT_KJ_MOL_RAD2 = 2000.0


def restrained_context(system: openmm.System, quadruple, integrator: openmm.Integrator, threads: int) -> openmm.Context:
    """A Context of ``system`` plus a harmonic restraint (force group 1) on the dihedral ``quadruple``
    toward the global parameter ``theta0`` (rad) with strength ``k`` (0 switches it off)."""
    restrained = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    restraint = openmm.CustomTorsionForce("0.5*k*d^2; d = min(a, 2*pi - a); a = abs(theta - theta0); "
                                          "pi = 3.141592653589793")
    restraint.addGlobalParameter("k", RESTRAINT_KJ_MOL_RAD2)
    restraint.addGlobalParameter("theta0", 0.0)
    restraint.addTorsion(*quadruple, [])
    restraint.setForceGroup(1)
    restrained.addForce(restraint)
    return openmm.Context(restrained, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)})


def unbiased_energy(context: openmm.Context) -> float:
    return context.getState(getEnergy=True, groups={0}).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def relaxed_scan(context: openmm.Context, start_nm: np.ndarray, phi_values_deg: np.ndarray, transition) -> list:
    """[(φ target, φ, ψ, unbiased energy kJ/mol)] along a restrained-minimisation scan."""
    context.setPositions(start_nm)
    points = []
    for value in phi_values_deg:
        context.setParameter("theta0", np.deg2rad(value))
        openmm.LocalEnergyMinimizer.minimize(context, 1.0, 2000)
        positions = torch.from_numpy(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
        phi, psi = transition.dihedrals_deg(positions)
        points.append((float(value), float(phi), float(psi), unbiased_energy(context)))
    return points


def shoot(context: openmm.Context, integrator: openmm.Integrator, positions: np.ndarray, masses_amu: np.ndarray,
          kT: float, half_steps: int, stride: int, rng: np.random.Generator):
    """Unrestrained forward and backward halves from ``positions``: frames (2 × half_steps/stride + 1, n_atoms, 3)."""
    context.setParameter("k", 0.0)
    velocities = rng.normal(size=positions.shape) * np.sqrt(kT / masses_amu)[:, None]
    halves = []
    for sign in (-1.0, 1.0):
        context.setPositions(positions)
        context.setVelocities(sign * velocities)
        frames = [positions]
        for _ in range(half_steps // stride):
            integrator.step(stride)
            frames.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
        halves.append(np.stack(frames))
    return np.concatenate([halves[0][::-1], halves[1][1:]])


def run(system_name: str, friction_per_ps: float, shots: int, half_steps: int, spacing_ps: float, seed: int,
        threads: int) -> dict:
    from mlpot.pips.molecular.peptides import peptide_transition
    from mlpot.pips.molecular.replicas import build_replicas, potential_energies_kj_mol
    from mlpot.pips.molecular.trainer import MolecularTrainConfig

    config = MolecularTrainConfig(system=system_name, friction_per_ps=friction_per_ps)
    transition = peptide_transition(system_name)
    if transition.phi_range_deg is None:
        raise SystemExit(f"{system_name}: the target basin is not a (φ, ψ) box; this script scans φ")
    topology, start_nm, target_nm = transition.load()
    single = build_replicas(topology, start_nm, 1, transition.forcefield_files, None).single_system
    masses = np.array([single.getParticleMass(i).value_in_unit(unit.dalton) for i in range(single.getNumParticles())])
    kT = (unit.MOLAR_GAS_CONSTANT_R * config.temperature_K * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
    started = time.perf_counter()

    scan_context = restrained_context(single, transition.phi, openmm.VerletIntegrator(0.001), threads)
    start_phi = float(transition.dihedrals_deg(torch.from_numpy(start_nm))[0])
    target_phi = float(transition.dihedrals_deg(torch.from_numpy(target_nm))[0])
    through_zero = np.linspace(start_phi, target_phi, 43)
    through_180 = np.linspace(start_phi, target_phi - 360.0, 43)
    routes = {"through 0": relaxed_scan(scan_context, start_nm, through_zero, transition),
              "through 180": relaxed_scan(scan_context, start_nm, ((through_180 + 180.0) % 360.0) - 180.0, transition)}
    barriers = {name: max(points, key=lambda point: point[3]) for name, points in routes.items()}
    route = min(barriers, key=lambda name: barriers[name][3])
    barrier_phi = barriers[route][1]
    print(f"relaxed φ scan: barrier through 0 {barriers['through 0'][3]:.1f} kJ/mol at φ "
          f"{barriers['through 0'][1]:.0f}°, "
          f"through 180 {barriers['through 180'][3]:.1f} at φ {barriers['through 180'][1]:.0f}° "
          f"(start minimum {routes[route][0][3]:.1f})", flush=True)

    timestep_ps = config.timestep_fs * 1e-3
    integrator = openmm.LangevinMiddleIntegrator(config.temperature_K, friction_per_ps, timestep_ps)
    integrator.setRandomNumberSeed(seed + 1)
    context = restrained_context(single, transition.phi, integrator, threads)
    context.setParameter("theta0", np.deg2rad(barrier_phi))
    context.setPositions(start_nm)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 2000)  # at the barrier φ
    context.setVelocitiesToTemperature(config.temperature_K, seed + 2)
    rng = np.random.default_rng(seed)
    integrator.step(int(20.0 / timestep_ps))  # 20 ps restrained equilibration
    paths, reactive = [], []
    for shot in range(shots):
        context.setParameter("k", RESTRAINT_KJ_MOL_RAD2)
        integrator.step(int(spacing_ps / timestep_ps))
        state = context.getState(getPositions=True, getVelocities=True)
        positions = state.getPositions(asNumpy=True)._value
        saved_velocities = state.getVelocities(asNumpy=True)._value
        frames = shoot(context, integrator, positions, masses, kT, half_steps, 5, rng)
        ends = torch.from_numpy(frames[[0, -1]])
        in_target = transition.in_target_basin(ends).numpy()
        phi_ends = transition.dihedrals_deg(ends)[0].numpy()
        in_start = phi_ends < 0.0
        connects = bool((in_start[0] and in_target[1]) or (in_target[0] and in_start[1]))
        energies = potential_energies_kj_mol(single, frames, "CPU", threads)
        paths.append({"shot": shot, "reactive": connects, "max_energy_kj_mol": float(energies.max()),
                      "end_phi_deg": [float(value) for value in phi_ends]})
        if connects:
            reactive.append(float(energies.max()))
        print(f"shot {shot}: ends φ {phi_ends[0]:.0f}°/{phi_ends[1]:.0f}°, reactive {connects}, "
              f"max E {energies.max():.1f} kJ/mol", flush=True)
        context.setPositions(positions)  # back onto the restrained chain
        context.setVelocities(saved_velocities)
    return {
        "system": system_name, "friction_per_ps": friction_per_ps, "temperature_K": config.temperature_K,
        "timestep_fs": config.timestep_fs, "path_steps": 2 * half_steps, "shots": shots,
        "relaxed_scan_barrier_kj_mol": {name: point[3] for name, point in barriers.items()},
        "relaxed_scan_barrier_phi_deg": {name: point[1] for name, point in barriers.items()},
        "start_minimum_kj_mol": routes[route][0][3], "shooting_route": route,
        "reactive_paths": len(reactive),
        "reactive_max_energy_mean_kj_mol": float(np.mean(reactive)) if reactive else None,
        "reactive_max_energy_min_kj_mol": float(np.min(reactive)) if reactive else None,
        "reactive_max_energy_std_kj_mol": float(np.std(reactive)) if reactive else None,
        "paths": paths, "wall_seconds": time.perf_counter() - started,
        "date": datetime.date.today().isoformat(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", default="alanine-dipeptide")
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps (default 1, the PIPS default)")
    parser.add_argument("--shots", type=int, default=64)
    parser.add_argument("--half-steps", type=int, default=250,
                        help="steps of each half of a shot (default 250: paths of 500 steps, as PIPS's)")
    parser.add_argument("--spacing", type=float, default=1.0, help="ps of restrained MD between shots (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args.system, args.friction, args.shots, args.half_steps, args.spacing, args.seed, args.threads)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[f"{args.system}@friction{args.friction:g}"] = result
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"{result['reactive_paths']} reactive of {args.shots} shots; mean max unbiased energy along them "
          f"{result['reactive_max_energy_mean_kj_mol']} kJ/mol (lowest {result['reactive_max_energy_min_kj_mol']}); "
          f"written to {RESULTS}")


if __name__ == "__main__":
    main()

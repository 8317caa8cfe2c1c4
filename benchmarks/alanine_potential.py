"""The shipped alanine-dipeptide potential driving the engine: MD stability and Ramachandran populations,
and the model's error along its own PIPS transition paths against GFN2-xTB (issue 19).

    python benchmarks/alanine_potential.py md [--model M] [--ps-300 200] [--ps-600 50]
    python benchmarks/alanine_potential.py path-errors RUN_DIR [--paths 32]
    python benchmarks/alanine_potential.py refine RUN_DIR [--minutes 10]

``md`` runs OpenMM Langevin MD (1 fs, friction 1/ps, no constraints) with the model through
openmm-torch's TorchForce at 300 K and 600 K, with `mlpot md`'s blow-up checks (bond change > 1 Å,
contacts < 0.5 Å), and the same runs with amber14 (vacuum) as the classical reference. It writes the
(φ, ψ) region populations of each run, the training set's region fractions (biased sampling: coverage,
not Boltzmann populations), a Ramachandran plot and ``benchmarks/results/alanine_potential/md.json``.

``path-errors`` draws paths with a PIPS policy trained on the model (``mlpot pips train --system
alanine-dipeptide --potential M``), keeps the paths that end within 0.75 rad of C7ax in (φ, ψ), and
recomputes GFN2-xTB energies (tblite, the level of the training data) of the frames around each path's
highest model energy. It reports the model's error there in kJ/mol, absolute and relative to the path's
first frame, in ``benchmarks/results/alanine_potential/path_errors.json``, and writes the xTB-labelled
frames (energies and forces) as extxyz so they can be added to the training data (``mlpot train --init-from``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch  # noqa: F401  before openmm: openmm-torch's plugin needs torch's libraries

from mlpot.units import ANGSTROM_PER_NM, KJ_PER_MOL_PER_EV

REPO = Path(__file__).resolve().parents[1]
SYSTEM_DIR = REPO / "systems" / "alanine-dipeptide"
RESULTS = REPO / "benchmarks" / "results" / "alanine_potential"
PHI_ATOMS, PSI_ATOMS = (4, 6, 8, 14), (6, 8, 14, 16)  # 0-based, tleap order (systems/alanine-dipeptide/README.md)


def dihedrals_deg(positions_A: np.ndarray, atoms) -> np.ndarray:
    """Dihedral angles in degrees (IUPAC sign, as mdtraj) of (n_frames, n_atoms, 3) positions."""
    p = np.asarray(positions_A, dtype=float)
    b0 = p[:, atoms[0]] - p[:, atoms[1]]
    b1 = p[:, atoms[2]] - p[:, atoms[1]]
    b2 = p[:, atoms[3]] - p[:, atoms[2]]
    b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1, axis=-1, keepdims=True) * b1
    w = b2 - np.sum(b2 * b1, axis=-1, keepdims=True) * b1
    x = np.sum(v * w, axis=-1)
    y = np.sum(np.cross(b1, v) * w, axis=-1)
    return np.degrees(np.arctan2(y, x))


def region_fractions(phi_deg: np.ndarray, psi_deg: np.ndarray) -> dict:
    """Fractions of frames per (φ, ψ) region, with the regions of the data generator (README of the system)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("generate_data", SYSTEM_DIR / "generate_data.py")
    generator = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generator  # dataclasses look their module up here
    spec.loader.exec_module(generator)
    labels = np.array([generator.region(float(phi), float(psi)) for phi, psi in zip(phi_deg, psi_deg)])
    names = [name for name, _, _ in generator.REGIONS] + [generator.BARRIER]
    return {name: round(float(np.mean(labels == name)), 4) for name in names}


def read_dcd_positions_A(dcd: Path, pdb: Path) -> np.ndarray:
    import mdtraj

    return mdtraj.load(str(dcd), top=str(pdb)).xyz * ANGSTROM_PER_NM  # mdtraj: nm


def amber14_md(temperature_K: float, time_ps: float, seed: int, interval: int = 500) -> np.ndarray:
    """Positions (n_frames, 22, 3) Å of amber14 vacuum Langevin MD from C5 (1 fs, 1/ps, no constraints)."""
    import openmm
    from openmm import app, unit

    pdb = app.PDBFile(str(SYSTEM_DIR / "alanine-dipeptide.pdb"))
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                               constraints=None)
    integrator = openmm.LangevinMiddleIntegrator(temperature_K * unit.kelvin, 1.0 / unit.picosecond,
                                                 1.0 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(pdb.positions)
    context.setVelocitiesToTemperature(temperature_K * unit.kelvin, seed + 1)
    frames = []
    for _ in range(int(round(time_ps * 1000 / interval))):
        integrator.step(interval)
        state = context.getState(getPositions=True)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    return np.array(frames)


def command_md(args) -> None:
    from mlpot.data import read_frames
    from mlpot.simulate import run_md

    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = {}
    angles = {}
    for temperature_K, time_ps in ((300.0, args.ps_300), (600.0, args.ps_600)):
        key = f"{temperature_K:.0f}K"
        dcd = Path(args.work) / f"model_{key}.dcd"
        dcd.parent.mkdir(parents=True, exist_ok=True)
        steps = int(round(time_ps * 1000))
        record = {"temperature_K": temperature_K, "time_ps": time_ps, "timestep_fs": 1.0}
        started = time.perf_counter()
        try:
            result = run_md(args.model, "alanine-dipeptide", engine="openmm", steps=steps, temperature_K=temperature_K,
                            timestep_fs=1.0, friction_per_ps=1.0, out=dcd, report_interval=500, seed=args.seed,
                            overwrite=True, progress=False)
            record.update(stable=True, steps_per_second=round(result.steps_per_second, 1))
        except (RuntimeError, FloatingPointError) as error:  # mlpot md's blow-up checks
            record.update(stable=False, failure=" ".join(str(error).split()))
        record["wall_s"] = round(time.perf_counter() - started, 1)
        positions = read_dcd_positions_A(dcd, dcd.with_suffix(".pdb"))
        phi, psi = dihedrals_deg(positions, PHI_ATOMS), dihedrals_deg(positions, PSI_ATOMS)
        record.update(frames=len(phi), populations=region_fractions(phi, psi))
        runs[f"mlpot {key}"] = record
        angles[f"mlpot {key}"] = (phi, psi)
        print(f"mlpot {key}: {json.dumps(record)}", flush=True)

        started = time.perf_counter()
        amber = amber14_md(temperature_K, time_ps, args.seed)
        phi, psi = dihedrals_deg(amber, PHI_ATOMS), dihedrals_deg(amber, PSI_ATOMS)
        runs[f"amber14 {key}"] = {"temperature_K": temperature_K, "time_ps": time_ps, "frames": len(phi),
                                  "populations": region_fractions(phi, psi),
                                  "wall_s": round(time.perf_counter() - started, 1)}
        angles[f"amber14 {key}"] = (phi, psi)
        print(f"amber14 {key}: {json.dumps(runs[f'amber14 {key}'])}", flush=True)

    data = read_frames(str(SYSTEM_DIR / "xtb.extxyz.gz"))
    phi = np.array([float(f.info["phi_deg"]) for f in data])
    psi = np.array([float(f.info["psi_deg"]) for f in data])
    training = {"frames": len(data), "fractions": region_fractions(phi, psi),
                "note": "biased sampling (metadynamics + short xTB MD): coverage of the training data, "
                        "not Boltzmann populations",
                **xtb_md_populations(data)}
    result = {"model": str(args.model), **compiled_source(args.model), "command": " ".join(sys.argv), "runs": runs,
              "training_data": training}
    (RESULTS / "md.json").write_text(json.dumps(result, indent=1))
    plot_ramachandran(angles, (phi, psi), RESULTS / "ramachandran_md.png")
    print(f"wrote {RESULTS / 'md.json'} and ramachandran_md.png")


def xtb_md_populations(data) -> dict:
    """Region fractions of the unbiased GFN2-xTB MD frames of the data (``source`` "GFN2-xTB MD <T> K"): short
    trajectories from the generator's starts, so a reference for the regions visited, not converged populations."""
    populations = {}
    for temperature in (300, 500):
        frames = [f for f in data if f.info.get("source") == f"GFN2-xTB MD {temperature} K"]
        if frames:
            phi = np.array([float(f.info["phi_deg"]) for f in frames])
            psi = np.array([float(f.info["psi_deg"]) for f in frames])
            populations[f"xtb_md_{temperature}K"] = {"frames": len(frames), "populations": region_fractions(phi, psi)}
    return populations


def compiled_source(model: str) -> dict:
    """For a compiled (.pt2) model: the model file it was compiled from (its metadata), else nothing."""
    from mlpot.deploy import read_metadata

    compiled = read_metadata(model).get("compiled")
    return {"compiled_from": compiled.get("source", {})} if compiled else {}


def plot_ramachandran(angles: dict, training: tuple, path: Path) -> None:
    from matplotlib.figure import Figure

    panels = list(angles.items()) + [("training data (xTB, biased sampling)", training)]
    figure = Figure(figsize=(3.2 * len(panels), 3.4))
    for axes, (title, (phi, psi)) in zip(figure.subplots(1, len(panels)), panels):
        axes.hist2d(phi, psi, bins=60, range=[[-180, 180], [-180, 180]], cmap="viridis", cmin=1)
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("φ (°)")
        axes.set_xlim(-180, 180)
        axes.set_ylim(-180, 180)
    figure.axes[0].set_ylabel("ψ (°)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def xtb_labels(numbers: np.ndarray, positions_A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GFN2-xTB total energies (eV) and forces (eV/Å) of frames (n_frames, n_atoms, 3) Å, as the training data was
    labelled (tblite, atomic units converted with ASE's constants)."""
    from ase.units import Bohr, Hartree
    from tblite.interface import Calculator

    energies, forces = [], []
    for positions in positions_A:
        calculator = Calculator("GFN2-xTB", numbers, positions / Bohr)
        calculator.set("verbosity", 0)
        result = calculator.singlepoint()
        energies.append(result.get("energy") * Hartree)
        forces.append(-result.get("gradient") * Hartree / Bohr)
    return np.array(energies), np.array(forces)


def command_path_errors(args) -> None:
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlpot.pips.runs import resume_run
    from mlpot.plugins.ase import MLPotCalculator

    RESULTS.mkdir(parents=True, exist_ok=True)
    trainer = resume_run(Path(args.run), purpose="path-errors")
    rollout = trainer.evaluate(args.paths, seed=args.seed).rollout
    paths_A = np.asarray(rollout.positions[rollout.finite_paths()], dtype=float) * ANGSTROM_PER_NM
    target = read_dcd_like_pdb(SYSTEM_DIR / "c7ax.pdb")
    target_phi, target_psi = (np.radians(dihedrals_deg(target[None], a))[0] for a in (PHI_ATOMS, PSI_ATOMS))
    numbers = np.array([atom.element.atomic_number for atom in trainer.topology.atoms()])
    calculator = MLPotCalculator(args.model)
    rows, labelled = [], []
    for index, path in enumerate(paths_A):
        phi = np.radians(dihedrals_deg(path[-1:], PHI_ATOMS))[0]
        psi = np.radians(dihedrals_deg(path[-1:], PSI_ATOMS))[0]
        wrap = lambda a: (a + np.pi) % (2 * np.pi) - np.pi  # noqa: E731
        if np.hypot(wrap(phi - target_phi), wrap(psi - target_psi)) > 0.75:
            continue
        model_eV = []
        for positions in path:
            calculator.calculate(Atoms(numbers=numbers, positions=positions), ["energy"])
            model_eV.append(calculator.results["energy"])
        model_eV = np.array(model_eV)
        peak = int(np.argmax(model_eV))
        chosen = sorted({0, *range(max(peak - args.around, 0), min(peak + args.around + 1, len(path)))})
        xtb_eV, xtb_forces_eV_A = xtb_labels(numbers, path[chosen])
        error_kj = (model_eV[chosen] - xtb_eV) * KJ_PER_MOL_PER_EV
        at_peak = chosen.index(peak)
        rows.append({"path": index, "frames": len(path), "peak_frame": peak,
                     "model_barrier_kj_mol": round(float((model_eV[peak] - model_eV[0]) * KJ_PER_MOL_PER_EV), 2),
                     "xtb_barrier_kj_mol": round(float((xtb_eV[at_peak] - xtb_eV[0]) * KJ_PER_MOL_PER_EV), 2),
                     "abs_error_at_peak_kj_mol": round(float(abs(error_kj[at_peak])), 2),
                     "relative_error_at_peak_kj_mol": round(float(abs(error_kj[at_peak] - error_kj[0])), 2),
                     "mean_abs_error_around_peak_kj_mol": round(float(np.mean(np.abs(error_kj[1:]))), 2)})
        for frame, energy, forces in zip(path[chosen], xtb_eV, xtb_forces_eV_A):
            atoms = Atoms(numbers=numbers, positions=frame)
            atoms.info.update(source="PIPS path, learned potential", level_of_theory="GFN2-xTB", path=int(index))
            atoms.calc = SinglePointCalculator(atoms, energy=float(energy), forces=forces)
            labelled.append(atoms)
        print(json.dumps(rows[-1]), flush=True)
    summary = {"run": str(args.run), "model": str(args.model), "paths": int(len(paths_A)), "hits": len(rows),
               "command": " ".join(sys.argv), "per_path": rows}
    if rows:
        for key in ("abs_error_at_peak_kj_mol", "relative_error_at_peak_kj_mol", "mean_abs_error_around_peak_kj_mol"):
            summary["mean_" + key] = round(float(np.mean([row[key] for row in rows])), 2)
    (RESULTS / "path_errors.json").write_text(json.dumps(summary, indent=1))
    if labelled:
        ase.io.write(str(Path(args.run) / "path_frames_xtb_energies.extxyz"), labelled)
    print({k: v for k, v in summary.items() if k != "per_path"})


def command_refine(args) -> None:
    """Close the loop: fine-tune the model (``mlpot train --init-from``) on the xTB set plus the xTB-labelled frames of
    half of the hit paths (``path-errors``' extxyz), and compare the model's error on the other half's frames before
    and after. The error that matters along a path is relative to its first frame (the barrier the model sees)."""
    import ase.io

    from mlpot.plugins.ase import MLPotCalculator
    from mlpot.train import TrainConfig, train

    frames = ase.io.read(str(Path(args.run) / "path_frames_xtb_energies.extxyz"), index=":")
    paths = sorted({int(atoms.info["path"]) for atoms in frames})
    held_out = set(paths[1::2])
    tuning = [atoms for atoms in frames if int(atoms.info["path"]) not in held_out]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ase.io.write(str(work / "path_frames_train.extxyz"), tuning * args.repeat)  # repeated: weight in the mix
    config = TrainConfig.from_dict({
        "data": {"files": [str(SYSTEM_DIR / "xtb.extxyz.gz"), str(work / "path_frames_train.extxyz")],
                 "val_fraction": 0.05, "test_fraction": 0.0, "split_seed": 0},
        "model": {"arch": "nequip", "size": "default", "cutoff": 5.0, "init_from": str(args.model),
                  "refit_references": False},
        "training": {"epochs": 1000, "batch_size": 5, "lr": args.lr, "energy_weight": 1.0, "forces_weight": 10.0,
                     "max_minutes": args.minutes, "threads": 1, "seed": 0},
        "out": str(work / "train"),
    })
    tuned = train(config, quiet=True).model_path

    def relative_errors_kj_mol(model: Path) -> list:
        calculator = MLPotCalculator(str(model))
        errors = []
        for path in sorted(held_out):
            chosen = [atoms for atoms in frames if int(atoms.info["path"]) == path]
            model_eV, xtb_eV = [], []
            for atoms in chosen:
                calculator.calculate(atoms, ["energy"])
                model_eV.append(calculator.results["energy"])
                xtb_eV.append(atoms.get_potential_energy())
            error = (np.array(model_eV) - np.array(xtb_eV)) * KJ_PER_MOL_PER_EV
            errors.append(float(np.max(np.abs(error[1:] - error[0]))))  # worst frame around the peak, vs the start
        return errors

    before, after = relative_errors_kj_mol(Path(args.model)), relative_errors_kj_mol(tuned)
    summary = {"command": " ".join(sys.argv), "model": str(args.model), "tuned_model": str(tuned),
               "tuning_paths": len(paths) - len(held_out), "tuning_frames": len(tuning),
               "held_out_paths": len(held_out),
               "repeat": args.repeat, "minutes": args.minutes, "lr": args.lr,
               "held_out_max_relative_error_kj_mol": {"before": {"mean": round(float(np.mean(before)), 2),
                                                                 "per_path": [round(e, 2) for e in before]},
                                                      "after": {"mean": round(float(np.mean(after)), 2),
                                                                "per_path": [round(e, 2) for e in after]}}}
    (RESULTS / f"path_refine{'' if args.repeat == 1 else f'_repeat{args.repeat}'}.json").write_text(
        json.dumps(summary, indent=1))
    print({k: v for k, v in summary.items() if k != "held_out_max_relative_error_kj_mol"},
          {k: v["mean"] for k, v in summary["held_out_max_relative_error_kj_mol"].items()})


def read_dcd_like_pdb(pdb: Path) -> np.ndarray:
    from openmm import app, unit

    return np.array(app.PDBFile(str(pdb)).getPositions(asNumpy=True).value_in_unit(unit.angstrom))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("md")
    p.add_argument("--model", default=str(SYSTEM_DIR / "model_xtb.pt"))
    p.add_argument("--ps-300", type=float, default=200.0)
    p.add_argument("--ps-600", type=float, default=50.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/alanine_potential_md")
    p.set_defaults(func=command_md)
    p = sub.add_parser("path-errors")
    p.add_argument("run")
    p.add_argument("--model", default=str(SYSTEM_DIR / "model_xtb.pt"))
    p.add_argument("--paths", type=int, default=32)
    p.add_argument("--around", type=int, default=2, help="frames each side of the peak that are labelled")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=command_path_errors)
    p = sub.add_parser("refine", help="fine-tune on half of the hit paths' xTB frames, error on the other half")
    p.add_argument("run", help="the run of path-errors (holds path_frames_xtb_energies.extxyz)")
    p.add_argument("--model", default=str(SYSTEM_DIR / "model_xtb.pt"))
    p.add_argument("--minutes", type=float, default=10.0, help="fine-tuning wall time")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--repeat", type=int, default=1, help="copies of each path frame in the fine-tuning data")
    p.add_argument("--work", default="runs/alanine_potential_refine")
    p.set_defaults(func=command_refine)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()

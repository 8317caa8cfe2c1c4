"""``mlpot md``, ``mlpot systems``, ``mlpot demo``: molecular dynamics with a model file (the application in
:mod:`mlpot.simulate`)."""

from __future__ import annotations

import sys
from pathlib import Path

from mlpot.cli.common import add_data_arguments, data_spec, parse_hyperparameters  # noqa: F401


def register(sub) -> None:
    """Add this group's commands to the ``mlpot`` subparsers ``sub``."""
    p = sub.add_parser("md", help="run molecular dynamics with a model",
                       description="Langevin MD of a named system (see `mlpot systems`) or a PDB file.")
    p.add_argument("--model", required=True, help="model file")
    p.add_argument("--system", default="alanine-dipeptide", help="system name or PDB path")
    p.add_argument("--engine", choices=["openmm", "ase"], default="openmm", help="MD engine")
    p.add_argument("--steps", type=int, default=5000, help="MD steps")
    p.add_argument("--temperature", type=float, default=300.0, help="K")
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--friction", type=float, default=1.0, help="Langevin friction, 1/ps")
    p.add_argument("--report-interval", type=int, default=100, help="steps between frames and checks")
    p.add_argument("--out", default="traj.dcd", help="DCD trajectory; topology written beside it as .pdb")
    p.add_argument("--seed", type=int, default=0, help="random seed of the start velocities and the thermostat")
    p.add_argument("--platform", default=None, help="OpenMM platform (default CUDA if present, else CPU)")
    p.add_argument("--device", default="cpu", help="torch device for the ASE engine")
    p.add_argument("--compile", choices=["auto", "on", "off"], default=None,
                   help="run the model's compiled twin, built once and cached (default auto, or $MLPOT_COMPILE: "
                        "compile if needed, fall back to TorchScript with a warning; on CPU only for OpenMM)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run of OUT from its checkpoint OUT.chk, with the same settings (OpenMM)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run at OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_md)

    p = sub.add_parser("systems", help="list the shipped molecular systems")
    p.set_defaults(func=_cmd_systems)
    p = sub.add_parser("demo", help="train on the shipped ethanol DFT set, then run the model in OpenMM")
    p.add_argument("--arch", choices=["egnn", "nequip"], default="nequip", help="architecture")
    p.add_alias("--minutes", p.add_argument("--max-minutes", type=float, default=3.0, help="training time, minutes"))
    p.add_argument("--steps", type=int, default=4000, help="MD steps of 0.5 fs")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.set_defaults(func=_cmd_demo)


def _print_md_result(result) -> None:
    print(f"{result.engine}: {result.steps} steps of {result.timestep_fs} fs on {result.system} "
          f"({result.n_atoms} atoms) in {result.wall_seconds:.1f} s: {result.steps_per_second:.1f} steps/s, "
          f"{result.ns_per_day:.3f} ns/day")
    print(f"final potential energy {result.final_potential_energy_eV:.4f} eV, "
          f"temperature {result.final_temperature_K:.0f} K")
    print(f"trajectory {result.trajectory} (topology {result.topology})")


def _cmd_md(args) -> int:
    import warnings

    from mlpot.simulate import run_md

    with warnings.catch_warnings():  # a warning is one line, as errors are
        warnings.showwarning = lambda message, *_: print(f"mlpot md: warning: {message}", file=sys.stderr)
        result = run_md(args.model, args.system, engine=args.engine, steps=args.steps,
                        temperature_K=args.temperature, timestep_fs=args.timestep, friction_per_ps=args.friction,
                        out=args.out, report_interval=args.report_interval, seed=args.seed, platform=args.platform,
                        device=args.device, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                        compile=args.compile)
    _print_md_result(result)
    return 0


def _cmd_systems(args) -> int:
    from mlpot.systems import list_systems

    for spec in list_systems():
        aliases = f" (also: {', '.join(spec.aliases)})" if spec.aliases else ""
        print(f"{spec.name:<24} {'periodic' if spec.periodic else 'molecule':<9} {spec.description}{aliases}")
    return 0


def _cmd_demo(args) -> int:
    """Shipped ethanol DFT data → trained model file → OpenMM MD with it → errors, trajectory and ns/day."""
    from mlpot.evaluate import format_metrics
    from mlpot.simulate import run_md
    from mlpot.systems import SYSTEMS_DIR
    from mlpot.train import TrainConfig, train

    out = Path(args.out)
    config = TrainConfig.from_dict({
        "data": {"files": [str(SYSTEMS_DIR / "ethanol" / "dft.extxyz")], "val_fraction": 0.05, "test_fraction": 0.1},
        "model": {"arch": args.arch},
        "training": {"epochs": 100000, "max_minutes": args.max_minutes, "batch_size": 5, "lr": 0.01},
        "out": str(out / "train"),
    })
    resume = (out / "train" / "checkpoint.pt").exists()
    print(f"[1/2] training a {args.arch} model on the shipped ethanol B3LYP/6-31G* set for {args.max_minutes:g} min "
          f"-> {out / 'train'}{' (continuing the previous demo run)' if resume else ''}")
    result = train(config, resume=resume)
    print(f"test split ({result.metrics['test']['frames']} frames) after {result.epochs_done} epochs:")
    print(format_metrics(result.metrics["test"]))
    print(f"[2/2] {args.steps} steps of OpenMM Langevin MD of ethanol at 300 K through openmm-torch's TorchForce")
    md = run_md(result.model_path, "ethanol", engine="openmm", steps=args.steps, temperature_K=300.0,
                timestep_fs=0.5, out=out / "traj.dcd", report_interval=100, compile="off",
                overwrite=True)  # each demo's MD starts afresh from the (continued) model; TorchForce, as said
    _print_md_result(md)
    return 0

"""``mlpot pips train|sample|report``: transition path sampling by a learned control policy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mlpot.cli.common import add_data_arguments, data_spec, parse_hyperparameters  # noqa: F401


def register(sub) -> None:
    """Add this group's commands to the ``mlpot`` subparsers ``sub``."""
    p = sub.add_parser("pips", help="transition path sampling by a learned control policy (PIPS)")
    pips_sub = p.add_subparsers(dest="pips_command", required=True)
    q = pips_sub.add_parser("train", help="train a PIPS policy (2D toys in torch, molecules in OpenMM); "
                            "checkpoints every iteration")
    q.add_argument("--system", default="double-well",
                   help="double-well, mueller-brown (2D toys, torch), alanine-dipeptide, alanine-dipeptide-c7eq, "
                        "polyproline, chignolin (OpenMM) (default double-well)")
    q.add_argument("--out", required=True, help="run directory (checkpoint.pt)")
    q.add_argument("--potential", default=None, help="mlpot model file as the physical potential (molecules; "
                   "default: the system's force field, amber14)")
    q.add_argument("--iterations", type=int, default=None, help="default 300")
    q.add_argument("--paths", type=int, default=None, help="rollouts per iteration (default 64 toys, 16 molecules)")
    q.add_argument("--eval-paths", type=int, default=512, help="fresh paths for the final THP of a toy (default 512)")
    q.add_argument("--seed", type=int, default=None, help="default 0")
    q.add_argument("--resume", action="store_true", help="continue the run in --out with its own settings")
    q.add_argument("--quiet", action="store_true", help="no line per iteration")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the run's configuration, e.g. --set lam=1e-4 --set friction_per_ps=5 "
                        "(repeatable; the keys are the fields of MolecularTrainConfig / ToyTrainConfig)")
    q.add_argument("--max-minutes", type=float, default=None,
                   help="stop (checkpointed, resumable) after this much wall time")
    q.set_defaults(func=_cmd_pips_train)
    q = pips_sub.add_parser("sample", help="draw paths with a trained molecular policy: DCD + PDB, metrics")
    q.add_argument("run", help="run directory of `mlpot pips train`")
    q.add_argument("--paths", type=int, default=64, help="number of paths (default 64)")
    q.add_argument("--out", default=None, help="DCD file (default RUN/paths.dcd); the PDB topology goes beside it")
    q.add_argument("--seed", type=int, default=1)
    q.set_defaults(func=_cmd_pips_sample)
    q = pips_sub.add_parser("report", help="compare a trained molecular policy with unbiased and steered MD: "
                            "report.json, report.md, PNG plots, DCD of the policy's paths, written into RUN")
    q.add_argument("run", help="run directory of `mlpot pips train` (a molecular system)")
    q.add_argument("--paths", type=int, default=16, help="paths per method (default 16)")
    q.add_argument("--seed", type=int, default=1, help="the same for every method (default 1)")
    q.add_argument("--smd-spring", type=float, default=1e4,
                   help="steered-MD spring constant on the aligned heavy-atom RMSD², kJ/mol/nm² (default 1e4)")
    q.add_argument("--smd-ramp", action="store_true", help="ramp the steered-MD spring linearly from 0 (default: constant)")
    q.set_defaults(func=_cmd_pips_report)


def _cmd_pips_train(args) -> int:
    from mlpot.pips.runs import new_run, parse_setting, resume_run
    from mlpot.pips.trainer import PipsInterrupted

    if args.max_minutes is not None and not args.max_minutes > 0:
        raise ValueError(f"--max-minutes must be a positive number of minutes, got {args.max_minutes}")
    if args.resume:
        if args.set:
            raise ValueError("--resume continues a run with the settings it was started with; --set is not allowed")
        trainer = resume_run(Path(args.out), purpose="--resume")
    else:
        overrides = dict(parse_setting(assignment) for assignment in args.set)
        options = {"system": args.system, "potential": args.potential, "iterations": args.iterations,
                   "n_paths": args.paths, "seed": args.seed}
        repeated = sorted(key for key in overrides if key in options)
        if repeated:
            raise ValueError(f"--set {', '.join(repeated)}: give this with its own option "
                             "(--system, --potential, --iterations, --paths, --seed)")
        trainer = new_run(args.system, Path(args.out), potential=args.potential, iterations=args.iterations,
                          n_paths=args.paths, seed=args.seed, **overrides)

    def print_row(row) -> None:
        if not args.quiet:
            print(f"iteration {row['iteration']:4d}  ESS {row['ess']:5.1f}/{trainer.config.n_paths}  "
                  f"THP {row['thp']:.2f}  mean S {row['mean_cost']:8.2f}  {row['seconds']:.2f} s")

    max_seconds = None if args.max_minutes is None else 60.0 * args.max_minutes
    try:  # Ctrl-C or SIGTERM stop between iterations, each of which is checkpointed
        trainer.run(max_seconds=max_seconds, on_iteration=print_row)
    except PipsInterrupted as stop:
        print(f"\n{stop}; `mlpot pips train --out {args.out} --resume` continues", file=sys.stderr)
        return 130
    if trainer.iteration < trainer.config.iterations:
        print(f"time limit of {args.max_minutes} min reached after {trainer.iteration} iterations; "
              f"`mlpot pips train --out {args.out} --resume` continues")
    if hasattr(trainer, "transition"):  # molecular: the sample command evaluates (it costs rollouts)
        print(f"{trainer.config.system}: {trainer.iteration} iterations; checkpoint in {args.out}; "
              f"`mlpot pips sample {args.out}` draws paths with the averaged policy")
        return 0
    summary = trainer.evaluate(args.eval_paths, seed=trainer.config.seed + 1)
    print(f"{trainer.config.system}: THP {summary.thp:.3f} on {args.eval_paths} fresh paths of the averaged policy"
          f" (channels: upper {summary.upper:.2f}, lower {summary.lower:.2f}); checkpoint in {args.out}")
    return 0


def _cmd_pips_sample(args) -> int:
    from mlpot.pips.runs import resume_run
    from mlpot.pips.trajectories import write_paths

    trainer = resume_run(Path(args.run), purpose="pips sample")
    if not hasattr(trainer, "transition"):
        print("mlpot pips sample: error: sampling to DCD is for molecular runs; toy runs report THP at the end "
              "of `mlpot pips train`", file=sys.stderr)
        return 2
    metrics, rollout = trainer.evaluate(args.paths, seed=args.seed)
    out = Path(args.out) if args.out else Path(args.run) / "paths.dcd"
    pdb = write_paths(rollout.positions[rollout.finite_paths()], trainer.topology, out)
    print(json.dumps(metrics, indent=1))
    print(f"{args.paths} paths ({metrics['blown_up']} blown up, left out) in {out}, topology {pdb}")
    return 0


def _cmd_pips_report(args) -> int:
    from mlpot.pips.report import write_report

    report = write_report(Path(args.run), n_paths=args.paths, seed=args.seed, spring_kj_mol_nm2=args.smd_spring,
                          ramp=args.smd_ramp)
    print(report.table())
    print(f"written to {args.run}: " + ", ".join(path.name for path in report.files))
    return 0

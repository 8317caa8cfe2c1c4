"""``mlpot pips train|sample|report|export``: transition path sampling by a learned control policy."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub) -> None:
    """Add this group's commands to the ``mlpot`` subparsers ``sub``."""
    p = sub.add_parser("pips", help="transition path sampling by a learned control policy (PIPS)")
    pips_sub = p.add_subparsers(dest="pips_command", required=True)
    q = pips_sub.add_parser(
        "train", help="train a PIPS policy (2D toys in torch, molecules in OpenMM); checkpoints every iteration",
        description="Train a PIPS policy from a YAML config (top-level keys system, out, potential and a training "
                    "section with the fields of ToyTrainConfig / MolecularTrainConfig; example docs/pips_alanine.yaml)"
                    " or from flags. Flags override the file, --set overrides both.")
    q.add_argument("config", nargs="?", help="YAML config file (default: none, all from the flags and defaults)")
    q.add_argument("--system", default=None,
                   help="double-well, mueller-brown (2D toys, torch), alanine-dipeptide, alanine-dipeptide-c7eq, "
                        "polyproline, chignolin (OpenMM) (default: the config's system, else double-well)")
    q.add_argument("--out", default=None, help="run directory, checkpoint.pt (default: the config's out; required)")
    q.add_argument("--potential", default=None, help="mlpot model file as the physical potential, molecules only "
                   "(default: the config's potential, else the system's force field)")
    q.add_argument("--iterations", type=int, default=None, help="training.iterations (default: 300 toys, "
                   "the system's for molecules)")
    q.add_argument("--paths", type=int, default=None, help="rollouts per iteration, training.n_paths "
                   "(default: 64 toys, 16 molecules)")
    q.add_argument("--eval-paths", type=int, default=512, help="fresh paths for the final THP of a toy "
                   "(default: %(default)s)")
    q.add_argument("--seed", type=int, default=None, help="training.seed (default: 0)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out with its own settings "
                   "(default: off)")
    q.add_argument("--quiet", action="store_true", help="no line per iteration (default: off)")
    q.add_argument("--set", action="append", default=[], metavar="training.KEY=VALUE",
                   help="override one training setting, value read as YAML, e.g. --set training.lam=1e-4 "
                        "(repeatable; the keys are the fields of MolecularTrainConfig / ToyTrainConfig)")
    q.add_argument("--print-config", action="store_true",
                   help="print the full resolved config, defaults included, as YAML this command reads, and exit")
    q.add_argument("--max-minutes", type=float, default=None,
                   help="stop (checkpointed, resumable) after this much wall time (default: no limit)")
    q.set_defaults(func=_cmd_pips_train)
    q = pips_sub.add_parser("sample", help="draw paths with a trained molecular policy: DCD + PDB, metrics")
    q.add_argument("run", help="run directory of `mlpot pips train`")
    q.add_argument("--paths", type=int, default=64, help="number of paths (default: %(default)s)")
    q.add_argument("--out", default=None, help="DCD file (default: RUN/paths.dcd); the PDB topology goes beside it")
    q.add_argument("--seed", type=int, default=1, help="(default: %(default)s)")
    q.add_argument("--system", default=None, help="refuse RUN unless it holds a policy of this system "
                   "(default: any)")
    q.set_defaults(func=_cmd_pips_sample)
    q = pips_sub.add_parser("report", help="compare a trained molecular policy with unbiased and steered MD: "
                            "report.json, report.md, PNG plots, DCD of the policy's paths, written into RUN")
    q.add_argument("run", help="run directory of `mlpot pips train` (a molecular system)")
    q.add_argument("--paths", type=int, default=16, help="paths per method (default: %(default)s)")
    q.add_argument("--seed", type=int, default=1, help="the same for every method (default: %(default)s)")
    q.add_argument("--smd-spring", type=float, default=1e4,
                   help="steered-MD spring constant on the aligned heavy-atom RMSD², kJ/mol/nm² (default: %(default)g)")
    q.add_argument("--smd-ramp", action="store_true",
                   help="ramp the steered-MD spring linearly from 0 (default: off, constant)")
    q.add_argument("--system", default=None, help="refuse RUN unless it holds a policy of this system "
                   "(default: any)")
    q.set_defaults(func=_cmd_pips_report)
    q = pips_sub.add_parser(
        "export", help="copy a run's trained policy into a small run directory for sample and report",
        description="Write OUT/checkpoint.pt with the policy, its moving average, the configuration, the log and "
                    "the molecule's atom names of RUN, without optimiser state, random-number generator or replay "
                    "buffer. `mlpot pips sample OUT` and `mlpot pips report OUT` accept it; `mlpot pips train "
                    "--resume` refuses it (train RUN further instead). OUT must not hold a checkpoint.")
    q.add_argument("run", help="run directory of `mlpot pips train`")
    q.add_argument("out", help="folder to write checkpoint.pt into (created if missing)")
    q.set_defaults(func=_cmd_pips_export)


# the flags that set a training key, and the key
_TRAINING_FLAGS = {"iterations": "iterations", "paths": "n_paths", "seed": "seed"}


def run_config_from_args(args):
    """The :class:`~mlpot.pips.runs.PipsRunConfig` of ``mlpot pips train``: the YAML file (if any),
    then the flags, then ``--set``."""
    from mlpot.pips.runs import PipsRunConfig, load_run_config

    config = load_run_config(args.config) if args.config else PipsRunConfig()
    for key in ("system", "out", "potential"):
        if getattr(args, key) is not None:
            setattr(config, key, getattr(args, key))
    flagged = {}
    for flag, key in _TRAINING_FLAGS.items():
        if getattr(args, flag) is not None:
            config.training[key] = getattr(args, flag)
            flagged[key] = flag
    for assignment in args.set:
        key = config.set(assignment)
        if key in flagged:
            raise ValueError(f"--set {assignment}: training.{key} is given by --{flagged[key]} too; give it once")
    return config


def _cmd_pips_train(args) -> int:
    from mlpot.config import config_yaml
    from mlpot.pips.runs import resume_run, start_run, system_kind
    from mlpot.pips.trainer import PipsInterrupted
    from mlpot.runs import refuse_changed_settings

    if args.max_minutes is not None and not args.max_minutes > 0:
        raise ValueError(f"--max-minutes must be a positive number of minutes, got {args.max_minutes}")
    if args.resume and args.set:
        raise ValueError("--resume continues a run with the settings it was started with; --set is not allowed")
    config = run_config_from_args(args)
    if args.print_config:
        print(config_yaml(config.resolved()), end="")
        return 0
    if config.out is None:
        raise ValueError("no run directory: give --out, or out: in the config file")
    if args.resume:
        trainer = resume_run(Path(config.out), purpose="--resume", system=args.system)
        if args.config:  # the file must describe the run it continues
            refuse_changed_settings(trainer.config.to_dict(), config.train_config().to_dict(),
                                    f"the PIPS run in {config.out}")
    else:
        trainer = start_run(config)
    if system_kind(trainer.config.system) == "molecular" and not args.quiet:
        print(trainer.runner(trainer.config.n_paths).platform_choice.describe())

    def print_row(row) -> None:
        if not args.quiet:
            print(f"iteration {row['iteration']:4d}  ESS {row['ess']:5.1f}/{trainer.config.n_paths}  "
                  f"THP {row['thp']:.2f}  mean S {row['mean_cost']:8.2f}  {row['seconds']:.2f} s")

    max_seconds = None if args.max_minutes is None else 60.0 * args.max_minutes
    try:  # Ctrl-C or SIGTERM stop between iterations, each of which is checkpointed
        trainer.run(max_seconds=max_seconds, on_iteration=print_row)
    except PipsInterrupted as stop:
        print(f"\n{stop}; `mlpot pips train --out {config.out} --resume` continues", file=sys.stderr)
        return 130
    if trainer.iteration < trainer.config.iterations:
        print(f"time limit of {args.max_minutes} min reached after {trainer.iteration} iterations; "
              f"`mlpot pips train --out {config.out} --resume` continues")
    if system_kind(trainer.config.system) == "molecular":  # the sample command evaluates (it costs rollouts)
        print(f"{trainer.config.system}: {trainer.iteration} iterations; checkpoint in {config.out}; "
              f"`mlpot pips sample {config.out}` draws paths with the averaged policy")
        return 0
    evaluation = trainer.evaluate(args.eval_paths, seed=trainer.config.seed + 1)
    print(f"{trainer.config.system}: THP {evaluation.thp:.3f} on {args.eval_paths} fresh paths of the averaged "
          f"policy (channels: upper {evaluation.metrics['upper']:.2f}, lower {evaluation.metrics['lower']:.2f}); "
          f"checkpoint in {config.out}")
    return 0


def _cmd_pips_sample(args) -> int:
    from mlpot.pips.molecular.trajectories import write_paths
    from mlpot.pips.runs import load_run, system_kind

    trainer = load_run(Path(args.run), purpose="pips sample", system=args.system)  # a run or an exported policy
    if system_kind(trainer.config.system) != "molecular":
        print("mlpot pips sample: error: sampling to DCD is for molecular runs; toy runs report THP at the end "
              "of `mlpot pips train`", file=sys.stderr)
        return 2
    evaluation = trainer.evaluate(args.paths, seed=args.seed)
    rollout, metrics = evaluation.rollout, evaluation.metrics
    out = Path(args.out) if args.out else Path(args.run) / "paths.dcd"
    pdb = write_paths(rollout.positions[rollout.finite_paths()], trainer.topology, out)
    print(json.dumps(metrics, indent=1))
    print(f"{args.paths} paths ({metrics['blown_up']} blown up, left out) in {out}, topology {pdb}")
    return 0


def _cmd_pips_report(args) -> int:
    from mlpot.pips.molecular.report import write_report

    report = write_report(Path(args.run), n_paths=args.paths, seed=args.seed, spring_kj_mol_nm2=args.smd_spring,
                          ramp=args.smd_ramp, system=args.system)
    print(report.table())
    print(f"written to {args.run}: " + ", ".join(path.name for path in report.files))
    return 0


def _cmd_pips_export(args) -> int:
    from mlpot.pips.runs import export_run

    path = export_run(Path(args.run), Path(args.out))
    print(f"exported the policy of {args.run} to {path} ({path.stat().st_size / 1e6:.2f} MB); "
          f"`mlpot pips sample {args.out}` draws paths with it")
    return 0

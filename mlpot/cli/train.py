"""``mlpot train``, ``mlpot eval``, ``mlpot data inspect``: training and scoring on labelled data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mlpot.cli.common import add_config_arguments, add_data_arguments, data_spec, parse_hyperparameters  # noqa: F401


def register(sub) -> None:
    """Add this group's commands to the ``mlpot`` subparsers ``sub``."""
    p = sub.add_parser("train", help="train a model on energies, forces and stress",
                       description="Train an EGNN or NequIP-style model from a YAML config (see mlpot.train.config) "
                                   "or from flags; writes the model file, log.csv, plots and metrics.json. Stress: "
                                   "periodic frames with stress labels are trained on them unless "
                                   "training.stress_weight is set (0 turns stress off, with a warning). A time "
                                   "limit (--max-minutes) includes the final evaluation and is kept to within one "
                                   "optimiser step.\n\n"
                                   "Settings come from the YAML file, then the flags, then --set; flags left out "
                                   "keep the config's value (--print-config shows them all).")
    p.add_argument("config", nargs="?", help="YAML config file")
    p.add_argument("--data", nargs="+", help="training data file(s) (extxyz, ASE db, npz): data.files")
    p.add_argument("--arch", choices=["egnn", "nequip"], default=None, help="model.arch")
    p.add_argument("--size", default=None, help="hyperparameter preset, default or nequip-matched: model.size")
    p.add_argument("--epochs", type=int, default=None, help="training.epochs")
    p.add_alias("--max-time", p.add_argument("--max-minutes", type=float, default=None,
                                             help="stop after this many minutes of training: training.max_minutes"))
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 ...: training.device")
    p.add_argument("--out", default=None, help="run directory: out")
    add_config_arguments(p, "training.lr=0.01")
    p.add_argument("--resume", action="store_true", help="continue the run in the output directory")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="fine-tune: start from this model file's network and weights (model.init_from); per-species "
                        "reference energies are refitted when the data's level of theory differs")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="errors of a model file on labelled data, with parity plots")
    p.add_argument("model", help="model file")
    p.add_argument("--data", nargs="+", required=True, help="labelled data file(s)")
    p.add_argument("--out", default=None, help="folder for metrics.json and parity.png (default: MODEL_eval)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--no-unit-check", action="store_true", help="skip the unit sanity check of the data")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_data_arguments(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("inspect", help="frames, elements, energy/force statistics and problems of a dataset")
    q.add_argument("files", nargs="+", help="data file(s)")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.add_argument("--cutoff", type=float, default=5.0,
                   help="model cutoff in Å that periodic cells must be at least twice as wide as")
    add_data_arguments(q)
    q.set_defaults(func=_cmd_data_inspect)


def train_config_from_args(args):
    """The :class:`TrainConfig` of ``mlpot train``: the YAML file (if any), then flags, then ``--set``."""
    from mlpot.train import TrainConfig, apply_override, load_config

    config = load_config(args.config) if args.config else TrainConfig()
    if args.data:
        config.data.files = list(args.data)
    for flag, section, key in (("arch", "model", "arch"), ("size", "model", "size"), ("epochs", "training", "epochs"),
                               ("device", "training", "device"), ("max_minutes", "training", "max_minutes")):
        value = getattr(args, flag)
        if value is not None:
            setattr(getattr(config, section), key, value)
    if args.out:
        config.out = args.out
    if args.init_from:
        config.model.init_from = args.init_from
    for assignment in args.set:
        apply_override(config, assignment)
    return config


def _cmd_train(args) -> int:
    from mlpot.train import TrainingInterrupted, train

    config = train_config_from_args(args)
    if args.print_config:
        from mlpot.config import config_yaml

        print(config_yaml(config), end="")
        return 0
    try:
        result = train(config, resume=args.resume, quiet=args.quiet)
    except TrainingInterrupted as stop:
        print(f"mlpot train: {stop}", file=sys.stderr)
        return 130
    if result.model_path is None:  # not the main process of a distributed run
        return 0
    from mlpot.evaluate import format_metrics

    print(f"stopped after {result.epochs_done} epochs ({result.stopped_because}); model file {result.model_path}")
    for split in ("val", "test"):
        if split in result.metrics:
            print(f"{split} split ({result.metrics[split]['frames']} frames):")
            print(format_metrics(result.metrics[split]))
    print(f"log, plots and metrics in {result.out}")
    return 0


def _cmd_eval(args) -> int:
    from mlpot.evaluate import evaluate_model_file, format_metrics, write_evaluation

    metrics, accumulator = evaluate_model_file(args.model, args.data, data_spec(args), device=args.device,
                                               check_units=not args.no_unit_check, progress=not args.quiet)
    print(f"{args.model} on {', '.join(args.data)} ({metrics['frames']} frames):")
    print(format_metrics(metrics))
    out = Path(args.out) if args.out else Path(args.model).with_name(Path(args.model).stem + "_eval")
    write_evaluation(metrics, accumulator, out, title=f"{Path(args.model).name} on {Path(args.data[0]).name}")
    print(f"metrics.json and parity.png in {out}")
    return 0


def _cmd_data_inspect(args) -> int:
    from mlpot.data import read_many
    from mlpot.data.inspect import format_report, inspect_frames

    report = inspect_frames(read_many(args.files, data_spec(args)), cutoff=args.cutoff)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 1 if report["problems"] else 0

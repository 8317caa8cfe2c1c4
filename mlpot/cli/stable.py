"""``mlpot stable train`` (StABlE fine-tuning) and ``mlpot stable evaluate`` (its time-to-instability measurement).

The older spellings still work: ``mlpot stable CONFIG`` is ``mlpot stable train CONFIG``
(:func:`expand_old_form`), and ``mlpot stability MODEL`` (a hidden command) is ``mlpot stable evaluate MODEL``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List

from mlpot.cli.common import add_config_arguments

SUBCOMMANDS = ("train", "evaluate")


def register(sub) -> None:
    """Add this group's commands to the ``mlpot`` subparsers ``sub``."""
    p = sub.add_parser("stable", help="StABlE: fine-tune a model so its simulations stay physical (train), and "
                                      "measure how long its replicas stay stable (evaluate)",
                       description="StABlE fine-tuning and its evaluation; see docs/stable.md.\n\n"
                                   "  mlpot stable train config.yaml [--resume] [--set learning.lr=0.001]\n"
                                   "  mlpot stable evaluate model.pt --system ethanol --duration 10ps")
    group = p.add_subparsers(dest="stable_command", required=True, metavar="{train,evaluate}")
    q = group.add_parser("train", help="fine-tune a trained model so its simulations stay physical",
                         description="Alternate Nose-Hoover replica simulations until most replicas go unstable with "
                                     "learning steps on the Boltzmann-estimator gradient of the h(r) loss plus the "
                                     "energy/force loss; checkpoints every step; writes model.pt, log.csv and plots.")
    q.add_argument("config", help="YAML config (sections data, simulation, learning, run; see mlpot.stable.config)")
    q.add_argument("--resume", action="store_true", help="continue the run in the config's out directory")
    q.add_argument("--max-minutes", type=float, default=None, help="wall-time limit in minutes: run.max_minutes")
    q.add_argument("--out", default=None, help="run directory: out")
    add_config_arguments(q, "learning.lr=0.001")
    q.add_argument("--quiet", action="store_true", help="no line per segment / learning step")
    q.set_defaults(func=_cmd_stable)

    evaluate_help = "time to instability of a model's replicas (StABlE's evaluation)"
    _add_evaluate_arguments(group.add_parser("evaluate", help=evaluate_help, description=EVALUATE_DESCRIPTION))
    _add_evaluate_arguments(sub.add_parser("stability", description=EVALUATE_DESCRIPTION))  # old name, hidden


EVALUATE_DESCRIPTION = ("Run independent Langevin replicas of a molecule with the model, starting from reference "
                        "frames (the model's test split when known), and time the first bond-length deviation above "
                        "the threshold in each.")


def expand_old_form(argv: List[str], at: int) -> List[str]:
    """``argv`` with the old form ``stable CONFIG ...`` (``argv[at]`` is ``stable``) written as ``stable train CONFIG
    ...``; the new forms and ``stable --help`` are left as they are."""
    following = argv[at + 1] if at + 1 < len(argv) else None
    if following is None or following in SUBCOMMANDS or following in ("-h", "--help"):
        return argv
    return argv[:at + 1] + ["train"] + argv[at + 1:]


def _add_evaluate_arguments(p) -> None:
    p.add_argument("model", help="model file")
    p.add_argument("--system", default="ethanol", help="shipped system with reference data")
    p.add_argument("--reference", default=None, help="labelled frames of the molecule instead of the system's data")
    p.add_argument("--replicas", type=int, default=32, help="independent replicas")
    p.add_alias("--time", p.add_argument("--duration", default="10ps",
                                         help="simulated time per replica, e.g. 10ps, 500fs"))
    p.add_argument("--temperature", type=float, default=500.0, help="K")
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--friction", type=float, default=1.0, help="Langevin friction, 1/ps")
    p.add_argument("--check-every", type=float, default=50.0, help="fs between stability checks")
    p.add_argument("--threshold", type=float, default=0.5, help="bond-length deviation that is unstable, Å")
    p.add_argument("--contact", type=float, default=0.7,
                   help="two atoms closer than this are unstable, Å (0: bonds only, as StABlE)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the velocities and the thermostat")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.add_argument("--quiet", action="store_true", help="no line per check")
    p.set_defaults(func=_cmd_stability)


def _cmd_stability(args) -> int:
    from mlpot.stable.evaluation import StabilitySettings, measure_model_file_stability
    from mlpot.units import parse_duration_ps

    if args.contact < 0:
        raise ValueError(f"--contact is a distance in Å (0 switches the contact check off), got {args.contact}")
    settings = StabilitySettings(
        replicas=args.replicas, time_ps=parse_duration_ps(args.duration), temperature_K=args.temperature,
        timestep_fs=args.timestep, friction_per_ps=args.friction, check_every_fs=args.check_every,
        threshold_A=args.threshold, contact_A=args.contact if args.contact > 0 else None, seed=args.seed,
        device=args.device,
    )

    def progress(time_ps: float, unstable_fraction: float) -> None:
        print(f"{time_ps:9.3f} ps  unstable {unstable_fraction:5.1%}", flush=True)

    result = measure_model_file_stability(args.model, args.system, settings, reference_path=args.reference,
                                          progress=None if args.quiet else progress)
    times = ", ".join(f"{t:.2f}" for t in result.times_to_instability_ps)
    mae = "n/a (no stable frames)" if result.distance_histogram_mae is None else f"{result.distance_histogram_mae:.3f}"
    print(f"{args.model}: {settings.replicas} replicas, Langevin {settings.temperature_K:g} K, "
          f"{settings.timestep_fs:g} fs; start frames: {result.start_frames_from}")
    contact = f" or two atoms closer than {settings.contact_A:g} A" if settings.contact_A else ""
    print(f"time to instability (bond deviation > {settings.threshold_A:g} A{contact}): "
          f"{result.mean_ps:.2f} +- {result.std_ps:.2f} ps (run length {settings.time_ps:g} ps); "
          f"stable replicas {1 - sum(result.became_unstable) / settings.replicas:.0%}")
    print(f"per replica (ps): {times}")
    print(f"h(r) MAE of stable frames: {mae}; {result.seconds:.0f} s, {1e3 * result.seconds_per_step:.1f} ms/step")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=1))
        print(f"wrote {out}")
    return 0


def stable_config_from_args(args):
    """The :class:`~mlpot.stable.config.StableConfig` of ``mlpot stable train``: the YAML file, then flags, then
    ``--set``."""
    from mlpot.config import apply_override
    from mlpot.stable.config import load_stable_config

    config = load_stable_config(args.config)
    if args.max_minutes is not None:
        config.run.max_minutes = args.max_minutes
    if args.out:
        config.out = args.out
    for assignment in args.set:
        apply_override(config, assignment)
    return config


def _cmd_stable(args) -> int:
    from mlpot.stable.trainer import StableInterrupted, stable_train

    config = stable_config_from_args(args)
    if args.print_config:
        from mlpot.config import config_yaml

        print(config_yaml(config), end="")
        return 0
    try:
        result = stable_train(config, resume=args.resume, quiet=args.quiet)
    except StableInterrupted as stop:
        print(f"mlpot stable: {stop}", file=sys.stderr)
        return 130
    before, after = result.metrics["test_errors_before"], result.metrics["test_errors_after"]
    print(f"{result.cycles_done} cycles, {result.learning_steps} learning steps ({result.stopped_because}); "
          f"model file {result.model_path}")
    if before and after:
        print(f"test force MAE {before['forces_mae']:.1f} -> {after['forces_mae']:.1f} meV/A")
    print(f"log, plots and metrics in {result.out}")
    return 0

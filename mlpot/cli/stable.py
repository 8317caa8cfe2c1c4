"""``mlpot stable`` (StABlE fine-tuning) and ``mlpot stability`` (its time-to-instability measurement)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mlpot.cli.common import add_data_arguments, data_spec, parse_hyperparameters  # noqa: F401


def register(sub) -> None:
    """Add this group's commands to the ``mlpot`` subparsers ``sub``."""
    p = sub.add_parser("stability", help="time to instability of a model's replicas (StABlE's evaluation)",
                       description="Run independent Langevin replicas of a molecule with the model, starting from "
                                   "reference frames (the model's test split when known), and time the first "
                                   "bond-length deviation above the threshold in each.")
    p.add_argument("model", help="model file")
    p.add_argument("--system", default="ethanol", help="shipped system with reference data (default ethanol)")
    p.add_argument("--reference", default=None, help="labelled frames of the molecule instead of the system's data")
    p.add_argument("--replicas", type=int, default=32, help="independent replicas (default 32)")
    p.add_argument("--time", default="10ps", help="simulated time per replica, e.g. 10ps, 500fs (default 10ps)")
    p.add_argument("--temperature", type=float, default=500.0, help="K (default 500)")
    p.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    p.add_argument("--friction", type=float, default=1.0, help="Langevin friction, 1/ps (default 1)")
    p.add_argument("--check-every", type=float, default=50.0, help="fs between stability checks (default 50)")
    p.add_argument("--threshold", type=float, default=0.5, help="bond-length deviation that is unstable, A (default 0.5)")
    p.add_argument("--contact", type=float, default=0.7,
                   help="two atoms closer than this are unstable, A (default 0.7; 0: bonds only, as StABlE)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.add_argument("--quiet", action="store_true", help="no line per check")
    p.set_defaults(func=_cmd_stability)

    p = sub.add_parser("stable", help="fine-tune a trained model so its simulations stay physical (StABlE)",
                       description="Alternate Nose-Hoover replica simulations until most replicas go unstable with "
                                   "learning steps on the Boltzmann-estimator gradient of the h(r) loss plus the "
                                   "energy/force loss; checkpoints every step; writes model.pt, log.csv and plots.")
    p.add_argument("config", help="YAML config (sections data, simulation, learning, run; see mlpot.stable.config)")
    p.add_argument("--resume", action="store_true", help="continue the run in the config's out directory")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one config key")
    p.add_argument("--quiet", action="store_true", help="no line per segment / learning step")
    p.set_defaults(func=_cmd_stable)


def _cmd_stability(args) -> int:
    from mlpot.stable.evaluation import StabilitySettings, measure_model_file_stability
    from mlpot.units import parse_duration_ps

    if args.contact < 0:
        raise ValueError(f"--contact is a distance in Å (0 switches the contact check off), got {args.contact}")
    settings = StabilitySettings(
        replicas=args.replicas, time_ps=parse_duration_ps(args.time), temperature_K=args.temperature,
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


def _cmd_stable(args) -> int:
    from mlpot.stable.config import load_stable_config
    from mlpot.stable.trainer import StableInterrupted, stable_train
    from mlpot.train.config import apply_override

    config = load_stable_config(args.config)
    for assignment in args.set or []:
        apply_override(config, assignment)
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

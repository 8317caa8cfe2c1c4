"""``mlpot`` command line: thin argument parsing over library functions users can call too.

    mlpot new-model --arch nequip --species H,C,N,O --cutoff 5.0 -o model.pt
    mlpot info model.pt
    mlpot md --model model.pt --system alanine-dipeptide --engine openmm --steps 5000 --out traj.dcd
    mlpot systems
    mlpot train config.yaml                      (or: mlpot train --data FILE --arch nequip --out DIR)
    mlpot train config.yaml --resume
    mlpot eval runs/eth/model.pt --data test.extxyz
    mlpot data inspect my.extxyz
    mlpot pips train --system double-well --out runs/dw
    mlpot pips train --system alanine-dipeptide --out runs/ad ; mlpot pips sample runs/ad --paths 64
    mlpot pips report runs/ad                    (policy vs unbiased and steered MD: table + PNGs)
    mlpot stability model.pt --system ethanol --replicas 32 --time 10ps --temperature 500
    mlpot stable config.yaml [--resume] [--set learning.lr=0.001]   (StABlE fine-tuning)
    mlpot demo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_hyperparameters(pairs: List[str]) -> Dict[str, Any]:
    """``["key=value", ...]`` (the ``--hp`` options) → ``{key: value}``; a value is read as JSON (numbers, true,
    lists), else kept as text."""
    result = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"mlpot: --hp expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        result[key.strip()] = _parse_value(value)
    return result


def new_model(arch: str, species: List[str], cutoff: float, out: Path, dtype: str = "float32", size: str = "default",
              hyperparameters: Optional[Dict[str, Any]] = None, seed: int = 0, energy_scale: float = 1.0) -> Dict[str, Any]:
    """Build a randomly initialised model and write it as a model file; returns its metadata."""
    from mlpot.deploy import save_model
    from mlpot.models import build_model, describe

    description = describe(arch, species, cutoff, dtype=dtype, size=size, hyperparameters=hyperparameters,
                           energy_scale=energy_scale)
    model = build_model(description, seed=seed)
    return save_model(model, description, out, provenance={"created_by": "mlpot new-model", "seed": seed,
                                                           "trained": False})


def format_metadata(metadata: Dict[str, Any], path: Path) -> str:
    """Human-readable summary of a model file's metadata."""
    lines = [f"model file     {path}"]
    lines.append(f"format         {metadata['format']} v{metadata['format_version']}")
    lines.append(f"architecture   {metadata['arch']}  ({metadata['dtype']})")
    lines.append(f"species        {', '.join(metadata['species'])}")
    lines.append(f"cutoff         {metadata['cutoff']} Å")
    lines.append(f"units          length {metadata['units']['length']}, energy {metadata['units']['energy']}")
    lines.append("hyperparameters")
    for key, value in metadata["hyperparameters"].items():
        lines.append(f"  {key:<22} {value}")
    shifts = ", ".join(f"{s}: {e:.6g}" for s, e in zip(metadata["species"], metadata["energy_shift"]))
    lines.append(f"energy shift   {shifts} eV;  energy scale {metadata['energy_scale']:.6g} eV")
    lines.append("versions       " + ", ".join(f"{k} {v}" for k, v in metadata["versions"].items()))
    lines.append(f"created        {metadata['created']}")
    lines.append(f"content hash   {metadata['content_hash']}")
    if metadata.get("seal"):
        lines.append(f"seal           intact (sha256 {metadata['seal']} over code, weights and metadata)")
    else:
        lines.append("seal           none: a format-1 file, its code and metadata cannot be verified "
                     "(mlpot rebuild MODEL -o NEW.pt writes a sealed copy)")
    training = (metadata.get("provenance") or {}).get("training")
    if training:
        files = ", ".join(entry["path"] for entry in training["data_files"])
        sizes = training["split_sizes"]
        lines.append(f"trained on     {files} ({sizes['train']} train / {sizes['val']} val / {sizes['test']} test "
                     f"frames), {training['epochs']} epochs, {training['training_time_s'] / 60:.1f} min")
        test = training["metrics"].get("test") or training["metrics"].get("val") or {}
        if test:
            lines.append(f"test errors    E MAE {test.get('energy_per_atom_mae', float('nan')):.3g} meV/atom, "
                         f"F MAE {test.get('forces_mae', float('nan')):.3g} meV/Å (training code, best EMA weights)")
    else:
        lines.append(f"provenance     {json.dumps(metadata.get('provenance'))}")
    return "\n".join(lines)


def _cmd_new_model(args) -> int:
    species = [s for s in args.species.replace(" ", "").split(",") if s]
    metadata = new_model(args.arch, species, args.cutoff, Path(args.output), dtype=args.dtype, size=args.size,
                         hyperparameters=parse_hyperparameters(args.hp), seed=args.seed, energy_scale=args.energy_scale)
    print(f"wrote {args.output}: {metadata['arch']} model for {', '.join(metadata['species'])}, "
          f"cutoff {metadata['cutoff']} Å, {metadata['dtype']}")
    return 0


def _cmd_info(args) -> int:
    from mlpot.deploy import read_metadata

    metadata = read_metadata(args.model)
    print(json.dumps(metadata, indent=1) if args.json else format_metadata(metadata, Path(args.model)))
    return 0


def _cmd_rebuild(args) -> int:
    from mlpot.deploy import load_model, rebuild_model, save_model

    from mlpot.deploy import read_metadata

    changes = parse_hyperparameters(args.hp)
    if not changes and read_metadata(args.model)["format_version"] >= 2:  # a format-1 file: written again, sealed
        raise ValueError("nothing to change: give at least one --hp KEY=VALUE")
    if Path(args.output).resolve() == Path(args.model).resolve():
        raise ValueError("write the rebuilt model to a new file (-o), not over the one it is rebuilt from")
    deployed = load_model(args.model)
    model, description = rebuild_model(deployed, changes)
    provenance = dict(deployed.metadata.get("provenance") or {})
    provenance["rebuilt_from"] = {"path": str(args.model), "content_hash": deployed.metadata["content_hash"],
                                  "changes": changes}
    save_model(model, description, args.output, provenance=provenance)
    done = ", ".join(f"{k}={v}" for k, v in changes.items()) or "no change (sealed)"
    print(f"wrote {args.output}: {args.model} with {done}")
    return 0


def _print_md_result(result) -> None:
    print(f"{result.engine}: {result.steps} steps of {result.timestep_fs} fs on {result.system} "
          f"({result.n_atoms} atoms) in {result.wall_seconds:.1f} s: {result.steps_per_second:.1f} steps/s, "
          f"{result.ns_per_day:.3f} ns/day")
    print(f"final potential energy {result.final_potential_energy_eV:.4f} eV, temperature {result.final_temperature_K:.0f} K")
    print(f"trajectory {result.trajectory} (topology {result.topology})")


def _cmd_md(args) -> int:
    import warnings

    from mlpot.plugins.simulate import run_md

    with warnings.catch_warnings():  # a warning is one line, as errors are
        warnings.showwarning = lambda message, *_: print(f"mlpot md: warning: {message}", file=sys.stderr)
        result = run_md(args.model, args.system, engine=args.engine, steps=args.steps,
                        temperature_K=args.temperature, timestep_fs=args.timestep, friction_per_ps=args.friction,
                        out=args.out, report_interval=args.report_interval, seed=args.seed, platform=args.platform,
                        device=args.device, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
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
    from mlpot.plugins.simulate import run_md
    from mlpot.systems import SYSTEMS_DIR
    from mlpot.train import TrainConfig, train

    out = Path(args.out)
    config = TrainConfig.from_dict({
        "data": {"files": [str(SYSTEMS_DIR / "ethanol" / "dft.extxyz")], "val_fraction": 0.05, "test_fraction": 0.1},
        "model": {"arch": args.arch},
        "training": {"epochs": 100000, "max_time_minutes": args.minutes, "batch_size": 5, "lr": 0.01},
        "out": str(out / "train"),
    })
    resume = (out / "train" / "checkpoint.pt").exists()
    print(f"[1/2] training a {args.arch} model on the shipped ethanol B3LYP/6-31G* set for {args.minutes:g} min "
          f"-> {out / 'train'}{' (continuing the previous demo run)' if resume else ''}")
    result = train(config, resume=resume)
    print(f"test split ({result.metrics['test']['frames']} frames) after {result.epochs_done} epochs:")
    print(format_metrics(result.metrics["test"]))
    print(f"[2/2] {args.steps} steps of OpenMM Langevin MD of ethanol at 300 K through openmm-torch's TorchForce")
    md = run_md(result.model_path, "ethanol", engine="openmm", steps=args.steps, temperature_K=300.0,
                timestep_fs=0.5, out=out / "traj.dcd", report_interval=100,
                overwrite=True)  # each demo's MD starts afresh from the (continued) model
    _print_md_result(md)
    return 0




def _data_spec(args):
    from mlpot.data import DataSpec

    return DataSpec(energy_key=args.energy_key, forces_key=args.forces_key, stress_key=args.stress_key,
                    energy_unit=args.energy_unit, length_unit=args.length_unit, index=args.index)


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--energy-key", default="energy", help="name of the energy label (default energy)")
    p.add_argument("--forces-key", default="forces", help="name of the forces label (default forces)")
    p.add_argument("--stress-key", default="stress", help="name of the stress or virial label (default stress)")
    p.add_argument("--energy-unit", default="eV", help="eV, meV, kcal/mol, kJ/mol or Hartree (default eV)")
    p.add_argument("--length-unit", default="Angstrom", help="Angstrom, nm or Bohr (default Angstrom)")
    p.add_argument("--index", default=":", help="frames to use, ASE syntax (default ':' = all)")


def train_config_from_args(args):
    """The :class:`TrainConfig` of ``mlpot train``: the YAML file (if any), then flags, then ``--set``."""
    from mlpot.train import TrainConfig, apply_override, load_config

    config = load_config(args.config) if args.config else TrainConfig()
    if args.data:
        config.data.files = list(args.data)
    for flag, section, key in (("arch", "model", "arch"), ("size", "model", "size"), ("epochs", "training", "epochs"),
                               ("device", "training", "device"), ("max_time", "training", "max_time_minutes")):
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

    metrics, accumulator = evaluate_model_file(args.model, args.data, _data_spec(args), device=args.device,
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

    report = inspect_frames(read_many(args.files, _data_spec(args)), cutoff=args.cutoff)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 1 if report["problems"] else 0


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


def build_parser() -> argparse.ArgumentParser:
    import mlpot

    parser = argparse.ArgumentParser(prog="mlpot", description="Learned equivariant interatomic potentials for OpenMM and ASE.")
    parser.add_argument("--version", action="version", version=f"mlpot {mlpot.__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error instead of its one-line message (also MLPOT_DEBUG=1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the free cores; also MLPOT_NUM_THREADS)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("new-model", help="write a randomly initialised model file",
                       description="Build an untrained model (EGNN or NequIP-style) and write it as a TorchScript model file.")
    p.add_argument("--arch", choices=["egnn", "nequip"], required=True, help="architecture")
    p.add_argument("--species", required=True, help="comma-separated element symbols, e.g. H,C,N,O")
    p.add_argument("--cutoff", type=float, default=5.0, help="neighbour cutoff in Å (default 5.0)")
    p.add_argument("--size", default="default", help="hyperparameter preset: default or nequip-matched")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override one hyperparameter, e.g. --hp num_layers=4 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the initial weights")
    p.add_argument("--energy-scale", type=float, default=1.0,
                   help="eV per unit of network output (training sets it from the data; default 1.0)")
    p.add_argument("-o", "--output", required=True, help="model file to write (.pt)")
    p.set_defaults(func=_cmd_new_model)

    p = sub.add_parser("info", help="print the metadata stored in a model file")
    p.add_argument("model", help="model file")
    p.add_argument("--json", action="store_true", help="print the raw JSON metadata")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("rebuild", help="write a model file again with changed settings (e.g. edge_chunk_size)",
                       description="Rebuild a model file's network from its metadata with changed hyperparameters, "
                                   "load its weights and write a new model file. Only changes that keep the "
                                   "network's shape work, such as EGNN's edge_chunk_size (speed on large systems).")
    p.add_argument("model", help="model file to rebuild")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="hyperparameter to change, e.g. --hp edge_chunk_size=4096 (repeatable)")
    p.add_argument("-o", "--output", required=True, help="model file to write (.pt)")
    p.set_defaults(func=_cmd_rebuild)

    p = sub.add_parser("md", help="run molecular dynamics with a model",
                       description="Langevin MD of a named system (see `mlpot systems`) or a PDB file.")
    p.add_argument("--model", required=True, help="model file")
    p.add_argument("--system", default="alanine-dipeptide", help="system name or PDB path (default alanine-dipeptide)")
    p.add_argument("--engine", choices=["openmm", "ase"], default="openmm")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    p.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    p.add_argument("--friction", type=float, default=1.0, help="Langevin friction, 1/ps (default 1)")
    p.add_argument("--report-interval", type=int, default=100, help="steps between frames and checks (default 100)")
    p.add_argument("--out", default="traj.dcd", help="DCD trajectory; topology written beside it as .pdb")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--platform", default=None, help="OpenMM platform (default CUDA if present, else CPU)")
    p.add_argument("--device", default="cpu", help="torch device for the ASE engine")
    p.add_argument("--resume", action="store_true",
                   help="continue the run of OUT from its checkpoint OUT.chk, with the same settings (OpenMM)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run at OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_md)

    p = sub.add_parser("systems", help="list the shipped molecular systems")
    p.set_defaults(func=_cmd_systems)

    p = sub.add_parser("train", help="train a model on energies, forces and stress",
                       description="Train an EGNN or NequIP-style model from a YAML config (see mlpot.train.config) "
                                   "or from flags; writes the model file, log.csv, plots and metrics.json. Stress: "
                                   "periodic frames with stress labels are trained on them unless "
                                   "training.stress_weight is set (0 turns stress off, with a warning). A time "
                                   "limit (--max-time) includes the final evaluation and is kept to within one "
                                   "optimiser step.")
    p.add_argument("config", nargs="?", help="YAML config file")
    p.add_argument("--data", nargs="+", help="training data file(s) (extxyz, ASE db, npz)")
    p.add_argument("--arch", choices=["egnn", "nequip"], default=None)
    p.add_argument("--size", default=None, help="hyperparameter preset: default or nequip-matched")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-time", type=float, default=None, help="stop after this many minutes of training")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--out", default=None, help="run directory")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set training.lr=0.01 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output directory")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="fine-tune: start from this model file's network and weights (model.init_from); per-species "
                        "reference energies are refitted when the data's level of theory differs")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="errors of a model file on labelled data, with parity plots")
    p.add_argument("model", help="model file")
    p.add_argument("--data", nargs="+", required=True, help="labelled data file(s)")
    p.add_argument("--out", default=None, help="folder for metrics.json and parity.png (default MODEL_eval)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-unit-check", action="store_true", help="skip the unit sanity check of the data")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data_arguments(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("inspect", help="frames, elements, energy/force statistics and problems of a dataset")
    q.add_argument("files", nargs="+", help="data file(s)")
    q.add_argument("--json", action="store_true")
    q.add_argument("--cutoff", type=float, default=5.0,
                   help="model cutoff in Å that periodic cells must be at least twice as wide as (default 5.0)")
    _add_data_arguments(q)
    q.set_defaults(func=_cmd_data_inspect)

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

    p = sub.add_parser("demo", help="train on the shipped ethanol DFT set, then run the model in OpenMM")
    p.add_argument("--arch", choices=["egnn", "nequip"], default="nequip")
    p.add_argument("--minutes", type=float, default=3.0, help="training time (default 3)")
    p.add_argument("--steps", type=int, default=4000, help="MD steps of 0.5 fs (default 4000)")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.set_defaults(func=_cmd_demo)
    return parser


# Errors a user's input can cause (a bad file, value, folder, or a simulation that blew up): one line, exit 2.
EXPECTED_ERRORS = (ValueError, OSError, KeyError, TypeError, NotImplementedError, FloatingPointError, RuntimeError)


def _one_line(error: BaseException) -> str:
    """The error's message on one line (KeyError's quotes dropped, torch's multi-line text folded)."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = " ".join(str(message).split())
    return text or type(error).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """Run one ``mlpot`` command; returns the exit code (0 success, 2 bad input or failed run, 130 interrupted).

    Every error becomes one line on stderr; ``--debug`` (anywhere on the command line) or ``MLPOT_DEBUG=1``
    shows the traceback instead.
    """
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("MLPOT_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch  # noqa: F401  before any command imports openmm: openmm-torch's plugin needs torch's libraries
    try:
        if args.threads is not None:
            os.environ["MLPOT_NUM_THREADS"] = str(args.threads)
        from mlpot import runtime

        runtime.configure_threads()
        return args.func(args)
    except KeyboardInterrupt:
        print(f"mlpot {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        expected = isinstance(error, EXPECTED_ERRORS) or type(error).__name__ == "OpenMMException"
        if expected and not _is_internal(error):
            print(f"mlpot {args.command}: error: {_one_line(error)}", file=sys.stderr)
            return 2
        print(f"mlpot {args.command}: internal error ({type(error).__name__}: {_one_line(error)[:300]}); "
              "please report it, with the output of the same command run with --debug", file=sys.stderr)
        return 1


def _is_internal(error: BaseException) -> bool:
    """A programming error rather than bad input: Python's own complaints about calls and attributes."""
    text = str(error)
    return isinstance(error, TypeError) and ("positional argument" in text or "unexpected keyword" in text
                                              or "object is not callable" in text)


if __name__ == "__main__":
    sys.exit(main())

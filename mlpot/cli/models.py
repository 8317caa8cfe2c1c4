"""``mlpot new-model``, ``mlpot info``, ``mlpot rebuild``: writing and reading model files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from mlpot.cli.common import add_data_arguments, data_spec, parse_hyperparameters  # noqa: F401


def register(sub) -> None:
    """Add this group's commands to the ``mlpot`` subparsers ``sub``."""
    p = sub.add_parser("new-model", help="write a randomly initialised model file",
                       description="Build an untrained model (EGNN or NequIP-style) and write it as a "
                                   "TorchScript model file.")
    p.add_argument("--arch", choices=["egnn", "nequip"], required=True, help="architecture")
    p.add_argument("--species", required=True, help="comma-separated element symbols, e.g. H,C,N,O")
    p.add_argument("--cutoff", type=float, default=5.0, help="neighbour cutoff in Å")
    p.add_argument("--size", default="default", help="hyperparameter preset: default or nequip-matched")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="precision of the network")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override one hyperparameter, e.g. --hp num_layers=4 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the initial weights")
    p.add_argument("--energy-scale", type=float, default=1.0,
                   help="eV per unit of network output (training sets it from the data)")
    p.add_alias("--output", p.add_argument("-o", "--out", required=True, help="model file to write (.pt)"))
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
    p.add_alias("--output", p.add_argument("-o", "--out", required=True, help="model file to write (.pt)"))
    p.set_defaults(func=_cmd_rebuild)


def new_model(arch: str, species: List[str], cutoff: float, out: Path, dtype: str = "float32", size: str = "default",
              hyperparameters: Optional[Dict[str, Any]] = None, seed: int = 0,
              energy_scale: float = 1.0) -> Dict[str, Any]:
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
    if metadata.get("compiled"):
        compiled = metadata["compiled"]
        lines.append(f"compiled       {compiled['backend']} for {compiled['device']}, torch {compiled['torch']}, from "
                     f"{compiled['source']['file']} in {compiled['compile_time_s']} s (mlpot compile)")
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
    metadata = new_model(args.arch, species, args.cutoff, Path(args.out), dtype=args.dtype, size=args.size,
                         hyperparameters=parse_hyperparameters(args.hp), seed=args.seed, energy_scale=args.energy_scale)
    print(f"wrote {args.out}: {metadata['arch']} model for {', '.join(metadata['species'])}, "
          f"cutoff {metadata['cutoff']} Å, {metadata['dtype']}")
    return 0


def _cmd_info(args) -> int:
    from mlpot.deploy import read_metadata

    metadata = read_metadata(args.model)
    print(json.dumps(metadata, indent=1) if args.json else format_metadata(metadata, Path(args.model)))
    return 0


def _cmd_rebuild(args) -> int:
    from mlpot.deploy import load_model, read_metadata, rebuild_model, save_model

    changes = parse_hyperparameters(args.hp)
    if not changes and read_metadata(args.model)["format_version"] >= 2:  # a format-1 file: written again, sealed
        raise ValueError("nothing to change: give at least one --hp KEY=VALUE")
    if Path(args.out).resolve() == Path(args.model).resolve():
        raise ValueError("write the rebuilt model to a new file (-o), not over the one it is rebuilt from")
    deployed = load_model(args.model)
    model, description = rebuild_model(deployed, changes)
    provenance = dict(deployed.metadata.get("provenance") or {})
    provenance["rebuilt_from"] = {"path": str(args.model), "content_hash": deployed.metadata["content_hash"],
                                  "changes": changes}
    save_model(model, description, args.out, provenance=provenance)
    done = ", ".join(f"{k}={v}" for k, v in changes.items()) or "no change (sealed)"
    print(f"wrote {args.out}: {args.model} with {done}")
    return 0

"""``mlpot compile``: a model file compiled ahead of time (torch.export + AOTInductor) into a ``.pt2`` file."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    """Add this group's commands to the ``mlpot`` subparsers ``sub``."""
    p = sub.add_parser(
        "compile", help="compile a model file into native code (.pt2) for ASE",
        description="Export a model file's energy and forces with torch.export and compile them with AOTInductor "
                    "into a .pt2 file, which MLPotCalculator runs like the model file, faster on small systems. "
                    "The .pt2 file keeps the model file's metadata and seal (mlpot info shows them) and serves "
                    "every system size; it runs only with the torch version and on the device it was compiled "
                    "for. OpenMM's TorchForce still takes the TorchScript model file.\n\n"
                    "    mlpot compile model.pt -o model.pt2\n"
                    "    mlpot info model.pt2")
    p.add_argument("model", help="model file to compile (.pt, TorchScript)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device the compiled code runs on")
    p.add_argument("-o", "--out", default=None, help="compiled file to write (default: MODEL with .pt2)")
    p.set_defaults(func=_cmd_compile)


def _cmd_compile(args) -> int:
    from mlpot.compiled import compile_model_file

    out = Path(args.out) if args.out else Path(args.model).with_suffix(".pt2")
    metadata = compile_model_file(args.model, out, device=args.device)
    compiled = metadata["compiled"]
    size_mb = out.stat().st_size / 1e6
    print(f"wrote {out}: {metadata['arch']} model for {', '.join(metadata['species'])} compiled for "
          f"{compiled['device']} with torch {compiled['torch']} in {compiled['compile_time_s']:.0f} s, "
          f"{size_mb:.1f} MB")
    return 0

"""``mlpot`` command line: thin argument parsing over library functions users can call too.

    mlpot new-model --arch nequip --species H,C,N,O --cutoff 5.0 -o model.pt
    mlpot info model.pt
    mlpot rebuild model.pt --hp edge_chunk_size=4096 -o fast.pt
    mlpot md --model model.pt --system alanine-dipeptide --engine openmm --steps 5000 --out traj.dcd
    mlpot systems
    mlpot train config.yaml [--set training.lr=0.01] [--max-minutes 60]   (or: --data FILE --arch nequip --out DIR)
    mlpot train config.yaml --resume
    mlpot train config.yaml --print-config      (the resolved config, defaults included; runs nothing)
    mlpot eval runs/eth/model.pt --data test.extxyz
    mlpot data inspect my.extxyz
    mlpot pips train --system double-well --out runs/dw
    mlpot pips train --system alanine-dipeptide --out runs/ad ; mlpot pips sample runs/ad --paths 64
    mlpot pips report runs/ad                    (policy vs unbiased and steered MD: table + PNGs)
    mlpot stable train config.yaml [--resume] [--set learning.lr=0.001]   (StABlE fine-tuning)
    mlpot stable evaluate model.pt --system ethanol --replicas 32 --duration 10ps --temperature 500
    mlpot demo [--max-minutes 3]

One spelling per option: ``--out`` for what a command writes, ``--max-minutes`` for wall-time limits,
``--set SECTION.KEY=VALUE`` and ``--print-config`` for commands that read a YAML config, and every
``--help`` shows the defaults. Old spellings still work but are not shown: ``--output`` (new-model,
rebuild), ``--max-time`` (train), ``--minutes`` (demo), ``--time`` (stable evaluate), ``mlpot stable
CONFIG`` (= ``stable train``) and ``mlpot stability`` (= ``stable evaluate``).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from mlpot.cli import compiled, md, models, pips, stable, train
from mlpot.cli.common import EXPECTED_ERRORS, CommandParser, _is_internal, _one_line, parse_hyperparameters  # noqa: F401
from mlpot.cli.models import format_metadata, new_model  # noqa: F401
from mlpot.cli.train import train_config_from_args  # noqa: F401


def build_parser() -> argparse.ArgumentParser:
    import mlpot

    parser = CommandParser(prog="mlpot", description="Learned equivariant interatomic potentials for OpenMM and ASE.")
    parser.add_argument("--version", action="version", version=f"mlpot {mlpot.__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error instead of its one-line message "
                             "(also MLPOT_DEBUG=1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the free cores; also MLPOT_NUM_THREADS)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (models, compiled, md, train, pips, stable):
        group.register(sub)
    return parser


def _command_index(argv: List[str]) -> Optional[int]:
    """Where the command's name is in ``argv`` (after ``mlpot``'s own options), or None."""
    at = 0
    while at < len(argv) and argv[at].startswith("-"):
        at += 2 if argv[at] == "--threads" else 1
    return at if at < len(argv) else None


def main(argv: Optional[List[str]] = None) -> int:
    """Run one ``mlpot`` command; returns the exit code (0 success, 2 bad input or failed run, 130 interrupted).

    Every error becomes one line on stderr; ``--debug`` (anywhere on the command line) or ``MLPOT_DEBUG=1``
    shows the traceback instead.
    """
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("MLPOT_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    at = _command_index(argv)
    if at is not None and argv[at] == "stable":
        argv = stable.expand_old_form(argv, at)
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

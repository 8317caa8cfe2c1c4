"""``mlpot eval``: errors of a deployed model file on labelled data, with parity plots.

It runs the model file exactly as the ASE and OpenMM plugins do (the compiled ``compute``, one
structure at a time), so the numbers are those of the deployed potential, not of the training code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, Sequence

import torch
from tqdm import tqdm

from mlpot.data import DataSpec, read_many, validate_frames
from mlpot.deploy import load_model
from mlpot.train.metrics import ErrorAccumulator
from mlpot.train.report import plot_parity


def evaluate_model_file(
    model_path: str | Path,
    files: Sequence[str | Path],
    spec: DataSpec = DataSpec(),
    device: str = "cpu",
    stress: bool = True,
    check_units: bool = True,
    progress: bool = False,
) -> tuple[Dict[str, float], ErrorAccumulator]:
    """Metrics (meV units, see :mod:`mlpot.train.metrics`) and the accumulator holding parity pairs;
    ``progress`` shows a bar over the frames on stderr."""
    model = load_model(model_path, device=device)
    frames = read_many(files, spec)
    validate_frames(frames, model.atomic_numbers, check_units=check_units)
    accumulator = ErrorAccumulator(keep=True)
    for frame in tqdm(frames, desc="eval", unit="frame", disable=not progress, file=sys.stderr, leave=False):
        pbc = torch.from_numpy(frame.pbc)
        want_stress = stress and frame.stress is not None and bool(pbc.all())
        try:
            result = model.compute(
                torch.from_numpy(frame.positions).to(device), torch.from_numpy(frame.numbers).to(device),
                torch.from_numpy(frame.cell).to(device), pbc.to(device), True, want_stress,
            )
        except ValueError as error:
            raise frame.error(str(error)) from None
        accumulator.add_values(
            result["energy"].reshape(1).double().cpu(), torch.tensor([frame.energy]), torch.tensor([frame.n_atoms]),
            result["forces"].double().cpu(), torch.from_numpy(frame.forces),
            result["stress"].double().cpu().reshape(1, 3, 3) if want_stress else None,
            torch.from_numpy(frame.stress).reshape(1, 3, 3) if want_stress else None,
        )
    metrics = {"frames": len(frames), **accumulator.result()}
    return metrics, accumulator


def write_evaluation(metrics: Dict[str, float], accumulator: ErrorAccumulator, out: Path, title: str) -> None:
    """``metrics.json`` and ``parity.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    plot_parity(accumulator.pairs, metrics, out / "parity.png", title=title)


def format_metrics(metrics: Dict[str, float]) -> str:
    """A small table of MAE / RMSE per quantity."""
    from mlpot.train.metrics import QUANTITIES, UNITS

    lines = [f"{'quantity':<18}{'MAE':>12}{'RMSE':>12}  unit"]
    for name in QUANTITIES:
        if f"{name}_mae" in metrics:
            lines.append(f"{name:<18}{metrics[f'{name}_mae']:>12.3f}{metrics[f'{name}_rmse']:>12.3f}  {UNITS[name]}")
    return "\n".join(lines)

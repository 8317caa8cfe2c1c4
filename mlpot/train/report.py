"""What a training run writes for people: the CSV log, the learning curve and parity plots (PNG).

Plots are matplotlib ``Figure`` objects saved straight to files: no pyplot, so no global backend switch
and no figure registry in the caller's process (the same style as :mod:`mlpot.pips.report_plots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import numpy as np
from matplotlib.figure import Figure


def plot_learning_curve(rows: Sequence[Dict[str, float]], path: Path) -> None:
    """Training and validation force MAE and per-atom energy MAE against epoch, log scale."""
    figure = Figure(figsize=(13, 3.8))
    axes = figure.subplots(1, 3)
    epochs = [row["epoch"] for row in rows]
    for axis, key, label in (
        (axes[0], "forces_mae", "force MAE (meV/Å)"),
        (axes[1], "energy_per_atom_mae", "energy MAE (meV/atom)"),
    ):
        for split in ("train", "val"):
            values = [row.get(f"{split}_{key}", np.nan) for row in rows]
            if not np.all(np.isnan(values)):
                axis.plot(epochs, values, label=split)
        axis.set_yscale("log")
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.legend()
    axes[2].plot(epochs, [row["lr"] for row in rows])
    axes[2].set_yscale("log")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("learning rate")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_parity(pairs: Dict[str, tuple], metrics: Dict[str, float], path: Path, title: str = "") -> None:
    """Predicted against reference per-atom energies and force components (and stress, if any)."""
    panels = [
        ("energy_per_atom", "energy (eV/atom)", "meV/atom"),
        ("forces", "force component (eV/Å)", "meV/Å"),
        ("stress", "stress component (eV/Å³)", "meV/Å³"),
    ]
    panels = [p for p in panels if len(pairs.get(p[0], ([], []))[0]) > 0]
    figure = Figure(figsize=(4.2 * len(panels), 4.0))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for axis, (name, label, unit) in zip(axes[0], panels):
        reference, predicted = (np.asarray(v) for v in pairs[name])
        if name == "energy_per_atom":  # total energies sit far from zero; show deviations from the mean
            offset = reference.mean()
            reference, predicted = reference - offset, predicted - offset
            label = "energy - mean (eV/atom)"
        axis.scatter(reference, predicted, s=3, alpha=0.4)
        low, high = float(min(reference.min(), predicted.min())), float(max(reference.max(), predicted.max()))
        axis.plot([low, high], [low, high], "k--", lw=0.8)
        axis.set_xlabel(f"reference {label}")
        axis.set_ylabel(f"predicted {label}")
        mae = metrics.get(f"{name}_mae")
        if mae is not None:
            axis.set_title(f"MAE {mae:.3g} {unit}, RMSE {metrics[f'{name}_rmse']:.3g} {unit}", fontsize=9)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)

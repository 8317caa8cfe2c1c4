"""What a StABlE run writes for people (PNG; matplotlib ``Figure`` objects, no pyplot): the fraction of
unstable replicas over simulated time per cycle, h(r) of the model's simulations against the reference,
and the force errors on the test split before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure


def plot_unstable_fraction(rows: Sequence[Dict], path: Path, selected_cycle: Optional[int] = None) -> None:
    """Fraction of replicas found unstable so far against simulated time in the simulation phases of the parent
    (cycle 0), of the selected model and of the last one."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    simulated = sorted({row["cycle"] for row in rows if row["phase"] == "simulate"})
    cycles = sorted({c for c in (simulated[0], selected_cycle, simulated[-1]) if c in simulated}) if simulated else []
    for cycle in cycles:
        points = [(row["time_ps"], row["unstable_fraction_so_far"]) for row in rows
                  if row["phase"] == "simulate" and row["cycle"] == cycle]
        times, fractions = zip(*points)
        label = "parent model" if cycle == 0 else f"after {cycle} learning phase{'s' if cycle > 1 else ''}"
        label += " (selected)" if cycle == selected_cycle and cycle != 0 else ""
        axis.step([0.0, *times], [0.0, *fractions], where="post", label=label)
    axis.set_xlabel("simulated time (ps)")
    axis.set_ylabel("fraction of replicas unstable")
    axis.set_ylim(-0.02, 1.02)
    axis.legend()
    axis.set_title("Nosé–Hoover replicas, training criterion")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_distance_histograms(centres_A: np.ndarray, reference: np.ndarray, before: Optional[np.ndarray],
                             after: Optional[np.ndarray], path: Path) -> None:
    """h(r) (1/Å) of the reference data and of the stable frames simulated before and after fine-tuning."""
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    axis.plot(centres_A, reference, color="black", lw=1.2, label="reference (DFT)")
    if before is not None:
        axis.plot(centres_A, before, lw=1.0, label="parent model")
    if after is not None:
        axis.plot(centres_A, after, lw=1.0, label="after StABlE")
    axis.set_xlabel("r (Å)")
    axis.set_ylabel("h(r) (1/Å)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_force_errors(before: Dict[str, tuple], after: Dict[str, tuple], before_mae_meV_A: float,
                      after_mae_meV_A: float, path: Path) -> None:
    """Histograms of the force-component errors (meV/Å) on the test split, before and after."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for pairs, label, mae in ((before, "parent", before_mae_meV_A), (after, "after StABlE", after_mae_meV_A)):
        reference, predicted = (np.asarray(values) for values in pairs["forces"])
        axis.hist(1000.0 * (predicted - reference), bins=80, histtype="step", label=f"{label} (MAE {mae:.0f} meV/Å)")
    axis.set_xlabel("force error (meV/Å)")
    axis.set_ylabel("force components")
    axis.set_yscale("log")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)

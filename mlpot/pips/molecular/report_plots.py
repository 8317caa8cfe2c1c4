"""The figures of ``mlpot pips report`` (PNG, matplotlib's Agg canvas; no pyplot, no global state).

Dihedral angles in degrees, energies in kJ/mol, time in ps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

Range = Tuple[float, float]
DPI = 120


def _path_line(first_deg: np.ndarray, second_deg: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """One path's (φ, ψ) (n_frames,) each, broken wherever either angle wraps."""
    jumps = np.flatnonzero((np.abs(np.diff(first_deg)) > 180.0) | (np.abs(np.diff(second_deg)) > 180.0)) + 1
    return np.insert(first_deg.astype(float), jumps, np.nan), np.insert(second_deg.astype(float), jumps, np.nan)


def plot_dihedral_paths(paths_deg: Dict[str, Tuple[np.ndarray, np.ndarray]], start_deg: Tuple[float, float],
                        target_deg: Tuple[float, float], target_box_deg: Optional[Tuple[Range, Range]], out: Path,
                        axis_names: Tuple[str, str] = ("φ", "ψ"), target_circle_rad: Optional[float] = None) -> Path:
    """Paths over the (φ, ψ) plane, one panel per method.

    ``paths_deg``: method → (φ, ψ), each (n_paths, n_frames) degrees; start and target marked, the
    target basin ``target_box_deg`` ((φ low, φ high), (ψ low, ψ high)) drawn as a box (None: the
    basin is no box in this plane, none drawn), the literature hit region √(Δφ² + Δψ²) <
    ``target_circle_rad`` (radians; None: none drawn) as a circle around the target, copies
    shifted by 360° drawn too so that it wraps; end points dotted."""
    figure = Figure(figsize=(4.2 * len(paths_deg), 4.2), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, len(paths_deg), squeeze=False)[0]
    for axis, (method, (phi, psi)) in zip(axes, paths_deg.items()):
        for first, second in zip(phi, psi):
            axis.plot(*_path_line(first, second), lw=0.5, alpha=0.6)
        if len(phi):
            axis.scatter(phi[:, -1], psi[:, -1], s=10, c="k", zorder=3, label="path ends")
        if target_box_deg is not None:
            (phi_low, phi_high), (psi_low, psi_high) = (np.clip(bounds, -180.0, 180.0) for bounds in target_box_deg)
            axis.add_patch(Rectangle((phi_low, psi_low), phi_high - phi_low, psi_high - psi_low, fill=False,
                                     ec="red", lw=1.2, ls="--", label="target basin"))
        if target_circle_rad is not None:
            _draw_wrapped_circle(axis, target_deg, float(np.rad2deg(target_circle_rad)))
        axis.plot(*start_deg, marker="*", ms=14, c="tab:blue", mec="k", ls="", label="start", zorder=4)
        axis.plot(*target_deg, marker="*", ms=14, c="tab:red", mec="k", ls="", label="target", zorder=4)
        axis.set(xlim=(-180, 180), ylim=(-180, 180), xticks=range(-180, 181, 90), yticks=range(-180, 181, 90),
                 xlabel=f"{axis_names[0]} (°)", ylabel=f"{axis_names[1]} (°)", title=f"{method} ({len(phi)} paths)")
        axis.set_aspect("equal")
    axes[0].legend(loc="lower left", fontsize=7)
    figure.savefig(out)
    return out


def _draw_wrapped_circle(axis, centre_deg: Tuple[float, float], radius_deg: float) -> None:
    """The circle of ``radius_deg`` around ``centre_deg`` on the periodic (φ, ψ) plane."""
    for shift_phi in (-360.0, 0.0, 360.0):
        for shift_psi in (-360.0, 0.0, 360.0):
            first = shift_phi == 0.0 and shift_psi == 0.0
            axis.add_patch(Circle((centre_deg[0] + shift_phi, centre_deg[1] + shift_psi), radius_deg, fill=False,
                                  ec="purple", lw=1.0, ls=":", label="literature hit (0.75 rad)" if first else None))


def lowest_barrier_hits(energies_kj_mol: np.ndarray, hits: np.ndarray, count: int) -> List[int]:
    """Indices of the ``count`` successful paths whose maximum energy along the path is lowest
    (fewer if fewer hit). ``energies_kj_mol`` (n_paths, n_frames), ``hits`` (n_paths,) bool."""
    successful = np.flatnonzero(hits)
    order = np.argsort(energies_kj_mol[successful].max(axis=1), kind="stable")
    return successful[order[:count]].tolist()


def plot_energy_profiles(profiles: Dict[str, Tuple[np.ndarray, np.ndarray]], timestep_ps: float, out: Path,
                         count: int = 3, start_energy_kj_mol: Optional[float] = None) -> Path:
    """Unbiased potential energy along the ``count`` lowest-barrier successful paths of each method.

    ``profiles``: method → (energies (n_paths, n_frames) kJ/mol, hits (n_paths,) bool);
    ``start_energy_kj_mol``, the minimised start's energy, is drawn dashed (None: not drawn); the
    legend gives each path's barrier above it."""
    figure = Figure(figsize=(4.2 * len(profiles), 3.6), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, len(profiles), squeeze=False, sharey=True)[0]
    for axis, (method, (energies, hits)) in zip(axes, profiles.items()):
        best = lowest_barrier_hits(energies, hits, count)
        for index in best:
            time_ps = np.arange(energies.shape[1]) * timestep_ps
            barrier = "" if start_energy_kj_mol is None else f" (+{energies[index].max() - start_energy_kj_mol:.0f})"
            axis.plot(time_ps, energies[index], lw=0.8, label=f"path {index}: max {energies[index].max():.0f}{barrier}")
        if start_energy_kj_mol is not None and np.isfinite(start_energy_kj_mol):
            axis.axhline(start_energy_kj_mol, c="k", lw=0.8, ls="--", label="minimised start")
        if not best:
            axis.text(0.5, 0.5, "no successful path", transform=axis.transAxes, ha="center", va="center")
        else:
            axis.legend(fontsize=7)
        axis.set(xlabel="time (ps)", title=method)
    axes[0].set_ylabel("potential energy (kJ/mol)")
    figure.savefig(out)
    return out


def plot_training_curves(log: Sequence[Dict[str, float]], n_paths: int, out: Path) -> Path:
    """ESS, mean path cost, PICE loss and THP of the training paths against the iteration (THP by
    the target basin and, where the log has it, by the literature test, dashed)."""
    iterations = [row["iteration"] for row in log]
    panels = (("ess", f"ESS (of {n_paths})"), ("mean_cost", "mean path cost S"), ("loss", "PICE surrogate loss"),
              ("thp", "THP (training paths)"))
    figure = Figure(figsize=(8.4, 6.0), dpi=DPI, layout="constrained")
    for axis, (key, label) in zip(figure.subplots(2, 2).flat, panels):
        axis.plot(iterations, [row.get(key, np.nan) for row in log], lw=0.9, label="target basin")
        if key == "thp" and any("thp_literature" in row for row in log):
            axis.plot(iterations, [row.get("thp_literature", np.nan) for row in log], lw=0.9, ls="--",
                      label="literature test")
            axis.legend(fontsize=7)
        axis.set(xlabel="iteration", ylabel=label)
    figure.savefig(out)
    return out

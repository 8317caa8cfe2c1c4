"""``mlpot data inspect``: what is in a dataset and what is wrong with it."""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Sequence

import numpy as np
from ase.data import chemical_symbols

from mlpot.data.frames import DataError, Frame
from mlpot.data.statistics import composition_matrix, fit_energy_references
from mlpot.data.validate import validate_frame, validate_frames
from mlpot.validation import positive_number

DEFAULT_CUTOFF_A = 5.0


def check_cell_fits_cutoff(frame: Frame, cutoff: float) -> None:
    """Raise :class:`DataError` when a periodic frame is narrower than ``2 * cutoff`` Å along a periodic axis,
    the same test (and words) with which training and the model refuse it."""
    if not frame.pbc.any():
        return
    import torch

    from mlpot.neighbors import check_positions_and_cell

    try:
        check_positions_and_cell(torch.from_numpy(frame.positions), torch.from_numpy(frame.cell),
                                 torch.from_numpy(frame.pbc), cutoff)
    except ValueError as error:
        problem = str(error).removeprefix("mlpot: ")
        raise frame.error(f"{problem}; training with cutoff {cutoff} Å refuses this frame (--cutoff sets it)") from None


def inspect_frames(frames: Sequence[Frame], cutoff: float = DEFAULT_CUTOFF_A) -> Dict:
    """Counts, elements, energy/force statistics and every problem found (one line each).

    ``cutoff`` (Å) is the model cutoff the periodic cells are checked against (width >= 2 x cutoff).
    """
    cutoff = positive_number("cutoff", cutoff, "Å")
    problems: List[str] = []
    good: List[Frame] = []
    for frame in frames:
        try:
            validate_frame(frame)
            check_cell_fits_cutoff(frame, cutoff)
            good.append(frame)
        except DataError as error:
            problems.append(str(error))
    if good:
        try:
            validate_frames(good, check_units=True)
        except DataError as error:
            problems.append(str(error))
    elements = Counter(chemical_symbols[int(z)] for f in frames for z in f.numbers if 0 < z < len(chemical_symbols))
    report: Dict = {
        "frames": len(frames),
        "frames_without_problems": len(good),
        "periodic_frames": sum(bool(f.pbc.any()) for f in frames),
        "cutoff_A": cutoff,
        "frames_with_stress": sum(f.stress is not None for f in frames),
        "atoms_per_frame": _range([f.n_atoms for f in frames]),
        "elements": dict(sorted(elements.items())),
        "problems": problems,
    }
    if good:
        numbers = sorted({int(z) for f in good for z in f.numbers})
        references, _ = fit_energy_references(good, numbers)
        forces = np.concatenate([np.linalg.norm(f.forces, axis=1) for f in good])
        energies = np.array([f.energy for f in good])
        counts = composition_matrix(good, numbers)
        residual = (energies - counts @ references) / counts.sum(axis=1)
        report.update({
            "energy_eV": _range(energies.tolist()),
            "energy_per_atom_after_reference_fit_meV": {
                "std": float(np.std(residual) * 1000), "max_abs": float(np.max(np.abs(residual)) * 1000)},
            "force_norm_eV_per_A": {**_range(forces.tolist()), "rms_component": float(
                np.sqrt(np.mean(np.concatenate([f.forces.reshape(-1) for f in good]) ** 2)))},
            "reference_energy_per_species_eV": {chemical_symbols[z]: float(e) for z, e in zip(numbers, references)},
            "level_of_theory": sorted({str(f.info["level_of_theory"]) for f in good if "level_of_theory" in f.info}),
        })
    return report


def _range(values: Sequence[float]) -> Dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"min": float(array.min()), "mean": float(array.mean()), "max": float(array.max())}


def format_report(report: Dict) -> str:
    lines = [f"frames              {report['frames']} ({report['frames_without_problems']} without problems, "
             f"{report['periodic_frames']} periodic, {report['frames_with_stress']} with stress)"]
    a = report["atoms_per_frame"]
    lines.append(f"atoms per frame     {a['min']:.0f} .. {a['max']:.0f} (mean {a['mean']:.1f})")
    lines.append("elements            " + ", ".join(f"{k} {v}" for k, v in report["elements"].items()))
    if "energy_eV" in report:
        e = report["energy_eV"]
        r = report["energy_per_atom_after_reference_fit_meV"]
        f = report["force_norm_eV_per_A"]
        lines.append(f"energy              {e['min']:.4f} .. {e['max']:.4f} eV")
        lines.append(f"energy per atom     std {r['std']:.2f} meV/atom after fitting per-species references "
                     f"(max |dev| {r['max_abs']:.2f})")
        lines.append(f"|force|             {f['min']:.3f} .. {f['max']:.3f} eV/Å (mean {f['mean']:.3f}, "
                     f"RMS component {f['rms_component']:.3f})")
        lines.append("reference energies  " + ", ".join(
            f"{k} {v:.4f} eV" for k, v in report["reference_energy_per_species_eV"].items()))
        if report["level_of_theory"]:
            lines.append("level of theory     " + "; ".join(report["level_of_theory"]))
    if report["problems"]:
        lines.append(f"problems            {len(report['problems'])}")
        lines.extend(f"  - {p}" for p in report["problems"][:50])
        if len(report["problems"]) > 50:
            lines.append(f"  ... and {len(report['problems']) - 50} more")
    else:
        lines.append("problems            none found")
    return "\n".join(lines)

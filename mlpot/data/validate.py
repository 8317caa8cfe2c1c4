"""Check frames before training or evaluation; every problem is a :class:`DataError` naming file and frame.

Per frame: energy and forces present, arrays of the right shape, all values finite, elements known
(to the model, when one is given), stress finite, periodic cells with a volume. Per dataset, a unit
sanity check:

* **Energy scale.** Absolute total energies of molecules made of H, C, N and O are close to a sum of
  per-element energies of the method family: all-electron quantum chemistry (HF, DFT, MP2, CC:
  ~ -13.6 eV per H, -1030 eV per C, ...) or GFN2-xTB (~ -13.4 eV per H, -60 eV per C, ...), see
  :data:`ENERGY_FAMILIES`. Each frame's energy is compared with that sum in every unit mlpot knows;
  when the stored numbers match a family only after conversion from another unit (Hartree,
  kcal/mol, ...) and match no family as eV, the energies are in that unit. Energies of any other
  kind (relative, atomisation, plane-wave pseudopotential, EMT, other elements) match nothing and
  are let through.
* **Force scale.** Root-mean-square force components of molecular and materials data in eV/Å
  lie between ~0.01 and ~10. Above :data:`MAX_FORCE_RMS` (kcal/mol/Å read as eV/Å are 23x too
  large, meV 1000x) or below :data:`MIN_FORCE_RMS` (Hartree/Bohr read as eV/Å are 51x too small)
  the units are almost certainly wrong.
* **Energy-force consistency.** For pairs of similar frames (same atoms, RMS displacement below
  :data:`PAIR_MAX_RMSD` Å) the energy difference must match the work of the forces along the
  straight path, ``E_b - E_a ≈ -(F_a + F_b)/2 · (x_b - x_a)``. A least-squares slope between the
  predicted and the observed differences far from 1 means energies and forces are in
  inconsistent units (e.g. energy in Hartree, forces in eV/Å). Where consecutive frames are too far
  apart (shuffled or thinned MD), any two molecules of the same composition closer than
  :data:`ALIGNED_PAIR_MAX_RMSD` Å after optimal rotation serve as pairs instead.

They run in the order force scale, energy-force consistency, energy scale (the first two name the
more specific problem when only one quantity is off). All can be switched off (``check_units=False``,
``mlpot train ... data.check_units: false``, ``mlpot eval ... --no-unit-check``)
for data that is really that unusual.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence

import numpy as np
from ase.data import chemical_symbols

from mlpot.data.frames import DataError, Frame
from mlpot.units import ENERGY_UNITS_IN_EV, EV_PER_HARTREE

MAX_FORCE_RMS = 15.0  # eV/Å
MIN_FORCE_RMS = 2e-3  # eV/Å
PAIR_MAX_RMSD = 0.3  # Å
MIN_PAIRS = 8
ALIGNED_PAIR_MAX_RMSD = 0.25  # Å, after optimal rotation
MAX_FRAMES_FOR_ALIGNED_PAIRS = 300  # per composition
SLOPE_RANGE = (0.2, 5.0)

# Typical total energy per atom of an element in a molecule, Hartree, per method family.
# all-electron: free-atom B3LYP energies (a molecule lies lower by its atomisation energy, ~1% of
# the total). GFN2-xTB: tblite energies of H2, CH4, H2O and NO2 split into atoms.
ENERGY_FAMILIES = {
    "all-electron quantum chemistry": {1: -0.5003, 6: -37.846, 7: -54.589, 8: -75.061},
    "GFN2-xTB": {1: -0.491, 6: -2.21, 7: -2.75, 8: -4.09},
}
ENERGY_MATCH_TOLERANCE = 0.1  # relative deviation of the median frame for "these energies are that family"
ENERGY_MISMATCH_AS_EV = 0.3  # ... and the least relative deviation any family must have as eV
MAX_FRAMES_FOR_ENERGY_SCALE = 5000


def _check_per_atom_vectors(frame: Frame, array: np.ndarray, name: str) -> None:
    """``array`` must be ``(n_atoms, 3)`` and finite; the error names the first bad atom."""
    if array.shape != (frame.n_atoms, 3):
        raise frame.error(f"{name} have shape {tuple(array.shape)}; expected ({frame.n_atoms}, 3)")
    bad_atoms = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad_atoms.size:
        raise frame.error(f"{name} contain NaN or infinite values (atom index {int(bad_atoms[0])})")


def _check_cell(frame: Frame) -> None:
    """A frame periodic along some axes needs finite, independent lattice vectors along them."""
    if not frame.pbc.any():
        return
    axes = [int(k) for k in np.flatnonzero(frame.pbc)]
    vectors = frame.cell[frame.pbc]
    if frame.cell.shape != (3, 3) or not np.isfinite(frame.cell).all() or \
            np.linalg.matrix_rank(vectors, tol=1e-6) < len(axes):
        raise frame.error(
            f"periodic along axes {axes} but the cell is zero, flat or not finite along them "
            f"(lattice vectors {np.round(vectors, 4).tolist()} Å); set the cell, or pbc=False for a molecule"
        )


def validate_frame(frame: Frame, atomic_numbers: Sequence[int] | None = None, need_stress: bool = False) -> None:
    """Raise :class:`DataError` for the first problem in one frame."""
    if frame.n_atoms == 0:
        raise frame.error("the frame has no atoms")
    _check_per_atom_vectors(frame, frame.positions, "positions")
    _check_cell(frame)
    unknown_z = sorted({int(z) for z in frame.numbers if not 1 <= z < len(chemical_symbols)})
    if unknown_z:
        raise frame.error(f"atomic number(s) {unknown_z} are not chemical elements")
    if atomic_numbers is not None:
        unknown = sorted(set(int(z) for z in frame.numbers) - set(int(z) for z in atomic_numbers))
        if unknown:
            names = [chemical_symbols[z] for z in unknown]
            known = [chemical_symbols[z] for z in atomic_numbers]
            raise frame.error(f"element(s) {names} not known to the model (species {known})")
    if frame.energy is None:
        raise frame.error("no energy label (set data.energy_key if it is stored under another name)")
    if not np.isfinite(frame.energy):
        raise frame.error(f"energy is {frame.energy}")
    if frame.forces is None:
        raise frame.error("no forces label (set data.forces_key if they are stored under another name)")
    _check_per_atom_vectors(frame, frame.forces, "forces")
    if frame.stress is not None and not np.isfinite(frame.stress).all():
        raise frame.error("stress contains NaN or infinite values")
    if need_stress and frame.pbc.all() and frame.stress is None:
        raise frame.error("no stress label but the stress loss weight is non-zero")


def validate_frames(
    frames: Sequence[Frame],
    atomic_numbers: Sequence[int] | None = None,
    need_stress: bool = False,
    check_units: bool = True,
) -> None:
    """Validate every frame, then the dataset's units (see the module docstring)."""
    if len(frames) == 0:
        raise DataError("<dataset>", None, "no frames")
    for frame in frames:
        validate_frame(frame, atomic_numbers, need_stress)
    if check_units:
        check_force_scale(frames)
        check_energy_force_consistency(frames)
        check_energy_scale(frames)


def force_rms(frames: Iterable[Frame]) -> float:
    """Root mean square of all force components, eV/Å."""
    total, count = 0.0, 0
    for frame in frames:
        total += float(np.square(frame.forces).sum())
        count += frame.forces.size
    return (total / max(count, 1)) ** 0.5


def _family_totals_eV(frames: Sequence[Frame]) -> dict[str, np.ndarray]:
    """Per family, the sum of its per-element energies (eV) for every frame made only of its elements."""
    totals = {}
    for family, per_element in ENERGY_FAMILIES.items():
        table = np.full(max(per_element) + 1, np.nan)
        for z, energy_hartree in per_element.items():
            table[z] = energy_hartree * EV_PER_HARTREE
        sums = []
        for frame in frames:
            numbers = frame.numbers
            sums.append(table[numbers].sum() if numbers.max() < table.shape[0] else np.nan)
        totals[family] = np.array(sums)
    return totals


def energy_unit_deviations(frames: Sequence[Frame]) -> dict[tuple[str, str], float]:
    """``{(unit, family): relative deviation}``: the median over frames of
    ``|E * (eV per unit) - E_family| / |E_family|``, where ``E`` is the stored energy read as ``unit``.

    Only frames made of elements every family tabulates count; empty when there are none.
    """
    step = max(1, len(frames) // MAX_FRAMES_FOR_ENERGY_SCALE)
    sample = list(frames[::step])
    energies = np.array([f.energy for f in sample], dtype=np.float64)
    deviations = {}
    for family, totals in _family_totals_eV(sample).items():
        known = np.isfinite(totals)
        if not known.any():
            continue
        for unit, ev_per_unit in ENERGY_UNITS_IN_EV.items():
            relative = np.abs(energies[known] * ev_per_unit - totals[known]) / np.abs(totals[known])
            deviations[(unit, family)] = float(np.median(relative))
    return deviations


def check_energy_scale(frames: Sequence[Frame]) -> None:
    """Raise :class:`DataError` when the energies are absolute energies in another unit than eV
    (see the module docstring); the message names the unit they look like and how to override."""
    deviations = energy_unit_deviations(frames)
    if not deviations:
        return
    (unit, family), best = min(deviations.items(), key=lambda item: item[1])
    as_ev = min(d for (u, _), d in deviations.items() if u == "eV")
    if unit == "eV" or best > ENERGY_MATCH_TOLERANCE or as_ev < ENERGY_MISMATCH_AS_EV:
        return
    forces = ""
    if unit == "Hartree":
        forces = (f"; forces are then likely Hartree/Bohr or Hartree/Å too (RMS component "
                  f"{force_rms(frames):.3g} as eV/Å, typical MD forces are 0.3-3 eV/Å)")
    raise DataError(
        frames[0].source, None,
        f"energies look like {unit}, not eV: as {unit} they match {family} total energies to "
        f"{100 * best:.1f}% (median frame), as eV no known scale (off by {100 * as_ev:.0f}% or more){forces}; "
        f"set data.energy_unit: {unit} (--energy-unit {unit!r}), or data.check_units: false "
        "(--no-unit-check) if they really are eV",
    )


def check_force_scale(frames: Sequence[Frame]) -> None:
    rms = force_rms(frames)
    source = frames[0].source
    if rms > MAX_FORCE_RMS:
        raise DataError(
            source, None,
            f"forces look like the wrong unit: RMS force component {rms:.3g} eV/Å is above {MAX_FORCE_RMS} eV/Å "
            "(kcal/mol/Å read as eV/Å are 23x too large, meV/Å 1000x); set data.energy_unit / data.length_unit, "
            "or data.check_units: false if they really are this large",
        )
    if 0.0 < rms < MIN_FORCE_RMS or rms == 0.0 and len(frames) > 1:
        raise DataError(
            source, None,
            f"forces look like the wrong unit: RMS force component {rms:.3g} eV/Å is below {MIN_FORCE_RMS} eV/Å "
            "(Hartree/Bohr read as eV/Å are 51x too small); set data.energy_unit / data.length_unit, "
            "or data.check_units: false",
        )


def similar_pairs(frames: Sequence[Frame], max_rmsd: float = PAIR_MAX_RMSD) -> List[tuple[int, int]]:
    """Index pairs (i, j) of consecutive same-composition frames less than ``max_rmsd`` Å apart."""
    pairs = []
    for i in range(len(frames) - 1):
        a, b = frames[i], frames[i + 1]
        if a.n_atoms != b.n_atoms or not np.array_equal(a.numbers, b.numbers) or a.pbc.any() or b.pbc.any():
            continue
        rmsd = float(np.sqrt(np.square(b.positions - a.positions).sum(axis=1).mean()))
        if 0.0 < rmsd < max_rmsd:
            pairs.append((i, i + 1))
    return pairs


def energy_force_slope(frames: Sequence[Frame], pairs: Sequence[tuple[int, int]]) -> float:
    """Least-squares slope of the force-predicted energy differences against the observed ones."""
    predicted, observed = [], []
    for i, j in pairs:
        a, b = frames[i], frames[j]
        predicted.append(-0.5 * float(((a.forces + b.forces) * (b.positions - a.positions)).sum()))
        observed.append(b.energy - a.energy)
    predicted, observed = np.array(predicted), np.array(observed)
    return float((predicted * observed).sum() / max(float((observed * observed).sum()), 1e-300))


def aligned_pair_work(
    frames: Sequence[Frame], max_rmsd: float = ALIGNED_PAIR_MAX_RMSD, max_frames: int = MAX_FRAMES_FOR_ALIGNED_PAIRS
) -> tuple[np.ndarray, np.ndarray]:
    """Force-predicted and observed energy differences (eV) over pairs of any two same-composition molecules
    whose RMSD after optimal rotation (Kabsch) is below ``max_rmsd`` Å: the check for datasets whose
    consecutive frames are far apart (shuffled or subsampled MD). At most ``max_frames`` frames (evenly
    spaced) per composition are compared, all pairs among them."""
    groups: dict = {}
    for frame in frames:
        if not frame.pbc.any():
            groups.setdefault(frame.numbers.tobytes(), []).append(frame)
    predicted, observed = [], []
    for group in groups.values():
        group = group[:: max(1, len(group) // max_frames)][:max_frames]
        centred = np.stack([f.positions - f.positions.mean(axis=0) for f in group])  # (m, n, 3)
        forces = np.stack([f.forces for f in group])
        energies = np.array([f.energy for f in group])
        for a in range(len(group) - 1):
            others = centred[a + 1:]
            u, _, vt = np.linalg.svd(np.einsum("bni,nj->bij", others, centred[a]))  # rotate others onto frame a
            flip = np.sign(np.linalg.det(u @ vt))
            u[:, :, 2] *= flip[:, None]
            rotations = u @ vt
            rotated = others @ rotations
            rmsd = np.sqrt(np.square(rotated - centred[a]).sum(axis=2).mean(axis=1))
            close = np.flatnonzero((rmsd < max_rmsd) & (rmsd > 0.0))
            for k in close:
                step = rotated[k] - centred[a]
                work = -0.5 * float(((forces[a] + forces[a + 1 + k] @ rotations[k]) * step).sum())
                predicted.append(work)
                observed.append(energies[a + 1 + k] - energies[a])
    return np.array(predicted), np.array(observed)


def check_energy_force_consistency(frames: Sequence[Frame]) -> None:
    """Compare energy differences with the work of the forces along consecutive similar frames, or, when
    there are too few of those, along rotationally aligned similar pairs (see the module docstring)."""
    pairs = similar_pairs(frames)
    if len(pairs) >= MIN_PAIRS:
        slope, count, kind = energy_force_slope(frames, pairs), len(pairs), "pairs of similar frames"
    else:
        predicted, observed = aligned_pair_work(frames)
        if len(observed) < MIN_PAIRS:
            return
        slope = float((predicted * observed).sum() / max(float((observed * observed).sum()), 1e-300))
        count, kind = len(observed), "pairs of similar molecules (after alignment)"
    low, high = SLOPE_RANGE
    if not low <= slope <= high:
        raise DataError(
            frames[0].source, None,
            f"energies and forces look like inconsistent units: along {count} {kind} the "
            f"forces predict energy changes {slope:.3g} times the stored ones (expected ~1; forces in Hartree/Bohr "
            "read as eV/Å give ~0.02, energies in Hartree with forces in eV/Å ~27); "
            "check data.energy_unit / data.length_unit, or set data.check_units: false (--no-unit-check)",
        )


def require_species_in_training(
    frames: Sequence[Frame], train_indices: Sequence[int], atomic_numbers: Sequence[int]
) -> None:
    """Raise ``ValueError`` when an element of the model (``atomic_numbers``) occurs in no training frame.

    ``frames`` is the whole dataset and ``train_indices`` the positions of the training split in it. An
    element seen only in validation or test frames (or nowhere) would be deployed with untrained
    weights and a reference energy of zero; the message names it and the first frame that holds it.
    """
    trained = {int(z) for i in train_indices for z in frames[i].numbers}
    missing = [int(z) for z in atomic_numbers if int(z) not in trained]
    if not missing:
        return
    where = []
    for z in missing:
        holder = next((f for f in frames if z in f.numbers), None)
        place = f"first in {holder.source}, frame {holder.index}" if holder is not None else "in no frame"
        where.append(f"{chemical_symbols[z]} ({place})")
    raise ValueError(
        f"element(s) {', '.join(where)} occur in no training frame, so the model would learn nothing about "
        "them; move frames with them into the training split (data.train_indices, data.split_seed, smaller "
        "data.val_fraction / data.test_fraction) or leave them out of model.species"
    )

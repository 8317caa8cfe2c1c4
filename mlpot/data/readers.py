"""Read labelled configurations from files into :class:`~mlpot.data.frames.Frame` objects (Å, eV).

Supported:

* anything ``ase.io.read`` understands that carries energies and forces: extended XYZ
  (``.xyz``/``.extxyz``, also gzipped), ASE databases (``.db``), and DFT code outputs (OUTCAR,
  FHI-aims, CASTEP, ...). Labels are looked up by key, first among the calculator results (where
  ASE puts ``energy``/``forces``/``stress``), then in ``atoms.info`` / ``atoms.arrays`` (where
  custom keys such as ``REF_energy`` / ``REF_forces`` live);
* NumPy ``.npz`` in the MD17 layout: ``R`` (frames, atoms, 3), ``z`` (atoms,), ``E`` (frames,) or
  (frames, 1), ``F`` (frames, atoms, 3), kcal/mol and Å by default in that dataset, and the rMD17
  names ``coords`` / ``nuclear_charges`` / ``energies`` / ``forces``.

Units are converted once, here, with :mod:`mlpot.units`: ``energy_unit`` (eV, meV, kcal/mol,
kJ/mol, Hartree) and ``length_unit`` (Angstrom, nm, Bohr); forces are taken to be in
energy_unit/length_unit and stress in energy_unit/length_unit^3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np

from mlpot.data.frames import DataError, Frame
from mlpot.units import energy_factor, length_factor

NPZ_KEYS = {
    "positions": ("R", "coords"),
    "numbers": ("z", "nuclear_charges"),
    "energy": ("E", "energies"),
    "forces": ("F", "forces"),
}


@dataclass(frozen=True)
class DataSpec:
    """Where the labels are and what units they are in.

    Attributes:
        energy_key, forces_key, stress_key: names of the labels (calculator result, ``info`` or
            ``arrays`` entry). ``stress_key`` may also name a virial (``virial`` / ``REF_virial``,
            eV), which is converted to stress with the cell volume.
        energy_unit: unit of the energies; forces are in energy_unit/length_unit.
        length_unit: unit of positions, cell and forces' length.
        index: which frames, ASE's index syntax (``":"`` all, ``"::10"`` every tenth).
    """

    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"
    energy_unit: str = "eV"
    length_unit: str = "Angstrom"
    index: str = ":"

    def factors(self) -> tuple[float, float]:
        """(eV per energy unit, Å per length unit); raises ``ValueError`` for unknown units."""
        return energy_factor(self.energy_unit, "eV"), length_factor(self.length_unit, "Angstrom")


def read_frames(path: str | Path, spec: DataSpec = DataSpec()) -> List[Frame]:
    """All frames of one file, converted to Å / eV. Raises :class:`DataError` naming file and frame."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, "file not found")
    if path.suffix == ".npz":
        return _read_npz(path, spec)
    return _read_ase(path, spec)


def read_many(paths: Sequence[str | Path], spec: DataSpec = DataSpec()) -> List[Frame]:
    """Frames of several files, concatenated in order."""
    frames: List[Frame] = []
    for path in paths:
        frames.extend(read_frames(path, spec))
    return frames


def _label(atoms, key: str, per_atom: bool):
    """A label from calculator results, then arrays (per-atom) or info (per-frame); None if absent."""
    if atoms.calc is not None and key in getattr(atoms.calc, "results", {}):
        return atoms.calc.results[key]
    table = atoms.arrays if per_atom else atoms.info
    if key in table:
        return table[key]
    other = atoms.info if per_atom else atoms.arrays
    return other.get(key)


def _stress_3x3(value, key: str, atoms, frame_error) -> np.ndarray:
    """A stress (Voigt-6 or 3x3) or a virial (3x3 / 9, eV) as a 3x3 stress in the input energy/length^3."""
    array = np.asarray(value, dtype=np.float64)
    if array.shape == (6,):
        from ase.stress import voigt_6_to_full_3x3_stress

        array = voigt_6_to_full_3x3_stress(array)
    elif array.shape == (9,):
        array = array.reshape(3, 3)
    if array.shape != (3, 3):
        raise frame_error(f"{key!r} has shape {array.shape}; expected (6,), (9,) or (3, 3)")
    if "virial" in key.lower():
        volume = abs(float(np.linalg.det(atoms.cell.array)))
        if volume == 0.0:
            raise frame_error(f"{key!r} is a virial but the frame has no cell to divide by")
        array = -array / volume
    return array


def _ase_source(path: Path) -> tuple:
    """``(file, format)`` for ``ase.io.read``. Gzipped files are decompressed into memory first: ASE
    reads ``.gz`` itself but seeks backwards once per frame, and every backward seek in a gzip stream
    decompresses from the start (minutes for a few thousand frames instead of seconds)."""
    if path.suffix != ".gz":
        return str(path), None
    import gzip
    import io

    inner = Path(path.stem).suffix.lstrip(".").lower()
    with gzip.open(path, "rt") as handle:
        text = io.StringIO(handle.read())
    return text, {"xyz": "extxyz", "": "extxyz"}.get(inner, inner)


def _read_ase(path: Path, spec: DataSpec) -> List[Frame]:
    import ase.io

    to_ev, to_angstrom = spec.factors()
    try:
        source, file_format = _ase_source(path)
        images = ase.io.read(source, index=":", format=file_format)
    except Exception as error:  # ASE raises many types for unreadable files
        raise DataError(str(path), None, f"ASE cannot read this file ({type(error).__name__}: {error})") from None
    if not isinstance(images, list):
        images = [images]
    if not images:
        raise DataError(str(path), None, "the file contains no frames")
    # select after reading so that every frame keeps its index in the file (errors name that index)
    selected = range(len(images))[_python_slice(spec.index)]
    frames = []
    for index in selected:
        atoms = images[index]
        def frame_error(problem: str, index: int = index) -> DataError:
            return DataError(str(path), index, problem)

        energy = _label(atoms, spec.energy_key, per_atom=False)
        forces = _label(atoms, spec.forces_key, per_atom=True)
        stress = _label(atoms, spec.stress_key, per_atom=False) if atoms.pbc.all() else None
        if energy is not None:
            try:
                energy = float(np.asarray(energy, dtype=np.float64).reshape(())) * to_ev
            except (TypeError, ValueError):
                raise frame_error(f"energy {spec.energy_key!r} is not a single number") from None
        if forces is not None:
            forces = np.asarray(forces, dtype=np.float64) * (to_ev / to_angstrom)
        if stress is not None:
            stress = _stress_3x3(stress, spec.stress_key, atoms, frame_error) * (to_ev / to_angstrom**3)
        info = {k: v for k, v in atoms.info.items() if isinstance(v, (str, int, float, bool, np.integer, np.floating))}
        frames.append(
            Frame(
                positions=np.asarray(atoms.positions, dtype=np.float64) * to_angstrom,
                numbers=np.asarray(atoms.numbers, dtype=np.int64),
                cell=np.asarray(atoms.cell.array, dtype=np.float64) * to_angstrom,
                pbc=np.asarray(atoms.pbc, dtype=bool),
                energy=energy,
                forces=forces,
                stress=stress,
                source=str(path),
                index=index,
                info=info,
            )
        )
    return frames


def _npz_array(data, path: Path, what: str, keys: Sequence[str], required: bool = True):
    for key in keys:
        if key in data:
            return np.asarray(data[key])
    if required:
        raise DataError(str(path), None, f"no {what} array: expected one of {list(keys)}; found {sorted(data.files)}")
    return None


def _read_npz(path: Path, spec: DataSpec) -> List[Frame]:
    to_ev, to_angstrom = spec.factors()
    try:
        data = np.load(path)
    except Exception as error:
        raise DataError(str(path), None, f"not a readable .npz file ({type(error).__name__}: {error})") from None
    positions = _npz_array(data, path, "positions", NPZ_KEYS["positions"]).astype(np.float64)
    numbers = _npz_array(data, path, "atomic numbers", NPZ_KEYS["numbers"]).astype(np.int64).reshape(-1)
    energies = _npz_array(data, path, "energies", NPZ_KEYS["energy"], required=False)
    forces = _npz_array(data, path, "forces", NPZ_KEYS["forces"], required=False)
    if positions.ndim != 3 or positions.shape[1:] != (numbers.shape[0], 3):
        raise DataError(
            str(path), None, f"positions have shape {positions.shape}; expected (frames, {numbers.shape[0]}, 3)"
        )
    n_frames = positions.shape[0]
    if energies is not None:
        energies = energies.astype(np.float64).reshape(energies.shape[0], -1)
        if energies.shape != (n_frames, 1):
            raise DataError(str(path), None, f"energies have shape {energies.shape}; expected ({n_frames},)")
    if forces is not None and forces.shape != positions.shape:
        raise DataError(str(path), None, f"forces have shape {forces.shape}; expected {positions.shape}")
    selected = range(n_frames)[_python_slice(spec.index)]
    return [
        Frame(
            positions=positions[i] * to_angstrom,
            numbers=numbers.copy(),
            cell=np.zeros((3, 3)),
            pbc=np.zeros(3, dtype=bool),
            energy=None if energies is None else float(energies[i, 0]) * to_ev,
            forces=None if forces is None else forces[i].astype(np.float64) * (to_ev / to_angstrom),
            source=str(path),
            index=i,
        )
        for i in selected
    ]


def _python_slice(index: str) -> slice:
    """ASE-style index string (``":"``, ``"::10"``, ``"5"``) as a slice."""
    if not all(part.strip().lstrip("-").isdigit() or not part.strip() for part in index.split(":")) or \
            index.count(":") > 2:
        raise ValueError(f"frame index {index!r} is not ASE index syntax such as ':', '::10', '100:' or '5'")
    parts = index.split(":")
    if len(parts) == 1:
        k = int(parts[0])
        return slice(k, k + 1 if k != -1 else None)
    values = [int(p) if p else None for p in parts] + [None] * (3 - len(parts))
    return slice(*values[:3])

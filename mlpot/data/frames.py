"""One labelled configuration, in mlpot's units, and the error raised for bad data.

Every reader in :mod:`mlpot.data.readers` produces :class:`Frame` objects; everything downstream
(validation, statistics, graphs, training, evaluation) consumes them. Units are fixed here:
positions and cell in Å, energy in eV, forces in eV/Å, stress in eV/Å^3 (ASE's sign convention,
positive under tension, full 3x3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """A dataset problem, with the file and the frame it was found in."""

    def __init__(self, source: str, frame: int | None, problem: str):
        self.source = source
        self.frame = frame
        self.problem = problem
        where = source if frame is None else f"{source}, frame {frame}"
        super().__init__(f"{where}: {problem}")


@dataclass
class Frame:
    """A configuration with reference labels.

    Attributes:
        positions: ``(n_atoms, 3)`` float64, Å.
        numbers: ``(n_atoms,)`` int64 atomic numbers.
        cell: ``(3, 3)`` float64, Å, lattice vectors as rows (zeros for molecules).
        pbc: ``(3,)`` bool.
        energy: total energy, eV (``None`` when the source has none: caught by validation).
        forces: ``(n_atoms, 3)`` eV/Å, or ``None``.
        stress: ``(3, 3)`` eV/Å^3, or ``None`` (molecules, or data without stress).
        source: file the frame came from; ``index``: its position in that file.
        info: scalar metadata carried along (e.g. ``level_of_theory``).
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None = None
    source: str = "<memory>"
    index: int = 0
    info: dict = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    def error(self, problem: str) -> DataError:
        """A :class:`DataError` that names this frame's file and index."""
        return DataError(self.source, self.index, problem)

    def to_atoms(self):
        """This frame as an ``ase.Atoms`` with its labels in a ``SinglePointCalculator``."""
        import ase
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = ase.Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        results = {}
        if self.energy is not None:
            results["energy"] = self.energy
        if self.forces is not None:
            results["forces"] = self.forces
        if self.stress is not None:
            from ase.stress import full_3x3_to_voigt_6_stress

            results["stress"] = full_3x3_to_voigt_6_stress(self.stress)
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info.update(self.info)
        return atoms

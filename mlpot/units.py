"""The one place where units are converted.

The core (models, neighbour list, data) works in Å and eV throughout. Engines speak other
units: OpenMM uses nm and kJ/mol; DFT codes often report Hartree and Bohr; some datasets
use kcal/mol. Every conversion goes through the constants and helpers below.

Constants follow CODATA 2018, the values ASE (``ase.units``) and OpenMM use.
"""

from __future__ import annotations

import math

ANGSTROM_PER_NM: float = 10.0
NM_PER_ANGSTROM: float = 0.1

# 1 eV = e * N_A J/mol = 1.602176634e-19 C * 6.02214076e23 /mol / 1000 = 96.4853321233 kJ/mol
KJ_PER_MOL_PER_EV: float = 96.48533212331002
EV_PER_KJ_PER_MOL: float = 1.0 / KJ_PER_MOL_PER_EV
KCAL_PER_MOL_PER_EV: float = KJ_PER_MOL_PER_EV / 4.184
EV_PER_HARTREE: float = 27.211386245988
ANGSTROM_PER_BOHR: float = 0.529177210903

# Boltzmann constant in eV/K
BOLTZMANN_EV_PER_K: float = 8.617333262e-5

# Molecular dynamics in Å, eV, amu and fs (mlpot.md): a kinetic energy (1/2) m v² with m in amu and
# v in Å/fs comes out in amu·Å²/fs²; 1 amu·Å²/fs² = 1.66053906660e-27 kg · 1e-20 m² / 1e-30 s² in eV.
ATOMIC_MASS_UNIT_KG: float = 1.66053906660e-27
ELECTRONVOLT_J: float = 1.602176634e-19
EV_PER_AMU_A2_PER_FS2: float = ATOMIC_MASS_UNIT_KG * 1e10 / ELECTRONVOLT_J  # 103.6427 eV
# so that an acceleration F/m with F in eV/Å and m in amu is (F/m) * ACCELERATION_A_PER_FS2 in Å/fs²
ACCELERATION_A_PER_FS2: float = 1.0 / EV_PER_AMU_A2_PER_FS2
FS_PER_PS: float = 1000.0

# LAMMPS metal units give pressure in bar: 1 eV/Å³ = 1.602176634e-19 J / 1e-30 m³ = 1.602176634e6 bar
BAR_PER_EV_PER_A3: float = ELECTRONVOLT_J * 1e30 / 1e5

ENERGY_UNITS_IN_EV: dict[str, float] = {
    "eV": 1.0,
    "meV": 1e-3,
    "kJ/mol": EV_PER_KJ_PER_MOL,
    "kcal/mol": 1.0 / KCAL_PER_MOL_PER_EV,
    "Hartree": EV_PER_HARTREE,
}
TIME_UNITS_IN_FS: dict[str, float] = {"fs": 1.0, "ps": FS_PER_PS, "ns": 1e3 * FS_PER_PS}
LENGTH_UNITS_IN_ANGSTROM: dict[str, float] = {
    "Angstrom": 1.0,
    "nm": ANGSTROM_PER_NM,
    "Bohr": ANGSTROM_PER_BOHR,
}


def _factor(table: dict[str, float], kind: str, from_unit: str, to_unit: str) -> float:
    for unit in (from_unit, to_unit):
        if unit not in table:
            raise ValueError(f"unknown {kind} unit {unit!r}; known: {sorted(table)}")
    return table[from_unit] / table[to_unit]


def energy_factor(from_unit: str, to_unit: str = "eV") -> float:
    """Multiply an energy in ``from_unit`` by this to get it in ``to_unit``."""
    return _factor(ENERGY_UNITS_IN_EV, "energy", from_unit, to_unit)


def length_factor(from_unit: str, to_unit: str = "Angstrom") -> float:
    """Multiply a length in ``from_unit`` by this to get it in ``to_unit``."""
    return _factor(LENGTH_UNITS_IN_ANGSTROM, "length", from_unit, to_unit)


def time_factor(from_unit: str, to_unit: str = "fs") -> float:
    """Multiply a time in ``from_unit`` by this to get it in ``to_unit`` (fs, ps, ns)."""
    return _factor(TIME_UNITS_IN_FS, "time", from_unit, to_unit)


def parse_duration_ps(text: str) -> float:
    """A duration written with its unit, ``"100ps"``, ``"500 fs"``, ``"1ns"`` (a bare number is ps), in ps."""
    import re

    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([a-z]*)\s*", str(text))
    unit = match.group(2) if match else ""
    try:
        value = float(match.group(1)) if match else math.nan
    except ValueError:
        value = math.nan
    if not match or not math.isfinite(value) or (unit and unit not in TIME_UNITS_IN_FS):
        raise ValueError(f"cannot read the duration {text!r}: write a number with fs, ps or ns, e.g. 100ps")
    return value * time_factor(unit or "ps", "ps")

"""The one place where units are converted.

The core (models, neighbour list, data) works in Å and eV throughout. Engines speak other
units: OpenMM uses nm and kJ/mol; DFT codes often report Hartree and Bohr; some datasets
use kcal/mol. Every conversion goes through the constants and helpers below.

Constants follow CODATA 2018, the values ASE (``ase.units``) and OpenMM use.
"""

from __future__ import annotations

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

ENERGY_UNITS_IN_EV: dict[str, float] = {
    "eV": 1.0,
    "meV": 1e-3,
    "kJ/mol": EV_PER_KJ_PER_MOL,
    "kcal/mol": 1.0 / KCAL_PER_MOL_PER_EV,
    "Hartree": EV_PER_HARTREE,
}
LENGTH_UNITS_IN_ANGSTROM: dict[str, float] = {
    "Angstrom": 1.0,
    "nm": ANGSTROM_PER_NM,
    "Bohr": ANGSTROM_PER_BOHR,
}


def energy_factor(from_unit: str, to_unit: str = "eV") -> float:
    """Multiply an energy in ``from_unit`` by this to get it in ``to_unit``."""
    for unit in (from_unit, to_unit):
        if unit not in ENERGY_UNITS_IN_EV:
            raise ValueError(f"unknown energy unit {unit!r}; known: {sorted(ENERGY_UNITS_IN_EV)}")
    return ENERGY_UNITS_IN_EV[from_unit] / ENERGY_UNITS_IN_EV[to_unit]


def length_factor(from_unit: str, to_unit: str = "Angstrom") -> float:
    """Multiply a length in ``from_unit`` by this to get it in ``to_unit``."""
    for unit in (from_unit, to_unit):
        if unit not in LENGTH_UNITS_IN_ANGSTROM:
            raise ValueError(f"unknown length unit {unit!r}; known: {sorted(LENGTH_UNITS_IN_ANGSTROM)}")
    return LENGTH_UNITS_IN_ANGSTROM[from_unit] / LENGTH_UNITS_IN_ANGSTROM[to_unit]

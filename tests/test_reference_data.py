"""The shipped reference datasets in systems/ load with ASE and hold sane labels.

Datasets: ethanol B3LYP/6-31G* (``systems/ethanol/dft.extxyz``), alanine dipeptide GFN2-xTB
(``systems/alanine-dipeptide/xtb.extxyz.gz``) and B3LYP/6-31G* (``.../dft.extxyz``, which may
grow further), at least the sizes issue 3 asks for, plus the finite-difference force checks written next to them.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import ase.io
import numpy as np
import pytest

import mlpot

SYSTEMS = Path(mlpot.__file__).resolve().parent.parent / "systems"
ETHANOL_DFT = SYSTEMS / "ethanol" / "dft.extxyz"
ALA2_XTB = SYSTEMS / "alanine-dipeptide" / "xtb.extxyz.gz"
ALA2_DFT = SYSTEMS / "alanine-dipeptide" / "dft.extxyz"
FD_CHECKS = [
    SYSTEMS / "ethanol" / "fd_check.json",
    SYSTEMS / "alanine-dipeptide" / "fd_check_xtb.json",
    SYSTEMS / "alanine-dipeptide" / "fd_check_dft.json",
]
# (path, atoms per frame, level_of_theory, minimum number of frames)
DATASETS = [
    (ETHANOL_DFT, 9, "B3LYP/6-31G* (density fitting)", 1000),
    (ALA2_XTB, 22, "GFN2-xTB", 5000),
    (ALA2_DFT, 22, "B3LYP/6-31G* (density fitting, grid level 1)", 100),  # may grow further
]
PHI_ATOMS, PSI_ATOMS = (4, 6, 8, 14), (6, 8, 14, 16)  # alanine dipeptide, tleap order
# Forces are the exact derivative of the energy (PySCF with grid response, tblite): the
# finite-difference checks agree to ~1e-4 eV/A; 1e-3 eV/A would flag a missing term.
FD_TOLERANCE_EV_PER_A = 1e-3

# Parse every n-th frame with ASE (ASE's extxyz reader takes ~1 ms a frame); the headers of
# all frames are checked separately. ASE reads .gz files, but seeks backwards once per frame
# (each seek decompresses from the start: minutes for 5000 frames), so compressed files are
# decompressed into memory first.
PARSE_EVERY = {ETHANOL_DFT: 10, ALA2_XTB: 10, ALA2_DFT: 1}

_cache: dict[Path, tuple[str, list]] = {}


def _text_and_frames(path: Path) -> tuple[str, list]:
    """The file's text and every ``PARSE_EVERY[path]``-th frame as ase.Atoms."""
    if path not in _cache:
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
        frames = ase.io.read(io.StringIO(text), index=slice(None, None, PARSE_EVERY[path]), format="extxyz")
        _cache[path] = text, frames
    return _cache[path]


def _frames(path: Path) -> list:
    return _text_and_frames(path)[1]


def _header_values(path: Path, key: str) -> list[str]:
    """``key=value`` of every frame's comment line, as strings."""
    return re.findall(rf"^Properties=.* {key}=(\S+)", _text_and_frames(path)[0], flags=re.MULTILINE)


def _dihedral_deg(positions: np.ndarray, atoms: tuple[int, int, int, int]) -> np.ndarray:
    p = positions
    b0, b1, b2 = p[:, atoms[1]] - p[:, atoms[0]], p[:, atoms[2]] - p[:, atoms[1]], p[:, atoms[3]] - p[:, atoms[2]]
    y = np.linalg.norm(b1, axis=-1) * np.sum(b0 * np.cross(b1, b2), axis=-1)
    x = np.sum(np.cross(b0, b1) * np.cross(b1, b2), axis=-1)
    return np.degrees(np.arctan2(y, x))


@pytest.mark.parametrize("path, n_atoms, level, min_frames", DATASETS, ids=lambda v: getattr(v, "name", None))
def test_dataset_loads_with_finite_energy_and_forces_of_the_right_shape(path, n_atoms, level, min_frames):
    assert path.is_file(), f"{path} is missing"
    # ASE reads the file as it is, .gz too (a slice: ASE turns index=0 into 0: and scans it all)
    assert len(ase.io.read(path, index=slice(0, 1))) == 1
    indices = [int(i) for i in _header_values(path, "candidate_index")]
    assert len(indices) >= min_frames
    assert indices == sorted(set(indices)), "frames are ordered by candidate_index, without duplicates"
    frames = _frames(path)
    assert len(frames) == -(-len(indices) // PARSE_EVERY[path])
    energies = np.array([atoms.get_potential_energy() for atoms in frames])
    forces = np.array([atoms.get_forces() for atoms in frames])
    assert forces.shape == (len(frames), n_atoms, 3)
    assert np.isfinite(energies).all() and np.isfinite(forces).all()
    assert {atoms.info["level_of_theory"] for atoms in frames} == {level}
    assert all("software" in atoms.info for atoms in frames)
    # total energies in eV: ~ -4218 eV (ethanol B3LYP), -896 eV (ala2 GFN2-xTB), -13490 eV (ala2 B3LYP)
    assert np.ptp(energies) < 10.0, "energy spread of one molecule's configurations is a few eV at most"
    assert np.abs(forces).max() < 50.0, "forces in eV/A, not per Bohr or kcal/mol"


def test_alanine_xtb_set_covers_both_signs_of_phi_and_angles_match_positions():
    phi = np.array([float(v) for v in _header_values(ALA2_XTB, "phi_deg")])
    assert len(phi) >= 5000
    assert (phi < 0).mean() > 0.5, "C5/C7eq/alphaR basins"
    assert (phi > 0).mean() > 0.05, "C7ax basin and the phi > 0 barrier crossings"
    frames = _frames(ALA2_XTB)
    assert {a.info["sampler"] for a in frames} == {"amber14 metadynamics", "GFN2-xTB MD"}
    positions = np.array([atoms.positions for atoms in frames])
    for key, atoms in (("phi_deg", PHI_ATOMS), ("psi_deg", PSI_ATOMS)):
        stored = np.array([float(a.info[key]) for a in frames])
        assert np.abs(_dihedral_deg(positions, atoms) - stored).max() < 0.01


def test_alanine_dft_frames_are_xtb_candidates_at_identical_positions():
    lines = _text_and_frames(ALA2_XTB)[0].splitlines(keepends=True)
    lines_per_frame = 22 + 2
    position = {int(i): k for k, i in enumerate(_header_values(ALA2_XTB, "candidate_index"))}
    for atoms in _frames(ALA2_DFT):
        k = position[int(atoms.info["candidate_index"])]
        frame_text = "".join(lines[k * lines_per_frame : (k + 1) * lines_per_frame])
        candidate = ase.io.read(io.StringIO(frame_text), format="extxyz")
        assert candidate.info["candidate_index"] == atoms.info["candidate_index"]
        np.testing.assert_array_equal(atoms.positions, candidate.positions)


@pytest.mark.parametrize("path", FD_CHECKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_finite_difference_check_agrees_with_analytic_forces(path):
    result = json.loads(path.read_text())
    rows = [row for frame in result["frames"] for row in frame["components"]]
    assert rows
    assert result["max_abs_error_eV_per_A"] == max(abs(row["error_eV_per_A"]) for row in rows)
    assert result["max_abs_error_eV_per_A"] < FD_TOLERANCE_EV_PER_A

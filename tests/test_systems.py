"""Tests for mlpot.systems: the registry of shipped systems and its two loaders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mlpot
from mlpot import systems

REPO_ROOT = Path(mlpot.__file__).resolve().parent.parent
AVOGADRO_PER_MOL = 6.02214076e23
REGISTERED = [spec.name for spec in systems.list_systems()]
ALA2_NAMES = ["alanine-dipeptide", "alanine-dipeptide-c7eq", "alanine-dipeptide-c7ax"]
# name -> (folder, atoms) of the peptides minimised in amber14 + GBn2
IMPLICIT_SOLVENT_PEPTIDES = {"polyproline": ("polyproline", 54), "polyproline-ppi": ("polyproline", 54),
                             "chignolin": ("chignolin", 138), "chignolin-folded": ("chignolin", 138)}
WATER_BOXES = {"water-192": 192, "water-1536": 1536}

# tleap order and names: phi = atoms 4-6-8-14, psi = 6-8-14-16 (0-based)
ALA2_ATOMS = [
    ("ACE", "HH31", "H"), ("ACE", "CH3", "C"), ("ACE", "HH32", "H"), ("ACE", "HH33", "H"),
    ("ACE", "C", "C"), ("ACE", "O", "O"),
    ("ALA", "N", "N"), ("ALA", "H", "H"), ("ALA", "CA", "C"), ("ALA", "HA", "H"), ("ALA", "CB", "C"),
    ("ALA", "HB1", "H"), ("ALA", "HB2", "H"), ("ALA", "HB3", "H"), ("ALA", "C", "C"), ("ALA", "O", "O"),
    ("NME", "N", "N"), ("NME", "H", "H"), ("NME", "CH3", "C"),
    ("NME", "HH31", "H"), ("NME", "HH32", "H"), ("NME", "HH33", "H"),
]


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _phi_psi_deg(pdb_path: Path) -> tuple[float, float]:
    import mdtraj

    traj = mdtraj.load(str(pdb_path))
    return (
        float(np.degrees(mdtraj.compute_phi(traj)[1][0, 0])),
        float(np.degrees(mdtraj.compute_psi(traj)[1][0, 0])),
    )


def _forcefield_energy_kj_per_mol(spec: systems.SystemSpec) -> float:
    import openmm
    from openmm import app, unit

    topology, positions = systems.load_openmm(spec.name)
    system = app.ForceField(*spec.forcefield_files).createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _build_info(folder: str) -> dict:
    return json.loads((systems.SYSTEMS_DIR / folder / "build_info.json").read_text())


def test_registry_lists_the_shipped_systems_and_their_files_exist():
    assert REGISTERED == ALA2_NAMES + list(IMPLICIT_SOLVENT_PEPTIDES) + ["ethanol"] + list(WATER_BOXES)
    for spec in systems.list_systems():
        assert spec.pdb_path.is_file(), spec.pdb_path
        assert spec.pdb_path.is_relative_to(systems.SYSTEMS_DIR)


@pytest.mark.parametrize("pdb_path", sorted(systems.SYSTEMS_DIR.glob("*/*.pdb")), ids=lambda path: path.name)
def test_every_shipped_pdb_bonds_every_atom_in_mdtraj_and_openmm(pdb_path):
    """Analysis tools read the bonds from the file (CONECT records or residue templates), not from distances."""
    import mdtraj
    from openmm import app

    topology = mdtraj.load(str(pdb_path)).topology
    bonded = {atom.index for bond in topology.bonds for atom in bond}
    assert topology.n_bonds > 0 and bonded == set(range(topology.n_atoms))
    assert app.PDBFile(str(pdb_path)).topology.getNumBonds() == topology.n_bonds


def test_ethanol_pdb_carries_its_eight_covalent_bonds():
    import mdtraj

    topology = mdtraj.load(str(systems.get_system("ethanol").pdb_path)).topology
    names = sorted(tuple(sorted((a.name, b.name))) for a, b in topology.bonds)
    assert names == [("C1", "C2"), ("C1", "H4"), ("C1", "H5"), ("C1", "H6"), ("C2", "H2"), ("C2", "H3"),
                     ("C2", "O1"), ("H1", "O1")]


@pytest.mark.parametrize("name", REGISTERED)
def test_openmm_and_ase_loaders_agree_on_atoms_positions_and_box(name):
    from openmm import unit

    spec = systems.get_system(name)
    topology, positions = systems.load_openmm(name)
    atoms = systems.load_atoms(name)

    positions_nm = positions.value_in_unit(unit.nanometer)
    assert positions_nm.shape == (topology.getNumAtoms(), 3) == (len(atoms), 3)
    assert [a.element.symbol for a in topology.atoms()] == atoms.get_chemical_symbols()
    np.testing.assert_allclose(atoms.positions, 10.0 * positions_nm, atol=1e-9)

    box = topology.getPeriodicBoxVectors()
    assert (box is not None) == spec.periodic
    assert bool(atoms.pbc.all()) == spec.periodic and bool(atoms.pbc.any()) == spec.periodic
    if spec.periodic:
        np.testing.assert_allclose(atoms.cell.array, 10.0 * np.array(box.value_in_unit(unit.nanometer)), atol=1e-9)
    else:
        assert atoms.cell.rank == 0


@pytest.mark.parametrize("alias", ["ala2", "alanine-dipeptide-c5", "ALA2", " alanine-dipeptide "])
def test_aliases_resolve_to_the_default_alanine_dipeptide(alias):
    assert systems.get_system(alias) == systems.get_system("alanine-dipeptide")


@pytest.mark.parametrize("name", ALA2_NAMES)
def test_alanine_dipeptide_has_22_atoms_in_standard_order_and_names(name):
    topology, _ = systems.load_openmm(name)
    # OpenMM renames some cap atoms on reading (ACE HH31 -> H1, NME CH3 -> C), so read the raw file.
    raw = [
        (line[17:20], line[12:16].strip(), line[76:78].strip())
        for line in systems.get_system(name).pdb_path.read_text().splitlines()
        if line.startswith(("ATOM", "HETATM"))
    ]
    assert raw == ALA2_ATOMS
    assert topology.getNumAtoms() == 22
    assert [r.name for r in topology.residues()] == ["ACE", "ALA", "NME"]
    assert systems.load_atoms(name).get_chemical_formula() == "C6H12N2O2"


def test_default_alanine_dipeptide_is_in_the_c5_basin():
    phi, psi = _phi_psi_deg(systems.get_system("alanine-dipeptide").pdb_path)
    assert -180.0 < phi < -120.0
    assert psi > 130.0 or psi < -170.0


def test_c7_alanine_dipeptide_structures_are_in_their_basins():
    phi, psi = _phi_psi_deg(systems.get_system("alanine-dipeptide-c7eq").pdb_path)
    assert -110.0 < phi < -50.0 and 20.0 < psi < 110.0
    phi, psi = _phi_psi_deg(systems.get_system("alanine-dipeptide-c7ax").pdb_path)
    assert 40.0 < phi < 100.0 and -100.0 < psi < -20.0


@pytest.mark.parametrize("name", ALA2_NAMES)
def test_amber14_energy_of_shipped_alanine_dipeptide_matches_build_info(name):
    spec = systems.get_system(name)
    record = next(c for c in _build_info("alanine-dipeptide")["conformers"].values() if c["file"] == spec.pdb_path.name)
    energy = _forcefield_energy_kj_per_mol(spec)
    assert np.isfinite(energy)
    assert energy == pytest.approx(record["energy_of_pdb_file_kj_per_mol"], abs=0.01)
    # PDB rounding (0.001 Angstrom) costs only a little above the minimum
    assert 0.0 <= energy - record["energy_minimised_kj_per_mol"] < 0.1


@pytest.mark.parametrize("name", IMPLICIT_SOLVENT_PEPTIDES)
def test_gbn2_energy_of_shipped_peptide_matches_build_info(name):
    spec = systems.get_system(name)
    folder, n_atoms = IMPLICIT_SOLVENT_PEPTIDES[name]
    assert spec.forcefield_files == ("amber14-all.xml", "implicit/gbn2.xml")
    record = next(c for c in _build_info(folder)["conformers"].values() if c["file"] == spec.pdb_path.name)
    assert record["n_atoms"] == n_atoms == systems.load_openmm(name)[0].getNumAtoms()
    energy = _forcefield_energy_kj_per_mol(spec)
    assert energy == pytest.approx(record["energy_of_pdb_file_kj_per_mol"], abs=0.01)
    assert 0.0 <= energy - record["energy_minimised_kj_per_mol"] < 0.2


@pytest.mark.parametrize("start, target", [("polyproline", "polyproline-ppi"), ("chignolin", "chignolin-folded")])
def test_peptide_start_and_target_have_the_same_atoms_in_the_same_order(start, target):
    def listing(name):
        return [(atom.residue.name, atom.name, atom.element.symbol) for atom in systems.load_openmm(name)[0].atoms()]

    assert listing(start) == listing(target)


@pytest.mark.parametrize("name, n_atoms", WATER_BOXES.items())
def test_water_box_is_periodic_cubic_at_one_gram_per_cm3(name, n_atoms):
    atoms = systems.load_atoms(name)
    assert systems.get_system(name).periodic and atoms.pbc.all()
    assert len(atoms) == n_atoms
    assert atoms.get_chemical_formula() == f"H{2 * n_atoms // 3}O{n_atoms // 3}"
    a, b, c, alpha, beta, gamma = atoms.cell.cellpar()
    assert a == pytest.approx(b) == pytest.approx(c)
    assert (alpha, beta, gamma) == pytest.approx((90.0, 90.0, 90.0))
    density_g_per_cm3 = atoms.get_masses().sum() / AVOGADRO_PER_MOL / (atoms.get_volume() * 1e-24)
    assert density_g_per_cm3 == pytest.approx(1.0, rel=0.02)
    assert a >= 10.0  # at least twice a 5 Angstrom cutoff


@pytest.mark.parametrize("name", WATER_BOXES)
def test_water_molecules_are_written_whole_and_inside_the_box(name):
    atoms = systems.load_atoms(name)
    molecules = atoms.positions.reshape(-1, 3, 3)  # O H1 H2
    oh_A = np.linalg.norm(molecules[:, 1:] - molecules[:, :1], axis=-1)
    assert 0.85 < oh_A.min() and oh_A.max() < 1.15  # no bond split across the boundary
    oxygen_fractional = atoms.cell.scaled_positions(molecules[:, 0])
    assert (oxygen_fractional > -0.05).all() and (oxygen_fractional < 1.05).all()


def test_water_192_has_finite_negative_flexible_tip3p_energy():
    import openmm
    from openmm import app, unit

    spec = systems.get_system("water-192")
    topology, positions = systems.load_openmm(spec.name)
    system = app.ForceField(*spec.forcefield_files).createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=0.55 * unit.nanometer, constraints=None, rigidWater=False
    )
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(positions)
    energy_per_molecule = (
        context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / 64
    )
    assert -50.0 < energy_per_molecule < -25.0  # liquid TIP3P is about -40 kJ/mol per molecule


def test_unknown_name_raises_with_the_known_names_listed():
    with pytest.raises(KeyError) as excinfo:
        systems.get_system("alanine-tripeptide")
    assert isinstance(excinfo.value, ValueError)
    message = str(excinfo.value)
    assert "alanine-tripeptide" in message
    for name in REGISTERED + ["ala2"]:
        assert name in message


def test_missing_pdb_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        systems.load_openmm(tmp_path / "nothing-here.pdb")


def test_pdb_path_is_periodic_iff_it_has_a_cryst1_box(tmp_path):
    water_text = systems.get_system("water-192").pdb_path.read_text()
    ala2_text = systems.get_system("alanine-dipeptide").pdb_path.read_text()
    placeholder = "CRYST1    1.000    1.000    1.000  90.00  90.00  90.00 P 1           1 \n"
    (tmp_path / "box.pdb").write_text(water_text)
    (tmp_path / "nobox.pdb").write_text(ala2_text)
    (tmp_path / "placeholder.pdb").write_text(placeholder + ala2_text)

    box = systems.get_system(str(tmp_path / "box.pdb"))
    assert box.name == "box" and box.periodic
    assert systems.load_atoms(tmp_path / "box.pdb").pbc.all()

    for stem in ("nobox", "placeholder"):
        path = tmp_path / f"{stem}.pdb"
        assert not systems.get_system(path).periodic
        topology, positions = systems.load_openmm(path)
        assert topology.getPeriodicBoxVectors() is None and len(positions) == 22
        atoms = systems.load_atoms(path)
        assert not atoms.pbc.any() and atoms.cell.rank == 0


def test_systems_dir_follows_the_environment_variable(tmp_path):
    code = "from mlpot import systems; print(systems.SYSTEMS_DIR); print(systems.list_systems()[0].pdb_path)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=_subprocess_env(MLPOT_SYSTEMS_DIR=str(tmp_path)),
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert out == [str(tmp_path), str(tmp_path / "alanine-dipeptide" / "alanine-dipeptide.pdb")]


def test_default_systems_dir_is_the_repository_systems_folder():
    if os.environ.get("MLPOT_SYSTEMS_DIR"):
        pytest.skip("MLPOT_SYSTEMS_DIR is set")
    assert systems.SYSTEMS_DIR == REPO_ROOT / "systems"


def test_importing_the_registry_does_not_import_openmm_or_ase():
    code = "import sys, mlpot.systems; print(sorted({'openmm', 'ase'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=_subprocess_env(), capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_ethanol_system_is_the_molecule_of_the_shipped_dataset():
    """The registered ethanol has the dataset's element order (C, C, O, H x6), so a model trained on it runs on it."""
    import ase.io

    atoms = systems.load_atoms("ethanol")
    first_frame = ase.io.read(systems.SYSTEMS_DIR / "ethanol" / "dft.extxyz", index=0)
    assert atoms.get_chemical_symbols() == first_frame.get_chemical_symbols()
    distances = atoms.get_all_distances()
    assert 1.45 < distances[0, 1] < 1.56 and 1.38 < distances[1, 2] < 1.47  # C-C and C-O bonds, Å


def test_reference_data_of_ethanol_and_alanine_dipeptide_are_their_shipped_dft_frames():
    assert systems.reference_data_file("ethanol") == systems.SYSTEMS_DIR / "ethanol" / "dft.extxyz"
    for name in ALA2_NAMES:
        assert systems.get_system(name).reference_data == systems.SYSTEMS_DIR / "alanine-dipeptide" / "dft.extxyz"
    for spec in systems.list_systems():
        assert spec.reference_data is None or spec.reference_data.is_file(), spec.name
    with pytest.raises(ValueError, match="system 'water-192' has no shipped reference data; systems with some: "
                                         r"\['alanine-dipeptide'"):
        systems.reference_data_file("water-192")

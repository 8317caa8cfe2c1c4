"""ASE calculator: ASE conventions, agreement with the model, and errors in the user's words."""

from __future__ import annotations

import multiprocessing
import pickle
import shutil

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from conftest import as_tensors
from mlpot.deploy import ModelFileError
from mlpot.plugins.ase import MLPotCalculator


@pytest.mark.parametrize("arch", ["egnn", "nequip"])
def test_calculator_returns_the_model_energy_forces_and_per_atom_energies(
    arch, model_files, eager_models, alanine_dipeptide
):
    atoms = alanine_dipeptide.copy()
    atoms.calc = MLPotCalculator(model_files[(arch, "float64")])
    expected = eager_models[(arch, "float64")].compute(*as_tensors(atoms), True, False, False)
    assert atoms.get_potential_energy() == pytest.approx(float(expected["energy"]), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), expected["forces"].numpy(), atol=1e-10)
    np.testing.assert_allclose(atoms.get_potential_energies().sum(), atoms.get_potential_energy(), rtol=1e-12)


def test_stress_is_voigt_ordered_in_ase_convention(model_files, eager_models, dilute_water_box):
    atoms = dilute_water_box.copy()
    atoms.calc = MLPotCalculator(model_files[("nequip", "float64")])
    stress = eager_models[("nequip", "float64")].compute(*as_tensors(atoms), True, True, False)["stress"].numpy()
    expected = [stress[0, 0], stress[1, 1], stress[2, 2], stress[1, 2], stress[0, 2], stress[0, 1]]
    np.testing.assert_allclose(atoms.get_stress(), expected, atol=1e-12)


def test_results_are_cached_until_the_atoms_change(model_files, alanine_dipeptide, monkeypatch):
    atoms = alanine_dipeptide.copy()
    calculator = MLPotCalculator(model_files[("egnn", "float32")])
    atoms.calc = calculator
    calls = []
    original = calculator.calculate
    monkeypatch.setattr(calculator, "calculate", lambda *a, **k: (calls.append(1), original(*a, **k)))
    atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_potential_energies()
    assert len(calls) == 1
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert len(calls) == 2


def test_unknown_element_names_the_element_and_the_model_species(model_files):
    atoms = Atoms("CH3Cl", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [-1.8, 0, 0]])
    atoms.calc = MLPotCalculator(model_files[("egnn", "float32")])
    with pytest.raises(ValueError, match=r"element\(s\) Cl not supported by model .* knows only H, C, N, O"):
        atoms.get_potential_energy()


def test_nan_position_names_the_atom(model_files, alanine_dipeptide):
    atoms = alanine_dipeptide.copy()
    atoms.positions[4] = np.nan
    atoms.calc = MLPotCalculator(model_files[("egnn", "float32")])
    with pytest.raises(ValueError, match=r"atom 4 \(C\) has a NaN or infinite position"):
        atoms.get_forces()


def test_stress_of_a_molecule_is_not_implemented(model_files, alanine_dipeptide):
    atoms = alanine_dipeptide.copy()
    atoms.calc = MLPotCalculator(model_files[("egnn", "float32")])
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_box_too_small_for_the_cutoff_is_refused(model_files):
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=[6.0, 6.0, 6.0], pbc=True)
    atoms.calc = MLPotCalculator(model_files[("egnn", "float32")])
    with pytest.raises(ValueError, match="periodic box too small for the cutoff"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("arch", ["egnn", "nequip"])
def test_a_pickled_calculator_gives_the_same_energy_and_forces(arch, model_files, alanine_dipeptide):
    atoms = alanine_dipeptide.copy()
    atoms.calc = MLPotCalculator(model_files[(arch, "float64")])
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    copy = pickle.loads(pickle.dumps(atoms.calc))
    assert copy is not atoms.calc and copy.model.path == atoms.calc.model.path
    moved = alanine_dipeptide.copy()
    moved.calc = copy
    assert moved.get_potential_energy() == energy
    np.testing.assert_array_equal(moved.get_forces(), forces)


def test_todict_names_the_model_file_device_dtype_and_content_hash(model_files):
    path = model_files[("nequip", "float32")]
    settings = MLPotCalculator(path).todict()
    assert settings["model"] == str(path.resolve()) and settings["device"] == "cpu"
    assert settings["dtype"] == "float32" and len(settings["content_hash"]) >= 32


def test_unpickling_refuses_a_model_file_that_changed_since(model_files, alanine_dipeptide, tmp_path):
    path = tmp_path / "model.pt"
    shutil.copyfile(model_files[("egnn", "float64")], path)
    pickled = pickle.dumps(MLPotCalculator(path))
    shutil.copyfile(model_files[("nequip", "float64")], path)
    with pytest.raises(ModelFileError, match=r"model.pt changed since this calculator was pickled"):
        pickle.loads(pickled)


def test_a_process_pool_computes_energies_with_the_pickled_calculator(model_files, alanine_dipeptide):
    calculator = MLPotCalculator(model_files[("egnn", "float32")])
    structures = []
    for shift in (0.0, 0.05, 0.1, 0.15):
        atoms = alanine_dipeptide.copy()
        atoms.positions[0, 0] += shift
        structures.append(atoms)
    expected = [calculator.get_potential_energy(atoms) for atoms in structures]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        energies = pool.map(calculator.get_potential_energy, structures)  # the bound method carries the calculator
    np.testing.assert_allclose(energies, expected, rtol=1e-6)

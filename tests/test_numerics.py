"""Compiled models stay precise far from the origin and refuse broken structures by name instead of NaN."""

from __future__ import annotations

import pytest
import torch

from conftest import ARCHITECTURES, as_tensors
from mlpot.deploy import load_model
from mlpot.neighbors import number_text


@pytest.fixture(scope="module")
def float32_models(model_files):
    return {arch: load_model(model_files[(arch, "float32")]) for arch in ARCHITECTURES}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_float32_forces_do_not_change_when_the_molecule_is_moved_1e4_angstrom(arch, float32_models, alanine_dipeptide):
    """Before centring, the float32 cast at 1e4 Å cost ~1e-3 Å of position and 15 meV/Å of force."""
    model = float32_models[arch]
    positions, numbers, cell, pbc = as_tensors(alanine_dipeptide)
    here = model.compute(positions, numbers, cell, pbc)
    far = model.compute(positions + torch.tensor([1.0e4, -2.0e4, 7.5e3], dtype=torch.float64), numbers, cell, pbc)
    assert torch.allclose(far["forces"], here["forces"], rtol=0, atol=1e-4)
    assert float(abs(far["energy"] - here["energy"])) < 1e-4


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_periodic_energy_and_stress_unchanged_by_a_large_rigid_shift(arch, float32_models, dilute_water_box):
    model = float32_models[arch]
    positions, numbers, cell, pbc = as_tensors(dilute_water_box)
    here = model.compute(positions, numbers, cell, pbc, stress=True)
    far = model.compute(positions + 1.0e4, numbers, cell, pbc, stress=True)
    assert torch.allclose(far["forces"], here["forces"], rtol=0, atol=1e-4)
    assert torch.allclose(far["stress"], here["stress"], rtol=0, atol=1e-6)


def _model_error(model, positions, numbers, cell, pbc) -> str:
    with pytest.raises(ValueError) as error:
        model.compute(positions, numbers, cell, pbc)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_two_atoms_on_top_of_each_other_are_refused_naming_the_pair(arch, model_files, alanine_dipeptide):
    model = load_model(model_files[(arch, "float64")])
    positions, numbers, cell, pbc = as_tensors(alanine_dipeptide)
    positions[5] = positions[2]
    message = _model_error(model, positions, numbers, cell, pbc)
    assert message.startswith("atoms ") and {"2", "5"} == set(message.split(" are ")[0][6:].split(" and "))
    assert "are 0.0 Å apart (closer than 0.01 Å)" in message


def test_huge_coordinates_and_empty_structures_are_refused(float32_models, alanine_dipeptide):
    model = float32_models["egnn"]
    positions, numbers, cell, pbc = as_tensors(alanine_dipeptide)
    message = _model_error(model, positions + 1.0e8, numbers, cell, pbc)
    assert message.startswith("coordinates reach 100000") and "beyond the 1000000.0 Å mlpot accepts" in message
    assert _model_error(model, positions[:0], numbers[:0], cell, pbc) == "the structure has no atoms"
    positions[3, 1] = float("nan")
    assert "first bad atom index 3" in _model_error(model, positions, numbers, cell, pbc)


def test_periodic_structure_with_a_zero_cell_is_refused_by_name(float32_models, dilute_water_box):
    positions, numbers, _, _ = as_tensors(dilute_water_box)
    message = _model_error(float32_models["egnn"], positions, numbers, torch.zeros(3, 3, dtype=torch.float64),
                           torch.ones(3, dtype=torch.bool))
    assert message.startswith("the structure is periodic along axis 0 but its cell has zero volume")


def test_box_too_small_message_writes_numbers_as_numbers(float32_models, dilute_water_box):
    positions, numbers, _, pbc = as_tensors(dilute_water_box)
    cell = 9.0 * torch.eye(3, dtype=torch.float64)
    message = _model_error(float32_models["egnn"], positions, numbers, cell, pbc)
    assert "the width along axis 0 is 9.0 Å but must be at least 2 x cutoff = 10.0 Å" in message


@pytest.mark.parametrize("value, text", [(9.0, "9.0"), (0.1, "0.1"), (12.41699999, "12.417"), (-2.5, "-2.5"),
                                         (100000008.0, "100000008.0"), (1e20, "1e+20")])
def test_number_text_is_the_same_compiled_and_eager(value, text):
    assert number_text(value) == text
    assert torch.jit.script(number_text)(value) == text

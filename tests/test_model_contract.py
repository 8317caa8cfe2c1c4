"""The contract every architecture must meet: symmetry, conservative forces, stress, periodicity, smoothness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from conftest import ARCHITECTURES, as_tensors

TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(float(b.abs().max()), 1e-12)
    return float((a - b).abs().max()) / scale


def _compute(model, positions, numbers, cell, pbc, stress=False):
    results = model.compute(positions, numbers, cell, pbc, True, stress, False)
    return {key: value.detach() for key, value in results.items()}


def _orthogonal(seed: int, reflect: bool) -> torch.Tensor:
    matrix = Rotation.random(random_state=seed).as_matrix()
    if reflect:
        matrix = matrix @ np.diag([1.0, 1.0, -1.0])
    return torch.tensor(matrix)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("system", ["molecule", "periodic"])
@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_rotation_reflection_translation_permutation_leave_energy_invariant_and_forces_equivariant(
    arch, dtype, system, reflect, eager_models, alanine_dipeptide, dilute_water_box
):
    model = eager_models[(arch, dtype)]
    atoms = alanine_dipeptide if system == "molecule" else dilute_water_box
    torch_dtype = torch.float64 if dtype == "float64" else torch.float32
    positions, numbers, cell, pbc = as_tensors(atoms, torch.float64)
    reference = _compute(model, positions.to(torch_dtype), numbers, cell.to(torch_dtype), pbc)

    matrix = _orthogonal(seed=7, reflect=reflect)
    translation = torch.tensor([1.3, -0.7, 2.9], dtype=torch.float64)
    permutation = torch.randperm(len(numbers), generator=torch.Generator().manual_seed(3))
    moved_positions = (positions @ matrix.T + translation)[permutation]
    moved_cell = cell @ matrix.T
    moved = _compute(model, moved_positions.to(torch_dtype), numbers[permutation], moved_cell.to(torch_dtype), pbc)

    tolerance = TOLERANCE[dtype]
    assert _relative(moved["energy"], reference["energy"]) < tolerance
    expected_forces = (reference["forces"].double() @ matrix.T)[permutation]
    assert _relative(moved["forces"].double(), expected_forces) < tolerance
    assert _relative(moved["energies"], reference["energies"][permutation]) < tolerance


def _interaction_energy(model, positions, numbers, cell, pbc) -> float:
    """Energy minus the constant per-species shifts, summed per atom first so no digits cancel."""
    with torch.no_grad():
        energies = model(positions, numbers, cell, pbc)
        return float((energies - model.energy_shift[model.species_of(numbers)]).sum())


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("system", ["molecule", "periodic"])
def test_forces_equal_minus_gradient_by_central_differences(
    arch, system, eager_models, alanine_dipeptide, dilute_water_box
):
    model = eager_models[(arch, "float64")]
    atoms = alanine_dipeptide if system == "molecule" else dilute_water_box
    positions, numbers, cell, pbc = as_tensors(atoms)
    forces = _compute(model, positions, numbers, cell, pbc)["forces"]
    step = 1e-5
    generator = torch.Generator().manual_seed(0)
    for atom in torch.randint(len(numbers), (4,), generator=generator).tolist():
        for axis in range(3):
            plus, minus = positions.clone(), positions.clone()
            plus[atom, axis] += step
            minus[atom, axis] -= step
            numerical = -(_interaction_energy(model, plus, numbers, cell, pbc)
                          - _interaction_energy(model, minus, numbers, cell, pbc)) / (2 * step)
            assert abs(numerical - float(forces[atom, axis])) < 1e-6 * max(1.0, abs(numerical))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_stress_equals_strain_derivative_by_central_differences(arch, eager_models, dilute_water_box):
    model = eager_models[(arch, "float64")]
    positions, numbers, cell, pbc = as_tensors(dilute_water_box)
    # a slightly sheared cell so off-diagonal components are non-trivial
    shear = torch.eye(3, dtype=torch.float64) + torch.tensor([[0.0, 0.03, 0.0], [0.0, 0.0, 0.02], [0.01, 0.0, 0.0]])
    positions, cell = positions @ shear, cell @ shear
    stress = _compute(model, positions, numbers, cell, pbc, stress=True)["stress"]
    volume = float(torch.linalg.det(cell).abs())
    step = 1e-6
    for a, b in [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)]:
        strain = torch.zeros(3, 3, dtype=torch.float64)
        strain[a, b] = strain[b, a] = step / 2 if a != b else step
        energies = []
        for sign in (1.0, -1.0):
            deformation = torch.eye(3, dtype=torch.float64) + sign * strain
            energies.append(_interaction_energy(model, positions @ deformation, numbers, cell @ deformation, pbc))
        numerical = (energies[0] - energies[1]) / (2 * step) / volume
        assert abs(numerical - float(stress[a, b])) < 1e-7 + 1e-5 * abs(numerical)
    assert torch.allclose(stress, stress.T, atol=1e-12)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_wrapping_atom_across_box_leaves_energy_and_forces_unchanged(arch, eager_models, dilute_water_box):
    model = eager_models[(arch, "float64")]
    positions, numbers, cell, pbc = as_tensors(dilute_water_box)
    reference = _compute(model, positions, numbers, cell, pbc)
    shifted = positions.clone()
    shifted[0] += cell[0] - 2.0 * cell[2]  # move atom 0 to another image
    shifted[5] -= cell[1]
    moved = _compute(model, shifted, numbers, cell, pbc)
    assert _relative(moved["energy"], reference["energy"]) < 1e-12
    assert _relative(moved["forces"], reference["forces"]) < 1e-10


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_energy_and_force_go_smoothly_to_zero_as_a_pair_crosses_the_cutoff(arch, eager_models):
    model = eager_models[(arch, "float64")]
    cutoff = model.cutoff
    numbers = torch.tensor([6, 8])
    cell, pbc = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool)

    def energy_and_force(distance):
        positions = torch.tensor([[0.0, 0.0, 0.0], [distance, 0.0, 0.0]], dtype=torch.float64)
        results = _compute(model, positions, numbers, cell, pbc)
        return float(results["energy"]), float(results["forces"][1, 0])

    separated, _ = energy_and_force(3.0 * cutoff)
    inside_energy, inside_force = energy_and_force(cutoff - 1e-3)
    outside_energy, outside_force = energy_and_force(cutoff + 1e-3)
    assert outside_energy - separated == pytest.approx(0.0, abs=1e-12) and outside_force == 0.0
    assert abs(inside_energy - separated) < 1e-8 and abs(inside_force) < 1e-5


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_compiled_model_matches_eager_model(arch, eager_models, alanine_dipeptide):
    from mlpot.deploy import compile_model

    model = eager_models[(arch, "float64")]
    compiled = compile_model(model)
    inputs = as_tensors(alanine_dipeptide)
    eager, scripted = _compute(model, *inputs), _compute(compiled, *inputs)
    assert _relative(scripted["energy"], eager["energy"]) < 1e-12
    assert _relative(scripted["forces"], eager["forces"]) < 1e-10


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_periodic_energy_is_sum_over_cells_when_the_box_is_replicated(arch, eager_models, dilute_water_box):
    model = eager_models[(arch, "float64")]
    single = _compute(model, *as_tensors(dilute_water_box))
    doubled = _compute(model, *as_tensors(dilute_water_box.repeat((2, 1, 1))))
    assert float(doubled["energy"]) == pytest.approx(2 * float(single["energy"]), rel=1e-10)


@pytest.mark.parametrize("arch", ["egnn", "nequip"])
def test_the_layer_by_layer_entry_points_compose_to_the_model_in_its_file(arch, model_files, dilute_water_box):
    """What LAMMPS runs over MPI ranks (graph_layer, one layer at a time, node states exchanged in between) is the
    model itself: the same per-atom energies and edge-vector gradients as atom_energies, through the TorchScript
    file, on directed edges."""
    from mlpot.deploy import load_model
    from mlpot.neighbors import edge_vectors, neighbor_pairs

    module = load_model(model_files[(arch, "float64")]).module
    atoms = dilute_water_box
    positions = torch.tensor(atoms.positions)
    cell = torch.tensor(atoms.cell.array)
    edge_index, shifts = neighbor_pairs(positions, cell, torch.tensor([True] * 3), module.cutoff)
    species = module.species_table[torch.tensor(atoms.numbers)]
    vectors = edge_vectors(positions, cell, edge_index, shifts.to(positions.dtype)).detach().requires_grad_(True)
    whole = module.atom_energies(species, edge_index, vectors)
    (whole_gradient,) = torch.autograd.grad(whole.sum(), vectors)

    widths = module.graph_state_widths()
    state = module.graph_layer(-1, torch.zeros(0), species, edge_index, vectors)
    assert state.shape == (len(atoms), widths[0])
    for layer in range(len(widths) - 1):
        state = module.graph_layer(layer, state, species, edge_index, vectors)
        assert state.shape == (len(atoms), widths[layer + 1])
    layered = module.graph_energies(state, species)
    (layered_gradient,) = torch.autograd.grad(layered.sum(), vectors)
    torch.testing.assert_close(layered, whole, rtol=1e-12, atol=1e-12)

    def forces(gradient):  # an edge's gradient g = dE/dr_ij pushes +g on its centre i and -g on its neighbour j
        return (torch.zeros(len(atoms), 3, dtype=gradient.dtype).index_add_(0, edge_index[0], gradient)
                .index_add_(0, edge_index[1], -gradient))

    # per edge the two differ (atom_energies takes a mirrored pair's distance from its first half only), per atom not
    torch.testing.assert_close(forces(layered_gradient), forces(whole_gradient), rtol=1e-10, atol=1e-12)

"""The fast NequIP modules (l <= 1 convolution, self-connection, gate, dense linear, folded radial network),
NequIP's irreps layout, the mirrored-halves edge list.

Each is a speed-up that must not change the physics: the fast paths give e3nn's numbers, the
pruned layout builds what NequIP builds, the radial weights computed once per pair give the same
energies and forces as computed once per edge, and the model stays equivariant and conservative.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from scipy.spatial.transform import Rotation

from conftest import SPECIES, as_tensors
from mlpot.deploy import compile_model
from mlpot.models import build_model, describe
from mlpot.models import linear as linear_module
from mlpot.models.convolution import L1Convolution, supports
from mlpot.models.gating import ScalarGate
from mlpot.models.gating import supports as gating_supports
from mlpot.models.linear import MAX_MATRIX_ENTRIES, DenseLinear
from mlpot.models.linear import supports as supports_linear
from mlpot.models.mlp import FoldedMLP
from mlpot.models.mlp import supports as supports_mlp
from mlpot.models.nequip import hidden_irreps, reachable_irreps
from mlpot.models.self_connection import ScalarTensorProduct
from mlpot.neighbors import concatenate_edges, edge_vectors, mirrored_halves, neighbor_pairs

# lmax 1 with both parities: every one of the five elementary operations, in every layer position
L1_HYPERPARAMETERS = {"num_features": 8, "lmax": 1, "parity": True, "num_layers": 3, "radial_width": 16,
                      "prune_irreps": True}


def _l1_model(dtype: str = "float64", **overrides):
    hyperparameters = dict(L1_HYPERPARAMETERS, **overrides)
    return build_model(describe("nequip", SPECIES, 5.0, dtype=dtype, hyperparameters=hyperparameters,
                                energy_scale=0.5), seed=3)


class _E3nnLinear(torch.nn.Module):
    """:class:`DenseLinear`'s interface computed by the e3nn ``o3.Linear`` itself (the reference)."""

    def __init__(self, linear: o3.Linear, dense: DenseLinear):
        super().__init__()
        self.linear = linear
        self.scale = dense.scale

    def forward(self, features, weight):
        return self.linear(features) * self.scale


def _with_e3nn_convolution():
    """The same model (same seed) computing everything with e3nn's own modules: the reference."""
    reference = _l1_model()
    representation = reference.representation
    for layer in representation.layers:  # None: the layer's e3nn fallback
        layer.l1_convolution = None
        layer.scalar_self_connection = None
        layer.scalar_gate = None
        layer.linear_up_matrix = None
        layer.linear_down_matrix = None
    for name in ("embedding", "readout_hidden", "readout"):
        setattr(representation, name + "_matrix", _E3nnLinear(getattr(representation, name),
                                                              getattr(representation, name + "_matrix")))
    return reference


def _graph(num_atoms: int, num_edges: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_atoms, (2, num_edges), generator=generator)
    vectors = torch.randn(num_edges, 3, generator=generator, dtype=torch.float64)
    sh = o3.spherical_harmonics(o3.Irreps.spherical_harmonics(1), vectors, True, normalization="component")
    return edge_index, sh


@pytest.mark.parametrize("layer_index", [0, 1, 2])
def test_l1_convolution_equals_e3nn_tensor_product_and_scatter_with_gradients(layer_index):
    layer = _l1_model().representation.layers[layer_index]
    tensor_product = layer.tensor_product
    convolution = L1Convolution(tensor_product)
    num_atoms, num_edges = 7, 40
    edge_index, sh = _graph(num_atoms, num_edges, seed=layer_index)
    generator = torch.Generator().manual_seed(10 + layer_index)
    features = torch.randn(num_atoms, tensor_product.irreps_in1.dim, generator=generator, dtype=torch.float64)
    weights = torch.randn(num_edges, tensor_product.weight_numel, generator=generator, dtype=torch.float64)
    inputs = [tensor.clone().requires_grad_(True) for tensor in (features, sh, weights)]
    reference_inputs = [tensor.clone().requires_grad_(True) for tensor in (features, sh, weights)]

    fast = convolution(inputs[0], edge_index, inputs[1], inputs[2] * convolution.weight_scale)  # constants folded
    messages = tensor_product(reference_inputs[0][edge_index[1]], reference_inputs[1], reference_inputs[2])
    reference = torch.zeros(num_atoms, messages.shape[1], dtype=torch.float64).index_add_(0, edge_index[0], messages)
    assert fast.shape == reference.shape
    torch.testing.assert_close(fast, reference, rtol=1e-6, atol=1e-6)  # e3nn keeps its 3j symbols in float32

    probe = torch.randn(reference.shape, generator=generator, dtype=torch.float64)
    (fast * probe).sum().backward()
    (reference * probe).sum().backward()
    torch.testing.assert_close(inputs[0].grad, reference_inputs[0].grad, rtol=1e-6, atol=1e-6)  # features
    torch.testing.assert_close(inputs[2].grad, reference_inputs[2].grad, rtol=1e-6, atol=1e-6)  # weights
    # harmonics: Y_0 = 1 is a constant the fast path never reads, so only Y_1 carries a gradient
    torch.testing.assert_close(inputs[1].grad[:, 1:], reference_inputs[1].grad[:, 1:], rtol=1e-6, atol=1e-6)


def _assert_same_values_and_input_gradients(fast, reference, inputs, seed):
    """``fast(*inputs)`` equals ``reference(*inputs)``, and so do their gradients for a random probe."""
    fast_inputs = [tensor.clone().requires_grad_(True) for tensor in inputs]
    reference_inputs = [tensor.clone().requires_grad_(True) for tensor in inputs]
    fast_output, reference_output = fast(*fast_inputs), reference(*reference_inputs)
    assert fast_output.shape == reference_output.shape
    torch.testing.assert_close(fast_output, reference_output, rtol=1e-6, atol=1e-6)
    probe = torch.randn(reference_output.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    (fast_output * probe).sum().backward()
    (reference_output * probe).sum().backward()
    for fast_input, reference_input in zip(fast_inputs, reference_inputs):
        torch.testing.assert_close(fast_input.grad, reference_input.grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer_index", [0, 1, 2])
def test_scalar_gate_equals_e3nn_gate_in_every_layer(layer_index):
    gate = _l1_model().representation.layers[layer_index].gate
    features = torch.randn(6, gate.irreps_in.dim, generator=torch.Generator().manual_seed(layer_index),
                           dtype=torch.float64)
    _assert_same_values_and_input_gradients(ScalarGate(gate), gate, [features], seed=layer_index)


def test_scalar_gate_equals_e3nn_gate_with_odd_scalars_and_l2_channels():
    # odd scalars (tanh), gated irreps out of sorted order (1o, 2e, 1e): the gates must follow e3nn's order
    gate = Gate("8x0e+4x0o", [torch.nn.functional.silu, torch.tanh], "6x0e", [torch.sigmoid], "2x1o+2x2e+2x1e")
    features = torch.randn(5, gate.irreps_in.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _assert_same_values_and_input_gradients(torch.jit.script(ScalarGate(gate)), gate, [features], seed=1)


def test_scalar_gate_refuses_an_activation_it_does_not_know():
    gate = Gate("4x0e", [torch.relu], "2x0e", [torch.sigmoid], "2x1o")
    assert not gating_supports(gate)
    with pytest.raises(ValueError, match="ScalarGate cannot compute"):
        ScalarGate(gate)


@pytest.mark.parametrize("irreps_in, irreps_out", [
    ("4x0e+2x1o+3x0e", "5x0e+2x1o"),  # two paths into one output block
    ("3x0e+2x1o+2x1e+1x2e", "2x1e+4x0e+2x1o+3x2e"),  # output blocks in another order
    ("4x0e", "1x0e"),
])
def test_dense_linear_equals_e3nn_linear_with_gradients(irreps_in, irreps_out):
    linear = o3.Linear(irreps_in, irreps_out).to(torch.float64)
    dense = DenseLinear(linear, scale=0.7).to(torch.float64)
    features = torch.randn(6, linear.irreps_in.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weight = linear.weight.detach()

    def reference(x, w):  # e3nn's linear map with an explicit weight, so the weight gradients compare too
        return linear(x, w) * 0.7

    _assert_same_values_and_input_gradients(dense, reference, [features, weight], seed=2)


@pytest.mark.parametrize("hidden, variance_in, variance_out", [([16], 1, 1), ([16, 12], 2, 3)])
def test_folded_mlp_equals_e3nn_network_with_its_output_scale_and_gradients(hidden, variance_in, variance_out):
    network = FullyConnectedNet([8] + hidden + [20], torch.nn.functional.silu, variance_in, variance_out)
    network = network.to(torch.float64)
    folded = torch.jit.script(FoldedMLP(network))
    generator = torch.Generator().manual_seed(len(hidden))
    x = torch.randn(7, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    output_scale = torch.randn(20, generator=generator, dtype=torch.float64)
    weights = [layer.weight for layer in network]
    mine = folded(x, weights, output_scale)
    theirs = network(x) * output_scale
    torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(folded(x, weights, None), network(x), rtol=1e-12, atol=1e-12)
    probe = torch.randn(theirs.shape, generator=generator, dtype=torch.float64)
    gradients_mine = torch.autograd.grad((mine * probe).sum(), [x] + weights)  # forces and training
    gradients_theirs = torch.autograd.grad((theirs * probe).sum(), [x] + weights)
    for gradient_mine, gradient_theirs in zip(gradients_mine, gradients_theirs):
        torch.testing.assert_close(gradient_mine, gradient_theirs, rtol=1e-12, atol=1e-12)


def test_folded_mlp_refuses_networks_other_than_silu_without_output_activation():
    for network in (FullyConnectedNet([4, 8, 2], torch.relu), FullyConnectedNet([4, 8, 2], torch.nn.functional.silu,
                                                                               out_act=True)):
        assert not supports_mlp(network)
        with pytest.raises(ValueError, match="FoldedMLP computes silu networks"):
            FoldedMLP(network)


def test_dense_linear_refuses_biases_and_matrices_too_large_to_pay():
    with pytest.raises(ValueError, match="DenseLinear cannot compute"):
        DenseLinear(o3.Linear("2x0e", "2x0e", biases=True))
    large = o3.Linear("64x0e+64x1o+64x2e", "64x0e+64x1o+64x2e")  # 576 x 576 > MAX_MATRIX_ENTRIES
    assert large.irreps_in.dim * large.irreps_out.dim > MAX_MATRIX_ENTRIES and not supports_linear(large)
    assert supports_linear(o3.Linear("1024x0e", "512x0e"))  # scalars to scalars: the weight is the matrix


def test_lmax2_model_with_layers_too_large_for_dense_linear_keeps_e3nn_and_matches_it(dilute_water_box):
    model = _l1_model(lmax=2, num_features=24)
    layers = model.representation.layers
    assert any(layer.linear_down_matrix is None for layer in layers)  # the fallback is exercised
    assert any(layer.linear_up_matrix is not None for layer in layers)
    reference = _l1_model(lmax=2, num_features=24)
    for layer in reference.representation.layers:
        layer.scalar_gate = None
        layer.linear_up_matrix = None
        layer.linear_down_matrix = None
    args = as_tensors(dilute_water_box)
    fast, slow = model.compute(*args, True, False, False), reference.compute(*args, True, False, False)
    torch.testing.assert_close(fast["energies"], slow["energies"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(fast["forces"], slow["forces"], rtol=1e-6, atol=1e-7)


def test_model_whose_readout_is_too_large_for_dense_linear_keeps_e3nn_and_compiles(monkeypatch, alanine_dipeptide):
    reference = _l1_model(prune_irreps=False)  # the last layer keeps every irreps: readout_hidden reads 32 x 16
    monkeypatch.setattr(linear_module, "MAX_MATRIX_ENTRIES", 100)  # as if every matrix were too large to pay
    model = _l1_model(prune_irreps=False)
    assert model.representation.readout_hidden_matrix is None
    assert all(layer.linear_down_matrix is None for layer in model.representation.layers)
    args = as_tensors(alanine_dipeptide)
    expected = reference.compute(*args, True, False, False)
    for candidate in (model, compile_model(model)):
        result = candidate.compute(*args, True, False, False)
        torch.testing.assert_close(result["energies"], expected["energies"], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(result["forces"], expected["forces"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("layer_index", [0, 1, 2])
def test_scalar_self_connection_equals_e3nn_fully_connected_tensor_product(layer_index):
    connection = _l1_model().representation.layers[layer_index].self_connection
    fast = ScalarTensorProduct(connection)
    generator = torch.Generator().manual_seed(20 + layer_index)
    features = torch.randn(6, connection.irreps_in1.dim, generator=generator, dtype=torch.float64, requires_grad=True)
    scalars = torch.randn(6, connection.irreps_in2.dim, generator=generator, dtype=torch.float64)  # not only one-hot
    mine = fast(features, scalars, connection.weight)
    theirs = connection(features, scalars)
    torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)
    probe = torch.randn(theirs.shape, generator=generator, dtype=torch.float64)
    gradients_mine = torch.autograd.grad((mine * probe).sum(), [features, connection.weight])
    gradients_theirs = torch.autograd.grad((theirs * probe).sum(), [features, connection.weight])
    for gradient_mine, gradient_theirs in zip(gradients_mine, gradients_theirs):  # forces and training
        torch.testing.assert_close(gradient_mine, gradient_theirs, rtol=1e-6, atol=1e-7)


def test_l1_convolution_is_used_exactly_where_it_applies():
    assert all(layer.l1_convolution is not None for layer in _l1_model().representation.layers)
    lmax2 = _l1_model(lmax=2).representation.layers
    assert all(layer.l1_convolution is None for layer in lmax2)
    assert not supports(lmax2[1].tensor_product)


@pytest.mark.parametrize("system", ["molecule", "periodic"])
def test_model_with_l1_convolution_equals_model_with_e3nn(system, alanine_dipeptide, dilute_water_box):
    model = _l1_model()
    reference = _with_e3nn_convolution()
    atoms = alanine_dipeptide if system == "molecule" else dilute_water_box
    args = as_tensors(atoms)
    fast = model.compute(*args, True, False, False)
    slow = reference.compute(*args, True, False, False)
    torch.testing.assert_close(fast["energies"], slow["energies"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(fast["forces"], slow["forces"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_l1_model_is_invariant_and_its_forces_equivariant(reflect, alanine_dipeptide):
    model = _l1_model()
    positions, numbers, cell, pbc = as_tensors(alanine_dipeptide)
    reference = model.compute(positions, numbers, cell, pbc, True, False, False)
    matrix = Rotation.random(random_state=5).as_matrix()
    if reflect:
        matrix = matrix @ np.diag([1.0, 1.0, -1.0])
    matrix = torch.tensor(matrix)
    moved = model.compute(positions @ matrix.T + 0.7, numbers, cell, pbc, True, False, False)
    torch.testing.assert_close(moved["energy"], reference["energy"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(moved["forces"], reference["forces"] @ matrix.T, rtol=1e-9, atol=1e-10)


def test_l1_model_forces_are_minus_the_energy_gradient(alanine_dipeptide):
    model = _l1_model()
    positions, numbers, cell, pbc = as_tensors(alanine_dipeptide)
    forces = model.compute(positions, numbers, cell, pbc, True, False, False)["forces"]
    step = 1e-5
    for atom, axis in [(0, 0), (4, 1), (13, 2)]:
        shifted = []
        for sign in (1.0, -1.0):
            moved = positions.clone()
            moved[atom, axis] += sign * step
            shifted.append(float(model.compute(moved, numbers, cell, pbc, False, False, False)["energy"]))
        assert (shifted[0] - shifted[1]) / (2 * step) == pytest.approx(-float(forces[atom, axis]), rel=1e-6, abs=1e-9)


def test_neighbor_list_comes_in_mirrored_halves_and_a_batch_does_not(alanine_dipeptide, dilute_water_box):
    for atoms in (alanine_dipeptide, dilute_water_box):
        positions, _, cell, pbc = as_tensors(atoms)
        edge_index, shifts = neighbor_pairs(positions, cell, pbc, 5.0)
        assert mirrored_halves(edge_index)
        vectors = edge_vectors(positions, cell, edge_index, shifts)
        half = edge_index.shape[1] // 2
        torch.testing.assert_close(vectors[half:], -vectors[:half], rtol=0, atol=1e-12)
    positions, _, cell, pbc = as_tensors(alanine_dipeptide)
    edge_index, shifts = neighbor_pairs(positions, cell, pbc, 5.0)
    batch = torch.cat([edge_index, edge_index + len(positions)], dim=1)
    assert not mirrored_halves(batch)
    assert not mirrored_halves(torch.zeros(2, 0, dtype=torch.long))
    # an isolated atom (no edges) in a batch does not cost the others the per-pair saving
    no_edges = (torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 3, dtype=torch.float64))
    joined, joined_shifts, owner = concatenate_edges(
        [edge_index, no_edges[0], edge_index], [shifts, no_edges[1], shifts], [0, len(positions), len(positions) + 1]
    )
    assert mirrored_halves(joined) and owner.bincount().tolist() == [edge_index.shape[1], 0, edge_index.shape[1]]
    assert joined_shifts.shape == (2 * edge_index.shape[1], 3)


def test_batch_without_mirrored_halves_gives_the_same_energies(alanine_dipeptide):
    """Training batches concatenate graphs: the per-edge radial path must agree with the per-pair one."""
    model = _l1_model()
    positions, numbers, cell, pbc = as_tensors(alanine_dipeptide)
    single = model(positions, numbers, cell, pbc)
    edge_index, shifts = neighbor_pairs(positions, cell, pbc, 5.0)
    vectors = edge_vectors(positions, cell, edge_index, shifts)
    permutation = torch.randperm(edge_index.shape[1], generator=torch.Generator().manual_seed(0))
    species = model.species_of(numbers)
    shuffled = model.atom_energies(species, edge_index[:, permutation], vectors[permutation])
    assert not mirrored_halves(edge_index[:, permutation])
    torch.testing.assert_close(shuffled, single, rtol=1e-10, atol=1e-10)


def test_pruned_layout_is_nequips_and_unpruned_keeps_every_irreps():
    pruned = [str(layer.irreps_out) for layer in _l1_model().representation.layers]
    assert pruned == ["8x0e+8x1o", "8x0e+8x1o+8x1e", "8x0e"]
    full = [layer.irreps_out for layer in _l1_model(prune_irreps=False).representation.layers]
    assert all(irreps == hidden_irreps(8, 1, True) for irreps in full)
    sh = o3.Irreps.spherical_harmonics(1)
    assert reachable_irreps(hidden_irreps(8, 1, True), o3.Irreps("8x0e"), sh) == o3.Irreps("8x0e+8x1o")


def test_training_batch_keeps_mirrored_halves_and_per_frame_results(alanine_dipeptide, dilute_water_box):
    """A batch of a molecule and a periodic box: energies, forces and stress equal those of each alone."""
    from mlpot.data.frames import Frame
    from mlpot.data.graphs import collate, frame_to_graph
    from mlpot.train.predict import predict_batch

    model = _l1_model()
    frames = [Frame(positions=atoms.positions.copy(), numbers=atoms.numbers.copy(), cell=np.asarray(atoms.cell).copy(),
                    pbc=atoms.pbc.copy(), energy=0.0, forces=np.zeros((len(atoms), 3)))
              for atoms in (alanine_dipeptide, dilute_water_box, dilute_water_box[:30])]
    batch = collate([frame_to_graph(frame, 5.0) for frame in frames], model.species_table, torch.float64, "cpu")
    assert mirrored_halves(batch.edge_index)
    predicted = predict_batch(model, batch, compute_stress=True, create_graph=False)
    for k, atoms in enumerate((alanine_dipeptide, dilute_water_box, dilute_water_box[:30])):
        alone = model.compute(*as_tensors(atoms), True, k > 0, False)
        torch.testing.assert_close(predicted["energy"][k], alone["energy"], rtol=1e-10, atol=1e-9)
        torch.testing.assert_close(predicted["forces"][batch.atom_frame == k], alone["forces"], rtol=1e-9, atol=1e-10)
        if k > 0:
            torch.testing.assert_close(predicted["stress"][k], alone["stress"], rtol=1e-9, atol=1e-10)

"""EGNN's edges in cache-sized chunks (``edge_chunk_size``, ``mlpot.models.chunking``): a speed setting that
must not change results.

Chunked and whole-edge models with the same weights must give the same energies, forces, stress and training
gradients (forces kept in the graph, then differentiated by the parameters), eager and compiled, and the chunk
spans must cover every edge once.
"""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import CUTOFF_A, as_tensors, small_description
from mlpot.deploy import compile_model
from mlpot.models import build_model, chunking
from mlpot.neighbors import neighbor_pairs

# a chunk this small splits the dilute water box's edges into many chunks, the last one shorter
SMALL_CHUNK = 37


def _egnn(edge_chunk_size: int, compiled: bool):
    description = copy.deepcopy(small_description("egnn"))
    description["hyperparameters"]["edge_chunk_size"] = edge_chunk_size
    model = build_model(description, seed=1)
    return compile_model(model) if compiled else model


def _results_and_parameter_gradients(model, inputs) -> dict:
    """Energy, forces, stress, and the gradient of a force loss by every parameter (as in training)."""
    results = model.compute(*inputs, True, True, True)
    parameters = [p for p in model.parameters() if p.requires_grad]
    # the last layer's coordinate update reaches no energy: its parameters may get no gradient
    gradients = torch.autograd.grad(results["forces"].square().sum(), parameters, allow_unused=True)
    return {
        "energy": results["energy"].detach(),
        "forces": results["forces"].detach(),
        "stress": results["stress"].detach(),
        "gradients": torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                                for p, g in zip(parameters, gradients)]),
    }


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_egnn_in_edge_chunks_gives_the_whole_pass_results_and_gradients(compiled, dilute_water_box):
    inputs = as_tensors(dilute_water_box)
    edge_index, _ = neighbor_pairs(inputs[0], inputs[2], inputs[3], CUTOFF_A)
    assert edge_index.shape[1] > 10 * SMALL_CHUNK  # many chunks
    whole = _results_and_parameter_gradients(_egnn(0, compiled), inputs)
    chunked = _results_and_parameter_gradients(_egnn(SMALL_CHUNK, compiled), inputs)
    for key, reference in whole.items():
        scale = max(float(reference.abs().max()), 1e-12)
        assert float((chunked[key] - reference).abs().max()) / scale < 1e-12, key


def test_egnn_refuses_a_negative_chunk_size():
    with pytest.raises(ValueError, match="edge_chunk_size"):
        _egnn(-1, compiled=False)


@pytest.mark.parametrize("num_edges, chunk_size", [(0, 4), (5, 4), (8, 4), (9, 4), (3, 100), (7, 1)])
def test_edge_chunks_cover_every_edge_once_in_order(num_edges, chunk_size):
    spans = chunking.edge_chunks(num_edges, chunk_size, torch.device("cpu"))
    covered = [k for start, end in spans for k in range(start, end)]
    assert covered == list(range(num_edges))
    assert spans == [(0, 0)] or all(0 < end - start <= chunk_size for start, end in spans)


@pytest.mark.parametrize("device", ["cuda", "meta"])
def test_edge_chunks_are_one_span_off_the_cpu_or_when_switched_off(device):
    assert chunking.edge_chunks(10_000, 16, torch.device(device)) == [(0, 10_000)]
    assert chunking.edge_chunks(10_000, 0, torch.device("cpu")) == [(0, 10_000)]

"""The energy/force side of StABlE: the λ-weighted DFT loss gradient and force errors of labelled frames.

Both run many frames at once through :func:`mlpot.train.predict.predict_batch` with the loss of
:mod:`mlpot.train.loss`, exactly as ``mlpot train`` does. Energies eV, forces eV/Å; errors in meV units.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mlpot.data import collate
from mlpot.data.graphs import Graph
from mlpot.models.potential import Potential
from mlpot.train.loss import LossWeights, combine, loss_terms
from mlpot.train.metrics import ErrorAccumulator
from mlpot.train.predict import predict_batch


def _batches(graphs: Sequence[Graph], batch_size: int):
    for start in range(0, len(graphs), batch_size):
        yield graphs[start:start + batch_size]


def backward_energy_force_loss(model: Potential, graphs: Sequence[Graph], weights: LossWeights, scale: float,
                               batch_size: int = 32) -> float:
    """Accumulate ``scale`` × the energy/force loss of all ``graphs`` (one loss, batched) into ``.grad``;
    returns the unscaled loss."""
    if not graphs:
        raise ValueError("no labelled frames for the energy/force loss")
    dtype = model.energy_shift.dtype
    device = model.energy_shift.device
    counts = {"energy": float(len(graphs)), "forces": float(sum(3 * g.positions.shape[0] for g in graphs))}
    total = 0.0
    for chunk in _batches(graphs, batch_size):
        batch = collate(chunk, model.species_table, dtype, device)
        predicted = predict_batch(model, batch, create_graph=True)
        loss = combine(loss_terms(predicted, batch, weights), counts, weights)
        (scale * loss).backward()
        total += float(loss.detach())
    return total


def force_errors(model: torch.nn.Module, graphs: Sequence[Graph], batch_size: int = 32,
                 keep: bool = False) -> ErrorAccumulator:
    """Energy and force errors of ``model`` on ``graphs`` (``.result()`` in meV units; ``keep`` for parity pairs)."""
    accumulator = ErrorAccumulator(keep=keep)
    dtype = model.energy_shift.dtype
    device = model.energy_shift.device
    for chunk in _batches(graphs, batch_size):
        batch = collate(chunk, model.species_table, dtype, device)
        accumulator.add(predict_batch(model, batch, create_graph=False), batch)
    return accumulator

"""The energy/force side of StABlE: the λ-weighted DFT loss gradient, the energy reference re-fit and
force errors of labelled frames.

All run many frames at once through :func:`mlpot.train.predict.predict_batch` with the loss of
:mod:`mlpot.train.loss`, exactly as ``mlpot train`` does. Energies eV, forces eV/Å; errors in meV units.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mlpot.data import collate
from mlpot.data.graphs import Graph
from mlpot.data.statistics import composition_matrix
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


def refit_energy_references(model: Potential, graphs: Sequence[Graph], batch_size: int = 32) -> float:
    """Shift the model's per-species reference energies (``energy_shift``, eV) by the least-squares fit of
    the energy residuals on ``graphs``; returns the mean per-atom residual removed, eV/atom.

    U → U + Σ_s n_s δ_s changes no force and no Boltzmann average of a fixed composition, so the
    observable gradient of StABlE is blind to it and its learning steps let the energy offset drift;
    this puts it back where the DFT energies say. With one composition the fit is under-determined
    and the minimum-norm δ is taken, as :func:`mlpot.data.statistics.fit_energy_references` does.
    """
    if not graphs:
        raise ValueError("no labelled frames to fit the energy references to")
    dtype = model.energy_shift.dtype
    device = model.energy_shift.device
    residuals = []
    for chunk in _batches(graphs, batch_size):
        batch = collate(chunk, model.species_table, dtype, device)
        predicted = predict_batch(model, batch, create_graph=False)["energy"].detach()
        residuals.append((batch.energy - predicted).double().cpu())
    residual = torch.cat(residuals).numpy()
    count = composition_matrix(graphs, model.atomic_numbers.tolist())  # columns in the model's species order
    shift, *_ = np.linalg.lstsq(count, residual, rcond=None)
    with torch.no_grad():
        model.energy_shift.add_(torch.as_tensor(shift, dtype=dtype, device=device))
    return float((residual / count.sum(axis=1)).mean())


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

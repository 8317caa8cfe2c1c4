"""The training loss: weighted per-atom energy, force and stress errors (MSE or Huber).

    loss = w_E * mean_frames  rho((E_pred - E_ref) / n_atoms)
         + w_F * mean_components rho(F_pred - F_ref)
         + w_S * mean_components rho(S_pred - S_ref)        (frames with stress only)

with rho(x) = x^2 (``mse``) or the Huber function with threshold ``huber_delta`` (``huber``, in the
unit of each term: eV/atom, eV/Å, eV/Å^3). Energies in eV, forces in eV/Å.

Each term is returned as a sum plus the count it must be divided by, so data-parallel training
can divide by the counts of the *global* batch and reproduce single-process training exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch

from mlpot.data.graphs import Batch

LOSS_KINDS = ("mse", "huber")


@dataclass(frozen=True)
class LossWeights:
    energy: float = 1.0
    forces: float = 10.0
    stress: float = 0.0
    kind: str = "mse"
    huber_delta: float = 0.01

    def __post_init__(self):
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"unknown loss {self.kind!r}; choose one of {list(LOSS_KINDS)}")
        if min(self.energy, self.forces, self.stress) < 0:
            raise ValueError("loss weights must not be negative")


def _penalty(difference: torch.Tensor, weights: LossWeights) -> torch.Tensor:
    if weights.kind == "mse":
        return difference.square()
    return torch.nn.functional.huber_loss(
        difference, torch.zeros_like(difference), reduction="none", delta=weights.huber_delta
    )


def loss_terms(predicted: Dict[str, torch.Tensor], batch: Batch, weights: LossWeights) -> Dict[str, torch.Tensor]:
    """Summed penalties and their counts: ``{"energy": (sum, count), ...}`` as 2-element tensors."""
    per_atom = (predicted["energy"] - batch.energy) / batch.n_atoms.to(batch.energy.dtype)
    terms = {
        "energy": torch.stack([_penalty(per_atom, weights).sum(), per_atom.new_tensor(per_atom.numel())]),
        "forces": torch.stack([
            _penalty(predicted["forces"] - batch.forces, weights).sum(),
            per_atom.new_tensor(batch.forces.numel()),
        ]),
    }
    if weights.stress > 0 and "stress" in predicted:
        mask = batch.has_stress
        difference = (predicted["stress"] - batch.stress)[mask]
        terms["stress"] = torch.stack([_penalty(difference, weights).sum(), per_atom.new_tensor(difference.numel())])
    return terms


def combine(terms: Dict[str, torch.Tensor], counts: Dict[str, float], weights: LossWeights) -> torch.Tensor:
    """Weighted sum of ``terms[k][0] / counts[k]`` (``counts`` from the global batch)."""
    total = terms["energy"][0] * 0.0
    for key, weight in (("energy", weights.energy), ("forces", weights.forces), ("stress", weights.stress)):
        if key in terms and weight > 0 and counts.get(key, 0) > 0:
            total = total + weight * terms[key][0] / counts[key]
    return total

"""Error metrics accumulated over batches: MAE and RMSE of energies, forces and stress.

Reported units: energy per atom meV/atom, total energy meV, forces meV/Å, stress meV/Å^3.
Accumulators are plain sums so data-parallel ranks can add theirs with one all-reduce.
"""

from __future__ import annotations

from typing import Dict

import torch

from mlpot.data.graphs import Batch

# sums kept per quantity: absolute error, squared error, count
QUANTITIES = ("energy_per_atom", "energy", "forces", "stress")
UNITS = {"energy_per_atom": "meV/atom", "energy": "meV", "forces": "meV/Å", "stress": "meV/Å^3"}


class ErrorAccumulator:
    """Sums of |error|, error^2 and counts (float64 tensor ``(4, 3)``).

    With ``keep=True`` it also keeps every reference/predicted pair (per-atom energies in eV/atom,
    force components in eV/Å) for parity plots: ``self.pairs[name] = (reference list, predicted list)``.
    """

    def __init__(self, sums: torch.Tensor | None = None, keep: bool = False):
        self.sums = torch.zeros(len(QUANTITIES), 3, dtype=torch.float64) if sums is None else sums.clone()
        self.keep = keep
        self.pairs: Dict[str, tuple] = {"energy_per_atom": ([], []), "forces": ([], []), "stress": ([], [])}

    def _add(self, row: int, error: torch.Tensor) -> None:
        error = error.detach().to(torch.float64).cpu().reshape(-1)
        self.sums[row] += torch.stack([error.abs().sum(), error.square().sum(), torch.tensor(float(error.numel()))])

    def _keep(self, name: str, reference: torch.Tensor, predicted: torch.Tensor) -> None:
        if self.keep:
            self.pairs[name][0].extend(reference.detach().double().cpu().reshape(-1).tolist())
            self.pairs[name][1].extend(predicted.detach().double().cpu().reshape(-1).tolist())

    def add_values(
        self,
        energy: torch.Tensor,
        reference_energy: torch.Tensor,
        n_atoms: torch.Tensor,
        forces: torch.Tensor,
        reference_forces: torch.Tensor,
        stress: torch.Tensor | None = None,
        reference_stress: torch.Tensor | None = None,
    ) -> None:
        """Add frames: energies ``(B,)`` eV, atom counts ``(B,)``, forces ``(N, 3)`` eV/Å, stress ``(S, 3, 3)``."""
        n_atoms = n_atoms.to(energy.dtype)
        self._add(0, (energy - reference_energy) / n_atoms)
        self._add(1, energy - reference_energy)
        self._add(2, forces - reference_forces)
        self._keep("energy_per_atom", reference_energy / n_atoms, energy / n_atoms)
        self._keep("forces", reference_forces, forces)
        if stress is not None and reference_stress is not None and stress.numel() > 0:
            self._add(3, stress - reference_stress)
            self._keep("stress", reference_stress, stress)

    def add(self, predicted: Dict[str, torch.Tensor], batch: Batch) -> None:
        """Add a batch's predictions (from :func:`mlpot.train.predict.predict_batch`)."""
        with_stress = "stress" in predicted and bool(batch.has_stress.any())
        self.add_values(
            predicted["energy"], batch.energy, batch.n_atoms, predicted["forces"], batch.forces,
            predicted["stress"][batch.has_stress] if with_stress else None,
            batch.stress[batch.has_stress] if with_stress else None,
        )

    def result(self) -> Dict[str, float]:
        """``{"forces_mae": ..., "forces_rmse": ..., ...}`` in meV units; quantities without data are left out."""
        out: Dict[str, float] = {}
        for row, name in enumerate(QUANTITIES):
            absolute, squared, count = self.sums[row].tolist()
            if count > 0:
                out[f"{name}_mae"] = 1000.0 * absolute / count
                out[f"{name}_rmse"] = 1000.0 * (squared / count) ** 0.5
        return out

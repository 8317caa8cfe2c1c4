"""Fine-tuning: a training run that starts from a model file's network and weights (``model.init_from``).

The model file defines the network (architecture, hyperparameters, cutoff, dtype, species); the config's
``model.arch`` and ``model.cutoff`` must agree with it, and every element of the new data must be one the
file knows. The file is loaded through :func:`mlpot.deploy.load_model`, so its seal is checked.

**Per-species reference energies.** A model's energy is ``scale × network + Σ shift[species]``. Data from
the same level of theory as the model's training data need no change. Data from another level (GFN2-xTB →
B3LYP, another basis set or code) differ by large per-element offsets (free-atom energies differ by eV to
keV per atom), which the network must not be asked to learn: then the shifts are refitted, by least squares
of the model's energy residuals on the new training frames over their composition. ``model.refit_references``
chooses: ``true`` always, ``false`` never, unset (default) when the mean residual exceeds
:data:`REFIT_THRESHOLD_EV_PER_ATOM`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from mlpot.data import collate
from mlpot.data.graphs import Graph
from mlpot.data.statistics import composition_matrix
from mlpot.train.predict import predict_batch

# a mean energy residual per atom above this (eV) means another level of theory: a trained model errs by meV per
# atom, while free-atom energies of two methods or basis sets differ by about 1 eV (GFN2-xTB vs DFT: 10 to 1000 eV)
REFIT_THRESHOLD_EV_PER_ATOM = 0.25


@dataclass
class InitialModel:
    """The trainable network of a model file and what the run records of it."""

    model: torch.nn.Module
    description: Dict[str, Any]
    record: Dict[str, Any]  # path, sha256, content hash: into the run's provenance


def load_initial_model(path: str | Path, arch: str | None, cutoff_A: float | None,
                       data_numbers: Sequence[int]) -> InitialModel:
    """The network of model file ``path``, checked against the run's ``arch`` and ``cutoff_A`` (None: the file's)
    and the elements of its data (``data_numbers``).

    Raises:
        ModelFileError: the file is missing, corrupt or modified (its seal does not hold).
        ValueError: another architecture or cutoff, or an element of the data the file does not know.
    """
    from ase.data import chemical_symbols

    from mlpot.deploy import load_model, rebuild_model
    from mlpot.runs import file_digest

    deployed = load_model(path)
    stored = deployed.metadata
    if arch is not None and stored["arch"] != arch:
        raise ValueError(f"--init-from {path} holds a network of architecture {stored['arch']} but model.arch is "
                         f"{arch!r}; set model.arch: {stored['arch']}")
    if cutoff_A is not None and abs(float(stored["cutoff"]) - float(cutoff_A)) > 1e-9:
        raise ValueError(f"--init-from {path} has a cutoff of {stored['cutoff']} Å but model.cutoff is {cutoff_A} Å; "
                         "a network cannot change its cutoff: set model.cutoff to the file's")
    unknown = sorted(set(int(z) for z in data_numbers) - set(stored["atomic_numbers"]))
    if unknown:
        raise ValueError(f"--init-from {path} knows only {', '.join(stored['species'])}, but the data contain "
                         f"{', '.join(chemical_symbols[z] for z in unknown)}; fine-tuning cannot add elements")
    model, description = rebuild_model(deployed)
    record = {"path": str(path), "sha256": file_digest(str(path)), "seal": stored.get("seal"),
              "content_hash": stored["content_hash"]}
    return InitialModel(model=model, description=description, record=record)


def energy_residuals_eV(model: torch.nn.Module, graphs: Sequence[Graph], dtype: torch.dtype,
                        device: torch.device, batch_size: int = 16) -> np.ndarray:
    """Reference minus predicted energy (eV) of each graph, in order."""
    residuals: List[np.ndarray] = []
    for start in range(0, len(graphs), batch_size):
        batch = collate(graphs[start:start + batch_size], model.species_table, dtype, device)
        predicted = predict_batch(model, batch, create_graph=False)["energy"]
        residuals.append((batch.energy - predicted).double().cpu().numpy())
    return np.concatenate(residuals) if residuals else np.zeros(0)


def refit_references(model: torch.nn.Module, frames, graphs: Sequence[Graph], refit: bool | None,
                     dtype: torch.dtype, device: torch.device, quiet: bool = False) -> Dict[str, Any]:
    """Refit ``model.energy_shift`` in place to the training frames when ``refit`` says so (None: when the
    mean |residual| per atom exceeds the threshold); returns what was done, for the provenance."""
    residuals = energy_residuals_eV(model, graphs, dtype, device)
    atoms = np.array([len(frame.numbers) for frame in frames], dtype=float)
    mean_per_atom = float(np.mean(np.abs(residuals) / atoms)) if len(atoms) else 0.0
    decided = refit if refit is not None else mean_per_atom > REFIT_THRESHOLD_EV_PER_ATOM
    record = {"mean_abs_residual_eV_per_atom": mean_per_atom, "refitted": bool(decided)}
    if decided:
        numbers = [int(z) for z in model.atomic_numbers.tolist()]
        correction, *_ = np.linalg.lstsq(composition_matrix(frames, numbers), residuals, rcond=None)
        with torch.no_grad():
            model.energy_shift += torch.as_tensor(correction, dtype=model.energy_shift.dtype,
                                                  device=model.energy_shift.device)
        record["shift_change_eV"] = {str(z): float(c) for z, c in zip(numbers, correction)}
        if not quiet:
            print(f"fine-tuning: the model's energies are off by {mean_per_atom:.3g} eV/atom on the new data (another "
                  "level of theory?), so the per-species reference energies were refitted", file=sys.stderr)
    return record

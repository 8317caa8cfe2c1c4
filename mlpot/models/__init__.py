"""Architectures and the one way to build a model from a description.

A model is described by plain data (what goes into the model file's metadata):

    {"arch": "nequip", "species": ["H", "C", "N", "O"], "cutoff": 5.0, "dtype": "float32",
     "hyperparameters": {...}, "energy_shift": [...], "energy_scale": 1.0}

``build_model(**description)`` turns that into a :class:`Potential`; ``describe`` gives the
defaults-filled hyperparameters so the file always records every value used.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Dict, List, Sequence, Union

import torch

from mlpot.models.egnn import EGNN
from mlpot.models.linear import DenseLinear
from mlpot.models.mlp import FoldedMLP
from mlpot.models.nequip import NequIP
from mlpot.models.potential import Potential

ARCHITECTURES: Dict[str, type] = {"egnn": EGNN, "nequip": NequIP}

DTYPES: Dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}

# Sizes users can ask for by name (``--size``); "nequip-matched" is the peer-comparison size of
# docs/peers.md (NequIP l_max 1, 32 features, 4 layers, parity, 5 Å).
PRESETS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "egnn": {
        "default": {"hidden": 64, "num_layers": 4},
        "nequip-matched": {"hidden": 128, "num_layers": 4},
    },
    "nequip": {
        "default": {"num_features": 32, "lmax": 1, "parity": False, "num_layers": 3, "prune_irreps": True},
        "nequip-matched": {
            "num_features": 32, "lmax": 1, "parity": True, "num_layers": 4, "radial_width": 128, "radial_depth": 1,
            "prune_irreps": True,
        },
    },
}


def atomic_numbers_of(species: Sequence[Union[str, int]]) -> List[int]:
    """Element symbols or atomic numbers → sorted unique atomic numbers; ``ValueError`` names a bad symbol."""
    from ase.data import atomic_numbers as numbers_by_symbol

    result = []
    for item in species:
        if isinstance(item, str) and not item.isdigit():
            symbol = item.strip()
            if symbol not in numbers_by_symbol or symbol == "X":
                raise ValueError(f"unknown element symbol {symbol!r} in species list")
            result.append(numbers_by_symbol[symbol])
        else:
            number = int(item)
            if not 1 <= number <= 118:
                raise ValueError(f"atomic number {number} out of range 1..118")
            result.append(number)
    if not result:
        raise ValueError("a model needs at least one species")
    return sorted(set(result))


def default_hyperparameters(arch: str) -> Dict[str, Any]:
    """Every hyperparameter of ``arch`` with its default (excluding species count and cutoff)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    parameters = inspect.signature(ARCHITECTURES[arch].__init__).parameters
    return {
        name: p.default for name, p in parameters.items() if name not in ("self", "num_species", "cutoff")
    }


def describe(
    arch: str,
    species: Sequence[Union[str, int]],
    cutoff: float,
    dtype: str = "float32",
    size: str = "default",
    hyperparameters: Dict[str, Any] | None = None,
    energy_shift: Sequence[float] | None = None,
    energy_scale: float = 1.0,
) -> Dict[str, Any]:
    """A complete, JSON-serialisable model description with every hyperparameter filled in."""
    from ase.data import chemical_symbols

    numbers = atomic_numbers_of(species)
    full = default_hyperparameters(arch)
    if size not in PRESETS[arch]:
        raise ValueError(f"unknown size {size!r} for {arch}; choose one of {sorted(PRESETS[arch])}")
    full.update(PRESETS[arch][size])
    for key, value in (hyperparameters or {}).items():
        if key not in full:
            raise ValueError(f"unknown hyperparameter {key!r} for {arch}; known: {sorted(full)}")
        full[key] = value
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    if not cutoff > 0:
        raise ValueError("cutoff must be positive (Å)")
    shift = [0.0] * len(numbers) if energy_shift is None else [float(x) for x in energy_shift]
    return {
        "arch": arch,
        "species": [chemical_symbols[z] for z in numbers],
        "atomic_numbers": numbers,
        "cutoff": float(cutoff),
        "dtype": dtype,
        "hyperparameters": full,
        "energy_shift": shift,
        "energy_scale": float(energy_scale),
    }


def build_model(description: Dict[str, Any], seed: int | None = None) -> Potential:
    """Instantiate the :class:`Potential` a description (from :func:`describe`) specifies."""
    if seed is not None:
        torch.manual_seed(seed)
    numbers = list(description["atomic_numbers"])
    representation = ARCHITECTURES[description["arch"]](
        num_species=len(numbers), cutoff=description["cutoff"], **description["hyperparameters"]
    )
    model = Potential(
        representation,
        atomic_numbers=numbers,
        cutoff=description["cutoff"],
        energy_shift=description["energy_shift"],
        energy_scale=description["energy_scale"],
    )
    return model.to(DTYPES[description["dtype"]])


def for_inference(model: Potential) -> Potential:
    """A copy of ``model`` for a deployed file, whose weights never change again: no parameter records a
    gradient, and the fast modules build their weight-derived matrices on the first call and reuse them.

    The same numbers as ``model`` (energies, forces, stress); ``model`` itself is left as it was, so training
    can go on with it. Do not train the copy.
    """
    # e3nn keeps compiled TorchScript functions (stateless code, which cannot be copied) on some modules: share them
    functions = {
        id(value): value
        for module in model.modules()
        for value in vars(module).values()
        if isinstance(value, torch.jit.ScriptFunction)
    }
    frozen = copy.deepcopy(model, memo=functions)
    frozen.requires_grad_(False)
    for module in frozen.modules():
        if isinstance(module, (DenseLinear, FoldedMLP)):
            module.constant_weights = True
    return frozen


__all__ = ["ARCHITECTURES", "PRESETS", "Potential", "EGNN", "NequIP", "build_model", "describe", "for_inference"]

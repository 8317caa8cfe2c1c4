"""Shared fixtures: small models of both architectures, as eager modules and as model files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch

from mlpot.deploy import save_model
from mlpot.models import build_model, describe
from mlpot.systems import load_atoms

ARCHITECTURES = ["egnn", "nequip"]
SPECIES = ["H", "C", "N", "O"]
CUTOFF_A = 5.0

# Small but complete: every code path of each architecture (lmax 2 and both parities for NequIP).
TEST_HYPERPARAMETERS = {
    "egnn": {"hidden": 16, "num_layers": 2},
    "nequip": {"num_features": 8, "lmax": 2, "parity": True, "num_layers": 2, "radial_width": 16},
}

torch.set_num_threads(2)
# the suite's thread count is fixed, so the thread policy's "machine is busy" warning never lands in a captured stderr
os.environ.setdefault("MLPOT_NUM_THREADS", "2")
# model files run as TorchScript unless a test asks for the compiled twin (compiling takes a minute per model);
# tests/test_compile_cache.py checks the default mode with its own cache folder
os.environ.setdefault("MLPOT_COMPILE", "off")


def small_description(arch: str, dtype: str = "float64", cutoff: float = CUTOFF_A) -> dict:
    return describe(arch, SPECIES, cutoff, dtype=dtype, hyperparameters=TEST_HYPERPARAMETERS[arch],
                    energy_shift=[-13.6, -1030.0, -1485.0, -2040.0], energy_scale=0.5)


def as_tensors(atoms, dtype=torch.float64) -> Tuple[torch.Tensor, ...]:
    """(positions Å, atomic numbers, cell Å, pbc) of an ase.Atoms."""
    return (
        torch.tensor(atoms.positions, dtype=dtype),
        torch.tensor(atoms.numbers, dtype=torch.long),
        torch.tensor(np.asarray(atoms.cell), dtype=dtype),
        torch.tensor(atoms.pbc, dtype=torch.bool),
    )


@pytest.fixture(scope="session")
def eager_models() -> Dict[Tuple[str, str], torch.nn.Module]:
    """(arch, dtype) -> eager Potential, seeded."""
    return {
        (arch, dtype): build_model(small_description(arch, dtype), seed=1)
        for arch in ARCHITECTURES
        for dtype in ("float64", "float32")
    }


@pytest.fixture(scope="session")
def model_files(tmp_path_factory, eager_models) -> Dict[Tuple[str, str], Path]:
    """(arch, dtype) -> model file written from the eager model of the same key."""
    folder = tmp_path_factory.mktemp("models")
    files = {}
    for (arch, dtype), model in eager_models.items():
        path = folder / f"{arch}-{dtype}.pt"
        save_model(model, small_description(arch, dtype), path)
        files[(arch, dtype)] = path
    return files


@pytest.fixture(scope="session")
def alanine_dipeptide():
    return load_atoms("alanine-dipeptide")


@pytest.fixture(scope="session")
def water_box():
    return load_atoms("water-192")


@pytest.fixture(scope="session")
def dilute_water_box(water_box):
    """The first 16 molecules of water-192 in its full 12.4 Å box: periodic, few neighbours, fast."""
    return water_box[:48]


@pytest.fixture
def one_thread():
    """Training results depend on the thread count (summation order); pin it, and stay light on the CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def compiled_files(tmp_path_factory, model_files):
    """arch -> (TorchScript file, compiled file), float32: EGNN through the command line, NequIP through the
    library."""
    from mlpot.cli import main
    from mlpot.compiled import compile_model_file

    folder = tmp_path_factory.mktemp("compiled")
    files = {}
    for arch in ARCHITECTURES:
        source = model_files[(arch, "float32")]
        out = folder / f"{arch}.pt2"
        if arch == "egnn":
            assert main(["compile", str(source), "-o", str(out)]) == 0
        else:
            compile_model_file(source, out)
        files[arch] = (source, out)
    return files

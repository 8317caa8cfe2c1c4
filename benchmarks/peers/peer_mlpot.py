"""mlpot in the peer benchmark: a model file from ``mlpot.deploy``, our ASE calculator and our TorchForce.

Runs in the project's own venv. Sizes map to the presets in ``mlpot/models/__init__.py``:
``small`` = the ``default`` preset, ``default`` = ``nequip-matched`` (the NequIP size of peers.md).

ase-compiled = the model file compiled by ``mlpot compile`` (:func:`mlpot.compiled.compile_model_file`, a ``.pt2``
file: torch.export + AOTInductor, the neighbour list outside the compiled graph) in our ASE calculator.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import torch

import mlpot
from mlpot.deploy import load_model, save_model
from mlpot.models import build_model, describe
from worker import SEED, TRAIN_BATCH, perturbed_copies

SPECIES = ("H", "C", "N", "O")
CUTOFF_A = 5.0
ENERGY_SCALE_EV = 0.01  # small forces from the random model, so the short MD stays sane

ARCH = "nequip"
PRESET_OF_SIZE = {"small": "default", "default": "nequip-matched"}


class Peer:
    """A random-init mlpot model of one size, saved as a model file and loaded back as users do."""

    arch = ARCH
    COMPILED_SUFFIX = ".pt2"  # mlpot compile's

    def __init__(self, size: str, workdir: Path, threads: int):
        self.size = size
        self.preset = PRESET_OF_SIZE[size]
        self.description = describe(self.arch, SPECIES, CUTOFF_A, dtype="float32", size=self.preset,
                                    energy_scale=ENERGY_SCALE_EV)
        model = build_model(self.description, seed=SEED)
        self.parameters = sum(p.numel() for p in model.parameters())
        self.path = workdir / f"mlpot-{self.arch}-{size}.pt"
        save_model(model, self.description, self.path,
                   provenance={"created_by": "benchmarks/peers/peer_mlpot.py", "trained": False})
        self.deployed = load_model(self.path)

    def describe(self) -> Dict[str, Any]:
        return {
            "model": f"mlpot {self.arch} (preset {self.preset})",
            "parameters": self.parameters,
            "cutoff_A": CUTOFF_A,
            "dtype": "float32",
            "hyperparameters": self.description["hyperparameters"],
            "routes": {"raw": "DeployedModel.module.compute (TorchScript; includes the neighbour list)",
                       "ase": "mlpot.plugins.ase.MLPotCalculator",
                       "ase-compiled": "mlpot.plugins.ase.MLPotCalculator on the `mlpot compile` file (.pt2, "
                                       "AOTInductor)",
                       "openmm": "openmmml MLPotential('mlpot') -> openmm-torch TorchForce (no Python in the step)"},
        }

    def compile_key(self) -> Dict[str, Any]:
        """What fixes the compiled file: the weights, the model description and the source that exports it."""
        package = Path(mlpot.__file__).parent
        source = hashlib.sha256()
        for path in [package / "compiled.py", package / "deploy.py", *sorted((package / "models").glob("*.py"))]:
            source.update(path.read_bytes())
        return {"content_hash": self.deployed.metadata["content_hash"], "description": self.description,
                "mlpot_source_sha256": source.hexdigest()[:16]}

    def compile(self, path: Path, example_xyz: str) -> None:
        """``mlpot compile MODEL.pt -o PATH`` (it traces with its own example structure, not ``example_xyz``)."""
        from mlpot.compiled import compile_model_file

        compile_model_file(self.path, path, device="cpu")

    def compiled_calculator(self, path: Path):
        from mlpot.plugins.ase import MLPotCalculator

        return MLPotCalculator(str(path), device="cpu")

    def raw_step(self, atoms) -> Callable[[], Any]:
        """Energy + forces of the compiled model on perturbed positions (neighbour list included)."""
        dtype = self.deployed.dtype
        copies = itertools.cycle([torch.tensor(p, dtype=dtype) for p in perturbed_copies(atoms.positions)])
        numbers = torch.tensor(atoms.numbers, dtype=torch.long)
        cell_A = torch.tensor(np.asarray(atoms.cell), dtype=dtype)
        pbc = torch.tensor(atoms.pbc, dtype=torch.bool)
        module = self.deployed.module
        return lambda: module.compute(next(copies), numbers, cell_A, pbc, True, False, False)

    def calculator(self):
        from mlpot.plugins.ase import MLPotCalculator

        return MLPotCalculator(self.deployed, device="cpu")

    def openmm_system(self, topology):
        from openmmml import MLPotential

        return MLPotential("mlpot", modelPath=str(self.path)).createSystem(topology)

    def train_step(self, xyz: str) -> Callable[[], Any]:
        """One ``Trainer.train_step`` (what ``mlpot train`` does per batch; its own energy statistics, no learning-rate
        schedule, as for the peers) on batches of 5 frames of ``xyz``; ``step.calculator()`` gives the EMA model."""
        from mlpot.train import TrainConfig
        from mlpot.train.metrics import ErrorAccumulator
        from mlpot.train.trainer import Trainer

        config = TrainConfig.from_dict({
            "data": {"files": [xyz], "val_fraction": 0.0, "test_fraction": 0.0},
            "model": {"arch": self.arch, "size": self.preset},
            "training": {"batch_size": TRAIN_BATCH, "device": "cpu", "warmup_steps": 0},
            "out": str(self.path.parent / f"train-{self.arch}-{self.size}"),
        })
        trainer = Trainer(config, quiet=True)
        trainer._build(None)
        batches = itertools.cycle(trainer._epoch_batches(0))

        def step() -> None:
            trainer.train_step(next(batches), ErrorAccumulator())

        def calculator():
            """The EMA weights saved as a model file and loaded back, as a user of ``mlpot train`` gets them."""
            from mlpot.plugins.ase import MLPotCalculator

            path = self.path.parent / f"trained-{self.arch}-{self.size}.pt"
            save_model(trainer.ema.module, trainer.description, path,
                       provenance={"created_by": "benchmarks/peers/peer_mlpot.py", "trained": True})
            return MLPotCalculator(path, device="cpu")

        step.calculator = calculator
        return step

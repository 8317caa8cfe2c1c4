"""MACE (mace-torch) in the peer benchmark. Runs in ``.venvs/mace`` (mace-torch pins e3nn 0.4.4).

Routes, each MACE's own supported one: raw = ``model(batch, compute_force=True)`` on a graph built once
(the neighbour list is *not* timed); ASE = ``mace.calculators.MACECalculator`` (builds the graph with
matscipy every call); OpenMM = openmm-ml's ``MLPotential('mace', modelPath=...)`` (a ``PythonForce`` that
builds the graph with matscipy and calls the eager model every step); ase-compiled =
``MACECalculator(compile_mode="default")``, MACE's own compiled route: ``torch.compile`` (Dynamo + Inductor) of
the model inside the process at the first call, on graphs padded to the first system's size. mace-torch 0.3.16 has
no ahead-of-time compiled file (nothing uses torch.export or AOTInductor; ``create_lammps_model`` writes TorchScript
for LAMMPS), so there is no file to keep: the driver points Inductor's on-disk cache into the compiled folder,
which lets a rerun skip code generation (not Dynamo's tracing), and the compile seconds are those of the first call.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable, Dict

import mace  # noqa: F401  first: it makes e3nn 0.4.4's torch.load work on torch 2.9 (process-wide env variable)
import numpy as np
import torch
from e3nn import o3
from mace import modules

from worker import TRAIN_BATCH, energy_statistics, perturbed_copies

ATOMIC_NUMBERS = [1, 6, 7, 8]
CUTOFF_A = 5.0
ENERGY_SCALE_EV = 0.01  # as mlpot's random models: small forces, so the short MD stays sane
COMPILE_MODE = "default"  # torch.compile's mode, as MACECalculator passes it on

COMMON = {
    "r_max": CUTOFF_A, "num_bessel": 8, "num_polynomial_cutoff": 5, "max_ell": 3, "num_interactions": 2,
    "correlation": 3, "MLP_irreps": "16x0e", "radial_MLP": [64, 64, 64], "avg_num_neighbors": 10.0,
    "interaction": "RealAgnosticResidualInteractionBlock", "gate": "silu",
}
SIZES: Dict[str, Dict[str, Any]] = {
    # 32 channels and l_max 1 like mlpot's and NequIP's small models; MACE's usual 2 interactions
    "small": {**COMMON, "hidden_irreps": "32x0e + 32x1o"},
    # MACE-OFF23-medium-like (docs/peers.md, "MACE L1")
    "default": {**COMMON, "hidden_irreps": "128x0e + 128x1o"},
}


def build(hyper: Dict[str, Any], e0_eV=None, scale_eV: float = ENERGY_SCALE_EV) -> torch.nn.Module:
    """The model; reference energies per element (``e0_eV``, zeros by default) and the interaction energy scale."""
    interaction = modules.interaction_classes[hyper["interaction"]]
    return modules.ScaleShiftMACE(
        r_max=hyper["r_max"], num_bessel=hyper["num_bessel"], num_polynomial_cutoff=hyper["num_polynomial_cutoff"],
        max_ell=hyper["max_ell"], interaction_cls=interaction, interaction_cls_first=interaction,
        num_interactions=hyper["num_interactions"], num_elements=len(ATOMIC_NUMBERS),
        hidden_irreps=o3.Irreps(hyper["hidden_irreps"]), MLP_irreps=o3.Irreps(hyper["MLP_irreps"]),
        atomic_energies=np.zeros(len(ATOMIC_NUMBERS)) if e0_eV is None else np.asarray(e0_eV),
        avg_num_neighbors=hyper["avg_num_neighbors"],
        atomic_numbers=ATOMIC_NUMBERS, correlation=hyper["correlation"], gate=torch.nn.functional.silu,
        radial_MLP=hyper["radial_MLP"], atomic_inter_scale=scale_eV, atomic_inter_shift=0.0,
    ).to(torch.float32)


class Peer:
    COMPILED_SUFFIX = None  # compiled in the process by the first call (torch.compile), no file

    def __init__(self, size: str, workdir: Path, threads: int):
        torch.set_default_dtype(torch.float32)
        self.size = size
        self.hyper = SIZES[size]
        self.model = build(self.hyper)
        self.path = workdir / f"mace-{size}.model"
        torch.save(self.model, self.path)  # openmm-ml loads a whole pickled model

    def describe(self) -> Dict[str, Any]:
        return {
            "model": "mace.modules.ScaleShiftMACE",
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "cutoff_A": CUTOFF_A, "dtype": "float32", "hyperparameters": self.hyper,
            "routes": {"raw": "model(batch, compute_force=True), graph built once (neighbour list not timed)",
                       "ase": "mace.calculators.MACECalculator",
                       "ase-compiled": f"mace.calculators.MACECalculator(compile_mode={COMPILE_MODE!r}) "
                                       "(torch.compile at the first call, padded graphs)",
                       "openmm": "openmmml MLPotential('mace') -> openmm.PythonForce (matscipy graph + eager model)"},
        }

    def calculator(self):
        from mace.calculators import MACECalculator

        return MACECalculator(models=self.model, device="cpu", default_dtype="float32")

    def compiled_calculator(self, path: None = None):
        """MACE's calculator with ``torch.compile``: it compiles at its first call (the worker times that call)."""
        from mace.calculators import MACECalculator

        return MACECalculator(models=self.model, device="cpu", default_dtype="float32", compile_mode=COMPILE_MODE)

    def raw_step(self, atoms) -> Callable[[], Any]:
        """Forward + backward on a batch built once with MACE's own data pipeline."""
        batch = self.calculator()._atoms_to_batch(atoms).to_dict()
        copies = itertools.cycle([torch.tensor(p, dtype=torch.float32) for p in perturbed_copies(atoms.positions)])

        def step() -> None:
            data = dict(batch)
            data["positions"] = next(copies)
            self.model(data, compute_force=True)

        return step

    def openmm_system(self, topology):
        from openmmml import MLPotential

        return MLPotential("mace", modelPath=str(self.path)).createSystem(topology)

    def train_step(self, xyz: str) -> Callable[[], Any]:
        """One training step as ``mace_run_train`` takes it: batch from MACE's data pipeline, forward with forces
        (graph kept), energy + forces loss (weights 1 and 10 as mlpot's defaults), backward, clipping, Adam, EMA.
        The model starts from least-squares reference energies (MACE's ``E0s="average"``) and the force RMS as
        its scale; ``step.calculator()`` is a ``MACECalculator`` with the EMA weights."""
        import copy

        import ase.io
        from mace import data as mace_data
        from mace import tools
        from mace.tools import torch_geometric
        from torch_ema import ExponentialMovingAverage

        frames = ase.io.read(xyz, index=":")
        for atoms in frames:  # ASE's extxyz reader holds energy and forces in a calculator, where MACE does not look
            atoms.info["REF_energy"] = atoms.get_potential_energy()
            atoms.arrays["REF_forces"] = atoms.get_forces()
        keys = mace_data.KeySpecification(info_keys={"energy": "REF_energy"}, arrays_keys={"forces": "REF_forces"})
        z_table = tools.AtomicNumberTable(ATOMIC_NUMBERS)
        graphs = [mace_data.AtomicData.from_config(mace_data.config_from_atoms(atoms, key_specification=keys),
                                                   z_table=z_table, cutoff=CUTOFF_A) for atoms in frames]
        loader = torch_geometric.dataloader.DataLoader(graphs, batch_size=TRAIN_BATCH, shuffle=True, drop_last=True)
        statistics = energy_statistics(frames, ATOMIC_NUMBERS)
        model = build(self.hyper, statistics["e0_eV"], statistics["forces_rms_eV_per_A"])
        model.train()
        loss_fn = modules.WeightedEnergyForcesLoss(energy_weight=1.0, forces_weight=10.0)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
        ema = ExponentialMovingAverage(model.parameters(), decay=0.99)

        def batches():
            while True:
                yield from loader

        stream = batches()

        def step() -> None:
            batch = next(stream)
            optimizer.zero_grad(set_to_none=True)
            output = model(batch.to_dict(), training=True, compute_force=True)
            loss = loss_fn(pred=output, ref=batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            ema.update()

        def calculator():
            from mace.calculators import MACECalculator

            trained = copy.deepcopy(model)
            ema.copy_to(trained.parameters())
            return MACECalculator(models=trained.eval(), device="cpu", default_dtype="float32")

        step.calculator = calculator
        return step

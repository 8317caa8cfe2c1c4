"""NequIP (nequip 0.19) in the peer benchmark. Runs in ``.venvs/nequip``.

Routes: raw = the eager ``GraphModel`` on a graph built once (the neighbour list is *not* timed); ASE =
``nequip.integrations.ase.NequIPCalculator`` around the eager model with NequIP's own transforms (type
mapping + neighbour list every call), as its ``_from_saved_model`` builds it; OpenMM = openmm-ml's
``MLPotential('nequip', modelPath=..., lengthScale=0.1, energyScale=96.4853)`` (a ``PythonForce``);
ase-compiled = NequIP's AOTInductor deployment: the file that ``nequip-compile --mode aotinductor --device cpu
--target ase`` writes (``.nequip.pt2``), loaded with ``NequIPCalculator.from_compiled_model`` (NequIP's transforms
and neighbour list every call, the compiled model after them). openmm-ml does not use the compiled file.

``nequip-compile`` takes a training checkpoint or a ``nequip-package`` file, and the random-init model has
neither, so :meth:`Peer.compile` runs ``nequip-compile``'s own ``main`` with its loader handing over the in-memory
model and, as the data to trace with, the first frame of the example file as ``data_dict_from_checkpoint`` gives a
training frame (see :func:`compile_data`); everything after loading (modifiers, metadata,
``aot_export_model`` with the ``ase`` target and nequip-compile's seed) is nequip-compile's code unchanged.

openmm-ml loads the model with ``load_saved_model(modelPath)``, which needs a training checkpoint or a
``nequip-package`` file; for a random-init model we hand it the in-memory model instead (the compute
path, ``_computeNequIP``, is unchanged).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable, Dict

import torch
from nequip.data import AtomicDataDict
from nequip.model import NequIPGNNModel
from nequip.utils.global_state import set_global_state

from worker import SEED, TRAIN_BATCH, energy_statistics, perturbed_copies, versions

TYPE_NAMES = ["H", "C", "N", "O"]
ATOMIC_NUMBERS = [1, 6, 7, 8]
CUTOFF_A = 5.0
ENERGY_SCALE_EV = 0.01  # as mlpot's random models: small forces, so the short MD stays sane
COMPILE_ARGS = ["--mode", "aotinductor", "--device", "cpu", "--target", "ase"]  # nequip-compile's, for ASE on CPU

SIZES: Dict[str, Dict[str, Any]] = {
    # the same network as mlpot's "small" (its nequip "default" preset)
    "small": {"num_layers": 3, "l_max": 1, "parity": False, "num_features": 32, "radial_mlp_depth": 2,
              "radial_mlp_width": 64, "num_bessels": 8, "polynomial_cutoff_p": 6, "avg_num_neighbors": 10.0},
    # NequIPGNNModel's defaults, as in docs/peers.md (= mlpot's "nequip-matched" preset)
    "default": {"num_layers": 4, "l_max": 1, "parity": True, "num_features": 32, "radial_mlp_depth": 1,
                "radial_mlp_width": 128, "num_bessels": 8, "polynomial_cutoff_p": 6, "avg_num_neighbors": 10.0},
}


def build(hyper: Dict[str, Any], e0_eV=None, scale_eV: float = ENERGY_SCALE_EV) -> torch.nn.Module:
    """The model; reference energies per element (``e0_eV``, zeros by default) and the per-atom energy scale."""
    return NequIPGNNModel(seed=SEED, model_dtype="float32", type_names=TYPE_NAMES, r_max=CUTOFF_A,
                          per_type_energy_scales=scale_eV,
                          per_type_energy_shifts=0.0 if e0_eV is None else dict(zip(TYPE_NAMES, map(float, e0_eV))),
                          **hyper)


def transforms():
    from nequip.integrations.utils import basic_transforms

    return basic_transforms({}, CUTOFF_A, TYPE_NAMES, {name: name for name in TYPE_NAMES})


def compile_data(xyz: str) -> AtomicDataDict.Type:
    """The first frame of ``xyz`` as ``nequip-compile`` traces with by default (``data_dict_from_checkpoint``: one
    training frame through the transforms, batched, zero cell shifts). A molecule gets a cell padded around it
    (NequIP's ``NonPeriodicCellTransform``, before the neighbour list as it requires) in place of ASE's zero cell,
    whose volume 0 makes the exported stress NaN and nequip-compile's eager-against-compiled check fail."""
    import ase.io
    from nequip.data import from_ase
    from nequip.data.transforms import NonPeriodicCellTransform

    data = from_ase(ase.io.read(xyz, index=0))
    data = NonPeriodicCellTransform(padding=10.0, override_cell=True)(data)  # a no-op for periodic frames
    for transform in transforms():
        data = transform(data)
    data = AtomicDataDict.batched_from_list([data])
    if AtomicDataDict.EDGE_CELL_SHIFT_KEY not in data:
        data[AtomicDataDict.EDGE_CELL_SHIFT_KEY] = torch.zeros(
            (AtomicDataDict.num_edges(data), 3), dtype=data[AtomicDataDict.POSITIONS_KEY].dtype)
    return data


class Peer:
    COMPILED_SUFFIX = ".nequip.pt2"  # nequip-compile insists on it for --mode aotinductor

    def __init__(self, size: str, workdir: Path, threads: int):
        set_global_state()
        self.size = size
        self.hyper = SIZES[size]
        self.model = build(self.hyper).eval()

    def describe(self) -> Dict[str, Any]:
        return {
            "model": "nequip.model.NequIPGNNModel",
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "cutoff_A": CUTOFF_A, "dtype": "float32", "hyperparameters": self.hyper,
            "routes": {"raw": "GraphModel(data) eager, graph built once (neighbour list not timed)",
                       "ase": "nequip.integrations.ase.NequIPCalculator (eager model + NequIP transforms)",
                       "ase-compiled": "NequIPCalculator.from_compiled_model on nequip-compile's "
                                       f"{' '.join(COMPILE_ARGS)} file (.nequip.pt2, AOTInductor)",
                       "openmm": "openmmml MLPotential('nequip') -> openmm.PythonForce "
                                 "(NequIP neighbour list + eager model)"},
        }

    def calculator(self):
        from nequip.integrations.ase import NequIPCalculator

        return NequIPCalculator(model=self.model, device="cpu", transforms=transforms())

    def compile_key(self) -> Dict[str, Any]:
        """What fixes the compiled file: the package, the model (hyperparameters, seed, scale) and the options."""
        return {"nequip": versions().get("nequip"), "hyperparameters": self.hyper, "seed": SEED,
                "type_names": TYPE_NAMES, "cutoff_A": CUTOFF_A, "energy_scale_eV": ENERGY_SCALE_EV,
                "compile_args": COMPILE_ARGS}

    def compile(self, path: Path, example_xyz: str) -> None:
        """``nequip-compile in-memory PATH --mode aotinductor --device cpu --target ase`` on this model (see the
        module docstring for how the random model reaches it); ``path`` must end in ``.nequip.pt2``."""
        import nequip.scripts.compile as nequip_compile

        data = compile_data(example_xyz)

        def load_saved_model(input_path, compile_mode, model_key, return_data_dict=False):
            return (self.model, data) if return_data_dict else self.model

        original = nequip_compile.load_saved_model
        nequip_compile.load_saved_model = load_saved_model
        try:
            nequip_compile.main(["in-memory", str(path), *COMPILE_ARGS])
        finally:
            nequip_compile.load_saved_model = original
            set_global_state()  # as Peer() left it (nequip-compile sets its own)

    def compiled_calculator(self, path: Path):
        from nequip.integrations.ase import NequIPCalculator

        return NequIPCalculator.from_compiled_model(str(path), device="cpu", chemical_species_to_atom_type_map=True)

    def raw_step(self, atoms) -> Callable[[], Any]:
        base = self.calculator().atoms_to_data(atoms)
        dtype = base[AtomicDataDict.POSITIONS_KEY].dtype
        copies = itertools.cycle([torch.tensor(p, dtype=dtype) for p in perturbed_copies(atoms.positions)])

        def step() -> None:
            data = dict(base)
            data[AtomicDataDict.POSITIONS_KEY] = next(copies)
            self.model(data)

        return step

    def openmm_system(self, topology):
        import nequip.model.saved_models.load_utils as load_utils
        from openmmml import MLPotential

        original = load_utils.load_saved_model
        load_utils.load_saved_model = lambda *args, **kwargs: self.model
        try:
            potential = MLPotential("nequip", modelPath="in-memory", lengthScale=0.1, energyScale=96.4853)
            return potential.createSystem(topology)
        finally:
            load_utils.load_saved_model = original

    def train_step(self, xyz: str) -> Callable[[], Any]:
        """One training step: NequIP's data pipeline and batching, forces with the graph kept (training mode),
        per-atom energy + forces MSE (weights 1 and 10 as mlpot's defaults), backward, clipping, Adam, EMA.
        The model starts from least-squares per-type energy shifts and the force RMS as per-type scale (as
        NequIP's tutorial configs do); ``step.calculator()`` is a ``NequIPCalculator`` with the EMA weights."""
        import copy

        import ase.io
        from nequip.data import from_ase

        frames = ase.io.read(xyz, index=":")
        steps = transforms()
        graphs = []
        for atoms in frames:
            data = from_ase(atoms)
            for transform in steps:
                data = transform(data)
            graphs.append(data)
        statistics = energy_statistics(frames, ATOMIC_NUMBERS)
        model = build(self.hyper, statistics["e0_eV"], statistics["forces_rms_eV_per_A"])
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
        average = [p.detach().clone() for p in model.parameters()]
        generator = torch.Generator().manual_seed(SEED)

        def batches():
            while True:
                order = torch.randperm(len(graphs), generator=generator).tolist()
                for k in range(0, len(order) - TRAIN_BATCH + 1, TRAIN_BATCH):
                    yield AtomicDataDict.batched_from_list([graphs[i] for i in order[k:k + TRAIN_BATCH]])

        stream = batches()

        def step() -> None:
            batch = next(stream)
            reference_energy = batch[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1)
            reference_forces = batch[AtomicDataDict.FORCE_KEY]
            atoms_per_frame = batch[AtomicDataDict.NUM_NODES_KEY].reshape(-1)
            optimizer.zero_grad(set_to_none=True)
            output = model(batch)
            energy_error = (output[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1) - reference_energy) / atoms_per_frame
            force_error = output[AtomicDataDict.FORCE_KEY] - reference_forces
            loss = energy_error.square().mean() + 10.0 * force_error.square().mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            with torch.no_grad():
                for kept, parameter in zip(average, model.parameters()):
                    kept.lerp_(parameter, 0.01)  # EMA, decay 0.99

        def calculator():
            from nequip.integrations.ase import NequIPCalculator

            trained = copy.deepcopy(model)
            with torch.no_grad():
                for parameter, kept in zip(trained.parameters(), average):
                    parameter.copy_(kept)
            return NequIPCalculator(model=trained.eval(), device="cpu", transforms=transforms())

        step.calculator = calculator
        return step

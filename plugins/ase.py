"""ASE calculator for mlpot model files.

    from mlpot.plugins.ase import MLPotCalculator
    atoms.calc = MLPotCalculator("model.pt", device="cpu")
    atoms.calc = MLPotCalculator("model.pt2")      # compiled (mlpot compile): same results, faster on small systems

ASE and the model both work in Å and eV, so no unit conversion happens here. Properties:
``energy``/``free_energy`` (eV), ``energies`` (eV per atom), ``forces`` (eV/Å), and for cells
periodic along all three axes ``stress`` (eV/Å^3, Voigt order xx yy zz yz xz xy, ASE's sign).

The calculator pickles (multiprocessing pools, openmm-ml's ``ase`` backend): what travels is the
model file's path, the device and the file's content hash, and the copy loads the file again, refusing
one whose parameters changed in between. :meth:`MLPotCalculator.todict` returns those settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from mlpot.compile_cache import compile_mode, load_for_inference
from mlpot.compiled import CompiledModel
from mlpot.deploy import DeployedModel, ModelFileError
from mlpot.neighbors import check_positions_and_cell


class MLPotCalculator(Calculator):
    """Energies, forces and stress from an mlpot model file, TorchScript (``.pt``) or compiled (``.pt2``), or an
    already loaded :class:`DeployedModel` or :class:`mlpot.compiled.CompiledModel`.

    A TorchScript file runs as its compiled twin (:mod:`mlpot.compile_cache`): ``compile="auto"`` (the default, or
    ``$MLPOT_COMPILE``) compiles it once and caches it, falling back to the TorchScript with a warning if it cannot;
    ``"on"`` makes that an error, ``"off"`` runs the TorchScript."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        model: Union[str, Path, DeployedModel],
        device: Union[str, torch.device] = "cpu",
        compile: Optional[str] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.device = torch.device(device)
        self.compile = compile_mode(compile)
        self.model = model if isinstance(model, DeployedModel) else load_for_inference(model, self.device,
                                                                                       self.compile)
        if not isinstance(self.model, CompiledModel):  # compiled code runs on the device it was compiled for
            self.model.module.to(self.device)

    def todict(self, skip_default: bool = True) -> dict:
        """The settings that rebuild this calculator: model file, device, the file's dtype and content hash."""
        return {
            "model": str(Path(self.model.path).resolve()),
            "device": str(self.device),
            "dtype": str(self.model.metadata["dtype"]),
            "content_hash": str(self.model.metadata["content_hash"]),
        }

    def __getstate__(self) -> dict:
        """Everything but the compiled model (TorchScript modules do not pickle); the model file is named instead."""
        state = {key: value for key, value in self.__dict__.items() if key != "model"}
        state["model_settings"] = self.todict()
        return state

    def __setstate__(self, state: dict) -> None:
        """Load the model file named in ``state`` again; raise ModelFileError if it changed since pickling."""
        state = dict(state)
        settings = state.pop("model_settings")
        self.__dict__.update(state)
        self.model = load_for_inference(settings["model"], self.device, getattr(self, "compile", "auto"))
        if self.model.metadata["content_hash"] != settings["content_hash"]:
            raise ModelFileError(
                f"{settings['model']} changed since this calculator was pickled (its parameters differ); "
                "create a new MLPotCalculator"
            )

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self.model.check_elements(atoms.numbers)
        positions = atoms.get_positions()
        if not np.all(np.isfinite(positions)):
            bad = int(np.flatnonzero(~np.all(np.isfinite(positions), axis=1))[0])
            raise ValueError(f"atom {bad} ({atoms[bad].symbol}) has a NaN or infinite position")
        pbc = np.asarray(atoms.pbc, dtype=bool)
        want_stress = "stress" in properties
        if want_stress and not pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic along all three axes")
        positions_A = torch.as_tensor(positions, dtype=self.model.dtype, device=self.device)
        cell_A = torch.as_tensor(np.asarray(atoms.cell), dtype=self.model.dtype, device=self.device)
        pbc_flags = torch.as_tensor(pbc, device=self.device)
        check_positions_and_cell(positions_A, cell_A, pbc_flags, self.model.cutoff)
        results = self.model.compute(
            positions_A,
            torch.as_tensor(atoms.numbers, dtype=torch.long, device=self.device),
            cell_A,
            pbc_flags,
            forces=True,
            stress=want_stress,
        )
        energy = float(results["energy"].detach())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": results["energies"].detach().cpu().numpy().astype(np.float64),
            "forces": results["forces"].detach().cpu().numpy().astype(np.float64),
        }
        if "stress" in results:
            stress = results["stress"].detach().cpu().numpy().astype(np.float64)
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
